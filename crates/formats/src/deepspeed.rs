//! DeepSpeed checkpoint folders (`<save_dir>/global_stepN/`, named by the `latest` file beside them),
//! read as the fp32 master weights DeepSpeed's own `zero_to_fp32.py` rebuilds.
//!
//! - ZeRO-1/2: rank 0's `mp_rank_00_model_states.pt` holds the module's weights under `module` (under
//!   bf16/fp16 the low-precision copy), `param_shapes`, `frozen_param_shapes`/`_fragments`,
//!   `buffer_names` and `shared_params`; every rank writes `[bf16_]zero_pp_rank_{r}_mp_rank_00_optim_states.pt`
//!   whose `optimizer_state_dict.single_partition_of_fp32_groups` are its fp32 partitions, one per
//!   parameter group. As `_get_fp32_state_dict_from_zero2_checkpoint`: buffers from the module (their
//!   own dtype), frozen parameters from `frozen_param_fragments` (their own dtype, as zero_to_fp32
//!   keeps them), then per group the ranks' partitions concatenated in rank order and cut into
//!   `param_shapes[g]` in order, each parameter followed by its `param_alignment_paddings[g][i]`
//!   elements where recorded; the elements consumed and available, each aligned up to 2 × world size,
//!   must be equal. `partition_count` (an int or one per group, their largest taken) must equal the
//!   optimizer files found, else the folder is incomplete. Without per-rank optimizer files, or with
//!   optimizer states that hold no fp32 partitions (ZeRO-0 fp16), the module's weights are read and
//!   the copy says so ([`super::Checkpoint::source`]).
//! - ZeRO-3: every rank writes `zero_pp_rank_{r}_mp_rank_00_model_states.pt` (its `module` holds
//!   empty placeholders) and `[bf16_]zero_pp_rank_{r}_mp_rank_00_optim_states.pt` whose
//!   `optimizer_state_dict.fp32_flat_groups` are that rank's fp32 flat partitions. The weights are
//!   rebuilt as DeepSpeed's `zero_to_fp32.py` does: buffers from rank 0's `module` (kept in their own
//!   dtype; zero_to_fp32 casts them to float), frozen parameters from every rank's
//!   `frozen_param_fragments`, then each trainable parameter in `param_shapes` order takes
//!   `ceil(numel / world)` elements at a running offset from every rank's concatenated flat groups,
//!   the first `numel` of which (in rank order) are the parameter; `shared_params` pairs alias.
//!   The partitions must be consumed exactly (offset × world = available elements), as zero_to_fp32
//!   checks.
//! - `shared_params` (`{alias: owner}`, tied weights) become [`super::Alias`]es: the owner is read
//!   once; so is one storage under two names in the module.
//!
//! Model-parallel checkpoints (`mp_rank_01…`) are refused as unsupported. The pickles are read with
//! [`super::torch_item`]: the model states against the state-dict allow-list, the optimizer files
//! against [`pickle_scan::allowed_deepspeed`] (plus DeepSpeed's loss scaler, ZeRO stage enum and
//! fragment address classes). Step: the model states' `global_steps`, else the folder name.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::pickle_scan;
use super::pickle_value::Val;
use super::torch_item::{self, Archive, TensorRef, read_tensor};
use super::{Alias, CheckpointError, Dtype, TensorInfo};

fn malformed(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed { path: path.to_path_buf(), why: why.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io { path: path.to_path_buf(), source }
}

/// The `(dp_rank, mp_rank)` of a `[prefix_]zero_pp_rank_D_mp_rank_MM_<suffix>` file name, or
/// `(None, mp)` for `mp_rank_MM_<suffix>`.
fn ranks(name: &str, suffix: &str) -> Option<(Option<usize>, usize)> {
    let stem = name.strip_suffix(suffix)?;
    let (head, mp) = stem.rsplit_once("mp_rank_")?;
    let mp = mp.parse().ok()?;
    if head.is_empty() {
        return Some((None, mp));
    }
    let dp = head.strip_suffix('_')?.rsplit_once("zero_pp_rank_")?.1.parse().ok()?;
    Some((Some(dp), mp))
}

/// Whether `dir` holds DeepSpeed model states (`*mp_rank_*_model_states.pt`).
pub(crate) fn is_deepspeed_folder(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| e.file_name().to_str().is_some_and(|n| ranks(n, "_model_states.pt").is_some()))
    })
}

/// Model-state files (dp rank if per rank) and optimizer-state files (dp rank), each sorted by rank.
pub(crate) type StateFiles = (Vec<(Option<usize>, PathBuf)>, Vec<(usize, PathBuf)>);

/// The folder's state files: (model states, optimizer states), each sorted by dp rank.
pub(crate) fn state_files(dir: &Path) -> Result<StateFiles, CheckpointError> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    let (mut models, mut optims) = (Vec::new(), Vec::new());
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
        for (suffix, is_model) in [("_model_states.pt", true), ("_optim_states.pt", false)] {
            let Some((dp, mp)) = ranks(&name, suffix) else { continue };
            if mp != 0 {
                return Err(CheckpointError::Unsupported {
                    path: e.path(),
                    why: "model-parallel DeepSpeed checkpoint (mp_rank other than 00), which landscaped does not read".into(),
                });
            }
            match (is_model, dp) {
                (true, dp) => models.push((dp, e.path())),
                (false, Some(dp)) => optims.push((dp, e.path())),
                (false, None) => {}
            }
        }
    }
    models.sort();
    optims.sort();
    Ok((models, optims))
}

/// Completeness: every state file a complete zip, at least one optimizer file, and under ZeRO-3 as
/// many optimizer files as model-state files; under ZeRO-1/2 the optimizer files of every rank
/// rank 0's `partition_count` names.
pub(crate) fn check_complete(dir: &Path) -> Result<(), CheckpointError> {
    let (zero3, optims) = check_files(dir)?;
    // ZeRO-1/2: every rank writes its partition; rank 0's says how many there are.
    if !zero3 && let Some((_, first)) = optims.first() {
        let (_, a) = open_archive(first, pickle_scan::allowed_deepspeed)?;
        if let Some(osd) = a.root.get("optimizer_state_dict") {
            ranks_written(dir, &osd, optims.len())?;
        }
    }
    Ok(())
}

/// The completeness rules that parse nothing: state files present in the right numbers, each a
/// complete zip. Returns whether the folder is ZeRO-3, and the optimizer files.
fn check_files(dir: &Path) -> Result<(bool, Vec<(usize, PathBuf)>), CheckpointError> {
    let (models, optims) = state_files(dir)?;
    if models.is_empty() {
        return Err(CheckpointError::Incomplete {
            path: dir.to_path_buf(),
            why: "no model states written yet".into(),
        });
    }
    if optims.is_empty() {
        return Err(CheckpointError::Incomplete {
            path: dir.to_path_buf(),
            why: "no optimizer states written yet (DeepSpeed writes them after the model states)".into(),
        });
    }
    let zero3 = models.iter().any(|(dp, _)| dp.is_some());
    if zero3 && optims.len() != models.len() {
        return Err(CheckpointError::Incomplete {
            path: dir.to_path_buf(),
            why: format!(
                "{} ZeRO-3 model-state files but {} optimizer-state files",
                models.len(),
                optims.len()
            ),
        });
    }
    for p in models.iter().map(|(_, p)| p).chain(optims.iter().map(|(_, p)| p)) {
        super::complete::check_file(p)?;
    }
    Ok((zero3, optims))
}

/// ZeRO-1/2: the optimizer files of fewer ranks than rank 0's `partition_count` (its
/// `optimizer_state_dict`, `osd`) are a checkpoint still being written.
fn ranks_written(dir: &Path, osd: &Val, found: usize) -> Result<(), CheckpointError> {
    let count = partition_count(osd);
    if count.is_some_and(|c| c > found) {
        return Err(CheckpointError::Incomplete {
            path: dir.to_path_buf(),
            why: format!("optimizer states of {found} of {} ranks written", count.unwrap_or(0)),
        });
    }
    Ok(())
}

/// Where a tensor's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    /// A whole tensor in one file: (file, storage start, tensor).
    Whole(usize, u64, TensorRef),
    /// Pieces concatenated in order, the first `numel` elements kept: (file, absolute byte offset,
    /// elements) each.
    Pieces(Vec<(usize, u64, usize)>),
}

/// An opened DeepSpeed folder.
#[derive(Debug)]
pub(crate) struct DeepSpeedFolder {
    files: Vec<PathBuf>,
    /// Every model- and optimizer-state file of the folder (for change detection).
    all: Vec<PathBuf>,
    tensors: Vec<(TensorInfo, Source)>,
    /// Names sharing a listed tensor (`shared_params`, or one storage twice in the module).
    pub aliases: Vec<Alias>,
    /// Which copy of the weights the tensors are (see [`super::Checkpoint::source`]).
    pub copy: String,
    pub step: Option<u64>,
}

pub(crate) fn open_archive(
    path: &Path,
    allow: fn(&str, &str) -> bool,
) -> Result<(File, Archive), CheckpointError> {
    super::parse_log::record("deepspeed pickle", path);
    let file = super::regular::open_regular(path)?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let a = Archive::open(&file, path, 0, len, allow)?;
    Ok((file, a))
}

fn tensor_at(path: &Path, a: &Archive, v: &Val, what: &str) -> Result<(u64, TensorRef), CheckpointError> {
    let t = match TensorRef::from_val(v) {
        Some(Ok(t)) => t,
        Some(Err(why)) => return Err(malformed(path, format!("{what}: {why}"))),
        None => return Err(malformed(path, format!("{what} is not a tensor"))),
    };
    let (start, _) = a.range(path, &t)?;
    Ok((start, t))
}

/// The string keys of a dict.
fn str_entries(v: &Val) -> Vec<(String, Val)> {
    v.entries()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v)))
        .collect()
}

/// A parameter's pieces in the rank partitions.
type Pieces = Vec<(usize, u64, usize)>;

/// The `shared_params` of a model-states file: (alias, owner) pairs. DeepSpeed writes a dict
/// `{alias: owner}`; a list of pairs is read too.
fn shared_params(root: &Val) -> Vec<(String, String)> {
    let Some(v) = root.get("shared_params") else { return Vec::new() };
    if let Some(entries) = v.entries() {
        return entries
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
            .collect();
    }
    v.items()
        .unwrap_or_default()
        .iter()
        .filter_map(|pair| {
            let p = pair.items()?;
            Some((p.first()?.as_str()?.to_string(), p.get(1)?.as_str()?.to_string()))
        })
        .collect()
}

/// One parameter group's (name, shape), in the group's flat order.
pub(crate) type GroupShapes = Vec<(String, Vec<usize>)>;

/// `param_shapes`: per parameter group, (name, shape) in the group's flat order.
pub(crate) fn param_shapes(path: &Path, root: &Val) -> Result<Vec<GroupShapes>, CheckpointError> {
    let mut groups = Vec::new();
    for group in root.get("param_shapes").and_then(|g| g.items()).unwrap_or_default() {
        let mut shapes = Vec::new();
        for (name, s) in str_entries(&group) {
            let s = s
                .as_usizes()
                .ok_or_else(|| malformed(path, format!("param_shapes['{name}'] is not a size")))?;
            shapes.push((name, s));
        }
        groups.push(shapes);
    }
    Ok(groups)
}

/// The ZeRO stage an optimizer state names (`zero_stage`: `ZeroStageEnum(n)` or an int).
pub(crate) fn zero_stage(osd: &Val) -> Option<i64> {
    let v = osd.get("zero_stage")?;
    v.as_int().or_else(|| v.args()?.first()?.as_int())
}

/// `partition_count`: an int, or one per parameter group (their largest is the data-parallel size,
/// as zero_to_fp32 takes it).
fn partition_count(osd: &Val) -> Option<usize> {
    let v = osd.get("partition_count")?;
    let n = match v.as_int() {
        Some(n) => n,
        None => v.items()?.iter().filter_map(Val::as_int).max()?,
    };
    usize::try_from(n).ok()
}

/// A list of flat 1-D f32 tensors of an optimizer-states file, as (file, absolute byte offset,
/// elements) each.
fn flat_f32(
    path: &Path,
    a: &Archive,
    items: &[Val],
    fi: usize,
    what: &str,
) -> Result<Pieces, CheckpointError> {
    let mut out = Vec::new();
    for (g, v) in items.iter().enumerate() {
        let (start, t) = tensor_at(path, a, v, &format!("{what}[{g}]"))?;
        if t.dtype != Dtype::F32 || t.shape.len() != 1 || (t.shape[0] > 1 && t.stride != [1]) {
            return Err(malformed(path, format!("{what}[{g}] is not a flat f32 tensor")));
        }
        out.push((fi, start + (t.offset * 4) as u64, t.shape[0]));
    }
    Ok(out)
}

/// The model tensors of a ZeRO-1/2 folder cut out of its fp32 master partitions, as zero_to_fp32's
/// `_zero2_merge_trainable_params` does: group `g`'s full vector is every rank's
/// `single_partition_of_fp32_groups[g]` concatenated in rank order; its parameters (`param_shapes[g]`,
/// in order) follow one another from offset 0, each followed by its `param_alignment_paddings[g][i]`
/// elements when the optimizer records them; what is left (at most the alignment to 2 × world size)
/// is padding, checked as zero_to_fp32 checks it.
fn zero12_trainable(
    dir: &Path,
    groups: &[GroupShapes],
    ranks: &[Pieces],
    paddings: Option<&[Vec<usize>]>,
    world: usize,
) -> Result<Vec<(TensorInfo, Pieces)>, CheckpointError> {
    if ranks.iter().any(|r| r.len() != groups.len()) {
        return Err(malformed(
            dir,
            format!(
                "{} parameter groups in param_shapes but the ranks' fp32 partitions have {:?}",
                groups.len(),
                ranks.iter().map(Vec::len).collect::<Vec<_>>()
            ),
        ));
    }
    let align = |x: usize| x.div_ceil(2 * world) * 2 * world;
    let mut out = Vec::new();
    for (g, shapes) in groups.iter().enumerate() {
        let full: Pieces = ranks.iter().map(|r| r[g]).collect();
        let avail: usize = full.iter().map(|p| p.2).sum();
        let pads = paddings.and_then(|p| p.get(g));
        if pads.is_some_and(|p| p.len() != shapes.len()) {
            return Err(malformed(
                dir,
                format!("group {g}: param_alignment_paddings do not match its {} parameters", shapes.len()),
            ));
        }
        let mut offset = 0usize;
        for (i, (name, shape)) in shapes.iter().enumerate() {
            let numel: usize = shape.iter().product();
            let pieces = slice_groups(&full, offset, numel).ok_or_else(|| {
                malformed(
                    dir,
                    format!("'{name}' reaches past group {g}'s fp32 partitions ({avail} elements)"),
                )
            })?;
            out.push((TensorInfo { name: name.clone(), dtype: Dtype::F32, shape: shape.clone() }, pieces));
            offset += numel + pads.map_or(0, |p| p[i]);
        }
        if align(offset) != align(avail) {
            return Err(malformed(
                dir,
                format!("group {g}: consumed {offset} of {avail} elements of the fp32 partitions"),
            ));
        }
    }
    Ok(out)
}

/// What is cut out of the ranks' partitions into the model's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cut<'a> {
    /// The fp32 master weights (`single_partition_of_fp32_groups` / `fp32_flat_groups`), with the
    /// buffers and frozen parameters beside them.
    Master,
    /// A per-element state of the base optimizer (Adam's `exp_avg`, `exp_avg_sq`), one flat tensor per
    /// partition under `base_optimizer_state.state[g]` (ZeRO-1/2) or `optimizer_state_dict.state[g]`
    /// (ZeRO-3): the trainable parameters only.
    State(&'a str),
}

/// One rank's flat partitions of `cut`, in group order; None when the file holds none.
fn rank_flats(
    p: &Path,
    oa: &Archive,
    osd: &Val,
    cut: Cut,
    zero3: bool,
    fi: usize,
    r: usize,
) -> Result<Option<Pieces>, CheckpointError> {
    let items = match cut {
        Cut::Master => {
            let key = if zero3 { "fp32_flat_groups" } else { "single_partition_of_fp32_groups" };
            let Some(list) = osd.get(key) else { return Ok(None) };
            list.items().ok_or_else(|| malformed(p, format!("{key} is not a list")))?
        }
        Cut::State(key) => {
            let base = if zero3 { "optimizer_state_dict" } else { "base_optimizer_state" };
            let Some(state) = osd.get(base).and_then(|b| b.get("state")) else { return Ok(None) };
            let mut groups: Vec<(i64, Val)> = state
                .entries()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| Some((k.as_int()?, v)))
                .collect();
            groups.sort_by_key(|g| g.0);
            let mut items = Vec::new();
            for (g, v) in groups {
                items.push(
                    v.get(key).ok_or_else(|| malformed(p, format!("{base}.state[{g}] has no '{key}'")))?,
                );
            }
            items
        }
    };
    let what = match cut {
        Cut::Master => format!("rank {r} fp32 partitions"),
        Cut::State(key) => format!("rank {r} optimizer state '{key}'"),
    };
    flat_f32(p, oa, &items, fi, &what).map(Some)
}

/// The folder's tensors so far: (info, source), and the aliases.
type Listing = (Vec<(TensorInfo, Source)>, Vec<Alias>);

impl DeepSpeedFolder {
    pub(crate) fn open(dir: &Path) -> Result<DeepSpeedFolder, CheckpointError> {
        Self::open_cut(dir, Cut::Master)
    }

    /// [`DeepSpeedFolder::open`] under the completeness rules ([`check_complete`]'s verdicts): the
    /// files' checks first (no parse), then rank 0's `partition_count` from the one parse of its
    /// optimizer file that opening makes anyway.
    pub(crate) fn open_complete(dir: &Path) -> Result<DeepSpeedFolder, CheckpointError> {
        check_files(dir)?;
        Self::open_judged(dir, Cut::Master, true)
    }

    fn open_cut(dir: &Path, cut: Cut) -> Result<DeepSpeedFolder, CheckpointError> {
        Self::open_judged(dir, cut, false)
    }

    /// `complete`: under the completeness rules (see [`DeepSpeedFolder::open_complete`]).
    fn open_judged(dir: &Path, cut: Cut, complete: bool) -> Result<DeepSpeedFolder, CheckpointError> {
        let (models, optims) = state_files(dir)?;
        let zero3 = models.iter().any(|(dp, _)| dp.is_some());
        let all: Vec<PathBuf> =
            models.iter().map(|m| m.1.clone()).chain(optims.iter().map(|o| o.1.clone())).collect();
        let main = models.first().map(|(_, p)| p.clone()).ok_or_else(|| {
            malformed(dir, "no *_model_states.pt in the folder (not a DeepSpeed checkpoint)")
        })?;
        let (_, a) = open_archive(&main, pickle_scan::allowed)?;
        let step = a.root.get("global_steps").and_then(|s| s.as_int()).and_then(|s| u64::try_from(s).ok());
        let module = a.root.get("module").ok_or_else(|| malformed(&main, "no 'module' state dict"))?;
        let mut files = vec![main.clone()];
        if !zero3 {
            let master = zero12_master(dir, &main, &a, &optims, &mut files, cut, complete)?;
            let ((tensors, aliases), copy) = match master {
                Ok((listing, copy)) => (listing, copy),
                Err(why) if cut != Cut::Master => {
                    return Err(CheckpointError::Unsupported {
                        path: dir.to_path_buf(),
                        why: format!("no optimizer state to read: {why}"),
                    });
                }
                Err(why) => {
                    files.truncate(1);
                    (
                        module_weights(&main, &a, &module)?,
                        format!("module weights (no fp32 master copy: {why})"),
                    )
                }
            };
            return Ok(DeepSpeedFolder { files, all, tensors, aliases, step, copy });
        }
        let (tensors, aliases) = zero3_master(dir, &models, &optims, a, &mut files, cut)?;
        let copy = format!("{} (ZeRO-3 optimizer partitions, {} ranks)", cut.what(), models.len());
        Ok(DeepSpeedFolder { files, all, tensors, aliases, step, copy })
    }

    /// One per-element state of the base optimizer (`exp_avg`, ...) of every trainable parameter,
    /// each tensor named `state.<parameter>.<key>` (as [`super::optimizer`] names a state's tensors),
    /// without aliases (a tied parameter has one state, under its owner's name).
    pub(crate) fn open_state(dir: &Path, key: &str) -> Result<DeepSpeedFolder, CheckpointError> {
        let mut f = Self::open_cut(dir, Cut::State(key))?;
        for (info, _) in &mut f.tensors {
            info.name = format!("state.{}.{key}", info.name);
        }
        f.aliases.clear();
        Ok(f)
    }

    pub(crate) fn infos(&self) -> Vec<TensorInfo> {
        self.tensors.iter().map(|t| t.0.clone()).collect()
    }

    pub(crate) fn members(&self) -> Vec<PathBuf> {
        self.all.clone()
    }

    pub(crate) fn read_bytes(&self, i: usize) -> Result<Vec<u8>, CheckpointError> {
        let (info, src) = &self.tensors[i];
        let es = info.dtype.size();
        match src {
            Source::Whole(fi, start, t) => {
                let p = &self.files[*fi];
                let f = super::regular::open_regular(p)?;
                read_tensor(&f, p, *start, t)
            }
            Source::Pieces(_) => {
                let mut out = vec![0u8; info.numel() * es];
                self.read_range(i, 0, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Whether tensor `i` can be read by range: always, except a strided view in a model-states
    /// file (read whole).
    pub(crate) fn streamable(&self, i: usize) -> bool {
        match &self.tensors[i].1 {
            Source::Whole(_, _, t) => torch_item::is_contiguous(&t.shape, &t.stride),
            Source::Pieces(_) => true,
        }
    }

    /// Bytes `offset .. offset + buf.len()` of tensor `i` (see [`Self::streamable`]): from its
    /// storage, or from the partition pieces that hold them.
    pub(crate) fn read_range(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        let (info, src) = &self.tensors[i];
        let es = info.dtype.size() as u64;
        let total = info.numel() as u64 * es;
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > total) {
            return Err(malformed(
                &self.files[0],
                format!("range {offset}+{} past tensor '{}' ({total} bytes)", buf.len(), info.name),
            ));
        }
        match src {
            Source::Whole(fi, start, t) if torch_item::is_contiguous(&t.shape, &t.stride) => {
                let p = &self.files[*fi];
                let f = super::regular::open_regular(p)?;
                f.read_exact_at(buf, start + t.offset as u64 * es + offset).map_err(|e| io_err(p, e))
            }
            Source::Whole(..) => {
                Err(malformed(&self.files[0], format!("tensor '{}' cannot be read by range", info.name)))
            }
            Source::Pieces(pieces) => {
                // Pieces hold consecutive elements: skip to the one holding `offset`.
                let (mut base, mut filled) = (0u64, 0usize);
                for &(fi, at, n) in pieces {
                    let len = n as u64 * es;
                    let pos = offset + filled as u64;
                    if filled == buf.len() {
                        break;
                    }
                    if pos < base + len {
                        let from = pos - base;
                        let take = ((len - from) as usize).min(buf.len() - filled);
                        let p = &self.files[fi];
                        let f = super::regular::open_regular(p)?;
                        f.read_exact_at(&mut buf[filled..filled + take], at + from)
                            .map_err(|e| io_err(p, e))?;
                        filled += take;
                    }
                    base += len;
                }
                if filled != buf.len() {
                    return Err(malformed(
                        &self.files[0],
                        format!("'{}': partitions hold too few elements", info.name),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// A ZeRO-1/2 folder's tensors from its fp32 master partitions (see [`zero12_trainable`]): buffers
/// from the module (their own dtype), frozen parameters from rank 0's `frozen_param_fragments` (their
/// own dtype, as zero_to_fp32 keeps them), then the trainable parameters in f32; `shared_params` as
/// aliases. `Ok(Err(why))`: the folder holds no master copy (no per-rank optimizer files, or
/// optimizer states without fp32 partitions), and the module's weights are read instead. Optimizer
/// files of fewer ranks than their `partition_count`: incomplete (`complete`: judged by the
/// completeness rule, [`ranks_written`], from rank 0's file as it is parsed here).
fn zero12_master(
    dir: &Path,
    main: &Path,
    a: &Archive,
    optims: &[(usize, PathBuf)],
    files: &mut Vec<PathBuf>,
    cut: Cut,
    complete: bool,
) -> Result<Result<(Listing, String), String>, CheckpointError> {
    if optims.is_empty() {
        return Ok(Err("no per-rank optimizer-state files in the folder".into()));
    }
    let (mut ranks, mut stage, mut world, mut paddings) = (Vec::new(), None, None, None);
    for (i, (r, p)) in optims.iter().enumerate() {
        let (_, oa) = open_archive(p, pickle_scan::allowed_deepspeed)?;
        let osd =
            oa.root.get("optimizer_state_dict").ok_or_else(|| malformed(p, "no optimizer_state_dict"))?;
        if complete && i == 0 {
            ranks_written(dir, &osd, optims.len())?;
        }
        let fi = files.len();
        let Some(flats) = rank_flats(p, &oa, &osd, cut, false, fi, *r)? else {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let key = match cut {
                Cut::Master => "single_partition_of_fp32_groups",
                Cut::State(_) => "base_optimizer_state",
            };
            return Ok(Err(format!("{name} holds no {key}")));
        };
        if i == 0 {
            stage = zero_stage(&osd);
            world = partition_count(&osd);
            paddings = osd
                .get("param_alignment_paddings")
                .and_then(|v| v.items())
                .map(|groups| groups.iter().map(|g| g.as_usizes().unwrap_or_default()).collect::<Vec<_>>());
        }
        files.push(p.clone());
        ranks.push(flats);
    }
    let world =
        world.ok_or_else(|| malformed(&optims[0].1, "optimizer_state_dict has no partition_count"))?;
    if optims.len() != world || optims.iter().enumerate().any(|(i, (r, _))| *r != i) {
        let found: Vec<usize> = optims.iter().map(|o| o.0).collect();
        return Err(CheckpointError::Incomplete {
            path: dir.to_path_buf(),
            why: format!(
                "fp32 partitions of {world} ranks expected (partition_count), optimizer files of ranks {found:?} found"
            ),
        });
    }
    let module = a.root.get("module").ok_or_else(|| malformed(main, "no 'module' state dict"))?;
    let shapes = param_shapes(main, &a.root)?;
    let trainable = zero12_trainable(dir, &shapes, &ranks, paddings.as_deref(), world)?;
    let (mut tensors, frozen) = match cut {
        Cut::Master => (
            buffers(main, a, &module)?,
            a.root.get("frozen_param_shapes").map(|f| str_entries(&f)).unwrap_or_default(),
        ),
        Cut::State(_) => (Vec::new(), Vec::new()),
    };
    for (name, shape) in frozen {
        let shape =
            shape.as_usizes().ok_or_else(|| malformed(main, format!("frozen '{name}': bad shape")))?;
        let frag = a
            .root
            .get("frozen_param_fragments")
            .and_then(|f| f.get(&name))
            .ok_or_else(|| malformed(main, format!("no frozen fragment of '{name}'")))?;
        let (start, t) = tensor_at(main, a, &frag, &format!("frozen fragment '{name}'"))?;
        if t.shape != shape {
            return Err(malformed(
                main,
                format!("frozen '{name}': fragment of shape {:?}, expected {shape:?}", t.shape),
            ));
        }
        tensors.push((TensorInfo { name, dtype: t.dtype, shape }, Source::Whole(0, start, t)));
    }
    tensors.extend(trainable.into_iter().map(|(info, p)| (info, Source::Pieces(p))));
    let aliases = aliases_of(&mut tensors, shared_params(&a.root));
    let stage = stage.map_or("ZeRO-1/2".to_string(), |s| format!("ZeRO-{s}"));
    let plural = if world == 1 { "" } else { "s" };
    Ok(Ok((
        (tensors, aliases),
        format!("{} ({stage} optimizer partitions, {world} rank{plural})", cut.what()),
    )))
}

/// The module's float buffers (by `buffer_names`), in their own dtype.
fn buffers(main: &Path, a: &Archive, module: &Val) -> Result<Vec<(TensorInfo, Source)>, CheckpointError> {
    let names: Vec<String> = a
        .root
        .get("buffer_names")
        .and_then(|b| b.items())
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    let mut out = Vec::new();
    for (name, v) in str_entries(module) {
        if names.contains(&name) {
            let (start, t) = tensor_at(main, a, &v, &format!("buffer '{name}'"))?;
            out.push((
                TensorInfo { name, dtype: t.dtype, shape: t.shape.clone() },
                Source::Whole(0, start, t),
            ));
        }
    }
    Ok(out)
}

/// Every tensor of the module (the low-precision copy under bf16/fp16), each storage once.
fn module_weights(main: &Path, a: &Archive, module: &Val) -> Result<Listing, CheckpointError> {
    let mut tensors = Vec::new();
    let mut aliases = Vec::new();
    for (name, v) in str_entries(module) {
        let (start, t) = tensor_at(main, a, &v, &format!("module['{name}']"))?;
        let same = |s: &Source| {
            matches!(s, Source::Whole(_, st, o) if *st == start && o.key == t.key
            && o.offset == t.offset && o.shape == t.shape && o.stride == t.stride && o.dtype == t.dtype)
        };
        if let Some((owner, _)) = tensors.iter().find(|(_, s)| same(s)) {
            let owner: &TensorInfo = owner;
            aliases.push(Alias { name, owner: owner.name.clone() });
            continue;
        }
        let info = TensorInfo { name, dtype: t.dtype, shape: t.shape.clone() };
        tensors.push((info, Source::Whole(0, start, t)));
    }
    let shared =
        shared_params(&a.root).into_iter().filter(|(n, _)| !aliases.iter().any(|a| &a.name == n)).collect();
    aliases.extend(aliases_of(&mut tensors, shared));
    Ok((tensors, aliases))
}

/// `shared_params` (alias, owner) as aliases of listed tensors: an alias listed too is removed from
/// the tensors.
fn aliases_of(tensors: &mut Vec<(TensorInfo, Source)>, shared: Vec<(String, String)>) -> Vec<Alias> {
    let mut out = Vec::new();
    for (alias, owner) in shared {
        if alias == owner || !tensors.iter().any(|(i, _)| i.name == owner) {
            continue;
        }
        tensors.retain(|(i, _)| i.name != alias);
        out.push(Alias { name: alias, owner });
    }
    out
}

/// The tensors of a ZeRO-3 folder rebuilt from its fp32 partitions (see the module docs).
fn zero3_master(
    dir: &Path,
    models: &[(Option<usize>, PathBuf)],
    optims: &[(usize, PathBuf)],
    a: Archive,
    files: &mut Vec<PathBuf>,
    cut: Cut,
) -> Result<Listing, CheckpointError> {
    let main = files[0].clone();
    let module = &a.root.get("module").ok_or_else(|| malformed(&main, "no 'module' state dict"))?;
    // ZeRO-3: buffers, frozen parameters, trainable parameters, shared parameters.
    let world = models.len();
    if optims.len() != world || models.iter().enumerate().any(|(i, (dp, _))| *dp != Some(i)) {
        return Err(malformed(
            dir,
            format!(
                "ZeRO-3 needs model and optimizer states of ranks 0..{world}; found {} optimizer files",
                optims.len()
            ),
        ));
    }
    let (mut tensors, frozen) = match cut {
        Cut::Master => (
            buffers(&main, &a, module)?,
            a.root.get("frozen_param_shapes").map(|f| str_entries(&f)).unwrap_or_default(),
        ),
        Cut::State(_) => (Vec::new(), Vec::new()),
    };
    // Frozen parameters: each rank's fragment, concatenated, first numel kept.
    let mut rank_archives = vec![(main.clone(), a)];
    let mut rank_file = vec![0usize];
    if !frozen.is_empty() {
        for (_, p) in &models[1..] {
            let (_, ra) = open_archive(p, pickle_scan::allowed)?;
            rank_archives.push((p.clone(), ra));
            rank_file.push(files.len());
            files.push(p.clone());
        }
    }
    for (name, shape) in &frozen {
        let shape =
            shape.as_usizes().ok_or_else(|| malformed(&main, format!("frozen '{name}': bad shape")))?;
        let mut pieces = Vec::new();
        let mut dtype = None;
        for (r, (p, ra)) in rank_archives.iter().enumerate() {
            let frag = ra
                .root
                .get("frozen_param_fragments")
                .and_then(|f| f.get(name))
                .ok_or_else(|| malformed(p, format!("no frozen fragment of '{name}'")))?;
            let (start, t) = tensor_at(p, ra, &frag, &format!("frozen fragment '{name}'"))?;
            let fi = rank_file[r];
            dtype = Some(t.dtype);
            pieces.push((fi, start + (t.offset * t.dtype.size()) as u64, t.numel().unwrap_or(0)));
        }
        let dtype = dtype.unwrap_or(Dtype::F32);
        tensors.push((TensorInfo { name: name.clone(), dtype, shape }, Source::Pieces(pieces)));
    }
    let rank0 = &rank_archives[0].1;
    let shapes: Vec<(String, Vec<usize>)> = param_shapes(&main, &rank0.root)?.into_iter().flatten().collect();
    let shared = shared_params(&rank0.root);
    drop(rank_archives);

    // Each rank's flat groups: (file index, absolute byte offset, elements), concatenated.
    let mut flats: Vec<Vec<(usize, u64, usize)>> = Vec::new();
    for (r, p) in optims {
        let (_, oa) = open_archive(p, pickle_scan::allowed_deepspeed)?;
        let osd =
            oa.root.get("optimizer_state_dict").ok_or_else(|| malformed(p, "no optimizer_state_dict"))?;
        let count = osd.get("partition_count").and_then(|c| c.as_int());
        if count.is_some_and(|c| c != world as i64) {
            return Err(malformed(
                p,
                format!("partition_count {count:?} but {world} ranks' files in the folder"),
            ));
        }
        let fi = files.len();
        let mine = rank_flats(p, &oa, &osd, cut, true, fi, *r)?.ok_or_else(|| match cut {
            Cut::Master => malformed(p, "no fp32_flat_groups (not a ZeRO-3 optimizer state)"),
            Cut::State(_) => malformed(p, "no optimizer_state_dict.state"),
        })?;
        files.push(p.clone());
        flats.push(mine);
    }
    let avail: usize = flats[0].iter().map(|f| f.2).sum();
    if flats.iter().any(|f| f.iter().map(|x| x.2).sum::<usize>() != avail) {
        return Err(malformed(dir, "ranks' fp32 partitions differ in size"));
    }
    let mut offset = 0usize;
    for (name, shape) in shapes {
        let numel: usize = shape.iter().product();
        let part = numel.div_ceil(world);
        let mut pieces = Vec::new();
        for rank in &flats {
            pieces.extend(slice_groups(rank, offset, part).ok_or_else(|| {
                malformed(
                    dir,
                    format!("'{name}' reaches past the fp32 partitions ({avail} elements per rank)"),
                )
            })?);
        }
        offset += part;
        tensors.push((TensorInfo { name, dtype: Dtype::F32, shape }, Source::Pieces(pieces)));
    }
    if offset != avail {
        return Err(malformed(
            dir,
            format!("consumed {} of {} elements of the fp32 partitions", offset * world, avail * world),
        ));
    }
    let aliases = aliases_of(&mut tensors, shared);
    Ok((tensors, aliases))
}

impl Cut<'_> {
    /// How the copy read is named.
    fn what(&self) -> String {
        match self {
            Cut::Master => "fp32 master weights".into(),
            Cut::State(key) => format!("optimizer state '{key}'"),
        }
    }
}

/// One per-element state of the optimizer (Adam's `exp_avg`, `exp_avg_sq`) of every trainable
/// parameter of a DeepSpeed ZeRO-1/2/3 folder, as a [`super::Checkpoint`] whose tensors are named by
/// the parameters (f32, their shapes; `shared_params` as aliases): cut out of every rank's flat
/// partitions of that state exactly as the master weights are (the partitions of the state and of the
/// master weights have the same layout), streamed by range like them. For the optimizer-state API; an
/// error naming the folder when it holds no such state.
pub fn optimizer_state(dir: &Path, key: &str) -> Result<super::Checkpoint, CheckpointError> {
    let folder = DeepSpeedFolder::open_cut(dir, Cut::State(key))?;
    let members = folder.members();
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let step = folder.step.or_else(|| super::layout::step_from_name(&name));
    Ok(super::Checkpoint::from_sources(
        dir.to_path_buf(),
        super::Layout::DeepSpeed,
        step,
        vec![Box::new(folder)],
        members,
    ))
}

/// Elements `[offset, offset + n)` of a rank's concatenated flat groups, as pieces.
fn slice_groups(groups: &[(usize, u64, usize)], offset: usize, n: usize) -> Option<Vec<(usize, u64, usize)>> {
    let mut out = Vec::new();
    let (mut at, mut left, mut base) = (offset, n, 0usize);
    for &(fi, start, len) in groups {
        if left == 0 {
            break;
        }
        if at < base + len {
            let from = at - base;
            let take = left.min(len - from);
            out.push((fi, start + (from * 4) as u64, take));
            at += take;
            left -= take;
        }
        base += len;
    }
    (left == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_ranks() {
        assert_eq!(ranks("mp_rank_00_model_states.pt", "_model_states.pt"), Some((None, 0)));
        assert_eq!(
            ranks("zero_pp_rank_3_mp_rank_00_model_states.pt", "_model_states.pt"),
            Some((Some(3), 0))
        );
        assert_eq!(
            ranks("bf16_zero_pp_rank_1_mp_rank_02_optim_states.pt", "_optim_states.pt"),
            Some((Some(1), 2))
        );
        assert_eq!(ranks("model.pt", "_model_states.pt"), None);
    }

    #[test]
    fn slicing_across_groups() {
        let g = [(0, 0, 3), (0, 100, 5)];
        assert_eq!(slice_groups(&g, 2, 3), Some(vec![(0, 8, 1), (0, 100, 2)]));
        assert_eq!(slice_groups(&g, 7, 2), None);
    }
}
