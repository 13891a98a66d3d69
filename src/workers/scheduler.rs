//! The task scheduler every model-work runner uses (slices, the ratio map, Hutchinson and SLQ spread
//! over workers): tasks in dynamic blocks, lost workers, stragglers. The caller's thread is the only
//! one that records results (and so the only store writer); each evaluator runs on a thread of its own
//! and asks for its next block when it has finished one, so fast workers take more.
//!
//! - **Blocks** are small and shrink towards the end (guided: the points left over four per worker, at
//!   most [`MAX_BLOCK`], and no more than about [`BLOCK_SECONDS`] of that worker's measured time per
//!   point, so a cancel or a loss costs little).
//! - **A lost worker** (it died, its node went, its connection broke: [`PointError::Lost`]) has the
//!   points of its block that no one has finished put back at the front of the queue; the others take
//!   them. Only when every worker is lost does the grid fail. A model error ([`PointError::Fatal`]) is
//!   the same on every worker: it stops the grid.
//! - **A straggler**: once the queue is empty, an idle worker takes a copy of the unfinished points of
//!   the busiest other block (each block is copied at most once) when that is worth it: the idle
//!   worker's pace is known, the block's owner has been at it [`STRAGGLER_MARGIN`] times longer than
//!   the copy would take, and the owner is slower by that margin (or its pace is not known yet, or it
//!   has overrun its own expected time for the block by that margin). Equal workers on one machine
//!   thus never compute points twice (two workers on two cores would only slow each other); the first
//!   result for a point wins,
//!   later ones are dropped. When every point is in, workers still busy with copies get a grace period
//!   (four times the fastest worker's time per point, at least 2 s) to finish their request, then are
//!   stopped (their [`Evaluator::abort`]).
//!
//! Each point's value depends only on the point (the workers hold the same model, data and plane), so
//! the grid is the same bit for bit whatever the number of workers, losses or copies.

use crate::cancel::Cancel;
use anyhow::Result;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

/// How much slower (or longer overdue) a block's owner must be before an idle worker copies its block.
pub(crate) const STRAGGLER_MARGIN: f64 = 2.0;
/// Most points in one block.
pub(crate) const MAX_BLOCK: usize = 16;
/// Blocks are sized to take about this long on their worker (once its speed is known).
pub(crate) const BLOCK_SECONDS: f64 = 2.0;

/// Why a block was not finished.
#[derive(Debug)]
pub enum PointError {
    /// The worker is gone (process died, connection lost): its points go to the others.
    Lost(anyhow::Error),
    /// The model or the request failed: the same would happen anywhere, the grid stops.
    Fatal(anyhow::Error),
}

/// Called with `(k, result)` as each task of a block is finished.
pub(crate) type Sink<'s, R> = &'s mut dyn FnMut(usize, R);
/// Evaluates a block of `(k, input)` tasks, reporting each result as it comes.
pub(crate) type EvalFn<'a, T, R> =
    Box<dyn FnMut(&[(usize, T)], Sink<'_, R>) -> Result<(), PointError> + Send + 'a>;

/// One worker as the dispatcher sees it: tasks of input `T` (a grid point's coordinates) give `R`.
pub struct Evaluator<'a, T, R> {
    /// For messages: which worker.
    pub name: String,
    pub eval: EvalFn<'a, T, R>,
    /// Stops the worker from another thread (its `eval` then returns `Lost`).
    pub abort: Option<Box<dyn Fn() + Send + Sync + 'a>>,
}

/// A slice's evaluator: grid point (x, y) → (loss, accuracy).
pub(crate) type PointEvaluator<'a> = Evaluator<'a, (f64, f64), (f64, Option<f64>)>;

impl<'a, T: Copy, R> Evaluator<'a, T, R> {
    #[cfg(test)]
    /// An evaluator from a function of one task; its errors are fatal.
    pub(crate) fn per_task(
        name: impl Into<String>,
        mut f: impl FnMut(T) -> Result<R> + Send + 'a,
    ) -> Evaluator<'a, T, R> {
        Evaluator {
            name: name.into(),
            eval: Box::new(move |block, sink| {
                for &(k, t) in block {
                    sink(k, f(t).map_err(PointError::Fatal)?);
                }
                Ok(())
            }),
            abort: None,
        }
    }
}

impl<'a> PointEvaluator<'a> {
    #[cfg(test)]
    /// A slice evaluator from a function of one point; its errors are fatal.
    pub(crate) fn per_point(
        name: impl Into<String>,
        mut f: impl FnMut(f64, f64) -> Result<(f64, Option<f64>)> + Send + 'a,
    ) -> PointEvaluator<'a> {
        Evaluator::per_task(name, move |(x, y)| f(x, y))
    }
}

/// What happened besides the values.
#[derive(Debug, Default, Clone)]
pub struct DispatchReport {
    /// Points each worker delivered first, in the order of the evaluators.
    pub points: Vec<usize>,
    /// One line per lost worker.
    pub lost: Vec<String>,
    /// Blocks copied to an idle worker.
    pub copied_blocks: usize,
    /// Results that arrived second and were dropped.
    pub duplicates: usize,
}

struct InFlight {
    ks: Vec<usize>,
    copied: bool,
    started: Instant,
}

struct Sched {
    queue: VecDeque<usize>,
    got: Vec<bool>,
    left: usize,
    inflight: Vec<Option<InFlight>>,
    alive: usize,
    stop: bool,
    /// Seconds per point per worker (moving average), once known.
    pace: Vec<Option<f64>>,
    copied_blocks: usize,
}

impl Sched {
    fn block_size(&self, me: usize) -> usize {
        let guided = self.queue.len().div_ceil(4 * self.alive.max(1)).clamp(1, MAX_BLOCK);
        match self.pace[me] {
            Some(s) if s > 0.0 => guided.min(((BLOCK_SECONDS / s) as usize).max(1)),
            _ => guided.min(4),
        }
    }

    /// The next block for worker `me`: fresh points, else a copy of a straggler's unfinished ones.
    /// `None` with `wait = true` means "nothing now, ask again"; with `wait = false`, "finished".
    fn next(&mut self, me: usize) -> (Option<Vec<usize>>, bool) {
        if self.stop || self.left == 0 {
            return (None, false);
        }
        let n = self.block_size(me);
        let mut ks = Vec::with_capacity(n);
        while ks.len() < n
            && let Some(k) = self.queue.pop_front()
        {
            if !self.got[k] {
                ks.push(k);
            }
        }
        if !ks.is_empty() {
            self.inflight[me] = Some(InFlight { ks: ks.clone(), copied: false, started: Instant::now() });
            return (Some(ks), false);
        }
        // The queue is empty: copy the uncopied straggler's block with the most unfinished points.
        let now = Instant::now();
        let best = (0..self.inflight.len())
            .filter(|&w| w != me)
            .filter_map(|w| {
                let b = self.inflight[w].as_ref()?;
                let open = b.ks.iter().filter(|&&k| !self.got[k]).count();
                (!b.copied && open > 0 && self.worth_copying(me, w, b, open, now)).then_some((open, w))
            })
            .max();
        if let Some((_, w)) = best
            && let Some(b) = self.inflight[w].as_mut()
        {
            b.copied = true;
            let ks: Vec<usize> = b.ks.iter().copied().filter(|&k| !self.got[k]).collect();
            self.inflight[me] = Some(InFlight { ks: ks.clone(), copied: true, started: now });
            self.copied_blocks += 1;
            return (Some(ks), false);
        }
        // Others are still working: wait, their points may come back if they are lost.
        (None, self.inflight.iter().any(|b| b.is_some()))
    }

    /// Whether idle worker `me` should copy worker `w`'s block `b` (`open` points unfinished): see the
    /// module docs.
    fn worth_copying(&self, me: usize, w: usize, b: &InFlight, open: usize, now: Instant) -> bool {
        let Some(mine) = self.pace[me] else { return false };
        let elapsed = now.saturating_duration_since(b.started).as_secs_f64();
        if elapsed < STRAGGLER_MARGIN * open as f64 * mine {
            return false;
        }
        match self.pace[w] {
            Some(theirs) => {
                theirs > STRAGGLER_MARGIN * mine || elapsed > STRAGGLER_MARGIN * b.ks.len() as f64 * theirs
            }
            None => true,
        }
    }

    /// Worker `me` is gone: its unfinished points go back to the front of the queue.
    fn lost(&mut self, me: usize) -> usize {
        self.alive = self.alive.saturating_sub(1);
        let Some(b) = self.inflight[me].take() else { return 0 };
        let back: Vec<usize> = b.ks.into_iter().filter(|&k| !self.got[k]).collect();
        for &k in back.iter().rev() {
            self.queue.push_front(k);
        }
        back.len()
    }
}

enum Msg<R> {
    Point {
        k: usize,
        r: R,
    },
    /// A second result for a point already in (a straggler's copy): dropped.
    Duplicate,
    Lost {
        who: String,
        err: anyhow::Error,
        back: usize,
    },
    Fatal(anyhow::Error),
}

/// Runs every task of `inputs` on the evaluators (see the module docs). `on_result(k, worker, r)` is
/// called on the calling thread with each first result; an error from it stops the run and is
/// returned. `on_lost` gets one line per lost worker. Stops between blocks when `cancel` is set. Errors:
/// a model error, every worker lost, or `on_result`'s; tasks finished before are delivered either way.
pub(crate) fn run_tasks<T: Copy + Send + Sync, R: Send>(
    inputs: &[T],
    evals: Vec<Evaluator<'_, T, R>>,
    cancel: &Cancel,
    mut on_result: impl FnMut(usize, usize, R) -> Result<()>,
    mut on_lost: impl FnMut(&str),
) -> Result<DispatchReport> {
    if evals.is_empty() {
        anyhow::bail!("no worker to evaluate on");
    }
    let n_workers = evals.len();
    let mut report = DispatchReport { points: vec![0; n_workers], ..Default::default() };
    let sched = Mutex::new(Sched {
        queue: (0..inputs.len()).collect(),
        got: vec![false; inputs.len()],
        left: inputs.len(),
        inflight: (0..n_workers).map(|_| None).collect(),
        alive: n_workers,
        stop: false,
        pace: vec![None; n_workers],
        copied_blocks: 0,
    });
    let wake = Condvar::new();
    let mut first_err: Option<anyhow::Error> = None;
    let mut aborts: Vec<Abort<'_>> = Vec::with_capacity(n_workers);
    let mut runs = Vec::with_capacity(n_workers);
    for e in evals {
        aborts.push(e.abort);
        runs.push((e.name, e.eval));
    }
    std::thread::scope(|scope| {
        // Bounded: a worker waits while the calling thread is behind (persisting), so a cancel set by
        // `on_result` is seen within a block.
        let (tx, rx) = mpsc::sync_channel::<(usize, Msg<R>)>(2 * n_workers);
        for (me, (name, eval)) in runs.into_iter().enumerate() {
            let tx = tx.clone();
            let (sched, wake) = (&sched, &wake);
            scope.spawn(move || serve(me, name, eval, inputs, cancel, sched, wake, tx));
        }
        drop(tx);
        // Ends when every worker thread has finished (each holds a sender).
        let mut stopped_stragglers = false;
        for (me, msg) in rx {
            match msg {
                Msg::Point { k, r } => {
                    // Every finished task is delivered, also after another worker's error.
                    report.points[me] += 1;
                    if let Err(e) = on_result(k, me, r) {
                        lock(&sched).stop = true;
                        first_err.get_or_insert(e);
                    }
                }
                Msg::Duplicate => report.duplicates += 1,
                Msg::Lost { who, err, back } => {
                    let line = format!(
                        "worker {who} was lost ({err:#}); its {back} unfinished points go to the others"
                    );
                    on_lost(&line);
                    report.lost.push(line);
                    let s = lock(&sched);
                    if s.alive == 0 && s.left > 0 && first_err.is_none() {
                        // The last worker's error stays in the chain (a job counts a timeout as such).
                        first_err = Some(err.context(format!(
                            "every worker was lost before the work was finished; the last: {who}"
                        )));
                    }
                }
                Msg::Fatal(err) => {
                    first_err.get_or_insert(err);
                }
            }
            // Every task is in: workers still busy hold copies (a straggler's block, or the copy of
            // one). They get a grace period to end their request cleanly, then are stopped.
            if !stopped_stragglers && lock(&sched).left == 0 {
                stopped_stragglers = true;
                let (sched, aborts, wake) = (&sched, &aborts, &wake);
                scope.spawn(move || stop_stragglers(sched, aborts, wake));
            }
        }
    });
    report.copied_blocks = lock(&sched).copied_blocks;
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// How another thread stops a worker.
type Abort<'a> = Option<Box<dyn Fn() + Send + Sync + 'a>>;

fn lock(sched: &Mutex<Sched>) -> MutexGuard<'_, Sched> {
    sched.lock().unwrap_or_else(|p| p.into_inner())
}

/// One worker's thread: takes blocks until none is left (or the work stops), sends each first result
/// (and each duplicate) to the calling thread, keeps the worker's pace, and reports a lost worker or a
/// model error.
#[allow(clippy::too_many_arguments)]
fn serve<T: Copy, R>(
    me: usize,
    name: String,
    mut eval: EvalFn<'_, T, R>,
    inputs: &[T],
    cancel: &Cancel,
    sched: &Mutex<Sched>,
    wake: &Condvar,
    tx: mpsc::SyncSender<(usize, Msg<R>)>,
) {
    loop {
        let ks = loop {
            let mut s = lock(sched);
            if cancel.is_cancelled() {
                s.stop = true;
            }
            match s.next(me) {
                (Some(ks), _) => break Some(ks),
                (None, false) => break None,
                (None, true) => {
                    let _ = wake.wait_timeout(s, Duration::from_millis(100));
                }
            }
        };
        let Some(ks) = ks else { break };
        let block: Vec<(usize, T)> = ks.iter().map(|&k| (k, inputs[k])).collect();
        let started = Instant::now();
        let mut count = 0usize;
        let r = eval(&block, &mut |k, r| {
            count += 1;
            let first = {
                let mut s = lock(sched);
                let first = k < s.got.len() && !s.got[k];
                if first {
                    s.got[k] = true;
                    s.left -= 1;
                }
                first
            };
            let _ = tx.send((me, if first { Msg::Point { k, r } } else { Msg::Duplicate }));
        });
        let mut s = lock(sched);
        match r {
            Ok(()) => {
                if count > 0 {
                    let per = started.elapsed().as_secs_f64() / count as f64;
                    s.pace[me] = Some(match s.pace[me] {
                        Some(p) => 0.5 * p + 0.5 * per,
                        None => per,
                    });
                }
                s.inflight[me] = None;
                drop(s);
                wake.notify_all();
            }
            Err(PointError::Lost(err)) => {
                let finished = s.left == 0 || s.stop;
                let back = s.lost(me);
                drop(s);
                wake.notify_all();
                if !finished {
                    let _ = tx.send((me, Msg::Lost { who: name.clone(), err, back }));
                }
                break;
            }
            Err(PointError::Fatal(err)) => {
                s.stop = true;
                s.inflight[me] = None;
                drop(s);
                wake.notify_all();
                let _ = tx.send((me, Msg::Fatal(err)));
                break;
            }
        }
    }
}

/// Once every task is in: workers still busy (with copies) get four times the fastest worker's time
/// per point, at least 2 s, to end their request, then are stopped.
fn stop_stragglers(sched: &Mutex<Sched>, aborts: &[Abort<'_>], wake: &Condvar) {
    let grace = {
        let s = lock(sched);
        let fastest = s.pace.iter().flatten().copied().fold(f64::INFINITY, f64::min);
        Duration::from_secs_f64(if fastest.is_finite() { (4.0 * fastest).max(2.0) } else { 2.0 })
    };
    let t = Instant::now();
    loop {
        let busy: Vec<usize> = {
            let s = lock(sched);
            (0..aborts.len()).filter(|&w| s.inflight[w].is_some()).collect()
        };
        if busy.is_empty() {
            return;
        }
        if t.elapsed() >= grace {
            for w in busy {
                if let Some(abort) = &aborts[w] {
                    abort();
                }
            }
            wake.notify_all();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two workers, worker 1 holding block [0, 1, 2, 3] for `held` seconds with `pace` (s/point) each;
    /// worker 0, idle at 0.01 s/point, asks for work with the queue empty.
    fn idle_asks(held: f64, pace: Option<f64>) -> Option<Vec<usize>> {
        let started = Instant::now().checked_sub(Duration::from_secs_f64(held)).unwrap();
        let mut s = Sched {
            queue: VecDeque::new(),
            got: vec![false; 4],
            left: 4,
            inflight: vec![None, Some(InFlight { ks: vec![0, 1, 2, 3], copied: false, started })],
            alive: 2,
            stop: false,
            pace: vec![Some(0.01), pace],
            copied_blocks: 0,
        };
        s.next(0).0
    }

    #[test]
    fn equal_workers_do_not_copy_each_others_blocks() {
        // As fast, and within its expected 0.04 s: nothing to gain from a copy.
        assert_eq!(idle_asks(0.035, Some(0.01)), None);
        // Slower, but not by more than the margin, and within twice its own expected 0.08 s.
        assert_eq!(idle_asks(0.1, Some(0.02)), None);
    }

    #[test]
    fn a_slower_or_overdue_worker_has_its_block_copied() {
        // Three times slower, and at it long enough for the copy to pay.
        assert_eq!(idle_asks(0.1, Some(0.03)), Some(vec![0, 1, 2, 3]));
        // As fast by its pace, but overdue past twice its expected 0.04 s (stalled, swapping).
        assert_eq!(idle_asks(0.5, Some(0.01)), Some(vec![0, 1, 2, 3]));
        // Pace not known yet (its first block), held longer than the copy takes.
        assert_eq!(idle_asks(0.5, None), Some(vec![0, 1, 2, 3]));
        // Just started: the copy would not finish first.
        assert_eq!(idle_asks(0.0, None), None);
    }
}
