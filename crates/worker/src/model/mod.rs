//! The only code that touches tch/libtorch (in the worker crate; the `landscaped` binary never links it): loading the user's TorchScript model, binding parameters
//! and buffers from a checkpoint, loss and accuracy on the evaluation set, Hessian-vector products.
//!
//! # The model API (for the worker's session, [`directions`] and [`hvp`])
//! - [`ModelSpec`] says what to load (TorchScript file, `eval.safetensors` with `inputs`/`targets`, the
//!   [`Loss`], batch size, subsample, device); [`Model::load`] loads it in eval mode and checks that one
//!   evaluation runs.
//! - [`Model::slots`]: what a checkpoint must supply — trainable parameters in module order
//!   (`named_parameters`), then float buffers (batch-norm running statistics, via the C++ shim in
//!   `shim.cpp`, since tch's CModule does not expose buffers). [`checkpoint_state`] reads a checkpoint
//!   into a state (one `Vec<f32>` per slot) after [`binding::bind`] has reported every mismatch by name;
//!   [`Model::set_state`] writes it into the module.
//! - [`Model::evaluate`]: loss (batch means weighted by batch size) and accuracy, no grad.
//! - For Hessian-vector products (hvp.rs, same crate), `pub(crate)` fields and one function:
//!   `model.module` (the `tch::CModule`), `model.params` (the trainable parameter tensors in module
//!   order, aliasing the module's own, `requires_grad`; the first `n` slots, `n = model.params.len()`),
//!   `model.buffers`, `model.batches` (`Vec<(inputs, targets)>` on `model.device`) and
//!   `model.batch_loss(i) -> Result<Tensor>`: the mean loss of batch `i` as a scalar with grad enabled
//!   (weight it by `batches[i].0.size()[0]` when averaging). Call [`prepare_thread`] (disables the
//!   TorchScript graph optimizer, which has produced wrong second derivatives) in every thread that
//!   differentiates through the model; `batch_loss` calls it itself, and `evaluate` (no grad) switches
//!   the optimizer back on ([`prepare_inference_thread`]).
//! - Slices: [`Model::plane`] holds a centre and directions on the device; [`Model::set_point`] writes
//!   θ* + a·δ + b·η (the worker evaluates grid points this way; several workers run in parallel, see
//!   `landscaped::workers::pool`). [`directions`] draws the paper's random directions for a seed in
//!   libtorch's order and reads PCA direction files; [`rng`] seeds libtorch's generator.

pub mod binding;
pub mod device;
pub mod directions;
pub mod hvp;
pub mod net;
pub mod plane;
pub mod rng;
mod shim;
pub mod state;

pub use binding::{BindOptions, Binding, Slot, SlotKind};
pub use landscaped_protocol::loss::Loss;
pub use net::{
    Evaluation, Model, ModelSpec, device_from_name, parse_device, prepare_inference_thread, prepare_thread,
    set_threads, threads,
};
pub use plane::Plane;
pub use state::{State, checkpoint_state, read_state};
