//! WeightWatcher's own power-law fitter (`pl_package="ww"`: `WWFit` in WW_powerlaw.py, called by
//! `fit_powerlaw` in weightwatcher.py) on the eigenvalues above `EVALS_THRESH` = 1e-5.
//!
//! With n(i) eigenvalues from the i-th smallest up, every eigenvalue but the largest is tried as xmin:
//! - standard (20 or more eigenvalues): α = 1 + n / Σ ln(λ/xmin) (the continuous MLE), D = max over the
//!   tail of |1 − (λ/xmin)^(1−α) − k/n| (k = 0 … n−1), D = 1 where α ≤ 1; the least D wins (first on a tie);
//! - small N (fewer than 20): tails of at least 8 only, α = 1 + (n − 1) / Σ ln(λ/xmin) (bias-corrected),
//!   the least J = D − 0.868/√n wins, all-data fallback when no tail qualifies.
//!
//! σ = (α − 1)/√n(i), reported at the winner as WeightWatcher does. num_pl_spikes counts every
//! eigenvalue (zeros included) ≥ xmin. A fit WeightWatcher reports as failed (fewer than 2 eigenvalues
//! above the threshold) has α = xmin = D = σ = −1 and num_pl_spikes = −1.

use serde::{Deserialize, Serialize};

/// `EVALS_THRESH` (constants.py): eigenvalues at or below it are left out of the fit.
pub const EVALS_THRESH: f64 = 1e-5;
/// `SMALL_N_CUTOFF` (WW_powerlaw.py).
pub const SMALL_N_CUTOFF: usize = 20;
/// `OVER_TRAINED_THRESH`, `UNDER_TRAINED_THRESH` (constants.py): WeightWatcher's warnings.
pub const OVER_TRAINED: f64 = 2.0;
pub const UNDER_TRAINED: f64 = 6.0;

/// The fit of one ESD's tail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerLawFit {
    pub alpha: f64,
    pub xmin: f64,
    /// The largest eigenvalue fitted (WeightWatcher's `xmax` column is None by default; this is `fit.xmax`).
    pub xmax: f64,
    /// Kolmogorov–Smirnov distance at the chosen xmin.
    pub d: f64,
    pub sigma: f64,
    pub num_pl_spikes: i64,
    /// False where WeightWatcher reports `status = failed`.
    pub ok: bool,
    /// The small-N variant chose it.
    pub small_n: bool,
}

impl PowerLawFit {
    fn failed() -> Self {
        PowerLawFit {
            alpha: -1.0,
            xmin: -1.0,
            xmax: -1.0,
            d: -1.0,
            sigma: -1.0,
            num_pl_spikes: -1,
            ok: false,
            small_n: false,
        }
    }

    /// WeightWatcher's `warning` column: "over-trained" below α = 2, "under-trained" above α = 6.
    pub fn warning(&self) -> &'static str {
        if self.alpha < OVER_TRAINED {
            "over-trained"
        } else if self.alpha > UNDER_TRAINED {
            "under-trained"
        } else {
            ""
        }
    }
}

/// Fits the tail of `evals` (any order) as `fit_powerlaw` + `WWFit` do.
pub fn fit(evals: &[f64]) -> PowerLawFit {
    let n = evals.iter().filter(|&&l| l > EVALS_THRESH).count();
    fit_among(evals, n < SMALL_N_CUTOFF)
}

/// The fit with xmin restricted to `top`, the largest eigenvalues of an ESD of `total` eigenvalues above
/// the threshold (the Lanczos approximation): the same α and D as [`fit`] gives for every xmin in `top`
/// (they depend only on the eigenvalues ≥ xmin), the least D among those; the estimator (standard or
/// small-N) is the one `total` eigenvalues call for.
pub fn fit_top(top: &[f64], total: usize) -> PowerLawFit {
    fit_among(top, total < SMALL_N_CUTOFF)
}

fn fit_among(evals: &[f64], small: bool) -> PowerLawFit {
    let mut data: Vec<f64> = evals.iter().copied().filter(|&l| l > EVALS_THRESH).collect();
    data.sort_by(f64::total_cmp);
    let n = data.len();
    if n < 2 {
        return PowerLawFit::failed();
    }
    let logs: Vec<f64> = data.iter().map(|x| x.ln()).collect();
    let tail_log_sums = suffix_sums(&logs);
    let (i, alpha, d, sigma, small_n) = if small {
        let (i, alpha, d, sigma) = small_n_fit(&data, &logs, &tail_log_sums);
        (i, alpha, d, sigma, true)
    } else {
        let (i, alpha, d, sigma) = standard_fit(&data, &logs, &tail_log_sums);
        (i, alpha, d, sigma, false)
    };
    let xmin = data[i];
    let num_pl_spikes = evals.iter().filter(|&&l| l >= xmin).count() as i64;
    PowerLawFit { alpha, xmin, xmax: data[n - 1], d, sigma, num_pl_spikes, ok: !alpha.is_nan(), small_n }
}

/// Σ ln λ from each index to the end, summed from the top down with Neumaier compensation.
fn suffix_sums(logs: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; logs.len() + 1];
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for i in (0..logs.len()).rev() {
        let x = logs[i];
        let t = s + x;
        c += if s.abs() >= x.abs() { (s - t) + x } else { (x - t) + s };
        s = t;
        out[i] = s + c;
    }
    out
}

/// KS distance of the tail `data[i..]` against the power law from xmin = data[i] with exponent α.
fn ks_distance(data: &[f64], i: usize, alpha: f64) -> f64 {
    let xmin = data[i];
    let n = (data.len() - i) as f64;
    data[i..]
        .iter()
        .enumerate()
        .map(|(k, x)| (1.0 - (x / xmin).powf(1.0 - alpha) - k as f64 / n).abs())
        .fold(f64::NEG_INFINITY, |a, b| if b.is_nan() || a.is_nan() { f64::NAN } else { a.max(b) })
}

/// `fit_power_law_standard` then `argmin(Ds)` (numpy's argmin: the first minimum, a NaN wins).
fn standard_fit(data: &[f64], logs: &[f64], sums: &[f64]) -> (usize, f64, f64, f64) {
    let n_all = data.len();
    let mut best: Option<(usize, f64, f64)> = None;
    for i in 0..n_all - 1 {
        let n = (n_all - i) as f64;
        let alpha = 1.0 + n / (sums[i] - n * logs[i]);
        let d = if alpha > 1.0 { ks_distance(data, i, alpha) } else { 1.0 };
        let better = match best {
            None => true,
            Some((_, _, bd)) => !bd.is_nan() && (d.is_nan() || d < bd),
        };
        if better {
            best = Some((i, alpha, d));
        }
    }
    let (i, alpha, d) = best.expect("at least two eigenvalues");
    (i, alpha, d, (alpha - 1.0) / ((n_all - i) as f64).sqrt())
}

/// `fit_powerlaw_smallN` (k_min = 8, no prior).
fn small_n_fit(data: &[f64], logs: &[f64], sums: &[f64]) -> (usize, f64, f64, f64) {
    const K_MIN: usize = 8;
    let n_all = data.len();
    let mut alphas = vec![0.0; n_all - 1];
    let mut ds = vec![1.0; n_all - 1];
    let mut best: Option<(usize, f64)> = None;
    for i in 0..n_all - 1 {
        let n_int = n_all - i;
        if n_int < K_MIN {
            continue;
        }
        let n = n_int as f64;
        let s = sums[i] - n * logs[i];
        if s <= 1e-12 {
            continue;
        }
        let alpha = 1.0 + (n - 1.0) / s;
        alphas[i] = alpha;
        if alpha <= 1.0 {
            continue;
        }
        let d = ks_distance(data, i, alpha);
        ds[i] = d;
        let j = d - 0.868 / n.sqrt();
        if j.is_finite() && best.is_none_or(|(_, bj)| j < bj) {
            best = Some((i, j));
        }
    }
    let sigma_at = |alphas: &[f64], i: usize| (alphas[i] - 1.0) / ((n_all - i) as f64).sqrt();
    if let Some((i, _)) = best {
        return (i, alphas[i], ds[i], sigma_at(&alphas, i));
    }
    // No tail qualified: the whole data; σ is taken from before α was filled in, as WeightWatcher does.
    let sigma = sigma_at(&alphas, 0);
    let n = n_all as f64;
    let s = sums[0] - n * logs[0];
    if s <= 1e-12 {
        return (0, 1.0, 1.0, 0.0);
    }
    let alpha = 1.0 + (n - 1.0) / s;
    (0, alpha, ks_distance(data, 0, alpha), sigma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_pareto_quantiles_give_their_exponent() {
        // Quantiles of a Pareto(α = 3, xmin = 1) law: the MLE on them is close to 3 and xmin near 1.
        let n = 2000;
        let evals: Vec<f64> = (0..n).map(|k| (1.0 - (k as f64 + 0.5) / n as f64).powf(-1.0 / 2.0)).collect();
        let f = fit(&evals);
        assert!((f.alpha - 3.0).abs() < 0.05, "{f:?}");
        assert!(!f.small_n && f.ok);
        assert!((f.sigma - (f.alpha - 1.0) / (f.num_pl_spikes as f64).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn too_few_eigenvalues_fail_like_weightwatcher() {
        assert!(!fit(&[1e-7, 0.5]).ok);
        assert!(fit(&[0.1, 0.5, 2.0]).small_n);
    }
}
