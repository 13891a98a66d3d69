//! Checkpoint layouts on disk, the step rule, and finding checkpoints under a folder.
//!
//! Layouts:
//! - a single file: `.safetensors`, or a torch zip (`.pt`, `.pth`, `.bin`); Lightning `.ckpt`;
//! - a Hugging Face folder (`checkpoint-N/`, or any folder holding `trainer_state.json` or a weights
//!   index) with `model.safetensors`, `model.safetensors.index.json` + shards, `pytorch_model.bin`, or
//!   `pytorch_model.bin.index.json` + shards;
//! - a torch.distributed.checkpoint folder (any folder holding `.metadata`; see [`super::dcp`]):
//!   FSDP / torchtitan (`step-N/`), Lightning and Fabric `"sharded"` (`epoch=E-step=S.ckpt/` with
//!   `meta.pt`), Megatron-LM `torch_dist` (`iter_NNNNNNN/`, beside `latest_checkpointed_iteration.txt`,
//!   with `common.pt` / `metadata.json`). A folder with `.distcp` files but no `.metadata` yet is
//!   being written: neither listed nor searched;
//! - a DeepSpeed folder (any folder holding `*mp_rank_*_model_states.pt`, normally `global_stepN/`
//!   beside the `latest` file; see [`super::deepspeed`]).
//!
//! The markers `latest`, `latest_checkpointed_iteration.txt` (and DeepSpeed's `zero_to_fp32.py`)
//! are never checkpoints. Files of formats landscaped does not read (`.gguf`, `.h5`, `.keras`,
//! `.msgpack`, `.npz`, `.onnx`, `.pdparams`, `.nemo`) are listed so that they are reported
//! (`unsupported`), never ignored silently.
//!
//! The step rule (first that applies):
//! 1. HF folder: `global_step` in `trainer_state.json`, else the `N` of `checkpoint-N`.
//! 2. Torch file whose dict has an integer `global_step` at the top level (Lightning): that.
//!    A DCP folder with `meta.pt` (Lightning / Fabric sharded): its integer `global_step`, else its
//!    `step`. A DeepSpeed folder: `global_steps` in its model states. A Megatron folder:
//!    the `N` of `iter_N`.
//! 3. Any file (or folder) name containing `step=S` (Lightning's `epoch=E-step=S.ckpt`): `S`.
//! 4. Otherwise the last run of digits in the file name without its extension
//!    (`ckpt_000120.pt` → 120, `step-300.safetensors` → 300); none → no step.
//!
//! Trainer side files (`training_args.bin`, `optimizer.pt`, `scheduler.pt`, `scaler.pt`,
//! `rng_state*.pth`), the contents of a `checkpoint-N/` folder that has no weights yet, and a model
//! export folder (`model.pt` + `eval.safetensors` + `landscaped.toml`, written by
//! examples/landscaped_export.py, often into the checkpoint folder) are never listed as checkpoints. Neither are temp files: names starting with `.` or `tmp`, and names ending
//! in `.tmp`, `.temp`, `.part`, `.partial`, `.swp`, `.lock` or `~`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::CheckpointError;

/// A path's file name as text: a name that is not UTF-8 has its bad bytes replaced (U+FFFD), which
/// keeps its extension and step digits, so such a checkpoint is recognized and read like any other
/// (the path itself is used as it is for every file operation).
pub fn name_of(path: &Path) -> std::borrow::Cow<'_, str> {
    path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
}

/// File extensions that can hold a checkpoint.
pub(crate) const CHECKPOINT_EXTENSIONS: [&str; 5] = ["safetensors", "pt", "pth", "bin", "ckpt"];

/// Weight files an HF folder may hold, in order of preference.
pub(crate) const HF_WEIGHTS: [&str; 4] = [
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
];

/// Files beside a DCP folder's data that belong to the checkpoint (Lightning's `meta.pt`, Megatron's
/// `common.pt` and `metadata.json`).
pub(crate) const DCP_SIDE_FILES: [&str; 3] = ["meta.pt", "common.pt", "metadata.json"];

/// Extensions of checkpoint formats landscaped does not read, with what they are.
const FOREIGN_FORMATS: [(&str, &str); 8] = [
    ("gguf", "GGUF (llama.cpp) file"),
    ("h5", "HDF5 (Keras / TensorFlow) file"),
    ("keras", "Keras archive"),
    ("msgpack", "Flax msgpack checkpoint"),
    ("npz", "NumPy .npz archive"),
    ("onnx", "ONNX model"),
    ("pdparams", "PaddlePaddle checkpoint"),
    ("nemo", "NeMo archive (a tar; unpack it and point landscaped at the weights inside)"),
];

/// If a file name has the extension of a checkpoint format landscaped does not read, say which.
pub(crate) fn foreign_format(name: &str) -> Option<String> {
    let ext = name.rsplit_once('.')?.1;
    FOREIGN_FORMATS
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, what)| format!("{what}: a checkpoint format landscaped does not read"))
}

/// Whether `dir` is a checkpoint folder of any layout: HF, DCP (incl. Megatron, Lightning sharded)
/// or DeepSpeed.
pub fn is_checkpoint_folder(dir: &Path) -> bool {
    let name = &name_of(dir);
    !is_temp_name(name)
        && (is_hf_folder(dir) || super::dcp::is_dcp_folder(dir) || super::deepspeed::is_deepspeed_folder(dir))
}

/// Whether a DCP folder is a Megatron `iter_N` folder (by name, or by the marker beside it).
fn is_megatron_dir(dir: &Path) -> bool {
    let name = &name_of(dir);
    name.strip_prefix("iter_").is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
        || dir.parent().is_some_and(|p| p.join("latest_checkpointed_iteration.txt").is_file())
}

/// The layout and step of a DCP folder (see the step rule).
pub(crate) fn dcp_layout_and_step(dir: &Path) -> (super::Layout, Option<u64>) {
    let name = &name_of(dir);
    if is_megatron_dir(dir) {
        return (super::Layout::Megatron, step_from_name(name));
    }
    let meta = dir.join("meta.pt");
    if let Ok(file) = super::regular::open_regular(&meta)
        && let Ok(m) = file.metadata()
        && let Ok(a) = super::torch_item::Archive::open(&file, &meta, 0, m.len(), super::pickle_scan::allowed)
    {
        let int = |k: &str| a.root.get(k).and_then(|v| v.as_int()).and_then(|s| u64::try_from(s).ok());
        if let Some(s) = int("global_step").or_else(|| int("step")) {
            return (super::Layout::Dcp, Some(s));
        }
    }
    (super::Layout::Dcp, step_from_name(name))
}

/// How deep [`find_checkpoints`] descends below the folder it is given.
const MAX_DEPTH: usize = 6;

/// The step encoded in a file or folder name (rules 3 and 4 of the step rule, plus `checkpoint-N`).
pub fn step_from_name(name: &str) -> Option<u64> {
    if let Some(i) = name.rfind("step=") {
        let digits: String = name[i + 5..].chars().take_while(|c| c.is_ascii_digit()).collect();
        return digits.parse().ok();
    }
    if let Some(rest) = name.strip_prefix("checkpoint-")
        && !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_digit())
    {
        return rest.parse().ok();
    }
    let stem = match name.rsplit_once('.') {
        Some((stem, ext)) if CHECKPOINT_EXTENSIONS.contains(&ext) => stem,
        _ => name,
    };
    let bytes = stem.as_bytes();
    let end = bytes.iter().rposition(|b| b.is_ascii_digit())? + 1;
    let start = bytes[..end].iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |i| i + 1);
    stem[start..end].parse().ok()
}

/// The file examples/landscaped_export.py writes last into a model export folder: a folder holding it
/// is the model contract for slices, not a checkpoint.
pub(crate) const MODEL_EXPORT_MARKER: &str = "landscaped.toml";

/// Whether `dir` is a model export folder (it holds [`MODEL_EXPORT_MARKER`]).
pub(crate) fn is_model_export_dir(dir: &Path) -> bool {
    dir.join(MODEL_EXPORT_MARKER).is_file()
}

/// Whether `path` lies in a model export folder (its parent holds [`MODEL_EXPORT_MARKER`]).
pub fn in_model_export(path: &Path) -> bool {
    path.parent().is_some_and(is_model_export_dir)
}

/// Whether a name is a temp file or folder (never a checkpoint).
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with("tmp")
        || name.ends_with('~')
        || [".tmp", ".temp", ".part", ".partial", ".swp", ".lock"].iter().any(|s| name.ends_with(s))
}

/// Files trainers write beside the weights that are not model checkpoints (HF Trainer's pickled
/// arguments, optimizer / scheduler / RNG / AMP scaler state).
pub(crate) fn is_trainer_side_file(name: &str) -> bool {
    matches!(name, "training_args.bin" | "optimizer.pt" | "optimizer.bin" | "scheduler.pt" | "scaler.pt")
        || (name.starts_with("rng_state") && name.ends_with(".pth"))
}

/// Whether a file name looks like a checkpoint file (extension, not temp, not a trainer's side file).
/// Files of a foreign format ([`foreign_format`]) count too, so that they are reported.
pub fn is_checkpoint_file_name(name: &str) -> bool {
    !is_temp_name(name)
        && !is_trainer_side_file(name)
        && (name.rsplit_once('.').is_some_and(|(_, ext)| CHECKPOINT_EXTENSIONS.contains(&ext))
            || foreign_format(name).is_some())
}

/// A folder that is, or is becoming, an HF checkpoint (`checkpoint-N`, or holding
/// `trainer_state.json`): never searched for loose files, even before its weights exist.
fn is_hf_like_folder(dir: &Path) -> bool {
    let name = &name_of(dir);
    layout_checkpoint_name(name) || dir.join("trainer_state.json").is_file() || super::dcp::is_dcp_like(dir)
}

fn layout_checkpoint_name(name: &str) -> bool {
    name.strip_prefix("checkpoint-").is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
}

/// Whether `dir` is an HF checkpoint folder: it holds one of [`HF_WEIGHTS`] and is named
/// `checkpoint-N`, holds `trainer_state.json`, or holds a weights index.
pub fn is_hf_folder(dir: &Path) -> bool {
    let name = &name_of(dir);
    if is_temp_name(name) {
        return false;
    }
    let has = |f: &str| dir.join(f).is_file();
    let weights = HF_WEIGHTS.iter().any(|w| has(w));
    weights
        && (name.starts_with("checkpoint-")
            || has("trainer_state.json")
            || has("model.safetensors.index.json")
            || has("pytorch_model.bin.index.json"))
}

/// Largest `trainer_state.json` / index file read (they are small; log history can grow).
pub(crate) const MAX_JSON: u64 = 256 * 1024 * 1024;

/// Read a small JSON file with a size bound.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, CheckpointError> {
    super::parse_log::record("json", path);
    use std::io::Read;
    let io = |source| CheckpointError::Io { path: path.to_path_buf(), source };
    let file = super::regular::open_regular(path)?;
    let mut buf = Vec::new();
    file.take(MAX_JSON + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > MAX_JSON {
        return Err(CheckpointError::Malformed {
            path: path.to_path_buf(),
            why: format!("larger than {MAX_JSON} bytes"),
        });
    }
    serde_json::from_slice(&buf).map_err(|e| CheckpointError::Malformed {
        path: path.to_path_buf(),
        why: format!("not valid JSON: {e}"),
    })
}

/// The step of an HF folder: `global_step` in trainer_state.json, else the folder name.
pub(crate) fn hf_step(dir: &Path) -> Option<u64> {
    let state = read_json(&dir.join("trainer_state.json")).ok();
    hf_step_of(state.as_ref(), dir)
}

/// [`hf_step`] from an already parsed `trainer_state.json` (None: none or unreadable).
pub(crate) fn hf_step_of(state: Option<&serde_json::Value>, dir: &Path) -> Option<u64> {
    state
        .and_then(|v| v.get("global_step"))
        .and_then(|s| s.as_u64())
        .or_else(|| step_from_name(&name_of(dir)))
}

/// The shard file names an index lists (`weight_map` values), deduplicated, sorted. Names must be
/// plain file names inside the folder.
pub(crate) fn index_shards(index: &Path) -> Result<Vec<(String, Vec<String>)>, CheckpointError> {
    let v = read_json(index)?;
    let malformed = |why: String| CheckpointError::Malformed { path: index.to_path_buf(), why };
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| malformed("no weight_map object".into()))?;
    let mut shards: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (tensor, shard) in map {
        let shard =
            shard.as_str().ok_or_else(|| malformed(format!("weight_map['{tensor}'] is not a string")))?;
        if shard.is_empty() || shard.contains('/') || shard.contains('\\') || shard == "." || shard == ".." {
            return Err(malformed(format!(
                "weight_map['{tensor}'] names {shard:?}, not a file in the folder"
            )));
        }
        shards.entry(shard.to_string()).or_default().push(tensor.clone());
    }
    Ok(shards.into_iter().collect())
}

/// The step used to sort [`find_checkpoints`]'s result (cheap: names and trainer_state.json only).
fn sort_step(path: &Path) -> Option<u64> {
    if path.is_dir() { hf_step(path) } else { step_from_name(&name_of(path)) }
}

/// Every checkpoint under `dir` (checkpoint files and checkpoint folders of every layout, descending into other folders up
/// to a few levels, not following symlinked folders), sorted by step then name; checkpoints without a
/// step come last. Temp files and non-checkpoint files are skipped; a symlink (e.g. `last.ckpt`) to a
/// file that is listed anyway is dropped so nothing is processed twice. `dir` itself may be an HF
/// folder. [`scan_checkpoints`] also says what was passed over and why.
pub fn find_checkpoints(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    scan_checkpoints(dir).map(|s| s.found)
}

/// A path [`scan_checkpoints`] passed over that a user may have meant as (part of) a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub path: PathBuf,
    /// `symlink_loop` or `unreadable_folder`.
    pub reason: &'static str,
    pub detail: String,
}

/// What [`scan_checkpoints`] found under a folder.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// The checkpoints, as [`find_checkpoints`] returns them.
    pub found: Vec<PathBuf>,
    /// Paths passed over: a symlink that loops, a folder that cannot be listed.
    pub skipped: Vec<Skip>,
    /// Folders that are becoming checkpoints (`checkpoint-N/` or a folder with `trainer_state.json`
    /// and no weights yet, a DCP folder with `.distcp` files and no `.metadata` yet): not searched;
    /// one that stays so is reported by the daemon.
    pub pending: Vec<PathBuf>,
}

/// [`find_checkpoints`], plus the paths passed over and the folders still being written.
pub fn scan_checkpoints(dir: &Path) -> Result<Scan, CheckpointError> {
    if is_checkpoint_folder(dir) {
        return Ok(Scan { found: vec![dir.to_path_buf()], ..Default::default() });
    }
    if is_hf_like_folder(dir) || is_model_export_dir(dir) {
        // An HF folder whose weights are not written yet, or a model export.
        let pending = if is_model_export_dir(dir) { Vec::new() } else { vec![dir.to_path_buf()] };
        return Ok(Scan { pending, ..Default::default() });
    }
    let mut scan = Scan::default();
    let top =
        std::fs::read_dir(dir).map_err(|source| CheckpointError::Io { path: dir.to_path_buf(), source })?;
    walk(top, 0, &mut scan);
    let mut found = std::mem::take(&mut scan.found);

    // Drop symlinks whose target is also listed.
    let mut real: HashSet<PathBuf> = HashSet::new();
    for p in &found {
        if !p.is_symlink() {
            real.insert(p.canonicalize().unwrap_or_else(|_| p.clone()));
        }
    }
    let mut seen: HashSet<PathBuf> = HashSet::new();
    found.retain(|p| {
        if !p.is_symlink() {
            return true;
        }
        match p.canonicalize() {
            Ok(target) => !real.contains(&target) && seen.insert(target),
            Err(_) => false, // dangling
        }
    });

    let mut keyed: Vec<(Option<u64>, PathBuf)> = found.into_iter().map(|p| (sort_step(&p), p)).collect();
    keyed.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.1.cmp(&b.1)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(&b.1),
    });
    scan.found = keyed.into_iter().map(|(_, p)| p).collect();
    Ok(scan)
}

fn walk(entries: std::fs::ReadDir, depth: usize, scan: &mut Scan) {
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = &*name.to_string_lossy();
        if is_temp_name(name) {
            continue;
        }
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            if is_checkpoint_folder(&path) {
                scan.found.push(path);
            } else if is_model_export_dir(&path) {
            } else if is_hf_like_folder(&path) {
                scan.pending.push(path);
            } else if depth < MAX_DEPTH {
                match std::fs::read_dir(&path) {
                    Ok(sub) => walk(sub, depth + 1, scan),
                    Err(e) => scan.skipped.push(Skip {
                        path,
                        reason: "unreadable_folder",
                        detail: format!("a folder that cannot be listed ({e}): its checkpoints are not seen"),
                    }),
                }
            }
        } else if ft.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && is_checkpoint_file_name(name) => scan.found.push(path),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => scan.skipped.push(Skip {
                    path,
                    reason: "symlink_loop",
                    detail: "a symlink that loops (too many levels of symbolic links)".into(),
                }),
                _ => {} // a dangling link (rotation) or a symlinked folder (not followed)
            }
        } else if ft.is_file() && is_checkpoint_file_name(name) {
            scan.found.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_export_folders_are_not_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        std::fs::write(run.join("step-10.safetensors"), b"x").unwrap();
        let export = run.join("landscaped");
        std::fs::create_dir(&export).unwrap();
        std::fs::write(export.join("model.pt"), b"x").unwrap();
        std::fs::write(export.join("eval.safetensors"), b"x").unwrap();
        // Before the marker is written the files look like checkpoints; after, the folder is skipped.
        assert_eq!(find_checkpoints(run).unwrap().len(), 3);
        std::fs::write(export.join(MODEL_EXPORT_MARKER), b"loss = \"cross_entropy\"\n").unwrap();
        assert_eq!(find_checkpoints(run).unwrap(), vec![run.join("step-10.safetensors")]);
        assert!(find_checkpoints(&export).unwrap().is_empty());
        assert!(
            in_model_export(&export.join("model.pt")) && !in_model_export(&run.join("step-10.safetensors"))
        );
    }

    #[test]
    fn step_rule_from_names() {
        assert_eq!(step_from_name("ckpt_000120.pt"), Some(120));
        assert_eq!(step_from_name("step-300.safetensors"), Some(300));
        assert_eq!(step_from_name("epoch=3-step=1200.ckpt"), Some(1200));
        assert_eq!(step_from_name("epoch=3-step=1200-v1.ckpt"), Some(1200));
        assert_eq!(step_from_name("checkpoint-500"), Some(500));
        assert_eq!(step_from_name("model.safetensors"), None);
        assert_eq!(step_from_name("last.ckpt"), None);
        assert_eq!(step_from_name("run2_ep5_it77.pth"), Some(77));
        assert_eq!(step_from_name("x99999999999999999999999.pt"), None);
    }

    #[test]
    fn temp_names() {
        assert!(is_temp_name(".ckpt_1.pt"));
        assert!(is_temp_name("ckpt_1.pt.tmp"));
        assert!(is_temp_name("tmp-checkpoint-5"));
        assert!(!is_checkpoint_file_name("notes.txt"));
        assert!(is_checkpoint_file_name("epoch=0-step=10.ckpt"));
        assert!(!is_checkpoint_file_name("training_args.bin"));
        assert!(!is_checkpoint_file_name("rng_state_3.pth"));
    }
}
