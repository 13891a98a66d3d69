//! The `runs` and `checkpoints` queries: what the store holds (printed by `landscaped runs` and
//! `landscaped checkpoints --run R`, answered by the daemon at `POST /api/v1/query/{name}`).

use crate::store::{Store, checkpoints as records};
use crate::table::Table;
use serde_json::json;

/// `runs` takes no arguments.
#[derive(clap::Args, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunsArgs {}

#[derive(clap::Args, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CheckpointsArgs {
    /// The run to list.
    #[arg(long)]
    pub run: String,
}

/// The daemon's entry for the `runs` query.
pub(crate) fn runs_query(store: &Store, args: serde_json::Value) -> anyhow::Result<Table> {
    runs_table(store, &serde_json::from_value(args)?)
}

pub(crate) fn runs_table(store: &Store, _args: &RunsArgs) -> anyhow::Result<Table> {
    let mut t =
        Table::new(["run", "checkpoints", "first_step", "last_step", "last_global_norm", "created_unix"]);
    for r in records::runs(store)? {
        let cks = records::checkpoints(store, &r.name)?;
        t.push(vec![
            json!(r.name),
            json!(cks.len()),
            json!(cks.first().map(|c| c.step)),
            json!(cks.last().map(|c| c.step)),
            json!(cks.last().map(|c| c.global_norm)),
            json!(r.created_unix),
        ]);
    }
    Ok(t)
}

/// The run's checkpoints, or an error naming the known runs when it has none.
pub(crate) fn require_run(store: &Store, run: &str) -> anyhow::Result<Vec<records::CheckpointRecord>> {
    let cks = records::checkpoints(store, run)?;
    if cks.is_empty() {
        let known: Vec<String> = records::runs(store)?.into_iter().map(|r| r.name).collect();
        anyhow::bail!(
            "no run named {run:?} in the store (known runs: {})",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        );
    }
    Ok(cks)
}

/// The daemon's entry for the `checkpoints` query.
pub(crate) fn checkpoints_query(store: &Store, args: serde_json::Value) -> anyhow::Result<Table> {
    checkpoints_table(store, &serde_json::from_value(args)?)
}

pub(crate) fn checkpoints_table(store: &Store, args: &CheckpointsArgs) -> anyhow::Result<Table> {
    let mut t = Table::new([
        "step",
        "layout",
        "tensors",
        "numel",
        "global_norm",
        "dist_first",
        "update_norm",
        "update_cos",
        "nan",
        "inf",
        "source",
        "dtype",
        "aliases",
        "path",
    ]);
    for c in require_run(store, &args.run)? {
        t.push(vec![
            json!(c.step),
            json!(c.layout),
            json!(c.tensors),
            json!(c.numel),
            json!(c.global_norm),
            json!(c.dist_first),
            json!(c.update_norm),
            json!(c.update_cos),
            json!(c.nan_count),
            json!(c.inf_count),
            json!(c.source),
            json!(c.dtypes),
            json!(c.aliases.iter().map(|a| format!("{}={}", a.name, a.owner)).collect::<Vec<_>>().join(",")),
            json!(c.path),
        ]);
    }
    Ok(t)
}
