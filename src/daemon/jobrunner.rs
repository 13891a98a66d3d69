//! Runs the periodic jobs ([`crate::daemon::jobs`]) on one dedicated thread, one job at a time:
//! counts ingested checkpoints per run and job, and when a job is due records the newest step for it;
//! a due job waiting for the thread is replaced by a newer step rather than queued twice.

use crate::daemon::jobs::{JobContext, PeriodicJob};
use crate::daemon::metrics::Metrics;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

struct RunJob {
    job: Arc<dyn PeriodicJob>,
    count: u64,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Vec<RunJob>>,
    /// (run, job) → step to run at.
    due: BTreeMap<(String, &'static str), u64>,
    stop: bool,
}

pub struct JobRunner {
    state: Mutex<State>,
    cv: Condvar,
}

impl JobRunner {
    pub fn new(jobs: HashMap<String, Vec<Box<dyn PeriodicJob>>>) -> Arc<JobRunner> {
        let jobs = jobs
            .into_iter()
            .map(|(run, v)| (run, v.into_iter().map(|j| RunJob { job: Arc::from(j), count: 0 }).collect()))
            .collect();
        Arc::new(JobRunner { state: Mutex::new(State { jobs, ..Default::default() }), cv: Condvar::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called after each ingested checkpoint.
    pub fn checkpoint_done(&self, run: &str, step: u64) {
        let mut st = self.lock();
        let mut newly_due = Vec::new();
        if let Some(list) = st.jobs.get_mut(run) {
            for rj in list.iter_mut() {
                rj.count += 1;
                if rj.count >= rj.job.every().max(1) {
                    rj.count = 0;
                    newly_due.push(rj.job.name());
                }
            }
        }
        if newly_due.is_empty() {
            return;
        }
        for name in newly_due {
            st.due.insert((run.to_string(), name), step);
        }
        drop(st);
        self.cv.notify_all();
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }

    /// The job thread's loop; returns at [`JobRunner::stop`].
    pub fn run_loop(&self, ctx: JobContext, metrics: Arc<Metrics>) {
        loop {
            let (run, name, step, job) = {
                let mut st = self.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    if let Some((key, step)) = st.due.pop_first() {
                        let job = st
                            .jobs
                            .get(&key.0)
                            .and_then(|l| l.iter().find(|j| j.job.name() == key.1))
                            .map(|j| j.job.clone());
                        if let Some(job) = job {
                            break (key.0, key.1, step, job);
                        }
                        continue;
                    }
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            // A checkpoint deleted before its job ran (the Trainer's save_total_limit, a cleanup) is
            // skipped with one line, not reported as the job's failure.
            if let Ok(Some(rec)) = crate::store::checkpoints::checkpoint(&ctx.store, &run, step)
                && !std::path::Path::new(&rec.path).exists()
            {
                tracing::info!(
                    run,
                    job = name,
                    step,
                    path = rec.path,
                    "job skipped: the checkpoint was deleted before it ran"
                );
                metrics.job_runs.with_label_values(&[&run, name, "skipped"]).inc();
                continue;
            }
            let t = Instant::now();
            let outcome =
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&ctx, &run, step))) {
                    Ok(Ok(())) => "ok",
                    Ok(Err(e)) if is_worker_failure(&e) => {
                        tracing::warn!(run, job = name, step, "job failed, its model worker failed: {e:#}");
                        "worker_failed"
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(run, job = name, step, "job failed: {e:#}");
                        "error"
                    }
                    Err(_) => {
                        tracing::error!(run, job = name, step, "job panicked");
                        "error"
                    }
                };
            metrics.job_runs.with_label_values(&[&run, name, outcome]).inc();
            metrics.job_duration.with_label_values(&[&run, name]).observe(t.elapsed().as_secs_f64());
        }
    }
}

/// Whether a job's error is its model worker failing (died, hung, spoke another protocol, couldn't
/// start), counted as `outcome="worker_failed"`; the job runs again at its next trigger.
fn is_worker_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<crate::worker::WorkerError>().is_some_and(|w| w.is_worker_failure()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Count(Arc<AtomicU64>, Arc<Mutex<Vec<u64>>>);
    impl PeriodicJob for Count {
        fn name(&self) -> &'static str {
            "count"
        }
        fn every(&self) -> u64 {
            3
        }
        fn run(&self, _ctx: &JobContext, _run: &str, step: u64) -> anyhow::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.lock().unwrap().push(step);
            Ok(())
        }
    }

    #[test]
    fn jobs_run_every_n_checkpoints() {
        let n = Arc::new(AtomicU64::new(0));
        let steps = Arc::new(Mutex::new(Vec::new()));
        let mut jobs: HashMap<String, Vec<Box<dyn PeriodicJob>>> = HashMap::new();
        jobs.insert("r".into(), vec![Box::new(Count(n.clone(), steps.clone()))]);
        let runner = JobRunner::new(jobs);
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new(&Default::default()).unwrap());
        let ctx = JobContext::new(store, dir.path().into(), metrics.registry.clone(), Default::default());
        for s in 1..=7 {
            runner.checkpoint_done("r", s * 10);
            runner.checkpoint_done("other", s);
        }
        let r2 = runner.clone();
        let m2 = metrics.clone();
        let h = std::thread::spawn(move || r2.run_loop(ctx, m2));
        let t0 = Instant::now();
        while n.load(Ordering::SeqCst) < 1 && t0.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        runner.stop();
        h.join().unwrap();
        // Due at the 3rd and 6th checkpoint; the 6th replaced the 3rd while the thread was not running.
        assert_eq!(*steps.lock().unwrap(), vec![60]);
        assert_eq!(metrics.job_runs.with_label_values(&["r", "count", "ok"]).get(), 1);
    }
}
