//! The records commands render themselves (slices, trajectory PCA, sharpness, stability, layer spectra,
//! ratio maps, tensor statistics for plots, the trajectory archive): each a function of the open store and its arguments,
//! called by the CLI on its own store, or by the daemon (which holds the store) at
//! `POST /api/v1/records/{name}` and sent back as MessagePack, so NaN and ±∞ arrive as stored and the
//! command prints the same either way. `pca` computes a PCA and stores it where the store is.

use crate::store::checkpoints::{self, CheckpointRecord, RunRecord, TensorRecord};
use crate::store::sharpness::{RatioMapRecord, SharpnessRecord};
use crate::store::slices::SliceRecord;
use crate::store::spectra::SpectraRecord;
use crate::store::stability::StabilityRecord;
use crate::store::trajectory::{PcaConfig, PcaRecord};
use crate::store::{Batch, RunStepRecord, Store, keys, sharpness, slices, trajectory};
use serde::{Deserialize, Serialize};

/// A record named by its number (a slice, and the ratio map kept for it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ById {
    pub id: u64,
}

/// Every record of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ByRun {
    pub run: String,
}

/// One checkpoint of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ByRunStep {
    pub run: String,
    pub step: u64,
}

/// One tensor of a run at a step (default: the run's last).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TensorAt {
    pub run: String,
    pub step: Option<u64>,
    pub tensor: String,
}

/// Tensors of a run whose names match a glob.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TensorGlob {
    pub run: String,
    pub glob: String,
}

/// A trajectory PCA to compute for a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PcaRequest {
    pub run: String,
    pub config: PcaConfig,
}

/// One archived checkpoint: step, bytes on disk, precision, tensors, parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchivedStep {
    pub step: u64,
    pub bytes: u64,
    pub precision: String,
    pub tensors: usize,
    pub parameters: usize,
}

/// Every slice, by id.
pub(crate) fn all_slices(store: &Store, _: &()) -> anyhow::Result<Vec<SliceRecord>> {
    Ok(slices::list(store)?)
}

/// One slice by id, checked (records read from the store are untrusted).
pub(crate) fn slice(store: &Store, a: &ById) -> anyhow::Result<SliceRecord> {
    let r = slices::get(store, a.id)?
        .ok_or_else(|| anyhow::anyhow!("no slice with id {} (see `landscaped slices list`)", a.id))?;
    r.values.check().map_err(|e| anyhow::anyhow!("stored slice {}: {e}", a.id))?;
    Ok(r)
}

/// The ratio map stored for a slice, if any.
pub(crate) fn ratio_map(store: &Store, a: &ById) -> anyhow::Result<Option<RatioMapRecord>> {
    Ok(sharpness::get_ratio_map(store, a.id)?)
}

/// The run's latest trajectory PCA, if any.
pub(crate) fn latest_pca(store: &Store, a: &ByRun) -> anyhow::Result<Option<PcaRecord>> {
    Ok(trajectory::latest_pca(store, &a.run)?)
}

/// Every record of a run of a kind filed by (run, step) (sharpness, stability, layer spectra), by step.
pub(crate) fn run_step_records<R: RunStepRecord>(store: &Store, a: &ByRun) -> anyhow::Result<Vec<R>> {
    Ok(R::list(store, &a.run)?)
}

/// The run's checkpoints, or an error naming the known runs.
pub(crate) fn run_checkpoints(store: &Store, a: &ByRun) -> anyhow::Result<Vec<CheckpointRecord>> {
    super::runs::require_run(store, &a.run)
}

/// (step, record) of the run's float tensors matching the glob.
pub(crate) fn matching_tensors(store: &Store, a: &TensorGlob) -> anyhow::Result<Vec<(u64, TensorRecord)>> {
    super::norms::matching_tensors(store, &a.run, &a.glob)
}

/// One float tensor of a run at a step, and that step.
pub(crate) fn tensor_at(store: &Store, a: &TensorAt) -> anyhow::Result<(u64, TensorRecord)> {
    super::norms::find_tensor(store, &a.run, a.step, &a.tensor)
}

/// The run's archived checkpoints (the archive files beside the store).
pub(crate) fn archived_steps(store: &Store, a: &ByRun) -> anyhow::Result<Vec<ArchivedStep>> {
    use crate::trajectory::archive::{ArchiveFile, list_run};
    let mut out = Vec::new();
    for e in list_run(store.dir(), &a.run)? {
        let f = ArchiveFile::open(&e.path)?;
        out.push(ArchivedStep {
            step: e.step,
            bytes: e.bytes,
            precision: f.stored_types(),
            tensors: f.tensors.len(),
            parameters: f.tensors.iter().map(|x| x.numel()).sum(),
        });
    }
    Ok(out)
}

/// Computes the run's trajectory PCA from the archive beside the store, stores it and returns it.
pub(crate) fn compute_pca(store: &Store, a: &PcaRequest) -> anyhow::Result<PcaRecord> {
    let rec = crate::trajectory::pca::compute_pca(store.dir(), &a.run, &a.config)?;
    trajectory::put_pca(store, &rec)?;
    store.flush()?;
    Ok(rec)
}

/// Every record of a run but its tensors (fetched a checkpoint at a time: [`checkpoint_tensors`]): what
/// `landscaped export tensorboard` reads. Through the daemon, the CLI copies them into a temporary store
/// ([`RunRecords::write_to`]) and exports from it with the same code as from the store itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRecords {
    pub run: RunRecord,
    pub checkpoints: Vec<CheckpointRecord>,
    pub slices: Vec<SliceRecord>,
    pub pca: Vec<PcaRecord>,
    pub sharpness: Vec<SharpnessRecord>,
    pub stability: Vec<StabilityRecord>,
    pub spectra: Vec<SpectraRecord>,
}

/// The run's records (an error naming the known runs if it has no checkpoint).
pub(crate) fn run_records(store: &Store, a: &ByRun) -> anyhow::Result<RunRecords> {
    let checkpoints = super::runs::require_run(store, &a.run)?;
    let run = checkpoints::run(store, &a.run)?
        .unwrap_or_else(|| RunRecord { name: a.run.clone(), ..Default::default() });
    let slices = slices::of_run(store, &a.run)?;
    Ok(RunRecords {
        run,
        checkpoints,
        slices,
        pca: PcaRecord::list(store, &a.run)?,
        sharpness: SharpnessRecord::list(store, &a.run)?,
        stability: StabilityRecord::list(store, &a.run)?,
        spectra: SpectraRecord::list(store, &a.run)?,
    })
}

/// Every tensor record of one checkpoint, in name order.
pub(crate) fn checkpoint_tensors(store: &Store, a: &ByRunStep) -> anyhow::Result<Vec<TensorRecord>> {
    Ok(checkpoints::tensors(store, &a.run, a.step)?)
}

impl RunRecords {
    /// Writes the records into `store` under the keys they had where they came from (one batch).
    pub(crate) fn write_to(&self, store: &Store) -> anyhow::Result<()> {
        let mut b = Batch::default();
        b.put(keys::run(&self.run.name), &self.run)?;
        put_all(&mut b, &self.checkpoints)?;
        put_all(&mut b, &self.pca)?;
        put_all(&mut b, &self.sharpness)?;
        put_all(&mut b, &self.stability)?;
        put_all(&mut b, &self.spectra)?;
        for s in &self.slices {
            b.put(SliceRecord::key(s.id), s)?;
        }
        store.commit(b)?;
        Ok(())
    }
}

fn put_all<R: RunStepRecord>(b: &mut Batch, recs: &[R]) -> anyhow::Result<()> {
    for r in recs {
        b.put(r.key(), r)?;
    }
    Ok(())
}

/// Writes one checkpoint's tensor records (from [`checkpoint_tensors`]) into `store`.
pub(crate) fn write_tensors(
    store: &Store,
    run: &str,
    step: u64,
    tensors: &[TensorRecord],
) -> anyhow::Result<()> {
    let mut b = Batch::default();
    for t in tensors {
        b.put(keys::run_step_name(run, step, &t.name), t)?;
    }
    store.commit(b)?;
    Ok(())
}
