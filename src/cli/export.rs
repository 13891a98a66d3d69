//! `landscaped export tensorboard --run R --out DIR`: a stored run's landscape as TensorBoard events in
//! DIR (the trainer's run folder, e.g. HF Trainer's `logging_dir`), beside the trainer's own files.
//! Run again, it adds only what is new (see [`crate::tensorboard::writer`]). While the daemon holds the
//! store (or with `--endpoint`), the run's records are asked of the daemon's API and exported from a
//! temporary copy, with the same code.

use super::Cli;
use super::client::{Client, local_or_daemon};
use crate::query::records::{ByRun, ByRunStep, RunRecords, write_tensors};
use crate::query::runs::require_run;
use crate::store::Store;
use crate::store::checkpoints::TensorRecord;
use crate::tensorboard::{RunLog, TensorChoice};
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum ExportCmd {
    /// A run's records as TensorBoard event files: scalars, weight histograms, charts, settings.
    Tensorboard(TensorboardArgs),
}

#[derive(clap::Args, Debug)]
pub struct TensorboardArgs {
    /// The run to export.
    #[arg(long)]
    pub run: String,
    /// The TensorBoard run folder to write into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Tensors (glob on the name) that get their own norm series and histograms; repeatable.
    #[arg(long = "tensor")]
    pub tensors: Vec<String>,
    /// Plus the N largest tensors (by element count).
    #[arg(long, default_value_t = 8)]
    pub top_k: usize,
}

pub fn run(cli: &Cli, cmd: &ExportCmd) -> anyhow::Result<()> {
    match cmd {
        ExportCmd::Tensorboard(a) => tensorboard(cli, a),
    }
}

fn tensorboard(cli: &Cli, a: &TensorboardArgs) -> anyhow::Result<()> {
    local_or_daemon(
        cli,
        |store| export(store, a, &format!("the store in `{}`", cli.data_dir().display())),
        |client| {
            let copy = copy_from_daemon(client, &a.run)?;
            export(&copy.store, a, &format!("the store served by the daemon at {}", client.base()))
        },
    )
}

/// Writes the run's events from `store` (`from`: where the records come from, for the settings text).
fn export(store: &Store, a: &TensorboardArgs, from: &str) -> anyhow::Result<()> {
    let cks = require_run(store, &a.run)?;
    let choice = TensorChoice::new(&a.tensors, a.top_k)?;
    let settings = format!(
        "Exported by `landscaped export tensorboard` from {from}: run `{}`, {} checkpoint(s) \
         (steps {} to {}); per-tensor series for tensors matching {:?} and the {} largest.",
        a.run,
        cks.len(),
        cks.first().map_or(0, |c| c.step),
        cks.last().map_or(0, |c| c.step),
        a.tensors,
        a.top_k
    );
    let (mut log, reopened) = RunLog::open(&a.out, &a.run, choice, settings)?;
    if let Some((bytes, why)) = &reopened.cut {
        eprintln!("{}: {why}; cut {bytes} bytes off its end", log.path().display());
    }
    let w = log.all(store)?;
    println!(
        "wrote {} scalars, {} histograms, {} images, {} texts to {}",
        w.scalars,
        w.histograms,
        w.images,
        w.texts,
        log.path().display()
    );
    Ok(())
}

/// A store in a temporary folder, removed when dropped.
struct TempStore {
    store: Store,
    dir: PathBuf,
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The run's records, asked of the daemon that holds the store (the run's records, then each
/// checkpoint's tensors, so no answer holds the whole run), copied into a temporary store.
fn copy_from_daemon(client: &Client, run: &str) -> anyhow::Result<TempStore> {
    let records: RunRecords = client.records("run-records", &ByRun { run: run.to_string() })?;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("landscaped-export-{}-{nanos}", std::process::id()));
    let store = Store::open(&dir)
        .with_context(|| format!("a temporary store for the export in {}", dir.display()))?;
    let copy = TempStore { store, dir };
    records.write_to(&copy.store)?;
    for c in &records.checkpoints {
        let at = ByRunStep { run: run.to_string(), step: c.step };
        let tensors: Vec<TensorRecord> = client.records("checkpoint-tensors", &at)?;
        write_tensors(&copy.store, run, c.step, &tensors)?;
    }
    Ok(copy)
}
