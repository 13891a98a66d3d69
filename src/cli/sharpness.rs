//! `landscaped sharpness`: Hessian extremes, trace, spectral density and sharpness measures of one
//! checkpoint, stored and printed; `--list` prints what is stored for a run. `landscaped plot spectrum`
//! draws a stored spectral density.

use super::Cli;
use super::checkpoint_flags::CheckpointFlags;
use super::client::{open_local, records_or_open};
use crate::cancel::{Cancel, Cancelled};
use crate::charts::{DENSITY_BINS, density_chart, density_series};
use crate::plot;
use crate::sharpness::compute::{Quantity, SharpnessOptions};
use crate::sharpness::runner::{record, sharpness_at};
use crate::store::RunStepRecord;
use crate::store::sharpness::{self as records, SharpnessRecord};
use crate::store::unix_now;
use crate::table::Table;
use anyhow::bail;
use landscaped_maths::curvature::lanczos::LanczosOptions;
use landscaped_maths::curvature::space::ParamSubset;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The model flags are the slice command's: one definition of the model contract on the command line.
pub use super::slice::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct SharpnessArgs {
    #[command(flatten)]
    pub at: CheckpointFlags,
    #[command(flatten)]
    pub model: ModelArgs,
    /// What to compute (comma-separated): eigs, trace, density, keskar, sam, sam-ascent, asam, fn-loss-rise.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "eigs,trace,density,keskar,sam,sam-ascent,asam,fn-loss-rise"
    )]
    pub measures: Vec<Quantity>,
    /// Hessian over all parameters, or only tensors with ≥ 2 dims (as the reference code).
    #[arg(long, value_enum, default_value_t = ParamSubset::All)]
    pub params: ParamSubset,
    /// Lanczos: relative residual tolerance, step budget, how many top eigenvalues.
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
    #[arg(long, default_value_t = 100)]
    pub max_steps: usize,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Hutchinson: most Rademacher samples; stop when the standard error < trace-rel-tol·|trace|.
    #[arg(long, default_value_t = 100)]
    pub trace_samples: usize,
    #[arg(long, default_value_t = 0.01)]
    pub trace_rel_tol: f64,
    /// SLQ: Lanczos steps per run and number of runs (PyHessian: 100 and 1).
    #[arg(long, default_value_t = 100)]
    pub density_steps: usize,
    #[arg(long, default_value_t = 1)]
    pub density_runs: usize,
    /// Keskar box size ε.
    #[arg(long, default_value_t = 1e-3)]
    pub keskar_eps: f64,
    /// SAM radius ρ.
    #[arg(long, default_value_t = 0.05)]
    pub sam_rho: f64,
    /// ASAM radius ρ.
    #[arg(long, default_value_t = 0.5)]
    pub asam_rho: f64,
    /// Ascent steps for sam-ascent and asam.
    #[arg(long, default_value_t = 5)]
    pub ascent_steps: usize,
    /// Filter-normalized loss rise: radius and number of random directions.
    #[arg(long, default_value_t = 0.1)]
    pub fn_radius: f64,
    #[arg(long, default_value_t = 10)]
    pub fn_directions: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Don't store the result.
    #[arg(long)]
    pub no_store: bool,
}

impl SharpnessArgs {
    pub fn options(&self) -> SharpnessOptions {
        SharpnessOptions {
            subset: self.params,
            quantities: self.measures.clone(),
            lanczos: LanczosOptions {
                max_steps: self.max_steps,
                tol: self.tol,
                top_k: self.top_k,
                seed: self.seed,
            },
            trace_samples: self.trace_samples,
            trace_rel_tol: self.trace_rel_tol,
            density_runs: self.density_runs,
            density_steps: self.density_steps,
            keskar_eps: self.keskar_eps,
            sam_rho: self.sam_rho,
            ascent_steps: self.ascent_steps,
            asam_rho: self.asam_rho,
            fn_radius: self.fn_radius,
            fn_directions: self.fn_directions,
            seed: self.seed,
            ..Default::default()
        }
    }
}

pub fn run(cli: &Cli, a: &SharpnessArgs) -> anyhow::Result<()> {
    a.at.validate()?;
    if a.at.list {
        let by = a.at.list_run()?;
        let recs =
            records_or_open(cli, "sharpness", &by, |s| crate::query::records::run_step_records(s, &by))?;
        if recs.is_empty() {
            bail!(
                "no sharpness results stored for run {:?} (compute them with `landscaped sharpness --run ...`)",
                by.run
            );
        }
        return print_records(cli, &recs);
    }
    let opts = a.options();
    opts.validate()?;
    a.model.validate_flags()?;
    let at = a.at.choose(cli, "sharpness", a.no_store)?;
    // Ctrl-C: the first stops the workers at their next model evaluation (nothing stored), the second exits.
    let cancel = Cancel::on_signals();
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    let computed = sharpness_at(&a.model, &at.path, &opts, "sharpness", &cancel, |q| {
        pb.set_message(format!("sharpness: {q}"))
    });
    pb.finish_and_clear();
    let (rep, used) = computed.map_err(|e| stopped("sharpness", e))?;
    let rec = record(&at.run, at.step, &used, rep);
    if let Some(store) = at.store_for_result() {
        SharpnessRecord::put(store, &rec)?;
        store.flush()?;
    }
    print_records(cli, std::slice::from_ref(&rec))?;
    if let Some(e) = &rec.extremes
        && !e.converged
    {
        eprintln!(
            "warning: Lanczos did not reach tol {} in {} HVPs (residuals {:.2e}, {:.2e}); raise --max-steps",
            e.tol, e.hvps, e.residual_max, e.residual_min
        );
    }
    Ok(())
}

/// One row per quantity: run, step, quantity, value, ± (standard error or residual bound), cost, notes.
pub fn table(recs: &[SharpnessRecord]) -> Table {
    let mut t = Table::new(["run", "step", "quantity", "value", "pm", "cost", "note"]);
    for r in recs {
        let mut row = |q: &str, v: f64, pm: Option<f64>, cost: String, note: String| {
            t.push(vec![
                json!(r.run),
                json!(r.step),
                json!(q),
                json!(v),
                json!(pm),
                json!(cost),
                json!(note),
            ]);
        };
        row(
            "loss",
            r.base_loss,
            None,
            String::new(),
            format!("{} params ({}), {} samples", r.dim, r.subset, r.samples),
        );
        if let Some(e) = &r.extremes {
            let conv =
                if e.converged { format!("tol {}", e.tol) } else { format!("NOT CONVERGED (tol {})", e.tol) };
            row("lambda_max", e.lambda_max, Some(e.residual_max), format!("{} HVPs", e.hvps), conv.clone());
            row("lambda_min", e.lambda_min, Some(e.residual_min), format!("{} HVPs", e.hvps), conv.clone());
            row("ratio", e.ratio, None, String::new(), "|λmin/λmax|".into());
            let top: Vec<String> = e.top_k.iter().map(|v| format!("{v:.4}")).collect();
            row("top_k", e.top_k.first().copied().unwrap_or(f64::NAN), None, String::new(), top.join(" "));
        }
        if let Some(tr) = &r.trace {
            row(
                "trace",
                tr.trace,
                Some(tr.std_error),
                format!("{} HVPs", tr.hvps),
                format!("Hutchinson, {} samples", tr.samples),
            );
        }
        if let Some(d) = &r.density {
            row(
                "trace_slq",
                d.trace(),
                None,
                format!("{} HVPs", d.hvps),
                format!("SLQ, {} runs", d.nodes.len()),
            );
        }
        for m in &r.measures {
            row(
                &m.name,
                m.value,
                m.std_error,
                format!("{} evals", m.evaluations),
                format!("radius {}: {}", m.radius, m.method),
            );
        }
    }
    t
}

fn print_records(cli: &Cli, recs: &[SharpnessRecord]) -> anyhow::Result<()> {
    table(recs).print(cli.format)?;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct PlotSpectrumArgs {
    /// Run(s); repeat to compare runs (one curve each).
    #[arg(long, required = true)]
    pub run: Vec<String>,
    /// Step (default: each run's last with a stored density).
    #[arg(long)]
    pub step: Option<u64>,
    /// Grid points of the smoothed density.
    #[arg(long, default_value_t = DENSITY_BINS)]
    pub bins: usize,
    /// Gaussian smoothing σ² (default PyHessian's 1e-5·max(1, λmax−λmin)).
    #[arg(long)]
    pub sigma_squared: Option<f64>,
    /// Log-scale the density (as PyHessian's plots).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub log_y: bool,
    /// Output file: .svg or .png.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
}

/// `landscaped plot spectrum`: the SLQ spectral density of stored results.
pub(crate) fn plot_spectrum(cli: &Cli, a: &PlotSpectrumArgs) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for run in &a.run {
        let by = crate::query::records::ByRun { run: run.clone() };
        let recs: Vec<SharpnessRecord> =
            records_or_open(cli, "sharpness", &by, |s| crate::query::records::run_step_records(s, &by))?;
        let rec = recs
            .iter()
            .rev()
            .find(|r| r.density.is_some() && a.step.is_none_or(|s| r.step == s))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "run {run:?}: no stored spectral density{}",
                    match a.step {
                        Some(s) => format!(" at step {s}"),
                        None => String::new(),
                    }
                )
            })?;
        let curve = density_series(rec, a.bins, a.sigma_squared, a.log_y);
        series.push(curve.ok_or_else(|| anyhow::anyhow!("run {run:?}: no density"))?);
    }
    plot::line_chart(&a.out, &density_chart(series, a.log_y))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct RatioMapArgs {
    /// The 2D slice (its id, see `landscaped slices list`): its centre, directions and model contract.
    #[arg(long)]
    pub slice: u64,
    /// Grid for the map, `min:max:num` (default: the slice's own; Lanczos at every point is costly, so
    /// a coarser grid is often wise).
    #[arg(long, allow_hyphen_values = true)]
    pub x: Option<landscaped_maths::grid::Axis>,
    #[arg(long, allow_hyphen_values = true)]
    pub y: Option<landscaped_maths::grid::Axis>,
    /// Evaluate on the first N samples only (default: as the slice did).
    #[arg(long)]
    pub subsample: Option<usize>,
    /// cpu, cuda or cuda:N (default: as the slice did).
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long, value_enum, default_value_t = ParamSubset::All)]
    pub params: ParamSubset,
    /// Lanczos tolerance and step budget at each point.
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
    #[arg(long, default_value_t = 100)]
    pub max_steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads in all (default: one per core), split between worker processes as for slices.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Worker processes computing grid points at once (default: one per thread while the weights fit).
    #[arg(long, alias = "replicas")]
    pub workers: Option<usize>,
    /// The worker executable (default: landscaped-worker beside landscaped, or $LANDSCAPED_WORKER).
    #[arg(long)]
    pub worker: Option<PathBuf>,
    /// Also write the heat map to this file (.svg or .png).
    #[arg(short = 'o', long)]
    pub out: Option<PathBuf>,
}

/// A computation `what` that a Ctrl-C ([`Cancelled`]) stopped, said as such; any other error as it is.
fn stopped(what: &str, e: anyhow::Error) -> anyhow::Error {
    match Cancelled::in_chain(&e) {
        Some(c) => anyhow::Error::new(c)
            .context(format!("{what} stopped before it finished: workers stopped, nothing stored")),
        None => e,
    }
}

/// `landscaped sharpness-map`: the paper's Fig. 7, |λmin/λmax| at every point of a stored 2D slice.
pub(crate) fn run_ratio_map(cli: &Cli, a: &RatioMapArgs) -> anyhow::Result<()> {
    use crate::landscape::runner::PlaneSpec;
    use crate::store::slices::DirectionSource;
    // Ctrl-C: the first stops the workers (nothing stored), the second exits.
    let cancel = Cancel::on_signals();
    let store = open_local(cli, "sharpness-map")?;
    let rec = crate::store::slices::get(&store, a.slice)?.ok_or_else(|| {
        anyhow::anyhow!("no slice with id {} in the store (see `landscaped slices list`)", a.slice)
    })?;
    if !rec.values.is_2d() {
        bail!("slice {} is 1D; the |λmin/λmax| map needs a 2D slice", a.slice);
    }
    let m = &rec.model;
    let contract = crate::workers::contract::ModelContract {
        model: Some(PathBuf::from(&m.model)),
        eval_data: Some(PathBuf::from(&m.eval_data)),
        loss: Some(m.loss.clone()),
        batch_size: m.batch_size.max(1),
        subsample: a.subsample.or(m.subsample),
        device: a.device.clone().unwrap_or_else(|| m.device.clone()),
        threads: a.threads,
        workers: a.workers,
        worker: a.worker.clone(),
        ..Default::default()
    };
    contract.validate_flags()?;
    let centre = PathBuf::from(&rec.checkpoint);
    let plane = match &rec.directions {
        DirectionSource::Random(dirs) => PlaneSpec::Random { centre, dirs: dirs.clone(), two_d: true },
        DirectionSource::Pca { files, .. } if files.len() >= 2 => {
            PlaneSpec::Files { centre, x: PathBuf::from(&files[0]), y: PathBuf::from(&files[1]) }
        }
        other => bail!("slice {}: directions {other:?} don't span a plane", a.slice),
    };
    let xs = a.x.map(|x| x.values()).unwrap_or_else(|| rec.values.xs.clone());
    let ys = a.y.map(|y| y.values()).unwrap_or_else(|| rec.values.ys.clone());
    let lanczos = LanczosOptions { max_steps: a.max_steps, tol: a.tol, top_k: 1, seed: a.seed };
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new((xs.len() * ys.len()) as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let req = crate::sharpness::runner::RatioMapRequest {
        contract: &contract,
        plane: &plane,
        xs: &xs,
        ys: &ys,
        subset: a.params,
        lanczos: &lanczos,
    };
    let map = crate::sharpness::runner::ratio_map(&req, &cancel, &mut |i, _| bar.set_position(i as u64));
    bar.finish_and_clear();
    let map = map.map_err(|e| stopped("ratio map", e))?;
    let (ratio, lmax, lmin, conv, hvps) =
        (map.ratio, map.lambda_max, map.lambda_min, map.converged, map.hvps);
    let not_conv = conv.iter().flatten().filter(|c| !**c).count();
    let map = records::RatioMapRecord {
        slice_id: a.slice,
        run: rec.run.clone(),
        step: rec.step,
        subset: format!("{:?}", a.params).to_lowercase(),
        done: vec![vec![true; xs.len()]; ys.len()],
        xs,
        ys,
        ratio,
        lambda_max: lmax,
        lambda_min: lmin,
        converged: conv,
        tol: a.tol,
        hvps,
        computed_unix: unix_now(),
    };
    records::put_ratio_map(&store, &map)?;
    store.flush()?;
    let fin: Vec<f64> = map.ratio.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = fin.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    let centre_ratio = nearest(&map.xs, 0.0).zip(nearest(&map.ys, 0.0)).map(|(ix, iy)| map.ratio[iy][ix]);
    println!(
        "ratio map for slice {}: {}×{} points, |λmin/λmax| from {lo:.4} to {hi:.4}{}, {hvps} HVPs{}",
        a.slice,
        map.xs.len(),
        map.ys.len(),
        centre_ratio.map(|c| format!(" (centre {c:.4})")).unwrap_or_default(),
        if not_conv > 0 { format!(", {not_conv} points NOT CONVERGED") } else { String::new() }
    );
    if let Some(out) = &a.out {
        plot_ratio_map(&map, out)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn nearest(v: &[f64], x: f64) -> Option<usize> {
    (0..v.len()).min_by(|&i, &j| (v[i] - x).abs().total_cmp(&(v[j] - x).abs()))
}

/// The Fig. 7 heat map of a stored ratio map.
pub(crate) fn plot_ratio_map(map: &records::RatioMapRecord, out: &Path) -> anyhow::Result<()> {
    let chart = plot::HeatmapChart {
        title: format!(
            "|λmin/λmax|, slice {}{}",
            map.slice_id,
            map.run.as_ref().map(|r| format!(" ({r} step {})", map.step.unwrap_or(0))).unwrap_or_default()
        ),
        x_label: "x".into(),
        y_label: "y".into(),
        grid: plot::Grid { xs: map.xs.clone(), ys: map.ys.clone(), z: map.ratio.clone() },
        z_label: "|λmin/λmax|".into(),
        ..Default::default()
    };
    plot::heatmap_chart(out, &chart)?;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct PlotRatioMapArgs {
    /// The slice whose stored ratio map to draw.
    #[arg(long)]
    pub slice: u64,
    /// Output file: .svg or .png.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
}

/// `landscaped plot ratio-map`.
pub(crate) fn plot_ratio_map_cmd(cli: &Cli, a: &PlotRatioMapArgs) -> anyhow::Result<()> {
    let by = crate::query::records::ById { id: a.slice };
    let map = records_or_open(cli, "ratio-map", &by, |s| crate::query::records::ratio_map(s, &by))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no ratio map stored for slice {} (compute it with `landscaped sharpness-map --slice {}`)",
                a.slice,
                a.slice
            )
        })?;
    plot_ratio_map(&map, &a.out)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Checkpoint to bind (default: the model's own weights).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Lanczos's own tolerance (residual bounds of λmax and λmin relative to the spectrum's scale; 1e-3 is
    /// the `sharpness` command's default, and PyHessian's default tolerance).
    #[arg(long, default_value_t = 1e-3)]
    pub accuracy: f64,
    /// HVPs to time.
    #[arg(long, default_value_t = 20)]
    pub timed: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `landscaped sharpness-bench`: Lanczos stopped by its own rule (the `sharpness` command's settings: at most
/// 100 steps, residual tolerance `accuracy`), its HVPs, wall time and error against a tightly converged
/// reference λmax, and the median seconds per HVP through the worker. Prints JSON; the baseline (the real
/// PyHessian) runs in scripts/bench_sharpness_pyhessian.py.
pub(crate) fn run_bench(a: &BenchArgs) -> anyhow::Result<()> {
    use crate::sharpness::remote::WorkerSpace;
    use landscaped_maths::curvature::space::{HessianSpace, Init};
    a.model.validate_flags()?;
    let (mut w, _) =
        crate::sharpness::runner::worker_at_checkpoint(&a.model, a.checkpoint.as_deref(), "sharpness-bench")?;
    let mut h = WorkerSpace::open(&mut w, ParamSubset::All)?;
    let d = h.dim();
    let reference = landscaped_maths::curvature::lanczos::extremes(
        &mut h,
        &LanczosOptions { max_steps: 300.min(d), tol: 1e-9, top_k: 1, seed: a.seed + 1 },
    )?;
    let lref = reference.lambda_max;
    // Lanczos with its own stopping rule: no oracle, no reference consulted.
    let t0 = std::time::Instant::now();
    let lz = landscaped_maths::curvature::lanczos::extremes(
        &mut h,
        &LanczosOptions { max_steps: 100, tol: a.accuracy, top_k: 1, seed: a.seed },
    )?;
    let lanczos_seconds = t0.elapsed().as_secs_f64();
    let v = h.new_vector(Init::Gaussian { seed: a.seed })?;
    let out = h.new_vector(Init::Zeros)?;
    h.hvp(v, out)?;
    let mut times = Vec::with_capacity(a.timed.max(1));
    for _ in 0..a.timed.max(1) {
        let t0 = std::time::Instant::now();
        h.hvp(v, out)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let per_hvp = times[times.len() / 2];
    h.close()?;
    let _ = w.shutdown();
    let res = json!({
        "dim": d,
        "lambda_max_reference": lref,
        "reference_converged": reference.converged,
        "accuracy": a.accuracy,
        "lanczos_hvps": lz.hvps,
        "lanczos_converged": lz.converged,
        "lanczos_lambda_max": lz.lambda_max,
        "lanczos_rel_error": ((lz.lambda_max - lref) / lref).abs(),
        "lanczos_seconds": lanczos_seconds,
        "seconds_per_hvp": per_hvp,
        "timed_hvps": times.len(),
    });
    println!("{}", serde_json::to_string_pretty(&res)?);
    Ok(())
}
