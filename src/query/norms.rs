//! The `norms` query (weight-norm history over steps: `landscaped norms --run R [--tensor GLOB]`) and the
//! `hist` query (one tensor's histogram: `landscaped hist --run R --step S --tensor T`).

use super::runs::require_run;
use crate::store::{Store, checkpoints as records};
use crate::table::Table;
use serde_json::json;

#[derive(clap::Args, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct NormsArgs {
    /// The run.
    #[arg(long)]
    pub run: String,
    /// Per-tensor history for tensors whose name matches this glob (e.g. 'conv*.weight'); without it, the
    /// whole checkpoint's ‖θ‖₂ and distances.
    #[arg(long)]
    pub tensor: Option<String>,
}

#[derive(clap::Args, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HistArgs {
    #[arg(long)]
    pub run: String,
    /// The checkpoint's step (default: the run's last).
    #[arg(long)]
    pub step: Option<u64>,
    /// The tensor's exact name.
    #[arg(long)]
    pub tensor: String,
}

/// A glob matcher for tensor names (`*` and `?`, `[...]`; `.` is literal).
pub(crate) fn tensor_matcher(glob: &str) -> anyhow::Result<globset::GlobMatcher> {
    Ok(globset::GlobBuilder::new(glob)
        .literal_separator(false)
        .build()
        .map_err(|e| anyhow::anyhow!("bad --tensor pattern {glob:?}: {e}"))?
        .compile_matcher())
}

/// Per-tensor rows (step, record) of a run whose name matches `glob`; error if none match.
pub(crate) fn matching_tensors(
    store: &Store,
    run: &str,
    glob: &str,
) -> anyhow::Result<Vec<(u64, records::TensorRecord)>> {
    let m = tensor_matcher(glob)?;
    let rows: Vec<_> = records::run_tensors(store, run)?
        .into_iter()
        .filter(|(_, t)| t.stats.is_some() && m.is_match(&t.name))
        .collect();
    if rows.is_empty() {
        anyhow::bail!("no float tensor of run {run:?} matches {glob:?}");
    }
    Ok(rows)
}

/// The daemon's entry for the `norms` query.
pub(crate) fn norms_query(store: &Store, args: serde_json::Value) -> anyhow::Result<Table> {
    norms_table(store, &serde_json::from_value(args)?)
}

pub(crate) fn norms_table(store: &Store, args: &NormsArgs) -> anyhow::Result<Table> {
    let cks = require_run(store, &args.run)?;
    match &args.tensor {
        None => {
            let mut t = Table::new(["step", "global_norm", "dist_first", "update_norm", "update_cos"]);
            for c in cks {
                t.push(vec![
                    json!(c.step),
                    json!(c.global_norm),
                    json!(c.dist_first),
                    json!(c.update_norm),
                    json!(c.update_cos),
                ]);
            }
            Ok(t)
        }
        Some(glob) => {
            let mut t = Table::new([
                "step",
                "tensor",
                "l2",
                "mean",
                "std",
                "min",
                "max",
                "max_abs",
                "zero_frac",
                "nan",
                "inf",
                "dist_first",
                "update_norm",
            ]);
            for (step, r) in matching_tensors(store, &args.run, glob)? {
                let Some(s) = &r.stats else { continue };
                t.push(vec![
                    json!(step),
                    json!(r.name),
                    json!(s.l2),
                    json!(s.mean),
                    json!(s.std),
                    json!(s.min),
                    json!(s.max),
                    json!(s.max_abs),
                    json!(s.zero_frac),
                    json!(s.nan_count),
                    json!(s.inf_count),
                    json!(r.dist_first),
                    json!(r.update_norm),
                ]);
            }
            Ok(t)
        }
    }
}

/// The record of one tensor at one step (default: the run's last step), with clear errors.
pub(crate) fn find_tensor(
    store: &Store,
    run: &str,
    step: Option<u64>,
    name: &str,
) -> anyhow::Result<(u64, records::TensorRecord)> {
    let cks = require_run(store, run)?;
    let step = match step {
        Some(s) => {
            if !cks.iter().any(|c| c.step == s) {
                let steps: Vec<String> = cks.iter().map(|c| c.step.to_string()).collect();
                anyhow::bail!("run {run:?} has no checkpoint at step {s} (steps: {})", steps.join(", "));
            }
            s
        }
        None => cks.last().map(|c| c.step).unwrap_or(0),
    };
    match records::tensor(store, run, step, name)? {
        Some(t) if t.stats.is_some() => Ok((step, t)),
        Some(t) => {
            anyhow::bail!("tensor {name:?} at step {step} of run {run:?} is {}, not a float tensor", t.dtype)
        }
        None => anyhow::bail!(
            "run {run:?} has no tensor named {name:?} at step {step} (see `landscaped norms --run {run} --tensor '*'`)"
        ),
    }
}

/// The daemon's entry for the `hist` query.
pub(crate) fn hist_query(store: &Store, args: serde_json::Value) -> anyhow::Result<Table> {
    hist_table(store, &serde_json::from_value(args)?)
}

pub(crate) fn hist_table(store: &Store, args: &HistArgs) -> anyhow::Result<Table> {
    let (_, rec) = find_tensor(store, &args.run, args.step, &args.tensor)?;
    let Some(s) = rec.stats else { anyhow::bail!("no statistics for {:?}", args.tensor) };
    let edges = s.histogram.edges();
    let mut t = Table::new(["bucket", "lo", "hi", "count"]);
    for (i, c) in s.histogram.counts.iter().enumerate() {
        t.push(vec![json!(i), json!(edges[i]), json!(edges[i + 1]), json!(c)]);
    }
    Ok(t)
}
