//! The Hessian trace: Hutchinson's estimator tr(H) = E[vᵀHv] over Rademacher vectors v (each entry ±1),
//! with the standard error of the sample mean, and the exact trace Σ e_iᵀHe_i (d HVPs, small models).

use super::operator::{LinearOperator, dot};
use super::rng::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TraceEstimate {
    /// Mean of vᵀHv over the samples.
    pub trace: f64,
    /// Standard error of that mean: sample standard deviation / √n (NaN with one sample).
    pub std_error: f64,
    pub samples: usize,
    pub hvps: usize,
}

/// Hutchinson's estimator with `samples` Rademacher vectors (at least `min_samples`); stops early, after
/// `min_samples`, once the standard error is below `rel_tol · |mean|` (`rel_tol = 0` disables that).
pub fn hutchinson(
    op: &mut dyn LinearOperator,
    samples: usize,
    min_samples: usize,
    rel_tol: f64,
    seed: u64,
) -> anyhow::Result<TraceEstimate> {
    let d = op.dim();
    anyhow::ensure!(d > 0, "the operator has dimension 0 (no parameters)");
    anyhow::ensure!(samples >= 1, "Hutchinson needs at least one sample");
    let start = op.applications();
    let mut rng = Rng::new(seed);
    let mut v = vec![0.0; d];
    let mut hv = vec![0.0; d];
    // Welford's running mean and variance.
    let (mut n, mut mean, mut m2) = (0usize, 0.0f64, 0.0f64);
    let se = |n: usize, m2: f64| if n > 1 { (m2 / (n - 1) as f64 / n as f64).sqrt() } else { f64::NAN };
    while n < samples {
        v.iter_mut().for_each(|x| *x = rng.rademacher());
        op.apply(&v, &mut hv)?;
        let q = dot(&v, &hv);
        anyhow::ensure!(q.is_finite(), "Hutchinson: vᵀHv is not finite");
        n += 1;
        let delta = q - mean;
        mean += delta / n as f64;
        m2 += delta * (q - mean);
        if rel_tol > 0.0 && n >= min_samples.max(2) && se(n, m2) <= rel_tol * mean.abs() {
            break;
        }
    }
    Ok(TraceEstimate { trace: mean, std_error: se(n, m2), samples: n, hvps: op.applications() - start })
}

/// The exact trace Σ_i e_iᵀ H e_i: `dim` HVPs, for small models and tests.
pub fn exact_trace(op: &mut dyn LinearOperator) -> anyhow::Result<f64> {
    let d = op.dim();
    let mut e = vec![0.0; d];
    let mut he = vec![0.0; d];
    let mut t = 0.0;
    for i in 0..d {
        e[i] = 1.0;
        op.apply(&e, &mut he)?;
        t += he[i];
        e[i] = 0.0;
    }
    anyhow::ensure!(t.is_finite(), "exact trace is not finite");
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharpness::operator::DenseSymmetric;

    #[test]
    fn hutchinson_within_its_standard_error() {
        let eigs: Vec<f64> = (0..200).map(|i| ((i as f64) * 0.1).cos() + 0.3).collect();
        let want: f64 = eigs.iter().sum();
        let mut a = DenseSymmetric::with_spectrum(&eigs, 11);
        let r = hutchinson(&mut a, 400, 10, 0.0, 3).unwrap();
        assert_eq!(r.samples, 400);
        assert_eq!(r.hvps, 400);
        assert!(r.std_error > 0.0);
        assert!((r.trace - want).abs() < 4.0 * r.std_error, "{} vs {want} ± {}", r.trace, r.std_error);
        let exact = exact_trace(&mut a).unwrap();
        assert!((exact - want).abs() < 1e-9 * want.abs().max(1.0));
        // A diagonal matrix has zero Hutchinson variance with Rademacher vectors.
        let mut diag = DenseSymmetric::new(3, vec![1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, -4.0]).unwrap();
        let r = hutchinson(&mut diag, 50, 2, 1e-6, 0).unwrap();
        assert_eq!(r.samples, 2);
        assert!((r.trace + 1.0).abs() < 1e-12 && r.std_error == 0.0);
    }
}
