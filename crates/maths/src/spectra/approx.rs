//! A layer too large for an exact SVD within the budget: its top-k eigenvalues exactly by Lanczos on the
//! Gram operator (matrix-free, [`super::gram`], [`super::krylov`]), the trace exactly from ‖W‖_F², and the
//! rest of the spectrum by deflated stochastic Lanczos quadrature. Method name: [`METHOD`].
//!
//! What each quantity then is (docs/spectra.md states it for users):
//! - exact (to the Lanczos tolerance, 1e-12 relative by default): the top-k eigenvalues, λmax, sv_max,
//!   log_spectral_norm; log_norm and stable_rank (Σλ = ‖W‖_F², summed in f64);
//! - the fit, with xmin restricted to the top k (WeightWatcher's fitter over those candidates, see
//!   [`super::powerlaw::fit_top`]): α, D, σ and num_pl_spikes at each candidate xmin are exactly the
//!   exact path's (they depend only on the eigenvalues ≥ xmin), so where the exact fit's xmin lies within
//!   the top k the result is the exact one; where it lies below, the fit is the best among the top k
//!   (`xmin_at_edge` says when the chosen xmin is the lowest candidate: the exact xmin may be lower);
//!   α_weighted = α · log10 λmax follows;
//! - estimated by the quadrature (with the exactly known Σλ of the rest as a control variate):
//!   log_alpha_norm (the top k summed exactly, the rest by SLQ), entropy,
//!   matrix_rank, rank_loss, weak_rank_loss, sv_min (the smallest quadrature node: an upper bound).
//!
//! Conv2d layers run per kernel position; the pooled top is the union of the slices' converged tops
//! down to the largest of their lowest converged values (every pooled eigenvalue above it is known).
//!
//! k comes from the budget: the operator applications `max_flops` pays for (4·rows·cols flops each, per
//! slice), less the quadrature's, go to Lanczos steps, a quarter of them as k (32 ≤ k ≤ 1024), unless
//! set; at least 4k steps.

use landscaped_formats::Values;
use serde::{Deserialize, Serialize};

use super::esd::{Esd, WEAK_RANK_TOLERANCE};
use super::gram::Gram;
use super::krylov::{Quadrature, deflated_slq, top_eigen};
use super::layers::LayerPlan;
use super::metrics::{LayerSpectrum, NormMetrics};
use super::powerlaw::fit_top;

/// The method's name in records and tables.
pub const METHOD: &str = "lanczos-top-k+slq";
const MIN_K: usize = 32;
const MAX_K: usize = 1024;
/// The Lanczos basis is kept within this many f64 values (512 MiB).
const MAX_BASIS: usize = 64 << 20;

/// How to approximate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApproxOptions {
    /// Top eigenvalues to compute exactly per slice (0: from the budget).
    pub top_k: usize,
    /// SLQ probes and Lanczos steps per probe.
    pub probes: usize,
    pub slq_steps: usize,
    /// Relative accuracy of the top eigenvalues (see [`super::krylov`]).
    pub tol: f64,
    pub seed: u64,
}

impl Default for ApproxOptions {
    fn default() -> Self {
        ApproxOptions { top_k: 0, probes: 8, slq_steps: 40, tol: 1e-12, seed: 0 }
    }
}

/// What a layer's record says about its approximation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Approximation {
    /// [`METHOD`].
    pub method: String,
    /// Top eigenvalues known exactly, pooled over the slices: the fit's xmin candidates.
    pub k: usize,
    /// Top eigenvalues asked for, per slice.
    pub k_requested: usize,
    /// Every slice reached `k_requested` converged eigenvalues (or was explored whole).
    pub converged: bool,
    /// The largest error bound of the top eigenvalues, relative to each.
    pub max_relative_bound: f64,
    /// The chosen xmin is the lowest candidate: the exact fit's xmin may lie below the top k.
    pub xmin_at_edge: bool,
    pub lanczos_steps: usize,
    pub slq_probes: usize,
    pub slq_steps: usize,
    /// Operator applications in all (each one or two passes over the matrix).
    pub matvecs: usize,
}

/// k (per slice) and the Lanczos step limit for `plan` under `max_flops`.
pub fn budget(plan: &LayerPlan, max_flops: f64, opts: &ApproxOptions) -> (usize, usize) {
    let (r, c) = plan.slice_shape();
    let dim = r.min(c).max(1);
    let per_matvec = 4.0 * r as f64 * c as f64 * plan.rf as f64;
    let matvecs = if max_flops.is_finite() { (max_flops / per_matvec).floor() as usize } else { usize::MAX };
    let lanczos = matvecs.saturating_sub(opts.probes * opts.slq_steps);
    let k = if opts.top_k > 0 { opts.top_k } else { (lanczos / 4).clamp(MIN_K, MAX_K) }.min(dim);
    let steps = lanczos.max(4 * k).max(k + 50).min(dim).min((MAX_BASIS / dim).max(k + 1));
    (k, steps)
}

/// One slice's share: its converged top, its quadrature, its sv extremes.
struct SliceResult {
    top: Vec<f64>,
    exhausted: bool,
    quad: Quadrature,
    trace: f64,
    /// Σλ over the eigenvalues the quadrature stands for, exactly: the trace less the top.
    rest_trace: f64,
    steps: usize,
    bound: f64,
}

fn slice_result(
    plan: &LayerPlan,
    values: &Values,
    s: usize,
    parallel: bool,
    k: usize,
    steps: usize,
    opts: &ApproxOptions,
) -> Result<SliceResult, String> {
    let g = Gram::new(plan, values, s, parallel)?;
    let apply = |x: &[f64], y: &mut [f64]| g.apply(x, y);
    let seed = opts.seed.wrapping_add(s as u64);
    let t = top_eigen(&apply, g.dim(), k, steps, opts.tol, seed)?;
    let quad =
        deflated_slq(&apply, g.dim(), &t.vectors, opts.probes, opts.slq_steps, seed.wrapping_add(1 << 32))?;
    let bound = t.values.iter().zip(&t.bounds).map(|(v, b)| b / v.abs()).fold(0.0, f64::max);
    let trace = g.frobenius2();
    let rest_trace = (trace - t.values.iter().sum::<f64>()).max(0.0);
    Ok(SliceResult { top: t.values, exhausted: t.exhausted, quad, trace, rest_trace, steps: t.steps, bound })
}

/// The layer's spectrum by the approximation, and its ESD as far as known (the pooled top, exact = false).
pub fn approximate_layer(
    name: &str,
    plan: &LayerPlan,
    values: &Values,
    threads: usize,
    max_flops: f64,
    opts: &ApproxOptions,
) -> Result<(LayerSpectrum, Esd), String> {
    let want: usize = plan.shape.iter().product();
    if values.len() != want {
        return Err(format!("{} values for a tensor of shape {:?}", values.len(), plan.shape));
    }
    let (k, steps) = budget(plan, max_flops, opts);
    let run = || -> Result<Vec<SliceResult>, String> {
        (0..plan.rf).map(|s| slice_result(plan, values, s, threads > 1, k, steps, opts)).collect()
    };
    let slices = if threads > 1 {
        // As the exact path: a pool made from the calling thread inherits its (low) priority.
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| format!("could not start {threads} threads: {e}"))?
            .install(run)?
    } else {
        run()?
    };
    Ok(assemble(name, plan, &slices, k, opts))
}

fn assemble(
    name: &str,
    plan: &LayerPlan,
    slices: &[SliceResult],
    k: usize,
    opts: &ApproxOptions,
) -> (LayerSpectrum, Esd) {
    let known: Vec<f64> = slices.iter().flat_map(|s| s.top.iter().copied()).collect();
    // Every pooled eigenvalue at or above the largest of the slices' lowest converged values is known.
    let floor = slices
        .iter()
        .filter(|s| !(s.exhausted && s.quad.count == 0))
        .map(|s| s.top.last().copied().unwrap_or(f64::INFINITY))
        .fold(f64::NEG_INFINITY, f64::max);
    let mut pooled: Vec<f64> = known.iter().copied().filter(|&l| l >= floor).collect();
    pooled.sort_by(f64::total_cmp);
    let lambda_max = known.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let norm: f64 = slices.iter().map(|s| s.trace).sum();
    let fit = fit_top(&pooled, plan.num_evals());
    // Σ f over every eigenvalue: the known ones exactly, the rest by each slice's quadrature.
    let total = |f: &dyn Fn(f64) -> f64| -> f64 {
        known.iter().map(|&l| f(l)).sum::<f64>()
            + slices.iter().map(|s| s.quad.sum_controlled(|t| f(t.max(0.0)), s.rest_trace)).sum::<f64>()
    };
    let count = |f: &dyn Fn(f64) -> bool| total(&|l| if f(l) { 1.0 } else { 0.0 }).round().max(0.0) as usize;
    let rank_tol = (lambda_max.sqrt() * plan.n as f64 * f64::EPSILON).powi(2);
    let matrix_rank = count(&|l| l > rank_tol);
    const EPSILON: f64 = 1e-10;
    let h = total(&|l| {
        let p = l / norm + EPSILON;
        p * p.ln()
    });
    let log_spectral_norm = lambda_max.log10();
    let metrics = NormMetrics {
        norm,
        log_norm: norm.log10(),
        spectral_norm: lambda_max,
        log_spectral_norm,
        alpha_weighted: fit.alpha * log_spectral_norm,
        log_alpha_norm: total(&|l| l.powf(fit.alpha)).log10(),
        stable_rank: norm / lambda_max,
        matrix_rank,
        entropy: -h / (matrix_rank as f64 + EPSILON).ln(),
    };
    let rank_loss = slices
        .iter()
        .map(|s| {
            let top = s.top.first().copied().unwrap_or(0.0);
            let tol = (top.sqrt() * plan.n as f64 * f64::EPSILON).powi(2);
            let below = s.top.iter().filter(|&&l| l <= tol).count() as f64
                + s.quad.sum(|t| if t <= tol { 1.0 } else { 0.0 });
            below.round() as usize
        })
        .sum();
    let weak_rank_loss = count(&|l| l < WEAK_RANK_TOLERANCE);
    let sv_min = slices
        .iter()
        .map(|s| {
            let low =
                if s.quad.count == 0 { s.top.last().copied().unwrap_or(0.0) } else { s.quad.min_node() };
            low.max(0.0).sqrt()
        })
        .fold(0.0, f64::max);
    let xmin_at_edge =
        fit.ok && pooled.len() < plan.num_evals() && pooled.first().is_some_and(|&l| l >= fit.xmin);
    let approx = Approximation {
        method: METHOD.into(),
        k: pooled.len(),
        k_requested: k,
        converged: slices.iter().all(|s| s.exhausted || s.top.len() >= k),
        max_relative_bound: slices.iter().map(|s| s.bound).fold(0.0, f64::max),
        xmin_at_edge,
        lanczos_steps: slices.iter().map(|s| s.steps).sum(),
        slq_probes: opts.probes,
        slq_steps: opts.slq_steps,
        matvecs: slices.iter().map(|s| s.steps + s.quad.steps).sum(),
    };
    let esd =
        Esd { evals: pooled, sv_max: lambda_max.sqrt(), sv_min, rank_loss, weak_rank_loss, exact: false };
    let spectrum = LayerSpectrum {
        name: name.to_string(),
        plan: plan.clone(),
        num_evals: plan.num_evals(),
        sv_max: esd.sv_max,
        sv_min,
        rank_loss,
        weak_rank_loss,
        lambda_max,
        fit,
        metrics,
        exact: false,
        approx: Some(approx),
    };
    (spectrum, esd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectra::layers::{Filter, plan};

    #[test]
    fn k_comes_from_the_budget_within_its_bounds() {
        let o = ApproxOptions::default();
        // LLaMA-3-8B's MLP projection just over the default budget: 2e11 / (4·4096·14336) = 851
        // applications, less the quadrature's 320, for Lanczos, a quarter as k.
        let p = plan("mlp.weight", &[14336, 4096], &Filter::default()).unwrap();
        assert_eq!(budget(&p, 2e11, &o), (132, 531));
        // A tiny budget: k = 32 with 128 steps; a set k is kept.
        assert_eq!(budget(&p, 1.0, &o), (32, 128));
        assert_eq!(budget(&p, 1.0, &ApproxOptions { top_k: 100, ..o.clone() }), (100, 400));
        // Never more than the operator's dimension.
        let small = plan("fc.weight", &[40, 30], &Filter::default()).unwrap();
        assert_eq!(budget(&small, 1.0, &o), (30, 30));
    }
}
