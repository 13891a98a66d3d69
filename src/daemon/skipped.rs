//! Paths the daemon passes over, each reported once: one warning naming the path and the cause, and
//! `landscaped_skipped_paths_total{run,reason}`. Reasons:
//!
//! | reason | what |
//! |---|---|
//! | `outside_root` | a symlink (at the top or inside a checkpoint folder) resolving outside the watched folders (unless `follow_symlinks = true`) |
//! | `not_a_file` | a FIFO, socket, device or folder where a checkpoint file was expected (at the top, or a file a checkpoint folder needs) |
//! | `symlink_loop` | a symlink that loops |
//! | `unreadable_folder` | a folder under a watch root that cannot be listed |
//! | `no_weights` | a `checkpoint-N/` (or `trainer_state.json`) folder still without weights after `incomplete_timeout` |
//! | `no_metadata` | a DCP folder with data files still without `.metadata` after `incomplete_timeout` |
//!
//! `outside_root` and `not_a_file` are also counted in `landscaped_not_a_file_total{run,kind}`, as
//! before. "Once" is per (run, path, reason) for the life of the process.

use crate::daemon::metrics::Metrics;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct Skipped {
    metrics: Arc<Metrics>,
    reported: Mutex<HashSet<(String, PathBuf, &'static str)>>,
}

impl Skipped {
    pub fn new(metrics: Arc<Metrics>) -> Skipped {
        Skipped { metrics, reported: Mutex::new(HashSet::new()) }
    }

    /// Reports `path` as skipped for `reason` (`detail`: what it is, for the log line); true the first
    /// time, false (nothing logged or counted) after.
    pub fn report(&self, run: &str, path: &Path, reason: &'static str, detail: &str) -> bool {
        let first = self.reported.lock().unwrap_or_else(|p| p.into_inner()).insert((
            run.to_string(),
            path.to_path_buf(),
            reason,
        ));
        if !first {
            return false;
        }
        self.metrics.skipped_paths.with_label_values(&[run, reason]).inc();
        if matches!(reason, "outside_root" | "not_a_file") {
            self.metrics.not_a_file.with_label_values(&[run, reason]).inc();
        }
        tracing::warn!(run, reason, "{}: skipped: {detail}", path.display());
        true
    }
}

/// Whether a canonical path lies inside one of `roots` (canonicalized now: a root may appear later).
pub(crate) fn inside_roots(roots: &[PathBuf], canon: &Path) -> bool {
    roots.iter().any(|root| root.canonicalize().is_ok_and(|root| canon.starts_with(root)))
}

/// The first symlink directly inside the checkpoint folder `dir` that resolves outside `roots`, with
/// its target. A checkpoint's files are plain names inside its folder (shards, DCP data files,
/// DeepSpeed states), so these are the only links a reader can follow out of the watched tree.
pub(crate) fn link_leaving(dir: &Path, roots: &[PathBuf]) -> Option<(PathBuf, PathBuf)> {
    let rd = std::fs::read_dir(dir).ok()?;
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        let p = e.path();
        // A dangling or looping link is not followed by anything (its open fails).
        if let Ok(target) = p.canonicalize()
            && !inside_roots(roots, &target)
        {
            return Some((p, target));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_once_per_path_and_reason() {
        let m = Arc::new(Metrics::new(&Default::default()).unwrap());
        let s = Skipped::new(m.clone());
        assert!(s.report("r", Path::new("/w/a"), "symlink_loop", "loops"));
        assert!(!s.report("r", Path::new("/w/a"), "symlink_loop", "loops"));
        assert!(s.report("r", Path::new("/w/b"), "not_a_file", "a FIFO"));
        assert_eq!(m.skipped_paths.with_label_values(&["r", "symlink_loop"]).get(), 1);
        assert_eq!(m.not_a_file.with_label_values(&["r", "not_a_file"]).get(), 1);
    }

    #[test]
    fn links_leaving_the_roots_are_found() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("w");
        let ck = root.join("checkpoint-1");
        std::fs::create_dir_all(&ck).unwrap();
        std::fs::create_dir(d.path().join("out")).unwrap();
        std::fs::write(d.path().join("out/secret"), b"x").unwrap();
        std::fs::write(ck.join("a.safetensors"), b"x").unwrap();
        std::os::unix::fs::symlink(ck.join("a.safetensors"), ck.join("b.safetensors")).unwrap();
        let roots = vec![root.clone()];
        assert_eq!(link_leaving(&ck, &roots), None);
        std::os::unix::fs::symlink(d.path().join("out/secret"), ck.join("model.safetensors")).unwrap();
        let (link, target) = link_leaving(&ck, &roots).unwrap();
        assert_eq!(link, ck.join("model.safetensors"));
        assert_eq!(target, d.path().join("out/secret").canonicalize().unwrap());
    }
}
