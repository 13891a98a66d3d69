//! Lanczos on a symmetric positive semi-definite operator given as a function (the Gram operator of a
//! weight slice, [`super::gram`]), in plain f64 vectors held here: the top-k eigenvalues to a stated
//! relative accuracy with their Ritz vectors, and stochastic Lanczos quadrature (SLQ) of the rest of the
//! spectrum with those vectors deflated.
//!
//! **Top-k.** Lanczos from a Gaussian start vector, with full reorthogonalization (classical Gram–Schmidt
//! against every earlier vector, twice): the Ritz values θ of the tridiagonal T_m approximate the
//! operator's eigenvalues from inside. For the Ritz pair (θᵢ, yᵢ) the residual is rᵢ = β_m |s_{m,i}|
//! (s the eigenvector of T_m), an eigenvalue lies within rᵢ of θᵢ, and within rᵢ²/gapᵢ once the Ritz
//! values are separated (gapᵢ: the distance to the nearest other Ritz value; Parlett, *The Symmetric
//! Eigenvalue Problem*, §11.7). θᵢ counts as converged when min(rᵢ, rᵢ²/gapᵢ) ≤ tol·θᵢ + 1e-15·θmax;
//! the run stops once the k largest are converged, the Krylov space is exhausted (then every Ritz value is
//! exact), or after `max_steps`; the result keeps the largest Ritz values converged in an unbroken run from
//! the top. As for any single-vector Lanczos, an eigenvalue of multiplicity > 1 is found once (the copies
//! are orthogonal to the Krylov space in exact arithmetic): random weight matrices have none.
//!
//! **Deflated SLQ.** For each Rademacher probe z, v = (I − YYᵀ) z (Y the top Ritz vectors), Lanczos from
//! v/‖v‖, reorthogonalized against Y and its own basis, `steps` steps; the eigenvalues θ′ of its T are
//! quadrature nodes with weights τ² (squared first components, summing to 1). The spectrum left after
//! the top k is then estimated as (d − k) eigenvalues distributed as the mean over probes of Σ τ² δ(θ′)
//! (Ubaru, Chen & Saad, *Fast estimation of tr(f(A)) via stochastic Lanczos quadrature*, SIMAX 2017;
//! deflation as in Lin, Saad & Yang, *Approximating spectral densities of large matrices*, SIAM Rev. 2016).
//!
//! Memory: the Lanczos basis, `steps` vectors of the operator's dimension.

use faer::Mat;
use serde::{Deserialize, Serialize};

use crate::curvature::rng::Rng;

/// The converged top of a spectrum.
#[derive(Clone, Debug)]
pub struct TopEigen {
    /// The converged largest eigenvalues, descending.
    pub values: Vec<f64>,
    /// Their unit Ritz vectors.
    pub vectors: Vec<Vec<f64>>,
    /// The bound min(r, r²/gap) of each.
    pub bounds: Vec<f64>,
    /// Lanczos steps (operator applications).
    pub steps: usize,
    /// Every direction of the space was explored (all Ritz values exact).
    pub exhausted: bool,
}

/// The quadrature of the deflated spectrum: nodes and weights per probe (weights sum to 1 per probe).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quadrature {
    pub nodes: Vec<Vec<f64>>,
    pub weights: Vec<Vec<f64>>,
    /// How many eigenvalues the quadrature stands for (d − k).
    pub count: usize,
    /// Operator applications.
    pub steps: usize,
}

impl Quadrature {
    /// The estimate of Σ f(λ) over the eigenvalues it stands for: count · mean over probes of Σ τ² f(θ).
    pub fn sum(&self, f: impl Fn(f64) -> f64) -> f64 {
        if self.nodes.is_empty() {
            return 0.0;
        }
        let per: f64 = self
            .nodes
            .iter()
            .zip(&self.weights)
            .map(|(n, w)| n.iter().zip(w).map(|(t, w)| w * f(*t)).sum::<f64>())
            .sum();
        self.count as f64 * per / self.nodes.len() as f64
    }

    /// [`Quadrature::sum`] with Σλ as a control variate: Σ λ over the same eigenvalues is known exactly
    /// (`exact_sum`: the trace less the deflated eigenvalues), so the estimate of Σ f is corrected by
    /// β · (exact − estimated Σλ), β the slope of f on λ under the quadrature's own distribution. It
    /// removes most of the probes' noise for an f close to linear in λ over the bulk (entropy's p ln p).
    pub fn sum_controlled(&self, f: impl Fn(f64) -> f64, exact_sum: f64) -> f64 {
        let est = self.sum(&f);
        let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (n, w) in self.nodes.iter().zip(&self.weights) {
            for (t, w) in n.iter().zip(w) {
                let y = f(*t);
                sw += w;
                sx += w * t;
                sy += w * y;
                sxx += w * t * t;
                sxy += w * t * y;
            }
        }
        if sw <= 0.0 {
            return est;
        }
        let (mx, my) = (sx / sw, sy / sw);
        let var = sxx / sw - mx * mx;
        let beta = if var > 0.0 { (sxy / sw - mx * my) / var } else { 0.0 };
        if !beta.is_finite() {
            return est;
        }
        est + beta * (exact_sum - self.sum(|t| t))
    }

    /// The smallest node over the probes (an upper bound of the smallest eigenvalue it stands for).
    pub fn min_node(&self) -> f64 {
        self.nodes.iter().flatten().copied().fold(f64::INFINITY, f64::min)
    }
}

/// The top eigenvalues of the operator `apply` of dimension `dim` (see the module doc).
pub fn top_eigen(
    apply: &dyn Fn(&[f64], &mut [f64]),
    dim: usize,
    k: usize,
    max_steps: usize,
    tol: f64,
    seed: u64,
) -> Result<TopEigen, String> {
    let mut rng = Rng::new(seed);
    let start: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
    let max_steps = max_steps.clamp(1, dim);
    let k = k.clamp(1, dim);
    let mut lz = Lanczos::new(start, &[]);
    let mut next_check = (k + 10).min(max_steps);
    loop {
        lz.step(apply)?;
        let m = lz.alpha.len();
        if !(lz.exhausted || m >= next_check || m >= max_steps) {
            continue;
        }
        let (theta, s) = tridiag_eigen(&lz.alpha, &lz.beta[..m - 1])?;
        let beta_m = if lz.exhausted { 0.0 } else { lz.beta[m - 1] };
        let top = theta[m - 1].abs();
        let bounds: Vec<f64> = (0..m)
            .map(|i| {
                let r = (beta_m * s[(m - 1, i)]).abs();
                let gap = neighbour_gap(&theta, i);
                if gap > 0.0 { r.min(r * r / gap) } else { r }
            })
            .collect();
        let converged = (0..m).rev().take_while(|&i| bounds[i] <= tol * theta[i].abs() + 1e-15 * top).count();
        if lz.exhausted || converged >= k || m >= max_steps {
            let keep = if lz.exhausted { m } else { converged.min(k) };
            let idx: Vec<usize> = (0..m).rev().take(keep).collect();
            let vectors = idx.iter().map(|&i| lz.ritz_vector(s.col(i))).collect();
            return Ok(TopEigen {
                values: idx.iter().map(|&i| theta[i]).collect(),
                vectors,
                bounds: idx.iter().map(|&i| bounds[i]).collect(),
                steps: m,
                exhausted: lz.exhausted,
            });
        }
        // Checks cost O(m³): about a dozen per run, at geometrically spaced steps.
        next_check = (m + (m / 4).max(10)).min(max_steps);
    }
}

/// SLQ of the operator's spectrum with the unit vectors `deflate` (orthonormal) projected out: `probes`
/// Rademacher probes (seeds `seed + r`), `steps` Lanczos steps each.
pub fn deflated_slq(
    apply: &dyn Fn(&[f64], &mut [f64]),
    dim: usize,
    deflate: &[Vec<f64>],
    probes: usize,
    steps: usize,
    seed: u64,
) -> Result<Quadrature, String> {
    let count = dim.saturating_sub(deflate.len());
    let mut q = Quadrature { count, ..Default::default() };
    if count == 0 {
        return Ok(q);
    }
    for r in 0..probes.max(1) {
        let mut rng = Rng::new(seed.wrapping_add(r as u64));
        let mut z: Vec<f64> = (0..dim).map(|_| rng.rademacher()).collect();
        for _ in 0..2 {
            project_out(&mut z, deflate);
        }
        if norm(&z) <= 1e-12 * (dim as f64).sqrt() {
            continue;
        }
        let mut lz = Lanczos::new(z, deflate);
        while lz.alpha.len() < steps.min(count) && !lz.exhausted {
            lz.step(apply)?;
        }
        let m = lz.alpha.len();
        let (theta, s) = tridiag_eigen(&lz.alpha, &lz.beta[..m - 1])?;
        q.nodes.push(theta);
        q.weights.push((0..m).map(|i| s[(0, i)] * s[(0, i)]).collect());
        q.steps += m;
    }
    Ok(q)
}

/// The Krylov basis and the tridiagonal matrix built so far.
struct Lanczos<'a> {
    basis: Vec<Vec<f64>>,
    /// Unit vectors kept out of the Krylov space (the deflated ones).
    fixed: &'a [Vec<f64>],
    next: Vec<f64>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    exhausted: bool,
}

impl<'a> Lanczos<'a> {
    fn new(mut start: Vec<f64>, fixed: &'a [Vec<f64>]) -> Self {
        let n = norm(&start);
        start.iter_mut().for_each(|v| *v /= n);
        Lanczos {
            basis: Vec::new(),
            fixed,
            next: start,
            alpha: Vec::new(),
            beta: Vec::new(),
            exhausted: false,
        }
    }

    /// One step: one operator application, full reorthogonalization (twice) against the basis and the
    /// fixed vectors.
    fn step(&mut self, apply: &dyn Fn(&[f64], &mut [f64])) -> Result<(), String> {
        let q = std::mem::take(&mut self.next);
        let mut w = vec![0.0; q.len()];
        apply(&q, &mut w);
        if w.iter().any(|v| !v.is_finite()) {
            return Err(format!(
                "the operator gave a non-finite value at Lanczos step {}",
                self.alpha.len() + 1
            ));
        }
        let a = dot(&q, &w);
        self.basis.push(q);
        for _ in 0..2 {
            project_out(&mut w, &self.basis);
            project_out(&mut w, self.fixed);
        }
        let b = norm(&w);
        self.alpha.push(a);
        self.beta.push(b);
        let scale = self.alpha.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        if b <= 1e-12 * scale.max(f64::MIN_POSITIVE) || self.basis.len() + self.fixed.len() >= w.len() {
            self.exhausted = true;
        } else {
            w.iter_mut().for_each(|v| *v /= b);
            self.next = w;
        }
        Ok(())
    }

    /// y = Σⱼ sⱼ qⱼ.
    fn ritz_vector(&self, s: faer::ColRef<'_, f64>) -> Vec<f64> {
        let mut y = vec![0.0; self.basis[0].len()];
        for (j, q) in self.basis.iter().enumerate() {
            let c = s[j];
            y.iter_mut().zip(q).for_each(|(y, q)| *y += c * q);
        }
        y
    }
}

/// w −= Σ (u·w) u over `us` (classical Gram–Schmidt: every coefficient from the same w).
fn project_out(w: &mut [f64], us: &[Vec<f64>]) {
    let cs: Vec<f64> = us.iter().map(|u| dot(u, w)).collect();
    for (c, u) in cs.iter().zip(us) {
        w.iter_mut().zip(u).for_each(|(w, u)| *w -= c * u);
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    super::gram::dot(a, b)
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Distance from θᵢ to the nearest other Ritz value (∞ for a single one).
fn neighbour_gap(theta: &[f64], i: usize) -> f64 {
    let below = if i > 0 { theta[i] - theta[i - 1] } else { f64::INFINITY };
    let above = if i + 1 < theta.len() { theta[i + 1] - theta[i] } else { f64::INFINITY };
    below.min(above)
}

/// Eigenvalues (ascending) and unit eigenvectors (columns) of the symmetric tridiagonal matrix with
/// diagonal `alpha` and off-diagonal `beta`, by faer's dense self-adjoint eigensolver, sequential.
fn tridiag_eigen(alpha: &[f64], beta: &[f64]) -> Result<(Vec<f64>, Mat<f64>), String> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::evd::{self, ComputeEigenvectors};
    let m = alpha.len();
    let t = Mat::from_fn(m, m, |i, j| {
        if i == j {
            alpha[i]
        } else if i + 1 == j {
            beta[i]
        } else if j + 1 == i {
            beta[j]
        } else {
            0.0
        }
    });
    let mut u = Mat::<f64>::zeros(m, m);
    let mut s = faer::diag::Diag::<f64>::zeros(m);
    let par = faer::Par::Seq;
    let scratch = evd::self_adjoint_evd_scratch::<f64>(m, ComputeEigenvectors::Yes, par, Default::default());
    evd::self_adjoint_evd(
        t.as_ref(),
        s.as_mut(),
        Some(u.as_mut()),
        par,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .map_err(|e| format!("the Lanczos tridiagonal eigensolver did not converge ({e:?})"))?;
    Ok((s.column_vector().iter().copied().collect(), u))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// diag(spectrum) as the operator.
    fn diagonal(d: &[f64]) -> impl Fn(&[f64], &mut [f64]) + '_ {
        move |x, y| y.iter_mut().zip(x).zip(d).for_each(|((y, x), d)| *y = d * x)
    }

    #[test]
    fn top_k_of_a_known_spectrum_and_the_deflated_rest() {
        // A heavy tail (1/i² above a flat bulk) on 400 dimensions.
        let d: Vec<f64> = (0..400)
            .map(|i| if i < 30 { 100.0 / ((i + 1) as f64).powi(2) } else { 0.05 + 1e-4 * i as f64 })
            .collect();
        let mut sorted = d.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let op = diagonal(&d);
        let t = top_eigen(&op, 400, 20, 200, 1e-12, 1).unwrap();
        assert!(t.values.len() >= 20, "{} converged in {} steps", t.values.len(), t.steps);
        for (got, want) in t.values.iter().zip(&sorted).take(20) {
            assert!((got - want).abs() <= 1e-10 * want, "{got} vs {want}");
        }
        let k = t.values.len();
        let q = deflated_slq(&op, 400, &t.vectors, 8, 30, 7).unwrap();
        assert_eq!(q.count, 400 - k);
        let rest: f64 = sorted[k..].iter().sum();
        assert!((q.sum(|l| l) - rest).abs() < 0.02 * rest, "{} vs {rest}", q.sum(|l| l));
        assert!((q.sum(|_| 1.0) - (400 - k) as f64).abs() < 1e-9);
        // With Σλ as control variate a smooth f is estimated closer (here exactly for f linear in λ).
        assert!(
            (q.sum_controlled(|l| 3.0 * l + 1.0, rest) - (3.0 * rest + (400 - k) as f64)).abs() < 1e-9 * rest
        );
    }

    #[test]
    fn small_space_is_exhausted_exactly() {
        let d = [5.0, 3.0, 1.0, 0.5];
        let t = top_eigen(&diagonal(&d), 4, 2, 50, 1e-12, 3).unwrap();
        assert!(t.exhausted);
        assert!((t.values[0] - 5.0).abs() < 1e-13 && (t.values[1] - 3.0).abs() < 1e-13);
    }
}
