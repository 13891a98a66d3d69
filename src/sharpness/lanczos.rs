//! Lanczos with full reorthogonalization on a symmetric operator (the Hessian through HVPs): the
//! algebraic extremes λmax and λmin from one Krylov space, the top-k eigenvalues, and the Lanczos
//! tridiagonal matrix that stochastic Lanczos quadrature needs.
//!
//! Step j applies the operator once (one HVP), orthogonalizes the result against *every* earlier Lanczos
//! vector twice (classical Gram–Schmidt, "twice is enough"), and extends the tridiagonal matrix `T_j`.
//! The eigenvalues θ_i of `T_j` (Ritz values) approximate those of the operator; for the Ritz pair
//! (θ_i, y_i) the residual is exactly ‖A y_i − θ_i y_i‖ = β_j |s_{j,i}|, where `s_{j,i}` is the last
//! component of the i-th eigenvector of `T_j`, and some eigenvalue of A lies within that distance of θ_i.
//!
//! **Stopping rule (the stated tolerance):** a wanted Ritz value is converged when its residual bound is
//! at most `tol · ‖T_j‖` (the largest |Ritz value|, an estimate of the spectral radius). The run stops
//! when λmax, λmin and each of the top-k are converged, when the Krylov space is exhausted (then the Ritz
//! values are exact), or after `max_steps` HVPs, in which case the result says `converged: false`.
//! Memory: `max_steps` vectors of `dim` f64.

use super::operator::{LinearOperator, axpy, dot, normalize};
use super::rng::Rng;
use super::tridiag::{TridiagEigen, tridiag_eigen};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LanczosOptions {
    /// Largest number of Lanczos steps (each costs one HVP).
    pub max_steps: usize,
    /// Relative tolerance of the residual bounds (see the module docs).
    pub tol: f64,
    /// How many of the largest eigenvalues to return (and converge).
    pub top_k: usize,
    /// Seed of the random start vector.
    pub seed: u64,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        LanczosOptions { max_steps: 100, tol: 1e-3, top_k: 1, seed: 0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Extremes {
    /// Largest algebraic eigenvalue.
    pub lambda_max: f64,
    /// Smallest algebraic eigenvalue (not the smallest in magnitude).
    pub lambda_min: f64,
    /// |λmin / λmax| (the paper's convexity measure); NaN when λmax is 0.
    pub ratio: f64,
    /// The `top_k` largest eigenvalues, descending.
    pub top_k: Vec<f64>,
    /// Residual bounds of λmax and λmin: an eigenvalue lies within this distance of each.
    pub residual_max: f64,
    pub residual_min: f64,
    /// The tolerance the run was asked for, and whether it was met.
    pub tol: f64,
    pub converged: bool,
    /// Lanczos steps taken.
    pub steps: usize,
    /// Operator applications (HVPs) this result cost.
    pub hvps: usize,
}

/// The Krylov basis and tridiagonal matrix built so far.
pub struct Lanczos {
    dim: usize,
    basis: Vec<Vec<f64>>,
    pub alpha: Vec<f64>,
    /// `beta[j]` couples basis vectors j and j+1 (`beta.len() == alpha.len()` after each step; the last one
    /// is the residual norm of the current step).
    pub beta: Vec<f64>,
    rng: Rng,
    /// The un-normalized next vector.
    next: Vec<f64>,
    exhausted: bool,
}

impl Lanczos {
    /// Starts from a random Gaussian unit vector drawn with `seed`.
    pub fn new(dim: usize, seed: u64) -> anyhow::Result<Lanczos> {
        anyhow::ensure!(dim > 0, "the operator has dimension 0 (no parameters)");
        let mut rng = Rng::new(seed);
        let v: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
        Ok(Self::with_start(v, rng))
    }

    /// Starts from `v` (normalized here), e.g. a Rademacher vector for SLQ.
    pub fn from_vector(v: Vec<f64>, seed: u64) -> Lanczos {
        Self::with_start(v, Rng::new(seed))
    }

    fn with_start(v: Vec<f64>, rng: Rng) -> Lanczos {
        Lanczos {
            dim: v.len(),
            basis: Vec::new(),
            alpha: Vec::new(),
            beta: Vec::new(),
            rng,
            next: v,
            exhausted: false,
        }
    }

    pub fn steps(&self) -> usize {
        self.alpha.len()
    }

    /// True when every direction of the space has been explored (the Ritz values are exact).
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Orthogonalizes `w` against the basis twice; returns nothing.
    fn reorthogonalize(&self, w: &mut [f64]) {
        for _ in 0..2 {
            for q in &self.basis {
                let c = dot(q, w);
                axpy(-c, q, w);
            }
        }
    }

    /// One Lanczos step: one operator application.
    pub fn step(&mut self, op: &mut dyn LinearOperator) -> anyhow::Result<()> {
        anyhow::ensure!(!self.exhausted, "Lanczos: Krylov space exhausted");
        anyhow::ensure!(op.dim() == self.dim, "Lanczos: operator dimension {} != {}", op.dim(), self.dim);
        let mut q = std::mem::take(&mut self.next);
        self.reorthogonalize(&mut q);
        let mut nq = normalize(&mut q);
        // Breakdown (an invariant subspace was found): continue with a fresh random direction orthogonal
        // to the basis; T gets a zero coupling, which keeps the Ritz values exact.
        let mut tries = 0;
        while nq.is_nan() || nq <= 1e-10 {
            tries += 1;
            if tries > 5 || self.basis.len() >= self.dim {
                self.exhausted = true;
                return Ok(());
            }
            q = (0..self.dim).map(|_| self.rng.normal()).collect();
            self.reorthogonalize(&mut q);
            nq = normalize(&mut q);
            if let Some(b) = self.beta.last_mut() {
                *b = 0.0;
            }
        }
        let mut w = vec![0.0; self.dim];
        op.apply(&q, &mut w)?;
        anyhow::ensure!(
            w.iter().all(|x| x.is_finite()),
            "the operator returned a non-finite value (NaN or infinite Hessian-vector product)"
        );
        let a = dot(&q, &w);
        axpy(-a, &q, &mut w);
        if let (Some(prev), Some(b)) = (self.basis.last(), self.beta.last()) {
            axpy(-b, prev, &mut w);
        }
        self.basis.push(q);
        self.reorthogonalize(&mut w);
        let b = crate::sharpness::operator::norm(&w);
        self.alpha.push(a);
        self.beta.push(b);
        self.next = w;
        if self.basis.len() >= self.dim {
            self.exhausted = true;
        }
        Ok(())
    }

    /// Ritz values of the current `T` with their residual bounds, ascending.
    pub fn ritz(&self) -> anyhow::Result<(TridiagEigen, Vec<f64>)> {
        let m = self.alpha.len();
        let te = tridiag_eigen(&self.alpha, &self.beta[..m - 1])?;
        let b = if self.exhausted { 0.0 } else { self.beta[m - 1] };
        let res = te.last.iter().map(|s| (b * s).abs()).collect();
        Ok((te, res))
    }
}

/// λmax, λmin, the top-k eigenvalues and their residual bounds by Lanczos (see the module docs).
pub fn extremes(op: &mut dyn LinearOperator, opts: &LanczosOptions) -> anyhow::Result<Extremes> {
    anyhow::ensure!(opts.tol > 0.0, "Lanczos tolerance must be positive");
    anyhow::ensure!(opts.max_steps >= 1, "Lanczos needs at least one step");
    let start = op.applications();
    let mut lz = Lanczos::new(op.dim(), opts.seed)?;
    let k = opts.top_k.max(1);
    loop {
        lz.step(op)?;
        let (te, res) = lz.ritz()?;
        let m = te.values.len();
        let scale = te.values.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        let thresh = opts.tol * scale;
        let kk = k.min(m);
        let wanted_ok = res[0] <= thresh && (0..kk).all(|i| res[m - 1 - i] <= thresh);
        let converged = lz.exhausted() || (wanted_ok && m >= k.max(2));
        if converged || lz.steps() >= opts.max_steps {
            let lambda_max = te.values[m - 1];
            let lambda_min = te.values[0];
            return Ok(Extremes {
                lambda_max,
                lambda_min,
                ratio: if lambda_max != 0.0 { (lambda_min / lambda_max).abs() } else { f64::NAN },
                top_k: te.values.iter().rev().take(kk).copied().collect(),
                residual_max: res[m - 1],
                residual_min: res[0],
                tol: opts.tol,
                converged,
                steps: lz.steps(),
                hvps: op.applications() - start,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharpness::operator::DenseSymmetric;

    fn spectrum(n: usize) -> Vec<f64> {
        // A Hessian-like spectrum: a few large outliers, a bulk near zero, some negative values.
        (0..n)
            .map(|i| match i {
                0 => 50.0,
                1 => 20.0,
                2 => 9.0,
                3 => -3.0,
                _ => 0.5 * ((i as f64) * 0.37).sin() - 0.1,
            })
            .collect()
    }

    #[test]
    fn extremes_of_known_spectrum() {
        let eigs = spectrum(300);
        let mut a = DenseSymmetric::with_spectrum(&eigs, 3);
        let opts = LanczosOptions { max_steps: 300, tol: 1e-8, top_k: 3, seed: 1 };
        let r = extremes(&mut a, &opts).unwrap();
        assert!(r.converged);
        assert!((r.lambda_max - 50.0).abs() < 1e-6 * 50.0, "{}", r.lambda_max);
        assert!((r.lambda_min + 3.0).abs() < 1e-6 * 50.0, "{}", r.lambda_min);
        assert!((r.top_k[1] - 20.0).abs() < 1e-5 && (r.top_k[2] - 9.0).abs() < 1e-5, "{:?}", r.top_k);
        assert!(r.hvps < 300, "full reorth Lanczos should converge before exhausting: {}", r.hvps);
        assert_eq!(r.hvps, r.steps);
        assert!((r.ratio - 3.0 / 50.0).abs() < 1e-6);
    }

    #[test]
    fn exhausts_small_space_exactly() {
        let eigs = [4.0, 4.0, 1.0, -2.0, 0.0];
        let mut a = DenseSymmetric::with_spectrum(&eigs, 9);
        let r = extremes(&mut a, &LanczosOptions { max_steps: 50, tol: 1e-12, top_k: 2, seed: 2 }).unwrap();
        assert!(r.converged);
        assert!((r.lambda_max - 4.0).abs() < 1e-10 && (r.lambda_min + 2.0).abs() < 1e-10);
        assert!(r.hvps <= 5);
    }

    #[test]
    fn budget_exhausted_is_flagged() {
        let eigs: Vec<f64> = (0..500).map(|i| (i as f64).sqrt()).collect();
        let mut a = DenseSymmetric::with_spectrum(&eigs, 4);
        let r = extremes(&mut a, &LanczosOptions { max_steps: 5, tol: 1e-10, top_k: 1, seed: 0 }).unwrap();
        assert!(!r.converged);
        assert_eq!(r.hvps, 5);
    }

    #[test]
    fn non_finite_operator_is_an_error() {
        let mut a = DenseSymmetric::new(2, vec![f64::NAN, 0.0, 0.0, 1.0]).unwrap();
        let e = extremes(&mut a, &LanczosOptions::default()).unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
    }
}
