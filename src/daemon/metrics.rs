//! The daemon's Prometheus metrics. Names follow Prometheus conventions: prefix `landscaped_`, base
//! units (seconds), `_total` for counters, a `run` label on everything per run.
//!
//! Cardinality: every series is per run except `landscaped_tensor_norm{run,tensor}`, which exists only
//! for the tensors the `[metrics]` allow-list matches plus the `top_k` largest tensors (by element
//! count), capped at `max_series` per run; series of tensors that drop out of the selection are removed.
//! Per-tensor histograms and every other statistic stay in the store (CLI, API, plots).

use crate::daemon::config::MetricsConfig;
use crate::store::checkpoints::{CheckpointRecord, TensorRecord};
use crate::store::optimizer::OptimizerRecord;
use globset::{Glob, GlobSet, GlobSetBuilder};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// Every metric the daemon exports (the Grafana test checks dashboards against this list).
pub const METRIC_NAMES: &[&str] = &[
    "landscaped_build_info",
    "landscaped_last_step",
    "landscaped_last_checkpoint_timestamp_seconds",
    "landscaped_checkpoints_processed_total",
    "landscaped_weight_norm",
    "landscaped_distance_from_first",
    "landscaped_update_norm",
    "landscaped_update_cosine",
    "landscaped_tensor_norm",
    "landscaped_processing_duration_seconds",
    "landscaped_errors_total",
    "landscaped_retries_total",
    "landscaped_environment_errors_total",
    "landscaped_not_a_file_total",
    "landscaped_skipped_paths_total",
    "landscaped_store_healthy",
    "landscaped_http_connections",
    "landscaped_http_rejected_total",
    "landscaped_worker_joins_refused_total",
    "landscaped_queue_length",
    "landscaped_in_flight",
    "landscaped_scans_total",
    "landscaped_watched_folders",
    "landscaped_job_runs_total",
    "landscaped_job_duration_seconds",
    "landscaped_job_replaced_total",
    "landscaped_optimizer_lr",
    "landscaped_optimizer_step",
    "landscaped_optimizer_step_size",
    "landscaped_optimizer_update_rms",
    "landscaped_optimizer_momentum_norm",
    "landscaped_optimizer_tensor_update_rms",
];

pub struct Metrics {
    pub registry: Registry,
    pub last_step: IntGaugeVec,
    pub last_time: GaugeVec,
    pub processed: IntCounterVec,
    pub weight_norm: GaugeVec,
    pub dist_first: GaugeVec,
    pub update_norm: GaugeVec,
    pub update_cos: GaugeVec,
    pub tensor_norm: GaugeVec,
    pub duration: HistogramVec,
    pub errors: IntCounterVec,
    pub retries: IntCounterVec,
    pub env_errors: IntCounterVec,
    pub not_a_file: IntCounterVec,
    pub skipped_paths: IntCounterVec,
    pub store_healthy: IntGauge,
    pub http_connections: IntGauge,
    pub http_rejected: IntCounterVec,
    /// Peers refused by a job's coordinator (`workers_listen`), by kind (`worker::listen::REFUSAL_KINDS`).
    pub worker_joins_refused: IntCounterVec,
    pub queue_len: IntGauge,
    pub in_flight: IntGauge,
    pub scans: IntCounterVec,
    pub watched: IntGaugeVec,
    pub job_runs: IntCounterVec,
    pub job_duration: HistogramVec,
    pub job_replaced: IntCounterVec,
    /// The optimizer-state telemetry's gauges.
    pub optimizer: super::metrics_optimizer::OptimizerGauges,
    select: TensorSelect,
    exported_tensors: Mutex<HashMap<String, BTreeSet<String>>>,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> anyhow::Result<T> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new(cfg: &MetricsConfig) -> anyhow::Result<Metrics> {
        let r = Registry::new();
        let run = &["run"];
        let g = |n: &str, h: &str| GaugeVec::new(Opts::new(n, h), run);
        let build = reg(
            &r,
            IntGaugeVec::new(
                Opts::new("landscaped_build_info", "Build information (always 1)."),
                &["version", "rustc_target"],
            )?,
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION"), std::env::consts::ARCH]).set(1);
        let buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
        Ok(Metrics {
            last_step: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("landscaped_last_step", "Step of the newest processed checkpoint."),
                    run,
                )?,
            )?,
            last_time: reg(
                &r,
                g(
                    "landscaped_last_checkpoint_timestamp_seconds",
                    "Modification time (Unix seconds) of the newest processed checkpoint.",
                )?,
            )?,
            processed: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_checkpoints_processed_total",
                        "Checkpoints ingested by this daemon process.",
                    ),
                    run,
                )?,
            )?,
            weight_norm: reg(
                &r,
                g("landscaped_weight_norm", "Global L2 norm of all float parameters at the newest step.")?,
            )?,
            dist_first: reg(
                &r,
                g(
                    "landscaped_distance_from_first",
                    "L2 distance of the newest checkpoint from the run's first.",
                )?,
            )?,
            update_norm: reg(
                &r,
                g("landscaped_update_norm", "L2 norm of the newest update (theta_t - theta_prev).")?,
            )?,
            update_cos: reg(
                &r,
                g("landscaped_update_cosine", "Cosine between the newest update and the one before.")?,
            )?,
            tensor_norm: reg(
                &r,
                GaugeVec::new(
                    Opts::new("landscaped_tensor_norm", "L2 norm of one tensor (allow-list and top-k only)."),
                    &["run", "tensor"],
                )?,
            )?,
            duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "landscaped_processing_duration_seconds",
                        "Time to check, read and record one checkpoint.",
                    )
                    .buckets(buckets.clone()),
                    run,
                )?,
            )?,
            errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("landscaped_errors_total", "Checkpoints that could not be processed, by kind."),
                    &["run", "kind"],
                )?,
            )?,
            retries: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_retries_total",
                        "Checkpoints put back to wait (incomplete, not quiet yet, changed while read).",
                    ),
                    &["run", "reason"],
                )?,
            )?,
            env_errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_environment_errors_total",
                        "Failures of the environment, not of a file's content (permission_denied, \
                         too_many_open_files, no_space, io_error, read_only, store, archive, ...): \
                         the checkpoint is retried with backoff.",
                    ),
                    &["run", "kind"],
                )?,
            )?,
            not_a_file: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_not_a_file_total",
                        "Paths with checkpoint names that are skipped, by kind: not_a_file (FIFO, device, \
                         socket, a folder that is no HF checkpoint) or outside_root (a symlink leaving the \
                         watched folders). Each path counted once.",
                    ),
                    &["run", "kind"],
                )?,
            )?,
            skipped_paths: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_skipped_paths_total",
                        "Paths passed over, each counted once, by reason: outside_root, not_a_file, \
                         symlink_loop, unreadable_folder, no_weights, no_metadata (see daemon::skipped).",
                    ),
                    &["run", "reason"],
                )?,
            )?,
            store_healthy: reg(
                &r,
                IntGauge::new(
                    "landscaped_store_healthy",
                    "1 while store writes succeed, 0 after a failed write until one succeeds again.",
                )?,
            )?,
            http_connections: reg(
                &r,
                IntGauge::new("landscaped_http_connections", "Open HTTP connections.")?,
            )?,
            http_rejected: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_http_rejected_total",
                        "HTTP connections refused past the connection cap, and requests that timed out.",
                    ),
                    &["reason"],
                )?,
            )?,
            worker_joins_refused: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_worker_joins_refused_total",
                        "Connections to a job's worker port refused or closed, by reason: token, version, \
                         contract, no_join, full, late, evicted, resources.",
                    ),
                    &["reason"],
                )?,
            )?,
            queue_len: reg(
                &r,
                IntGauge::new("landscaped_queue_length", "Checkpoints waiting in the queue.")?,
            )?,
            in_flight: reg(&r, IntGauge::new("landscaped_in_flight", "Checkpoints being processed now.")?)?,
            scans: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_scans_total",
                        "Folder scans, by reason (start, reconcile, poll, overflow, new_folder, root_changed).",
                    ),
                    &["reason"],
                )?,
            )?,
            watched: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("landscaped_watched_folders", "Watched folders by mode (inotify or poll)."),
                    &["run", "mode"],
                )?,
            )?,
            job_runs: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_job_runs_total",
                        "Background job runs by outcome: ok, error, worker_failed, timeout, cancelled, skipped.",
                    ),
                    &["run", "job", "outcome"],
                )?,
            )?,
            job_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("landscaped_job_duration_seconds", "Background job run time.")
                        .buckets(buckets),
                    &["run", "job"],
                )?,
            )?,
            job_replaced: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "landscaped_job_replaced_total",
                        "Due background job runs replaced by a newer checkpoint's before they started.",
                    ),
                    &["run", "job"],
                )?,
            )?,
            optimizer: super::metrics_optimizer::OptimizerGauges::new(&r)?,
            registry: r,
            select: TensorSelect::new(cfg)?,
            exported_tensors: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the per-run gauges from a checkpoint's records. `newest` is false when an older step was
    /// processed after a newer one (the gauges keep showing the newest).
    pub(crate) fn record_checkpoint(
        &self,
        rec: &CheckpointRecord,
        tensors: &[TensorRecord],
        mtime_unix: f64,
    ) {
        let run = rec.run.as_str();
        let newest = self.last_step.get_metric_with_label_values(&[run]).map(|g| g.get()).ok();
        let is_newest = match newest {
            Some(s) => rec.step as i64 >= s || self.processed.with_label_values(&[run]).get() == 0,
            None => true,
        };
        if !is_newest {
            return;
        }
        self.last_step.with_label_values(&[run]).set(rec.step as i64);
        self.last_time.with_label_values(&[run]).set(mtime_unix);
        self.weight_norm.with_label_values(&[run]).set(rec.global_norm);
        let set_opt = |g: &GaugeVec, v: Option<f64>| match v {
            Some(v) => g.with_label_values(&[run]).set(v),
            None => {
                let _ = g.remove_label_values(&[run]);
            }
        };
        set_opt(&self.dist_first, rec.dist_first.or(if rec.first_step.is_none() { Some(0.0) } else { None }));
        set_opt(&self.update_norm, rec.update_norm);
        set_opt(&self.update_cos, rec.update_cos);
        let chosen = self.select.choose(tensors);
        let mut exported = self.exported_tensors.lock().unwrap_or_else(|p| p.into_inner());
        let prev = exported.entry(run.to_string()).or_default();
        for gone in prev.difference(&chosen.iter().map(|(n, _)| n.clone()).collect()) {
            let _ = self.tensor_norm.remove_label_values(&[run, gone]);
        }
        prev.clear();
        for (name, norm) in chosen {
            self.tensor_norm.with_label_values(&[run, &name]).set(norm);
            prev.insert(name);
        }
    }

    /// Shows the optimizer telemetry of the run's checkpoint just recorded by
    /// [`Metrics::record_checkpoint`] (`None`: it has none; the run's series are removed). Call it
    /// only for the newest checkpoint of the run (`newest_step`).
    pub(crate) fn record_optimizer(&self, run: &str, step: u64, rec: Option<&OptimizerRecord>) {
        let newest = self.last_step.get_metric_with_label_values(&[run]).map(|g| g.get()).ok();
        if newest.is_some_and(|s| s > step as i64) {
            return;
        }
        self.optimizer.record(run, rec, &self.select.allow);
    }

    pub fn error(&self, run: &str, kind: &str) {
        self.errors.with_label_values(&[run, kind]).inc();
    }

    /// Makes the per-run counters exist (at 0) from the start, so rate() and absent() behave.
    pub(crate) fn init_run(&self, run: &str) {
        self.processed.with_label_values(&[run]);
        self.store_healthy.set(1);
        for kind in ["io", "unsupported", "malformed", "refused", "incomplete", "ingest"] {
            self.errors.with_label_values(&[run, kind]);
        }
    }

    /// The text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        // The coordinators count in process-wide counters (they know nothing of this registry).
        for (kind, n) in crate::workers::listen::refusals() {
            let c = self.worker_joins_refused.with_label_values(&[kind]);
            c.inc_by(n.saturating_sub(c.get()));
        }
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!("encoding metrics: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Which tensors get a `landscaped_tensor_norm` series.
struct TensorSelect {
    allow: GlobSet,
    top_k: usize,
    max_series: usize,
}

impl TensorSelect {
    fn new(cfg: &MetricsConfig) -> anyhow::Result<TensorSelect> {
        let mut b = GlobSetBuilder::new();
        for t in &cfg.tensors {
            b.add(Glob::new(t)?);
        }
        Ok(TensorSelect { allow: b.build()?, top_k: cfg.top_k, max_series: cfg.max_series })
    }

    /// (name, L2 norm) of the selected float tensors: allow-list matches first (in checkpoint order),
    /// then the largest by element count (ties by name), at most `max_series`.
    fn choose(&self, tensors: &[TensorRecord]) -> Vec<(String, f64)> {
        let with_stats: Vec<(&TensorRecord, f64, u64)> =
            tensors.iter().filter_map(|t| t.stats.as_ref().map(|s| (t, s.l2, s.numel))).collect();
        let mut out: Vec<(String, f64)> = Vec::new();
        let mut taken = BTreeSet::new();
        for (t, l2, _) in &with_stats {
            if self.allow.is_match(&t.name) && taken.insert(t.name.clone()) {
                out.push((t.name.clone(), *l2));
            }
        }
        let mut by_size: Vec<&(&TensorRecord, f64, u64)> = with_stats.iter().collect();
        by_size.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.name.cmp(&b.0.name)));
        for (t, l2, _) in by_size.into_iter().take(self.top_k) {
            if taken.insert(t.name.clone()) {
                out.push((t.name.clone(), *l2));
            }
        }
        out.truncate(self.max_series);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use landscaped_maths::stats::TensorStats;

    fn tensor(name: &str, numel: u64, l2: f64) -> TensorRecord {
        TensorRecord {
            name: name.into(),
            stats: Some(TensorStats { numel, l2, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn tensor_series_are_bounded() {
        let cfg = MetricsConfig { tensors: vec!["*.bias".into()], top_k: 2, max_series: 3 };
        let sel = TensorSelect::new(&cfg).unwrap();
        let ts = vec![
            tensor("a.weight", 100, 1.0),
            tensor("a.bias", 10, 2.0),
            tensor("b.weight", 1000, 3.0),
            tensor("c.weight", 500, 4.0),
            tensor("b.bias", 5, 5.0),
        ];
        let names: Vec<String> = sel.choose(&ts).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["a.bias", "b.bias", "b.weight"]);
    }

    #[test]
    fn every_listed_metric_is_exported() {
        let m = Metrics::new(&MetricsConfig::default()).unwrap();
        m.init_run("r");
        let rec = CheckpointRecord {
            run: "r".into(),
            step: 5,
            global_norm: 2.0,
            dist_first: Some(1.0),
            first_step: Some(0),
            update_norm: Some(0.5),
            update_cos: Some(0.25),
            ..Default::default()
        };
        m.record_checkpoint(&rec, &[tensor("w", 4, 2.0)], 1.0);
        let opt = OptimizerRecord {
            groups: vec![crate::store::optimizer::GroupFigures {
                lr: Some(0.1),
                step: Some(5.0),
                ..Default::default()
            }],
            total: landscaped_maths::optimizer::Figures {
                n: 4,
                step_size: Some(Default::default()),
                update_rms: Some(0.5),
                momentum_norm: Some(1.0),
            },
            tensors: vec![crate::store::optimizer::TensorFigures {
                name: "w".into(),
                figures: landscaped_maths::optimizer::Figures { update_rms: Some(0.5), ..Default::default() },
                ..Default::default()
            }],
            ..Default::default()
        };
        m.optimizer.record(
            "r",
            Some(&opt),
            &globset::GlobSetBuilder::new().add(globset::Glob::new("w").unwrap()).build().unwrap(),
        );
        m.processed.with_label_values(&["r"]).inc();
        m.duration.with_label_values(&["r"]).observe(0.1);
        m.retries.with_label_values(&["r", "quiet"]).inc();
        m.scans.with_label_values(&["start"]).inc();
        m.watched.with_label_values(&["r", "inotify"]).set(1);
        m.job_runs.with_label_values(&["r", "pca", "ok"]).inc();
        m.job_duration.with_label_values(&["r", "pca"]).observe(1.0);
        m.env_errors.with_label_values(&["r", "no_space"]).inc();
        m.not_a_file.with_label_values(&["r", "not_a_file"]).inc();
        m.skipped_paths.with_label_values(&["r", "symlink_loop"]).inc();
        m.job_replaced.with_label_values(&["r", "slice"]).inc();
        m.http_rejected.with_label_values(&["cap"]).inc();
        let text = m.render();
        for name in METRIC_NAMES {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from\n{text}");
        }
        assert!(text.contains("landscaped_update_cosine{run=\"r\"} 0.25"), "{text}");
    }
}
