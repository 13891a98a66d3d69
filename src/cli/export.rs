//! `landscaped export tensorboard --run R --out DIR`: a stored run's landscape as TensorBoard events in
//! DIR (the trainer's run folder, e.g. HF Trainer's `logging_dir`), beside the trainer's own files.
//! Run again, it adds only what is new (see [`crate::tensorboard::writer`]).

use super::Cli;
use crate::query::runs::require_run;
use crate::store::Store;
use crate::tensorboard::{RunLog, TensorChoice};
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
    let store = Store::open(&cli.data_dir())?;
    let cks = require_run(&store, &a.run)?;
    let choice = TensorChoice::new(&a.tensors, a.top_k)?;
    let settings = format!(
        "Exported by `landscaped export tensorboard` from the store in `{}`: run `{}`, {} checkpoint(s) \
         (steps {} to {}); per-tensor series for tensors matching {:?} and the {} largest.",
        cli.data_dir().display(),
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
    let w = log.all(&store)?;
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
