//! PCA directions (the trajectory's direction files) as directions over a model's slots.

use crate::model::{BindOptions, Model, State};
use anyhow::{Result, bail};
use std::path::Path;

/// A PCA direction file (safetensors written by the trajectory PCA) as a direction over the model's
/// slots: tensors matched by name (prefixes stripped as for checkpoints); slots it lacks get zero.
pub fn pca_direction(model: &Model, file: &Path, opts: &BindOptions) -> Result<State> {
    let tensors = crate::trajectory::pca::load_directions_with_shapes(file)?;
    let mut out: State = model.slots().iter().map(|s| vec![0.0; s.numel()]).collect();
    let mut matched = 0;
    for (name, shape, values) in tensors {
        let target = opts.module_name(&name);
        let Some(i) = model.slots().iter().position(|s| s.name == target) else {
            bail!("PCA direction {}: tensor {name:?} is not in the model", file.display());
        };
        if model.slots()[i].shape != shape {
            bail!(
                "PCA direction {}: {name:?} has shape {shape:?}, the model's {target:?} {:?}",
                file.display(),
                model.slots()[i].shape
            );
        }
        out[i] = values;
        matched += 1;
    }
    if matched == 0 {
        bail!("PCA direction {}: no tensors", file.display());
    }
    Ok(out)
}
