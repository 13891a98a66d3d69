//! Starting and stopping the daemon: lower priority, open the store, build the runtime, start the
//! HTTP server, the watcher, the ingest tasks and the job thread; on SIGTERM/SIGINT stop taking work,
//! let the ingest tasks finish their item, stop jobs, flush the store and return (exit 0).
//!
//! Once listening it writes `<data_dir>/daemon.json` ([`Identity`]: listen address, pid, store id,
//! canonical data dir), which the CLI reads to find the daemon that holds the store; removed at exit.
//! A store-health task reopens the store after a failed write until writes succeed again.

use crate::daemon::config::Config;
use crate::daemon::http::{AppState, Identity, overflow_router, router};
use crate::daemon::jobrunner::JobRunner;
use crate::daemon::jobs::{self, JobContext};
use crate::daemon::metrics::Metrics;
use crate::daemon::process::Processor;
use crate::daemon::queue::WorkQueue;
use crate::daemon::shutdown::Shutdown;
use crate::daemon::watch::{Scanner, WatchSettings};
use crate::daemon::{memory, priority, scheduler, systemd, watch};
use crate::store::Store;
use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    // Before any thread exists, so every thread inherits it.
    if !config.gpu {
        priority::hide_gpus();
    }
    priority::lower_priority(config.nice, config.io_idle);
    memory::bound_allocator();
    let fds = crate::daemon::listener::raise_fd_limit();
    tracing::debug!("open-file limit {fds}");

    let store = Store::open(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("config {}: key `data_dir`: {e}", config.path.display()))?;
    // The store is ours now (locked): what a killed process left half-written can go.
    crate::daemon::temps::remove_stale(&config.data_dir);
    let metrics = Arc::new(Metrics::new(&config.metrics)?);
    let mut run_jobs = std::collections::HashMap::new();
    for r in &config.runs {
        metrics.init_run(&r.name);
        run_jobs
            .insert(r.name.clone(), jobs::build_all(&r.jobs).with_context(|| format!("run {:?}", r.name))?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.ingest_tasks + 4)
        .thread_name("landscaped")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(config, store.clone(), metrics, run_jobs));
    runtime.shutdown_timeout(Duration::from_secs(5));
    store.flush().context("flushing the store")?;
    // Only a clean stop says so: a start that failed (the port in use) ends with its error alone.
    if result.is_ok() {
        tracing::info!("stopped cleanly");
    }
    result
}

async fn serve(
    config: Config,
    store: Store,
    metrics: Arc<Metrics>,
    run_jobs: std::collections::HashMap<String, Vec<Box<dyn jobs::PeriodicJob>>>,
) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals().context("installing signal handlers")?;
    let queue = Arc::new(WorkQueue::new(config.queue_capacity));
    let ready = Arc::new(AtomicBool::new(false));
    let archive_health = Arc::new(crate::daemon::health::ArchiveHealth::default());
    let skipped = Arc::new(crate::daemon::skipped::Skipped::new(metrics.clone()));
    let progress = Arc::new(crate::daemon::progress::Progress::default());
    let tensorboard = Arc::new(crate::daemon::tensorboard::TensorBoardLogs::new(&config, &metrics.registry));
    let processor = Arc::new(Processor {
        store: store.clone(),
        metrics: metrics.clone(),
        quiet: config.quiet_period,
        incomplete_timeout: config.incomplete_timeout,
        data_dir: config.data_dir.clone(),
        archive: config.runs.iter().map(|r| (r.name.clone(), r.archive.clone())).collect(),
        archive_health: archive_health.clone(),
        skipped: skipped.clone(),
        roots: config.runs.iter().flat_map(|r| r.watch.iter()).map(|w| w.root.clone()).collect(),
        follow_symlinks: config.follow_symlinks,
        progress: progress.clone(),
        tensorboard: tensorboard.clone(),
    });
    for r in &config.runs {
        let p = processor.clone();
        let name = r.name.clone();
        let _ = tokio::task::spawn_blocking(move || p.restore_gauges(&name)).await;
    }
    // Whatever the store holds that a run's TensorBoard file lacks, before new checkpoints come.
    for r in config.runs.iter().filter(|r| r.tensorboard.is_some()) {
        let (tb, s, name) = (tensorboard.clone(), store.clone(), r.name.clone());
        let _ = tokio::task::spawn_blocking(move || tb.catch_up(&s, &name)).await;
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {} (key `listen`)", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!("serving /metrics, /healthz and /api/v1 on http://{local}");
    let identity = Arc::new(Identity {
        data_dir: config.data_dir.canonicalize().unwrap_or(config.data_dir.clone()).display().to_string(),
        store_id: store.id().to_string(),
        pid: std::process::id(),
        listen: local.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    });
    let state = AppState {
        archive_health: archive_health.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        queue: queue.clone(),
        ready: ready.clone(),
        identity: identity.clone(),
        request_timeout: config.http_request_timeout,
        progress: progress.clone(),
        stall_limit: config.stall_limit,
    };
    let limits = crate::daemon::listener::Limits {
        max_connections: config.http_max_connections,
        header_timeout: config.http_header_timeout,
    };
    let http = tokio::spawn(crate::daemon::listener::serve(
        listener,
        router(state.clone()),
        overflow_router(state),
        limits,
        metrics.clone(),
        shutdown.clone(),
    ));
    let daemon_json = config.data_dir.join(DAEMON_JSON);
    if let Err(e) = write_daemon_json(&daemon_json, &identity) {
        tracing::warn!("{}: {e} (the CLI will not find this daemon by its data dir)", daemon_json.display());
    }
    let health = tokio::spawn(store_health(store.clone(), metrics.clone(), shutdown.clone()));
    let trimmer = tokio::spawn(memory::return_freed(shutdown.clone()));

    let job_runner = JobRunner::new(run_jobs, metrics.clone());
    job_runner.write_tensorboard(tensorboard.clone());
    let ctx =
        JobContext::new(store.clone(), config.data_dir.clone(), metrics.registry.clone(), shutdown.cancel());
    let jr = job_runner.clone();
    let job_thread =
        std::thread::Builder::new().name("landscaped-jobs".into()).spawn(move || jr.run_loop(ctx))?;

    let mut ingest_tasks = Vec::new();
    for _ in 0..config.ingest_tasks {
        ingest_tasks.push(tokio::spawn(scheduler::run(
            queue.clone(),
            processor.clone(),
            job_runner.clone(),
            shutdown.clone(),
            config.stall_limit,
        )));
    }
    let scanner = Arc::new(Scanner {
        runs: config.runs.clone(),
        queue: queue.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        follow_symlinks: config.follow_symlinks,
        skipped,
        incomplete_timeout: config.incomplete_timeout,
    });
    let settings = WatchSettings {
        mode: config.watch_mode,
        poll_interval: config.poll_interval,
        rescan_interval: config.rescan_interval,
    };
    let watcher = tokio::spawn(watch::run(scanner, settings, shutdown.clone(), ready));

    shutdown.wait().await;
    systemd::stopping();
    // A job mid-call never holds the exit up: its model workers are stopped (the call fails at once).
    job_runner.stop();
    let stopped = crate::workers::client::stop_all_workers();
    if stopped > 0 {
        tracing::info!("stopped {stopped} model worker(s) of the running job");
    }
    let _ = watcher.await;
    for w in ingest_tasks {
        let _ = w.await;
    }
    // The job thread ends at its next safe point; one stuck elsewhere is not waited for past the grace.
    let t = std::time::Instant::now();
    while !job_thread.is_finished() && t.elapsed() < JOB_STOP_GRACE {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if job_thread.is_finished() {
        let _ = job_thread.join();
    } else {
        tracing::warn!(
            "the running job did not stop within {} s of the shutdown; exiting without it",
            JOB_STOP_GRACE.as_secs()
        );
    }
    if let Err(e) = http.await {
        tracing::warn!("http server task: {e}");
    }
    let _ = health.await;
    let _ = trimmer.await;
    // Only ours: a second daemon may have started on this data dir since (after this one let go).
    if std::fs::read_to_string(&daemon_json)
        .ok()
        .and_then(|t| serde_json::from_str::<Identity>(&t).ok())
        .is_some_and(|i| i.pid == identity.pid)
    {
        let _ = std::fs::remove_file(&daemon_json);
    }
    Ok(())
}

/// How long the shutdown waits for the job thread to reach a safe point.
const JOB_STOP_GRACE: Duration = Duration::from_secs(10);

/// The file in the data dir that tells the CLI where the daemon holding the store listens.
pub(crate) const DAEMON_JSON: &str = "daemon.json";

fn write_daemon_json(path: &std::path::Path, id: &Identity) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(id).map_err(std::io::Error::other)? + "\n")?;
    std::fs::rename(&tmp, path)
}

/// Watches the store's health: after a failed write, reopens it every 2 s until a probe write
/// succeeds; keeps `landscaped_store_healthy` up to date.
async fn store_health(store: Store, metrics: Arc<Metrics>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_try = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        match store.health() {
            None => metrics.store_healthy.set(1),
            Some(cause) => {
                metrics.store_healthy.set(0);
                if last_try.elapsed() >= Duration::from_secs(2) {
                    last_try = std::time::Instant::now();
                    tracing::warn!("store unhealthy ({cause}): reopening it");
                    let s = store.clone();
                    match tokio::task::spawn_blocking(move || s.try_recover()).await {
                        Ok(Ok(())) => metrics.store_healthy.set(1),
                        Ok(Err(e)) => tracing::warn!("store still unhealthy: {e}"),
                        Err(e) => tracing::warn!("store recovery task: {e}"),
                    }
                }
            }
        }
    }
}
