//! The store: the only code that touches sled.
//!
//! One sled tree per record kind; values are rmp-serde encoded with named fields inside an envelope that
//! carries the record's schema version, so a field added later (with `#[serde(default)]`) doesn't break
//! old records. Keys are built by [`keys`] with big-endian integers, so runs and steps iterate in order.
//! Writes that belong together go through a [`Batch`], committed atomically across trees.
//!
//! Health: a failed write (disk full, I/O error) marks the store unhealthy with its cause
//! ([`Store::health`]); reads go on. sled keeps a failed write's error and refuses every later one, so
//! [`Store::try_recover`] reopens the database in place (every clone sees the new handle) and probes a
//! write; the daemon calls it until it succeeds. Each store has an id (`<data_dir>/store_id`, written
//! when the store is created) so a client can tell which store a daemon serves; `store_id.dir` records
//! the directory it was made for (device, inode, canonical path), so a copied data dir is told apart
//! from its original and gets its own id when it is opened ([`check_store_id`]).

pub mod checkpoints;
pub mod keys;
pub mod optimizer;
pub mod run_step;
pub mod sharpness;
pub mod slices;
pub mod spectra;
pub mod stability;
pub mod trajectory;

pub use run_step::RunStepRecord;
use serde::{Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// A kind of record: which tree it lives in and its current schema version.
pub trait Record: Serialize + DeserializeOwned {
    /// The sled tree holding records of this kind.
    const TREE: &'static str;
    /// Bumped when the record's meaning changes; readers may use it to migrate.
    const SCHEMA: u32;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {0} is locked by another process (is `landscaped daemon` running? query it with --endpoint, or stop it)"
    )]
    Locked(PathBuf),
    #[error("store at {path}: {source}")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("store: record in tree {tree} could not be decoded: {why}")]
    Decode { tree: &'static str, why: String },
    #[error("store: record for tree {tree} could not be encoded: {why}")]
    Encode { tree: &'static str, why: String },
    #[error("store at {path}: closed after a failed write, and reopening it failed: {why}")]
    Closed { path: PathBuf, why: String },
}

impl StoreError {
    /// True for errors of the environment (disk full, I/O, a closed or locked store), which a retry
    /// may cure; false for a record that cannot be encoded or decoded.
    pub(crate) fn is_environment(&self) -> bool {
        !matches!(self, StoreError::Decode { .. } | StoreError::Encode { .. })
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Serialize, serde::Deserialize)]
struct Envelope<T> {
    schema: u32,
    value: T,
}

#[derive(serde::Deserialize)]
struct SchemaOnly {
    schema: u32,
}

/// An open store. Cheap to clone: clones share one handle (and its health).
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    id: String,
    /// None only while a reopen failed; every operation takes the read lock, a reopen the write lock.
    db: RwLock<Option<sled::Db>>,
    /// The cause of the last failed write, until a write (or a recovery probe) succeeds.
    unhealthy: Mutex<Option<String>>,
}

/// The name of the file in the data dir that holds the store's id.
pub(crate) const STORE_ID_FILE: &str = "store_id";
/// Beside it: the directory the id was made for (`dir DEV:INO CANONICAL_PATH`), to catch a copy.
pub(crate) const STORE_DIR_FILE: &str = "store_id.dir";

impl Store {
    /// Opens (creating if needed) the store in `dir`. Another process holding it gives
    /// [`StoreError::Locked`].
    pub fn open(dir: &Path) -> Result<Store> {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(StoreError::Sled { path: dir.to_path_buf(), source: sled::Error::Io(e) });
        }
        let db = open_db(dir)?;
        let id = ensure_store_id(dir)
            .map_err(|e| StoreError::Sled { path: dir.to_path_buf(), source: sled::Error::Io(e) })?;
        Ok(Store {
            shared: Arc::new(Shared {
                path: dir.to_path_buf(),
                id,
                db: RwLock::new(Some(db)),
                unhealthy: Mutex::new(None),
            }),
        })
    }

    /// The store's id, written once when the store was created (`<data_dir>/store_id`).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// None when the last write succeeded; else the cause of the failure.
    pub(crate) fn health(&self) -> Option<String> {
        self.shared.unhealthy.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_health(&self, cause: Option<String>) {
        *self.shared.unhealthy.lock().unwrap_or_else(|p| p.into_inner()) = cause;
    }

    /// After a failed write: reopens the database (sled refuses every write after one failed) and
    /// probes a write. Ok once writes succeed again (the store is healthy then).
    pub(crate) fn try_recover(&self) -> Result<()> {
        let path = &self.shared.path;
        let mut guard = self.shared.db.write().unwrap_or_else(|p| p.into_inner());
        // Drop the old handle first: it holds the lock file.
        if let Some(old) = guard.take() {
            let _ = old.flush();
            drop(old);
        }
        let res = open_db(path).and_then(|db| {
            let probe = match crate::faults::injected("store_write") {
                Some(e) => Err(sled::Error::Io(e)),
                None => db
                    .open_tree("store_health")
                    .and_then(|t| t.insert("probe", &unix_now().to_be_bytes()[..]))
                    .and_then(|_| db.flush())
                    .map(|_| ()),
            };
            *guard = Some(db);
            probe.map_err(|source| StoreError::Sled { path: path.clone(), source })
        });
        drop(guard);
        match &res {
            Ok(()) => {
                if self.health().is_some() {
                    tracing::info!("store at {}: writes succeed again", path.display());
                }
                self.set_health(None);
            }
            Err(e) => self.set_health(Some(e.to_string())),
        }
        res
    }

    /// Runs `f` on the open database.
    fn with_db<T>(&self, f: impl FnOnce(&sled::Db) -> Result<T>) -> Result<T> {
        let guard = self.shared.db.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Closed {
                path: self.shared.path.clone(),
                why: self.health().unwrap_or_else(|| "unknown".into()),
            }),
        }
    }

    /// Records the outcome of a write for [`Store::health`].
    fn wrote<T>(&self, res: Result<T>) -> Result<T> {
        match &res {
            Ok(_) => {
                if self.health().is_some() {
                    self.set_health(None);
                }
            }
            Err(e) if e.is_environment() => self.set_health(Some(e.to_string())),
            Err(_) => {}
        }
        res
    }

    /// The data directory this store lives in (other on-disk state, e.g. the trajectory archive, sits beside it).
    pub fn dir(&self) -> &Path {
        &self.shared.path
    }

    fn tree(&self, name: &str) -> Result<sled::Tree> {
        self.with_db(|db| db.open_tree(name).map_err(|source| self.err(source)))
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled { path: self.shared.path.clone(), source }
    }

    /// Encodes a record with its schema envelope.
    pub fn encode<R: Record>(value: &R) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(&Envelope { schema: R::SCHEMA, value })
            .map_err(|e| StoreError::Encode { tree: R::TREE, why: e.to_string() })
    }

    /// Decodes a record written by [`Store::encode`], at any schema version.
    pub fn decode<R: Record>(bytes: &[u8]) -> Result<R> {
        let env: Envelope<R> = rmp_serde::from_slice(bytes).map_err(|e| {
            let schema = rmp_serde::from_slice::<SchemaOnly>(bytes).map(|s| s.schema).ok();
            StoreError::Decode {
                tree: R::TREE,
                why: format!("{e} (schema {schema:?}, current {})", R::SCHEMA),
            }
        })?;
        Ok(env.value)
    }

    pub fn get<R: Record>(&self, key: &[u8]) -> Result<Option<R>> {
        match self.tree(R::TREE)?.get(key).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(Self::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// All records of a kind whose key starts with `prefix`, in key order.
    pub(crate) fn scan_prefix<R: Record>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, R)>> {
        let tree = self.tree(R::TREE)?;
        let mut out = Vec::new();
        for item in tree.scan_prefix(prefix) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.to_vec(), Self::decode(&v)?));
        }
        Ok(out)
    }

    /// At most `limit` records of a kind with keys in `[from, to)`, in key order or (`rev`) in
    /// reverse; only those records are decoded (a range query, not a scan of the whole prefix).
    pub(crate) fn scan_range<R: Record>(
        &self,
        from: &[u8],
        to: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, R)>> {
        let tree = self.tree(R::TREE)?;
        let mut out = Vec::new();
        let range = tree.range(from.to_vec()..to.to_vec());
        let items: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if rev { Box::new(range.rev()) } else { Box::new(range) };
        for item in items.take(limit) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.to_vec(), Self::decode(&v)?));
        }
        Ok(out)
    }

    /// Writes one record on its own (use a [`Batch`] for records that belong together).
    pub fn put<R: Record>(&self, key: &[u8], value: &R) -> Result<()> {
        let mut b = Batch::default();
        b.put(key.to_vec(), value)?;
        self.commit(b)
    }

    /// Applies every operation of the batch atomically: all of them or none.
    pub(crate) fn commit(&self, batch: Batch) -> Result<()> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        let res = self.commit_inner(batch);
        self.wrote(res)
    }

    fn commit_inner(&self, batch: Batch) -> Result<()> {
        if let Some(e) = crate::faults::injected("store_write") {
            return Err(self.err(sled::Error::Io(e)));
        }
        let mut names: Vec<&'static str> = batch.ops.iter().map(|op| op.tree).collect();
        names.sort_unstable();
        names.dedup();
        // Under the read lock throughout, so a reopen never sees a write half-done on the old handle.
        self.with_db(|db| self.commit_on(db, &names, &batch))
    }

    fn commit_on(&self, db: &sled::Db, names: &[&'static str], batch: &Batch) -> Result<()> {
        let trees =
            names.iter().map(|n| db.open_tree(n).map_err(|e| self.err(e))).collect::<Result<Vec<_>>>()?;
        use sled::Transactional;
        let res = trees.as_slice().transaction(|txs| {
            for op in &batch.ops {
                let i = names.binary_search(&op.tree).unwrap_or(0);
                match &op.value {
                    Some(v) => {
                        txs[i].insert(op.key.as_slice(), v.as_slice())?;
                    }
                    None => {
                        txs[i].remove(op.key.as_slice())?;
                    }
                }
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        });
        match res {
            Ok(()) => Ok(()),
            Err(sled::transaction::TransactionError::Storage(e)) => Err(self.err(e)),
            Err(sled::transaction::TransactionError::Abort(())) => {
                Err(self.err(sled::Error::Unsupported("transaction aborted".into())))
            }
        }
    }

    /// Flushes everything to disk (used at shutdown and after ingest).
    pub fn flush(&self) -> Result<()> {
        let res = self.with_db(|db| db.flush().map(|_| ()).map_err(|e| self.err(e)));
        self.wrote(res)
    }
}

/// Seconds since 1970 (0 if the clock is before it): the time stamp of stored records.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// sled's page cache (its default is 1 GiB, which a long run's records would grow into and keep).
const CACHE_BYTES: u64 = 32 << 20;

fn open_db(dir: &Path) -> Result<sled::Db> {
    match sled::Config::new().path(dir.join("db")).cache_capacity(CACHE_BYTES).open() {
        Ok(db) => Ok(db),
        Err(sled::Error::Io(e))
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.to_string().contains("could not acquire lock") =>
        {
            Err(StoreError::Locked(dir.to_path_buf()))
        }
        Err(source) => Err(StoreError::Sled { path: dir.to_path_buf(), source }),
    }
}

/// Reads the store's id, writing a new one (atomically) if the store has none yet, or if its id was
/// made for another directory (the data dir was copied: the copy must not answer to the original's id).
/// [`STORE_DIR_FILE`] beside it records where it was made (the directory's device and inode, and its
/// canonical path), written here when missing.
fn ensure_store_id(dir: &Path) -> std::io::Result<String> {
    let here = DirPlace::of(dir)?;
    let id = match check_store_id(dir) {
        StoreIdCheck::Here { id, recorded: true } => return Ok(id),
        StoreIdCheck::Here { id, recorded: false } => id,
        StoreIdCheck::Copied { id, from } => {
            let new = new_store_id();
            tracing::warn!(
                "the store in {} has the id of the store in {} (id {id}; copied?); it gets its own id {new}",
                here.path.as_deref().unwrap_or("?"),
                from
            );
            new
        }
        StoreIdCheck::Missing => new_store_id(),
    };
    write_atomic(dir, STORE_ID_FILE, &format!("{id}\n"))?;
    write_atomic(dir, STORE_DIR_FILE, &format!("{}\n", here.line()))?;
    Ok(id)
}

fn write_atomic(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Where a store id was made: the data directory's device, inode and canonical path.
#[derive(Debug, PartialEq)]
struct DirPlace {
    dev: u64,
    ino: u64,
    /// None if it cannot be written on one line.
    path: Option<String>,
}

impl DirPlace {
    fn of(dir: &Path) -> std::io::Result<DirPlace> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir)?;
        let path = std::fs::canonicalize(dir)
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
            .filter(|p| !p.contains(['\n', '\r']));
        Ok(DirPlace { dev: m.dev(), ino: m.ino(), path })
    }

    /// `dir DEV:INO PATH`
    fn line(&self) -> String {
        match &self.path {
            Some(p) => format!("dir {}:{} {p}", self.dev, self.ino),
            None => format!("dir {}:{}", self.dev, self.ino),
        }
    }

    fn parse(line: &str) -> Option<DirPlace> {
        let rest = line.strip_prefix("dir ")?;
        let (num, path) = match rest.split_once(' ') {
            Some((n, p)) => (n, Some(p.to_string())),
            None => (rest, None),
        };
        let (dev, ino) = num.split_once(':')?;
        Some(DirPlace { dev: dev.parse().ok()?, ino: ino.parse().ok()?, path })
    }

    /// The same directory: the same inode (it may have been moved), or the same path (restored from a
    /// backup, or its device renumbered). A copy elsewhere differs in both.
    fn same_dir(&self, other: &DirPlace) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino) || (self.path.is_some() && self.path == other.path)
    }
}

/// What a data dir's id file says, checked against the directory it is in.
#[derive(Debug, PartialEq)]
pub(crate) enum StoreIdCheck {
    /// No id yet.
    Missing,
    /// The id belongs to this directory (`recorded`: the file says where it was made; ids from before
    /// that are taken as they are).
    Here { id: String, recorded: bool },
    /// The id was made for another directory (`from`): this one is a copy, and its store gets a new id
    /// when it is next opened.
    Copied { id: String, from: String },
}

/// Reads the id file in `dir` without opening the store (see [`StoreIdCheck`]).
pub(crate) fn check_store_id(dir: &Path) -> StoreIdCheck {
    let Ok(text) = std::fs::read_to_string(dir.join(STORE_ID_FILE)) else { return StoreIdCheck::Missing };
    let id = text.trim().to_string();
    if id.is_empty() {
        return StoreIdCheck::Missing;
    }
    let place = std::fs::read_to_string(dir.join(STORE_DIR_FILE)).unwrap_or_default();
    let Some(recorded) = place.lines().find_map(DirPlace::parse) else {
        return StoreIdCheck::Here { id, recorded: false };
    };
    match DirPlace::of(dir) {
        Ok(here) if !here.same_dir(&recorded) => StoreIdCheck::Copied {
            id,
            from: recorded.path.unwrap_or_else(|| format!("inode {}:{}", recorded.dev, recorded.ino)),
        },
        _ => StoreIdCheck::Here { id, recorded: true },
    }
}

/// 128 random bits as hex (from the kernel), or time and pid if that fails.
fn new_store_id() -> String {
    let mut bytes = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = (t ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the id of the store in `dir` without opening it: None if it has none, or if the id was made for
/// another directory (a copy; see [`check_store_id`]).
pub fn read_store_id(dir: &Path) -> Option<String> {
    match check_store_id(dir) {
        StoreIdCheck::Here { id, .. } => Some(id),
        StoreIdCheck::Missing | StoreIdCheck::Copied { .. } => None,
    }
}

impl Store {}

struct Op {
    tree: &'static str,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// Writes collected to be committed together by [`Store::commit`].
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn put<R: Record>(&mut self, key: Vec<u8>, value: &R) -> Result<()> {
        let value = Store::encode(value)?;
        self.ops.push(Op { tree: R::TREE, key, value: Some(value) });
        Ok(())
    }

    pub fn remove<R: Record>(&mut self, key: Vec<u8>) {
        self.ops.push(Op { tree: R::TREE, key, value: None });
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V1 {
        a: u32,
    }
    impl Record for V1 {
        const TREE: &'static str = "test_v";
        const SCHEMA: u32 = 1;
    }

    /// The same record kind after a field was added.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        a: u32,
        #[serde(default)]
        b: Option<String>,
    }
    impl Record for V2 {
        const TREE: &'static str = "test_v";
        const SCHEMA: u32 = 2;
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Other {
        x: f64,
    }
    impl Record for Other {
        const TREE: &'static str = "test_other";
        const SCHEMA: u32 = 1;
    }

    #[test]
    fn old_records_decode_after_a_field_is_added() {
        let bytes = Store::encode(&V1 { a: 7 }).unwrap();
        let v2: V2 = Store::decode(&bytes).unwrap();
        assert_eq!(v2, V2 { a: 7, b: None });
    }

    #[test]
    fn batch_spans_trees_and_scans_in_step_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut b = Batch::default();
        for step in [300u64, 2, 10_000, 45] {
            b.put(keys::run_step("r", step), &V1 { a: step as u32 }).unwrap();
        }
        b.put(keys::run_step("r", 2), &Other { x: 1.5 }).unwrap();
        b.put(keys::run_step("r2", 1), &V1 { a: 1 }).unwrap();
        store.commit(b).unwrap();
        let steps: Vec<u64> =
            store.scan_prefix::<V1>(&keys::run("r")).unwrap().iter().map(|(_, v)| v.a as u64).collect();
        assert_eq!(steps, vec![2, 45, 300, 10_000]);
        assert_eq!(store.get::<Other>(&keys::run_step("r", 2)).unwrap(), Some(Other { x: 1.5 }));
        let k = keys::run_step_name("r", 45, "fc.weight");
        assert_eq!(keys::step_of("r", &k), Some(45));
        assert_eq!(keys::name_of("r", &k), Some("fc.weight"));
    }

    #[test]
    fn a_second_opener_is_told_the_store_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::Locked(p)) => assert_eq!(p, dir.path()),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("expected Locked, got a second handle"),
        }
    }
}
