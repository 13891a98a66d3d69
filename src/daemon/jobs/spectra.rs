//! The daemon's spectra job: every N ingested checkpoints of a run, measure every layer's spectral
//! health from the checkpoint just ingested (`crate::spectra`: WeightWatcher's ESD, α, α_weighted,
//! norms; one layer's tensor, its f64 slice and the SVD workspace in memory at a time), store the record
//! and publish run-level gauges: mean α, the fraction of layers with α < 2, mean α_weighted, layers
//! measured and refused. Per-layer α gauges only for the layers the `layer_gauges` globs name.
//!
//! Enabled per run in the daemon config:
//! ```toml
//! [run.spectra]
//! every = 1              # every checkpoint (default 1)
//! threads = 1            # threads for each SVD, at the job thread's low priority (default 1)
//! max_flops = 2e11       # layers whose exact SVD costs more are approximated (exact = false, method named)
//! approximate = true     # false: refuse them instead, by name, in the record
//! approx_top_k = 0       # top eigenvalues computed exactly per slice when approximating (0: from max_flops)
//! layer_gauges = []      # globs: per-layer landscaped_spectra_layer_alpha{run,layer} (default none)
//! ```

use crate::daemon::jobs::{JobContext, PeriodicJob, RunGauge};
use crate::query::norms::tensor_matcher;
use crate::spectra::{DEFAULT_MAX_FLOPS, Options, measure_until};
use crate::store::spectra as records;
use landscaped_maths::spectra::ApproxOptions;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SpectraJobConfig {
    pub every: u64,
    pub threads: usize,
    pub max_flops: f64,
    pub approximate: bool,
    pub approx_top_k: usize,
    pub layer_gauges: Vec<String>,
}

impl Default for SpectraJobConfig {
    fn default() -> Self {
        SpectraJobConfig {
            every: 1,
            threads: 1,
            max_flops: DEFAULT_MAX_FLOPS,
            approximate: true,
            approx_top_k: 0,
            layer_gauges: Vec::new(),
        }
    }
}

pub(crate) struct SpectraJob {
    cfg: SpectraJobConfig,
    gauge_layers: Vec<globset::GlobMatcher>,
}

/// Builds the job from its `[run.spectra]` section; bad values name their key.
pub fn build(section: &toml::Value) -> anyhow::Result<Box<dyn PeriodicJob>> {
    let cfg: SpectraJobConfig = section.clone().try_into().map_err(|e| anyhow::anyhow!("{e}"))?;
    if cfg.every == 0 {
        anyhow::bail!("every: must be at least 1");
    }
    if cfg.threads == 0 || cfg.threads > 256 {
        anyhow::bail!("threads: must be between 1 and 256");
    }
    if cfg.max_flops.is_nan() || cfg.max_flops <= 0.0 {
        anyhow::bail!("max_flops: must be positive");
    }
    let gauge_layers = cfg
        .layer_gauges
        .iter()
        .map(|g| tensor_matcher(g).map_err(|e| anyhow::anyhow!("layer_gauges: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Box::new(SpectraJob { cfg, gauge_layers }))
}

/// The spectra job's gauge families (see [`super::JobGauges`]).
pub struct Gauges {
    mean_alpha: RunGauge,
    frac_below_2: RunGauge,
    mean_alpha_weighted: RunGauge,
    layers: RunGauge,
    layer_alpha: RunGauge,
}

impl Gauges {
    pub(crate) fn register(reg: &prometheus::Registry) -> Option<Gauges> {
        let mk = |name: &str, help: &str, labels: &[&str]| RunGauge::register(reg, name, help, labels);
        Some(Gauges {
            mean_alpha: mk(
                "landscaped_spectra_mean_alpha",
                "Mean WeightWatcher power-law exponent alpha over the layers of the run's latest measured checkpoint",
                &[],
            )?,
            frac_below_2: mk(
                "landscaped_spectra_alpha_below_2_fraction",
                "Fraction of layers with alpha < 2 (WeightWatcher's over-trained warning) at the latest measured checkpoint",
                &[],
            )?,
            mean_alpha_weighted: mk(
                "landscaped_spectra_mean_alpha_weighted",
                "Mean alpha * log10(lambda_max) over the layers of the latest measured checkpoint",
                &[],
            )?,
            layers: mk(
                "landscaped_spectra_layers",
                "Layers measured (state=measured) and refused over the exact-SVD budget or unreadable (state=refused)",
                &["state"],
            )?,
            layer_alpha: mk(
                "landscaped_spectra_layer_alpha",
                "Alpha of one layer (only the layers [run.spectra] layer_gauges names)",
                &["layer"],
            )?,
        })
    }
}

/// Sets the gauges from a record.
pub(crate) fn publish(g: &Gauges, rec: &records::SpectraRecord, layer_gauges: &[globset::GlobMatcher]) {
    let run = rec.run.as_str();
    if let Some(s) = &rec.summary {
        g.mean_alpha.set(run, s.mean_alpha);
        g.frac_below_2.set(run, s.frac_alpha_below_2);
        g.mean_alpha_weighted.set(run, s.mean_alpha_weighted);
    }
    g.layers.set_for(run, &["measured"], rec.layers.len() as f64);
    g.layers.set_for(run, &["refused"], rec.refused.len() as f64);
    for l in rec.layers.iter().filter(|l| layer_gauges.iter().any(|m| m.is_match(&l.name))) {
        g.layer_alpha.set_for(run, &[l.name.as_str()], l.fit.alpha);
    }
}

impl PeriodicJob for SpectraJob {
    fn name(&self) -> &'static str {
        "spectra"
    }

    fn every(&self) -> u64 {
        self.cfg.every
    }

    fn run(&self, ctx: &JobContext, run: &str, step: u64) -> anyhow::Result<()> {
        let path = ctx.checkpoint_path(run, step)?;
        let opts = Options {
            threads: self.cfg.threads,
            max_flops: self.cfg.max_flops,
            approximate: self.cfg.approximate,
            approx: ApproxOptions { top_k: self.cfg.approx_top_k, ..ApproxOptions::default() },
            ..Options::default()
        };
        let stop = || ctx.cancelled();
        let Some(rec) = measure_until(run, step, &path, &opts, &stop)? else {
            tracing::info!(run, step, "spectra: stopped by the daemon's shutdown; not stored");
            return Ok(());
        };
        ctx.save(&rec)?;
        if let Some(g) = &ctx.gauges.spectra {
            publish(g, &rec, &self.gauge_layers);
        }
        for r in &rec.refused {
            tracing::warn!(run, step, layer = r.name.as_str(), "spectra: layer not measured: {}", r.why);
        }
        tracing::info!(
            run,
            step,
            layers = rec.layers.len(),
            mean_alpha = rec.summary.as_ref().map(|s| s.mean_alpha).unwrap_or(f64::NAN),
            seconds = rec.seconds,
            "spectra measured"
        );
        Ok(())
    }
}
