//! The Hessian's spectral density by stochastic Lanczos quadrature (SLQ), as PyHessian computes it:
//! for each of `runs` Rademacher start vectors, `steps` Lanczos steps with full reorthogonalization; the
//! eigenvalues θ_i of T are quadrature nodes and the squared first components of its eigenvectors are
//! their weights (they sum to 1 per run). The density is the average over runs of Σ_i w_i 𝒩(x; θ_i, σ²),
//! evaluated on a uniform grid and normalized to integrate to 1; PyHessian's smoothing is
//! σ² = 1e-5 · max(1, λmax − λmin) over a grid padded by 0.01 on each side.
//! The quadrature also estimates the trace: d · Σ_i w_i θ_i (mean over runs).
//! Run r starts from the space's Rademacher vector drawn with seed `seed + r` (in a worker: by torch).

use super::lanczos::Lanczos;
use super::space::{HessianSpace, Init};
use super::tridiag::tridiag_eigen;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Quadrature {
    /// One entry per run: the Ritz values (ascending) and their weights.
    pub nodes: Vec<Vec<f64>>,
    pub weights: Vec<Vec<f64>>,
    pub dim: usize,
    pub hvps: usize,
}

/// Runs SLQ: `runs` start vectors, `steps` Lanczos steps each (PyHessian: 1 run, 100 steps).
pub fn slq(op: &mut dyn HessianSpace, runs: usize, steps: usize, seed: u64) -> anyhow::Result<Quadrature> {
    let d = op.dim();
    anyhow::ensure!(d > 0, "the operator has dimension 0 (no parameters)");
    anyhow::ensure!(runs >= 1 && steps >= 1, "SLQ needs at least one run and one step");
    let start = op.applications();
    let (mut nodes, mut weights) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let (n, w) = slq_run(op, steps, seed, r)?;
        nodes.push(n);
        weights.push(w);
    }
    Ok(Quadrature { nodes, weights, dim: d, hvps: op.applications() - start })
}

/// One SLQ run's Ritz values (ascending) and their weights.
pub type SlqRun = (Vec<f64>, Vec<f64>);

/// One SLQ run: the Ritz values and their weights from the Rademacher start of seed `seed + r`.
pub fn slq_run(op: &mut dyn HessianSpace, steps: usize, seed: u64, r: usize) -> anyhow::Result<SlqRun> {
    let d = op.dim();
    let v = op.new_vector(Init::Rademacher { seed: seed.wrapping_add(r as u64) })?;
    let mut lz = Lanczos::from_vector(d, v, seed.wrapping_add(r as u64 + 1));
    while lz.steps() < steps && !lz.exhausted() {
        lz.step(op)?;
    }
    let (alpha, beta) = (lz.alpha.clone(), lz.beta.clone());
    lz.free(op)?;
    let m = alpha.len();
    anyhow::ensure!(m > 0, "SLQ: no Lanczos step could be taken");
    let te = tridiag_eigen(&alpha, &beta[..m - 1])?;
    Ok((te.values, te.first.iter().map(|f| f * f).collect()))
}

impl Quadrature {
    /// The trace estimate d · Σ w_i θ_i, averaged over runs.
    pub fn trace(&self) -> f64 {
        let per: Vec<f64> = self
            .nodes
            .iter()
            .zip(&self.weights)
            .map(|(n, w)| n.iter().zip(w).map(|(a, b)| a * b).sum())
            .collect();
        self.dim as f64 * per.iter().sum::<f64>() / per.len().max(1) as f64
    }

    /// PyHessian's `density_generate`: (grid, density) with `bins` points; `sigma_squared` = None uses
    /// 1e-5 · max(1, λmax − λmin).
    pub fn density(&self, bins: usize, sigma_squared: Option<f64>) -> (Vec<f64>, Vec<f64>) {
        let bins = bins.max(2);
        let runs = self.nodes.len().max(1) as f64;
        let mean_of = |f: fn(&[f64]) -> f64| self.nodes.iter().map(|n| f(n)).sum::<f64>() / runs;
        let hi = mean_of(|n| n.iter().copied().fold(f64::NEG_INFINITY, f64::max)) + 0.01;
        let lo = mean_of(|n| n.iter().copied().fold(f64::INFINITY, f64::min)) - 0.01;
        let s2 = sigma_squared.unwrap_or(1e-5 * (hi - lo).max(1.0));
        let grid: Vec<f64> = (0..bins).map(|j| lo + (hi - lo) * j as f64 / (bins - 1) as f64).collect();
        let norm_c = 1.0 / (2.0 * std::f64::consts::PI * s2).sqrt();
        let mut dens: Vec<f64> = grid
            .iter()
            .map(|&x| {
                let mut s = 0.0;
                for (n, w) in self.nodes.iter().zip(&self.weights) {
                    for (t, wi) in n.iter().zip(w) {
                        s += wi * norm_c * (-(x - t) * (x - t) / (2.0 * s2)).exp();
                    }
                }
                s / runs
            })
            .collect();
        let z: f64 = dens.iter().sum::<f64>() * (grid[1] - grid[0]);
        if z > 0.0 {
            dens.iter_mut().for_each(|v| *v /= z);
        }
        (grid, dens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::memory::MemorySpace;
    use crate::curvature::operator::DenseSymmetric;

    #[test]
    fn quadrature_matches_known_spectrum() {
        // Two clusters: 150 eigenvalues near 0, 50 near 5. SLQ's mass near 5 should be about 1/4.
        let eigs: Vec<f64> = (0..200)
            .map(|i| if i < 150 { 0.01 * (i as f64 / 150.0) } else { 5.0 + 0.01 * (i as f64 / 200.0) })
            .collect();
        let mut a = MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 2));
        let q = slq(&mut a, 8, 30, 1).unwrap();
        assert_eq!(q.hvps, 8 * 30);
        assert_eq!(a.live(), 1, "each run's basis is freed");
        for w in &q.weights {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-10);
        }
        let mass_hi: f64 = q
            .nodes
            .iter()
            .zip(&q.weights)
            .map(|(n, w)| n.iter().zip(w).filter(|(t, _)| **t > 2.5).map(|(_, x)| x).sum::<f64>())
            .sum::<f64>()
            / 8.0;
        assert!((mass_hi - 0.25).abs() < 0.06, "{mass_hi}");
        let want: f64 = eigs.iter().sum();
        assert!((q.trace() - want).abs() < 0.1 * want, "{} vs {want}", q.trace());
        let top = q.nodes[0].last().unwrap();
        assert!((top - 5.01).abs() < 0.01);
        let (grid, dens) = q.density(2000, None);
        let integral: f64 = dens.iter().sum::<f64>() * (grid[1] - grid[0]);
        assert!((integral - 1.0).abs() < 1e-9);
        assert!(grid[0] < 0.0 && *grid.last().unwrap() > 5.0);
    }
}
