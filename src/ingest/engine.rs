//! The ingest engine: every float tensor of a checkpoint streamed in chunks, on all cores, in one
//! fused pass per chunk (moments, checksum, sinks such as the archive, distances to the reference
//! checkpoints), plus a second pass for the histogram and the deviations once the tensor's extremes
//! and mean are known.
//!
//! **Memory** is a budget, not a function of the checkpoint: each worker owns its chunk buffers
//! (sized so that all of them fit in `memory_budget`), chunks are handed out in order with a bounded
//! look-ahead, and per-chunk results are a few numbers per 4096 elements, merged in order as soon as
//! they are contiguous. A tensor that fits in one chunk is read once and both passes run on that
//! chunk; a bigger one is read twice (the second read usually comes from the page cache), except a
//! large f16/bf16 one, which needs no second pass (below). A tensor
//! whose reader cannot read by range (a torch.save strided view) is read whole, once.
//!
//! **Cache**: a chunk is read, widened (bf16 by a 16-bit shift, f16 by `half`'s slice conversion) and
//! processed a piece of [`PIECE`] elements at a time, so the fused work on it runs while the piece is in
//! the core's cache. A large f16/bf16 tensor has no second pass: its first pass counts each of the
//! 65,536 bit patterns, and every statistic follows from those counts (the same definitions, in f64).
//!
//! **Pipelining**: workers take the next chunk of the earliest unfinished tensor; second-pass chunks
//! come first, and several tensors are in flight at once, so reading (pread) and computing overlap
//! across workers and tensors. **Determinism**: results are merged in tensor and block order
//! ([`landscaped_maths::stats`]), so they do not depend on the thread count, the chunk size or the timing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use super::{IngestError, TensorSink};
use crate::trajectory::archive::ArchiveFile;
use landscaped_formats::{Checkpoint, ChunkBuf, ChunkValues, Dtype, widen_into};
use landscaped_maths::stats;
use landscaped_maths::stats::{
    DistanceAcc, Part1, Part2, PatternCounts, PatternTotals, Plan2, TensorAcc, TensorStats,
};

/// Where a reference checkpoint's tensors are read from.
pub(crate) enum RefSource {
    /// Its own files, unchanged since its ingest.
    Files(Checkpoint),
    /// Its exact copy in the trajectory archive.
    Archive(ArchiveFile),
}

/// A reference checkpoint, and for each tensor of the checkpoint being ingested the matching tensor
/// in it (same name, float, same shape), if any.
pub(crate) struct RefPlan<'a> {
    pub source: &'a RefSource,
    pub matches: Vec<Option<usize>>,
}

/// What the engine computed for one float tensor.
pub(crate) struct TensorResult {
    pub stats: TensorStats,
    /// Per reference: ‖t − t_ref‖² (None when it had no match or could not be read).
    pub dists: Vec<Option<f64>>,
    /// CRC-32 of the widened values' little-endian bytes.
    pub crc: crc32fast::Hasher,
}

pub(crate) struct EngineOptions {
    pub bins: usize,
    pub memory_budget: usize,
    pub threads: usize,
}

/// Elements per block: chunks are multiples of it (so the blocks are the same however it is cut).
const ALIGN_BYTES: usize = landscaped_maths::stats::BLOCK_ELEMENTS * 8;

/// Bytes of file data per chunk for `threads` workers and `refs` reference checkpoints: every
/// worker's buffers (file bytes, widened values, each reference's chunk, the archive's converted
/// copy) fit in `budget`.
pub(crate) fn chunk_bytes(budget: usize, threads: usize, refs: usize) -> usize {
    let per_worker = budget / threads.max(1);
    // raw (1) + widened 16-bit values (2) + archive conversion (1) + per reference: raw + widened (3)
    let factor = 4 + 3 * refs;
    let c = (per_worker / factor) / ALIGN_BYTES * ALIGN_BYTES;
    c.clamp(ALIGN_BYTES, 16 << 20)
}

enum Task {
    /// Both passes over a tensor read as one piece.
    Whole {
        t: usize,
    },
    Pass1 {
        t: usize,
        k: usize,
        start: usize,
        n: usize,
    },
    Pass2 {
        t: usize,
        k: usize,
        start: usize,
        n: usize,
        plan: Plan2,
    },
}

struct Done1 {
    part: Part1,
    crc: crc32fast::Hasher,
    dists: Vec<Option<Vec<f64>>>,
}

/// A tensor being processed chunk by chunk.
struct Job {
    t: usize,
    chunks: usize,
    per: usize,
    numel: usize,
    second: bool,
    plan: Option<Plan2>,
    next: usize,
    merged: usize,
    pending1: BTreeMap<usize, Done1>,
    pending2: BTreeMap<usize, Part2>,
    acc: TensorAcc,
    /// The bit-pattern counts of a tensor done by patterns (then `acc` stays empty and there is no
    /// second pass).
    patterns: Option<PatternTotals>,
    crc: crc32fast::Hasher,
    dists: Vec<Option<DistanceAcc>>,
}

struct Sched {
    /// Float tensors to do, in checkpoint order (indices into `ck.tensors`).
    todo: Vec<usize>,
    next_todo: usize,
    jobs: VecDeque<Job>,
    /// Tensors being done whole by a worker.
    whole_running: usize,
    results: Vec<Option<TensorResult>>,
    error: Option<IngestError>,
    finished: usize,
}

pub(crate) fn run(
    ck: &Checkpoint,
    refs: &[RefPlan<'_>],
    sinks: &[&dyn TensorSink],
    opts: &EngineOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<Option<TensorResult>>, IngestError> {
    let threads = opts.threads.max(1);
    let chunk = chunk_bytes(opts.memory_budget, threads, refs.len());
    let todo: Vec<usize> = ck.float_tensors().map(|(i, _)| i).collect();
    let sched = Mutex::new(Sched {
        todo,
        next_todo: 0,
        jobs: VecDeque::new(),
        whole_running: 0,
        results: (0..ck.tensors.len()).map(|_| None).collect(),
        error: None,
        finished: 0,
    });
    let cv = Condvar::new();
    let done_bytes = AtomicU64::new(0);
    let ctx = Ctx { ck, refs, sinks, opts, chunk, threads, sched: &sched, cv: &cv, done_bytes: &done_bytes };
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(|| ctx.worker())).collect();
        // Progress from this thread while the workers run.
        let mut last = 0;
        loop {
            let g = lock(&sched);
            let all_done = g.error.is_some()
                || (g.next_todo == g.todo.len() && g.jobs.is_empty() && g.whole_running == 0);
            let g = if all_done {
                g
            } else {
                cv.wait_timeout(g, std::time::Duration::from_millis(100))
                    .map(|r| r.0)
                    .unwrap_or_else(|e| e.into_inner().0)
            };
            drop(g);
            let d = done_bytes.load(Ordering::Relaxed);
            if d != last {
                progress(d);
                last = d;
            }
            if hs.iter().all(|h| h.is_finished()) {
                break;
            }
        }
        for h in hs {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
    });
    let mut g = sched.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = g.error.take() {
        return Err(e);
    }
    Ok(std::mem::take(&mut g.results))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Ctx<'a> {
    ck: &'a Checkpoint,
    refs: &'a [RefPlan<'a>],
    sinks: &'a [&'a dyn TensorSink],
    opts: &'a EngineOptions,
    chunk: usize,
    threads: usize,
    sched: &'a Mutex<Sched>,
    cv: &'a Condvar,
    done_bytes: &'a AtomicU64,
}

/// Elements per piece: a chunk is read and widened a piece at a time, and every computation on the
/// piece (moments, checksum, sinks, distances) runs while it is in the core's cache (a 16-bit piece is
/// 64 KiB as read, 128 KiB widened). A multiple of the statistics' block, so the blocks are the same.
const PIECE: usize = 8 * landscaped_maths::stats::BLOCK_ELEMENTS;

/// Per-worker buffers.
#[derive(Default)]
struct Bufs {
    piece: PieceBufs,
    refs: RefBufs,
    /// The bit patterns counted by the first pass of a tensor done by patterns.
    patterns: PatternCounts,
}

/// f16/bf16 tensors with at least this many elements are done by counting bit patterns (deriving the
/// statistics from 65,536 counts costs about what a second pass over this many values does).
const PATTERNS_MIN: u64 = 1 << 18;

/// The buffers a piece is read and widened into.
#[derive(Default)]
struct PieceBufs {
    raw: ChunkBuf,
    wide: Vec<f32>,
    wide64: Vec<f64>,
}

/// The buffers the reference checkpoints' pieces are read into.
#[derive(Default)]
struct RefBufs {
    chunk: ChunkBuf,
    f64s: Vec<f64>,
    scratch: Vec<u8>,
}

/// Where a run of elements comes from: read from the checkpoint a piece at a time, or bytes already
/// in memory (a tensor read whole).
#[derive(Clone, Copy)]
enum Src<'a> {
    Read,
    Bytes(Dtype, &'a [u8]),
}

impl Ctx<'_> {
    fn worker(&self) {
        let mut bufs = Bufs::default();
        while let Some(task) = self.next_task() {
            let res = match task {
                Task::Whole { t } => self.whole(t, &mut bufs),
                Task::Pass1 { t, k, start, n } => self.pass1(t, k, start, n, &mut bufs),
                Task::Pass2 { t, k, start, n, plan } => self.pass2(t, k, start, n, &plan, &mut bufs),
            };
            if let Err(e) = res {
                let mut g = lock(self.sched);
                if g.error.is_none() {
                    g.error = Some(e);
                }
                self.cv.notify_all();
            }
        }
    }

    fn next_task(&self) -> Option<Task> {
        let mut g = lock(self.sched);
        loop {
            if g.error.is_some() {
                return None;
            }
            // Second-pass chunks first (their tensor's first pass is done), earliest tensor first.
            for j in g.jobs.iter_mut() {
                if j.second && j.next < j.chunks {
                    let k = j.next;
                    j.next += 1;
                    let start = k * j.per;
                    let plan = j.plan?;
                    return Some(Task::Pass2 { t: j.t, k, start, n: j.per.min(j.numel - start), plan });
                }
            }
            let lookahead = 4 * self.threads;
            for j in g.jobs.iter_mut() {
                if !j.second && j.next < j.chunks && j.next - j.merged < lookahead {
                    let k = j.next;
                    j.next += 1;
                    let start = k * j.per;
                    return Some(Task::Pass1 { t: j.t, k, start, n: j.per.min(j.numel - start) });
                }
            }
            if g.jobs.len() + g.whole_running < self.threads + 2 && g.next_todo < g.todo.len() {
                let t = g.todo[g.next_todo];
                g.next_todo += 1;
                let info = &self.ck.tensors[t];
                let es = info.dtype.size();
                let numel = (self.ck.tensor_bytes(t) / es as u64) as usize;
                let per = self.chunk / es;
                if numel <= per || !self.ck.streamable(t) {
                    g.whole_running += 1;
                    return Some(Task::Whole { t });
                }
                let chunks = numel.div_ceil(per);
                g.jobs.push_back(Job {
                    t,
                    chunks,
                    per,
                    numel,
                    second: false,
                    plan: None,
                    next: 1,
                    merged: 0,
                    pending1: BTreeMap::new(),
                    pending2: BTreeMap::new(),
                    acc: TensorAcc::new(numel as u64, self.opts.bins),
                    patterns: self.by_patterns(t, per).then(PatternTotals::default),
                    crc: crc32fast::Hasher::new(),
                    dists: self.refs.iter().map(|r| r.matches[t].map(|_| DistanceAcc::default())).collect(),
                });
                return Some(Task::Pass1 { t, k: 0, start: 0, n: per });
            }
            if g.next_todo == g.todo.len() && g.jobs.is_empty() && g.whole_running == 0 {
                return None;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether tensor `t`, read `at_once` elements at a time at most, is done by counting its bit
    /// patterns: a large f16 or bf16 tensor (the counters of one read are u32).
    fn by_patterns(&self, t: usize, at_once: usize) -> bool {
        let dtype = self.ck.tensors[t].dtype;
        matches!(dtype, Dtype::F16 | Dtype::BF16)
            && self.ck.tensor_bytes(t) / dtype.size() as u64 >= PATTERNS_MIN
            && (at_once as u64) < u32::MAX as u64
    }

    fn sink_err(&self, e: anyhow::Error) -> IngestError {
        IngestError::Sink { path: self.ck.path.clone(), why: format!("{e:#}") }
    }

    /// Calls `f(offset, values)` for consecutive pieces of elements `start .. start + n` of tensor
    /// `t` (offset from `start`), each widened just before `f` sees it.
    fn pieces(
        &self,
        t: usize,
        start: usize,
        n: usize,
        src: Src<'_>,
        bufs: &mut PieceBufs,
        mut f: impl FnMut(usize, ChunkValues<'_>, &[u8]) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        let mut off = 0;
        while off < n {
            let m = PIECE.min(n - off);
            let (dtype, raw) = match src {
                Src::Read => bufs.raw.fill_raw(self.ck, t, start + off, m)?,
                Src::Bytes(dtype, b) => (dtype, &b[off * dtype.size()..(off + m) * dtype.size()]),
            };
            f(off, widen_into(dtype, raw, &mut bufs.wide, &mut bufs.wide64), raw)?;
            off += m;
        }
        Ok(())
    }

    /// The first-pass work on elements `start .. start + n` of tensor `t`, a piece at a time: moments
    /// (or, `by_patterns`, the count of each bit pattern into `bufs.patterns`), checksum, sinks, distances.
    fn fused1(
        &self,
        t: usize,
        start: usize,
        n: usize,
        src: Src<'_>,
        by_patterns: bool,
        bufs: &mut Bufs,
    ) -> Result<Done1, IngestError> {
        let mut part = Part1::empty();
        let mut crc = crc32fast::Hasher::new();
        let mut dists: Vec<Option<Vec<f64>>> =
            self.refs.iter().map(|r| r.matches[t].map(|_| Vec::new())).collect();
        let Bufs { piece, refs, patterns } = bufs;
        // Nothing left from a read that failed half way.
        patterns.clear();
        self.pieces(t, start, n, src, piece, |off, values, raw| {
            if by_patterns {
                debug_assert_eq!(raw.len(), 2 * values.len(), "16-bit elements");
                patterns.count_le(raw);
            } else {
                part.append(stats::part1(values));
            }
            crc.update(&values.le_bytes());
            for s in self.sinks {
                s.chunk(t, start + off, values).map_err(|e| self.sink_err(e))?;
            }
            for (r, d) in self.refs.iter().zip(dists.iter_mut()) {
                let (Some(j), Some(acc)) = (r.matches[t], d.as_mut()) else { continue };
                match ref_blocks(r.source, j, start + off, values, refs) {
                    Some(b) => acc.extend_from_slice(&b),
                    None => *d = None,
                }
            }
            Ok(())
        })?;
        Ok(Done1 { part, crc, dists })
    }

    /// The second pass on elements `start .. start + n` of tensor `t`, a piece at a time.
    fn fused2(
        &self,
        t: usize,
        start: usize,
        n: usize,
        src: Src<'_>,
        plan: &Plan2,
        bufs: &mut Bufs,
    ) -> Result<Part2, IngestError> {
        let mut part = Part2::empty();
        self.pieces(t, start, n, src, &mut bufs.piece, |_, values, _| {
            part.append(stats::part2(values, plan));
            Ok(())
        })?;
        Ok(part)
    }

    fn whole(&self, t: usize, bufs: &mut Bufs) -> Result<(), IngestError> {
        let info = &self.ck.tensors[t];
        let numel = (self.ck.tensor_bytes(t) / info.dtype.size() as u64) as usize;
        let mut held = std::mem::take(&mut bufs.piece.raw);
        let res = (|| {
            // Read once, in one piece of memory, for both passes.
            let owned;
            let (dtype, raw) = if self.ck.streamable(t) {
                held.fill_raw(self.ck, t, 0, numel)?
            } else {
                owned = self.ck.read_raw(t)?;
                (info.dtype, owned.as_slice())
            };
            let src = Src::Bytes(dtype, raw);
            let by_patterns = self.by_patterns(t, numel);
            let d = self.fused1(t, 0, numel, src, by_patterns, bufs)?;
            let bins = self.opts.bins;
            let counted =
                if by_patterns { bufs.patterns.take_stats(numel as u64, bins, dtype) } else { None };
            let stats = match counted {
                Some(s) => s,
                None => {
                    let mut acc = TensorAcc::new(numel as u64, self.opts.bins);
                    acc.add1(&d.part);
                    if let Some(plan) = acc.plan() {
                        acc.add2(&self.fused2(t, 0, numel, src, &plan, bufs)?);
                    }
                    acc.finish()
                }
            };
            let dists = d
                .dists
                .iter()
                .map(|b| {
                    b.as_ref().map(|b| {
                        let mut a = DistanceAcc::default();
                        a.add(b);
                        a.value()
                    })
                })
                .collect();
            Ok::<_, IngestError>(TensorResult { stats, dists, crc: d.crc })
        })();
        // A tensor read whole for lack of range reads does not keep its buffer.
        if held.capacity_bytes() <= 4 * self.chunk {
            bufs.piece.raw = held;
        }
        let r = res?;
        self.done_bytes.fetch_add(self.ck.tensor_bytes(t), Ordering::Relaxed);
        let mut g = lock(self.sched);
        g.results[t] = Some(r);
        g.whole_running -= 1;
        g.finished += 1;
        self.cv.notify_all();
        Ok(())
    }

    fn pass1(&self, t: usize, k: usize, start: usize, n: usize, bufs: &mut Bufs) -> Result<(), IngestError> {
        let by_patterns = self.by_patterns(t, n);
        let d = self.fused1(t, start, n, Src::Read, by_patterns, bufs)?;
        let dtype = self.ck.tensors[t].dtype;
        self.done_bytes.fetch_add(n as u64 * dtype.size() as u64, Ordering::Relaxed);
        let mut g = lock(self.sched);
        let Some(pos) = g.jobs.iter().position(|j| j.t == t) else { return Ok(()) };
        let job = &mut g.jobs[pos];
        // Counts add up in any order.
        if let Some(totals) = job.patterns.as_mut() {
            bufs.patterns.drain_into(totals);
        }
        job.pending1.insert(k, d);
        while let Some(d) = job.pending1.remove(&job.merged) {
            job.acc.add1(&d.part);
            job.crc.combine(&d.crc);
            for (acc, b) in job.dists.iter_mut().zip(&d.dists) {
                match (acc.as_mut(), b) {
                    (Some(a), Some(b)) => a.add(b),
                    _ => *acc = None,
                }
            }
            job.merged += 1;
        }
        if job.merged == job.chunks {
            // A tensor done by patterns is done: its statistics follow from the counts.
            let counted =
                job.patterns.as_ref().and_then(|p| p.stats(job.numel as u64, self.opts.bins, dtype));
            if let Some(stats) = counted {
                finish_job(&mut g, pos, Some(stats));
                self.cv.notify_all();
                return Ok(());
            }
            match job.acc.plan() {
                Some(plan) => {
                    job.plan = Some(plan);
                    job.second = true;
                    job.next = 0;
                    job.merged = 0;
                }
                None => finish_job(&mut g, pos, None),
            }
        }
        self.cv.notify_all();
        Ok(())
    }

    fn pass2(
        &self,
        t: usize,
        k: usize,
        start: usize,
        n: usize,
        plan: &Plan2,
        bufs: &mut Bufs,
    ) -> Result<(), IngestError> {
        let p = self.fused2(t, start, n, Src::Read, plan, bufs)?;
        let mut g = lock(self.sched);
        let Some(pos) = g.jobs.iter().position(|j| j.t == t) else { return Ok(()) };
        let job = &mut g.jobs[pos];
        job.pending2.insert(k, p);
        while let Some(p) = job.pending2.remove(&job.merged) {
            job.acc.add2(&p);
            job.merged += 1;
        }
        if job.merged == job.chunks {
            finish_job(&mut g, pos, None);
        }
        self.cv.notify_all();
        Ok(())
    }
}

/// Records job `pos`'s result: `stats`, else its accumulated passes'.
fn finish_job(g: &mut Sched, pos: usize, stats: Option<TensorStats>) {
    let Some(job) = g.jobs.remove(pos) else { return };
    let dists = job.dists.iter().map(|d| d.map(|d| d.value())).collect();
    let stats = stats.unwrap_or_else(|| job.acc.finish());
    g.results[job.t] = Some(TensorResult { stats, dists, crc: job.crc });
    g.finished += 1;
}

/// Σ(x − ref)² per block for this piece against the same range of reference tensor `j`; None when
/// the reference could not be read.
fn ref_blocks(
    src: &RefSource,
    j: usize,
    start: usize,
    values: ChunkValues<'_>,
    bufs: &mut RefBufs,
) -> Option<Vec<f64>> {
    let n = values.len();
    match src {
        RefSource::Files(rck) => {
            let r = bufs.chunk.fill(rck, j, start, n).ok()?;
            stats::sq_diff_blocks(values, r)
        }
        RefSource::Archive(a) => {
            bufs.f64s.resize(n, 0.0);
            a.read_f64(j, start, &mut bufs.f64s[..n], &mut bufs.scratch).ok()?;
            stats::sq_diff_blocks(values, ChunkValues::F64(&bufs.f64s[..n]))
        }
    }
}

/// Whether a reference tensor of `dtype` and `shape` can be compared with one of `shape`.
pub(crate) fn comparable(dtype: Option<Dtype>, shape: &[usize], want: &[usize]) -> bool {
    dtype.is_none_or(|d| d.is_float()) && shape == want
}
