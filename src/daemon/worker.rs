//! The scheduler: `workers` tasks take the lowest-step due item from the queue and process it on a
//! blocking thread (never on the HTTP runtime), then act on the outcome: done (tell the job runner),
//! retry later (back into the queue; after an environment error with backoff), failed or unchanged
//! (dropped). At shutdown each worker finishes the item it holds and stops taking new ones.

use crate::daemon::jobrunner::JobRunner;
use crate::daemon::process::{Outcome, Processor};
use crate::daemon::queue::WorkQueue;
use crate::daemon::shutdown::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(queue: Arc<WorkQueue>, processor: Arc<Processor>, jobs: Arc<JobRunner>, shutdown: Shutdown) {
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
                let outcome = tokio::task::spawn_blocking(move || p.process(&it)).await;
                processor.metrics.in_flight.dec();
                let touched = queue.done(&item.run, &item.path);
                match outcome {
                    Ok(Outcome::Done { step, new }) => {
                        if new {
                            jobs.checkpoint_done(&item.run, step);
                        }
                        if touched {
                            item.not_before = Instant::now();
                            queue.push(item);
                        }
                    }
                    Ok(Outcome::Retry { after, .. } | Outcome::EnvRetry { after, .. }) => {
                        item.attempts += 1;
                        item.not_before = Instant::now() + after;
                        queue.push(item);
                    }
                    Ok(Outcome::Unchanged | Outcome::Gone | Outcome::Failed { .. }) => {
                        if touched {
                            item.not_before = Instant::now();
                            queue.push(item);
                        }
                    }
                    Err(e) => tracing::error!("processing {}: worker panicked: {e}", item.path.display()),
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
