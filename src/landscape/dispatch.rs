//! A slice's grid on the [task scheduler](crate::workers::scheduler): points not yet done go to the
//! workers as tasks, results are recorded, persisted and reported on the calling thread.

use super::slice::{Outcome, SliceValues};
use crate::cancel::Cancel;
use crate::workers::scheduler::{DispatchReport, PointEvaluator, run_tasks};
use anyhow::Result;

/// Fills every point of `values` not yet done (row-major) with [`run_tasks`]. Results are recorded,
/// persisted and reported on the calling thread: `persist` every `persist_every` points and at the end
/// (complete, cancelled or failed), `progress` after every point with the number done, `on_lost` with
/// one line per lost worker. Stops between blocks when `cancel` is set; every point already finished
/// is kept.
pub fn evaluate_points(
    values: &mut SliceValues,
    evals: Vec<PointEvaluator<'_>>,
    cancel: &Cancel,
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
    use crate::workers::scheduler::{Evaluator, PointError};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn grid_7x3() -> SliceValues {
        SliceValues::new((0..7).map(f64::from).collect(), vec![0.0, 1.0, 2.0])
    }

    fn f(x: f64, y: f64) -> f64 {
        (x * 0.37 + y).sin() * 1e3 + x * y
    }

    fn run(v: &mut SliceValues, evals: Vec<PointEvaluator<'_>>) -> Result<(Outcome, DispatchReport)> {
        let never = Cancel::new();
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
                let never = Cancel::new();
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
        let never = Cancel::new();
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
            let never = Cancel::new();
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
        let never = Cancel::new();
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
        let cancel = Cancel::new();
        let started = AtomicUsize::new(0);
        // Points after the fifth wait until the cancel arrives (set once five results are in).
        let evals: Vec<_> = (0..2)
            .map(|w| {
                Evaluator::per_point(format!("w{w}"), |x: f64, y: f64| {
                    if started.fetch_add(1, Ordering::SeqCst) >= 5 {
                        let t = Instant::now();
                        while !cancel.is_cancelled() && t.elapsed().as_secs() < 10 {
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
                    cancel.cancel(crate::cancel::Reason::Requested);
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
