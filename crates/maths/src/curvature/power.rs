//! Power iteration exactly as PyHessian runs it (`hessian.eigenvalues(maxIter=100, tol=1e-3)`), kept as
//! the baseline the benchmark compares Lanczos against.
//!
//! v ← random normal, normalized; repeat: Hv, λ = vᵀHv, v ← Hv/‖Hv‖, stop when
//! |λ − λ_prev| / (|λ_prev| + 1e-6) < tol. It finds the eigenvalue of largest *magnitude*, which is λmax
//! only when λmax > |λmin|.

use super::space::{HessianSpace, Init, normalize};
use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PowerResult {
    pub eigenvalue: f64,
    pub converged: bool,
    pub hvps: usize,
}

/// PyHessian's defaults: `max_iter = 100`, `tol = 1e-3`.
pub fn power_iteration(
    op: &mut dyn HessianSpace,
    max_iter: usize,
    tol: f64,
    seed: u64,
) -> anyhow::Result<PowerResult> {
    let d = op.dim();
    anyhow::ensure!(d > 0, "the operator has dimension 0 (no parameters)");
    let start = op.applications();
    let v = op.new_vector(Init::Gaussian { seed })?;
    let hv = op.new_vector(Init::Zeros)?;
    let r = iterate(op, v, hv, max_iter, tol);
    op.free(&[v, hv])?;
    let (eigenvalue, converged) = r?;
    Ok(PowerResult { eigenvalue, converged, hvps: op.applications() - start })
}

/// The iteration proper: (eigenvalue, converged).
fn iterate(
    op: &mut dyn HessianSpace,
    v: u64,
    hv: u64,
    max_iter: usize,
    tol: f64,
) -> anyhow::Result<(f64, bool)> {
    normalize(op, v)?;
    let mut prev: Option<f64> = None;
    let mut lambda = 0.0;
    for it in 0..max_iter {
        op.hvp(v, hv).with_context(|| format!("power iteration {} (its Hessian-vector product)", it + 1))?;
        // vᵀHv and ‖Hv‖² in one operation; a non-finite entry of Hv makes both non-finite.
        let q = op.dots(hv, &[v, hv])?;
        anyhow::ensure!(
            q.iter().all(|x| x.is_finite()),
            "the operator returned a non-finite value at power iteration {}",
            it + 1
        );
        lambda = q[0];
        let n = q[1].sqrt();
        if n == 0.0 {
            return Ok((0.0, true));
        }
        op.combine(v, 0.0, &[(1.0 / n, hv)])?;
        if let Some(p) = prev
            && (lambda - p).abs() / (p.abs() + 1e-6) < tol
        {
            return Ok((lambda, true));
        }
        prev = Some(lambda);
    }
    Ok((lambda, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::memory::MemorySpace;
    use crate::curvature::operator::DenseSymmetric;

    #[test]
    fn finds_dominant_eigenvalue() {
        let eigs: Vec<f64> = (0..100).map(|i| if i == 0 { 10.0 } else { (i as f64) / 100.0 }).collect();
        let mut a = MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 5));
        let r = power_iteration(&mut a, 100, 1e-3, 0).unwrap();
        assert!(r.converged);
        assert!((r.eigenvalue - 10.0).abs() < 1e-2, "{}", r.eigenvalue);
        assert!(r.hvps < 20);
        assert_eq!(a.live(), 1);
    }
}
