//! A checkpoint's optimizer state: its param groups (hyperparameters typed and raw), the optimizer's
//! kind where the keys say it, and per parameter its state entries (`step`, `exp_avg`,
//! `exp_avg_sq`, `max_exp_avg_sq`, `momentum_buffer`, ...) as tensors of a [`Checkpoint`], so they
//! stream through the same chunked readers as the weights ([`Checkpoint::read_chunks`]).
//!
//! Layouts read ([`OptimizerState::open`]):
//! - HF `checkpoint-N/optimizer.pt` (+ `scheduler.pt`'s `_last_lr`, `trainer_state.json`'s last
//!   logged `learning_rate`);
//! - Lightning `.ckpt`: `optimizer_states[0]` (+ `lr_schedulers[0]`'s `_last_lr`);
//! - a plain `torch.save` dict with the optimizer under `optimizer`, `optimizer_state_dict`, `optim`
//!   or `opt`;
//! - DCP folders (FSDP2 `get_state_dict`, torchtitan): `optim.state.<fqn>.<key>` tensors and
//!   `optim.param_groups.<i>.<hyper>` (with `params` naming the fqns) or, flattened,
//!   `optim.param_groups.<fqn>.<hyper>`.
//!
//! - DeepSpeed ZeRO-1/2/3 folders (`optimizer/deepspeed.rs`): the base optimizer's param groups as
//!   DeepSpeed stored them, its per-element state cut out of every rank's flat partitions by
//!   `param_shapes` as the master weights are, named by DeepSpeed's own parameter names.
//!
//! Not read yet (an `Unsupported` error, one line): Megatron.
//!
//! The pickles are parsed, never executed, against the same allow-list as the weights (an optimizer
//! state dict needs nothing more: dicts, lists, tuples, numbers, strings, tensors). Only the pickle's
//! tree is held in memory while opening; tensor values are read on demand, except each parameter's
//! `step` (a scalar) and 0-d hyperparameter tensors (e.g. a tensor `lr`), read when opening.
//!
//! Parameters are referred to by name where the layout has names (`param_names` in a param group,
//! DCP keys) and by index otherwise (PyTorch numbers them consecutively over the groups in group
//! order); [`OptimizerState::map_names`] maps indices to the model's names by its parameter order,
//! checked by shape.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::pickle_scan;
use super::pickle_value::Val;
use super::torch_item::{self, Archive, TensorRef};
use super::{Checkpoint, CheckpointError, Layout, TensorInfo, TensorSource};

mod deepspeed;
mod lr;
mod mapping;

pub use mapping::ParamShape;

/// A scalar (or a list of them) from a param group or a per-parameter state.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Scalar>),
    None,
}

impl Scalar {
    /// As a number (bools as 0/1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Float(x) => Some(*x),
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Bool(b) => Some(*b as i64 as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            Scalar::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}

/// The hyperparameters PyTorch's optimizers name, typed (absent when the group lacks them).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hyper {
    pub lr: Option<f64>,
    pub betas: Option<(f64, f64)>,
    pub eps: Option<f64>,
    pub weight_decay: Option<f64>,
    pub momentum: Option<f64>,
    pub dampening: Option<f64>,
    pub nesterov: Option<bool>,
    pub amsgrad: Option<bool>,
    pub maximize: Option<bool>,
    pub decoupled_weight_decay: Option<bool>,
    /// DeepSpeed's FusedAdam and DeepSpeedCPUAdam: whether Adam's moments are bias-corrected (PyTorch's
    /// Adam always corrects them).
    pub bias_correction: Option<bool>,
}

impl Hyper {
    fn from_raw(raw: &BTreeMap<String, Scalar>) -> Hyper {
        let f = |k: &str| raw.get(k).and_then(Scalar::as_f64);
        let b = |k: &str| raw.get(k).and_then(Scalar::as_bool);
        let betas = match raw.get("betas") {
            Some(Scalar::List(v)) if v.len() == 2 => v[0].as_f64().zip(v[1].as_f64()),
            _ => None,
        };
        Hyper {
            lr: f("lr"),
            betas,
            eps: f("eps"),
            weight_decay: f("weight_decay"),
            momentum: f("momentum"),
            dampening: f("dampening"),
            nesterov: b("nesterov"),
            amsgrad: b("amsgrad"),
            maximize: b("maximize"),
            decoupled_weight_decay: b("decoupled_weight_decay"),
            bias_correction: b("bias_correction"),
        }
    }
}

/// How a parameter is named in the optimizer state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ParamRef {
    /// By name (`param_names`, DCP keys, or mapped by [`OptimizerState::map_names`]).
    Name(String),
    /// By PyTorch's index: consecutive over the param groups, in group order.
    Index(usize),
}

impl std::fmt::Display for ParamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamRef::Name(n) => f.write_str(n),
            ParamRef::Index(i) => write!(f, "#{i}"),
        }
    }
}

/// One param group: its hyperparameters (typed and raw) and its parameters in order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ParamGroup {
    pub hyper: Hyper,
    /// Every scalar entry of the group but `params` / `param_names`, as stored.
    pub raw: BTreeMap<String, Scalar>,
    pub params: Vec<ParamRef>,
}

/// The state of one parameter.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ParamState {
    pub param: ParamRef,
    /// Its param group (index into [`OptimizerState::groups`]).
    pub group: usize,
    /// `step` (a 0-d tensor or a number), read when opening.
    pub step: Option<f64>,
    /// Its tensor entries (`exp_avg`, ...): key → index into [`OptimizerState::tensors`].
    pub tensors: BTreeMap<String, usize>,
    /// Its scalar entries other than `step`.
    pub scalars: BTreeMap<String, Scalar>,
}

impl ParamState {
    /// The index (into [`OptimizerState::tensors`]) of entry `key` (e.g. `exp_avg_sq`).
    pub fn tensor(&self, key: &str) -> Option<usize> {
        self.tensors.get(key).copied()
    }
}

/// The optimizer, as far as its keys say; never guessed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerKind {
    /// torch.optim.Adam (`decoupled_weight_decay` false).
    Adam,
    /// torch.optim.AdamW (`decoupled_weight_decay` true).
    AdamW,
    /// Adam's keys without `decoupled_weight_decay` (PyTorch before 2.6), or DeepSpeed's FusedAdam /
    /// DeepSpeedCPUAdam built by the user (their `adam_w_mode` is not saved): Adam or AdamW, not said.
    AdamFamily,
    /// torch.optim.SGD (with or without momentum).
    Sgd,
    /// Anything else (Adafactor, Muon, RMSprop, ...): its keys listed, no kind invented.
    Unknown { group_keys: Vec<String>, state_keys: Vec<String> },
}

impl OptimizerKind {
    /// A short stable name (`adam`, `adamw`, `adam_family`, `sgd`, `unknown`).
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::AdamFamily => "adam_family",
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Unknown { .. } => "unknown",
        }
    }

    /// Adam, AdamW or either: the update is PyTorch's Adam's (m̂/(√v̂+ε)).
    pub fn is_adam(&self) -> bool {
        matches!(self, OptimizerKind::Adam | OptimizerKind::AdamW | OptimizerKind::AdamFamily)
    }
}

/// Where a learning rate other than the groups' own was found.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrSources {
    /// The scheduler's `_last_lr` per group (HF `scheduler.pt`, Lightning `lr_schedulers[0]`).
    pub scheduler_last_lr: Option<Vec<f64>>,
    /// HF `trainer_state.json`: the last `learning_rate` logged and the step it was logged at.
    pub logged: Option<(u64, f64)>,
}

/// A checkpoint's optimizer state. Tensors are listed, not read: stream them with
/// `state.tensors.read_chunks(state.params[k].tensor("exp_avg_sq")?, ...)`.
#[derive(Debug)]
pub struct OptimizerState {
    /// The file or folder the state was read from.
    pub source: PathBuf,
    pub kind: OptimizerKind,
    pub groups: Vec<ParamGroup>,
    /// Every parameter with state, in the optimizer's order (groups in order, their params in order).
    pub params: Vec<ParamState>,
    /// The state's tensors, read like a checkpoint's (same layout as the weights).
    pub tensors: Checkpoint,
    pub lr_sources: LrSources,
}

/// Keys a plain `torch.save` dict puts its optimizer under, in order of preference.
const OPTIMIZER_KEYS: [&str; 4] = ["optimizer", "optimizer_state_dict", "optim", "opt"];

/// Prefixes of a DCP folder's optimizer keys.
const DCP_PREFIXES: [&str; 2] = ["optim.", "optimizer."];

fn malformed(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed { path: path.to_path_buf(), why: why.into() }
}

impl OptimizerState {
    /// The optimizer state that goes with checkpoint `ck`: `Ok(None)` when it has none (an HF folder
    /// without `optimizer.pt`, a file without an optimizer entry); an error naming the file and cause
    /// when it has one that cannot be read (including layouts not read yet: Megatron).
    pub fn open(ck: &Checkpoint) -> Result<Option<OptimizerState>, CheckpointError> {
        match ck.layout {
            Layout::HfFolder => open_hf(&ck.path),
            Layout::Lightning | Layout::File => open_torch_file(&ck.path, ck.layout),
            Layout::Dcp => open_dcp(&ck.path),
            Layout::DeepSpeed => deepspeed::open_deepspeed(&ck.path),
            Layout::Megatron => Err(CheckpointError::Unsupported {
                path: ck.path.clone(),
                why: format!("the optimizer state of a {} checkpoint is not read yet", ck.layout.name()),
            }),
        }
    }

    /// The effective learning rate of group `g`: its own `lr` (what the scheduler last set), else the
    /// scheduler's `_last_lr`, else the last logged one.
    pub fn lr(&self, g: usize) -> Option<f64> {
        self.groups.get(g).and_then(|gr| gr.hyper.lr).or_else(|| {
            let s = self.lr_sources.scheduler_last_lr.as_ref().and_then(|v| v.get(g).copied());
            s.or(self.lr_sources.logged.map(|l| l.1))
        })
    }

    /// The state of the parameter named `name`.
    pub fn param(&self, name: &str) -> Option<&ParamState> {
        self.params.iter().find(|p| matches!(&p.param, ParamRef::Name(n) if n == name))
    }

    /// The shape of parameter `k`'s state (its first tensor entry), if it has a tensor.
    pub fn shape_of(&self, k: usize) -> Option<&[usize]> {
        let p = self.params.get(k)?;
        let i = *p.tensors.values().next()?;
        self.tensors.tensors.get(i).map(|t| t.shape.as_slice())
    }
}

// ---------------------------------------------------------------------------------------------
// torch.save files (HF optimizer.pt, Lightning .ckpt, plain dicts)

/// Tensors of a `torch.save` archive (the whole file) by their references.
#[derive(Debug)]
struct ArchiveTensors {
    path: PathBuf,
    file: File,
    items: Vec<(TensorInfo, TensorRef, u64)>,
}

impl TensorSource for ArchiveTensors {
    fn tensors(&self) -> Vec<TensorInfo> {
        self.items.iter().map(|i| i.0.clone()).collect()
    }
    fn read_at(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        use std::os::unix::fs::FileExt;
        let (info, t, start) = &self.items[i];
        let total = (info.numel() as u64).saturating_mul(info.dtype.size() as u64);
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > total) {
            return Err(malformed(&self.path, format!("'{}': read past its {total} bytes", info.name)));
        }
        if self.streamable(i) {
            let at = start + (t.offset * info.dtype.size()) as u64 + offset;
            return self.file.read_exact_at(buf, at).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    malformed(
                        &self.path,
                        format!("'{}': file ended early (changed since it was opened?)", info.name),
                    )
                } else {
                    CheckpointError::Io { path: self.path.clone(), source: e }
                }
            });
        }
        let all = torch_item::read_tensor(&self.file, &self.path, *start, t)?;
        let o = offset as usize;
        buf.copy_from_slice(&all[o..o + buf.len()]);
        Ok(())
    }
    fn streamable(&self, i: usize) -> bool {
        let t = &self.items[i].1;
        torch_item::is_contiguous(&t.shape, &t.stride)
    }
}

/// The tree of a `torch.save` file and the file itself.
struct Opened {
    path: PathBuf,
    file: File,
    archive: Archive,
}

impl Opened {
    fn open(path: &Path) -> Result<Opened, CheckpointError> {
        Self::open_with(path, pickle_scan::allowed)
    }

    /// Against allow-list `allow` (DeepSpeed's optimizer files name a few classes of their own).
    fn open_with(path: &Path, allow: fn(&str, &str) -> bool) -> Result<Opened, CheckpointError> {
        let file = super::regular::open_regular(path)?;
        let len =
            file.metadata().map_err(|e| CheckpointError::Io { path: path.to_path_buf(), source: e })?.len();
        let archive = Archive::open(&file, path, 0, len, allow)?;
        Ok(Opened { path: path.to_path_buf(), file, archive })
    }

    /// The value of a 0-d (or 1-element) tensor.
    fn scalar_tensor(&self, t: &TensorRef) -> Result<f64, CheckpointError> {
        if t.numel() != Some(1) {
            return Err(malformed(&self.path, format!("a {:?} tensor where a scalar was expected", t.shape)));
        }
        let (start, _) = self.archive.range(&self.path, t)?;
        let b = torch_item::read_tensor(&self.file, &self.path, start, t)?;
        decode_one(t.dtype, &b).ok_or_else(|| malformed(&self.path, "a scalar tensor of an unknown dtype"))
    }

    /// `v` as a scalar (0-d tensors read), or None for a tensor of more elements / a container.
    fn scalar(&self, v: &Val) -> Result<Option<Scalar>, CheckpointError> {
        if let Some(t) = TensorRef::from_val(v) {
            let t = t.map_err(|why| malformed(&self.path, why))?;
            if t.numel() == Some(1) && t.shape.is_empty() {
                return Ok(Some(Scalar::Float(self.scalar_tensor(&t)?)));
            }
            return Ok(None);
        }
        Ok(plain_scalar(v))
    }
}

/// The value of one element of `dtype` in little-endian bytes.
fn decode_one(dtype: super::Dtype, b: &[u8]) -> Option<f64> {
    use super::Dtype::*;
    Some(match dtype {
        F64 => f64::from_le_bytes(b.get(..8)?.try_into().ok()?),
        F32 => f32::from_le_bytes(b.get(..4)?.try_into().ok()?) as f64,
        F16 => half::f16::from_le_bytes(b.get(..2)?.try_into().ok()?).to_f64(),
        BF16 => half::bf16::from_le_bytes(b.get(..2)?.try_into().ok()?).to_f64(),
        I64 => i64::from_le_bytes(b.get(..8)?.try_into().ok()?) as f64,
        I32 => i32::from_le_bytes(b.get(..4)?.try_into().ok()?) as f64,
        I16 => i16::from_le_bytes(b.get(..2)?.try_into().ok()?) as f64,
        I8 => *b.first()? as i8 as f64,
        U8 | Bool => *b.first()? as f64,
    })
}

/// A pickled scalar or a list/tuple of scalars (no tensors).
fn plain_scalar(v: &Val) -> Option<Scalar> {
    Some(match v {
        Val::None => Scalar::None,
        Val::Bool(b) => Scalar::Bool(*b),
        Val::Int(i) => Scalar::Int(*i),
        Val::Float(x) => Scalar::Float(*x),
        Val::Str(s) => Scalar::Str(s.to_string()),
        Val::Tuple(_) | Val::List(_) => {
            Scalar::List(v.items()?.iter().map(plain_scalar).collect::<Option<_>>()?)
        }
        _ => return None,
    })
}

fn str_entries(v: &Val) -> Vec<(String, Val)> {
    v.entries()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v)))
        .collect()
}

fn open_hf(dir: &Path) -> Result<Option<OptimizerState>, CheckpointError> {
    let path = dir.join("optimizer.pt");
    if !path.is_file() {
        return Ok(None);
    }
    let o = Opened::open(&path)?;
    let mut state = read_state_dict(&o, &o.archive.root.clone())?;
    let sched = dir.join("scheduler.pt");
    if sched.is_file() {
        let s = Opened::open(&sched)?;
        state.lr_sources.scheduler_last_lr = last_lr(&s.archive.root);
    }
    state.lr_sources.logged = logged_lr(&dir.join("trainer_state.json"));
    Ok(Some(state))
}

/// `_last_lr` of a scheduler's state dict.
fn last_lr(v: &Val) -> Option<Vec<f64>> {
    v.get("_last_lr")?.items()?.iter().map(Val::as_f64).collect()
}

/// The last `learning_rate` in `trainer_state.json`'s `log_history`, with its step.
fn logged_lr(path: &Path) -> Option<(u64, f64)> {
    let j = super::layout::read_json(path).ok()?;
    j.get("log_history")?
        .as_array()?
        .iter()
        .rev()
        .find_map(|e| Some((e.get("step")?.as_u64()?, e.get("learning_rate")?.as_f64()?)))
}

fn open_torch_file(path: &Path, layout: Layout) -> Result<Option<OptimizerState>, CheckpointError> {
    let o = Opened::open(path)?;
    let root = o.archive.root.clone();
    let (sd, sched) = if layout == Layout::Lightning {
        let Some(list) = root.get("optimizer_states").and_then(|v| v.items()) else { return Ok(None) };
        let Some(first) = list.first().cloned() else { return Ok(None) };
        let sched = root.get("lr_schedulers").and_then(|v| v.items()).and_then(|l| l.first().cloned());
        (first, sched)
    } else {
        let Some(sd) = OPTIMIZER_KEYS.iter().find_map(|k| root.get(k).filter(|v| v.get("state").is_some()))
        else {
            return Ok(None);
        };
        let sched = ["scheduler", "lr_scheduler", "scheduler_state_dict"].iter().find_map(|k| root.get(k));
        (sd, sched)
    };
    let mut state = read_state_dict(&o, &sd)?;
    state.lr_sources.scheduler_last_lr = sched.as_ref().and_then(last_lr);
    Ok(Some(state))
}

/// `optimizer.state_dict()`'s value: `{"state": {ref: {key: tensor|number}}, "param_groups": [...]}`.
fn read_state_dict(o: &Opened, sd: &Val) -> Result<OptimizerState, CheckpointError> {
    let path = &o.path;
    let groups_val = sd
        .get("param_groups")
        .and_then(|g| g.items())
        .ok_or_else(|| malformed(path, "optimizer state has no param_groups list"))?;
    let state_val = sd.get("state").ok_or_else(|| malformed(path, "optimizer state has no state dict"))?;
    let mut groups = Vec::new();
    // (group, ref) in PyTorch's order; `param_names` (PyTorch >= 2.6 with named parameters) name them.
    let mut order: Vec<(usize, ParamRef, Val)> = Vec::new();
    for (g, gv) in groups_val.iter().enumerate() {
        let params = gv
            .get("params")
            .and_then(|p| p.items())
            .ok_or_else(|| malformed(path, format!("param group {g} has no params list")))?;
        let names = gv.get("param_names").and_then(|p| p.items());
        let mut raw = BTreeMap::new();
        for (k, v) in str_entries(gv) {
            if k == "params" || k == "param_names" {
                continue;
            }
            if let Some(s) = o.scalar(&v)? {
                raw.insert(k, s);
            }
        }
        let mut refs = Vec::new();
        for (j, p) in params.iter().enumerate() {
            let r = match names.as_ref().and_then(|n| n.get(j)).and_then(|n| n.as_str()) {
                Some(n) => ParamRef::Name(n.to_string()),
                None => match p {
                    Val::Int(i) if *i >= 0 => ParamRef::Index(*i as usize),
                    Val::Str(s) => ParamRef::Name(s.to_string()),
                    _ => {
                        return Err(malformed(
                            path,
                            format!("param group {g}: a parameter id that is not an index"),
                        ));
                    }
                },
            };
            refs.push(r.clone());
            order.push((g, r, p.clone()));
        }
        groups.push(ParamGroup { hyper: Hyper::from_raw(&raw), raw, params: refs });
    }
    let entries =
        state_val.entries().ok_or_else(|| malformed(path, "optimizer state's state is not a dict"))?;
    let mut items = Vec::new();
    let mut params = Vec::new();
    for (g, r, id) in order {
        let Some(sv) = entries.iter().find(|(k, _)| same_id(k, &id)).map(|(_, v)| v.clone()) else {
            continue;
        };
        let mut ps = ParamState {
            param: r.clone(),
            group: g,
            step: None,
            tensors: BTreeMap::new(),
            scalars: BTreeMap::new(),
        };
        for (k, v) in str_entries(&sv) {
            match TensorRef::from_val(&v) {
                Some(t) => {
                    let t = t.map_err(|why| malformed(path, format!("state of {r}, '{k}': {why}")))?;
                    if k == "step" && t.numel() == Some(1) {
                        ps.step = Some(o.scalar_tensor(&t)?);
                        continue;
                    }
                    let (start, _) = o.archive.range(path, &t)?;
                    let info =
                        TensorInfo { name: format!("state.{r}.{k}"), dtype: t.dtype, shape: t.shape.clone() };
                    ps.tensors.insert(k, items.len());
                    items.push((info, t, start));
                }
                None => {
                    if let Some(s) = plain_scalar(&v) {
                        if k == "step" {
                            ps.step = s.as_f64();
                        } else {
                            ps.scalars.insert(k, s);
                        }
                    }
                }
            }
        }
        params.push(ps);
    }
    let file = o.file.try_clone().map_err(|e| CheckpointError::Io { path: path.clone(), source: e })?;
    let src = ArchiveTensors { path: path.clone(), file, items };
    let tensors =
        Checkpoint::from_sources(path.clone(), Layout::File, None, vec![Box::new(src)], vec![path.clone()]);
    Ok(OptimizerState {
        source: path.clone(),
        kind: infer_kind(&groups, &params),
        groups,
        params,
        tensors,
        lr_sources: LrSources::default(),
    })
}

/// Whether a state dict key is parameter id `id` (an int, or a name).
fn same_id(k: &Val, id: &Val) -> bool {
    match (k, id) {
        (Val::Int(a), Val::Int(b)) => a == b,
        (Val::Str(a), Val::Str(b)) => a == b,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// DCP folders

fn is_optim_key(key: &str, _has_model: bool) -> bool {
    DCP_PREFIXES.iter().any(|p| key.strip_prefix(p).is_some_and(|r| r.starts_with("state.")))
}

fn open_dcp(dir: &Path) -> Result<Option<OptimizerState>, CheckpointError> {
    let (folder, bytes) = super::dcp::DcpFolder::open_with_bytes(dir, is_optim_key, &|k| {
        DCP_PREFIXES.iter().any(|p| k.strip_prefix(p).is_some_and(|r| r.starts_with("param_groups.")))
    })?;
    let infos = folder.infos();
    if infos.is_empty() && bytes.is_empty() {
        return Ok(None);
    }
    let members = folder.members.clone();
    let tensors =
        Checkpoint::from_sources(dir.to_path_buf(), Layout::Dcp, None, vec![Box::new(folder)], members);
    let strip = |k: &str| -> Option<String> {
        DCP_PREFIXES.iter().find_map(|p| k.strip_prefix(p)).map(str::to_string)
    };
    // Per-parameter state, in .metadata's order.
    let mut params: Vec<ParamState> = Vec::new();
    for (i, t) in tensors.tensors.iter().enumerate() {
        let Some(rest) = strip(&t.name).and_then(|r| r.strip_prefix("state.").map(str::to_string)) else {
            continue;
        };
        let Some((fqn, key)) = rest.rsplit_once('.') else {
            return Err(malformed(dir, format!("optimizer key '{}' names no parameter", t.name)));
        };
        let k = match params.iter().position(|p| p.param == ParamRef::Name(fqn.to_string())) {
            Some(k) => k,
            None => {
                params.push(ParamState {
                    param: ParamRef::Name(fqn.to_string()),
                    group: 0,
                    step: None,
                    tensors: BTreeMap::new(),
                    scalars: BTreeMap::new(),
                });
                params.len() - 1
            }
        };
        if key == "step" && t.numel() == 1 {
            params[k].step = tensors.read_f64(i).ok().and_then(|v| v.first().copied());
            if params[k].step.is_none() {
                let bytes = tensors.read_raw(i)?;
                params[k].step = decode_one(t.dtype, &bytes);
            }
        } else {
            params[k].tensors.insert(key.to_string(), i);
        }
    }
    // Param groups: indexed (`param_groups.<i>.<hyper>` with `.params`) or flattened by fqn.
    let pg: Vec<(String, Val)> = bytes
        .into_iter()
        .filter_map(|(k, v)| Some((strip(&k)?.strip_prefix("param_groups.")?.to_string(), v)))
        .collect();
    let indexed = pg.iter().any(|(k, _)| {
        k.split_once('.').is_some_and(|(i, rest)| i.parse::<usize>().is_ok() && rest == "params")
    });
    // (group key, hyper, value) triples.
    let mut by_group: Vec<(String, BTreeMap<String, Scalar>)> = Vec::new();
    let mut members_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &pg {
        let (g, hyper) = if indexed {
            let Some((i, h)) = k.split_once('.') else { continue };
            (i.to_string(), h.to_string())
        } else {
            let Some((fqn, h)) = k.rsplit_once('.') else { continue };
            (fqn.to_string(), h.to_string())
        };
        if hyper == "params" || hyper == "param_names" {
            if let Some(list) = v.items() {
                members_of
                    .insert(g.clone(), list.iter().filter_map(|x| x.as_str().map(str::to_string)).collect());
            }
            continue;
        }
        let pos = match by_group.iter().position(|(n, _)| *n == g) {
            Some(p) => p,
            None => {
                by_group.push((g.clone(), BTreeMap::new()));
                by_group.len() - 1
            }
        };
        if let Some(s) = plain_scalar(v) {
            by_group[pos].1.insert(hyper, s);
        }
    }
    let mut groups: Vec<ParamGroup> = Vec::new();
    for (g, raw) in by_group {
        let members: Vec<String> =
            if indexed { members_of.remove(&g).unwrap_or_default() } else { vec![g.clone()] };
        // Flattened: parameters with equal hyperparameters form one group (in first-seen order).
        let gi = match (!indexed).then(|| groups.iter().position(|x| x.raw == raw)).flatten() {
            Some(gi) => gi,
            None => {
                groups.push(ParamGroup { hyper: Hyper::from_raw(&raw), raw, params: Vec::new() });
                groups.len() - 1
            }
        };
        for m in members {
            groups[gi].params.push(ParamRef::Name(m));
        }
    }
    for p in &mut params {
        if let Some(g) = groups.iter().position(|g| g.params.contains(&p.param)) {
            p.group = g;
        } else if !groups.is_empty() {
            return Err(malformed(dir, format!("optimizer state of '{}' is in no param group", p.param)));
        }
    }
    // PyTorch's order: groups in order, their params in order.
    let rank = |p: &ParamState| {
        groups.get(p.group).and_then(|g| g.params.iter().position(|r| *r == p.param)).unwrap_or(usize::MAX)
    };
    params.sort_by_key(|p| (p.group, rank(p)));
    Ok(Some(OptimizerState {
        source: dir.to_path_buf(),
        kind: infer_kind(&groups, &params),
        groups,
        params,
        tensors,
        lr_sources: LrSources::default(),
    }))
}

// ---------------------------------------------------------------------------------------------
// The optimizer's kind

const ADAM_GROUP: [&str; 12] = [
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "amsgrad",
    "maximize",
    "foreach",
    "capturable",
    "differentiable",
    "fused",
    "decoupled_weight_decay",
    "initial_lr",
];
const ADAM_STATE: [&str; 4] = ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"];
/// The group keys DeepSpeed's own Adam adds to Adam's: FusedAdam's and DeepSpeedCPUAdam's
/// `bias_correction`, FusedAdam's group-level `step` (kept at 0; the parameters' own count).
const DEEPSPEED_ADAM_GROUP: [&str; 2] = ["bias_correction", "step"];
const SGD_GROUP: [&str; 10] = [
    "lr",
    "momentum",
    "dampening",
    "weight_decay",
    "nesterov",
    "maximize",
    "foreach",
    "differentiable",
    "fused",
    "initial_lr",
];
const SGD_STATE: [&str; 1] = ["momentum_buffer"];

/// The kind the keys say: Adam's or SGD's exact key sets (a subset of the state keys, group keys
/// within the known ones and the distinguishing ones present), else `Unknown` with the keys listed.
fn infer_kind(groups: &[ParamGroup], params: &[ParamState]) -> OptimizerKind {
    let mut gk: Vec<String> = groups.iter().flat_map(|g| g.raw.keys().cloned()).collect();
    gk.sort();
    gk.dedup();
    let mut sk: Vec<String> = params
        .iter()
        .flat_map(|p| {
            p.tensors.keys().chain(p.scalars.keys()).cloned().chain(p.step.map(|_| "step".to_string()))
        })
        .collect();
    sk.sort();
    sk.dedup();
    let within = |keys: &[String], known: &[&str]| keys.iter().all(|k| known.contains(&k.as_str()));
    let has = |k: &str| gk.iter().any(|x| x == k);
    if !groups.is_empty()
        && within(&gk, &ADAM_GROUP)
        && within(&sk, &ADAM_STATE)
        && has("betas")
        && has("amsgrad")
    {
        let dwd: Vec<Option<bool>> = groups.iter().map(|g| g.hyper.decoupled_weight_decay).collect();
        return match dwd.first().copied().flatten() {
            Some(true) if dwd.iter().all(|d| *d == Some(true)) => OptimizerKind::AdamW,
            Some(false) if dwd.iter().all(|d| *d == Some(false)) => OptimizerKind::Adam,
            _ => OptimizerKind::AdamFamily,
        };
    }
    // DeepSpeed's FusedAdam / DeepSpeedCPUAdam: Adam's update (PyTorch's when `bias_correction` is on),
    // but Adam vs AdamW (`adam_w_mode`) is the optimizer's attribute, not state: the DeepSpeed reader
    // settles it from the run's config when the config built the optimizer.
    let deepspeed_group: Vec<&str> = ADAM_GROUP.iter().chain(&DEEPSPEED_ADAM_GROUP).copied().collect();
    if !groups.is_empty()
        && within(&gk, &deepspeed_group)
        && within(&sk, &ADAM_STATE)
        && has("betas")
        && has("bias_correction")
    {
        return OptimizerKind::AdamFamily;
    }
    if !groups.is_empty()
        && within(&gk, &SGD_GROUP)
        && within(&sk, &SGD_STATE)
        && has("momentum")
        && has("dampening")
        && has("nesterov")
    {
        return OptimizerKind::Sgd;
    }
    OptimizerKind::Unknown { group_keys: gk, state_keys: sk }
}
