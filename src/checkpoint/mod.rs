//! Checkpoints on disk: layouts (single file, HF `checkpoint-N/` folders, Lightning `.ckpt`), the
//! completeness rules, the step rule, and readers for safetensors and the PyTorch zip format.
//!
//! Plain Rust, no libtorch. Files are read with read/pread (never mmap, so a training job rewriting a
//! file in place can't SIGBUS us), one tensor at a time, and every byte of untrusted input is validated
//! before it is trusted. Pickle data is parsed, never executed.
//!
//! The public API: [`Checkpoint::open`] (a file or an HF folder; lists tensors and the step, reads no
//! values), [`Checkpoint::read`] (one tensor), [`find_checkpoints`], [`check_complete`],
//! [`step_from_name`]. The step rule and the layouts are documented in [`layout`]; the completeness
//! rules in [`complete`].

use std::path::PathBuf;

pub mod complete;
pub mod layout;
mod open;
mod pickle_scan;
mod safetensors;
mod torchzip;
mod values;

pub use complete::check_complete;
pub use layout::{
    find_checkpoints, in_model_export, is_checkpoint_file_name, is_hf_folder, is_temp_name, step_from_name,
};

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    /// f64, f32, f16 and bf16 take part in float statistics; integer and bool tensors are only listed.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "f64",
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
            Dtype::I64 => "i64",
            Dtype::I32 => "i32",
            Dtype::I16 => "i16",
            Dtype::I8 => "i8",
            Dtype::U8 => "u8",
            Dtype::Bool => "bool",
        }
    }
}

/// A tensor's name, type and shape, as listed by a checkpoint (no values).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// How a checkpoint is laid out on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// One file: `.safetensors`, or a torch zip (`.pt`, `.pth`, `.bin`).
    File,
    /// A Hugging Face `checkpoint-N/` folder.
    HfFolder,
    /// A Lightning `.ckpt` file.
    Lightning,
}

/// An error reading a checkpoint. Its Display always names the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unsupported checkpoint: {why}")]
    Unsupported { path: PathBuf, why: String },
    #[error("{path}: malformed checkpoint: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error("{path}: refused: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("{path}: incomplete checkpoint: {why}")]
    Incomplete { path: PathBuf, why: String },
}

impl CheckpointError {
    /// A short stable label for metrics (`io`, `unsupported`, `malformed`, `refused`, `incomplete`).
    pub fn kind(&self) -> &'static str {
        match self {
            CheckpointError::Io { .. } => "io",
            CheckpointError::Unsupported { .. } => "unsupported",
            CheckpointError::Malformed { .. } => "malformed",
            CheckpointError::Refused { .. } => "refused",
            CheckpointError::Incomplete { .. } => "incomplete",
        }
    }
}

/// The values of one float tensor. f32, f16 and bf16 are widened (exactly) to f32; f64 stays f64.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f64 (exact).
    pub fn get(&self, i: usize) -> Option<f64> {
        match self {
            Values::F32(v) => v.get(i).map(|&x| x as f64),
            Values::F64(v) => v.get(i).copied(),
        }
    }
}

/// One checkpoint on disk (a file or an HF folder): its layout, its training step and its tensors.
/// Opening lists the tensors without reading their values; [`Checkpoint::read`] reads one at a time.
#[derive(Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub layout: Layout,
    /// The training step by the layout's own record (see the step rule in `layout`), if any.
    pub step: Option<u64>,
    /// Every tensor of the state dict, float or not, in the file's order.
    pub tensors: Vec<TensorInfo>,
    /// The open files behind the tensors (one per shard).
    parts: Vec<open::Part>,
    /// For each tensor: (part, index within that part).
    locs: Vec<(usize, usize)>,
    /// Every file the checkpoint consists of (weights, index, trainer_state.json).
    members: Vec<PathBuf>,
}
