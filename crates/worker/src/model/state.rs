//! Reading a checkpoint into a model state: one f32 vector per slot (parameters, then float buffers),
//! after the binding has reported every mismatch by name. Reads tensor by tensor.

use super::binding::{BindOptions, bind};
use super::net::Model;
use anyhow::{Result, anyhow};
use landscaped_formats::{Checkpoint, TensorInfo};

/// One f32 vector per slot of a model, in slot order.
pub type State = Vec<Vec<f32>>;

/// Binds a listing (`tensors`) to the model's slots and reads each bound tensor with `read(index)`.
pub fn read_state(
    model: &Model,
    tensors: &[TensorInfo],
    opts: &BindOptions,
    what: &str,
    mut read: impl FnMut(usize) -> Result<Vec<f32>>,
) -> Result<State> {
    let binding = bind(model.slots(), model.ignored_buffers(), tensors, opts)
        .map_err(|e| anyhow!("{what} does not fit the model: {e}"))?;
    binding
        .sources
        .iter()
        .zip(model.slots())
        .map(|(&i, slot)| {
            let v = read(i)?;
            if v.len() != slot.numel() {
                return Err(anyhow!(
                    "{what}: {} has {} values, expected {}",
                    tensors[i].name,
                    v.len(),
                    slot.numel()
                ));
            }
            Ok(v)
        })
        .collect()
}
/// A checkpoint's state for the model (see [`read_state`]).
pub fn checkpoint_state(model: &Model, ck: &Checkpoint, opts: &BindOptions) -> Result<State> {
    let what = format!("checkpoint {}", ck.path.display());
    read_state(model, &ck.tensors, opts, &what, |i| ck.read_f32(i).map_err(anyhow::Error::from))
}
