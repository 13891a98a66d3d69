//! The flags that pick the checkpoint a measuring command works on (`sharpness`, `stability`): a run's
//! recorded checkpoint by step, or a file or folder named directly, and `--list` for what is stored.
//!
//! One rule for both commands: `--run` names where the result is stored (and, without `--checkpoint`,
//! which run's checkpoint to measure); `--checkpoint` alone measures that file and prints the result
//! without storing it; the step is `--step`, else the step `ingest` gives the same file.

use super::Cli;
use super::client::open_local;
use crate::query::records::ByRun;
use crate::sharpness::runner::resolve_checkpoint;
use crate::store::Store;
use anyhow::bail;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct CheckpointFlags {
    /// Run name (as ingested); the result is stored under it. Without --checkpoint it also picks the
    /// checkpoint; with --checkpoint and no --run the result is printed, not stored.
    #[arg(long)]
    pub run: Option<String>,
    /// Step (default: the run's last ingested checkpoint; with --checkpoint, the step its name or layout
    /// gives, as `ingest` reads it).
    #[arg(long)]
    pub step: Option<u64>,
    /// Checkpoint file or folder to use instead of the one recorded at ingest.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Print the stored results of the run instead of computing.
    #[arg(long)]
    pub list: bool,
}

/// The checkpoint to measure, and the store the result goes to.
pub struct Chosen {
    /// Open when the result is kept (a run named and storing not turned off) or the checkpoint is a run's.
    pub store: Option<Store>,
    /// The result is stored under this run (None: printed only).
    pub keep: Option<String>,
    /// The run the result is labelled with ("" without --run).
    pub run: String,
    pub path: PathBuf,
    pub step: u64,
}

impl CheckpointFlags {
    /// The run name checked, when given.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(run) = &self.run {
            crate::store::keys::validate_run_name(run).map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(())
    }

    /// The run whose stored results `--list` prints.
    pub fn list_run(&self) -> anyhow::Result<ByRun> {
        match &self.run {
            Some(run) => Ok(ByRun { run: run.clone() }),
            None => bail!("--list needs --run (the run whose results to print)"),
        }
    }

    /// The checkpoint `command` measures, and the store (opened here: a measuring command writes, so
    /// `--endpoint` is refused) when the result is kept or the checkpoint is found through a run.
    pub fn choose(&self, cli: &Cli, command: &str, no_store: bool) -> anyhow::Result<Chosen> {
        if self.run.is_none() && self.checkpoint.is_none() {
            bail!("which checkpoint? pass --run R [--step S] or --checkpoint FILE");
        }
        let keep = self.run.clone().filter(|_| !no_store);
        let store =
            if keep.is_some() || self.checkpoint.is_none() { Some(open_local(cli, command)?) } else { None };
        let run = self.run.clone().unwrap_or_default();
        let (path, step) = resolve_checkpoint(store.as_ref(), &run, self.step, self.checkpoint.as_deref())?;
        Ok(Chosen { store, keep, run, path, step })
    }
}

impl Chosen {
    /// The store the result goes to, or None after saying on stderr why it is not stored.
    pub fn store_for_result(&self) -> Option<&Store> {
        match (&self.store, &self.keep) {
            (Some(store), Some(_)) => Some(store),
            (_, None) if self.run.is_empty() => {
                eprintln!("not stored: pass --run R to keep the result under a run");
                None
            }
            _ => None,
        }
    }
}
