//! The checkpoint handoff for workers without the `read_checkpoints` capability (the Python worker):
//! the caller reads the checkpoint with its own readers (every format the sidecar reads; pickle parsed,
//! never executed) and writes its tensors to a safetensors file in a private temporary folder, which the
//! worker reads and which is removed when the [`Handoff`] is dropped — after the call, or on any error.
//!
//! Float tensors are written as f32 (what the worker binds), streamed in chunks; integer and bool tensors
//! (`num_batches_tracked`) keep their dtype, so the worker's binding sees what the checkpoint holds.
//! A checkpoint that already is one safetensors file is handed over as it is. Workers loading the same
//! checkpoint at once share one converted file ([`shared`]).

use anyhow::{Context, Result};
use landscaped_formats::safetensors_file::SafetensorsWriter;
use landscaped_formats::{Checkpoint, ChunkValues, Dtype};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A safetensors file for the worker; the temporary folder (if one was made) goes when this is dropped.
pub struct Handoff {
    pub path: PathBuf,
    dir: Option<PathBuf>,
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A new folder only this user can read, under `$LANDSCAPED_HANDOFF_DIR` if set (workers on other nodes
/// need a folder on the shared filesystem: see docs/scale-out.md), else the system's temporary folder.
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static N: AtomicU64 = AtomicU64::new(0);
    let base = std::env::var_os("LANDSCAPED_HANDOFF_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let mut last = None;
    for _ in 0..16 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let d = base.join(format!(
            "landscaped-handoff-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => return Ok(d),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "cannot create a private folder in {}: {}",
        base.display(),
        last.map_or_else(String::new, |e| e.to_string())
    ))
}

fn st_dtype(d: Dtype) -> &'static str {
    match d {
        Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16 => "F32",
        Dtype::I64 => "I64",
        Dtype::I32 => "I32",
        Dtype::I16 => "I16",
        Dtype::I8 => "I8",
        Dtype::U8 => "U8",
        Dtype::Bool => "BOOL",
    }
}

/// A path named `name` in a new private folder (removed with the returned [`Handoff`]), for another file
/// a worker reads (e.g. the stability job's preconditioner scaling).
pub(crate) fn private_file(name: &str) -> Result<Handoff> {
    let dir = private_dir()?;
    Ok(Handoff { path: dir.join(name), dir: Some(dir) })
}

/// The checkpoint at `path` as a safetensors file the worker can read (see the module docs).
pub(crate) fn checkpoint_to_safetensors(path: &Path) -> Result<Handoff> {
    if path.is_file() && path.extension().is_some_and(|e| e == "safetensors") {
        return Ok(Handoff { path: path.to_path_buf(), dir: None });
    }
    let ck = Checkpoint::open(path)?;
    let dir = private_dir()?;
    let h = Handoff { path: dir.join("state.safetensors"), dir: Some(dir) };
    // Every name of the state dict: the tensors, then each alias (tied weights) as a copy of its
    // owner, so a worker loading by name finds the state dict as saved.
    let order: Vec<(String, usize)> = ck
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .chain(ck.aliases.iter().filter_map(|a| Some((a.name.clone(), ck.index_of(&a.owner)?))))
        .collect();
    let tensors: Vec<(String, &str, usize, Vec<usize>)> = order
        .iter()
        .map(|(name, i)| {
            let t = &ck.tensors[*i];
            let size = if t.dtype.is_float() { 4 } else { t.dtype.size() };
            (name.clone(), st_dtype(t.dtype), size, t.shape.clone())
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("source".to_string(), path.display().to_string());
    let mut w = SafetensorsWriter::create_typed(&h.path, &tensors, &meta)?;
    let mut wide = Vec::new();
    for (_, i) in &order {
        let (i, t) = (*i, &ck.tensors[*i]);
        if t.dtype.is_float() {
            ck.read_chunks(i, 4 << 20, |c| -> Result<()> {
                match c.values {
                    ChunkValues::F32(_) => w.write_raw(&c.values.le_bytes()),
                    ChunkValues::F64(v) => {
                        wide.clear();
                        wide.extend_from_slice(v);
                        w.write(&wide)
                    }
                }
            })
            .with_context(|| format!("checkpoint {}: tensor {}", path.display(), t.name))?;
        } else {
            w.write_raw(&ck.read_raw(i)?)?;
        }
    }
    w.finish(&h.path, false)?;
    Ok(h)
}

/// [`checkpoint_to_safetensors`] shared by concurrent callers: the workers of one job that load the same
/// checkpoint at the same time (N workers rebuilding a plane, 64 workers dialled in from a cluster) get
/// one converted file instead of N, kept while any of them holds it. A conversion in progress is waited
/// for, not repeated; a failed one is returned to that caller and retried by the next.
pub fn shared(path: &Path) -> Result<Arc<Handoff>> {
    type Slot = Arc<Mutex<Weak<Handoff>>>;
    static SLOTS: OnceLock<Mutex<HashMap<PathBuf, Slot>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let slot: Slot = {
        let mut slots = SLOTS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        // Forget the files nobody holds any more (the map stays as small as the jobs in flight).
        slots.retain(|_, s| {
            s.lock().map(|w| w.strong_count() > 0).unwrap_or(false) || Arc::strong_count(s) > 1
        });
        slots.entry(key).or_default().clone()
    };
    let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = held.upgrade() {
        return Ok(h);
    }
    let h = Arc::new(checkpoint_to_safetensors(path)?);
    *held = Arc::downgrade(&h);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_loads_of_one_checkpoint_share_one_file_removed_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let pt = dir.path().join("ck.pt");
        // A torch.save-like zip is what gets converted; a safetensors file would be handed over as is.
        let ok = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
            .args(["-c", "import torch,sys; torch.save({'w': torch.arange(6.).view(2,3)}, sys.argv[1])"])
            .arg(&pt)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let held: Vec<Arc<Handoff>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|_| s.spawn(|| shared(&pt).unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let file = held[0].path.clone();
        assert!(held.iter().all(|h| h.path == file), "one conversion for all four");
        assert!(file.exists());
        drop(held);
        assert!(!file.exists(), "removed once the last holder is done");
        let again = shared(&pt).unwrap();
        assert!(again.path.exists() && again.path != file, "a later load converts afresh");
    }

    #[test]
    fn tied_weights_are_handed_over_under_every_name() {
        // DeepSpeed ZeRO-2 of an embedding tied to the LM head: `head.weight` is an alias of
        // `emb.weight` in the checkpoint, and the worker gets both names with the same values.
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deepspeed/tied_zero2/global_step3");
        let ck = Checkpoint::open(&dir).unwrap();
        assert_eq!(ck.aliases.len(), 1);
        let h = checkpoint_to_safetensors(&dir).unwrap();
        let out = Checkpoint::open(&h.path).unwrap();
        assert_eq!(out.tensors.len(), ck.tensors.len() + 1);
        let (e, t) = (out.index_of("emb.weight").unwrap(), out.index_of("head.weight").unwrap());
        assert_ne!(e, t, "two tensors in the hand-off file");
        assert_eq!(out.read_raw(e).unwrap(), out.read_raw(t).unwrap());
        assert_eq!(out.read_raw(e).unwrap(), ck.read_raw(ck.index_of("emb.weight").unwrap()).unwrap());
    }

    #[test]
    fn the_private_folder_goes_with_the_handoff() {
        let d = private_dir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::write(d.join("x"), b"1").unwrap();
        drop(Handoff { path: d.join("x"), dir: Some(d.clone()) });
        assert!(!d.exists());
    }
}
