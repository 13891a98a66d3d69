//! The checkpoint handoff for workers without the `read_checkpoints` capability (the Python worker):
//! the caller reads the checkpoint with its own readers (every format the sidecar reads; pickle parsed,
//! never executed) and writes its tensors to a safetensors file in a private temporary folder, which the
//! worker reads and which is removed when the [`Handoff`] is dropped — after the call, or on any error.
//!
//! Float tensors are written as f32 (what the worker binds), streamed in chunks; integer and bool tensors
//! (`num_batches_tracked`) keep their dtype, so the worker's binding sees what the checkpoint holds.
//! A checkpoint that already is one safetensors file is handed over as it is.

use crate::checkpoint::{Checkpoint, ChunkValues, Dtype};
use crate::trajectory::pca::DirectionWriter;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The checkpoint at `path` as a safetensors file the worker can read (see the module docs).
pub fn checkpoint_to_safetensors(path: &Path) -> Result<Handoff> {
    if path.is_file() && path.extension().is_some_and(|e| e == "safetensors") {
        return Ok(Handoff { path: path.to_path_buf(), dir: None });
    }
    let ck = Checkpoint::open(path)?;
    let dir = private_dir()?;
    let h = Handoff { path: dir.join("state.safetensors"), dir: Some(dir) };
    let tensors: Vec<(String, &str, usize, Vec<usize>)> = ck
        .tensors
        .iter()
        .map(|t| {
            let size = if t.dtype.is_float() { 4 } else { t.dtype.size() };
            (t.name.clone(), st_dtype(t.dtype), size, t.shape.clone())
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("source".to_string(), path.display().to_string());
    let mut w = DirectionWriter::create_typed(&h.path, &tensors, &meta)?;
    let mut wide = Vec::new();
    for (i, t) in ck.tensors.iter().enumerate() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
