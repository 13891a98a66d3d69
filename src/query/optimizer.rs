//! The `optimizer` query: a run's optimizer-state telemetry recorded at ingest (printed by
//! `landscaped optimizer --run R [--step S] [--tensors]`, answered by the daemon at
//! `POST /api/v1/query/optimizer`). Per checkpoint one row per param group and one `all` row; with
//! `--tensors`, one row per tensor instead. Checkpoints without optimizer state have no rows; a run
//! none of whose checkpoints has one is an empty table.

use super::runs::require_run;
use crate::store::RunStepRecord;
use crate::store::Store;
use crate::store::optimizer::Figures;
use crate::store::optimizer::OptimizerRecord;
use crate::table::Table;
use serde_json::{Value, json};

#[derive(clap::Args, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OptimizerArgs {
    /// The run.
    #[arg(long)]
    pub run: String,
    /// Only this step (default: every checkpoint with optimizer state).
    #[arg(long)]
    pub step: Option<u64>,
    /// One row per tensor instead of per param group.
    #[arg(long)]
    #[serde(default)]
    pub tensors: bool,
}

/// The daemon's entry for the `optimizer` query.
pub(crate) fn optimizer_query(store: &Store, args: Value) -> anyhow::Result<Table> {
    optimizer_table(store, &serde_json::from_value(args)?)
}

fn quantile(f: &Figures, i: usize) -> Value {
    json!(f.step_size.as_ref().and_then(|s| s.quantiles.get(i).copied()))
}

fn figure_cells(f: &Figures) -> Vec<Value> {
    vec![
        json!(f.step_size.as_ref().map(|s| s.harmonic_mean)),
        quantile(f, 0),
        quantile(f, 1),
        quantile(f, 2),
        quantile(f, 3),
        quantile(f, 4),
        json!(f.update_rms),
        json!(f.momentum_norm),
    ]
}

const FIGURE_HEADERS: [&str; 8] = [
    "step_size_hmean",
    "step_size_q01",
    "step_size_q10",
    "step_size_q50",
    "step_size_q90",
    "step_size_q99",
    "update_rms",
    "momentum_norm",
];

pub(crate) fn optimizer_table(store: &Store, args: &OptimizerArgs) -> anyhow::Result<Table> {
    require_run(store, &args.run)?;
    let recs: Vec<OptimizerRecord> = match args.step {
        Some(s) => OptimizerRecord::get(store, &args.run, s)?.into_iter().collect(),
        None => OptimizerRecord::list(store, &args.run)?,
    };
    if args.tensors {
        let mut t = Table::new(
            ["step", "kind", "tensor", "group", "opt_step", "n"].into_iter().chain(FIGURE_HEADERS),
        );
        for r in &recs {
            for x in &r.tensors {
                let mut row = vec![
                    json!(r.step),
                    json!(r.kind),
                    json!(x.name),
                    json!(x.group),
                    json!(x.step),
                    json!(x.figures.n),
                ];
                row.extend(figure_cells(&x.figures));
                t.push(row);
            }
        }
        return Ok(t);
    }
    let head = [
        "step",
        "kind",
        "group",
        "lr",
        "beta1",
        "beta2",
        "eps",
        "weight_decay",
        "momentum",
        "opt_step",
        "params",
    ];
    let mut t = Table::new(head.into_iter().chain(FIGURE_HEADERS).chain(["keys"]));
    for r in &recs {
        let keys = (!r.group_keys.is_empty() || !r.state_keys.is_empty())
            .then(|| format!("groups: {}; state: {}", r.group_keys.join(","), r.state_keys.join(",")));
        for g in &r.groups {
            let mut row = vec![
                json!(r.step),
                json!(r.kind),
                json!(g.index.to_string()),
                json!(g.lr),
                json!(g.beta1),
                json!(g.beta2),
                json!(g.eps),
                json!(g.weight_decay),
                json!(g.momentum),
                json!(g.step),
                json!(g.params),
            ];
            row.extend(figure_cells(&g.figures));
            row.push(json!(keys));
            t.push(row);
        }
        let params: u64 = r.groups.iter().map(|g| g.params).sum();
        let step = r.groups.iter().filter_map(|g| g.step).reduce(f64::max);
        let mut row = vec![
            json!(r.step),
            json!(r.kind),
            json!("all"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            json!(step),
            json!(params),
        ];
        row.extend(figure_cells(&r.total));
        row.push(json!(keys));
        t.push(row);
    }
    Ok(t)
}
