//! The scheduler: `ingest_tasks` tasks take the lowest-step due item from the queue and process it on a
//! blocking thread (never on the HTTP runtime), then act on the outcome: done (tell the job runner),
//! retry later (back into the queue; after an environment error with backoff), failed or unchanged
//! (dropped). At shutdown each ingest task gives the item it holds [`SHUTDOWN_GRACE`] to finish, then stops
//! (ingest is atomic: an abandoned item is simply redone at the next start).
//!
//! An item that makes no progress for longer than `stall_limit` (a read stuck in the kernel: a hung
//! network filesystem) is abandoned: one line, `landscaped_errors_total{kind="stalled"}`, and the
//! ingest task goes on with the queue; the item stays marked in flight (so it is not queued again) until
//! its thread returns, and `/healthz` answers 503 meanwhile.

use crate::daemon::jobrunner::JobRunner;
use crate::daemon::process::{Outcome, Processor};
use crate::daemon::queue::WorkQueue;
use crate::daemon::shutdown::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an ingest task waits at shutdown for the item it holds.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub async fn run(
    queue: Arc<WorkQueue>,
    processor: Arc<Processor>,
    jobs: Arc<JobRunner>,
    shutdown: Shutdown,
    stall_limit: Duration,
) {
    loop {
        if shutdown.is_set() {
            return;
        }
        let wait = match queue.pop_ready(Instant::now()) {
            Ok(mut item) => {
                processor.metrics.in_flight.inc();
                processor.metrics.queue_len.set(queue.len() as i64);
                let p = processor.clone();
                let it = item.clone();
                let mut task = tokio::task::spawn_blocking(move || p.process(&it));
                let outcome = loop {
                    tokio::select! {
                        r = &mut task => break Some(r),
                        _ = shutdown.wait() => match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
                            Ok(r) => break Some(r),
                            Err(_) => {
                                tracing::warn!(
                                    run = item.run,
                                    "{}: still being read at shutdown: not waiting for it (it is redone at the next start)",
                                    item.path.display()
                                );
                                break None;
                            }
                        },
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            let idle = processor.progress.idle_for(&item.run, &item.path);
                            if let Some(idle) = idle.filter(|d| *d > stall_limit) {
                                tracing::warn!(
                                    run = item.run,
                                    "{}: no progress for {:.0} s (stall_limit_secs = {}): abandoned, the queue goes on; \
                                     the read is stuck in the kernel (a hung filesystem?)",
                                    item.path.display(),
                                    idle.as_secs_f64(),
                                    stall_limit.as_secs_f64()
                                );
                                processor.metrics.error(&item.run, "stalled");
                                let (q, run, path) = (queue.clone(), item.run.clone(), item.path.clone());
                                tokio::spawn(async move {
                                    let _ = task.await;
                                    q.done(&run, &path);
                                });
                                processor.metrics.in_flight.dec();
                                break None;
                            }
                        }
                    }
                };
                let Some(outcome) = outcome else {
                    if shutdown.is_set() {
                        return;
                    }
                    continue;
                };
                processor.metrics.in_flight.dec();
                // Touched while in flight: the newest offer's stamp is the one to look at next.
                let touched = queue.finish(&item.run, &item.path);
                let requeue_touched = |mut item: crate::daemon::queue::Item| {
                    if let Some(t) = touched.clone() {
                        item.stamp = t.stamp;
                        item.not_before = Instant::now();
                        queue.push(item);
                    }
                };
                match outcome {
                    Ok(Outcome::Done { step, new }) => {
                        if new {
                            jobs.checkpoint_done(&item.run, step);
                        }
                        requeue_touched(item);
                    }
                    Ok(Outcome::Retry { after, stamp, .. }) => {
                        item.attempts += 1;
                        item.not_before = Instant::now() + after;
                        if let Some(s) = touched.map(|t| t.stamp).or(stamp) {
                            item.stamp = s;
                        }
                        queue.push(item);
                    }
                    Ok(Outcome::EnvRetry { after, .. }) => {
                        item.attempts += 1;
                        item.not_before = Instant::now() + after;
                        if let Some(t) = touched {
                            item.stamp = t.stamp;
                        }
                        queue.push(item);
                    }
                    Ok(
                        Outcome::Unchanged | Outcome::Gone | Outcome::Failed { .. } | Outcome::Skipped { .. },
                    ) => requeue_touched(item),
                    Err(e) => {
                        tracing::error!("processing {}: ingest task panicked: {e}", item.path.display())
                    }
                }
                continue;
            }
            Err(next) => {
                next.map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()))
            }
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = queue.wake.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
        }
    }
}
