//! Records for loss-landscape slices: one [`SliceRecord`] per slice, keyed by its id (u64 big-endian),
//! holding how it was made (centre, directions as a reproducible description, model contract) and its
//! values with the done mask, rewritten every few points so an interrupted slice resumes.

use super::{Record, Store};
use crate::landscape::slice::SliceValues;
use landscaped_maths::directions::RandomDirections;
use serde::{Deserialize, Serialize};

/// What a direction is, stored instead of its tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DirectionSource {
    /// Filter/layer/none-normalized Gaussian pair drawn from a seed (x then y).
    Random(RandomDirections),
    /// Trajectory PCA components of a run (unit directions), from the PCA record computed at `pca_step`.
    Pca {
        run: String,
        pca_step: u64,
        components: Vec<usize>,
        explained_variance_ratio: Vec<f64>,
        files: Vec<String>,
    },
    /// From the centre checkpoint to `to` (parameters and float buffers).
    Interpolation { to: String },
}

/// The model contract used, by file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelUsed {
    pub model: String,
    pub eval_data: String,
    pub loss: String,
    pub batch_size: usize,
    pub subsample: Option<usize>,
    pub samples: usize,
    pub device: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SliceRecord {
    pub id: u64,
    /// Run and step of the centre, when known.
    pub run: Option<String>,
    pub step: Option<u64>,
    /// The centre checkpoint (path as given).
    pub checkpoint: String,
    pub directions: DirectionSource,
    /// cos∠(δ, η) for 2D slices.
    pub cosine: Option<f64>,
    pub model: ModelUsed,
    /// The checkpoint's own loss and accuracy (evaluated at the centre before the grid).
    pub centre_loss: f64,
    pub centre_accuracy: Option<f64>,
    pub values: SliceValues,
    /// Projected trajectory (x, y, step) for PCA slices.
    #[serde(default)]
    pub trajectory: Vec<(f64, f64, u64)>,
    /// Unix seconds.
    pub created: u64,
    pub updated: u64,
    /// Identifies the request, so the same request resumes this record instead of starting over.
    pub signature: String,
}

impl Record for SliceRecord {
    const TREE: &'static str = "slices";
    const SCHEMA: u32 = 1;
}

impl SliceRecord {
    pub fn key(id: u64) -> Vec<u8> {
        id.to_be_bytes().to_vec()
    }

    pub fn kind(&self) -> &'static str {
        match self.directions {
            DirectionSource::Random(_) => "random",
            DirectionSource::Pca { .. } => "pca",
            DirectionSource::Interpolation { .. } => "interpolation",
        }
    }
}

/// Every slice, by id.
pub fn list(store: &Store) -> super::Result<Vec<SliceRecord>> {
    Ok(store.scan_prefix::<SliceRecord>(&[])?.into_iter().map(|(_, r)| r).collect())
}

/// The slices of a run, by id.
pub(crate) fn of_run(store: &Store, run: &str) -> super::Result<Vec<SliceRecord>> {
    Ok(list(store)?.into_iter().filter(|r| r.run.as_deref() == Some(run)).collect())
}

pub fn get(store: &Store, id: u64) -> super::Result<Option<SliceRecord>> {
    store.get(&SliceRecord::key(id))
}

pub fn put(store: &Store, rec: &SliceRecord) -> super::Result<()> {
    store.put(&SliceRecord::key(rec.id), rec)
}

/// The next free id (1 for an empty store).
pub(crate) fn next_id(store: &Store) -> super::Result<u64> {
    Ok(list(store)?.iter().map(|r| r.id).max().unwrap_or(0) + 1)
}

/// An unfinished slice made by the same request, to resume.
pub(crate) fn find_unfinished(store: &Store, signature: &str) -> super::Result<Option<SliceRecord>> {
    find(store, signature, false)
}

/// A complete slice made by the same request (nothing left to compute).
pub(crate) fn find_complete(store: &Store, signature: &str) -> super::Result<Option<SliceRecord>> {
    find(store, signature, true)
}

fn find(store: &Store, signature: &str, complete: bool) -> super::Result<Option<SliceRecord>> {
    Ok(list(store)?.into_iter().find(|r| r.signature == signature && r.values.is_complete() == complete))
}
