//! The daemon's `sharpness` job: every N ingested checkpoints of a run, the Hessian extremes (Lanczos),
//! trace (Hutchinson) and any chosen sharpness measures of the checkpoint just ingested, computed with
//! the same functions as `landscaped sharpness` ([`sharpness_at`] on a model worker, [`record`]; no
//! progress bar) from the daemon's low-priority job thread, stored as a
//! [`SharpnessRecord`](crate::store::sharpness::SharpnessRecord) (served at
//! `GET /api/v1/runs/{run}/sharpness`); then gauges (label `run`):
//!
//! - `landscaped_hessian_lambda_max`, `landscaped_hessian_lambda_min`: the extreme eigenvalues;
//! - `landscaped_hessian_eigen_ratio`: |λmin/λmax|;
//! - `landscaped_hessian_converged`: 1 if Lanczos met `tol` within `max_hvps`, else 0 (so a
//!   non-converged λ is never a silent number);
//! - `landscaped_hessian_trace`: the Hutchinson estimate;
//! - `landscaped_sharpness{measure="..."}`: each sharpness measure computed (keskar, sam, ...).
//!
//! Gauges of quantities not asked for are not set.
//!
//! ```toml
//! [run.sharpness]
//! every = 100                # after every 100 new checkpoints
//! model_dir = "/scratch/job42/landscaped-model"   # written by examples/landscaped_export.py
//! measures = ["eigs", "trace"]   # default; also density, keskar, sam, sam_ascent, asam, fn_loss_rise
//! tol = 1e-3                 # Lanczos relative residual tolerance
//! max_hvps = 100             # Lanczos step budget (one HVP per step)
//! threads = 1                # libtorch CPU threads (keep the trainer's CPUs free)
//! ```
//! plus the model keys every model-running job takes (`model`/`eval_data`/`loss` instead of
//! `model_dir`, `batch_size`, `subsample`, `device`, `map`, `allow_unexpected`): see
//! [`crate::daemon::job_model`].
//!
//! The computation has no safe point inside it: on shutdown a job not yet started is skipped, a running
//! one ends with an error when the daemon stops its model worker (nothing is stored).

use crate::daemon::jobs::{JobContext, PeriodicJob, RunGauge};
use crate::sharpness::compute::{Quantity, SharpnessOptions};
use crate::sharpness::runner::{record, sharpness_at};
use crate::store::sharpness::SharpnessRecord;
use crate::workers::contract::ModelContract;
use anyhow::{Result, anyhow, bail};
use landscaped_maths::curvature::lanczos::LanczosOptions;

/// The `[run.sharpness]` section.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SharpnessJobConfig {
    pub every: u64,
    #[serde(default = "default_measures")]
    pub measures: Vec<String>,
    #[serde(default = "default_tol")]
    pub tol: f64,
    #[serde(default = "default_max_hvps")]
    pub max_hvps: usize,
}

fn default_measures() -> Vec<String> {
    vec!["eigs".into(), "trace".into()]
}

fn default_tol() -> f64 {
    1e-3
}

fn default_max_hvps() -> usize {
    100
}

/// The job, with its parsed options.
pub(crate) struct SharpnessJob {
    cfg: SharpnessJobConfig,
    model: ModelContract,
    opts: SharpnessOptions,
}

/// A measure name as the config writes it (`eigs`, `sam_ascent`, ...).
fn parse_quantity(name: &str) -> Result<Quantity> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        let known: Vec<String> = Quantity::all()
            .iter()
            .filter_map(|q| serde_json::to_value(q).ok().and_then(|v| v.as_str().map(String::from)))
            .collect();
        anyhow!("measures: unknown measure {name:?} (one of {})", known.join(", "))
    })
}

/// Builds the job from its `[run.sharpness]` section (errors name the key).
pub fn build(section: &toml::Value) -> Result<Box<dyn PeriodicJob>> {
    let (model, section) = crate::daemon::job_model::split(section)?;
    let cfg: SharpnessJobConfig = section.try_into().map_err(|e| anyhow!("{e}"))?;
    if cfg.every == 0 {
        bail!("every: must be at least 1");
    }
    if !(cfg.tol.is_finite() && cfg.tol > 0.0) {
        bail!("tol: must be positive, not {}", cfg.tol);
    }
    if cfg.max_hvps < 2 {
        bail!("max_hvps: must be at least 2");
    }
    if cfg.measures.is_empty() {
        bail!("measures: empty list (nothing to compute)");
    }
    let mut quantities = Vec::new();
    for m in &cfg.measures {
        let q = parse_quantity(m)?;
        if !quantities.contains(&q) {
            quantities.push(q);
        }
    }
    let opts = SharpnessOptions {
        quantities,
        lanczos: LanczosOptions { max_steps: cfg.max_hvps, tol: cfg.tol, top_k: 5, seed: 0 },
        ..Default::default()
    };
    opts.validate()?;
    Ok(Box::new(SharpnessJob { cfg, model, opts }))
}

/// The sharpness job's gauge families (see [`super::JobGauges`]).
pub struct Gauges {
    lambda_max: RunGauge,
    lambda_min: RunGauge,
    ratio: RunGauge,
    converged: RunGauge,
    trace: RunGauge,
    sharpness: RunGauge,
}

impl Gauges {
    /// Registers the families in `reg`; None if any can't be.
    pub(crate) fn register(reg: &prometheus::Registry) -> Option<Gauges> {
        let make = |name: &str, help: &str| RunGauge::register(reg, name, help, &[]);
        Some(Gauges {
            lambda_max: make(
                "landscaped_hessian_lambda_max",
                "Largest Hessian eigenvalue at the latest checkpoint the sharpness job ran on (Lanczos)",
            )?,
            lambda_min: make(
                "landscaped_hessian_lambda_min",
                "Smallest (most negative) Hessian eigenvalue at the latest sharpness checkpoint (Lanczos)",
            )?,
            ratio: make(
                "landscaped_hessian_eigen_ratio",
                "|lambda_min / lambda_max| of the Hessian at the latest sharpness checkpoint",
            )?,
            converged: make(
                "landscaped_hessian_converged",
                "1 if Lanczos met its tolerance for the published eigenvalues, 0 if not",
            )?,
            trace: make(
                "landscaped_hessian_trace",
                "Hutchinson estimate of the Hessian trace at the latest sharpness checkpoint",
            )?,
            sharpness: RunGauge::register(
                reg,
                "landscaped_sharpness",
                "Sharpness measure (keskar, sam, sam_ascent, asam, fn_loss_rise) at the latest sharpness checkpoint",
                &["measure"],
            )?,
        })
    }
}

/// Sets the run's gauges from a record (only the quantities it holds).
pub(crate) fn publish(g: &Gauges, run: &str, rec: &SharpnessRecord) {
    if let Some(e) = &rec.extremes {
        g.lambda_max.set(run, e.lambda_max);
        g.lambda_min.set(run, e.lambda_min);
        g.ratio.set(run, e.ratio);
        g.converged.set(run, if e.converged { 1.0 } else { 0.0 });
    }
    if let Some(t) = &rec.trace {
        g.trace.set(run, t.trace);
    }
    for m in &rec.measures {
        g.sharpness.set_for(run, &[&m.name], m.value);
    }
}

impl PeriodicJob for SharpnessJob {
    fn name(&self) -> &'static str {
        "sharpness"
    }

    fn every(&self) -> u64 {
        self.cfg.every
    }

    fn run(&self, ctx: &JobContext, run: &str, step: u64) -> Result<()> {
        if ctx.cancelled() {
            return Ok(());
        }
        let contract = &self.model;
        let path = ctx.checkpoint_path(run, step)?;
        // Held before the worker starts: a rotation while it imports can't take it away.
        let held = crate::daemon::hold::hold(&ctx.data_dir, &path)?;
        let (rep, used) =
            sharpness_at(contract, &held.path, &self.opts, "daemon sharpness job", ctx.cancel(), |_| {})?;
        let rec = record(run, step, &used, rep);
        ctx.save(&rec)?;
        if let Some(g) = &ctx.gauges.sharpness {
            publish(g, run, &rec);
        }
        match &rec.extremes {
            Some(e) if !e.converged => tracing::warn!(
                run,
                step,
                lambda_max = e.lambda_max,
                residual = e.residual_max,
                hvps = e.hvps,
                "sharpness stored, but Lanczos did not converge: raise max_hvps or tol"
            ),
            _ => tracing::info!(run, step, hvps = rec.hvps, seconds = rec.seconds, "sharpness stored"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        super::super::config_error(build, s)
    }

    #[test]
    fn config_errors_name_the_key() {
        assert!(err("every = 0\nmodel_dir = \"/m\"").starts_with("every"));
        assert!(err("every = 1\nmodel_dir = \"/m\"\nbogus = 1").contains("bogus"));
        assert!(
            err("every = 1\nmodel_dir = \"/m\"\nmeasures = [\"eigs\", \"nope\"]").starts_with("measures")
        );
        assert!(err("every = 1\nmodel_dir = \"/m\"\nmeasures = []").starts_with("measures"));
        assert!(err("every = 1\nmodel_dir = \"/m\"\ntol = -1.0").starts_with("tol"));
        assert!(err("every = 1\nmodel_dir = \"/m\"\nmax_hvps = 1").starts_with("max_hvps"));
        assert!(err("every = 1\nmodel_dir = \"/m\"\nsubsample = 0").starts_with("subsample"));
        assert!(err("every = 1").contains("model_dir"));
        let v: toml::Value =
            toml::from_str("every = 3\nmodel_dir = \"/m\"\nmeasures = [\"sam_ascent\", \"eigs\"]").unwrap();
        let j = build(&v).unwrap();
        assert_eq!((j.name(), j.every()), ("sharpness", 3));
    }

    #[test]
    fn non_converged_extremes_and_measures_are_published_as_such() {
        use landscaped_maths::curvature::lanczos::Extremes;
        use landscaped_maths::curvature::measures::Measure;
        let reg = prometheus::Registry::new();
        let rec = SharpnessRecord {
            run: "r".into(),
            extremes: Some(Extremes {
                lambda_max: 2.0,
                lambda_min: -0.5,
                ratio: 0.25,
                converged: false,
                ..Default::default()
            }),
            measures: vec![Measure { name: "sam".into(), value: 0.125, ..Default::default() }],
            ..Default::default()
        };
        publish(&Gauges::register(&reg).unwrap(), "r", &rec);
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &reg.gather(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        for line in [
            "landscaped_hessian_converged{run=\"r\"} 0",
            "landscaped_hessian_lambda_max{run=\"r\"} 2",
            "landscaped_hessian_lambda_min{run=\"r\"} -0.5",
            "landscaped_hessian_eigen_ratio{run=\"r\"} 0.25",
            "landscaped_sharpness{measure=\"sam\",run=\"r\"} 0.125",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        // No trace was computed: no trace sample.
        assert!(!text.contains("landscaped_hessian_trace{"), "{text}");
    }

    #[test]
    fn defaults_are_the_cheap_quantities() {
        let v: toml::Value = toml::from_str("every = 1\nmodel_dir = \"/m\"").unwrap();
        let (model, v) = crate::daemon::job_model::split(&v).unwrap();
        assert_eq!((model.threads, model.device.as_str()), (Some(1), "cpu"));
        let cfg: SharpnessJobConfig = v.try_into().unwrap();
        let qs: Vec<Quantity> = cfg.measures.iter().map(|m| parse_quantity(m).unwrap()).collect();
        assert_eq!(qs, vec![Quantity::Eigs, Quantity::Trace]);
    }
}
