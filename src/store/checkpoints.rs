//! Records for runs, checkpoints and per-tensor statistics (one sled tree each), written by ingest and
//! read by the CLI and the daemon. Every struct is `#[serde(default)]`, so records written before a field
//! was added still decode.
//!
//! | tree | key | record |
//! |---|---|---|
//! | `runs` | `run \0` | [`RunRecord`] |
//! | `checkpoints` | `run \0 step` | [`CheckpointRecord`] |
//! | `tensor_stats` | `run \0 step name` | [`TensorRecord`] |

use super::{Record, Result, RunStepRecord, Store, keys};
use landscaped_maths::stats::TensorStats;
use serde::{Deserialize, Serialize};

/// A training run: a name the user chose at ingest (`--run`) or the daemon's config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    pub name: String,
    /// Unix seconds when the run's first checkpoint was ingested.
    pub created_unix: u64,
}

impl Record for RunRecord {
    const TREE: &'static str = "runs";
    const SCHEMA: u32 = 1;
}

/// Size and modification time of one file of a checkpoint, to recognise it again without reading it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileStamp {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
}

/// One ingested checkpoint, identified by (run, step). `fingerprint` is a checksum of its tensors'
/// names, dtypes, shapes and values: the same (run, step) with the same fingerprint is the same checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointRecord {
    pub run: String,
    pub step: u64,
    /// The checkpoint's path (file or folder) when it was ingested.
    pub path: String,
    /// `file`, `hf_folder` or `lightning`.
    pub layout: String,
    pub files: Vec<FileStamp>,
    pub fingerprint: u64,
    /// Every tensor of the state dict, and the float ones among them.
    pub tensors: u64,
    pub float_tensors: u64,
    /// Elements in float tensors.
    pub numel: u64,
    /// Bytes of tensor data (all tensors).
    pub bytes: u64,
    pub nan_count: u64,
    pub inf_count: u64,
    /// ‖θ‖₂ over every float tensor.
    pub global_norm: f64,
    /// ‖θ − θ_first‖₂ and the step of the first checkpoint it was measured from (None: this is the first,
    /// or the first checkpoint's files were gone or changed at ingest).
    pub dist_first: Option<f64>,
    pub first_step: Option<u64>,
    /// ‖θ − θ_prev‖₂, the update since the previous checkpoint, and that checkpoint's step.
    pub update_norm: Option<f64>,
    pub prev_step: Option<u64>,
    /// cos(θ − θ_prev, θ_prev − θ_prev2): the direction change between consecutive updates.
    pub update_cos: Option<f64>,
    /// Float tensors of this checkpoint that the reference checkpoints lacked (or had another shape):
    /// left out of the distances.
    pub unmatched_tensors: u64,
    /// Unix seconds of the ingest.
    pub ingested_unix: u64,
    /// Which copy of the weights was read (formats' `Checkpoint::source`): `state dict`, `fp32 master
    /// weights (ZeRO-2 optimizer partitions, 2 ranks)`, `module weights (no fp32 master copy: ...)`.
    /// Empty in records written before it was recorded.
    pub source: String,
    /// The float dtypes read, most elements first (`f32`, `f32+bf16`).
    pub dtypes: String,
    /// Names sharing the storage of a recorded tensor (tied weights): not recorded as tensors, not
    /// counted in ‖θ‖ or the distances.
    pub aliases: Vec<AliasRecord>,
}

/// A state-dict name sharing the storage of the recorded tensor `owner`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AliasRecord {
    pub name: String,
    pub owner: String,
}

impl Record for CheckpointRecord {
    const TREE: &'static str = "checkpoints";
    const SCHEMA: u32 = 1;
}

/// One tensor of one checkpoint. Integer and bool tensors are listed with `stats: None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TensorRecord {
    pub name: String,
    /// `f32`, `f16`, `bf16`, `f64`, `i64`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
    pub stats: Option<TensorStats>,
    /// ‖t − t_first‖₂ and ‖t − t_prev‖₂ for this tensor (same references as the checkpoint record).
    pub dist_first: Option<f64>,
    pub update_norm: Option<f64>,
}

impl Record for TensorRecord {
    const TREE: &'static str = "tensor_stats";
    const SCHEMA: u32 = 1;
}

/// Every run, in name order.
pub fn runs(store: &Store) -> Result<Vec<RunRecord>> {
    Ok(store.scan_prefix::<RunRecord>(&[])?.into_iter().map(|(_, r)| r).collect())
}

pub fn run(store: &Store, name: &str) -> Result<Option<RunRecord>> {
    store.get(&keys::run(name))
}

/// A run's checkpoints in step order.
pub fn checkpoints(store: &Store, run: &str) -> Result<Vec<CheckpointRecord>> {
    CheckpointRecord::list(store, run)
}

/// The run's first checkpoint below `step` (smallest step) and its last `n` below `step` (largest steps
/// first): range queries on the key order, decoding only the records returned.
pub(crate) fn references_before(
    store: &Store,
    run: &str,
    step: u64,
    n: usize,
) -> Result<(Option<CheckpointRecord>, Vec<CheckpointRecord>)> {
    let from = keys::run(run);
    let to = keys::run_step(run, step);
    let first =
        store.scan_range::<CheckpointRecord>(&from, &to, false, 1)?.into_iter().next().map(|(_, r)| r);
    let last =
        store.scan_range::<CheckpointRecord>(&from, &to, true, n)?.into_iter().map(|(_, r)| r).collect();
    Ok((first, last))
}

/// The run's latest checkpoint (largest step), if any, decoding that one record only.
pub fn latest(store: &Store, run: &str) -> Result<Option<CheckpointRecord>> {
    CheckpointRecord::latest(store, run)
}

pub fn checkpoint(store: &Store, run: &str, step: u64) -> Result<Option<CheckpointRecord>> {
    CheckpointRecord::get(store, run, step)
}

/// The tensors of one checkpoint, in name order.
pub fn tensors(store: &Store, run: &str, step: u64) -> Result<Vec<TensorRecord>> {
    Ok(store.scan_prefix::<TensorRecord>(&keys::run_step(run, step))?.into_iter().map(|(_, r)| r).collect())
}

/// Every tensor record of a run as (step, record), in step then name order.
pub(crate) fn run_tensors(store: &Store, run: &str) -> Result<Vec<(u64, TensorRecord)>> {
    Ok(store
        .scan_prefix::<TensorRecord>(&keys::run(run))?
        .into_iter()
        .filter_map(|(k, r)| keys::step_of(run, &k).map(|s| (s, r)))
        .collect())
}

pub fn tensor(store: &Store, run: &str, step: u64, name: &str) -> Result<Option<TensorRecord>> {
    store.get(&keys::run_step_name(run, step, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Batch;

    #[test]
    fn records_round_trip_and_iterate_in_step_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut b = Batch::default();
        b.put(keys::run("r"), &RunRecord { name: "r".into(), created_unix: 1 }).unwrap();
        for step in [300u64, 2, 10] {
            let rec =
                CheckpointRecord { run: "r".into(), step, global_norm: step as f64, ..Default::default() };
            b.put(keys::run_step("r", step), &rec).unwrap();
            let t = TensorRecord { name: "w".into(), dtype: "f32".into(), ..Default::default() };
            b.put(keys::run_step_name("r", step, "w"), &t).unwrap();
        }
        // A run whose name extends "r" must not leak into r's scans.
        b.put(keys::run_step("rr", 1), &CheckpointRecord { run: "rr".into(), ..Default::default() }).unwrap();
        store.commit(b).unwrap();
        let steps: Vec<u64> = checkpoints(&store, "r").unwrap().iter().map(|c| c.step).collect();
        assert_eq!(steps, vec![2, 10, 300]);
        let (first, last) = references_before(&store, "r", 300, 2).unwrap();
        assert_eq!(first.map(|c| c.step), Some(2));
        assert_eq!(last.iter().map(|c| c.step).collect::<Vec<_>>(), vec![10, 2]);
        let (first, last) = references_before(&store, "r", 2, 2).unwrap();
        assert!(first.is_none() && last.is_empty());
        let (first, last) = references_before(&store, "r", u64::MAX, 1).unwrap();
        assert_eq!((first.map(|c| c.step), last[0].step), (Some(2), 300));
        assert_eq!(run_tensors(&store, "r").unwrap().len(), 3);
        assert_eq!(tensor(&store, "r", 10, "w").unwrap().unwrap().dtype, "f32");
        assert_eq!(runs(&store).unwrap().len(), 1);
    }

    #[test]
    fn the_latest_checkpoint_is_the_largest_step_of_that_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(latest(&store, "r").unwrap().is_none());
        let mut b = Batch::default();
        for (run, step) in
            [("r", 300u64), ("r", 2), ("r", 10), ("rr", 5000), ("q", 9000), ("r", u64::MAX - 1)]
        {
            b.put(
                keys::run_step(run, step),
                &CheckpointRecord { run: run.into(), step, ..Default::default() },
            )
            .unwrap();
        }
        store.commit(b).unwrap();
        // The same answer as the last of every record of the run, in step order.
        let all_last = checkpoints(&store, "r").unwrap().last().map(|c| c.step);
        assert_eq!(latest(&store, "r").unwrap().map(|c| c.step), all_last);
        assert_eq!(all_last, Some(u64::MAX - 1));
        assert_eq!(latest(&store, "rr").unwrap().map(|c| c.step), Some(5000));
        assert!(latest(&store, "nope").unwrap().is_none());
    }

    #[test]
    fn old_records_missing_fields_still_decode() {
        #[derive(Serialize)]
        struct Old {
            run: String,
            step: u64,
        }
        #[derive(Serialize)]
        struct Env<T> {
            schema: u32,
            value: T,
        }
        let bytes =
            rmp_serde::to_vec_named(&Env { schema: 0, value: Old { run: "r".into(), step: 5 } }).unwrap();
        let rec: CheckpointRecord = Store::decode(&bytes).unwrap();
        assert_eq!((rec.step, rec.dist_first), (5, None));
    }
}
