//! A checkpoint's identity on disk: its **stamp**, the size and modification time of every file it
//! consists of. The one definition, used everywhere a checkpoint is recognised again without reading
//! it: the daemon's watcher computes it and carries it with the queue item
//! ([`crate::daemon::queue::Item::stamp`]), the processor compares it once with what was seen, ingest
//! records it ([`crate::store::checkpoints::CheckpointRecord::files`]), checks after reading that the
//! files did not change meanwhile, and finds a reference checkpoint's own files still unchanged.
//!
//! The files of a checkpoint file are the file itself; of a checkpoint folder (HF, DCP / Megatron /
//! Lightning sharded, DeepSpeed), every regular file directly inside it, sorted by name: a superset of
//! the files any reader opens (weights, shards, index, `trainer_state.json`, `.metadata`, rank
//! states), so a change to any of them changes the stamp. Only `stat`s: nothing is opened.

use crate::store::checkpoints::FileStamp;
use std::path::Path;

/// The stamp of one checkpoint: its files, sorted by path.
pub(crate) type Stamp = Vec<FileStamp>;

/// The stamp of the checkpoint at `path` as it is now. Fails when `path` cannot be stat'ed or, for a
/// folder, listed ([`is_gone`] tells a path that no longer exists); a file inside a folder that
/// vanishes while it is listed is left out (the stamp then differs from the one before).
pub(crate) fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let one = |p: &Path, m: &std::fs::Metadata| FileStamp {
        path: p.to_string_lossy().into_owned(),
        size: m.len(),
        mtime_ns: mtime_ns(m),
    };
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(vec![one(path, &meta)]);
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(path)?.flatten() {
        if let Ok(m) = std::fs::metadata(e.path())
            && m.is_file()
        {
            out.push(one(&e.path(), &m));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
/// Whether a [`stamp`] error means the checkpoint is gone (rotated away).
pub(crate) fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

/// A file's modification time in nanoseconds since the Unix epoch.
pub(crate) fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// The newest modification time among the files of a stamp, in Unix seconds (0 for none).
pub(crate) fn newest_unix(files: &[FileStamp]) -> f64 {
    files.iter().map(|f| f.mtime_ns).max().map_or(0.0, |ns| ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_stamped_by_its_files_and_a_change_shows() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("checkpoint-5");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("model.safetensors"), b"0123456789").unwrap();
        std::fs::write(dir.join("trainer_state.json"), b"{}").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        let s = stamp(&dir).unwrap();
        let names: Vec<&str> = s.iter().map(|f| f.path.rsplit('/').next().unwrap()).collect();
        assert_eq!(names, ["model.safetensors", "trainer_state.json"]);
        assert_eq!(s[0].size, 10);
        // The same as stat(2) reports (std's SystemTime for the same inode).
        let m = std::fs::metadata(dir.join("model.safetensors")).unwrap();
        let st = m.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
        assert_eq!(s[0].mtime_ns, st);
        assert_eq!(stamp(&dir).unwrap(), s, "nothing changed: the same stamp");
        std::fs::write(dir.join("model.safetensors"), b"01234567890").unwrap();
        assert_ne!(stamp(&dir).unwrap(), s, "a grown file changes the stamp");
        let one = stamp(&dir.join("trainer_state.json")).unwrap();
        assert_eq!(one.len(), 1);
        let gone = stamp(&tmp.path().join("nope")).unwrap_err();
        assert!(is_gone(&gone));
    }
}
