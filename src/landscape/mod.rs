//! Loss-landscape slices: grid specs (`min:max:num`), directions (filter/layer/none normalized random,
//! PCA, interpolation between checkpoints) and slice evaluation with resume.

pub mod build;
pub mod daemon_job;
pub mod directions;
pub mod export;
pub mod grid;
pub mod pca_dirs;
pub mod runner;
pub mod slice;

use crate::model::Model;
use crate::store::slices::ModelUsed;

/// The model contract a slice was computed with, as its record keeps it.
pub fn model_used(model: &Model) -> ModelUsed {
    let s = model.spec();
    ModelUsed {
        model: s.model.display().to_string(),
        eval_data: s.eval_data.display().to_string(),
        loss: s.loss.to_string(),
        batch_size: s.batch_size,
        subsample: s.subsample,
        samples: model.samples(),
        device: s.device.clone(),
    }
}
