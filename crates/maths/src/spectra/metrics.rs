//! The per-layer metrics WeightWatcher derives from the ESD and the fit (`apply_norm_metrics` in
//! weightwatcher.py; `matrix_rank`, `matrix_entropy` in RMT_Util.py), and the run-level summaries.
//!
//! With λ the ESD (zeros included) and α the fitted exponent:
//! log_norm = log10 Σλ, log_spectral_norm = log10 λmax, α_weighted = α · log_spectral_norm,
//! log_alpha_norm = log10 Σ λ^α, stable_rank = Σλ / λmax, matrix_rank = #{σ > σmax · N · ε},
//! entropy = −Σ p ln p / ln(rank + 1e-10) with p = λ/Σλ + 1e-10 (WeightWatcher's `EPSILON`).

use landscaped_formats::Values;
use serde::{Deserialize, Serialize};

use super::approx::Approximation;
use super::esd::{Esd, esd};
use super::layers::LayerPlan;
use super::powerlaw::{OVER_TRAINED, PowerLawFit, fit};

/// WeightWatcher's `EPSILON` (constants.py, CPU precision).
const EPSILON: f64 = 1e-10;

/// Singular values (any order) above max σ · N · ε, numpy's `matrix_rank` tolerance (`matrix_rank`).
pub fn matrix_rank(sv: &[f64], n: usize) -> usize {
    let top = sv.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tol = top * n as f64 * f64::EPSILON;
    sv.iter().filter(|&&s| s > tol).count()
}

/// `calc_rank_loss`: singular values at or below the rank tolerance.
pub fn rank_loss(sv: &[f64], n: usize) -> usize {
    sv.len() - matrix_rank(sv, n)
}

/// `matrix_entropy(sqrt(evals), N)`.
pub fn matrix_entropy(evals: &[f64], n: usize) -> f64 {
    let sv: Vec<f64> = evals.iter().map(|l| l.sqrt()).collect();
    let rank = matrix_rank(&sv, n) as f64 + EPSILON;
    let sq: Vec<f64> = sv.iter().map(|s| s * s).collect();
    let total: f64 = sq.iter().sum();
    let h: f64 = sq
        .iter()
        .map(|l| {
            let p = l / total + EPSILON;
            p * p.ln()
        })
        .sum();
    -h / rank.ln()
}

/// The norm metrics of one layer (`apply_norm_metrics`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormMetrics {
    pub norm: f64,
    pub log_norm: f64,
    pub spectral_norm: f64,
    pub log_spectral_norm: f64,
    pub alpha_weighted: f64,
    pub log_alpha_norm: f64,
    pub stable_rank: f64,
    pub matrix_rank: usize,
    pub entropy: f64,
}

/// `apply_norm_metrics` on the ESD `evals` with the fitted `alpha` and WeightWatcher's N.
pub fn norm_metrics(evals: &[f64], alpha: f64, n: usize) -> NormMetrics {
    let norm: f64 = evals.iter().sum();
    let spectral_norm = evals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_spectral_norm = spectral_norm.log10();
    let sv: Vec<f64> = evals.iter().map(|l| l.sqrt()).collect();
    NormMetrics {
        norm,
        log_norm: norm.log10(),
        spectral_norm,
        log_spectral_norm,
        alpha_weighted: alpha * log_spectral_norm,
        log_alpha_norm: evals.iter().map(|l| l.powf(alpha)).sum::<f64>().log10(),
        stable_rank: norm / spectral_norm,
        matrix_rank: matrix_rank(&sv, n),
        entropy: matrix_entropy(evals, n),
    }
}

/// Everything recorded for one layer at one checkpoint (WeightWatcher's details row, less what it does
/// not compute by default). `exact` says the eigenvalues came from an exact SVD; otherwise `approx` says
/// how they were approximated ([`super::approx`]: which quantities are exact, which estimated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSpectrum {
    pub name: String,
    pub plan: LayerPlan,
    pub num_evals: usize,
    pub sv_max: f64,
    pub sv_min: f64,
    pub rank_loss: usize,
    pub weak_rank_loss: usize,
    pub lambda_max: f64,
    pub fit: PowerLawFit,
    pub metrics: NormMetrics,
    pub exact: bool,
    #[serde(default)]
    pub approx: Option<Approximation>,
}

impl LayerSpectrum {
    /// How the eigenvalues were computed: `svd`, or the approximation's method and k.
    pub fn method(&self) -> String {
        match &self.approx {
            None => "svd".into(),
            Some(a) => format!("{} k={}", a.method, a.k),
        }
    }
}

/// The ESD, fit and metrics of one layer.
pub fn analyze_layer(
    name: &str,
    plan: &LayerPlan,
    values: &Values,
    threads: usize,
) -> Result<(LayerSpectrum, Esd), String> {
    let e = esd(plan, values, threads)?;
    Ok((layer_spectrum(name, plan, &e), e))
}

/// The fit and metrics of an ESD already computed.
pub fn layer_spectrum(name: &str, plan: &LayerPlan, e: &Esd) -> LayerSpectrum {
    let f = fit(&e.evals);
    let metrics = norm_metrics(&e.evals, f.alpha, plan.n);
    LayerSpectrum {
        name: name.to_string(),
        plan: plan.clone(),
        num_evals: e.evals.len(),
        sv_max: e.sv_max,
        sv_min: e.sv_min,
        rank_loss: e.rank_loss,
        weak_rank_loss: e.weak_rank_loss,
        lambda_max: e.lambda_max(),
        fit: f,
        metrics,
        exact: e.exact,
        approx: None,
    }
}

/// Run-level summaries over one checkpoint's layers (failed fits left out): WeightWatcher's
/// `get_summary` means, and the fraction of layers with α < 2 (its "over-trained" warning).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub layers: usize,
    pub fitted: usize,
    pub mean_alpha: f64,
    pub mean_alpha_weighted: f64,
    pub mean_log_norm: f64,
    pub mean_log_spectral_norm: f64,
    pub mean_stable_rank: f64,
    pub frac_alpha_below_2: f64,
    /// Every layer's eigenvalues came from an exact SVD.
    pub exact: bool,
}

pub fn summary(layers: &[LayerSpectrum]) -> Summary {
    let fitted: Vec<&LayerSpectrum> = layers.iter().filter(|l| l.fit.ok).collect();
    let k = fitted.len() as f64;
    let mean = |f: &dyn Fn(&LayerSpectrum) -> f64| {
        if fitted.is_empty() { f64::NAN } else { fitted.iter().map(|l| f(l)).sum::<f64>() / k }
    };
    Summary {
        layers: layers.len(),
        fitted: fitted.len(),
        mean_alpha: mean(&|l| l.fit.alpha),
        mean_alpha_weighted: mean(&|l| l.metrics.alpha_weighted),
        mean_log_norm: mean(&|l| l.metrics.log_norm),
        mean_log_spectral_norm: mean(&|l| l.metrics.log_spectral_norm),
        mean_stable_rank: mean(&|l| l.metrics.stable_rank),
        frac_alpha_below_2: mean(&|l| if l.fit.alpha < OVER_TRAINED { 1.0 } else { 0.0 }),
        exact: layers.iter().all(|l| l.exact),
    }
}
