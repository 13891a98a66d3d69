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
//! Memory: `max_steps` vectors of `dim` f64, held by the [`HessianSpace`] (in a model worker: there, not
//! here). Each step costs one HVP and eight operations on the space whatever the basis size (the inner
//! products against the whole basis go in one `dots`, the subtraction in one `combine`); no vector
//! crosses to the caller.

use super::rng::Rng;
use super::space::{HessianSpace, Init, Vector, norm, orthogonalize};
use super::tridiag::{TridiagEigen, tridiag_eigen};
use anyhow::Context;
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

/// The Krylov basis (vectors held by the space) and the tridiagonal matrix built so far. Call
/// [`Lanczos::free`] when done, so the space can forget the basis.
pub struct Lanczos {
    dim: usize,
    basis: Vec<Vector>,
    pub alpha: Vec<f64>,
    /// `beta[j]` couples basis vectors j and j+1 (`beta.len() == alpha.len()` after each step; the last one
    /// is the residual norm of the current step).
    pub beta: Vec<f64>,
    rng: Rng,
    /// The un-normalized next vector, orthogonal to the basis, and its norm when known.
    next: Option<Vector>,
    next_norm: Option<f64>,
    exhausted: bool,
}

impl Lanczos {
    /// Starts from a random Gaussian vector drawn by the space with `seed`.
    pub fn new(space: &mut dyn HessianSpace, seed: u64) -> anyhow::Result<Lanczos> {
        anyhow::ensure!(space.dim() > 0, "the operator has dimension 0 (no parameters)");
        let v = space.new_vector(Init::Gaussian { seed })?;
        Ok(Self::from_vector(space.dim(), v, seed))
    }

    /// Starts from the space's vector `v` (normalized here, then owned and freed by this Lanczos), e.g.
    /// a Rademacher vector for SLQ; `seed` draws fresh directions after a breakdown.
    pub(crate) fn from_vector(dim: usize, v: Vector, seed: u64) -> Lanczos {
        Lanczos {
            dim,
            basis: Vec::new(),
            alpha: Vec::new(),
            beta: Vec::new(),
            rng: Rng::new(seed),
            next: Some(v),
            next_norm: None,
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

    /// One Lanczos step: one operator application, and a constant number of round trips to the space
    /// (whatever the basis size): the orthogonalization against the whole basis is batched.
    pub fn step(&mut self, s: &mut dyn HessianSpace) -> anyhow::Result<()> {
        anyhow::ensure!(!self.exhausted, "Lanczos: Krylov space exhausted");
        anyhow::ensure!(s.dim() == self.dim, "Lanczos: operator dimension {} != {}", s.dim(), self.dim);
        let Some(mut q) = self.next.take() else { anyhow::bail!("Lanczos: no next vector") };
        let mut nq = match self.next_norm.take() {
            Some(n) => n,
            None => norm(s, q)?,
        };
        // Breakdown (an invariant subspace was found): continue with a fresh random direction orthogonal
        // to the basis; T gets a zero coupling, which keeps the Ritz values exact.
        let mut tries = 0;
        while nq.is_nan() || nq <= 1e-10 {
            tries += 1;
            s.free(&[q])?;
            if tries > 5 || self.basis.len() >= self.dim {
                self.exhausted = true;
                return Ok(());
            }
            q = s.new_vector(Init::Gaussian { seed: self.rng.next_u64() >> 1 })?;
            orthogonalize(s, q, &self.basis)?;
            nq = norm(s, q)?;
            if let Some(b) = self.beta.last_mut() {
                *b = 0.0;
            }
        }
        s.combine(q, 1.0 / nq, &[])?;
        let w = s.new_vector(Init::Zeros)?;
        let step = self.alpha.len() + 1;
        s.hvp(q, w).with_context(|| format!("Lanczos step {step} (its Hessian-vector product)"))?;
        // Classical Gram–Schmidt against the basis and q (α = ⟨q, Hq⟩ is the last coefficient; the one of
        // the previous vector is β), then once more against the whole basis: full reorthogonalization.
        let mut ys = self.basis.clone();
        ys.push(q);
        let c = s.dots(w, &ys)?;
        anyhow::ensure!(
            c.iter().all(|x| x.is_finite()),
            "the operator returned a non-finite value (NaN or infinite Hessian-vector product) at Lanczos step {step}"
        );
        let a = c[c.len() - 1];
        let terms: Vec<(f64, Vector)> = c.iter().zip(&ys).map(|(c, y)| (-c, *y)).collect();
        s.combine(w, 1.0, &terms)?;
        self.basis.push(q);
        let c = s.dots(w, &self.basis)?;
        let terms: Vec<(f64, Vector)> = c.iter().zip(&self.basis).map(|(c, y)| (-c, *y)).collect();
        s.combine(w, 1.0, &terms)?;
        let b = norm(s, w)?;
        self.alpha.push(a);
        self.beta.push(b);
        if self.basis.len() >= self.dim {
            self.exhausted = true;
            s.free(&[w])?;
        } else {
            self.next = Some(w);
            self.next_norm = Some(b);
        }
        Ok(())
    }

    /// Ritz values of the current `T` with their residual bounds, ascending.
    pub fn ritz(&self) -> anyhow::Result<(TridiagEigen, Vec<f64>)> {
        let m = self.alpha.len();
        anyhow::ensure!(m > 0, "Lanczos: no step taken");
        let te = tridiag_eigen(&self.alpha, &self.beta[..m - 1])?;
        let b = if self.exhausted { 0.0 } else { self.beta[m - 1] };
        let res = te.last.iter().map(|s| (b * s).abs()).collect();
        Ok((te, res))
    }

    /// Lets the space forget the basis and the next vector.
    pub fn free(mut self, s: &mut dyn HessianSpace) -> anyhow::Result<()> {
        self.basis.extend(self.next.take());
        s.free(&self.basis)
    }
}

/// λmax, λmin, the top-k eigenvalues and their residual bounds by Lanczos (see the module docs).
pub fn extremes(op: &mut dyn HessianSpace, opts: &LanczosOptions) -> anyhow::Result<Extremes> {
    let (e, top) = run(op, opts, None, true, false)?;
    debug_assert!(top.is_none());
    Ok(e)
}

/// The largest eigenvalue (and the top-k) by Lanczos, stopping when those are converged (λmin is
/// reported with its residual bound but not waited for), started from `start` when given (a warm start:
/// e.g. the previous checkpoint's top vector, loaded into this space; owned and freed here) or from a
/// Gaussian vector drawn with `opts.seed`. Returns the result and the top Ritz vector y = Σⱼ sⱼ qⱼ (a new
/// vector of the space, unit norm, for the caller to keep or free): the start of the next checkpoint's
/// run. On a slowly moving run a warm start converges in a few steps.
pub fn top_eigen(
    op: &mut dyn HessianSpace,
    opts: &LanczosOptions,
    start: Option<Vector>,
) -> anyhow::Result<(Extremes, Vector)> {
    let (e, top) = run(op, opts, start, false, true)?;
    let top = top.ok_or_else(|| anyhow::anyhow!("Lanczos: no top Ritz vector"))?;
    Ok((e, top))
}

fn run(
    op: &mut dyn HessianSpace,
    opts: &LanczosOptions,
    start: Option<Vector>,
    need_min: bool,
    keep_top: bool,
) -> anyhow::Result<(Extremes, Option<Vector>)> {
    anyhow::ensure!(opts.tol > 0.0, "Lanczos tolerance must be positive");
    anyhow::ensure!(opts.max_steps >= 1, "Lanczos needs at least one step");
    let begun = op.applications();
    let mut lz = match start {
        Some(v) => {
            anyhow::ensure!(op.dim() > 0, "the operator has dimension 0 (no parameters)");
            Lanczos::from_vector(op.dim(), v, opts.seed)
        }
        None => Lanczos::new(op, opts.seed)?,
    };
    let k = opts.top_k.max(1);
    loop {
        lz.step(op)?;
        let (te, res) = lz.ritz()?;
        let m = te.values.len();
        let scale = te.values.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        let thresh = opts.tol * scale;
        let kk = k.min(m);
        let top_ok = (0..kk).all(|i| res[m - 1 - i] <= thresh);
        let wanted_ok = top_ok && (!need_min || res[0] <= thresh);
        let enough = if need_min { m >= k.max(2) } else { m >= k };
        let converged = lz.exhausted() || (wanted_ok && enough);
        if converged || lz.steps() >= opts.max_steps {
            let lambda_max = te.values[m - 1];
            let lambda_min = te.values[0];
            let steps = lz.steps();
            let top = if keep_top { Some(lz.top_ritz_vector(op, &te.top)?) } else { None };
            lz.free(op)?;
            let e = Extremes {
                lambda_max,
                lambda_min,
                ratio: if lambda_max != 0.0 { (lambda_min / lambda_max).abs() } else { f64::NAN },
                top_k: te.values.iter().rev().take(kk).copied().collect(),
                residual_max: res[m - 1],
                residual_min: res[0],
                tol: opts.tol,
                converged,
                steps,
                hvps: op.applications() - begun,
            };
            return Ok((e, top));
        }
    }
}

impl Lanczos {
    /// y = Σⱼ sⱼ qⱼ over the basis, for the eigenvector `s` of `T` (one new vector, one `combine`).
    fn top_ritz_vector(&self, s: &mut dyn HessianSpace, coeffs: &[f64]) -> anyhow::Result<Vector> {
        let y = s.new_vector(Init::Zeros)?;
        let terms: Vec<(f64, Vector)> = coeffs.iter().copied().zip(self.basis.iter().copied()).collect();
        s.combine(y, 1.0, &terms)?;
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::memory::MemorySpace;
    use crate::curvature::operator::DenseSymmetric;

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
        let mut a = MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 3));
        let opts = LanczosOptions { max_steps: 300, tol: 1e-8, top_k: 3, seed: 1 };
        let r = extremes(&mut a, &opts).unwrap();
        assert!(r.converged);
        assert!((r.lambda_max - 50.0).abs() < 1e-6 * 50.0, "{}", r.lambda_max);
        assert!((r.lambda_min + 3.0).abs() < 1e-6 * 50.0, "{}", r.lambda_min);
        assert!((r.top_k[1] - 20.0).abs() < 1e-5 && (r.top_k[2] - 9.0).abs() < 1e-5, "{:?}", r.top_k);
        assert!(r.hvps < 300, "full reorth Lanczos should converge before exhausting: {}", r.hvps);
        assert_eq!(r.hvps, r.steps);
        assert!((r.ratio - 3.0 / 50.0).abs() < 1e-6);
        assert_eq!(a.live(), 1, "the basis is freed (only the centre is left)");
    }

    #[test]
    fn exhausts_small_space_exactly() {
        let eigs = [4.0, 4.0, 1.0, -2.0, 0.0];
        let mut a = MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 9));
        let r = extremes(&mut a, &LanczosOptions { max_steps: 50, tol: 1e-12, top_k: 2, seed: 2 }).unwrap();
        assert!(r.converged);
        assert!((r.lambda_max - 4.0).abs() < 1e-10 && (r.lambda_min + 2.0).abs() < 1e-10);
        assert!(r.hvps <= 5);
        assert_eq!(a.live(), 1);
    }

    #[test]
    fn budget_exhausted_is_flagged() {
        let eigs: Vec<f64> = (0..500).map(|i| (i as f64).sqrt()).collect();
        let mut a = MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 4));
        let r = extremes(&mut a, &LanczosOptions { max_steps: 5, tol: 1e-10, top_k: 1, seed: 0 }).unwrap();
        assert!(!r.converged);
        assert_eq!(r.hvps, 5);
    }

    /// Full reorthogonalization against the whole basis costs a constant number of operations on the
    /// space per step (each one round trip to a worker), not one per basis vector.
    #[test]
    fn operations_per_step_do_not_grow_with_the_basis() {
        let eigs: Vec<f64> = (0..400).map(|i| (i as f64).sqrt()).collect();
        let ops = |steps: usize| {
            let mut a = MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 4));
            let r = extremes(&mut a, &LanczosOptions { max_steps: steps, tol: 1e-14, top_k: 1, seed: 0 })
                .unwrap();
            assert_eq!(r.steps, steps);
            a.operations()
        };
        let (few, many) = (ops(5), ops(60));
        assert_eq!((many - few) % 55, 0, "{few} {many}");
        assert_eq!((many - few) / 55, 8, "operations per Lanczos step: {few} for 5 steps, {many} for 60");
    }

    /// The top-only run stops once λmax is converged; its Ritz vector is the top eigenvector, and a run
    /// started from it (a warm start) converges in far fewer HVPs than a cold one.
    #[test]
    fn top_eigen_and_its_warm_start() {
        let eigs = spectrum(300);
        let mut a = MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 3));
        let opts = LanczosOptions { max_steps: 300, tol: 1e-8, top_k: 1, seed: 1 };
        let (cold, y) = top_eigen(&mut a, &opts, None).unwrap();
        assert!(cold.converged);
        assert!((cold.lambda_max - 50.0).abs() < 1e-6 * 50.0, "{}", cold.lambda_max);
        // y is a unit eigenvector: ‖Hy − λy‖ small.
        let hy = a.new_vector(Init::Zeros).unwrap();
        a.hvp(y, hy).unwrap();
        let d = a.dots(y, &[y, hy]).unwrap();
        assert!((d[0] - 1.0).abs() < 1e-10, "‖y‖² = {}", d[0]);
        assert!((d[1] - 50.0).abs() < 1e-5, "yᵀHy = {}", d[1]);
        a.free(&[hy]).unwrap();
        let start = a.new_vector(Init::Copy(y)).unwrap();
        let (warm, y2) = top_eigen(&mut a, &opts, Some(start)).unwrap();
        assert!(warm.converged && (warm.lambda_max - 50.0).abs() < 1e-6 * 50.0);
        assert!(warm.hvps * 3 < cold.hvps, "warm {} HVPs vs cold {}", warm.hvps, cold.hvps);
        a.free(&[y, y2]).unwrap();
        assert_eq!(a.live(), 1, "only the centre is left");
    }

    #[test]
    fn non_finite_operator_is_an_error() {
        let mut a = MemorySpace::new(DenseSymmetric::new(2, vec![f64::NAN, 0.0, 0.0, 1.0]).unwrap());
        let e = extremes(&mut a, &LanczosOptions::default()).unwrap_err();
        assert!(e.to_string().contains("non-finite") && e.to_string().contains("Lanczos step 1"), "{e}");
    }
}
