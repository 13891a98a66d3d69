//! `landscaped ingest PATH... --run NAME`: read checkpoints (files, HF folders, or folders holding them),
//! record their statistics, and print one row per checkpoint. A progress bar on a terminal, none when
//! piped.

use super::Cli;
use crate::ingest::{IngestError, IngestOptions, ingest_checkpoint_with_progress};
use crate::sink::TensorSink;
use crate::table::Table;
use crate::trajectory::archive::{ArchiveOptions, ArchiveReport, ArchiveSink};
use landscaped_formats as checkpoint;
use landscaped_formats::CheckpointError;
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Checkpoint files, HF `checkpoint-N/` folders, or folders to search for checkpoints.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The run these checkpoints belong to.
    #[arg(long)]
    pub run: String,
    /// The training step, for a single checkpoint whose name and metadata carry none.
    #[arg(long)]
    pub step: Option<u64>,
    /// Histogram buckets per tensor.
    #[arg(long, default_value_t = landscaped_maths::stats::DEFAULT_BINS, value_parser = parse_bins)]
    pub bins: usize,
    /// Skip distances to the first and previous checkpoints (don't re-read them).
    #[arg(long)]
    pub no_distances: bool,
    /// Don't keep this checkpoint's parameters in the run's trajectory archive. By default they are
    /// kept (in the checkpoint's own precision), because `landscaped pca` and the distances need them
    /// once training rotates old checkpoints away.
    #[arg(long)]
    pub no_archive: bool,
    /// How the run's archive is kept (precision, retention, budget, tensors).
    #[command(flatten)]
    pub keep: ArchiveOptions,
    /// Tensor data held in memory at once, in MiB, whatever the checkpoint's size (values are streamed
    /// in chunks within it).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub memory_budget_mib: u64,
    /// Refuse tensors larger than this many GiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_tensor_gib: u64,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

fn parse_bins(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a bucket count between 1 and 4096")),
    }
}

pub fn run(cli: &Cli, args: &IngestArgs) -> anyhow::Result<()> {
    super::client::no_endpoint(cli, "ingest")?;
    // Expand folders into the checkpoints they hold, in step order.
    let mut paths = Vec::new();
    for p in &args.paths {
        // Canonical, as the daemon records them: stamps and the distance/update references are
        // looked up by the canonical path, so a relative one would lose those columns.
        let p = &p.canonicalize().unwrap_or_else(|_| p.clone());
        if p.is_dir() {
            let found = checkpoint::find_checkpoints(p)?;
            if found.is_empty() {
                anyhow::bail!("{}: no checkpoints found in this folder", p.display());
            }
            paths.extend(found.into_iter().map(|f| (f, true)));
        } else if p.exists() {
            paths.push((p.clone(), false));
        } else {
            anyhow::bail!("{}: no such file or folder", p.display());
        }
    }
    if args.step.is_some() && paths.len() != 1 {
        anyhow::bail!("--step applies to a single checkpoint, but {} were given", paths.len());
    }
    let store = crate::store::Store::open(&cli.data_dir())?;
    let opts = IngestOptions {
        bins: args.bins,
        step: args.step,
        distances: !args.no_distances,
        memory_budget: (args.memory_budget_mib as usize) << 20,
        max_tensor_bytes: args.max_tensor_gib << 30,
        threads: args.threads,
    };

    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(1000 * paths.len() as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar:40} {msg}")
        {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };

    let mut t = Table::new([
        "step",
        "status",
        "tensors",
        "numel",
        "global_norm",
        "dist_first",
        "update_norm",
        "update_cos",
        "nan",
        "inf",
        "seconds",
        "path",
    ]);
    let mut archive = match args.no_archive {
        false => Some(ArchiveSink::new(&cli.data_dir(), &args.keep.config()?)?),
        true => None,
    };
    let mut skipped = 0;
    let mut archived = ArchiveSummary::default();
    for (i, (p, in_folder)) in paths.iter().enumerate() {
        bar.set_message(format!("{}/{} {}", i + 1, paths.len(), p.display()));
        let base = 1000 * i as u64;
        let mut progress = |done: u64, total: u64| {
            let frac = if total == 0 { 1.0 } else { done as f64 / total as f64 };
            bar.set_position(base + (frac * 1000.0) as u64);
        };
        let started = std::time::Instant::now();
        let mut sinks: Vec<&mut dyn TensorSink> = Vec::new();
        if let Some(a) = archive.as_mut() {
            sinks.push(a);
        }
        let out =
            match ingest_checkpoint_with_progress(&store, &args.run, p, &opts, &mut sinks, &mut progress) {
                Ok(out) => out,
                // A file found in a folder that is not a training checkpoint (no step, a TorchScript
                // export, ...): skip it and say so; named on the command line, it is an error.
                Err(
                    e @ (IngestError::NoStep(_)
                    | IngestError::Checkpoint(CheckpointError::Unsupported { .. })),
                ) if *in_folder => {
                    bar.suspend(|| eprintln!("skipped: {e}"));
                    skipped += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
        if let Some(rep) = archive.as_mut().and_then(|a| a.take_report()) {
            archived.add(&rep);
        }
        if let Some(note) = &out.optimizer_note {
            bar.suspend(|| eprintln!("{note}"));
        }
        let r = &out.record;
        t.push(vec![
            json!(r.step),
            json!(out.status.as_str()),
            json!(r.tensors),
            json!(r.numel),
            json!(r.global_norm),
            json!(r.dist_first),
            json!(r.update_norm),
            json!(r.update_cos),
            json!(r.nan_count),
            json!(r.inf_count),
            json!((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
            json!(p.display().to_string()),
        ]);
    }
    bar.finish_and_clear();
    if skipped > 0 && t.rows.is_empty() {
        anyhow::bail!("none of the {skipped} files found was a checkpoint with a training step");
    }
    store.flush()?;
    super::runs::print_table(&t, cli.format)?;
    if let Some(line) = archived.line(&args.run) {
        eprintln!("{line}");
    }
    Ok(())
}

/// What the archive did over one `ingest` command, said in one line at the end (not one per checkpoint).
#[derive(Default)]
struct ArchiveSummary {
    written: usize,
    bytes: u64,
    over_budget: Vec<u64>,
    removed: Vec<u64>,
    last: Option<ArchiveReport>,
}

impl ArchiveSummary {
    fn add(&mut self, rep: &ArchiveReport) {
        if rep.written {
            self.written += 1;
            self.bytes += rep.bytes_written;
        } else {
            self.over_budget.push(rep.step);
        }
        self.removed.extend_from_slice(&rep.removed_steps);
        self.last = Some(rep.clone());
    }

    /// `trajectory archive: 3 checkpoints archived (1.2 MB); run r keeps 5 (2.0 MB of a 10 MiB budget);
    /// removed steps 10, 20`; None when no checkpoint reached the archive.
    fn line(&self, run: &str) -> Option<String> {
        let last = self.last.as_ref()?;
        let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        let mut s = format!(
            "trajectory archive: {} checkpoint{} archived ({})",
            self.written,
            if self.written == 1 { "" } else { "s" },
            mb(self.bytes)
        );
        if !self.over_budget.is_empty() {
            s += &format!(
                ", {} not (each alone over the budget: step {})",
                self.over_budget.len(),
                join(&self.over_budget)
            );
        }
        s += &format!("; run {run} keeps {} ({}", last.files_kept, mb(last.bytes_used));
        if let Some(b) = last.budget_bytes {
            s += &format!(" of a {} MiB budget", b >> 20);
        }
        s += ")";
        if !self.removed.is_empty() {
            s += &format!("; removed by retention or the budget: step {}", join(&self.removed));
        }
        Some(s)
    }
}

fn join(steps: &[u64]) -> String {
    steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
}
