//! Slice values on a grid, Z[iy][ix] with explicit coordinates and a done mask (NaN where not computed),
//! and the loop that fills them: resumable (points already done are skipped), cancellable, persisting
//! progress every few points through a callback (the store), reporting progress for a bar.

use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SliceValues {
    /// x coordinates (the first direction), length nx.
    pub xs: Vec<f64>,
    /// y coordinates; empty for a 1D slice (which has one row).
    pub ys: Vec<f64>,
    /// Row-major Z[iy][ix], length ny·nx; NaN where not computed.
    pub loss: Vec<f64>,
    /// Accuracy, same layout; NaN where not computed or not a classification loss.
    pub accuracy: Vec<f64>,
    pub done: Vec<bool>,
}

/// How a run of [`evaluate_points`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Cancelled,
}

impl SliceValues {
    pub fn new(xs: Vec<f64>, ys: Vec<f64>) -> SliceValues {
        let n = xs.len() * ys.len().max(1);
        SliceValues { xs, ys, loss: vec![f64::NAN; n], accuracy: vec![f64::NAN; n], done: vec![false; n] }
    }

    pub fn nx(&self) -> usize {
        self.xs.len()
    }

    /// Rows: 1 for a 1D slice.
    pub fn ny(&self) -> usize {
        self.ys.len().max(1)
    }

    pub fn is_2d(&self) -> bool {
        !self.ys.is_empty()
    }

    /// (x, y) of point `i` (y = 0 for 1D).
    pub fn coords(&self, i: usize) -> (f64, f64) {
        let (iy, ix) = (i / self.nx(), i % self.nx());
        (self.xs[ix], self.ys.get(iy).copied().unwrap_or(0.0))
    }

    pub fn loss_at(&self, iy: usize, ix: usize) -> f64 {
        self.loss[iy * self.nx() + ix]
    }

    /// Rows of the loss grid, Z[iy][ix].
    pub fn loss_rows(&self) -> Vec<Vec<f64>> {
        self.loss.chunks(self.nx().max(1)).map(<[f64]>::to_vec).collect()
    }

    pub fn accuracy_rows(&self) -> Vec<Vec<f64>> {
        self.accuracy.chunks(self.nx().max(1)).map(<[f64]>::to_vec).collect()
    }

    pub fn done_count(&self) -> usize {
        self.done.iter().filter(|&&d| d).count()
    }

    pub fn is_complete(&self) -> bool {
        self.done.iter().all(|&d| d)
    }

    /// The point at the centre θ* (x = 0 and y = 0), if the grid has it.
    pub fn centre(&self) -> Option<usize> {
        let ix = self.xs.iter().position(|&x| x == 0.0)?;
        let iy = if self.is_2d() { self.ys.iter().position(|&y| y == 0.0)? } else { 0 };
        Some(iy * self.nx() + ix)
    }

    /// Checks the internal shape (records read from the store are untrusted).
    pub fn check(&self) -> Result<(), String> {
        let n = self.nx() * self.ny();
        if self.loss.len() != n || self.accuracy.len() != n || self.done.len() != n {
            return Err(format!(
                "slice values have inconsistent lengths for a {}×{} grid",
                self.ny(),
                self.nx()
            ));
        }
        Ok(())
    }
}

/// Counts finished points and says when the next save is due.
struct Tally {
    done: usize,
    since: usize,
    every: usize,
}

impl Tally {
    /// Records point `i`, reports progress; true when `every` points have come since the last save.
    fn record(
        &mut self,
        values: &mut SliceValues,
        i: usize,
        (loss, acc): (f64, Option<f64>),
        progress: &mut impl FnMut(usize),
    ) -> bool {
        values.loss[i] = loss;
        values.accuracy[i] = acc.unwrap_or(f64::NAN);
        values.done[i] = true;
        self.done += 1;
        self.since += 1;
        progress(self.done);
        if self.since >= self.every {
            self.since = 0;
            return true;
        }
        false
    }
}

/// Fills every point not yet done, in row-major order. Each evaluator `eval(x, y)` gives (loss,
/// accuracy); several run on threads of their own, each taking the next pending point (a single one
/// runs on the calling thread instead). Results are recorded, persisted and reported on the calling
/// thread as they come: `persist` every `persist_every` points and at the end (complete, cancelled or
/// failed), `progress` after every point with the number done. Stops early when `cancel` is set; after a
/// cancel or an error every point already finished is kept.
pub fn evaluate_points<E>(
    values: &mut SliceValues,
    mut evals: Vec<E>,
    cancel: &AtomicBool,
    persist_every: usize,
    mut persist: impl FnMut(&SliceValues) -> Result<()>,
    mut progress: impl FnMut(usize),
) -> Result<Outcome>
where
    E: FnMut(f64, f64) -> Result<(f64, Option<f64>)> + Send,
{
    let pending: Vec<usize> = (0..values.done.len()).filter(|&i| !values.done[i]).collect();
    let coords: Vec<(f64, f64)> = pending.iter().map(|&i| values.coords(i)).collect();
    let mut tally = Tally { done: values.done_count(), since: 0, every: persist_every.max(1) };
    let mut record = |values: &mut SliceValues, i: usize, r: (f64, Option<f64>)| -> bool {
        tally.record(values, i, r, &mut progress)
    };
    if evals.len() <= 1 {
        let Some(mut eval) = evals.pop() else { anyhow::bail!("no evaluator for the slice") };
        for (k, &i) in pending.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                persist(values)?;
                return Ok(Outcome::Cancelled);
            }
            let (x, y) = coords[k];
            match eval(x, y) {
                Ok(r) => {
                    if record(values, i, r) {
                        persist(values)?;
                    }
                }
                Err(e) => {
                    persist(values)?;
                    return Err(e);
                }
            }
        }
        persist(values)?;
        return Ok(Outcome::Complete);
    }

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut first_err: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        // Bounded: a worker waits while the calling thread is behind, so a cancel set by `progress`
        // stops the grid within a few points (at most one queued and one in flight per worker).
        let (tx, rx) = mpsc::sync_channel::<(usize, Result<(f64, Option<f64>)>)>(evals.len());
        for mut eval in evals {
            let tx = tx.clone();
            let (next, failed, coords) = (&next, &failed, &coords);
            scope.spawn(move || {
                while !cancel.load(Ordering::Relaxed) && !failed.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(x, y)) = coords.get(k) else { break };
                    let r = eval(x, y);
                    let stop = r.is_err();
                    if tx.send((k, r)).is_err() || stop {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Ends when every worker has finished (each holds a sender).
        for (k, r) in rx {
            let outcome =
                r.and_then(|r| if record(values, pending[k], r) { persist(values) } else { Ok(()) });
            if let Err(e) = outcome {
                failed.store(true, Ordering::Relaxed);
                first_err.get_or_insert(e);
            }
        }
    });
    persist(values)?;
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(if values.is_complete() { Outcome::Complete } else { Outcome::Cancelled })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_square_grid_is_row_major_with_nan_until_done() {
        let mut v = SliceValues::new(vec![-1.0, 0.0, 1.0], vec![0.0, 2.0]);
        assert_eq!((v.ny(), v.nx()), (2, 3));
        assert!(v.loss.iter().all(|x| x.is_nan()));
        assert_eq!(v.centre(), Some(1));
        let never = AtomicBool::new(false);
        let out =
            evaluate_points(&mut v, vec![|x, y| Ok((10.0 * y + x, None))], &never, 2, |_| Ok(()), |_| {})
                .unwrap();
        assert_eq!(out, Outcome::Complete);
        assert_eq!(v.loss_rows(), vec![vec![-1.0, 0.0, 1.0], vec![19.0, 20.0, 21.0]]);
        assert_eq!(v.loss_at(1, 0), 19.0);
    }

    #[test]
    fn resumes_after_interruption_without_recomputing() {
        let mut v = SliceValues::new(vec![0.0, 1.0, 2.0, 3.0, 4.0], vec![]);
        let cancel = AtomicBool::new(false);
        let mut saved = None;
        let mut calls = 0;
        let out = evaluate_points(
            &mut v,
            vec![|x, _| {
                calls += 1;
                if calls == 3 {
                    cancel.store(true, Ordering::Relaxed);
                }
                Ok((x * x, Some(0.5)))
            }],
            &cancel,
            100,
            |s| {
                saved = Some(s.clone());
                Ok(())
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(out, Outcome::Cancelled);
        let mut resumed = saved.unwrap();
        assert_eq!(resumed.done, vec![true, true, true, false, false]);
        assert!(resumed.loss[3].is_nan());
        let mut xs_seen = Vec::new();
        let never = AtomicBool::new(false);
        evaluate_points(
            &mut resumed,
            vec![|x, _| {
                xs_seen.push(x);
                Ok((x * x, Some(0.5)))
            }],
            &never,
            1,
            |_| Ok(()),
            |_| {},
        )
        .unwrap();
        assert_eq!(xs_seen, vec![3.0, 4.0]);
        assert_eq!(resumed.loss, vec![0.0, 1.0, 4.0, 9.0, 16.0]);
        assert!(resumed.is_complete());
    }

    fn grid_7x3() -> SliceValues {
        SliceValues::new((0..7).map(f64::from).collect(), vec![0.0, 1.0, 2.0])
    }

    #[test]
    fn parallel_workers_fill_every_point_exactly_once() {
        let mut v = grid_7x3();
        let calls = AtomicUsize::new(0);
        let evals: Vec<_> = (0..3)
            .map(|_| {
                |x: f64, y: f64| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok((x + 10.0 * y, Some(0.5)))
                }
            })
            .collect();
        let (mut saves, mut last) = (0, 0);
        let never = AtomicBool::new(false);
        let out = evaluate_points(
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
        )
        .unwrap();
        assert_eq!(out, Outcome::Complete);
        assert_eq!(calls.load(Ordering::SeqCst), 21);
        assert_eq!(last, 21);
        assert_eq!(saves, 21 / 4 + 1, "every 4 points and once at the end");
        for iy in 0..3 {
            for ix in 0..7 {
                assert_eq!(v.loss_at(iy, ix), ix as f64 + 10.0 * iy as f64);
            }
        }
        assert!(v.is_complete() && v.accuracy.iter().all(|&a| a == 0.5));
    }

    #[test]
    fn parallel_cancel_keeps_finished_points_and_resume_does_the_rest() {
        let mut v = grid_7x3();
        let cancel = AtomicBool::new(false);
        let started = AtomicUsize::new(0);
        // Points after the fifth wait until the cancel arrives (set once five results are in), so the
        // workers can't race through the whole grid first.
        let evals: Vec<_> = (0..2)
            .map(|_| {
                |x: f64, y: f64| {
                    if started.fetch_add(1, Ordering::SeqCst) >= 5 {
                        let t = std::time::Instant::now();
                        while !cancel.load(Ordering::SeqCst) && t.elapsed().as_secs() < 10 {
                            std::thread::yield_now();
                        }
                    }
                    Ok((x * y, None))
                }
            })
            .collect();
        let out = evaluate_points(
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
        )
        .unwrap();
        assert_eq!(out, Outcome::Cancelled);
        // The points in flight when the flag was set still finish and are kept.
        let done = v.done_count();
        assert!((5..=7).contains(&done), "{done} points done");
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
            .map(|_| {
                |x: f64, y: f64| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok((x * y, None))
                }
            })
            .collect();
        let never = AtomicBool::new(false);
        let out = evaluate_points(&mut v, evals, &never, 100, |_| Ok(()), |_| {}).unwrap();
        assert_eq!(out, Outcome::Complete);
        assert_eq!(calls.load(Ordering::SeqCst), 21 - done, "only the missing points are computed");
        assert!((0..21).all(|i| v.loss[i] == v.coords(i).0 * v.coords(i).1));
    }

    #[test]
    fn a_failing_point_stops_all_workers_and_keeps_the_finished_ones() {
        for workers in [1, 3] {
            let mut v = grid_7x3();
            let evals: Vec<_> = (0..workers)
                .map(|_| {
                    |x: f64, y: f64| {
                        if (x, y) == (3.0, 1.0) {
                            anyhow::bail!("the loss is NaN at (3, 1)");
                        }
                        Ok((x + y, None))
                    }
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
            )
            .unwrap_err();
            assert!(err.to_string().contains("NaN at (3, 1)"), "{err}");
            let saved = saved.expect("finished points are saved before the error is returned");
            assert!(!saved.done[7 + 3], "the failing point is not marked done");
            assert!(saved.done_count() >= 10, "{workers} worker(s): the points before it are kept");
            assert!(!saved.is_complete());
        }
    }
}
