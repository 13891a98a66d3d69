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
    use crate::query::{norms, optimizer, runs, spectra};
    &[
        QuerySpec { name: "runs", run: runs::runs_query },
        QuerySpec { name: "checkpoints", run: runs::checkpoints_query },
        QuerySpec { name: "norms", run: norms::norms_query },
        QuerySpec { name: "hist", run: norms::hist_query },
        QuerySpec { name: "optimizer", run: optimizer::optimizer_query },
        QuerySpec { name: "spectra", run: spectra::spectra_query },
        QuerySpec { name: "daemon-seen", run: seen_table },
    ]
}

pub fn find(name: &str) -> Option<&'static QuerySpec> {
    queries().iter().find(|q| q.name == name)
}

pub(crate) type RecordsFn = fn(&Store, serde_json::Value) -> anyhow::Result<Vec<u8>>;

/// A records query: the arguments (JSON) decoded, the function of [`crate::query::records`] called on
/// the daemon's store, its answer encoded as MessagePack (NaN and ±∞ kept).
pub struct RecordsSpec {
    pub name: &'static str,
    pub run: RecordsFn,
}

/// One [`RecordsSpec`] from a function `fn(&Store, &Args) -> anyhow::Result<T>`.
macro_rules! records {
    ($name:literal, $f:path) => {
        RecordsSpec {
            name: $name,
            run: |store: &Store, args: serde_json::Value| -> anyhow::Result<Vec<u8>> {
                Ok(rmp_serde::to_vec_named(&$f(store, &serde_json::from_value(args)?)?)?)
            },
        }
    };
}

/// Every records query the daemon answers at `POST /api/v1/records/{name}` (the CLI's
/// `cli::client::records_or_open` names them).
pub fn records() -> &'static [RecordsSpec] {
    use crate::query::records as r;
    use crate::store::{sharpness::SharpnessRecord, spectra::SpectraRecord, stability::StabilityRecord};
    &[
        records!("slices", r::all_slices),
        records!("slice", r::slice),
        records!("ratio-map", r::ratio_map),
        records!("pca-latest", r::latest_pca),
        records!("pca", r::compute_pca),
        records!("sharpness", r::run_step_records::<SharpnessRecord>),
        records!("stability", r::run_step_records::<StabilityRecord>),
        records!("spectra-records", r::run_step_records::<SpectraRecord>),
        records!("checkpoints", r::run_checkpoints),
        records!("tensors", r::matching_tensors),
        records!("tensor", r::tensor_at),
        records!("archive", r::archived_steps),
        records!("run-records", r::run_records),
        records!("checkpoint-tensors", r::checkpoint_tensors),
    ]
}

pub fn find_records(name: &str) -> Option<&'static RecordsSpec> {
    records().iter().find(|q| q.name == name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_with_nan_and_infinity_survive_messagepack() {
        let mut v = crate::landscape::slice::SliceValues::new(vec![0.0, 1.0, 2.0], vec![]);
        v.loss = vec![1.0, f64::NAN, f64::INFINITY];
        v.done = vec![true, true, false];
        let bytes = rmp_serde::to_vec_named(&v).unwrap();
        let back: crate::landscape::slice::SliceValues = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.loss[0], 1.0);
        assert!(back.loss[1].is_nan());
        assert_eq!(back.loss[2], f64::INFINITY);
        assert_eq!(back.done, v.done);
    }

    #[test]
    fn every_records_name_is_unique() {
        let mut names: Vec<_> = records().iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), records().len());
    }
}
