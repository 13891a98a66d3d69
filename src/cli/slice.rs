//! `landscaped slice`, `landscaped interpolate`, `landscaped slices list|show|export` and
//! `landscaped plot slice`: loss-landscape slices through a checkpoint, stored, resumable, exported and
//! plotted.

use super::Cli;
use super::client::records_or_open;
use crate::cancel::{Cancel, Reason};
pub use crate::charts::PlotKind;
use crate::charts::{CONTOUR_LEVELS, slice_panels};
use crate::landscape::export::{write_csv, write_npz, write_vtk};
use crate::landscape::runner::{PlaneSpec, SliceRequest, run_slice};
use crate::landscape::slice::Outcome;
use crate::query::records;
use crate::store::Store;
use crate::store::slices::{DirectionSource, SliceRecord};
use crate::table::{Format, Table};
use anyhow::{Context, Result, anyhow, bail};
use landscaped_formats::Checkpoint;
use landscaped_maths::directions::{Ignore, Normalization, RandomDirections};
use landscaped_maths::grid::Axis;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The model contract on the command line: `--model-dir` (what examples/landscaped_export.py writes) or
/// `--model`, `--eval-data`, `--loss`; the same type the daemon's `[run.model]` section reads.
pub use crate::workers::contract::ModelContract as ModelArgs;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirKind {
    Random,
    Pca,
}

#[derive(clap::Args, Debug)]
pub struct SliceArgs {
    /// Run of the centre checkpoint (with --step; default step: the run's last checkpoint).
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long)]
    pub step: Option<u64>,
    /// The centre checkpoint by path (instead of --run/--step).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// random: filter-normalized Gaussian directions from --seed; pca: the run's trajectory PCA.
    #[arg(long, value_enum, default_value_t = DirKind::Random)]
    pub dirs: DirKind,
    /// x grid, min:max:num (default -1:1:21; for PCA: the trajectory's extent).
    #[arg(long, allow_hyphen_values = true)]
    pub x: Option<Axis>,
    /// y grid for a 2D slice, min:max:num.
    #[arg(long, allow_hyphen_values = true)]
    pub y: Option<Axis>,
    #[arg(long, default_value = "filter")]
    pub norm: Normalization,
    /// biasbn: no direction for tensors of ≤ 1 dimension; none: the reference code's copy of the weights.
    #[arg(long, default_value = "biasbn")]
    pub ignore: Ignore,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Make the y direction orthogonal to x (Gram-Schmidt).
    #[arg(long)]
    pub orthogonalize: bool,
    /// Save progress to the store every N points (an interrupted slice resumes from there).
    #[arg(long, default_value_t = 5)]
    pub persist_every: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(clap::Args, Debug)]
pub struct InterpolateArgs {
    /// Start checkpoint (α = 0): a path, or RUN:STEP from the store.
    pub a: String,
    /// End checkpoint (α = 1).
    pub b: String,
    #[arg(long, default_value = "-0.5:1.5:41", allow_hyphen_values = true)]
    pub x: Axis,
    #[arg(long, default_value_t = 5)]
    pub persist_every: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum SlicesCmd {
    /// Stored slices, one line each.
    List,
    /// One slice: how it was made and its values (JSON with --format json).
    Show { id: u64 },
    /// Write a slice's values: -o FILE.json|.csv|.npz|.vtk (VTK legacy structured grid for ParaView), or
    /// JSON/CSV on stdout by the global --format.
    Export {
        id: u64,
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
pub struct PlotSliceArgs {
    /// Slice id(s); several are drawn side by side (e.g. small and large batch).
    #[arg(required = true)]
    pub ids: Vec<u64>,
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = PlotKind::All)]
    pub kind: PlotKind,
    /// Number of contour levels.
    #[arg(long, default_value_t = CONTOUR_LEVELS)]
    pub levels: usize,
    /// Chart title (default: from the slice).
    #[arg(long)]
    pub title: Option<String>,
}

/// A checkpoint named by path or `RUN:STEP` (looked up in the store's checkpoint records).
fn resolve_checkpoint(store: &Store, name: &str) -> Result<(PathBuf, Option<String>, Option<u64>)> {
    let p = Path::new(name);
    if p.exists() {
        // The step rule `ingest` applies to the same file (name, layout or metadata).
        let step = Checkpoint::open(p).ok().and_then(|c| c.step);
        return Ok((p.to_path_buf(), None, step));
    }
    if let Some((run, step)) = name.rsplit_once(':')
        && let Ok(step) = step.parse::<u64>()
    {
        return by_run_step(store, run, Some(step));
    }
    bail!("{name}: no such checkpoint file, and not RUN:STEP")
}

fn by_run_step(
    store: &Store,
    run: &str,
    step: Option<u64>,
) -> Result<(PathBuf, Option<String>, Option<u64>)> {
    let rec = match step {
        Some(s) => crate::store::checkpoints::checkpoint(store, run, s)?
            .ok_or_else(|| anyhow!("run {run:?} has no ingested checkpoint at step {s}"))?,
        None => crate::store::checkpoints::checkpoints(store, run)?
            .into_iter()
            .last()
            .ok_or_else(|| anyhow!("run {run:?} has no ingested checkpoints"))?,
    };
    Ok((PathBuf::from(&rec.path), Some(rec.run.clone()), Some(rec.step)))
}

/// Runs a slice request with a progress bar, saving to the store; `cancel` (Ctrl-C) stops it with the
/// finished points kept. Prints the outcome.
fn compute(store: &Store, req: SliceRequest<'_>, cancel: &Cancel, format: Format) -> Result<()> {
    let stop_after = stop_after_points();
    let bar = slice_bar();
    let start = std::cell::Cell::new(0);
    let mut on_start = |rec: &SliceRecord, resumed: bool| {
        start.set(rec.values.done_count());
        if resumed {
            eprintln!(
                "resuming slice {} ({}/{} points done)",
                rec.id,
                rec.values.done_count(),
                rec.values.done.len()
            );
        }
        bar.set_length(rec.values.done.len() as u64);
        bar.set_message(rec.id.to_string());
        bar.set_position(start.get() as u64);
    };
    let mut progress = |n: usize, _total: usize| {
        bar.set_position(n as u64);
        if stop_after.is_some_and(|k| n >= start.get() + k) {
            cancel.cancel(Reason::Signal);
        }
    };
    let r = run_slice(store, req, cancel, &mut on_start, &mut progress);
    bar.finish_and_clear();
    let r = r?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&summary_json(&r))?);
        return Ok(());
    }
    match r.outcome {
        Outcome::Complete => print_complete(&r),
        Outcome::Cancelled => println!(
            "slice {}: cancelled after {}/{} points; run the same command again to resume",
            r.record.id,
            r.record.values.done_count(),
            r.record.values.done.len()
        ),
    }
    Ok(())
}

/// Test hook: behave as if Ctrl-C came after this many new points (interruption tests, deterministic).
fn stop_after_points() -> Option<usize> {
    std::env::var("LANDSCAPED_STOP_AFTER_POINTS").ok().and_then(|v| v.parse().ok())
}

/// The slice's progress bar (its length and message set when the slice starts).
fn slice_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} slice {msg} [{bar:30}] {pos}/{len} points, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// One JSON object for machines: the outcome and the summary's numbers.
fn summary_json(r: &crate::landscape::runner::SliceRun) -> serde_json::Value {
    let rec = &r.record;
    let range = rec.values.finite_loss_range();
    let (nan, inf) = rec.values.nonfinite_counts();
    json!({
        "id": rec.id, "kind": rec.kind(), "run": rec.run, "step": rec.step,
        "complete": r.outcome == Outcome::Complete, "points": rec.values.done.len(),
        "done": rec.values.done_count(), "computed": r.computed, "seconds": r.seconds,
        "centre_loss": crate::landscape::export::cell(rec.centre_loss, true),
        "centre_accuracy": rec.centre_accuracy,
        "min_loss": range.map(|r| r.0), "max_loss": range.map(|r| r.1),
        "nan_points": nan, "inf_points": inf, "cosine": rec.cosine,
    })
}

/// A finished slice: its summary line on stdout, what it cost on stderr.
fn print_complete(r: &crate::landscape::runner::SliceRun) {
    let rec = &r.record;
    let range = match rec.values.finite_loss_range() {
        Some((min, max)) => format!("loss range {min:.6} .. {max:.6}"),
        None => "no finite loss".to_string(),
    };
    let (nan, inf) = rec.values.nonfinite_counts();
    let nonfinite = nonfinite_note(nan, inf);
    println!(
        "slice {}: {} points, {} {:.6}{}, {range}{nonfinite}{}",
        rec.id,
        rec.values.done.len(),
        centre_name(rec),
        rec.centre_loss,
        rec.centre_accuracy.map(|a| format!(" (accuracy {:.4})", a)).unwrap_or_default(),
        rec.cosine.map(|c| format!(", cos(δ, η) = {c:.2e}")).unwrap_or_default()
    );
    print_cost(r);
}

/// "centre loss", or for an interpolation "loss at α = 0" (the start checkpoint, not the centre of
/// anything).
fn centre_name(rec: &SliceRecord) -> &'static str {
    match rec.directions {
        DirectionSource::Interpolation { .. } => "loss at α = 0",
        _ => "centre loss",
    }
}

/// Points, seconds and workers; with several workers, how the points were shared.
fn print_cost(r: &crate::landscape::runner::SliceRun) {
    let w = match r.plan.workers {
        1 => "1 worker".to_string(),
        n => format!("{n} workers"),
    };
    eprintln!(
        "computed {} points in {:.2} s ({:.1} points/s; {w} × {} thread(s))",
        r.computed,
        r.seconds,
        r.computed as f64 / r.seconds.max(1e-9),
        r.plan.intra_op
    );
    let d = &r.dispatch;
    if d.points.len() > 1 {
        let per: Vec<String> = d.points.iter().map(|n| n.to_string()).collect();
        eprintln!(
            "points per worker: {}; {} block(s) copied from stragglers ({} late results dropped); {} \
             worker(s) lost",
            per.join(", "),
            d.copied_blocks,
            d.duplicates,
            d.lost.len()
        );
    }
}

/// ", 3 NaN and 1 ±Inf points (computed, not missing)" when there are any.
fn nonfinite_note(nan: usize, inf: usize) -> String {
    match (nan, inf) {
        (0, 0) => String::new(),
        (n, 0) => format!(", {n} NaN point(s) (computed, not missing)"),
        (0, i) => format!(", {i} ±Inf point(s) (computed, not missing)"),
        (n, i) => format!(", {n} NaN and {i} ±Inf point(s) (computed, not missing)"),
    }
}

pub(crate) fn run_slice_cmd(cli: &Cli, a: &SliceArgs) -> Result<()> {
    a.model.validate_flags()?;
    // Ctrl-C: the first stops the slice (saved, resumable), the second exits.
    let cancel = Cancel::on_signals();
    let store = super::client::open_local(cli, "slice")?;
    let (path, run, step) = match (&a.checkpoint, &a.run) {
        (Some(p), _) => (p.clone(), a.run.clone(), a.step),
        (None, Some(run)) => {
            let step = match (a.step, a.dirs) {
                (None, DirKind::Pca) => {
                    crate::store::trajectory::latest_pca(&store, run)?.map(|p| p.center_step)
                }
                (s, _) => s,
            };
            by_run_step(&store, run, step)?
        }
        (None, None) => bail!("which checkpoint? pass --run R [--step S] or --checkpoint FILE"),
    };
    let step = step.or_else(|| Checkpoint::open(&path).ok().and_then(|c| c.step));
    let (plane, directions, xs, ys, trajectory) = plane_of(a, &store, &path, run.as_deref())?;
    let req = SliceRequest {
        contract: &a.model,
        plane,
        xs,
        ys,
        run,
        step,
        directions,
        trajectory,
        signature_prefix: "slice".into(),
        skip_if_complete: false,
        persist_every: a.persist_every,
        label: "slice".into(),
        recorded_as: None,
    };
    compute(&store, req, &cancel, cli.format)
}

/// A slice's plane (its spec, its directions as stored), its grid (xs, ys) and the optimizer path drawn
/// on it (x, y, step).
type Plane = (PlaneSpec, DirectionSource, Vec<f64>, Vec<f64>, Vec<(f64, f64, u64)>);

/// The plane `a` asks for through `path`: random directions (`--dirs random`), or the run's latest
/// trajectory PCA (`--dirs pca`, with the optimizer path on it).
fn plane_of(a: &SliceArgs, store: &Store, path: &Path, run: Option<&str>) -> Result<Plane> {
    let path = path.to_path_buf();
    Ok(match a.dirs {
        DirKind::Random => {
            let dirs = RandomDirections {
                seed: a.seed,
                norm: a.norm,
                ignore: a.ignore,
                params: Vec::new(),
                orthogonalize: a.orthogonalize,
            };
            let xs = a.x.unwrap_or(Axis { min: -1.0, max: 1.0, num: 21 }).values();
            let ys = a.y.map(|y| y.values()).unwrap_or_default();
            let plane = PlaneSpec::Random { centre: path, dirs: dirs.clone(), two_d: a.y.is_some() };
            (plane, DirectionSource::Random(dirs), xs, ys, Vec::new())
        }
        DirKind::Pca => {
            let run =
                run.ok_or_else(|| anyhow!("--dirs pca needs --run (the run whose trajectory PCA to use)"))?;
            let pca = crate::store::trajectory::latest_pca(store, run)?.ok_or_else(|| {
                anyhow!("run {run:?} has no trajectory PCA yet (run `landscaped pca --run {run}` first)")
            })?;
            let p = crate::landscape::pca_dirs::pca_plane(&pca, a.x, a.y)?;
            let plane = PlaneSpec::Files { centre: path, x: p.files[0].clone(), y: p.files[1].clone() };
            (plane, p.source, p.xs, p.ys, p.trajectory)
        }
    })
}

pub(crate) fn run_interpolate(cli: &Cli, a: &InterpolateArgs) -> Result<()> {
    a.model.validate_flags()?;
    // Ctrl-C: the first stops the slice (saved, resumable), the second exits.
    let cancel = Cancel::on_signals();
    let store = super::client::open_local(cli, "interpolate")?;
    let (pa, run, step) = resolve_checkpoint(&store, &a.a)?;
    let (pb, _, _) = resolve_checkpoint(&store, &a.b)?;
    let req = SliceRequest {
        contract: &a.model,
        plane: PlaneSpec::Interpolation { centre: pa.clone(), to: pb.clone() },
        xs: a.x.values(),
        ys: Vec::new(),
        run,
        step,
        directions: DirectionSource::Interpolation { to: pb.display().to_string() },
        trajectory: Vec::new(),
        signature_prefix: "interpolate".into(),
        skip_if_complete: false,
        persist_every: a.persist_every,
        label: "interpolate".into(),
        recorded_as: None,
    };
    compute(&store, req, &cancel, cli.format)
}

/// One stored slice, from the store or the daemon holding it.
fn get(cli: &Cli, id: u64) -> Result<SliceRecord> {
    let by = records::ById { id };
    records_or_open(cli, "slice", &by, |s| records::slice(s, &by))
}

fn describe(r: &SliceRecord) -> String {
    match &r.directions {
        DirectionSource::Random(d) => format!(
            "{} {} seed {}{}",
            d.norm,
            match d.ignore {
                Ignore::Biasbn => "biasbn",
                Ignore::None => "no-ignore",
            },
            d.seed,
            if d.orthogonalize { " orth" } else { "" }
        ),
        DirectionSource::Pca { run, explained_variance_ratio, .. } => format!(
            "PCA of {run} ({})",
            explained_variance_ratio
                .iter()
                .take(2)
                .map(|v| format!("{:.1}%", v * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DirectionSource::Interpolation { to } => format!("to {to}"),
    }
}

/// The record as JSON: `loss` and `accuracy` rows with `null` where a point was not computed and
/// `"nan"`/`"inf"`/`"-inf"` where its computed value is not finite (`crate::landscape::export::cell`).
fn record_json(r: &SliceRecord) -> serde_json::Value {
    use crate::landscape::export::{accuracy_cells, loss_cells};
    let rows = |v: Vec<serde_json::Value>| -> Vec<Vec<serde_json::Value>> {
        v.chunks(r.values.nx().max(1)).map(<[serde_json::Value]>::to_vec).collect()
    };
    let (nan, inf) = r.values.nonfinite_counts();
    json!({
        "id": r.id, "kind": r.kind(), "run": r.run, "step": r.step, "checkpoint": r.checkpoint,
        "directions": r.directions, "description": describe(r), "cosine": r.cosine, "model": r.model,
        "centre_loss": r.centre_loss, "centre_accuracy": r.centre_accuracy,
        "xs": r.values.xs, "ys": r.values.ys, "shape": [r.values.ny(), r.values.nx()],
        "loss": rows(loss_cells(&r.values)), "accuracy": rows(accuracy_cells(&r.values)),
        "nan_points": nan, "inf_points": inf,
        "done": r.values.done.chunks(r.values.nx().max(1)).collect::<Vec<_>>(),
        "trajectory": r.trajectory, "created": r.created, "updated": r.updated,
    })
}

pub fn run_slices(cli: &Cli, cmd: &SlicesCmd) -> Result<()> {
    match cmd {
        SlicesCmd::List => list_slices(cli),
        SlicesCmd::Show { id } => show_slice(cli, &get(cli, *id)?),
        SlicesCmd::Export { id, out: None } => {
            let r = get(cli, *id)?;
            match cli.format {
                Format::Csv => write_csv(&r.values, &mut std::io::stdout().lock())?,
                _ => println!("{}", serde_json::to_string_pretty(&record_json(&r))?),
            }
            Ok(())
        }
        SlicesCmd::Export { id, out: Some(p) } => export_slice(&get(cli, *id)?, p),
    }
}

/// `slices list`: one row per stored slice.
fn list_slices(cli: &Cli) -> Result<()> {
    let mut t = Table::new([
        "id",
        "kind",
        "run",
        "step",
        "grid",
        "done",
        "centre_loss",
        "min_loss",
        "nan",
        "inf",
        "directions",
    ]);
    for r in records_or_open(cli, "slices", &(), |s| records::all_slices(s, &()))? {
        let min = r.values.finite_loss_range().map(|r| r.0);
        let (nan, inf) = r.values.nonfinite_counts();
        t.push(vec![
            json!(r.id),
            json!(r.kind()),
            json!(r.run),
            json!(r.step),
            json!(if r.values.is_2d() {
                format!("{}x{}", r.values.nx(), r.values.ny())
            } else {
                r.values.nx().to_string()
            }),
            json!(format!("{}/{}", r.values.done_count(), r.values.done.len())),
            crate::landscape::export::cell(r.centre_loss, true),
            json!(min),
            json!(nan),
            json!(inf),
            json!(describe(&r)),
        ]);
    }
    t.print(cli.format)?;
    Ok(())
}

/// `slices show`: the record as JSON, CSV, or its description and every point as a table.
fn show_slice(cli: &Cli, r: &SliceRecord) -> Result<()> {
    match cli.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&record_json(r))?),
        Format::Csv => write_csv(&r.values, &mut std::io::stdout().lock())?,
        Format::Table => {
            print_description(r);
            points_table(r).print(Format::Table)?;
        }
    }
    Ok(())
}

/// What a slice is: centre, directions, model, centre loss and how many points are done.
fn print_description(r: &SliceRecord) {
    println!("slice {} ({}), centre {}", r.id, r.kind(), r.checkpoint);
    println!("directions: {}", describe(r));
    if let Some(c) = r.cosine {
        println!("cos(δ, η): {c:.3e}");
    }
    let on = if r.model.eval_data.is_empty() { String::new() } else { format!(" on {}", r.model.eval_data) };
    println!("model: {}{on} ({} samples, loss {})", r.model.model, r.model.samples, r.model.loss);
    println!(
        "{}: {:.6}{}",
        centre_name(r),
        r.centre_loss,
        r.centre_accuracy.map(|a| format!(", accuracy {a:.4}")).unwrap_or_default()
    );
    let (nan, inf) = r.values.nonfinite_counts();
    println!("points done: {}/{}{}", r.values.done_count(), r.values.done.len(), nonfinite_note(nan, inf));
}

/// Every point: x (α for an interpolation), y for a 2D slice (a 1D slice has no y: its column would be
/// all zeros), loss and accuracy, blank where not computed.
fn points_table(r: &SliceRecord) -> Table {
    let two_d = r.values.is_2d();
    let x_name = if matches!(r.directions, DirectionSource::Interpolation { .. }) { "alpha" } else { "x" };
    let mut t = Table::new(if two_d {
        vec![x_name, "y", "loss", "accuracy"]
    } else {
        vec![x_name, "loss", "accuracy"]
    });
    for i in 0..r.values.loss.len() {
        let (x, y) = r.values.coords(i);
        let d = r.values.done[i];
        let loss = if d { crate::landscape::export::cell(r.values.loss[i], true) } else { json!("") };
        let acc = crate::landscape::export::accuracy_cell(r.values.accuracy[i], d);
        let mut row = vec![json!(x)];
        if two_d {
            row.push(json!(y));
        }
        row.extend([loss, acc]);
        t.push(row);
    }
    t
}

/// `slices export --out P`: the format by P's extension (.json, .csv, .vtk, .npz).
fn export_slice(r: &SliceRecord, p: &Path) -> Result<()> {
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let file = std::fs::File::create(p).with_context(|| format!("{}", p.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let res = match ext.as_str() {
        "json" => serde_json::to_writer_pretty(&mut w, &record_json(r)).map_err(std::io::Error::other),
        "csv" => write_csv(&r.values, &mut w),
        "vtk" => write_vtk(&r.values, &format!("landscaped slice {} {}", r.id, describe(r)), &mut w),
        "npz" => write_npz(&r.values, &mut w),
        _ => bail!("{}: unknown export format (use .json, .csv, .npz or .vtk)", p.display()),
    };
    res.and_then(|_| std::io::Write::flush(&mut w)).with_context(|| format!("{}", p.display()))?;
    eprintln!("wrote {}", p.display());
    Ok(())
}

pub(crate) fn run_plot_slice(cli: &Cli, a: &PlotSliceArgs) -> Result<()> {
    let recs = a.ids.iter().map(|&id| get(cli, id)).collect::<Result<Vec<_>>>()?;
    let mut panels = Vec::new();
    for r in &recs {
        let kind = if recs.len() > 1 && a.kind == PlotKind::All { PlotKind::Contour } else { a.kind };
        panels.extend(slice_panels(r, kind, a.levels));
    }
    let title = a.title.clone().unwrap_or_default();
    if panels.len() == 1 && title.is_empty() {
        crate::plot::panel_chart(&a.out, &panels[0])?;
    } else {
        crate::plot::side_by_side(&a.out, &title, panels)?;
    }
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
