//! The worker protocol's messages: what `landscaped` (the caller) asks a model worker, and what the
//! worker answers. docs/worker-protocol.md is the normative description; this file is its Rust form,
//! shared by the caller (`worker::client`) and the TorchScript worker (`landscaped-worker`).
//!
//! Every message is one frame (see `transport`): a MessagePack map with string keys. A request is
//! `{"id": n, "body": {"op": "...", ...}}`, the answer `{"id": n, "body": {"reply": "...", ...}}`. One
//! request is outstanding at a time; `evaluate_points` is answered by one `point` reply per point and a
//! final `done` (or an `error`). Model state and vectors stay in the worker, addressed by [`Handle`]s:
//! weights and d-dimensional vectors never cross the pipe, except through the explicit `read_vector` /
//! `new_vector { init: values }` escape hatch.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The protocol version this build speaks. A worker with another version is refused at the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts (a `read_vector` of 30 M f64 values fits).
pub const MAX_FRAME_BYTES: usize = 256 << 20;

/// A state or vector held by the worker. Handles are never reused within one worker's life.
pub type Handle = u64;

/// Capabilities a worker may announce in its `hello` reply.
pub mod capability {
    /// Reads checkpoints in every format the sidecar reads (`load_state { source: checkpoint }`).
    /// Without it, the caller converts checkpoints to safetensors first (`source: safetensors`).
    pub const READ_CHECKPOINTS: &str = "read_checkpoints";
    /// Hessian-vector products, gradients and the vector operations (`hessian_open` and after).
    pub const HVP: &str = "hvp";
    /// Random directions drawn from libtorch's CPU generator in the reference code's order.
    pub const TORCH_RNG: &str = "torch_rng";
    /// CUDA devices can be used.
    pub const CUDA: &str = "cuda";
}

/// One request: an id the answer repeats, and the operation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub id: u64,
    pub body: Op,
}

/// One answer (or one of the streamed answers to `evaluate_points`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub id: u64,
    pub body: Reply,
}

/// What the model contract says: which model, which evaluation set, which loss, and how to evaluate.
/// The TorchScript worker takes `model` + `eval_data`; the Python worker takes `factory`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WireContract {
    /// TorchScript file (scripted or traced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// safetensors file with `inputs` and `targets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<PathBuf>,
    /// `module:function` returning model, data and loss (Python backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory: Option<String>,
    /// Loss name (`cross_entropy`, `mse`, `nll`, `method`, `causal_lm`, `hf`); `None`: the backend's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
    pub batch_size: usize,
    /// Only the first N samples of the evaluation set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsample: Option<usize>,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// Intra-op threads of this worker (`None`: the backend's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// The checkpoint the job is about (e.g. a slice's centre), for a factory that takes the checkpoint
    /// path (to read a config beside the weights). The weights themselves still come by `load_state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// Evaluation precision: `f32` (default), or `bf16` / `fp16` autocast with the loss accumulated in
    /// f32 (Python worker; Hessian work stays f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

/// How checkpoint keys become module names (see `model::binding` in the TorchScript worker).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BindRules {
    /// Stripped from the front of checkpoint names, repeatedly.
    pub strip_prefixes: Vec<String>,
    /// Exact renames, checkpoint name → module name, applied before stripping.
    pub mapping: Vec<(String, String)>,
    /// Checkpoint tensors the module lacks are an error unless this is set.
    pub allow_unexpected: bool,
    /// Module slots the source lacks get zero instead of an error (direction files: PCA directions
    /// cover only parameters).
    #[serde(default)]
    pub missing_zero: bool,
}

impl Default for BindRules {
    fn default() -> Self {
        BindRules {
            strip_prefixes: vec!["module.".into(), "model.".into(), "_orig_mod.".into()],
            mapping: Vec::new(),
            allow_unexpected: false,
            missing_zero: false,
        }
    }
}

/// Where a state comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StateSource {
    /// A checkpoint in any format the sidecar reads (needs [`capability::READ_CHECKPOINTS`]).
    Checkpoint { path: PathBuf },
    /// A safetensors file (a converted checkpoint, or a PCA direction file).
    Safetensors { path: PathBuf },
}

/// A grid point: its index in the slice, and the coefficients of the two directions.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct GridPoint {
    pub index: u64,
    pub a: f64,
    pub b: f64,
}

/// How a new vector (in the Hessian's parameter space) starts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VectorInit {
    Zeros,
    /// N(0, 1) entries from libtorch's CPU generator after `manual_seed(seed)`.
    Gaussian {
        seed: u64,
    },
    /// ±1 entries with probability ½ each: `randint(0, 2)` from libtorch's CPU generator after
    /// `manual_seed(seed)`, mapped 0 → −1, 1 → +1.
    Rademacher {
        seed: u64,
    },
    /// A copy of another vector.
    Copy {
        of: Handle,
    },
    /// The values themselves, f64 little-endian (the escape hatch: d values cross the pipe).
    Values {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Per-parameter tensors from a safetensors file (float dtypes, widened to f64), named like the
    /// module's parameters and bound by `bind`'s renames and prefixes: each tensor of the Hessian's
    /// subset must be there with its exact shape (zeros for the absent ones with `missing_zero`); tensors
    /// of other slots (buffers, parameters outside the subset) are skipped; names the module lacks are an
    /// error unless `allow_unexpected`. E.g. a diagonal preconditioner's scaling, or a stored Lanczos
    /// vector for a warm start: nothing of size d crosses the pipe.
    Tensors {
        path: PathBuf,
        bind: BindRules,
    },
}

/// Operations, at the grain the algorithms need.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The handshake, always first. Answer: `hello`.
    Hello { protocol: u32, client: String },
    /// Load the model contract (once per worker). Answer: `model`.
    LoadModel { contract: WireContract },
    /// Read a state (every slot: parameters, then float buffers) from a checkpoint or safetensors file,
    /// bound by name; every missing, unexpected or misshapen key is named in one `bad_checkpoint`
    /// error before anything is kept. Answer: `handle`.
    LoadState { source: StateSource, bind: BindRules },
    /// A state's values, every slot in order, flattened (f32 widened to f64, little-endian): for checks
    /// and exports, not for the hot path. Answer: `values`.
    ReadState { state: Handle },
    /// Write a state into the module. Answer: `ok`.
    SetState { state: Handle },
    /// Loss and accuracy of the module as it is (eval mode, no grad). Answer: `evaluation`.
    Evaluate,
    /// Random directions about the state `about`: after `manual_seed(seed)`, one `randn(shape)` per
    /// parameter (module order) for x, then again for y when `count` is 2; normalized by `norm`
    /// (`filter`, `layer`, `none`) and `ignore` (`biasbn`: tensors of ≤ 1 dimension get 0, `none`);
    /// buffers get 0; y made orthogonal to x when asked. Answer: `directions`.
    RandomDirections {
        about: Handle,
        seed: u64,
        norm: String,
        ignore: String,
        count: u8,
        orthogonalize: bool,
    },
    /// `to − from` over every slot (interpolation moves the batch-norm statistics too). Answer: `handle`.
    Difference { from: Handle, to: Handle },
    /// Hold the plane θ = centre + a·dx + b·dy for `evaluate_points`. Answer: `ok`.
    SetPlane { centre: Handle, dx: Handle, dy: Option<Handle> },
    /// Move the module to the plane's point (a, b) without evaluating (Hessian work at grid points).
    /// Answer: `ok`.
    SetPoint { a: f64, b: f64 },
    /// Evaluate the plane at each point, in order. Answers: one `point` per point, then `done`.
    EvaluatePoints { points: Vec<GridPoint> },
    /// Start Hessian work at the module's current parameters, over `subset` (`all` or `matrices`). The
    /// current parameters become the vector `centre`. Answer: `hessian`.
    HessianOpen { subset: String },
    /// Put the parameters back as they were at `hessian_open` and free every vector. Answer: `ok`.
    HessianClose,
    /// A new vector. Answer: `handle`.
    NewVector { init: VectorInit },
    /// A vector's values, f64 little-endian. Answer: `values`.
    ReadVector { v: Handle },
    /// ⟨x, y⟩ for each y, accumulated in f64. Answer: `numbers`.
    Dots { x: Handle, ys: Vec<Handle> },
    /// y ← s·y + Σ cᵢ·xᵢ. Answer: `ok`.
    Combine { y: Handle, scale: f64, terms: Vec<(f64, Handle)> },
    /// y ← y ⊙ x, elementwise (x ≠ y): a diagonal scaling. Answer: `ok`.
    Multiply { y: Handle, x: Handle },
    /// Forget these handles (states or vectors). Answer: `ok`.
    Free { handles: Vec<Handle> },
    /// out ← H v at the current parameters (the loss averaged over the evaluation set, each batch
    /// weighted by its size). Answer: `ok`.
    Hvp { v: Handle, out: Handle },
    /// L(θ') with θ' = `at` (a vector in the Hessian's space; `None`: the parameters at
    /// `hessian_open`). Answer: `number`.
    Loss { at: Option<Handle> },
    /// L(θ') and out ← ∇L(θ'). Answer: `number` (the loss).
    Gradient { at: Option<Handle>, out: Handle },
    /// Stop after answering `ok`.
    Shutdown,
}

impl Op {
    /// The operation's name on the wire (its `op` tag; a test checks they agree).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello { .. } => "hello",
            Op::LoadModel { .. } => "load_model",
            Op::LoadState { .. } => "load_state",
            Op::ReadState { .. } => "read_state",
            Op::SetState { .. } => "set_state",
            Op::Evaluate => "evaluate",
            Op::RandomDirections { .. } => "random_directions",
            Op::Difference { .. } => "difference",
            Op::SetPlane { .. } => "set_plane",
            Op::SetPoint { .. } => "set_point",
            Op::EvaluatePoints { .. } => "evaluate_points",
            Op::HessianOpen { .. } => "hessian_open",
            Op::HessianClose => "hessian_close",
            Op::NewVector { .. } => "new_vector",
            Op::ReadVector { .. } => "read_vector",
            Op::Dots { .. } => "dots",
            Op::Combine { .. } => "combine",
            Op::Multiply { .. } => "multiply",
            Op::Free { .. } => "free",
            Op::Hvp { .. } => "hvp",
            Op::Loss { .. } => "loss",
            Op::Gradient { .. } => "gradient",
            Op::Shutdown => "shutdown",
        }
    }
}

/// One tensor the module takes from a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SlotInfo {
    pub name: String,
    pub shape: Vec<usize>,
    /// Trainable parameter (`true`) or float buffer such as a batch-norm running statistic.
    pub parameter: bool,
}

/// What a loaded model looks like.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    /// Parameters in module order, then float buffers. The parameters (`parameter: true`) are in
    /// `named_parameters()` order, tied weights once under their first name on the Python backend:
    /// the model's parameter order, the order in which PyTorch's optimizers number them
    /// ([`ModelInfo::parameter_order`]; formats' `OptimizerState::map_names` maps index-keyed
    /// optimizer state by it).
    pub slots: Vec<SlotInfo>,
    /// Module buffers that are not slots (integers such as `num_batches_tracked`): accepted and skipped.
    pub ignored_buffers: Vec<String>,
    /// Samples and batches of the evaluation set (after subsampling).
    pub samples: usize,
    pub batches: usize,
    /// The loss in use, and whether it reports an accuracy.
    pub loss: String,
    pub has_accuracy: bool,
    /// The device in use, e.g. `cpu`, `cuda:0`.
    pub device: String,
    /// A short description for records, e.g. the model file or the factory.
    pub source: String,
}

impl ModelInfo {
    /// The trainable parameters, in the model's parameter order: (name, shape).
    pub fn parameter_order(&self) -> Vec<(String, Vec<usize>)> {
        self.slots.iter().filter(|s| s.parameter).map(|s| (s.name.clone(), s.shape.clone())).collect()
    }
}

/// One parameter tensor's place in a Hessian-space vector.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayoutSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

/// Kinds of failure, so the caller can say what to do.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The model contract can't be loaded (file missing, not TorchScript, factory not importable, …).
    BadContract,
    /// A checkpoint or direction file doesn't fit the model (missing/unexpected/misshapen keys).
    BadCheckpoint,
    /// The model's output and the targets (or the loss) don't fit each other.
    ShapeMismatch,
    /// The loss or a product is NaN or infinite.
    NonFinite,
    /// The device ran out of memory.
    OutOfMemory,
    /// The request is malformed or refers to an unknown handle, or comes in the wrong order.
    BadRequest,
    /// Unsupported here (an operation or device this worker lacks).
    Unsupported,
    /// Anything else the backend raised.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadContract => "bad_contract",
            ErrorKind::BadCheckpoint => "bad_checkpoint",
            ErrorKind::ShapeMismatch => "shape_mismatch",
            ErrorKind::NonFinite => "non_finite",
            ErrorKind::OutOfMemory => "out_of_memory",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Answers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        protocol: u32,
        /// `torchscript` or `python`.
        backend: String,
        /// e.g. the libtorch / PyTorch version.
        backend_version: String,
        /// Devices the worker can use, e.g. `["cpu", "cuda:0"]`.
        devices: Vec<String>,
        capabilities: Vec<String>,
        pid: u32,
    },
    Model {
        info: ModelInfo,
    },
    Ok,
    Handle {
        handle: Handle,
    },
    Evaluation {
        loss: f64,
        accuracy: Option<f64>,
        samples: usize,
    },
    Directions {
        handles: Vec<Handle>,
        /// cos(dx, dy) over all slots, when there are two.
        cosine: Option<f64>,
    },
    Point {
        index: u64,
        loss: f64,
        accuracy: Option<f64>,
    },
    Done,
    Hessian {
        dim: usize,
        layout: Vec<LayoutSlot>,
        centre: Handle,
    },
    Number {
        value: f64,
    },
    Numbers {
        values: Vec<f64>,
    },
    Values {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// The first frame of a worker that dials in over TCP (docs/worker-protocol.md, "Over TCP").
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Join {
    pub protocol: u32,
    pub token: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub pid: u32,
    /// The launcher's global rank, local rank (index on its node) and number of tasks, when known.
    #[serde(default)]
    pub rank: Option<u32>,
    #[serde(default)]
    pub local_rank: Option<u32>,
    #[serde(default)]
    pub world_size: Option<u32>,
    /// The model contract id the worker was started for, if it was given one.
    #[serde(default)]
    pub contract: Option<String>,
}

/// The join exchange: the worker's `join`, the coordinator's `joined` or `refused`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum JoinMessage {
    Join(Join),
    Joined {
        worker: u32,
    },
    /// `retry_after_ms`: set when the coordinator is only busy (too many connections still sending
    /// their join): the worker dials again after about that long, within its `--connect-timeout`.
    Refused {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl JoinMessage {
    /// A final refusal (wrong token, another version or contract, a full job).
    pub fn refused(reason: impl Into<String>) -> JoinMessage {
        JoinMessage::Refused { reason: reason.into(), retry_after_ms: None }
    }
}

/// Longest piece of peer-supplied text (a host name, a contract id, a reason) put in a log line.
pub const MAX_PEER_TEXT: usize = 80;

/// Peer-supplied text made safe for one log line: everything but printable ASCII escaped (a newline would
/// forge a line, bidi controls reorder it), quotes and backslashes too; at most `max` characters kept
/// (the rest counted).
pub fn peer_text(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (kept, (i, c)) in s.char_indices().enumerate() {
        if kept >= max {
            out.push_str(&format!("…(+{} bytes)", s.len() - i));
            break;
        }
        if c == ' ' || (c.is_ascii_graphic() && c != '\\' && c != '"') {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

impl Join {
    /// `rank 3 on node12 (pid 4242)` (`pid 4242 on node12` without a rank), for messages.
    pub fn describe(&self) -> String {
        let host =
            if self.host.is_empty() { "an unnamed host".to_string() } else { peer_text(&self.host, 64) };
        match self.rank {
            Some(r) => format!("rank {r} on {host} (pid {})", self.pid),
            None => format!("pid {} on {host}", self.pid),
        }
    }

    /// Fills rank, local rank and world size from the launcher's environment (`var` looks one up):
    /// torchrun, Slurm, Open MPI, PMI (MPICH, Intel MPI), Kubernetes Indexed Jobs, the first found.
    pub fn from_launcher_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        let first = |names: &[&str]| names.iter().find_map(|n| var(n)?.trim().parse::<u32>().ok());
        self.rank =
            first(&["RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "JOB_COMPLETION_INDEX"]);
        self.local_rank =
            first(&["LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"]);
        self.world_size = first(&["WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]);
    }
}

impl WireContract {
    /// A short id of what the workers must agree on (model, data, loss, batch, subsample, device,
    /// precision; not threads or the checkpoint): 16 hex digits of FNV-1a over its encoding. It tells a
    /// worker started for another job from one started for this job; it is not a secret.
    pub fn id(&self) -> String {
        let c = WireContract { threads: None, checkpoint: None, ..self.clone() };
        let bytes = encode(&c).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// Encodes a message as a frame body (MessagePack, maps with string keys).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(msg)
}

/// Decodes a frame body.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// f64 values as the little-endian bytes `values` carries.
pub fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`f64_bytes`]; `None` when the length is not a multiple of 8.
pub fn bytes_f64(b: &[u8]) -> Option<Vec<f64>> {
    if !b.len().is_multiple_of(8) {
        return None;
    }
    Some(
        b.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(m: T) {
        let b = encode(&m).unwrap();
        let back: T = decode(&b).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn every_op_round_trips() {
        let ops = vec![
            Op::Hello { protocol: PROTOCOL_VERSION, client: "t".into() },
            Op::LoadModel {
                contract: WireContract { batch_size: 8, device: "cpu".into(), ..Default::default() },
            },
            Op::LoadState {
                source: StateSource::Checkpoint { path: "/x.pt".into() },
                bind: BindRules::default(),
            },
            Op::Evaluate,
            Op::RandomDirections {
                about: 1,
                seed: 3,
                norm: "filter".into(),
                ignore: "biasbn".into(),
                count: 2,
                orthogonalize: false,
            },
            Op::SetPlane { centre: 1, dx: 2, dy: None },
            Op::EvaluatePoints { points: vec![GridPoint { index: 4, a: -0.5, b: 1.0 }] },
            Op::NewVector { init: VectorInit::Values { data: f64_bytes(&[1.0, -2.5]) } },
            Op::NewVector { init: VectorInit::Rademacher { seed: 9 } },
            Op::Combine { y: 1, scale: 0.5, terms: vec![(2.0, 3), (-1.0, 4)] },
            Op::Multiply { y: 1, x: 2 },
            Op::NewVector {
                init: VectorInit::Tensors { path: "/v.safetensors".into(), bind: BindRules::default() },
            },
            Op::Loss { at: None },
            Op::Shutdown,
            Op::ReadState { state: 1 },
            Op::SetState { state: 1 },
            Op::Difference { from: 1, to: 2 },
            Op::SetPoint { a: 0.5, b: -1.0 },
            Op::HessianOpen { subset: "all".into() },
            Op::HessianClose,
            Op::ReadVector { v: 3 },
            Op::Dots { x: 1, ys: vec![2, 3] },
            Op::Free { handles: vec![4] },
            Op::Hvp { v: 1, out: 2 },
            Op::Gradient { at: Some(1), out: 2 },
        ];
        for op in ops {
            let tag = serde_json::to_value(&op).unwrap()["op"].as_str().unwrap().to_string();
            assert_eq!(op.name(), tag, "Op::name disagrees with the serde tag");
            roundtrip(Request { id: 7, body: op });
        }
        roundtrip(Response { id: 1, body: Reply::Point { index: 3, loss: 0.25, accuracy: None } });
        roundtrip(Response {
            id: 2,
            body: Reply::Error {
                kind: ErrorKind::ShapeMismatch,
                message: "logits [2, 3] vs targets [4]".into(),
            },
        });
        roundtrip(Response { id: 3, body: Reply::Values { data: f64_bytes(&[0.1]) } });
    }

    /// The wire form other implementations (the Python worker) rely on: string keys, snake_case tags.
    #[test]
    fn wire_form_is_maps_with_string_keys() {
        let b = encode(&Request { id: 5, body: Op::SetState { state: 2 } }).unwrap();
        let v: rmpv::Value = rmpv::decode::read_value(&mut &b[..]).unwrap();
        assert_eq!(v["id"].as_u64(), Some(5));
        assert_eq!(v["body"]["op"].as_str(), Some("set_state"));
        assert_eq!(v["body"]["state"].as_u64(), Some(2));
        let b = encode(&Request { id: 6, body: Op::Evaluate }).unwrap();
        let v: rmpv::Value = rmpv::decode::read_value(&mut &b[..]).unwrap();
        assert_eq!(v["body"]["op"].as_str(), Some("evaluate"));
    }

    #[test]
    fn f64_bytes_round_trip() {
        let v = vec![0.0, -1.5, f64::MIN_POSITIVE, 1e300];
        assert_eq!(bytes_f64(&f64_bytes(&v)).unwrap(), v);
        assert!(bytes_f64(&[0u8; 7]).is_none());
    }
}
