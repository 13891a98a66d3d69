//! Periodic background jobs: the extension point for capabilities that run every N checkpoints of a
//! run (trajectory PCA, loss-landscape slices, sharpness), at low priority, beside ingest.
//!
//! The jobs live here, one file each: [`pca`] (trajectory PCA), [`slice`] (loss-landscape slices),
//! [`sharpness`] (Hessian extremes, trace, sharpness measures), [`stability`] (the optimizer's stability
//! thresholds against λmax, Adam's preconditioned λ1 and critical sharpness), [`spectra`] (every layer's
//! ESD and WeightWatcher's α from the weights alone); they call the same runners as the CLI.
//!
//! # Adding a job
//! 1. Implement [`PeriodicJob`] in a file of this folder, e.g. `pca.rs`'s `PcaJob`.
//! 2. Write a constructor `fn build(section: &toml::Value) -> anyhow::Result<Box<dyn PeriodicJob>>` that
//!    deserializes your config section (use a struct with `#[serde(deny_unknown_fields)]` and
//!    `section.clone().try_into::<YourConfig>()`), and rejects bad values with an error naming the key
//!    (the daemon prefixes it with `config FILE: key run.<job>:`). It is called once at config load (to
//!    validate) and once when the daemon starts (to build the job for each run).
//! 3. Add ONE line to [`registry`] below: `JobSpec { name: "pca", build: pca::build },`, and, if it
//!    publishes gauges, a field to [`JobGauges`] (each family a [`RunGauge`]).
//!
//! A run then enables the job with a table named after it:
//! ```toml
//! [[run]]
//! name = "resnet-sgd"
//! watch = ["/scratch/job42/checkpoints"]
//! [run.pca]            # the section handed to your `build`
//! every = 10           # your fields; `every` is the convention for "every N checkpoints"
//! ```
//!
//! # When jobs run
//! After each checkpoint of a run is ingested, the daemon counts it for every job of that run; when the
//! count reaches `every()`, the job is scheduled with the run name and the step just ingested. Jobs
//! run one at a time on a dedicated low-priority thread, never on the HTTP runtime, in the order they
//! came due, so every kind and run gets its turn; if a job for the same run is still waiting when it
//! comes due again, the waiting one is replaced by the newer step (no pile-up; one line and
//! `landscaped_job_replaced_total`). A job returning `Err` is logged and counted in
//! `landscaped_job_runs_total{outcome="error"}` (`worker_failed`, `timeout` when its model worker failed
//! or outlived a call's deadline); the daemon keeps going. Long jobs should check
//! [`JobContext::cancelled`] between units of work and return early (leaving resumable state) when the
//! daemon is shutting down; model workers are stopped at shutdown, so a job waiting on one gets an error
//! at once, and the daemon exits without waiting more than a few seconds for the job thread.
//!
//! # What a job may use
//! [`JobContext`]: the open [`Store`] (the daemon holds the only handle: never `Store::open` yourself;
//! [`JobContext::checkpoint_path`] finds the checkpoint a step names, [`JobContext::save`] stores a
//! job's record), the data dir (for on-disk state beside the store), the daemon's Prometheus registry,
//! and the jobs' gauges ([`JobGauges`]: registered once per daemon in its own registry when the context
//! is made, so two daemons in one process — or tests — never share them), named `landscaped_<job>_*`
//! with a `run` label first ([`RunGauge`]).

pub mod pca;
pub mod sharpness;
pub mod slice;
pub mod spectra;
pub mod stability;

use crate::cancel::Cancel;
use crate::store::{RunStepRecord, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// A background job run every N ingested checkpoints of a run.
pub trait PeriodicJob: Send + Sync {
    /// Short stable name (the config section's name): `pca`, `slice`, `sharpness`.
    fn name(&self) -> &'static str;
    /// Run after every `every()` newly ingested checkpoints (at least 1).
    fn every(&self) -> u64;
    /// Do the work for `run` as of `step` (the checkpoint just ingested). Blocking is fine.
    fn run(&self, ctx: &JobContext, run: &str, step: u64) -> anyhow::Result<()>;
}

/// What a job gets to work with.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub data_dir: PathBuf,
    pub registry: prometheus::Registry,
    pub gauges: Arc<JobGauges>,
    cancel: Cancel,
}

/// Every job's gauge families, registered in one daemon's registry (a family that can't be registered,
/// e.g. because the name is taken, is `None`: that job publishes nothing rather than failing).
pub struct JobGauges {
    pub pca: Option<pca::Gauges>,
    pub slice: Option<slice::Gauges>,
    pub sharpness: Option<sharpness::Gauges>,
    pub stability: Option<stability::Gauges>,
    pub spectra: Option<spectra::Gauges>,
}

impl JobGauges {
    pub(crate) fn register(reg: &prometheus::Registry) -> JobGauges {
        JobGauges {
            pca: pca::Gauges::register(reg),
            slice: slice::Gauges::register(reg),
            sharpness: sharpness::Gauges::register(reg),
            stability: stability::Gauges::register(reg),
            spectra: spectra::Gauges::register(reg),
        }
    }
}

impl JobContext {
    pub fn new(store: Store, data_dir: PathBuf, registry: prometheus::Registry, cancel: Cancel) -> Self {
        let gauges = Arc::new(JobGauges::register(&registry));
        JobContext { store, data_dir, registry, gauges, cancel }
    }

    /// The daemon's stop token, for work that polls it itself (e.g. waiting for workers); a job that
    /// may also stop for a reason of its own takes a [`Cancel::child`] of it.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// True once the daemon is shutting down: stop at the next safe point.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Where ingest found `run`'s checkpoint at `step` (one key lookup, not a decode of the run).
    pub(crate) fn checkpoint_path(&self, run: &str, step: u64) -> anyhow::Result<PathBuf> {
        match crate::store::checkpoints::checkpoint(&self.store, run, step)? {
            Some(c) => Ok(PathBuf::from(c.path)),
            None => anyhow::bail!(
                "run {run:?} has no checkpoint at step {step} in the store (see `landscaped checkpoints`)"
            ),
        }
    }

    /// Stores a job's record on its own (replacing the one at the same run and step) and flushes the
    /// store, so a result the job spent minutes on outlives a crash right after.
    pub(crate) fn save<R: RunStepRecord>(&self, rec: &R) -> anyhow::Result<()> {
        R::put(&self.store, rec)?;
        self.store.flush()?;
        Ok(())
    }
}

/// Builds a job from its config section.
pub(crate) type JobBuilder = fn(&toml::Value) -> anyhow::Result<Box<dyn PeriodicJob>>;

/// A kind of job the config may enable, by the name of its section.
pub struct JobSpec {
    pub name: &'static str,
    pub build: JobBuilder,
}

/// Every kind of job the daemon knows. Add one line per job (see the module doc).
pub fn registry() -> &'static [JobSpec] {
    &[
        JobSpec { name: "pca", build: pca::build },
        JobSpec { name: "slice", build: slice::build },
        JobSpec { name: "sharpness", build: sharpness::build },
        JobSpec { name: "stability", build: stability::build },
        JobSpec { name: "spectra", build: spectra::build },
    ]
}

/// The job spec named `name`.
pub fn find(name: &str) -> Option<&'static JobSpec> {
    registry().iter().find(|j| j.name == name)
}

/// Builds the jobs a run's config enables.
pub(crate) fn build_all(
    sections: &std::collections::BTreeMap<String, toml::Value>,
) -> anyhow::Result<Vec<Box<dyn PeriodicJob>>> {
    let mut out = Vec::new();
    for (name, section) in sections {
        let spec = find(name).ok_or_else(|| anyhow::anyhow!("unknown job section `{name}`"))?;
        out.push((spec.build)(section)?);
    }
    Ok(out)
}

/// Every gauge the periodic jobs publish, once they have run (the Grafana dashboard test accepts them
/// beside [`crate::daemon::metrics::METRIC_NAMES`]; each job's daemon test checks its own are on /metrics).
pub const JOB_METRIC_NAMES: &[&str] = &[
    "landscaped_pca_explained_variance_ratio",
    "landscaped_pca_latest_coordinate",
    "landscaped_pca_latest_residual",
    "landscaped_slice_centre_loss",
    "landscaped_slice_curvature",
    "landscaped_slice_loss_rise",
    "landscaped_hessian_lambda_max",
    "landscaped_hessian_lambda_min",
    "landscaped_hessian_eigen_ratio",
    "landscaped_hessian_converged",
    "landscaped_hessian_trace",
    "landscaped_sharpness",
    "landscaped_stability_ratio",
    "landscaped_stability_value",
    "landscaped_stability_threshold",
    "landscaped_spectra_mean_alpha",
    "landscaped_spectra_alpha_below_2_fraction",
    "landscaped_spectra_mean_alpha_weighted",
    "landscaped_spectra_layers",
    "landscaped_spectra_layer_alpha",
];

/// One gauge family of a job, labelled `run` first and then by labels of its own (a quantity, a
/// measure, a component, a layer): registered once per daemon, set per run by the job's `publish`.
pub struct RunGauge(prometheus::GaugeVec);

impl RunGauge {
    /// Registers `name` in `reg` with the labels `run` and then `labels`; None if it can't be (e.g. the
    /// name is already taken), so a job publishes nothing rather than failing its computation.
    pub(crate) fn register(
        reg: &prometheus::Registry,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Option<RunGauge> {
        let names: Vec<&str> = std::iter::once("run").chain(labels.iter().copied()).collect();
        let g = prometheus::GaugeVec::new(prometheus::Opts::new(name, help), &names).ok()?;
        reg.register(Box::new(g.clone())).ok()?;
        Some(RunGauge(g))
    }

    /// Sets the run's value (a family with no labels of its own).
    pub(crate) fn set(&self, run: &str, value: f64) {
        self.set_for(run, &[], value);
    }

    /// Sets the run's value for the values `of` its own labels, in their order.
    pub(crate) fn set_for(&self, run: &str, of: &[&str], value: f64) {
        self.0.with_label_values(&label_values(run, of)).set(value);
    }

    /// Removes the run's series for the values `of` its own labels (absent: nothing to do).
    pub(crate) fn remove_for(&self, run: &str, of: &[&str]) {
        let _ = self.0.remove_label_values(&label_values(run, of));
    }
}

fn label_values<'a>(run: &'a str, of: &[&'a str]) -> Vec<&'a str> {
    std::iter::once(run).chain(of.iter().copied()).collect()
}

/// For the jobs' config tests: the error `build` gives for the `[run.<job>]` table written in `toml`,
/// as the daemon prints it.
#[cfg(test)]
pub(crate) fn config_error<T>(build: impl Fn(&toml::Value) -> anyhow::Result<T>, toml: &str) -> String {
    let v: toml::Value = toml::from_str(toml).unwrap();
    build(&v).err().expect("the config was accepted").to_string()
}
