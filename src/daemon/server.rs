//! Starting and stopping the daemon: lower priority, open the store, build the runtime, start the
//! HTTP server, the watcher, the workers and the job thread; on SIGTERM/SIGINT stop taking work, let
//! workers finish their item, stop jobs, flush the store and return (exit 0).

use crate::daemon::config::Config;
use crate::daemon::http::{AppState, router};
use crate::daemon::jobrunner::JobRunner;
use crate::daemon::jobs::{self, JobContext};
use crate::daemon::metrics::Metrics;
use crate::daemon::process::Processor;
use crate::daemon::queue::WorkQueue;
use crate::daemon::shutdown::Shutdown;
use crate::daemon::watch::{Scanner, WatchSettings};
use crate::daemon::{priority, systemd, watch, worker};
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

    let store = Store::open(&config.data_dir)?;
    let metrics = Arc::new(Metrics::new(&config.metrics)?);
    let mut run_jobs = std::collections::HashMap::new();
    for r in &config.runs {
        metrics.init_run(&r.name);
        run_jobs
            .insert(r.name.clone(), jobs::build_all(&r.jobs).with_context(|| format!("run {:?}", r.name))?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.workers + 4)
        .thread_name("landscaped")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(config, store.clone(), metrics, run_jobs));
    runtime.shutdown_timeout(Duration::from_secs(5));
    store.flush().context("flushing the store")?;
    tracing::info!("stopped cleanly");
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
    let processor = Arc::new(Processor {
        store: store.clone(),
        metrics: metrics.clone(),
        quiet: config.quiet_period,
        incomplete_timeout: config.incomplete_timeout,
        data_dir: config.data_dir.clone(),
        archive: crate::trajectory::archive::ArchiveConfig::default(),
    });
    for r in &config.runs {
        let p = processor.clone();
        let name = r.name.clone();
        let _ = tokio::task::spawn_blocking(move || p.restore_gauges(&name)).await;
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {} (key `listen`)", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!("serving /metrics, /healthz and /api/v1 on http://{local}");
    let app = router(AppState {
        store: store.clone(),
        metrics: metrics.clone(),
        queue: queue.clone(),
        ready: ready.clone(),
    });
    let sd = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { sd.wait().await }).await
    });

    let job_runner = JobRunner::new(run_jobs);
    let ctx =
        JobContext::new(store.clone(), config.data_dir.clone(), metrics.registry.clone(), shutdown.flag());
    let jr = job_runner.clone();
    let jm = metrics.clone();
    let job_thread =
        std::thread::Builder::new().name("landscaped-jobs".into()).spawn(move || jr.run_loop(ctx, jm))?;

    let mut workers = Vec::new();
    for _ in 0..config.workers {
        workers.push(tokio::spawn(worker::run(
            queue.clone(),
            processor.clone(),
            job_runner.clone(),
            shutdown.clone(),
        )));
    }
    let scanner = Arc::new(Scanner {
        runs: config.runs.clone(),
        queue: queue.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
    });
    let settings = WatchSettings {
        mode: config.watch_mode,
        poll_interval: config.poll_interval,
        rescan_interval: config.rescan_interval,
    };
    let watcher = tokio::spawn(watch::run(scanner, settings, shutdown.clone(), ready));

    shutdown.wait().await;
    systemd::stopping();
    let _ = watcher.await;
    for w in workers {
        let _ = w.await;
    }
    job_runner.stop();
    let _ = tokio::task::spawn_blocking(move || job_thread.join()).await;
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("http server: {e}"),
        Err(e) => tracing::warn!("http server task: {e}"),
    }
    Ok(())
}
