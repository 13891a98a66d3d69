//! What the daemon has already dealt with, per run and canonical checkpoint path, with the size and
//! modification time of every file of the checkpoint at that moment. A checkpoint whose files still
//! match is not processed again, across restarts too (kept in the store, tree `daemon_seen`); one
//! that changed (rewritten in place) is. Failures are recorded as well, so a garbage file is counted
//! once, not at every scan, until it changes.

use crate::store::checkpoints::FileStamp;
use crate::store::{Record, Store, keys};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeenRecord {
    pub run: String,
    pub path: String,
    pub files: Vec<FileStamp>,
    pub step: Option<u64>,
    /// `ok`, or the error kind (`malformed`, `refused`, `incomplete`, `ingest`, ...).
    pub outcome: String,
    pub unix: u64,
}

impl Record for SeenRecord {
    const TREE: &'static str = "daemon_seen";
    const SCHEMA: u32 = 1;
}

pub fn key(run: &str, path: &Path) -> Vec<u8> {
    let mut k = keys::run(run);
    k.extend_from_slice(path.as_os_str().as_encoded_bytes());
    k
}

pub fn get(store: &Store, run: &str, path: &Path) -> crate::store::Result<Option<SeenRecord>> {
    store.get(&key(run, path))
}

/// Records `rec` for `path` (keyed by the path's bytes: `rec.path` is for people, lossy when the
/// path is not UTF-8).
pub fn put(store: &Store, path: &Path, rec: &SeenRecord) -> crate::store::Result<()> {
    store.put(&key(&rec.run, path), rec)
}

/// The files of a checkpoint as they are now: the file itself, or every regular file directly inside
/// an HF folder (sorted by name). None if the path is gone.
pub fn stamp(path: &Path) -> Option<Vec<FileStamp>> {
    let one = |p: &Path, m: &std::fs::Metadata| FileStamp {
        path: p.to_string_lossy().into_owned(),
        size: m.len(),
        mtime_ns: mtime_ns(m),
    };
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some(vec![one(path, &meta)]);
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(path).ok()?.flatten() {
        if let Ok(m) = std::fs::metadata(e.path())
            && m.is_file()
        {
            out.push(one(&e.path(), &m));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Some(out)
}

pub fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// The newest modification time among the stamps, in Unix seconds.
pub fn newest_unix(files: &[FileStamp]) -> f64 {
    files.iter().map(|f| f.mtime_ns).max().map_or(0.0, |ns| ns as f64 / 1e9)
}
