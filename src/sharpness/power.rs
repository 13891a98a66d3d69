//! Power iteration exactly as PyHessian runs it (`hessian.eigenvalues(maxIter=100, tol=1e-3)`), kept as
//! the baseline the benchmark compares Lanczos against.
//!
//! v ← random normal, normalized; repeat: Hv, λ = vᵀHv, v ← Hv/‖Hv‖, stop when
//! |λ − λ_prev| / (|λ_prev| + 1e-6) < tol. It finds the eigenvalue of largest *magnitude*, which is λmax
//! only when λmax > |λmin|.

use super::operator::{LinearOperator, dot, normalize};
use super::rng::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PowerResult {
    pub eigenvalue: f64,
    pub converged: bool,
    pub hvps: usize,
}

/// PyHessian's defaults: `max_iter = 100`, `tol = 1e-3`.
pub fn power_iteration(
    op: &mut dyn LinearOperator,
    max_iter: usize,
    tol: f64,
    seed: u64,
) -> anyhow::Result<PowerResult> {
    let d = op.dim();
    anyhow::ensure!(d > 0, "the operator has dimension 0 (no parameters)");
    let start = op.applications();
    let mut rng = Rng::new(seed);
    let mut v: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
    normalize(&mut v);
    let mut hv = vec![0.0; d];
    let mut prev: Option<f64> = None;
    let mut lambda = 0.0;
    for _ in 0..max_iter {
        op.apply(&v, &mut hv)?;
        anyhow::ensure!(hv.iter().all(|x| x.is_finite()), "the operator returned a non-finite value");
        lambda = dot(&v, &hv);
        v.copy_from_slice(&hv);
        if normalize(&mut v) == 0.0 {
            return Ok(PowerResult { eigenvalue: 0.0, converged: true, hvps: op.applications() - start });
        }
        if let Some(p) = prev
            && (lambda - p).abs() / (p.abs() + 1e-6) < tol
        {
            return Ok(PowerResult { eigenvalue: lambda, converged: true, hvps: op.applications() - start });
        }
        prev = Some(lambda);
    }
    Ok(PowerResult { eigenvalue: lambda, converged: false, hvps: op.applications() - start })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharpness::operator::DenseSymmetric;

    #[test]
    fn finds_dominant_eigenvalue() {
        let eigs: Vec<f64> = (0..100).map(|i| if i == 0 { 10.0 } else { (i as f64) / 100.0 }).collect();
        let mut a = DenseSymmetric::with_spectrum(&eigs, 5);
        let r = power_iteration(&mut a, 100, 1e-3, 0).unwrap();
        assert!(r.converged);
        assert!((r.eigenvalue - 10.0).abs() < 1e-2, "{}", r.eigenvalue);
        assert!(r.hvps < 20);
    }
}
