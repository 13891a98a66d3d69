//! Handing grid points to workers: dynamic blocks, lost workers, stragglers. The caller's thread is the
//! only one that records results (and so the only store writer); each evaluator runs on a thread of its
//! own and asks for its next block when it has finished one, so fast workers take more.
//!
//! - **Blocks** are small and shrink towards the end (guided: the points left over four per worker, at
//!   most [`MAX_BLOCK`], and no more than about [`BLOCK_SECONDS`] of that worker's measured time per
//!   point, so a cancel or a loss costs little).
//! - **A lost worker** (it died, its node went, its connection broke: [`PointError::Lost`]) has the
//!   points of its block that no one has finished put back at the front of the queue; the others take
//!   them. Only when every worker is lost does the grid fail. A model error ([`PointError::Fatal`]) is
//!   the same on every worker: it stops the grid.
//! - **A straggler**: once the queue is empty, an idle worker takes a copy of the unfinished points of
//!   the busiest other block (each block is copied at most once); the first result for a point wins,
//!   later ones are dropped. When every point is in, workers still busy with copies get a grace period
//!   (four times the fastest worker's time per point, at least 2 s) to finish their request, then are
//!   stopped (their [`Evaluator::abort`]).
//!
//! Each point's value depends only on the point (the workers hold the same model, data and plane), so
//! the grid is the same bit for bit whatever the number of workers, losses or copies.

use super::slice::{Outcome, SliceValues};
use anyhow::Result;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Most points in one block.
pub const MAX_BLOCK: usize = 16;
/// Blocks are sized to take about this long on their worker (once its speed is known).
pub const BLOCK_SECONDS: f64 = 2.0;

/// Why a block was not finished.
#[derive(Debug)]
pub enum PointError {
    /// The worker is gone (process died, connection lost): its points go to the others.
    Lost(anyhow::Error),
    /// The model or the request failed: the same would happen anywhere, the grid stops.
    Fatal(anyhow::Error),
}

/// Called with `(k, result)` as each task of a block is finished.
pub type Sink<'s, R> = &'s mut dyn FnMut(usize, R);
/// Evaluates a block of `(k, input)` tasks, reporting each result as it comes.
pub type EvalFn<'a, T, R> = Box<dyn FnMut(&[(usize, T)], Sink<'_, R>) -> Result<(), PointError> + Send + 'a>;

/// One worker as the dispatcher sees it: tasks of input `T` (a grid point's coordinates) give `R`.
pub struct Evaluator<'a, T, R> {
    /// For messages: which worker.
    pub name: String,
    pub eval: EvalFn<'a, T, R>,
    /// Stops the worker from another thread (its `eval` then returns `Lost`).
    pub abort: Option<Box<dyn Fn() + Send + Sync + 'a>>,
}

/// A slice's evaluator: grid point (x, y) → (loss, accuracy).
pub type PointEvaluator<'a> = Evaluator<'a, (f64, f64), (f64, Option<f64>)>;

impl<'a, T: Copy, R> Evaluator<'a, T, R> {
    /// An evaluator from a function of one task; its errors are fatal.
    pub fn per_task(
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
    /// A slice evaluator from a function of one point; its errors are fatal.
    pub fn per_point(
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
            self.inflight[me] = Some(InFlight { ks: ks.clone(), copied: false });
            return (Some(ks), false);
        }
        // The queue is empty: copy the uncopied block with the most unfinished points.
        let best = (0..self.inflight.len())
            .filter(|&w| w != me)
            .filter_map(|w| {
                let b = self.inflight[w].as_ref()?;
                let open = b.ks.iter().filter(|&&k| !self.got[k]).count();
                (!b.copied && open > 0).then_some((open, w))
            })
            .max();
        if let Some((_, w)) = best
            && let Some(b) = self.inflight[w].as_mut()
        {
            b.copied = true;
            let ks: Vec<usize> = b.ks.iter().copied().filter(|&k| !self.got[k]).collect();
            self.inflight[me] = Some(InFlight { ks: ks.clone(), copied: true });
            self.copied_blocks += 1;
            return (Some(ks), false);
        }
        // Others are still working: wait, their points may come back if they are lost.
        (None, self.inflight.iter().any(|b| b.is_some()))
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
pub fn run_tasks<T: Copy + Send + Sync, R: Send>(
    inputs: &[T],
    evals: Vec<Evaluator<'_, T, R>>,
    cancel: &AtomicBool,
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
    let lock = || sched.lock().unwrap_or_else(|p| p.into_inner());
    let mut first_err: Option<anyhow::Error> = None;
    let mut aborts: Vec<Option<Box<dyn Fn() + Send + Sync + '_>>> = Vec::with_capacity(n_workers);
    let mut runs = Vec::with_capacity(n_workers);
    for e in evals {
        aborts.push(e.abort);
        runs.push((e.name, e.eval));
    }
    std::thread::scope(|scope| {
        // Bounded: a worker waits while the calling thread is behind (persisting), so a cancel set by
        // `on_result` is seen within a block.
        let (tx, rx) = mpsc::sync_channel::<(usize, Msg<R>)>(2 * n_workers);
        for (me, (name, mut eval)) in runs.into_iter().enumerate() {
            let tx = tx.clone();
            let (wake, lock) = (&wake, &lock);
            scope.spawn(move || {
                loop {
                    let ks = loop {
                        let mut s = lock();
                        if cancel.load(Ordering::Relaxed) {
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
                            let mut s = lock();
                            let first = k < s.got.len() && !s.got[k];
                            if first {
                                s.got[k] = true;
                                s.left -= 1;
                            }
                            first
                        };
                        let _ = tx.send((me, if first { Msg::Point { k, r } } else { Msg::Duplicate }));
                    });
                    let mut s = lock();
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
            });
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
                        lock().stop = true;
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
                    let s = lock();
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
            if !stopped_stragglers && lock().left == 0 {
                stopped_stragglers = true;
                let (lock, aborts, wake) = (&lock, &aborts, &wake);
                scope.spawn(move || {
                    let grace = {
                        let s = lock();
                        let fastest = s.pace.iter().flatten().copied().fold(f64::INFINITY, f64::min);
                        Duration::from_secs_f64(if fastest.is_finite() {
                            (4.0 * fastest).max(2.0)
                        } else {
                            2.0
                        })
                    };
                    let t = Instant::now();
                    loop {
                        let busy: Vec<usize> = {
                            let s = lock();
                            (0..n_workers).filter(|&w| s.inflight[w].is_some()).collect()
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
                });
            }
        }
    });
    report.copied_blocks = lock().copied_blocks;
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Fills every point of `values` not yet done (row-major) with [`run_tasks`]. Results are recorded,
/// persisted and reported on the calling thread: `persist` every `persist_every` points and at the end
/// (complete, cancelled or failed), `progress` after every point with the number done, `on_lost` with
/// one line per lost worker. Stops between blocks when `cancel` is set; every point already finished
/// is kept.
pub fn evaluate_points(
    values: &mut SliceValues,
    evals: Vec<PointEvaluator<'_>>,
    cancel: &AtomicBool,
    persist_every: usize,
    mut persist: impl FnMut(&SliceValues) -> Result<()>,
    mut progress: impl FnMut(usize),
    on_lost: impl FnMut(&str),
) -> Result<(Outcome, DispatchReport)> {
    let pending: Vec<usize> = (0..values.done.len()).filter(|&i| !values.done[i]).collect();
    let coords: Vec<(f64, f64)> = pending.iter().map(|&i| values.coords(i)).collect();
    let mut done = values.done_count();
    let mut since = 0usize;
    let every = persist_every.max(1);
    let r = run_tasks(
        &coords,
        evals,
        cancel,
        |k, _, (loss, acc)| {
            let i = pending[k];
            values.loss[i] = loss;
            values.accuracy[i] = acc.unwrap_or(f64::NAN);
            values.done[i] = true;
            done += 1;
            since += 1;
            progress(done);
            if since >= every {
                since = 0;
                persist(values)?;
            }
            Ok(())
        },
        on_lost,
    );
    persist(values)?;
    let report = r?;
    Ok((if values.is_complete() { Outcome::Complete } else { Outcome::Cancelled }, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn grid_7x3() -> SliceValues {
        SliceValues::new((0..7).map(f64::from).collect(), vec![0.0, 1.0, 2.0])
    }

    fn f(x: f64, y: f64) -> f64 {
        (x * 0.37 + y).sin() * 1e3 + x * y
    }

    fn run(v: &mut SliceValues, evals: Vec<PointEvaluator<'_>>) -> Result<(Outcome, DispatchReport)> {
        let never = AtomicBool::new(false);
        evaluate_points(v, evals, &never, 5, |_| Ok(()), |_| {}, |_| {})
    }

    fn expected() -> SliceValues {
        let mut v = grid_7x3();
        run(&mut v, vec![Evaluator::per_point("one", |x, y| Ok((f(x, y), Some(x))))]).unwrap();
        v
    }

    /// An evaluator that loses its worker after `after` points (and then never comes back).
    fn dies_after<'a>(name: &str, after: usize, calls: &'a AtomicUsize) -> PointEvaluator<'a> {
        let mut n = 0;
        Evaluator {
            name: name.into(),
            eval: Box::new(move |block, sink| {
                for &(k, (x, y)) in block {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if n == after {
                        return Err(PointError::Lost(anyhow::anyhow!("killed by signal 9")));
                    }
                    n += 1;
                    sink(k, (f(x, y), Some(x)));
                }
                Ok(())
            }),
            abort: None,
        }
    }

    #[test]
    fn one_worker_fills_the_grid_in_order() {
        let v = expected();
        assert!(v.is_complete());
        for i in 0..21 {
            let (x, y) = v.coords(i);
            assert_eq!(v.loss[i], f(x, y));
        }
    }

    #[test]
    fn the_grid_is_the_same_whatever_the_workers_and_losses() {
        let want = expected();
        for workers in [2, 3, 5] {
            for dying in 0..workers {
                let calls = AtomicUsize::new(0);
                let mut v = grid_7x3();
                let evals: Vec<_> = (0..workers)
                    .map(|w| {
                        if w < dying {
                            dies_after(&format!("w{w}"), w, &calls)
                        } else {
                            Evaluator::per_point(format!("w{w}"), |x, y| Ok((f(x, y), Some(x))))
                        }
                    })
                    .collect();
                let mut lost = Vec::new();
                let never = AtomicBool::new(false);
                let (out, report) = evaluate_points(
                    &mut v,
                    evals,
                    &never,
                    3,
                    |_| Ok(()),
                    |_| {},
                    |l| lost.push(l.to_string()),
                )
                .unwrap();
                assert_eq!(out, Outcome::Complete, "{workers} workers, {dying} dying");
                assert_eq!(
                    v.loss.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want.loss.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                );
                assert_eq!(v.accuracy, want.accuracy);
                assert_eq!(
                    report.points.iter().sum::<usize>(),
                    21,
                    "each point delivered first exactly once"
                );
                assert!(lost.len() <= dying && lost.iter().all(|l| l.contains("signal 9")), "{lost:?}");
            }
        }
    }

    #[test]
    fn when_every_worker_is_lost_the_grid_fails_and_keeps_what_was_done() {
        let calls = AtomicUsize::new(0);
        let mut v = grid_7x3();
        let mut saved = None;
        let never = AtomicBool::new(false);
        let e = evaluate_points(
            &mut v,
            vec![dies_after("a", 3, &calls), dies_after("b", 4, &calls)],
            &never,
            100,
            |s| {
                saved = Some(s.clone());
                Ok(())
            },
            |_| {},
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("every worker was lost"), "{e}");
        assert_eq!(saved.unwrap().done_count(), 7, "the 3 + 4 points finished are kept");
    }

    #[test]
    fn a_straggler_block_is_copied_to_an_idle_worker_and_the_first_result_wins() {
        let want = expected();
        let release = AtomicBool::new(false);
        let aborted = AtomicBool::new(false);
        let slow_started = AtomicBool::new(false);
        let mut v = grid_7x3();
        // The slow worker takes one block and never finishes it unless stopped.
        let slow: PointEvaluator<'_> = Evaluator {
            name: "slow".into(),
            eval: Box::new(|block, sink| {
                slow_started.store(true, Ordering::SeqCst);
                let t = Instant::now();
                while !release.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(20) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if aborted.load(Ordering::SeqCst) {
                    return Err(PointError::Lost(anyhow::anyhow!("stopped")));
                }
                for &(k, (x, y)) in block {
                    sink(k, (f(x, y) + 1.0, None)); // would be wrong: must never be recorded
                }
                Ok(())
            }),
            abort: Some(Box::new(|| {
                aborted.store(true, Ordering::SeqCst);
                release.store(true, Ordering::SeqCst);
            })),
        };
        // The fast worker starts once the slow one holds its block.
        let fast = Evaluator::per_point("fast", |x, y| {
            let t = Instant::now();
            while !slow_started.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok((f(x, y), Some(x)))
        });
        let (out, report) = run(&mut v, vec![slow, fast]).unwrap();
        assert_eq!(out, Outcome::Complete);
        assert!(aborted.load(Ordering::SeqCst), "the straggler was stopped once its points were in");
        assert_eq!(report.copied_blocks, 1);
        assert_eq!(report.points, vec![0, 21]);
        assert_eq!(v.loss, want.loss);
    }

    #[test]
    fn a_model_error_stops_every_worker_and_keeps_the_finished_points() {
        for workers in [1, 3] {
            let mut v = grid_7x3();
            let evals: Vec<_> = (0..workers)
                .map(|w| {
                    Evaluator::per_point(format!("w{w}"), |x, y| {
                        if (x, y) == (3.0, 1.0) {
                            anyhow::bail!("the loss is NaN at (3, 1)");
                        }
                        Ok((x + y, None))
                    })
                })
                .collect();
            let mut saved: Option<SliceValues> = None;
            let never = AtomicBool::new(false);
            let err = evaluate_points(
                &mut v,
                evals,
                &never,
                1000,
                |s| {
                    saved = Some(s.clone());
                    Ok(())
                },
                |_| {},
                |_| {},
            )
            .unwrap_err();
            assert!(err.to_string().contains("NaN at (3, 1)"), "{err}");
            let saved = saved.expect("finished points are saved before the error is returned");
            assert!(!saved.done[7 + 3], "the failing point is not marked done");
            assert!(saved.done_count() >= 10, "{workers} worker(s): the points before it are kept");
            assert!(!saved.is_complete());
        }
    }

    #[test]
    fn progress_counts_every_point_once_and_saves_come_every_n() {
        let mut v = grid_7x3();
        let calls = AtomicUsize::new(0);
        let evals: Vec<_> = (0..3)
            .map(|w| {
                Evaluator::per_point(format!("w{w}"), |x, y| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok((x + 10.0 * y, Some(0.5)))
                })
            })
            .collect();
        let (mut saves, mut last) = (0, 0);
        let never = AtomicBool::new(false);
        let (out, report) = evaluate_points(
            &mut v,
            evals,
            &never,
            4,
            |_| {
                saves += 1;
                Ok(())
            },
            |n| {
                assert_eq!(n, last + 1, "progress counts every point once, in order");
                last = n;
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(out, Outcome::Complete);
        // Every point once, plus the copies an idle worker made of a straggler's last block.
        assert_eq!(calls.load(Ordering::SeqCst), 21 + report.duplicates);
        assert_eq!((last, saves), (21, 21 / 4 + 1), "every 4 points and once at the end");
        assert!(v.is_complete() && v.accuracy.iter().all(|&a| a == 0.5));
    }

    #[test]
    fn cancel_keeps_finished_points_and_resume_does_the_rest() {
        let mut v = grid_7x3();
        let cancel = AtomicBool::new(false);
        let started = AtomicUsize::new(0);
        // Points after the fifth wait until the cancel arrives (set once five results are in).
        let evals: Vec<_> = (0..2)
            .map(|w| {
                Evaluator::per_point(format!("w{w}"), |x: f64, y: f64| {
                    if started.fetch_add(1, Ordering::SeqCst) >= 5 {
                        let t = Instant::now();
                        while !cancel.load(Ordering::SeqCst) && t.elapsed().as_secs() < 10 {
                            std::thread::yield_now();
                        }
                    }
                    Ok((x * y, None))
                })
            })
            .collect();
        let (out, _) = evaluate_points(
            &mut v,
            evals,
            &cancel,
            100,
            |_| Ok(()),
            |n| {
                if n == 5 {
                    cancel.store(true, Ordering::SeqCst);
                }
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(out, Outcome::Cancelled);
        // Blocks in flight when the flag was set still finish and are kept (at most 4 points each
        // before a worker's pace is known).
        let done = v.done_count();
        assert!((5..=5 + 2 * 4).contains(&done) && done < 21, "{done} points done");
        for i in 0..21 {
            let (x, y) = v.coords(i);
            if v.done[i] {
                assert_eq!(v.loss[i], x * y);
            } else {
                assert!(v.loss[i].is_nan());
            }
        }
        let calls = AtomicUsize::new(0);
        let evals: Vec<_> = (0..2)
            .map(|w| {
                Evaluator::per_point(format!("w{w}"), |x, y| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok((x * y, None))
                })
            })
            .collect();
        let (out, report) = run(&mut v, evals).unwrap();
        assert_eq!(out, Outcome::Complete);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            21 - done + report.duplicates,
            "only the missing points are computed (and copies of a straggler's last block)"
        );
        assert!((0..21).all(|i| v.loss[i] == v.coords(i).0 * v.coords(i).1));
    }
}
