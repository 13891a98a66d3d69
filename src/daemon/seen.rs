//! What the daemon has already dealt with, per run and canonical checkpoint path, with the checkpoint's
//! [`crate::stamp`] at that moment (size and modification time of every file). A checkpoint whose files still
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
