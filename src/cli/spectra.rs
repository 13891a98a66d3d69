//! `landscaped spectra`: every layer's spectral metrics (WeightWatcher's α, α_weighted, norms, ...),
//! from the store (`--run R [--step S] [--layer GLOB] [--summary]`; the query in
//! [`crate::query::spectra`]), computed for a run's ingested checkpoints that lack them (`--compute`),
//! or measured directly on one checkpoint file or folder (`--checkpoint PATH`, nothing stored).

use std::path::PathBuf;

use super::Cli;
use super::client::{query_or_open, records_or_open};
use super::runs::print_table;
use crate::query::norms::tensor_matcher;
use crate::query::spectra::{LAYER_COLUMNS, SpectraArgs, layer_row, refused_row, spectra_table};
use crate::spectra::{Options, measure};
use crate::store::{RunStepRecord, Store, spectra as records};
use crate::table::Table;

#[derive(clap::Args, Debug)]
pub struct SpectraCmdArgs {
    /// The run (its recorded spectra, or with --compute, its ingested checkpoints).
    #[arg(long, required_unless_present = "checkpoint")]
    pub run: Option<String>,
    /// Only this step.
    #[arg(long)]
    pub step: Option<u64>,
    /// Only layers whose tensor name matches this glob (e.g. '*.attn.*').
    #[arg(long)]
    pub layer: Option<String>,
    /// One row per step: mean α, fraction of layers with α < 2, mean α_weighted.
    #[arg(long)]
    pub summary: bool,
    /// Measure this checkpoint (file or folder) directly and print its layers; nothing is stored.
    #[arg(long, conflicts_with_all = ["run", "compute"])]
    pub checkpoint: Option<PathBuf>,
    /// Measure the run's ingested checkpoints that have no spectra yet, store them, then print.
    #[arg(long)]
    pub compute: bool,
    /// Threads for each SVD.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Layers whose exact SVD costs more flops than this are approximated (exact top-k by Lanczos + SLQ;
    /// their rows say exact = false and the method), or refused with --no-approx.
    #[arg(long, default_value_t = crate::spectra::DEFAULT_MAX_FLOPS)]
    pub max_flops: f64,
    /// Refuse (and say so) layers over --max-flops instead of approximating them.
    #[arg(long)]
    pub no_approx: bool,
    /// When approximating: top eigenvalues computed exactly per matrix (0: as many as --max-flops pays for).
    #[arg(long, default_value_t = 0)]
    pub approx_top_k: usize,
}

pub fn run(cli: &Cli, args: &SpectraCmdArgs) -> anyhow::Result<()> {
    // One layer after another allocates and frees tens of MB: without fixed glibc thresholds the freed
    // buffers stay resident (1.4 GB peak on GPT-2 small's 49 layers; the daemon does the same at start).
    crate::daemon::memory::bound_allocator();
    let opts = Options {
        threads: args.threads.max(1),
        max_flops: args.max_flops,
        approximate: !args.no_approx,
        approx: landscaped_maths::spectra::ApproxOptions { top_k: args.approx_top_k, ..Default::default() },
        layer: args.layer.as_deref().map(tensor_matcher).transpose()?,
        ..Options::default()
    };
    if let Some(path) = &args.checkpoint {
        let rec = measure("", 0, path, &Options { layer: None, ..opts.clone() })?;
        let glob = opts.layer.as_ref();
        let keep = |n: &str| glob.is_none_or(|g| g.is_match(n));
        let mut t = Table::new(LAYER_COLUMNS);
        for l in rec.layers.iter().filter(|l| keep(&l.name)) {
            t.push(layer_row(serde_json::Value::Null, l));
        }
        for r in rec.refused.iter().filter(|r| keep(&r.name)) {
            t.push(refused_row(serde_json::Value::Null, &r.name, &r.why));
        }
        if args.summary {
            let s = landscaped_maths::spectra::summary(&rec.layers);
            let mut t = Table::new(crate::query::spectra::SUMMARY_COLUMNS);
            t.push(crate::query::spectra::summary_row(serde_json::Value::Null, &s, rec.refused.len()));
            return print_table(&t, cli.format);
        }
        return print_table(&t, cli.format);
    }
    let run = args.run.clone().unwrap_or_default();
    if args.compute {
        super::client::no_endpoint(cli, "spectra --compute")?;
        let store = Store::open(&cli.data_dir()).map_err(|e| match e {
            crate::store::StoreError::Locked(_) => anyhow::anyhow!(
                "the daemon holds the store: its [run.spectra] job measures the checkpoints it ingests"
            ),
            e => e.into(),
        })?;
        compute_missing(&store, &run, args.step, &Options { layer: None, ..opts })?;
    }
    let q = SpectraArgs { run, step: args.step, layer: args.layer.clone(), summary: args.summary };
    print_table(&query_or_open(cli, "spectra", &q, |s| spectra_table(s, &q))?, cli.format)
}

/// Measures and stores every ingested checkpoint of `run` (or only `step`) that has no spectra record.
fn compute_missing(store: &Store, run: &str, step: Option<u64>, opts: &Options) -> anyhow::Result<()> {
    let cks = crate::query::runs::require_run(store, run)?;
    for ck in cks.iter().filter(|c| step.is_none_or(|s| s == c.step)) {
        if records::SpectraRecord::get(store, run, ck.step)?.is_some() {
            continue;
        }
        let rec = measure(run, ck.step, std::path::Path::new(&ck.path), opts)?;
        tracing::info!(
            run,
            step = ck.step,
            layers = rec.layers.len(),
            seconds = rec.seconds,
            "spectra measured"
        );
        records::SpectraRecord::put(store, &rec)?;
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct PlotSpectraArgs {
    /// The run: α of every layer over its recorded steps (or, with --esd, where its checkpoint is).
    #[arg(long, required_unless_present = "checkpoint")]
    pub run: Option<String>,
    /// Only layers whose tensor name matches this glob.
    #[arg(long)]
    pub layer: Option<String>,
    /// Instead: this layer's ESD on log–log axes with the fitted power law and xmin (WeightWatcher's
    /// plot), measured again from the checkpoint of --step (default: the run's last recorded one).
    #[arg(long)]
    pub esd: Option<String>,
    #[arg(long)]
    pub step: Option<u64>,
    /// With --esd: this checkpoint file or folder instead of a run's.
    #[arg(long, requires = "esd", conflicts_with = "run")]
    pub checkpoint: Option<PathBuf>,
    /// Output file: .svg or .png.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
}

pub fn plot(cli: &Cli, a: &PlotSpectraArgs) -> anyhow::Result<()> {
    match &a.esd {
        Some(layer) => plot_esd(cli, a, layer),
        None => plot_alpha(cli, a),
    }
}

/// α of each layer (matching --layer) over steps, one line per layer.
fn plot_alpha(cli: &Cli, a: &PlotSpectraArgs) -> anyhow::Result<()> {
    let run = a.run.clone().unwrap_or_default();
    let q = SpectraArgs { run: run.clone(), step: None, layer: a.layer.clone(), summary: false };
    let t = query_or_open(cli, "spectra", &q, |s| spectra_table(s, &q))?;
    let mut by_layer: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for row in &t.rows {
        let (Some(step), Some(layer), Some(alpha)) = (row[0].as_f64(), row[1].as_str(), row[6].as_f64())
        else {
            continue;
        };
        by_layer.entry(layer.to_string()).or_default().push((step, alpha));
    }
    let series =
        by_layer.into_iter().map(|(name, pts)| crate::plot::Series::new(name, pts).with_markers()).collect();
    let chart = crate::plot::LineChart {
        title: format!("Power-law exponent α per layer: {run}"),
        x_label: "training step".into(),
        y_label: "α (WeightWatcher)".into(),
        series,
        ..Default::default()
    };
    crate::plot::line_chart(&a.out, &chart)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

/// One layer's ESD: the density of its eigenvalues in log-spaced bins, the fitted power law from xmin,
/// and xmin as a vertical line.
fn plot_esd(cli: &Cli, a: &PlotSpectraArgs, layer: &str) -> anyhow::Result<()> {
    let (path, label) = match &a.checkpoint {
        Some(p) => (p.clone(), p.display().to_string()),
        None => {
            let run = a.run.clone().unwrap_or_default();
            let by = crate::query::records::ByRun { run: run.clone() };
            let recs: Vec<records::SpectraRecord> = records_or_open(cli, "spectra-records", &by, |s| {
                crate::query::records::run_step_records(s, &by)
            })?;
            let rec = match a.step {
                Some(s) => recs.into_iter().find(|r| r.step == s),
                None => recs.into_iter().last(),
            }
            .ok_or_else(|| anyhow::anyhow!("no spectra recorded for run {run:?} at that step"))?;
            (PathBuf::from(&rec.checkpoint), format!("{run} step {}", rec.step))
        }
    };
    let ck = landscaped_formats::Checkpoint::open(&path)?;
    let exact = globset::GlobBuilder::new(&globset::escape(layer)).build()?.compile_matcher();
    let opts = Options { layer: Some(exact), max_flops: f64::INFINITY, ..Options::default() };
    let mut evals = None;
    let got =
        crate::spectra::checkpoint_spectra_with(&ck, &opts, &|| false, |_, e| evals = Some(e.evals.clone()));
    let (Some(evals), Some(l)) = (evals, got.layers.first()) else {
        anyhow::bail!(
            "{layer:?} is not a measured layer of {} (see `landscaped spectra --checkpoint`)",
            path.display()
        );
    };
    let chart = crate::plot::LineChart {
        title: format!(
            "ESD of {layer} ({label}): α = {:.3}, D = {:.3}, xmin = {:.3e}",
            l.fit.alpha, l.fit.d, l.fit.xmin
        ),
        x_label: "eigenvalue λ of WᵀW".into(),
        y_label: "density".into(),
        series: esd_series(&evals, l.fit.alpha, l.fit.xmin),
        log_x: true,
        log_y: true,
        ..Default::default()
    };
    crate::plot::line_chart(&a.out, &chart)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

/// The ESD as a density over 50 log-spaced bins, the power law (α − 1)/xmin · (λ/xmin)^−α scaled to
/// the tail's share of the eigenvalues, and xmin as a vertical line.
fn esd_series(evals: &[f64], alpha: f64, xmin: f64) -> Vec<crate::plot::Series> {
    let pos: Vec<f64> = evals.iter().copied().filter(|&x| x > 0.0).collect();
    let (lo, hi) = (pos.first().copied().unwrap_or(1.0).ln(), pos.last().copied().unwrap_or(1.0).ln());
    let bins = 50usize;
    let width = ((hi - lo) / bins as f64).max(1e-12);
    let mut counts = vec![0usize; bins];
    for x in &pos {
        counts[(((x.ln() - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let n = evals.len() as f64;
    let density: Vec<(f64, f64)> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(k, c)| {
            let (a, b) = ((lo + k as f64 * width).exp(), (lo + (k + 1) as f64 * width).exp());
            ((a * b).sqrt(), *c as f64 / (n * (b - a)))
        })
        .collect();
    let mut out = vec![crate::plot::Series::new("ESD", density.clone()).with_markers()];
    if alpha > 1.0 && xmin > 0.0 {
        let tail = evals.iter().filter(|&&x| x >= xmin).count() as f64 / n;
        let pl: Vec<(f64, f64)> = (0..=40)
            .map(|k| xmin * (hi.exp() / xmin).powf(k as f64 / 40.0))
            .map(|x| (x, tail * (alpha - 1.0) / xmin * (x / xmin).powf(-alpha)))
            .collect();
        out.push(crate::plot::Series::new(format!("power law, α = {alpha:.2}"), pl).dashed());
        let ys = density.iter().map(|p| p.1).filter(|y| *y > 0.0);
        let (ymin, ymax) = ys.fold((f64::INFINITY, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
        if ymin.is_finite() {
            out.push(crate::plot::Series::new(
                format!("xmin = {xmin:.3e}"),
                vec![(xmin, ymin), (xmin, ymax)],
            ));
        }
    }
    out
}
