//! Ingesting one checkpoint: read it tensor by tensor, compute statistics, hand each tensor to the
//! [`TensorSink`]s (e.g. the trajectory archive), and write all of its records to the store in one atomic
//! batch. Used by the CLI's `ingest` and by the daemon alike; it never prints.
//!
//! **Identity.** A checkpoint is identified by (run, step); the step comes from `--step` if given, else
//! from the layout's own record (see `checkpoint`). Its content is summarised by a fingerprint (CRC-32 of
//! every tensor's name, dtype, shape and values, plus the element count). Ingesting:
//! - a (run, step) whose files (paths, sizes, mtimes) match the stored record: `unchanged`, nothing read;
//! - a (run, step) already stored with the same fingerprint (e.g. a copy, or a touched file): `unchanged`,
//!   nothing written;
//! - a (run, step) already stored with another fingerprint (a restarted run wrote a new checkpoint at a
//!   step it had passed before): `replaced`, the old records are overwritten in the same batch;
//! - otherwise `added`.
//!
//! **Distances.** Per checkpoint: ‖θ − θ_first‖, ‖θ − θ_prev‖ and the cosine between consecutive updates,
//! where first/prev/prev2 are the run's stored checkpoints with the smallest / largest / second largest
//! step below this one. Whole checkpoints are never held in memory: while one tensor of the new checkpoint
//! is in memory, the same tensor of each reference checkpoint is read from its file, one at a time, so at
//! most two tensors are in memory at once. A reference is read from its own files only if they still exist
//! with the size and mtime recorded at its own ingest. When they were rotated away (HF `save_total_limit`)
//! or rewritten, its copy in the run's trajectory archive (`trajectory::archive`, kept at ingest by the
//! archive sink, kept by default by `landscaped ingest` and the daemon) is used instead, a chunk at a time, if
//! it is stored in f32 (exact for f32/f16/bf16 checkpoints). Otherwise the distances that need it are
//! `None` (shown empty), never a wrong number. The update
//! cosine needs ‖θ_prev − θ_prev2‖, taken from prev's own record when it was measured against prev2.
//! Distances are relative to the checkpoints present at ingest time: ingesting an earlier step later does
//! not revise records already written.

use crate::checkpoint::{Checkpoint, CheckpointError, TensorInfo, Values};
use crate::stats::{self, TensorStats};
use crate::store::checkpoints::{self as records, CheckpointRecord, FileStamp, RunRecord, TensorRecord};
use crate::store::{Batch, Store, StoreError, keys};
use crate::trajectory::archive::{self, ArchiveFile, Precision};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Something else that wants every float tensor of a checkpoint while it is being ingested (e.g. the
/// trajectory archive), so each checkpoint is read from disk once.
///
/// Call order: `begin`, then `tensor` for each float tensor in checkpoint order, then `finish` once the
/// store batch is ready to commit (or `abort` if ingest failed: the sink must leave no partial state).
/// A checkpoint found `unchanged` by its file stamps never reaches the sinks; one found `unchanged` by
/// its fingerprint (after reading) gets `abort`.
pub trait TensorSink {
    fn begin(&mut self, run: &str, step: u64, checkpoint: &Checkpoint) -> anyhow::Result<()>;
    fn tensor(&mut self, info: &TensorInfo, values: &Values) -> anyhow::Result<()>;
    fn finish(&mut self) -> anyhow::Result<()>;
    fn abort(&mut self);
}

/// How to ingest.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Histogram buckets per tensor (default 30, TensorBoard's).
    pub bins: usize,
    /// The training step, overriding the layout's own record (needed for a file with no step in it).
    pub step: Option<u64>,
    /// Compute distances to the first/previous checkpoints (reads those checkpoints' tensors again).
    pub distances: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions { bins: stats::DEFAULT_BINS, step: None, distances: true }
    }
}

/// What ingest did with a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestStatus {
    Added,
    Unchanged,
    Replaced,
}

impl IngestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IngestStatus::Added => "added",
            IngestStatus::Unchanged => "unchanged",
            IngestStatus::Replaced => "replaced",
        }
    }
}

/// The result of ingesting one checkpoint: what happened, and its record (the stored one when unchanged).
#[derive(Clone, Debug)]
pub struct IngestOutcome {
    /// The checkpoint's step (the same as `record.step`).
    pub step: u64,
    pub status: IngestStatus,
    pub record: CheckpointRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: no training step in the checkpoint's name or metadata (pass --step)")]
    NoStep(PathBuf),
    #[error("{0}")]
    RunName(String),
    #[error("{path}: {why}")]
    Sink { path: PathBuf, why: String },
}

impl IngestError {
    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            IngestError::Checkpoint(e) => e.kind(),
            IngestError::Store(_) => "store",
            IngestError::NoStep(_) => "no_step",
            IngestError::RunName(_) => "run_name",
            IngestError::Sink { .. } => "sink",
        }
    }
}

/// Ingests the checkpoint at `path` (a file or an HF folder) into `run`. See the module docs.
pub fn ingest_checkpoint(
    store: &Store,
    run: &str,
    path: &Path,
    opts: &IngestOptions,
    sinks: &mut [&mut dyn TensorSink],
) -> Result<IngestOutcome, IngestError> {
    ingest_checkpoint_with_progress(store, run, path, opts, sinks, &mut |_, _| {})
}

/// [`ingest_checkpoint`], calling `progress(bytes_done, bytes_total)` after each tensor.
pub fn ingest_checkpoint_with_progress(
    store: &Store,
    run: &str,
    path: &Path,
    opts: &IngestOptions,
    sinks: &mut [&mut dyn TensorSink],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<IngestOutcome, IngestError> {
    keys::validate_run_name(run).map_err(IngestError::RunName)?;
    let ck = Checkpoint::open(path)?;
    let step = opts.step.or(ck.step).ok_or_else(|| IngestError::NoStep(path.to_path_buf()))?;
    let path_str = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
    let files = stamps(&ck)?;
    let existing = records::checkpoint(store, run, step)?;
    if let Some(e) = &existing
        && e.files == files
        && e.path == path_str
    {
        return Ok(IngestOutcome { step, status: IngestStatus::Unchanged, record: e.clone() });
    }

    // The reference checkpoints: first, previous and the one before it (steps below this one).
    let earlier: Vec<CheckpointRecord> =
        records::checkpoints(store, run)?.into_iter().filter(|c| c.step < step).collect();
    let first = earlier.first();
    let prev = earlier.last();
    let prev2 = if earlier.len() >= 2 { earlier.get(earlier.len() - 2) } else { None };
    let mut refs: Vec<Reference> = Vec::new();
    if opts.distances {
        for r in [first, prev, prev2].into_iter().flatten() {
            if !refs.iter().any(|x| x.step == r.step) {
                refs.push(Reference::open(r, store.dir(), run));
            }
        }
    }

    for i in 0..sinks.len() {
        if let Err(e) = sinks[i].begin(run, step, &ck) {
            for s in sinks[..i].iter_mut() {
                s.abort();
            }
            return Err(IngestError::Sink { path: path.to_path_buf(), why: format!("{e:#}") });
        }
    }
    let read = read_tensors(&ck, &mut refs, opts, sinks, progress);
    let read = match read {
        Ok(r) => r,
        Err(e) => {
            sinks.iter_mut().for_each(|s| s.abort());
            return Err(e);
        }
    };
    // A file rewritten while we read it gives a mix of two checkpoints: refuse it.
    if stamps(&ck)? != files {
        sinks.iter_mut().for_each(|s| s.abort());
        return Err(CheckpointError::Incomplete {
            path: path.to_path_buf(),
            why: "its files changed while being read".into(),
        }
        .into());
    }
    let fingerprint = read.fingerprint;
    let status = match &existing {
        Some(e) if e.fingerprint == fingerprint => {
            sinks.iter_mut().for_each(|s| s.abort());
            return Ok(IngestOutcome { step, status: IngestStatus::Unchanged, record: e.clone() });
        }
        Some(_) => IngestStatus::Replaced,
        None => IngestStatus::Added,
    };

    // Per-checkpoint figures from the per-tensor sums.
    let dist = |s: Option<&CheckpointRecord>| -> Option<f64> {
        let r = refs.iter().find(|r| Some(r.step) == s.map(|c| c.step))?;
        r.total().map(f64::sqrt)
    };
    let sq = |s: Option<&CheckpointRecord>| dist(s).map(|d| d * d);
    let update_cos = match (prev, prev2) {
        (Some(p), Some(p2)) if p.prev_step == Some(p2.step) => match (sq(prev), p.update_norm, sq(prev2)) {
            (Some(a), Some(b), Some(c)) => stats::update_cosine(a, b * b, c),
            _ => None,
        },
        _ => None,
    };
    let now = unix_now();
    let record = CheckpointRecord {
        run: run.to_string(),
        step,
        path: path_str,
        layout: layout_name(&ck).to_string(),
        files,
        fingerprint,
        tensors: ck.tensors.len() as u64,
        float_tensors: read.float_tensors,
        numel: read.numel,
        bytes: ck.tensors.iter().map(|t| (t.numel() * t.dtype.size()) as u64).sum(),
        nan_count: read.nan,
        inf_count: read.inf,
        global_norm: stats::global_norm(
            read.tensors.iter().filter_map(|t| t.stats.as_ref().map(|s| s.sum_sq())),
        ),
        dist_first: dist(first),
        first_step: first.map(|c| c.step),
        update_norm: dist(prev),
        prev_step: prev.map(|c| c.step),
        update_cos,
        unmatched_tensors: refs.iter().map(|r| r.unmatched).max().unwrap_or(0),
        ingested_unix: now,
    };

    let mut batch = Batch::default();
    if records::run(store, run)?.is_none() {
        batch.put(keys::run(run), &RunRecord { name: run.to_string(), created_unix: now })?;
    }
    if existing.is_some() {
        for old in records::tensors(store, run, step)? {
            if !read.tensors.iter().any(|t| t.name == old.name) {
                batch.remove::<TensorRecord>(keys::run_step_name(run, step, &old.name));
            }
        }
    }
    batch.put(keys::run_step(run, step), &record)?;
    for (t, per) in read.tensors.iter().zip(&read.per_tensor) {
        let mut t = t.clone();
        t.dist_first = first.and_then(|f| per.get(&f.step).copied().flatten()).map(f64::sqrt);
        t.update_norm = prev.and_then(|p| per.get(&p.step).copied().flatten()).map(f64::sqrt);
        batch.put(keys::run_step_name(run, step, &t.name), &t)?;
    }
    for i in 0..sinks.len() {
        if let Err(e) = sinks[i].finish() {
            for s in sinks[i + 1..].iter_mut() {
                s.abort();
            }
            return Err(IngestError::Sink { path: path.to_path_buf(), why: format!("{e:#}") });
        }
    }
    store.commit(batch)?;
    Ok(IngestOutcome { step, status, record })
}

/// What reading every tensor gave.
struct ReadResult {
    tensors: Vec<TensorRecord>,
    /// Per tensor: reference step → ‖t − t_ref‖² (None when the reference lacked it).
    per_tensor: Vec<HashMap<u64, Option<f64>>>,
    fingerprint: u64,
    float_tensors: u64,
    numel: u64,
    nan: u64,
    inf: u64,
}

fn read_tensors(
    ck: &Checkpoint,
    refs: &mut [Reference],
    opts: &IngestOptions,
    sinks: &mut [&mut dyn TensorSink],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReadResult, IngestError> {
    let total: u64 = ck.tensors.iter().map(|t| (t.numel() * t.dtype.size()) as u64).sum();
    let mut done = 0u64;
    let mut crc = crc32fast::Hasher::new();
    let mut out = ReadResult {
        tensors: Vec::with_capacity(ck.tensors.len()),
        per_tensor: Vec::with_capacity(ck.tensors.len()),
        fingerprint: 0,
        float_tensors: 0,
        numel: 0,
        nan: 0,
        inf: 0,
    };
    for (i, info) in ck.tensors.iter().enumerate() {
        crc.update(info.name.as_bytes());
        crc.update(info.dtype.name().as_bytes());
        for d in &info.shape {
            crc.update(&(*d as u64).to_le_bytes());
        }
        let mut rec = TensorRecord {
            name: info.name.clone(),
            dtype: info.dtype.name().to_string(),
            shape: info.shape.clone(),
            ..Default::default()
        };
        let mut per = HashMap::new();
        if info.dtype.is_float() {
            let values = ck.read(i)?;
            hash_values(&mut crc, &values);
            let st: TensorStats = stats::tensor_stats(&values, opts.bins);
            out.float_tensors += 1;
            out.numel += st.numel;
            out.nan += st.nan_count;
            out.inf += st.inf_count;
            for r in refs.iter_mut() {
                per.insert(r.step, r.squared_distance(info, &values));
            }
            for s in sinks.iter_mut() {
                s.tensor(info, &values)
                    .map_err(|e| IngestError::Sink { path: ck.path.clone(), why: format!("{e:#}") })?;
            }
            rec.stats = Some(st);
        }
        out.tensors.push(rec);
        out.per_tensor.push(per);
        done += (info.numel() * info.dtype.size()) as u64;
        progress(done, total);
    }
    out.fingerprint = ((crc.finalize() as u64) << 32) | (out.numel & 0xffff_ffff);
    Ok(out)
}

/// Adds a tensor's values (as little-endian bytes of their widened f32/f64 form) to the checksum,
/// in parallel parts for big tensors.
fn hash_values(crc: &mut crc32fast::Hasher, values: &Values) {
    let bytes: Vec<u8>;
    let data: &[u8] = match values {
        Values::F32(v) => {
            if cfg!(target_endian = "little") {
                // SAFETY: f32 has no padding and any byte pattern is a valid u8; the slice covers exactly
                // the vector's initialised elements.
                unsafe {
                    std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v.as_slice()))
                }
            } else {
                bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                &bytes
            }
        }
        Values::F64(v) => {
            if cfg!(target_endian = "little") {
                // SAFETY: as above, for f64.
                unsafe {
                    std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v.as_slice()))
                }
            } else {
                bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                &bytes
            }
        }
    };
    const PART: usize = 64 << 20;
    if data.len() < 2 * PART {
        crc.update(data);
        return;
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let per = data.len().div_ceil(threads);
    let parts: Vec<crc32fast::Hasher> = std::thread::scope(|s| {
        let hs: Vec<_> = data
            .chunks(per)
            .map(|c| {
                s.spawn(move || {
                    let mut h = crc32fast::Hasher::new();
                    h.update(c);
                    h
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    for p in &parts {
        crc.combine(p);
    }
}

/// Where a reference checkpoint's tensors are read from.
enum Source {
    /// Its own files, unchanged since its ingest.
    Files(Checkpoint),
    /// Its f32 copy in the trajectory archive (exact for f32/f16/bf16 checkpoints), when its files are
    /// gone or changed.
    Archive(ArchiveFile),
    /// Neither: distances that need it are None.
    Missing,
}

/// A reference checkpoint (first/previous) whose tensors are read again, one at a time, for distances.
struct Reference {
    step: u64,
    source: Source,
    index: HashMap<String, usize>,
    /// Σ over tensors of ‖t − t_ref‖²; None once any tensor could not be compared.
    sum: Option<f64>,
    unmatched: u64,
}

/// Elements per read from the trajectory archive.
const ARCHIVE_CHUNK: usize = 1 << 20;

impl Reference {
    /// Opens a stored checkpoint from its files if they are still there unchanged, else from the run's
    /// trajectory archive (f32 precision only), else a reference that yields no distances.
    fn open(rec: &CheckpointRecord, data_dir: &Path, run: &str) -> Reference {
        let files = Checkpoint::open(Path::new(&rec.path))
            .ok()
            .filter(|ck| stamps(ck).map(|s| s == rec.files).unwrap_or(false));
        let source = match files {
            Some(ck) => Source::Files(ck),
            None => archive::list_run(data_dir, run)
                .ok()
                .and_then(|l| l.into_iter().find(|e| e.step == rec.step))
                .and_then(|e| ArchiveFile::open(&e.path).ok())
                .filter(|a| a.precision == Precision::F32)
                .map(Source::Archive)
                .unwrap_or(Source::Missing),
        };
        let index = match &source {
            Source::Files(ck) => ck.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect(),
            Source::Archive(a) => a.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect(),
            Source::Missing => HashMap::new(),
        };
        let sum = if matches!(source, Source::Missing) { None } else { Some(0.0) };
        Reference { step: rec.step, source, index, sum, unmatched: 0 }
    }

    /// ‖t − t_ref‖² for this tensor, accumulated into the checkpoint total.
    fn squared_distance(&mut self, info: &TensorInfo, values: &Values) -> Option<f64> {
        if matches!(self.source, Source::Missing) {
            return None;
        }
        let d = match (self.index.get(&info.name).copied(), &self.source) {
            (None, _) | (_, Source::Missing) => None,
            (Some(j), Source::Files(ck)) => {
                let t = &ck.tensors[j];
                if t.dtype.is_float() && t.shape == info.shape {
                    ck.read(j).ok().and_then(|r| stats::squared_distance(values, &r))
                } else {
                    None
                }
            }
            (Some(j), Source::Archive(a)) => {
                if a.tensors[j].shape == info.shape {
                    archive_distance(a, j, values)
                } else {
                    None
                }
            }
        };
        match d {
            Some(d) => {
                if let Some(s) = &mut self.sum {
                    *s += d;
                }
            }
            None => {
                self.unmatched += 1;
                self.sum = None;
            }
        }
        d
    }

    fn total(&self) -> Option<f64> {
        self.sum
    }
}

/// ‖values − archived tensor j‖², reading the archive a chunk at a time.
fn archive_distance(a: &ArchiveFile, j: usize, values: &Values) -> Option<f64> {
    let n = values.len();
    let mut buf = vec![0.0f64; ARCHIVE_CHUNK.min(n)];
    let mut scratch = Vec::new();
    let mut total = 0.0;
    let mut start = 0;
    while start < n {
        let len = ARCHIVE_CHUNK.min(n - start);
        a.read_f64(j, start, &mut buf[..len], &mut scratch).ok()?;
        total += stats::squared_distance_chunk(values, start, &buf[..len])?;
        start += len;
    }
    Some(total)
}

/// Size and mtime of every file of the checkpoint.
fn stamps(ck: &Checkpoint) -> Result<Vec<FileStamp>, CheckpointError> {
    let mut out = Vec::new();
    for (path, size, mtime) in ck.files() {
        if size == 0 && mtime == std::time::UNIX_EPOCH && !path.exists() {
            return Err(CheckpointError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file disappeared"),
            });
        }
        let mtime_ns = mtime.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
        out.push(FileStamp { path: path.display().to_string(), size, mtime_ns });
    }
    Ok(out)
}

fn layout_name(ck: &Checkpoint) -> &'static str {
    match ck.layout {
        crate::checkpoint::Layout::File => "file",
        crate::checkpoint::Layout::HfFolder => "hf_folder",
        crate::checkpoint::Layout::Lightning => "lightning",
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
