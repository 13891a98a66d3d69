//! One sharpness report for a model at its current parameters: Hessian extremes (Lanczos), trace
//! (Hutchinson), spectral density (SLQ) and the sharpness measures, as chosen; and the paper's Fig. 7
//! map's per-point Lanczos. Runs in any [`HessianSpace`]: a model worker's ([`super::runner`]) or memory.

use landscaped_maths::curvature::density::{Quadrature, slq};
use landscaped_maths::curvature::lanczos::{Extremes, LanczosOptions, extremes};
use landscaped_maths::curvature::measures::{
    Measure, asam_sharpness, filter_normalized_loss_rise, keskar_sharpness, sam_sharpness,
};
use landscaped_maths::curvature::space::{HessianSpace, ParamSubset, SpaceObjective};
use landscaped_maths::curvature::trace::{TraceEstimate, hutchinson};

use super::spread::{hutchinson_spread, slq_spread};
use serde::{Deserialize, Serialize};

/// What to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// λmax, λmin, |λmin/λmax| and the top-k eigenvalues (Lanczos).
    Eigs,
    /// Hutchinson trace with its standard error.
    Trace,
    /// Spectral density by stochastic Lanczos quadrature.
    Density,
    /// Keskar ε-sharpness.
    Keskar,
    /// SAM sharpness, first order.
    Sam,
    /// SAM sharpness with ascent steps.
    SamAscent,
    /// Adaptive sharpness (ASAM).
    Asam,
    /// Filter-normalized average loss rise over random directions.
    FnLossRise,
}

impl Quantity {
    pub fn all() -> Vec<Quantity> {
        use Quantity::*;
        vec![Eigs, Trace, Density, Keskar, Sam, SamAscent, Asam, FnLossRise]
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharpnessOptions {
    pub subset: ParamSubset,
    pub quantities: Vec<Quantity>,
    pub lanczos: LanczosOptions,
    /// Hutchinson: at most this many Rademacher samples; stop earlier when the standard error is below
    /// `trace_rel_tol` · |trace| (after 10 samples; 0 disables).
    pub trace_samples: usize,
    pub trace_rel_tol: f64,
    /// SLQ runs and Lanczos steps per run (PyHessian: 1 and 100).
    pub density_runs: usize,
    pub density_steps: usize,
    /// Keskar ε (box size) and ascent steps.
    pub keskar_eps: f64,
    pub keskar_steps: usize,
    /// SAM radius ρ; ascent steps for `sam_ascent` (and ASAM).
    pub sam_rho: f64,
    pub ascent_steps: usize,
    /// ASAM radius ρ and η.
    pub asam_rho: f64,
    pub asam_eta: f64,
    /// Filter-normalized loss rise: radius r and number of random directions.
    pub fn_radius: f64,
    pub fn_directions: usize,
    pub seed: u64,
}

impl Default for SharpnessOptions {
    fn default() -> Self {
        SharpnessOptions {
            subset: ParamSubset::All,
            quantities: Quantity::all(),
            lanczos: LanczosOptions { max_steps: 100, tol: 1e-3, top_k: 5, seed: 0 },
            trace_samples: 100,
            trace_rel_tol: 0.01,
            density_runs: 1,
            density_steps: 100,
            keskar_eps: 1e-3,
            keskar_steps: 10,
            sam_rho: 0.05,
            ascent_steps: 5,
            asam_rho: 0.5,
            asam_eta: 0.01,
            fn_radius: 0.1,
            fn_directions: 10,
            seed: 0,
        }
    }
}

impl SharpnessOptions {
    /// Rejects values that cannot work, naming the option.
    pub fn validate(&self) -> anyhow::Result<()> {
        let pos = |v: f64, n: &str| -> anyhow::Result<()> {
            anyhow::ensure!(v.is_finite() && v > 0.0, "{n} must be positive, not {v}");
            Ok(())
        };
        pos(self.lanczos.tol, "tol")?;
        pos(self.keskar_eps, "keskar_eps")?;
        pos(self.sam_rho, "sam_rho")?;
        pos(self.asam_rho, "asam_rho")?;
        pos(self.fn_radius, "fn_radius")?;
        anyhow::ensure!(self.asam_eta >= 0.0, "asam_eta must be ≥ 0");
        anyhow::ensure!(self.lanczos.max_steps >= 2, "max_steps must be at least 2");
        anyhow::ensure!(self.trace_samples >= 2, "trace_samples must be at least 2");
        anyhow::ensure!(self.density_runs >= 1 && self.density_steps >= 1, "density_runs/steps must be ≥ 1");
        anyhow::ensure!(self.fn_directions >= 1, "fn_directions must be ≥ 1");
        anyhow::ensure!(!self.quantities.is_empty(), "nothing to compute (empty measure list)");
        Ok(())
    }
}

/// What [`compute`] found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SharpnessReport {
    pub subset: String,
    pub dim: usize,
    pub base_loss: f64,
    pub extremes: Option<Extremes>,
    pub trace: Option<TraceEstimate>,
    pub density: Option<Quadrature>,
    pub measures: Vec<Measure>,
    pub hvps: usize,
    pub seconds: f64,
}

/// Computes the chosen quantities in a space (at its centre).
pub fn compute(
    space: &mut dyn HessianSpace,
    opts: &SharpnessOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SharpnessReport> {
    opts.validate()?;
    let t0 = std::time::Instant::now();
    let start = space.applications();
    let base_loss = anyhow::Context::context(space.loss(None), "the loss at the centre")?;
    let mut rep = SharpnessReport {
        subset: format!("{:?}", opts.subset).to_lowercase(),
        dim: space.dim(),
        base_loss,
        ..Default::default()
    };
    for q in &opts.quantities {
        let name =
            serde_json::to_value(q).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        progress(&name);
        match q {
            Quantity::Eigs => rep.extremes = Some(extremes(space, &opts.lanczos)?),
            Quantity::Trace => {
                rep.trace =
                    Some(hutchinson(space, opts.trace_samples, 10, opts.trace_rel_tol, opts.seed ^ 0x7472)?)
            }
            Quantity::Density => {
                rep.density = Some(slq(space, opts.density_runs, opts.density_steps, opts.seed ^ 0x736c71)?)
            }
            Quantity::Keskar => rep.measures.push(keskar_sharpness(
                &mut SpaceObjective::new(space)?,
                opts.keskar_eps,
                opts.keskar_steps,
            )?),
            Quantity::Sam => {
                rep.measures.push(sam_sharpness(&mut SpaceObjective::new(space)?, opts.sam_rho, 0)?)
            }
            Quantity::SamAscent => rep.measures.push(sam_sharpness(
                &mut SpaceObjective::new(space)?,
                opts.sam_rho,
                opts.ascent_steps.max(1),
            )?),
            Quantity::Asam => rep.measures.push(asam_sharpness(
                &mut SpaceObjective::new(space)?,
                opts.asam_rho,
                opts.asam_eta,
                opts.ascent_steps,
            )?),
            Quantity::FnLossRise => rep.measures.push(filter_normalized_loss_rise(
                &mut SpaceObjective::new(space)?,
                opts.fn_radius,
                opts.fn_directions,
                opts.seed,
            )?),
        }
    }
    rep.hvps = space.applications() - start;
    rep.seconds = t0.elapsed().as_secs_f64();
    Ok(rep)
}

/// [`compute`] over several spaces at the same parameters (workers): Hutchinson's probes and SLQ's runs
/// are spread over all of them (each is independent; the results are folded in probe order, so they
/// are those of one space), everything else runs in the first. `classify` tells a lost worker from a
/// fatal error.
pub(crate) fn compute_spread<S: HessianSpace + Send>(
    spaces: &mut [S],
    opts: &SharpnessOptions,
    mut progress: impl FnMut(&str),
    classify: fn(anyhow::Error) -> crate::workers::scheduler::PointError,
) -> anyhow::Result<SharpnessReport> {
    anyhow::ensure!(!spaces.is_empty(), "no space to compute in");
    if spaces.len() == 1 {
        return compute(&mut spaces[0], opts, progress);
    }
    opts.validate()?;
    let t0 = std::time::Instant::now();
    let applied = |spaces: &[S]| spaces.iter().map(|s| s.applications()).sum::<usize>();
    let start = applied(spaces);
    let spread = |q: &Quantity| matches!(q, Quantity::Trace | Quantity::Density);
    let rest: Vec<Quantity> = opts.quantities.iter().copied().filter(|q| !spread(q)).collect();
    let mut rep = if rest.is_empty() {
        let first = &mut spaces[0];
        SharpnessReport {
            subset: format!("{:?}", opts.subset).to_lowercase(),
            dim: first.dim(),
            base_loss: first.loss(None)?,
            ..Default::default()
        }
    } else {
        let o = SharpnessOptions { quantities: rest, ..opts.clone() };
        compute(&mut spaces[0], &o, &mut progress)?
    };
    if opts.quantities.contains(&Quantity::Trace) {
        progress("trace");
        rep.trace = Some(hutchinson_spread(
            spaces,
            opts.trace_samples,
            10,
            opts.trace_rel_tol,
            opts.seed ^ 0x7472,
            classify,
        )?);
    }
    if opts.quantities.contains(&Quantity::Density) {
        progress("density");
        rep.density =
            Some(slq_spread(spaces, opts.density_runs, opts.density_steps, opts.seed ^ 0x736c71, classify)?);
    }
    rep.hvps = applied(spaces) - start;
    rep.seconds = t0.elapsed().as_secs_f64();
    Ok(rep)
}
