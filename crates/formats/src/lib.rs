//! Checkpoints on disk: layouts (single file, HF `checkpoint-N/` folders, Lightning `.ckpt`,
//! torch.distributed.checkpoint folders incl. Megatron `torch_dist` and Lightning sharded, DeepSpeed
//! `global_stepN/` folders), the completeness rules, the step rule, and readers for safetensors, the
//! PyTorch zip format (whole files or archives inside a larger file), DCP and DeepSpeed ZeRO.
//!
//! Plain Rust, no libtorch. Files are read with read/pread (never mmap, so a training job rewriting a
//! file in place can't SIGBUS us), one tensor at a time, and every byte of untrusted input is validated
//! before it is trusted. Pickle data is parsed, never executed.
//!
//! The public API: [`Checkpoint::open`] (a file or an HF folder; lists tensors and the step, reads no
//! values), [`Checkpoint::open_complete`] (the same and the completeness rules, every header parsed
//! once: what the daemon calls), [`Checkpoint::read_chunks`] (one tensor's values, streamed in bounded chunks),
//! [`Checkpoint::read_at`] (raw bytes by range), [`Checkpoint::read`] (one tensor whole, for the few
//! users that need it: model binding), [`find_checkpoints`], [`check_complete`], [`step_from_name`].
//! The step rule and the layouts are documented in [`layout`]; the completeness rules in [`complete`].
//!
//! ## Which copy, and each storage once
//!
//! [`Checkpoint::source`] says which copy of the weights the tensors are: `state dict` where the layout
//! holds one; for DeepSpeed the fp32 master weights rebuilt from the optimizer partitions as
//! `zero_to_fp32` does (ZeRO-1/2 and ZeRO-3), or, only when the folder holds no master copy, the
//! module's own (low-precision) weights, saying why ([`deepspeed`]). [`Checkpoint::dtypes`] names the
//! dtypes read.
//!
//! Shared storage (tied weights): a state-dict name whose tensor is the same storage as an earlier one's
//! is an [`Alias`] in [`Checkpoint::aliases`], not a tensor of [`Checkpoint::tensors`]: every storage is
//! listed, read and counted once, as `model.parameters()` yields a shared parameter once, and
//! [`Checkpoint::index_of`] resolves an alias to its owner. Found per layout: torch zip — the same view
//! (storage key, offset, shape, stride, dtype) under two names; safetensors — `__metadata__` mapping a
//! name that is not a tensor to one that is (what `safetensors.torch.save_model` writes for the names
//! it drops; Hugging Face's `save_pretrained` drops tied names with no record); DeepSpeed —
//! `shared_params`. DCP records no sharing (each name is written as its own copy), so nothing is
//! an alias there.
//!
//! ## Streaming: memory bounded by a budget, never by what a header claims
//!
//! Every layout reader implements [`TensorSource`]: it lists its tensors and reads **byte ranges** of
//! a tensor's row-major little-endian data (`read_at`). Everything above it streams:
//! - [`Checkpoint::read_chunks`]`(index, max_chunk_bytes, |chunk: ValuesChunk| ...)` hands out the
//!   tensor's values in order, widened to f32 (f32/f16/bf16) or f64, at most `max_chunk_bytes` of
//!   file bytes per chunk (at least one element), reusing one buffer: memory is one chunk whatever the
//!   tensor's size.
//! - [`ChunkBuf`] is that buffer, for code that runs chunks on several threads (ingest: each worker
//!   owns one and calls [`ChunkBuf::fill`] for the range it was handed; `read_at` takes `&self` and
//!   every source is `Sync`, so ranges of one tensor are read in parallel).
//! - A new layout (DCP, Megatron, DeepSpeed, ...) implements [`TensorSource`] (`tensors` +
//!   `read_at`; `streamable` false only if a range read costs a whole-tensor read) and becomes a
//!   [`Checkpoint`] through [`Checkpoint::from_sources`]; statistics, ingest and the archive then
//!   stream it with no further code.
//! - Limits: [`Checkpoint::check_limits`] refuses a tensor larger than a configured limit and a file
//!   whose apparent size exceeds its whole filesystem (a sparse file with a lying header), each with
//!   one line. [`Checkpoint::read`] allocates fallibly: an impossible size is an error, never an abort.

use std::path::PathBuf;

pub mod complete;
pub mod dcp;
pub mod deepspeed;
pub mod layout;
mod open;
pub mod optimizer;
pub mod parse_log;
mod pickle_scan;
mod pickle_value;
mod regular;
mod safetensors;
pub mod safetensors_file;
mod torch_item;
mod torch_locate;
mod torchzip;
mod values;

pub use values::{ChunkBuf, ChunkValues, ValuesChunk, widen_into};

pub use optimizer::{
    Hyper, OptimizerKind, OptimizerState, ParamGroup, ParamRef, ParamShape, ParamState, Scalar,
};

pub use complete::check_complete;
pub use layout::{
    find_checkpoints, in_model_export, is_checkpoint_file_name, is_checkpoint_folder, is_hf_folder, name_of,
    scan_checkpoints, step_from_name,
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

/// A name of the state dict that shares its storage with an earlier tensor (tied weights: an embedding
/// and the LM head, one `Parameter` under two names). Not in [`Checkpoint::tensors`]: every storage is
/// listed, read and counted once (‖θ‖, distances, statistics), as `model.parameters()` yields a shared
/// parameter once; the alias is listed here with its owner (see "Shared storage" in the crate docs).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alias {
    /// The name dropped from the tensor list (`head.weight`).
    pub name: String,
    /// The listed tensor it shares its storage with (`emb.weight`).
    pub owner: String,
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
    /// A torch.distributed.checkpoint folder (`.metadata` + `.distcp` files): FSDP, torchtitan,
    /// Lightning / Fabric `"sharded"` (with `meta.pt`).
    Dcp,
    /// A Megatron-LM `torch_dist` folder (`iter_NNNNNNN/`, DCP inside).
    Megatron,
    /// A DeepSpeed `global_stepN/` folder (ZeRO-1/2 model states or ZeRO-3 fp32 partitions).
    DeepSpeed,
}

impl Layout {
    /// A short stable name (`file`, `hf_folder`, `lightning`, `dcp`, `megatron`, `deepspeed`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::File => "file",
            Layout::HfFolder => "hf_folder",
            Layout::Lightning => "lightning",
            Layout::Dcp => "dcp",
            Layout::Megatron => "megatron",
            Layout::DeepSpeed => "deepspeed",
        }
    }
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
    /// A file the checkpoint needs is a FIFO, socket, device or folder: never opened for reading.
    #[error("{path}: {what}, not a regular file")]
    NotAFile { path: PathBuf, what: String },
}

impl CheckpointError {
    /// A short stable label for metrics (`io`, `unsupported`, `malformed`, `refused`, `incomplete`,
    /// `not_a_file`).
    pub fn kind(&self) -> &'static str {
        match self {
            CheckpointError::Io { .. } => "io",
            CheckpointError::Unsupported { .. } => "unsupported",
            CheckpointError::Malformed { .. } => "malformed",
            CheckpointError::Refused { .. } => "refused",
            CheckpointError::Incomplete { .. } => "incomplete",
            CheckpointError::NotAFile { .. } => "not_a_file",
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

/// The reading side of one layout's file(s): the tensors it holds and their bytes by range.
/// Implemented by the safetensors and torch-zip readers; a new layout implements it and is wrapped
/// by [`Checkpoint::from_sources`]. `read_at` is called from several threads at once.
pub(crate) trait TensorSource: Send + Sync + std::fmt::Debug {
    /// The tensors, in the order their bytes are best read (file order).
    fn tensors(&self) -> Vec<TensorInfo>;
    /// Bytes `[offset, offset + buf.len())` of tensor `i`'s data: little-endian, contiguous in
    /// row-major order. A range past the tensor's end is an error; so is a file that ended early
    /// (`Malformed`, "changed since it was opened?").
    fn read_at(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError>;
    /// Names sharing a listed tensor's storage, left out of [`TensorSource::tensors`].
    fn aliases(&self) -> Vec<Alias> {
        Vec::new()
    }
    /// Which copy of the weights the tensors are, when the layout holds more than one (DeepSpeed: the
    /// fp32 master partitions or the module's own weights); None: the state dict as saved.
    fn copy(&self) -> Option<String> {
        None
    }
    /// False when a range read costs reading the whole tensor (then readers take it whole, once).
    fn streamable(&self, _i: usize) -> bool {
        true
    }
    /// Tensor `i`'s bytes whole into `buf` (exactly its size; allocated by the caller).
    fn read_all(&self, i: usize, buf: &mut [u8]) -> Result<(), CheckpointError> {
        self.read_at(i, 0, buf)
    }
}

/// The largest tensor read by default (bytes); ingest's `max_tensor_bytes` overrides it.
pub const DEFAULT_MAX_TENSOR_BYTES: u64 = 64 << 30;

/// One checkpoint on disk (a file or an HF folder): its layout, its training step and its tensors.
/// Opening lists the tensors without reading their values; [`Checkpoint::read_chunks`] streams one.
#[derive(Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub layout: Layout,
    /// The training step by the layout's own record (see the step rule in `layout`), if any.
    pub step: Option<u64>,
    /// Every tensor of the state dict, float or not, in the file's order; each storage once (see
    /// [`Checkpoint::aliases`]).
    pub tensors: Vec<TensorInfo>,
    /// Names sharing the storage of a tensor in `tensors` (tied weights), not listed there.
    pub aliases: Vec<Alias>,
    /// Which copy of the weights was read: `state dict` (what was saved), `fp32 master weights
    /// (ZeRO-2 optimizer partitions, 2 ranks)`, `module weights (no fp32 master copy: ...)`. The
    /// dtypes read are [`Checkpoint::dtypes`].
    pub source: String,
    /// The open files behind the tensors (one per shard).
    parts: Vec<Box<dyn TensorSource>>,
    /// For each tensor: (part, index within that part).
    locs: Vec<(usize, usize)>,
    /// Every file the checkpoint consists of (weights, index, trainer_state.json).
    members: Vec<PathBuf>,
}
