//! The queries the CLI can ask the daemon instead of opening the store (which the daemon holds).
//!
//! Each query is a function of the open store and the command's arguments (JSON) returning the
//! [`Table`] the command prints, so the output is the same either way. The CLI side is
//! `cli::client::query_or_open`; this registry maps the query name it sends to the function.
//! To add a query: one line in [`queries`].

use crate::store::Store;
use crate::table::Table;

pub(crate) type QueryFn = fn(&Store, serde_json::Value) -> anyhow::Result<Table>;

pub struct QuerySpec {
    pub name: &'static str,
    pub run: QueryFn,
}

/// Every query the daemon answers at `POST /api/v1/query/{name}`.
pub fn queries() -> &'static [QuerySpec] {
    use crate::query::{norms, runs, spectra};
    &[
        QuerySpec { name: "runs", run: runs::runs_query },
        QuerySpec { name: "checkpoints", run: runs::checkpoints_query },
        QuerySpec { name: "norms", run: norms::norms_query },
        QuerySpec { name: "hist", run: norms::hist_query },
        QuerySpec { name: "spectra", run: spectra::spectra_query },
        QuerySpec { name: "daemon-seen", run: seen_table },
    ]
}

pub fn find(name: &str) -> Option<&'static QuerySpec> {
    queries().iter().find(|q| q.name == name)
}

/// Arguments of the `daemon-seen` query.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub(crate) struct SeenArgs {
    pub run: String,
}

/// What the daemon has dealt with for a run: path, step, outcome (a query of the daemon's own).
pub(crate) fn seen_table(store: &Store, args: serde_json::Value) -> anyhow::Result<Table> {
    let args: SeenArgs = serde_json::from_value(args)?;
    let mut t = Table::new(["path", "step", "outcome"]);
    for (_, rec) in
        store.scan_prefix::<crate::daemon::seen::SeenRecord>(&crate::store::keys::run(&args.run))?
    {
        t.push(vec![rec.path.into(), rec.step.into(), rec.outcome.into()]);
    }
    Ok(t)
}
