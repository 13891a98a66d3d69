//! The Hessian trace: Hutchinson's estimator tr(H) = E[vᵀHv] over Rademacher vectors v (each entry ±1),
//! with the standard error of the sample mean, and the exact trace Σ e_iᵀHe_i (d HVPs, small models).
//!
//! Probe i is the space's Rademacher vector drawn with seed `seed + i` (a worker draws it from torch's
//! generator); each sample costs one HVP and four operations on the space, and no vector crosses.

use super::space::{HessianSpace, Init};
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

/// Welford's running mean and variance of the samples, in probe order, and the stopping rule: after
/// `min_samples` (at least 2), stop once the standard error is below `rel_tol · |mean|`.
#[derive(Clone, Copy, Default)]
pub struct Running {
    /// Samples folded so far.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    m2: f64,
}

impl Running {
    /// Folds in the next sample.
    pub fn push(&mut self, q: f64) {
        self.n += 1;
        let delta = q - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (q - self.mean);
    }
    /// The standard error of the mean (NaN below two samples).
    pub fn se(&self) -> f64 {
        if self.n > 1 { (self.m2 / (self.n - 1) as f64 / self.n as f64).sqrt() } else { f64::NAN }
    }
    /// Whether the stopping rule is met.
    pub fn enough(&self, min_samples: usize, rel_tol: f64) -> bool {
        rel_tol > 0.0 && self.n >= min_samples.max(2) && self.se() <= rel_tol * self.mean.abs()
    }
}

/// Hutchinson's estimator with `samples` Rademacher vectors (at least `min_samples`); stops early, after
/// `min_samples`, once the standard error is below `rel_tol · |mean|` (`rel_tol = 0` disables that).
pub fn hutchinson(
    op: &mut dyn HessianSpace,
    samples: usize,
    min_samples: usize,
    rel_tol: f64,
    seed: u64,
) -> anyhow::Result<TraceEstimate> {
    let d = op.dim();
    anyhow::ensure!(d > 0, "the operator has dimension 0 (no parameters)");
    anyhow::ensure!(samples >= 1, "Hutchinson needs at least one sample");
    let start = op.applications();
    let hv = op.new_vector(Init::Zeros)?;
    let mut run = Running::default();
    while run.n < samples {
        let v = op.new_vector(Init::Rademacher { seed: seed.wrapping_add(run.n as u64) })?;
        let probe = run.n;
        anyhow::Context::with_context(op.hvp(v, hv), || format!("Hutchinson probe {probe}"))?;
        let q = op.dots(v, &[hv])?[0];
        op.free(&[v])?;
        anyhow::ensure!(q.is_finite(), "Hutchinson: vᵀHv is not finite");
        run.push(q);
        if run.enough(min_samples, rel_tol) {
            break;
        }
    }
    op.free(&[hv])?;
    Ok(TraceEstimate {
        trace: run.mean,
        std_error: run.se(),
        samples: run.n,
        hvps: op.applications() - start,
    })
}

/// One Hutchinson sample: vᵀHv for probe `i` (the Rademacher vector of seed `seed + i`).
pub fn hutchinson_sample(op: &mut dyn HessianSpace, seed: u64, i: usize) -> anyhow::Result<f64> {
    let v = op.new_vector(Init::Rademacher { seed: seed.wrapping_add(i as u64) })?;
    let hv = op.new_vector(Init::Zeros)?;
    let r = anyhow::Context::with_context(op.hvp(v, hv), || format!("Hutchinson probe {i}"))
        .and_then(|()| op.dots(v, &[hv]));
    op.free(&[v, hv])?;
    let q = r?[0];
    anyhow::ensure!(q.is_finite(), "Hutchinson: vᵀHv is not finite (probe {i})");
    Ok(q)
}

/// The exact trace Σ_i e_iᵀ H e_i: `dim` HVPs, for small models and tests (each e_i crosses to the space).
pub fn exact_trace(op: &mut dyn HessianSpace) -> anyhow::Result<f64> {
    let d = op.dim();
    let mut e = vec![0.0; d];
    let he = op.new_vector(Init::Zeros)?;
    let mut t = 0.0;
    for i in 0..d {
        e[i] = 1.0;
        let ei = op.new_vector(Init::Values(e.clone()))?;
        e[i] = 0.0;
        op.hvp(ei, he)?;
        t += op.dots(ei, &[he])?[0];
        op.free(&[ei])?;
    }
    op.free(&[he])?;
    anyhow::ensure!(t.is_finite(), "exact trace is not finite");
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::memory::MemorySpace;
    use crate::curvature::operator::DenseSymmetric;

    #[test]
    fn hutchinson_within_its_standard_error() {
        let eigs: Vec<f64> = (0..200).map(|i| ((i as f64) * 0.1).cos() + 0.3).collect();
        let want: f64 = eigs.iter().sum();
        let mut a = MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 11));
        let r = hutchinson(&mut a, 400, 10, 0.0, 3).unwrap();
        assert_eq!(r.samples, 400);
        assert_eq!(r.hvps, 400);
        assert!(r.std_error > 0.0);
        assert!((r.trace - want).abs() < 4.0 * r.std_error, "{} vs {want} ± {}", r.trace, r.std_error);
        let exact = exact_trace(&mut a).unwrap();
        assert!((exact - want).abs() < 1e-9 * want.abs().max(1.0));
        // A diagonal matrix has zero Hutchinson variance with Rademacher vectors.
        assert_eq!(a.live(), 1, "probes are freed");
        let mut diag = MemorySpace::new(
            DenseSymmetric::new(3, vec![1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, -4.0]).unwrap(),
        );
        let r = hutchinson(&mut diag, 50, 2, 1e-6, 0).unwrap();
        assert_eq!(r.samples, 2);
        assert!((r.trace + 1.0).abs() < 1e-12 && r.std_error == 0.0);
    }
}
