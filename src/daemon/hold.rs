//! A job's checkpoint held before its workers start: every file of it hard-linked into a private folder
//! of the data dir (`landscaped-handoff-<pid>-hold-…/<its name>`, the checkpoint's own name kept, so a
//! factory that reads `config.json` beside the weights finds it), and the workers given that copy. The
//! trainer's rotation (HF `save_total_limit`, Lightning's `save_top_k`) unlinks its names, not the
//! files, so a Python worker that takes seconds to import still reads the checkpoint the job is about.
//! The folder goes when the job ends (and, left by a killed daemon, at the next start:
//! [`crate::daemon::temps`]).
//!
//! Hard links need the data dir and the checkpoint on one filesystem: otherwise (EXDEV, EPERM, a
//! filesystem without links) nothing is held and the job reads the checkpoint where it is, as before; a
//! checkpoint deleted meanwhile is then `skipped` ([`crate::daemon::jobrunner`]). A checkpoint already
//! gone is [`HoldError::Gone`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The held copy of a checkpoint; removed on drop.
pub(crate) struct Held {
    root: Option<PathBuf>,
    /// What the job reads: the held copy, or the checkpoint itself when it could not be held.
    pub path: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(r) = &self.root {
            let _ = std::fs::remove_dir_all(r);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HoldError {
    #[error("{0}: the checkpoint is gone (deleted or rotated away before its job started)")]
    Gone(PathBuf),
}

/// Holds `checkpoint` (a file or a folder) by hard links in `data_dir`; falls back to the checkpoint's
/// own path (one debug line) where links can't be made.
pub(crate) fn hold(data_dir: &Path, checkpoint: &Path) -> Result<Held, HoldError> {
    if std::fs::symlink_metadata(checkpoint).is_err() {
        return Err(HoldError::Gone(checkpoint.to_path_buf()));
    }
    match link_tree(data_dir, checkpoint) {
        Ok((root, path)) => Ok(Held { root: Some(root), path }),
        Err((root, e)) => {
            if let Some(r) = root {
                let _ = std::fs::remove_dir_all(r);
            }
            if e.kind() == std::io::ErrorKind::NotFound && std::fs::symlink_metadata(checkpoint).is_err() {
                return Err(HoldError::Gone(checkpoint.to_path_buf()));
            }
            tracing::debug!(
                path = %checkpoint.display(),
                "checkpoint not held (no hard links into the data dir: {e}); the job reads it in place"
            );
            Ok(Held { root: None, path: checkpoint.to_path_buf() })
        }
    }
}

type LinkErr = (Option<PathBuf>, std::io::Error);

fn link_tree(data_dir: &Path, checkpoint: &Path) -> Result<(PathBuf, PathBuf), LinkErr> {
    use std::os::unix::fs::DirBuilderExt;
    static N: AtomicU64 = AtomicU64::new(0);
    let name = checkpoint
        .file_name()
        .ok_or_else(|| (None, std::io::Error::other("the checkpoint path has no file name")))?;
    let root = data_dir.join(format!(
        "landscaped-handoff-{}-hold-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&root).map_err(|e| (None, e))?;
    let dest = root.join(name);
    link_entry(checkpoint, &dest).map_err(|e| (Some(root.clone()), e))?;
    Ok((root, dest))
}

/// Hard-links a file, or a folder's files (recursively, sub-folders created); symlinks are followed
/// to what they name.
fn link_entry(src: &Path, dest: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(src)?;
    if meta.is_dir() {
        std::fs::create_dir(dest)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            link_entry(&entry.path(), &dest.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::hard_link(src, dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_survives_its_rotation_and_goes_with_the_job() {
        let d = tempfile::tempdir().unwrap();
        let ck = d.path().join("out/checkpoint-10");
        std::fs::create_dir_all(ck.join("sub")).unwrap();
        std::fs::write(ck.join("model.safetensors"), b"weights").unwrap();
        std::fs::write(ck.join("sub/config.json"), b"{}").unwrap();
        let data = d.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let held = hold(&data, &ck).unwrap();
        assert!(held.path.ends_with("checkpoint-10") && held.path != ck);
        std::fs::remove_dir_all(&ck).unwrap();
        assert_eq!(std::fs::read(held.path.join("model.safetensors")).unwrap(), b"weights");
        assert_eq!(std::fs::read(held.path.join("sub/config.json")).unwrap(), b"{}");
        let root = held.root.clone().unwrap();
        drop(held);
        assert!(!root.exists());
        assert!(matches!(hold(&data, &ck), Err(HoldError::Gone(_))));
    }
}
