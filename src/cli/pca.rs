//! `landscaped pca`, `landscaped trajectory` and the trajectory plot: PCA of a run's archived
//! trajectory (the paper's optimizer-path directions), its coordinates and residuals, and the path on
//! the PC1/PC2 plane.

use super::Cli;
use super::client::records_or_open;
use crate::query::records;
use crate::sink::TensorSink;
use crate::store::trajectory::{PcaConfig, PcaRecord};
use crate::table::Table;
use crate::trajectory::archive::{ArchiveOptions, ArchiveSink};
use crate::trajectory::select::Selection;
use anyhow::Context;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct PcaArgs {
    /// The run whose archived trajectory to analyse.
    #[arg(long)]
    pub run: String,
    /// Centre θ_c: rows are θ_i − θ_c (default: the last archived checkpoint).
    #[arg(long)]
    pub center: Option<u64>,
    /// Number of principal components.
    #[arg(long, default_value_t = 2)]
    pub components: usize,
    /// Leave out tensors with at most one dimension (biases, batch norm).
    #[arg(long)]
    pub exclude_1d: bool,
    /// Only tensors whose name matches one of these globs (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave out tensors whose name matches these globs (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Keep batch-norm running statistics (buffers, left out by default).
    #[arg(long)]
    pub include_buffers: bool,
}

impl PcaArgs {
    pub fn config(&self) -> PcaConfig {
        PcaConfig {
            components: self.components,
            center_step: self.center,
            selection: Selection {
                exclude_1d: self.exclude_1d,
                include: self.include.clone(),
                exclude: self.exclude.clone(),
                include_buffers: self.include_buffers,
            },
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrajectoryArgs {
    /// The run.
    #[arg(long)]
    pub run: String,
    /// List the archived checkpoints (step, bytes, precision) instead of the PCA coordinates.
    #[arg(long)]
    pub archive: bool,
    /// Archive these checkpoints (files, HF folders, or folders holding them) without recording their
    /// statistics, e.g. to backfill the trajectory of an earlier run; then list the archive.
    #[arg(long, num_args = 1..)]
    pub import: Vec<PathBuf>,
    /// How --import keeps the run's archive (the same options as `ingest`'s).
    #[command(flatten)]
    pub keep: ArchiveOptions,
}

/// Archives checkpoints into the run's trajectory (the same sink ingest uses), one tensor at a time.
pub fn import(cli: &Cli, args: &TrajectoryArgs) -> anyhow::Result<()> {
    super::client::no_endpoint(cli, "trajectory --import")?;
    let cfg = args.keep.config()?;
    let mut paths = Vec::new();
    for p in &args.import {
        if p.is_dir() && !landscaped_formats::is_hf_folder(p) {
            paths.extend(landscaped_formats::find_checkpoints(p)?);
        } else {
            paths.push(p.clone());
        }
    }
    if paths.is_empty() {
        anyhow::bail!("--import: no checkpoints found");
    }
    let mut sink = ArchiveSink::new(&cli.data_dir(), &cfg)?;
    for p in &paths {
        let ck = landscaped_formats::Checkpoint::open(p)?;
        let step = ck
            .step
            .ok_or_else(|| anyhow::anyhow!("{}: no training step in its name or metadata", p.display()))?;
        sink.begin(&args.run, step, &ck)?;
        let res = (|| -> anyhow::Result<()> {
            for (i, _) in ck.float_tensors() {
                ck.read_chunks(i, 4 << 20, |c: landscaped_formats::ValuesChunk<'_>| {
                    sink.chunk(i, c.start, c.values)
                })?;
            }
            sink.finish()
        })();
        if let Err(e) = res {
            sink.abort();
            return Err(e);
        }
        if let Some(r) = sink.last_report()
            && !r.written
        {
            eprintln!("step {step}: not archived: it alone exceeds the budget");
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct PlotTrajectoryArgs {
    /// The run.
    #[arg(long)]
    pub run: String,
    /// Output image, .svg or .png.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

fn latest(cli: &Cli, run: &str) -> anyhow::Result<PcaRecord> {
    let by = records::ByRun { run: run.to_string() };
    records_or_open(cli, "pca-latest", &by, |s| records::latest_pca(s, &by))?.ok_or_else(|| {
        anyhow::anyhow!(
            "run {run:?} has no PCA yet: run `landscaped pca --run {run}` (or enable [run.pca] in the daemon)"
        )
    })
}

/// `landscaped pca`: compute, store, print the components.
pub(crate) fn run_pca(cli: &Cli, args: &PcaArgs) -> anyhow::Result<()> {
    let req = records::PcaRequest { run: args.run.clone(), config: args.config() };
    let rec = records_or_open(cli, "pca", &req, |s| records::compute_pca(s, &req))?;
    let mut t =
        Table::new(["component", "explained_variance", "explained_variance_ratio", "singular_value", "file"]);
    for k in 0..rec.explained_variance.len() {
        t.push(vec![
            json!(k + 1),
            json!(rec.explained_variance[k]),
            json!(rec.explained_variance_ratio[k]),
            json!(rec.singular_values[k]),
            json!(rec.direction_files[k]),
        ]);
    }
    t.print(cli.format)?;
    if cli.format == crate::table::Format::Table {
        let maxcos = (0..rec.cosines.len())
            .flat_map(|a| (0..a).map(move |b| (a, b)))
            .map(|(a, b)| rec.cosines[a][b].abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{} checkpoints (steps {}..{}), centre step {}, {} parameters in {} tensors; max |cos| between components {:.1e}",
            rec.steps.len(),
            rec.steps.first().copied().unwrap_or(0),
            rec.steps.last().copied().unwrap_or(0),
            rec.center_step,
            rec.n_params,
            rec.n_tensors,
            maxcos
        );
    }
    Ok(())
}

/// The coordinates table of a PCA record: step, pc1..pck, residual, distance.
pub(crate) fn coordinates_table(rec: &PcaRecord) -> Table {
    let k = rec.explained_variance.len();
    let mut headers = vec!["step".to_string()];
    headers.extend((1..=k).map(|j| format!("pc{j}")));
    headers.push("residual".into());
    headers.push("distance".into());
    let mut t = Table::new(headers);
    for (i, step) in rec.steps.iter().enumerate() {
        let mut row = vec![json!(step)];
        row.extend(rec.coords[i].iter().map(|c| json!(c)));
        row.push(json!(rec.residuals[i]));
        row.push(json!(rec.distances.get(i).copied().unwrap_or(f64::NAN)));
        t.push(row);
    }
    t
}

/// `landscaped trajectory`: the latest PCA's coordinates and residuals, or the archive's contents.
pub(crate) fn run_trajectory(cli: &Cli, args: &TrajectoryArgs) -> anyhow::Result<()> {
    if !args.import.is_empty() {
        import(cli, args)?;
    }
    if args.archive || !args.import.is_empty() {
        let by = records::ByRun { run: args.run.clone() };
        let entries = records_or_open(cli, "archive", &by, |s| records::archived_steps(s, &by))?;
        if entries.is_empty() {
            anyhow::bail!("run {:?} has no archived checkpoints", args.run);
        }
        let mut t = Table::new(["step", "bytes", "precision", "tensors", "parameters"]);
        for e in &entries {
            t.push(vec![
                json!(e.step),
                json!(e.bytes),
                json!(e.precision),
                json!(e.tensors),
                json!(e.parameters),
            ]);
        }
        t.print(cli.format)?;
        if cli.format == crate::table::Format::Table {
            let total: u64 = entries.iter().map(|e| e.bytes).sum();
            let budget = match args.keep.budget_mib {
                Some(b) => format!(" of a {b} MiB budget"),
                None => String::new(),
            };
            eprintln!(
                "{} checkpoints, {} bytes ({:.1} MiB{budget})",
                entries.len(),
                total,
                total as f64 / 1048576.0
            );
        }
        return Ok(());
    }
    let rec = latest(cli, &args.run)?;
    coordinates_table(&rec).print(cli.format)?;
    Ok(())
}

/// `landscaped plot trajectory` (also `plot-trajectory`): draw the latest PCA's path.
pub(crate) fn run_plot_trajectory(cli: &Cli, args: &PlotTrajectoryArgs) -> anyhow::Result<()> {
    let rec = latest(cli, &args.run)?;
    let chart = crate::charts::trajectory_chart(&rec)?;
    crate::plot::path_chart(&args.output, &chart).with_context(|| format!("{}", args.output.display()))?;
    Ok(())
}
