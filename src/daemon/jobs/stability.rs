//! The daemon's `stability` job: every N ingested checkpoints of a run, the checkpoint just ingested
//! against the optimizer's stability thresholds (λmax, Adam's preconditioned λ1, critical sharpness;
//! docs/stability.md), computed with the same runner as `landscaped stability`
//! ([`stability_at`], warm-started from the run's previous top vectors under `<data dir>/stability/`),
//! stored as a [`StabilityRecord`]; then gauges (label `run`, and `quantity` = `lambda_max`,
//! `preconditioned_lambda_1`, `critical_sharpness`):
//!
//! - `landscaped_stability_ratio`: measured / threshold (1.0 = at the edge of stability);
//! - `landscaped_stability_value`, `landscaped_stability_threshold`: the raw numbers beside it.
//!
//! ```toml
//! [run.stability]
//! every = 10
//! model_dir = "/scratch/job42/landscaped-model"
//! # The checkpoint's own optimizer state is read and wins (docs/stability.md); these keys only fill
//! # what it lacks (a checkpoint saved without its optimizer):
//! optimizer = "sgd"          # sgd, adam, adamw; another name: no threshold
//! lr = 0.05                  # else the scheduler state or trainer_state.json
//! momentum = 0.0             # dampening, nesterov; for Adam: betas = [0.9, 0.999], eps, amsgrad, adam_step
//! # exp_avg_sq = "/scratch/job42/v-{step}.safetensors"   # expert/testing: Adam's second moment
//! tol = 1e-3                 # Lanczos
//! max_hvps = 100
//! warm_start = true
//! critical = true            # the critical-sharpness line search
//! ```
//! plus the model keys every model-running job takes (see [`crate::daemon::job_model`]).

use crate::daemon::jobs::{JobContext, PeriodicJob, RunGauge};
use crate::stability::optimizer::OptimizerInput;
use crate::stability::runner::{StabilityOptions, StabilityRequest, stability_at, warm_dir};
use crate::store::stability::StabilityRecord;
use crate::workers::contract::ModelContract;
use anyhow::{Result, anyhow, bail};
use landscaped_maths::curvature::lanczos::LanczosOptions;
use std::path::PathBuf;

/// The `[run.stability]` section (the optimizer's keys are [`OptimizerInput`]'s).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StabilityJobConfig {
    every: u64,
    #[serde(default = "default_tol")]
    tol: f64,
    #[serde(default = "default_max_hvps")]
    max_hvps: usize,
    #[serde(default = "yes")]
    warm_start: bool,
    #[serde(default = "yes")]
    critical: bool,
    optimizer: Option<String>,
    lr: Option<f64>,
    #[serde(default)]
    momentum: f64,
    #[serde(default)]
    dampening: f64,
    #[serde(default)]
    nesterov: bool,
    betas: Option<(f64, f64)>,
    eps: Option<f64>,
    #[serde(default)]
    amsgrad: bool,
    adam_step: Option<u64>,
    exp_avg_sq: Option<PathBuf>,
}

fn default_tol() -> f64 {
    1e-3
}
fn default_max_hvps() -> usize {
    100
}
fn yes() -> bool {
    true
}

struct StabilityJob {
    every: u64,
    model: ModelContract,
    input: OptimizerInput,
    opts: StabilityOptions,
}

/// Builds the job from its `[run.stability]` section (errors name the key).
pub fn build(section: &toml::Value) -> Result<Box<dyn PeriodicJob>> {
    let (model, section) = crate::daemon::job_model::split(section)?;
    let c: StabilityJobConfig = section.try_into().map_err(|e| anyhow!("{e}"))?;
    if c.every == 0 {
        bail!("every: must be at least 1");
    }
    if !(c.tol.is_finite() && c.tol > 0.0) {
        bail!("tol: must be positive, not {}", c.tol);
    }
    if c.max_hvps < 2 {
        bail!("max_hvps: must be at least 2");
    }
    let d = OptimizerInput::default();
    let input = OptimizerInput {
        optimizer: c.optimizer,
        lr: c.lr,
        momentum: c.momentum,
        dampening: c.dampening,
        nesterov: c.nesterov,
        betas: c.betas.unwrap_or(d.betas),
        eps: c.eps.unwrap_or(d.eps),
        amsgrad: c.amsgrad,
        adam_step: c.adam_step,
        exp_avg_sq: c.exp_avg_sq,
        source: "config [run.stability]".into(),
        ..d
    };
    input.check()?;
    let opts = StabilityOptions {
        lanczos: LanczosOptions { max_steps: c.max_hvps, tol: c.tol, top_k: 1, seed: 0 },
        warm_start: c.warm_start,
        critical: c.critical,
        ..Default::default()
    };
    Ok(Box::new(StabilityJob { every: c.every, model, input, opts }))
}

/// The stability job's gauge families (see [`super::JobGauges`]).
pub struct Gauges {
    ratio: RunGauge,
    value: RunGauge,
    threshold: RunGauge,
}

impl Gauges {
    pub(crate) fn register(reg: &prometheus::Registry) -> Option<Gauges> {
        let make = |name: &str, help: &str| RunGauge::register(reg, name, help, &["quantity"]);
        Some(Gauges {
            ratio: make(
                "landscaped_stability_ratio",
                "Measured curvature / the optimizer's stability threshold at the latest checkpoint (1 = edge of stability)",
            )?,
            value: make(
                "landscaped_stability_value",
                "The measured curvature (lambda_max, preconditioned_lambda_1, critical_sharpness) at the latest checkpoint",
            )?,
            threshold: make(
                "landscaped_stability_threshold",
                "The optimizer's stability threshold the curvature is compared with (e.g. 2/lr)",
            )?,
        })
    }
}

/// Sets the run's gauges from a record (only the rows it holds).
pub(crate) fn publish(g: &Gauges, run: &str, rec: &StabilityRecord) {
    for a in &rec.rows {
        let q = [a.quantity.as_str()];
        g.ratio.set_for(run, &q, a.ratio);
        g.value.set_for(run, &q, a.value);
        g.threshold.set_for(run, &q, a.threshold);
    }
}

impl PeriodicJob for StabilityJob {
    fn name(&self) -> &'static str {
        "stability"
    }

    fn every(&self) -> u64 {
        self.every
    }

    fn run(&self, ctx: &JobContext, run: &str, step: u64) -> Result<()> {
        if ctx.cancelled() {
            return Ok(());
        }
        let path = ctx.checkpoint_path(run, step)?;
        let req = StabilityRequest {
            run,
            step,
            checkpoint: &path,
            input: &self.input,
            opts: &self.opts,
            warm: Some(warm_dir(&ctx.data_dir, run)),
        };
        let rec = stability_at(&self.model, &req, "daemon stability job", ctx.cancel())?;
        ctx.save(&rec)?;
        if let Some(g) = &ctx.gauges.stability {
            publish(g, run, &rec);
        }
        for n in &rec.notes {
            tracing::warn!(run, step, "stability: {n}");
        }
        tracing::info!(
            run,
            step,
            hvps = rec.hvps,
            forward = rec.forward_passes,
            seconds = rec.seconds,
            "stability stored"
        );
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
        assert!(err("every = 1\nmodel_dir = \"/m\"\nlr = -1.0").starts_with("lr"));
        assert!(err("every = 1\nmodel_dir = \"/m\"\noptimizer = \"sgd\"\nmomentum = 0.9\nnesterov = true\ndampening = 0.5").contains("Nesterov"));
        let v: toml::Value = toml::from_str(
            "every = 3\nmodel_dir = \"/m\"\noptimizer = \"adam\"\nlr = 1e-3\nbetas = [0.9, 0.99]",
        )
        .unwrap();
        let j = build(&v).unwrap();
        assert_eq!((j.name(), j.every()), ("stability", 3));
    }
}
