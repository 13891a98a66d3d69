//! Ingesting one checkpoint: read it tensor by tensor, compute statistics, hand each tensor to the
//! [`TensorSink`]s (e.g. the trajectory archive), and write all of its records to the store in one atomic
//! batch. Used by the CLI's `ingest` and by the daemon alike; it never prints.
//!
//! **Identity.** A checkpoint is identified by (run, step); the step comes from `--step` if given, else
//! from the layout's own record (see `checkpoint`). Its content is summarised by a fingerprint (CRC-32 of
//! every tensor's name, dtype, shape and values, plus the element count). Ingesting:
//! - a (run, step) whose files (paths, sizes, mtimes: the checkpoint's [`crate::stamp`]) match the
//!   stored record: `unchanged`, nothing read;
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
//! it is stored exactly (precision `native`, the default: each tensor in its own type; or f32, exact for
//! f32/f16/bf16 checkpoints). Otherwise the distances that need it are
//! `None` (shown empty), never a wrong number. The update
//! cosine needs ‖θ_prev − θ_prev2‖, taken from prev's own record when it was measured against prev2.
//! Distances are relative to the checkpoints present at ingest time: ingesting an earlier step later does
//! not revise records already written.

use crate::stamp::{self, Stamp};
use crate::store::checkpoints::{self as records, AliasRecord, CheckpointRecord, RunRecord, TensorRecord};
use crate::store::optimizer::OptimizerRecord;
use crate::store::{Batch, RunStepRecord, Store, StoreError, keys, unix_now};
use crate::trajectory::archive::{self, ArchiveFile};
use engine::RefSource;
use landscaped_formats::{Checkpoint, CheckpointError};
use landscaped_maths::stats;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod engine;
mod optimizer;

use crate::sink::{DoesNotFit, TensorSink};

/// How to ingest.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Histogram buckets per tensor (default 30, TensorBoard's).
    pub bins: usize,
    /// The training step, overriding the layout's own record (needed for a file with no step in it).
    pub step: Option<u64>,
    /// Compute distances to the first/previous checkpoints (reads those checkpoints' tensors again).
    pub distances: bool,
    /// Bytes of tensor data held at once, over all worker threads (default 64 MiB), whatever the
    /// checkpoint's size.
    pub memory_budget: usize,
    /// Tensors larger than this (bytes) are refused (default 64 GiB).
    pub max_tensor_bytes: u64,
    /// Worker threads (0: one per available core).
    pub threads: usize,
}

/// The default [`IngestOptions::memory_budget`].
pub(crate) const DEFAULT_MEMORY_BUDGET: usize = 64 << 20;

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            bins: stats::DEFAULT_BINS,
            step: None,
            distances: true,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            max_tensor_bytes: landscaped_formats::DEFAULT_MAX_TENSOR_BYTES,
            threads: 0,
        }
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

/// The result of ingesting one checkpoint: what happened, and its records (the stored ones when
/// unchanged): everything /metrics shows for it, so nothing needs reading back from the store.
#[derive(Clone, Debug)]
pub struct IngestOutcome {
    /// The checkpoint's step (the same as `record.step`).
    pub step: u64,
    pub status: IngestStatus,
    pub record: CheckpointRecord,
    /// Its tensors' records, in name order (as the store lists them).
    pub tensors: Vec<TensorRecord>,
    /// Its optimizer state's telemetry (None: the checkpoint carries no optimizer state, or it could
    /// not be read: then `optimizer_note` says why, once).
    pub optimizer: Option<OptimizerRecord>,
    pub optimizer_note: Option<String>,
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
    /// A sink cannot take this checkpoint for lack of space (`ever`: not even on an empty disk).
    #[error("{path}: {why}")]
    DoesNotFit { path: PathBuf, why: String, ever: bool },
}

/// What kind of failure an [`IngestError`] is: matched on, never compared as a string; its
/// [`ErrorKind::label`] is the metric label (`landscaped_errors_total{kind=...}`) and what the daemon
/// records for a failed checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Reading a file failed (a short read, or an I/O error that is the file's: see the daemon's taxonomy).
    Io,
    Unsupported,
    Malformed,
    Refused,
    /// Still being written, or its files changed while being read.
    Incomplete,
    /// A file it needs is a FIFO, socket, device or folder.
    NotAFile,
    Store,
    NoStep,
    RunName,
    Sink,
    DoesNotFit,
}

impl ErrorKind {
    /// The short stable label for metrics and records.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Refused => "refused",
            ErrorKind::Incomplete => "incomplete",
            ErrorKind::NotAFile => "not_a_file",
            ErrorKind::Store => "store",
            ErrorKind::NoStep => "no_step",
            ErrorKind::RunName => "run_name",
            ErrorKind::Sink => "sink",
            ErrorKind::DoesNotFit => "does_not_fit",
        }
    }

    /// The kind of a checkpoint reader's error.
    pub(crate) fn of_checkpoint(e: &CheckpointError) -> ErrorKind {
        match e {
            CheckpointError::Io { .. } => ErrorKind::Io,
            CheckpointError::Unsupported { .. } => ErrorKind::Unsupported,
            CheckpointError::Malformed { .. } => ErrorKind::Malformed,
            CheckpointError::Refused { .. } => ErrorKind::Refused,
            CheckpointError::Incomplete { .. } => ErrorKind::Incomplete,
            CheckpointError::NotAFile { .. } => ErrorKind::NotAFile,
        }
    }
}

impl IngestError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngestError::Checkpoint(e) => ErrorKind::of_checkpoint(e),
            IngestError::Store(_) => ErrorKind::Store,
            IngestError::NoStep(_) => ErrorKind::NoStep,
            IngestError::RunName(_) => ErrorKind::RunName,
            IngestError::Sink { .. } => ErrorKind::Sink,
            IngestError::DoesNotFit { .. } => ErrorKind::DoesNotFit,
        }
    }

    /// A sink's error: [`IngestError::DoesNotFit`] when it is a [`DoesNotFit`], else `Sink`.
    fn from_sink(path: &Path, e: anyhow::Error) -> IngestError {
        match e.downcast_ref::<DoesNotFit>() {
            Some(d) => IngestError::DoesNotFit { path: path.to_path_buf(), why: d.why.clone(), ever: d.ever },
            None => IngestError::Sink { path: path.to_path_buf(), why: format!("{e:#}") },
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
pub(crate) fn ingest_checkpoint_with_progress(
    store: &Store,
    run: &str,
    path: &Path,
    opts: &IngestOptions,
    sinks: &mut [&mut dyn TensorSink],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<IngestOutcome, IngestError> {
    keys::validate_run_name(run).map_err(IngestError::RunName)?;
    // Stamped before it is opened, as `ingest_opened` requires: a file replaced between the two then
    // shows as a changed stamp after reading instead of slipping through.
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let before = stamp_now(&canon)?;
    let ck = Checkpoint::open(path)?;
    ingest_opened(store, run, &ck, &before, opts, sinks, progress)
}

/// Ingests an already opened checkpoint whose files had the stamp `before` ([`crate::stamp`], taken
/// no later than the opening, of its canonical path) when it was opened: the daemon's one pass, where
/// the watcher stamped the files and the processor opened it. Nothing is opened or stamped again
/// before reading; after reading, the files are stamped once more and the checkpoint refused
/// (`incomplete`) if they changed. See the module docs.
pub(crate) fn ingest_opened(
    store: &Store,
    run: &str,
    ck: &Checkpoint,
    before: &Stamp,
    opts: &IngestOptions,
    sinks: &mut [&mut dyn TensorSink],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<IngestOutcome, IngestError> {
    keys::validate_run_name(run).map_err(IngestError::RunName)?;
    let path = ck.path.as_path();
    let step = opts.step.or(ck.step).ok_or_else(|| IngestError::NoStep(path.to_path_buf()))?;
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let path_str = canon.display().to_string();
    let files = before.clone();
    let existing = records::checkpoint(store, run, step)?;
    if let Some(e) = &existing
        && e.files == files
        && e.path == path_str
    {
        let tensors = records::tensors(store, run, step)?;
        let optimizer = OptimizerRecord::get(store, run, step)?;
        return Ok(IngestOutcome {
            step,
            status: IngestStatus::Unchanged,
            record: e.clone(),
            tensors,
            optimizer,
            optimizer_note: None,
        });
    }
    ck.check_limits(opts.max_tensor_bytes)?;

    // The reference checkpoints: first, previous and the one before it (steps below this one), found
    // by range queries on the store.
    let (first, last2) = records::references_before(store, run, step, 2)?;
    let first = first.as_ref();
    let prev = last2.first();
    let prev2 = last2.get(1);
    let mut refs: Vec<Reference> = Vec::new();
    if opts.distances {
        for r in [first, prev, prev2].into_iter().flatten() {
            if !refs.iter().any(|x| x.step == r.step) {
                refs.push(Reference::open(r, store.dir(), run));
            }
        }
    }

    for i in 0..sinks.len() {
        if let Err(e) = sinks[i].begin(run, step, ck) {
            for s in sinks[..i].iter_mut() {
                s.abort();
            }
            return Err(IngestError::from_sink(path, e));
        }
    }
    let read = read_tensors(ck, &mut refs, opts, sinks, progress);
    let read = match read {
        Ok(r) => r,
        Err(e) => {
            sinks.iter_mut().for_each(|s| s.abort());
            return Err(e);
        }
    };
    // A file rewritten while we read it gives a mix of two checkpoints: refuse it.
    if stamp_now(&canon)? != files {
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
            let tensors = records::tensors(store, run, step)?;
            let optimizer = OptimizerRecord::get(store, run, step)?;
            return Ok(IngestOutcome {
                step,
                status: IngestStatus::Unchanged,
                record: e.clone(),
                tensors,
                optimizer,
                optimizer_note: None,
            });
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
        layout: layout_name(ck).to_string(),
        files,
        fingerprint,
        tensors: ck.tensors.len() as u64,
        float_tensors: read.float_tensors,
        numel: read.numel,
        bytes: (0..ck.tensors.len()).map(|i| ck.tensor_bytes(i)).sum(),
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
        source: ck.source.clone(),
        dtypes: ck.dtypes(),
        aliases: ck
            .aliases
            .iter()
            .map(|a| AliasRecord { name: a.name.clone(), owner: a.owner.clone() })
            .collect(),
    };

    // The optimizer state, when the checkpoint carries one: its figures in the same batch. Unreadable:
    // no figures, one note, never a failed ingest.
    let (optimizer, optimizer_note) = match optimizer::optimizer_telemetry(ck, run, step) {
        Ok(Some(r)) => (Some(r), None),
        Ok(None) => (None, None),
        Err(e) => (None, Some(format!("optimizer state not read: {e}"))),
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
    match &optimizer {
        Some(o) => batch.put(keys::run_step(run, step), o)?,
        None if existing.is_some() => batch.remove::<OptimizerRecord>(keys::run_step(run, step)),
        None => {}
    }
    let mut tensors = Vec::with_capacity(read.tensors.len());
    for (t, per) in read.tensors.iter().zip(&read.per_tensor) {
        let mut t = t.clone();
        t.dist_first = first.and_then(|f| per.get(&f.step).copied().flatten()).map(f64::sqrt);
        t.update_norm = prev.and_then(|p| per.get(&p.step).copied().flatten()).map(f64::sqrt);
        batch.put(keys::run_step_name(run, step, &t.name), &t)?;
        tensors.push(t);
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
    // In name order, as the store lists them.
    tensors.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(IngestOutcome { step, status, record, tensors, optimizer, optimizer_note })
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
    let total: u64 = (0..ck.tensors.len()).map(|i| ck.tensor_bytes(i)).sum();
    // Which tensor of each reference each tensor is compared with.
    let plans: Vec<engine::RefPlan<'_>> = refs
        .iter()
        .filter_map(|r| {
            let source = r.source.as_ref()?;
            let matches = ck
                .tensors
                .iter()
                .map(|info| {
                    let j = *r.index.get(&info.name)?;
                    let (dtype, shape) = match source {
                        RefSource::Files(rck) => {
                            (Some(rck.tensors[j].dtype), rck.tensors[j].shape.as_slice())
                        }
                        RefSource::Archive(a) => (None, a.tensors[j].shape.as_slice()),
                    };
                    (info.dtype.is_float() && engine::comparable(dtype, shape, &info.shape)).then_some(j)
                })
                .collect();
            Some(engine::RefPlan { source, matches })
        })
        .collect();
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(16),
        n => n,
    };
    let eopts = engine::EngineOptions { bins: opts.bins, memory_budget: opts.memory_budget, threads };
    let shared: Vec<&dyn TensorSink> = sinks.iter().map(|s| &**s as &dyn TensorSink).collect();
    let mut results = engine::run(ck, &plans, &shared, &eopts, &mut |done| progress(done, total))?;
    progress(total, total);

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
    // References with a source, in the order of `plans`.
    let live: Vec<usize> = (0..refs.len()).filter(|&i| refs[i].source.is_some()).collect();
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
            let r = results[i]
                .take()
                .ok_or_else(|| ck.malformed(format!("tensor '{}' was not read", info.name)))?;
            crc.combine(&r.crc);
            out.float_tensors += 1;
            out.numel += r.stats.numel;
            out.nan += r.stats.nan_count;
            out.inf += r.stats.inf_count;
            for (k, &ri) in live.iter().enumerate() {
                let d = r.dists[k];
                refs[ri].add(d);
                per.insert(refs[ri].step, d);
            }
            for r in refs.iter().filter(|r| r.source.is_none()) {
                per.insert(r.step, None);
            }
            rec.stats = Some(r.stats);
        }
        out.tensors.push(rec);
        out.per_tensor.push(per);
    }
    out.fingerprint = ((crc.finalize() as u64) << 32) | (out.numel & 0xffff_ffff);
    Ok(out)
}

/// A reference checkpoint (first/previous) whose tensors are read again, chunk by chunk, for distances.
struct Reference {
    step: u64,
    /// Its own files if unchanged, else its exact copy in the trajectory archive, else None (distances
    /// that need it are None).
    source: Option<RefSource>,
    index: HashMap<String, usize>,
    /// Σ over tensors of ‖t − t_ref‖²; None once any tensor could not be compared.
    sum: Option<f64>,
    unmatched: u64,
}

impl Reference {
    /// Opens a stored checkpoint from its files if they are still there unchanged, else from the run's
    /// trajectory archive (an exact precision only: native or f32), else a reference that yields no
    /// distances.
    fn open(rec: &CheckpointRecord, data_dir: &Path, run: &str) -> Reference {
        // Its own files only if their stamp is the one recorded (stat'ed first: a changed or rotated
        // checkpoint is not opened at all).
        let path = Path::new(&rec.path);
        let unchanged = stamp::stamp(path).is_ok_and(|s| s == rec.files);
        let files = unchanged.then(|| Checkpoint::open(path).ok()).flatten();
        let source = match files {
            Some(ck) => Some(RefSource::Files(ck)),
            None => archive::list_run(data_dir, run)
                .ok()
                .and_then(|l| l.into_iter().find(|e| e.step == rec.step))
                .and_then(|e| ArchiveFile::open(&e.path).ok())
                .filter(|a| a.precision.exact())
                .map(RefSource::Archive),
        };
        let index = match &source {
            Some(RefSource::Files(ck)) => {
                ck.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect()
            }
            Some(RefSource::Archive(a)) => {
                a.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect()
            }
            None => HashMap::new(),
        };
        let sum = if source.is_none() { None } else { Some(0.0) };
        Reference { step: rec.step, source, index, sum, unmatched: 0 }
    }

    /// Adds one float tensor's ‖t − t_ref‖² (None: not comparable) to the checkpoint total.
    fn add(&mut self, d: Option<f64>) {
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
    }

    fn total(&self) -> Option<f64> {
        self.sum
    }
}

/// The checkpoint's [`stamp`] now, a path gone (or unreadable) as the checkpoint's I/O error.
fn stamp_now(path: &Path) -> Result<Stamp, CheckpointError> {
    stamp::stamp(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })
}

fn layout_name(ck: &Checkpoint) -> &'static str {
    ck.layout.name()
}
