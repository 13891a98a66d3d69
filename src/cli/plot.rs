//! `landscaped plot ...`: charts from the store as SVG or PNG (by the `-o` file's extension).
//!
//! Each chart kind is one variant of [`PlotCmd`] with its own args struct and one arm in [`run`]; add new
//! kinds (trajectory, slice, spectrum, ...) the same way, ideally in a file of your own.

use super::Cli;
use super::client::records_or_open;
use crate::plot;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum PlotCmd {
    /// Weight-norm history ‖θ‖₂ over steps (the paper's Fig. 2 b/e): one line per run, or per tensor with
    /// --tensor.
    Norms(PlotNormsArgs),
    /// Weight histograms of one tensor (the paper's Fig. 2 c/f): one per (run, step), overlaid.
    Hist(PlotHistArgs),
    /// The optimizer path on the PC1/PC2 plane of the run's latest PCA, points labelled by step.
    Trajectory(super::pca::PlotTrajectoryArgs),
    /// A stored loss-landscape slice: 1D loss and accuracy; 2D labelled contours, filled contours, heat map.
    Slice(super::slice::PlotSliceArgs),
    /// Hessian eigenvalue density (SLQ) from stored sharpness results, one curve per run.
    Spectrum(super::sharpness::PlotSpectrumArgs),
    /// The |λmin/λmax| heat map (the paper's Fig. 7) stored for a slice by `landscaped sharpness-map`.
    RatioMap(super::sharpness::PlotRatioMapArgs),
    /// Stability ratios over steps with the 1.0 line (the edge of stability), stored by `landscaped stability`.
    Stability(super::stability::PlotStabilityArgs),
    /// WeightWatcher's α of every layer over steps, or (--esd LAYER) one layer's ESD on log–log axes with
    /// the fitted power law and xmin.
    Spectra(super::spectra::PlotSpectraArgs),
}

#[derive(clap::Args, Debug)]
pub struct PlotNormsArgs {
    /// Run(s) to plot; repeat to compare runs (e.g. with and without weight decay).
    #[arg(long, required = true)]
    pub run: Vec<String>,
    /// Plot per-tensor norms of tensors matching this glob instead of the global norm.
    #[arg(long)]
    pub tensor: Option<String>,
    /// Log-scale the y axis.
    #[arg(long)]
    pub log_y: bool,
    /// Output file: .svg or .png.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct PlotHistArgs {
    /// Run(s); repeat to compare runs.
    #[arg(long, required = true)]
    pub run: Vec<String>,
    /// Step(s) (default: each run's last); repeat to compare steps.
    #[arg(long)]
    pub step: Vec<u64>,
    /// The tensor's exact name.
    #[arg(long)]
    pub tensor: String,
    /// Log-scale the counts.
    #[arg(long)]
    pub log_y: bool,
    /// Output file: .svg or .png.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
}

pub fn run(cli: &Cli, cmd: &PlotCmd) -> anyhow::Result<()> {
    match cmd {
        PlotCmd::Spectrum(a) => super::sharpness::plot_spectrum(cli, a),
        PlotCmd::RatioMap(a) => super::sharpness::plot_ratio_map_cmd(cli, a),
        PlotCmd::Stability(a) => super::stability::plot_stability(cli, a),
        PlotCmd::Spectra(a) => super::spectra::plot(cli, a),
        PlotCmd::Norms(a) => norms(cli, a),
        PlotCmd::Hist(a) => hist(cli, a),
        PlotCmd::Trajectory(a) => super::pca::run_plot_trajectory(cli, a),
        PlotCmd::Slice(a) => super::slice::run_plot_slice(cli, a),
    }
}

fn norms(cli: &Cli, a: &PlotNormsArgs) -> anyhow::Result<()> {
    use crate::query::records::{self as r, ByRun, TensorGlob};
    let mut series = Vec::new();
    for run in &a.run {
        let by = ByRun { run: run.clone() };
        let cks = records_or_open(cli, "checkpoints", &by, |s| r::run_checkpoints(s, &by))?;
        match &a.tensor {
            None => {
                let pts = cks.iter().map(|c| (c.step as f64, c.global_norm)).collect();
                series.push(plot::Series::new(run.clone(), pts).with_markers());
            }
            Some(glob) => {
                let mut by_name: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
                let q = TensorGlob { run: run.clone(), glob: glob.clone() };
                for (step, t) in records_or_open(cli, "tensors", &q, |s| r::matching_tensors(s, &q))? {
                    if let Some(s) = t.stats {
                        by_name.entry(t.name).or_default().push((step as f64, s.l2));
                    }
                }
                for (name, pts) in by_name {
                    let label = if a.run.len() > 1 { format!("{run}: {name}") } else { name };
                    series.push(plot::Series::new(label, pts).with_markers());
                }
            }
        }
    }
    let what = match &a.tensor {
        None => "‖θ‖₂ (all weights)".to_string(),
        Some(g) => format!("‖W‖₂ of tensors matching {g}"),
    };
    let chart = plot::LineChart {
        title: format!("Weight norm over training: {}", a.run.join(" vs ")),
        x_label: "training step".into(),
        y_label: what,
        series,
        log_y: a.log_y,
        ..Default::default()
    };
    plot::line_chart(&a.out, &chart)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

fn hist(cli: &Cli, a: &PlotHistArgs) -> anyhow::Result<()> {
    use crate::query::records::{self as r, TensorAt};
    let mut hs = Vec::new();
    for run in &a.run {
        let steps: Vec<Option<u64>> =
            if a.step.is_empty() { vec![None] } else { a.step.iter().map(|s| Some(*s)).collect() };
        for step in steps {
            let q = TensorAt { run: run.clone(), step, tensor: a.tensor.clone() };
            let (step, rec) = records_or_open(cli, "tensor", &q, |s| r::tensor_at(s, &q))?;
            let Some(s) = rec.stats else { continue };
            let label = if a.run.len() > 1 { format!("{run}, step {step}") } else { format!("step {step}") };
            hs.push(plot::Histogram {
                label,
                edges: s.histogram.edges(),
                counts: s.histogram.counts.iter().map(|&c| c as f64).collect(),
            });
        }
    }
    let chart = plot::HistogramChart {
        title: format!("Weight histogram of {} ({})", a.tensor, a.run.join(" vs ")),
        x_label: "weight value".into(),
        y_label: "count".into(),
        histograms: hs,
        log_y: a.log_y,
        ..Default::default()
    };
    plot::histogram_chart(&a.out, &chart)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
