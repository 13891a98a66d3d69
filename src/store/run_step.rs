//! Record kinds keyed by (run, step): at most one record per checkpoint of a run, filed under
//! `run \0 step` (big-endian), so a prefix scan over a run yields its records in step order. One generic
//! `put` / `get` / `list` / `latest` serves every such kind — checkpoints, sharpness, stability, spectra,
//! optimizer telemetry and trajectory PCA (filed under its newest step) — each kind only saying where
//! its run and step are.

use super::{Record, Result, Store, keys};

/// A record kind with one record per (run, step), in its own tree (`Record::TREE`).
pub trait RunStepRecord: Record {
    /// The run and the step this record is filed under.
    fn run_step(&self) -> (&str, u64);

    /// The record's key, `run \0 step` (for a [`super::Batch`]).
    fn key(&self) -> Vec<u8> {
        let (run, step) = self.run_step();
        keys::run_step(run, step)
    }

    /// Writes `rec` on its own, replacing the run's record at the same step.
    fn put(store: &Store, rec: &Self) -> Result<()> {
        store.put(&rec.key(), rec)
    }

    /// The run's record at `step`, if any.
    fn get(store: &Store, run: &str, step: u64) -> Result<Option<Self>> {
        store.get(&keys::run_step(run, step))
    }

    /// Every record of the run, by step.
    fn list(store: &Store, run: &str) -> Result<Vec<Self>> {
        Ok(store.scan_prefix::<Self>(&keys::run(run))?.into_iter().map(|(_, r)| r).collect())
    }

    /// The run's record at its largest step, if any: one reverse range query on the key order, decoding
    /// that one record only, however many the run has.
    fn latest(store: &Store, run: &str) -> Result<Option<Self>> {
        let from = keys::run(run);
        // Every key of the run lies below `run \1` (the run's prefix with its 0 byte raised by one).
        let mut to = from.clone();
        if let Some(last) = to.last_mut() {
            *last = 1;
        }
        Ok(store.scan_range::<Self>(&from, &to, true, 1)?.into_iter().next().map(|(_, r)| r))
    }
}

/// The kinds filed under their own `run` and `step` fields (a PCA is filed under its newest step:
/// `trajectory.rs`).
macro_rules! filed_by_run_and_step {
    ($($kind:ty),* $(,)?) => {$(
        impl RunStepRecord for $kind {
            fn run_step(&self) -> (&str, u64) {
                (&self.run, self.step)
            }
        }
    )*};
}

filed_by_run_and_step!(
    super::checkpoints::CheckpointRecord,
    super::optimizer::OptimizerRecord,
    super::sharpness::SharpnessRecord,
    super::stability::StabilityRecord,
    super::spectra::SpectraRecord,
);

/// For each kind's own test: `recs` (one run, distinct steps) written to a fresh store, each read back
/// equal (the kind's fields survive MessagePack) and listed in step order; the store is returned for the
/// kind's further checks. Filing and ordering themselves are tested once, below, on a probe kind.
#[cfg(test)]
pub(crate) fn assert_round_trip<R: RunStepRecord + PartialEq + std::fmt::Debug>(
    recs: &[R],
) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for r in recs {
        R::put(&store, r).unwrap();
    }
    let mut steps: Vec<u64> = recs.iter().map(|r| r.run_step().1).collect();
    steps.sort_unstable();
    for r in recs {
        let (run, step) = r.run_step();
        assert_eq!(R::get(&store, run, step).unwrap().as_ref(), Some(r));
        assert_eq!(R::list(&store, run).unwrap().iter().map(|r| r.run_step().1).collect::<Vec<_>>(), steps);
    }
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Probe {
        run: String,
        step: u64,
        x: f64,
    }

    impl Record for Probe {
        const TREE: &'static str = "test_run_step";
        const SCHEMA: u32 = 1;
    }

    impl RunStepRecord for Probe {
        fn run_step(&self) -> (&str, u64) {
            (&self.run, self.step)
        }
    }

    fn probe(run: &str, step: u64, x: f64) -> Probe {
        Probe { run: run.into(), step, x }
    }

    #[test]
    fn records_are_filed_by_run_and_step_and_listed_in_step_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(Probe::latest(&store, "a").unwrap().is_none());
        // Steps across byte boundaries and out of order; a run whose name extends another's.
        for step in [300u64, 2, 70_000, 45] {
            Probe::put(&store, &probe("a", step, step as f64)).unwrap();
        }
        Probe::put(&store, &probe("ab", 1, -1.0)).unwrap();
        Probe::put(&store, &probe("", 9, -2.0)).unwrap();

        let steps: Vec<u64> = Probe::list(&store, "a").unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![2, 45, 300, 70_000]);
        assert_eq!(Probe::get(&store, "a", 45).unwrap(), Some(probe("a", 45, 45.0)));
        assert!(Probe::get(&store, "a", 46).unwrap().is_none());
        assert!(Probe::get(&store, "ab", 45).unwrap().is_none());
        assert_eq!(Probe::latest(&store, "a").unwrap().map(|r| r.step), Some(70_000));
        assert_eq!(Probe::latest(&store, "ab").unwrap(), Some(probe("ab", 1, -1.0)));
        assert_eq!(Probe::list(&store, "").unwrap(), vec![probe("", 9, -2.0)]);

        // A second record at the same step replaces the first.
        Probe::put(&store, &probe("a", 45, 0.5)).unwrap();
        assert_eq!(Probe::get(&store, "a", 45).unwrap().unwrap().x, 0.5);
        assert_eq!(Probe::list(&store, "a").unwrap().len(), 4);
        assert_eq!(probe("a", 45, 0.0).key(), keys::run_step("a", 45));
    }
}
