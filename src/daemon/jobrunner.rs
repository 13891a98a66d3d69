//! Runs the periodic jobs ([`crate::daemon::jobs`]) on one dedicated thread, one job at a time:
//! counts ingested checkpoints per run and job, and when a job is due records the newest step for it.
//! Due jobs run in the order they came due (first come, first served), so jobs of different kinds and
//! runs take turns: a job that comes due again while others wait goes behind them. A due job waiting
//! for the thread is replaced by a newer step rather than queued twice (keeping its place), with one
//! line and `landscaped_job_replaced_total`.
//!
//! Outcomes (`landscaped_job_runs_total{outcome}`): `ok`, `error`, `worker_failed` (its model worker
//! died or could not start), `timeout` (a worker call outlived its deadline, see
//! [`crate::workers::client::CallPace`]; the worker was stopped), `cancelled` (stopped by the daemon's
//! shutdown), `skipped` (its checkpoint was deleted before it ran, or while it ran and it then failed).

use crate::daemon::jobs::{JobContext, PeriodicJob};
use crate::daemon::metrics::Metrics;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

struct RunJob {
    job: Arc<dyn PeriodicJob>,
    count: u64,
}

/// A job waiting for the thread: (run, job) at `step`.
struct Due {
    run: String,
    job: &'static str,
    step: u64,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Vec<RunJob>>,
    /// Due jobs in the order they came due; at most one entry per (run, job).
    due: VecDeque<Due>,
    stop: bool,
}

pub struct JobRunner {
    state: Mutex<State>,
    cv: Condvar,
    metrics: Arc<Metrics>,
    /// Where a job's records go after it ran (runs with a `tensorboard` folder).
    tensorboard: std::sync::OnceLock<Arc<crate::daemon::tensorboard::TensorBoardLogs>>,
}

impl JobRunner {
    pub fn new(jobs: HashMap<String, Vec<Box<dyn PeriodicJob>>>, metrics: Arc<Metrics>) -> Arc<JobRunner> {
        let jobs = jobs
            .into_iter()
            .map(|(run, v)| (run, v.into_iter().map(|j| RunJob { job: Arc::from(j), count: 0 }).collect()))
            .collect();
        Arc::new(JobRunner {
            state: Mutex::new(State { jobs, ..Default::default() }),
            cv: Condvar::new(),
            metrics,
            tensorboard: std::sync::OnceLock::new(),
        })
    }

    /// After each job that succeeds, its run's new records are written to TensorBoard (set once).
    pub(crate) fn write_tensorboard(&self, logs: Arc<crate::daemon::tensorboard::TensorBoardLogs>) {
        let _ = self.tensorboard.set(logs);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called after each ingested checkpoint.
    pub(crate) fn checkpoint_done(&self, run: &str, step: u64) {
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
        let mut replaced = Vec::new();
        for name in newly_due {
            match st.due.iter_mut().find(|d| d.run == run && d.job == name) {
                Some(d) => {
                    replaced.push((name, d.step));
                    d.step = step;
                }
                None => st.due.push_back(Due { run: run.to_string(), job: name, step }),
            }
        }
        drop(st);
        self.cv.notify_all();
        for (name, old) in replaced {
            tracing::info!(
                run,
                job = name,
                step,
                replaced_step = old,
                "job at step {old} replaced by step {step}: a newer checkpoint came before it started"
            );
            self.metrics.job_replaced.with_label_values(&[run, name]).inc();
        }
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }

    /// The job thread's loop; returns at [`JobRunner::stop`].
    pub(crate) fn run_loop(&self, ctx: JobContext) {
        let metrics = &self.metrics;
        loop {
            let (run, name, step, job) = {
                let mut st = self.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    if let Some(d) = st.due.pop_front() {
                        let job = st
                            .jobs
                            .get(&d.run)
                            .and_then(|l| l.iter().find(|j| j.job.name() == d.job))
                            .map(|j| j.job.clone());
                        if let Some(job) = job {
                            break (d.run, d.job, d.step, job);
                        }
                        continue;
                    }
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            // A checkpoint deleted before its job ran (the Trainer's save_total_limit, a cleanup) is
            // skipped with one line, not reported as the job's failure.
            if let Some(path) = deleted_checkpoint(&ctx, &run, step) {
                tracing::info!(
                    run,
                    job = name,
                    step,
                    path,
                    "job skipped: the checkpoint was deleted before it ran"
                );
                metrics.job_runs.with_label_values(&[&run, name, "skipped"]).inc();
                continue;
            }
            let t = Instant::now();
            let outcome =
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&ctx, &run, step))) {
                    Ok(Ok(())) => "ok",
                    Ok(Err(e)) if is_timeout(&e) => {
                        tracing::warn!(
                            run,
                            job = name,
                            step,
                            "job timed out, its model worker was stopped: {e:#}"
                        );
                        "timeout"
                    }
                    Ok(Err(e)) if ctx.cancelled() => {
                        tracing::info!(run, job = name, step, "job stopped by the shutdown: {e:#}");
                        "cancelled"
                    }
                    Ok(Err(e)) if is_worker_failure(&e) => {
                        tracing::warn!(run, job = name, step, "job failed, its model worker failed: {e:#}");
                        "worker_failed"
                    }
                    // Deleted while the job ran (e.g. while a Python worker started): the failure is
                    // the deletion's (a factory's `from_pretrained` then says "Repo id must be ..."),
                    // so it is skipped like a checkpoint deleted before, its error kept as a field.
                    Ok(Err(e)) if let Some(path) = deleted_checkpoint(&ctx, &run, step) => {
                        let error = format!("{e:#}");
                        tracing::info!(
                            run,
                            job = name,
                            step,
                            path,
                            error,
                            "job skipped: the checkpoint was deleted while it ran"
                        );
                        "skipped"
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
            if outcome == "ok"
                && let Some(tb) = self.tensorboard.get()
            {
                tb.jobs(&ctx.store, &run);
            }
            metrics.job_duration.with_label_values(&[&run, name]).observe(t.elapsed().as_secs_f64());
        }
    }
}

/// The path of the checkpoint (run, step) when it is recorded but no longer on disk.
fn deleted_checkpoint(ctx: &JobContext, run: &str, step: u64) -> Option<String> {
    let rec = crate::store::checkpoints::checkpoint(&ctx.store, run, step).ok()??;
    (!std::path::Path::new(&rec.path).exists()).then_some(rec.path)
}

/// Whether a job's error is a model worker call past its deadline (the worker was stopped).
fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<crate::workers::WorkerError>().is_some_and(|w| w.is_timeout()))
}

/// Whether a job's error is its model worker failing (died, hung, spoke another protocol, couldn't
/// start), counted as `outcome="worker_failed"`; the job runs again at its next trigger.
fn is_worker_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<crate::workers::WorkerError>().is_some_and(|w| w.is_worker_failure()))
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
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new(&Default::default()).unwrap());
        let runner = JobRunner::new(jobs, metrics.clone());
        let ctx = JobContext::new(store, dir.path().into(), metrics.registry.clone(), Default::default());
        for s in 1..=7 {
            runner.checkpoint_done("r", s * 10);
            runner.checkpoint_done("other", s);
        }
        let r2 = runner.clone();
        let h = std::thread::spawn(move || r2.run_loop(ctx));
        let t0 = Instant::now();
        while n.load(Ordering::SeqCst) < 1 && t0.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        runner.stop();
        h.join().unwrap();
        // Due at the 3rd and 6th checkpoint; the 6th replaced the 3rd while the thread was not running.
        assert_eq!(*steps.lock().unwrap(), vec![60]);
        assert_eq!(metrics.job_runs.with_label_values(&["r", "count", "ok"]).get(), 1);
        // The replaced run is counted.
        assert_eq!(metrics.job_replaced.with_label_values(&["r", "count"]).get(), 1);
    }

    /// A job of `name` (every checkpoint) that logs its runs and, while it runs, has the next checkpoint
    /// of the run ingested (training saves faster than the jobs compute), up to `limit` runs in all.
    struct Turn {
        name: &'static str,
        log: Arc<Mutex<Vec<(&'static str, u64)>>>,
        runner: Arc<Mutex<std::sync::Weak<JobRunner>>>,
        next: Arc<AtomicU64>,
        limit: usize,
    }
    impl PeriodicJob for Turn {
        fn name(&self) -> &'static str {
            self.name
        }
        fn every(&self) -> u64 {
            1
        }
        fn run(&self, _ctx: &JobContext, run: &str, step: u64) -> anyhow::Result<()> {
            let n = {
                let mut l = self.log.lock().unwrap();
                l.push((self.name, step));
                l.len()
            };
            if n < self.limit
                && let Some(r) = self.runner.lock().unwrap().upgrade()
            {
                r.checkpoint_done(run, self.next.fetch_add(1, Ordering::SeqCst) + 1);
            }
            Ok(())
        }
    }

    #[test]
    fn two_kinds_due_at_every_checkpoint_take_turns() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let weak = Arc::new(Mutex::new(std::sync::Weak::new()));
        let next = Arc::new(AtomicU64::new(1));
        let turn = |name| -> Box<dyn PeriodicJob> {
            Box::new(Turn { name, log: log.clone(), runner: weak.clone(), next: next.clone(), limit: 8 })
        };
        // In name order "sharpness" comes first: it used to run at every checkpoint, "slice" never.
        let mut jobs: HashMap<String, Vec<Box<dyn PeriodicJob>>> = HashMap::new();
        jobs.insert("r".into(), vec![turn("sharpness"), turn("slice")]);
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new(&Default::default()).unwrap());
        let runner = JobRunner::new(jobs, metrics.clone());
        *weak.lock().unwrap() = Arc::downgrade(&runner);
        let ctx = JobContext::new(store, dir.path().into(), metrics.registry.clone(), Default::default());
        runner.checkpoint_done("r", 1);
        let r2 = runner.clone();
        let h = std::thread::spawn(move || r2.run_loop(ctx));
        let t0 = Instant::now();
        while log.lock().unwrap().len() < 8 && t0.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        runner.stop();
        h.join().unwrap();
        let got: Vec<_> = log.lock().unwrap().iter().take(8).copied().collect();
        // Each runs in turn, at the newest step when its turn comes (the waiting one was replaced).
        let want: Vec<_> =
            (1..=8).map(|s| (if s % 2 == 1 { "sharpness" } else { "slice" }, s as u64)).collect();
        assert_eq!(got, want);
        let replaced = |j| metrics.job_replaced.with_label_values(&["r", j]).get();
        assert_eq!((replaced("sharpness"), replaced("slice")), (3, 4));
    }
}
