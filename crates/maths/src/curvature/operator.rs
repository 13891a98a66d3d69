//! An in-process symmetric linear operator on flat `f64` slices (the model's Hessian in one process, or an
//! explicit matrix in tests), which [`MemorySpace`](super::memory::MemorySpace) turns into a
//! [`HessianSpace`](super::space::HessianSpace) for the estimators; the explicit matrix
//! [`DenseSymmetric`] (also a quadratic [`Objective`]); and small slice helpers.
//!
//! Vectors are flat `f64` slices of length [`LinearOperator::dim`]. Every application is counted, so each
//! result can report how many Hessian-vector products (HVPs) it cost.

use super::measures::{Objective, ParamSlot};

/// A symmetric linear operator `A : R^d → R^d`.
pub trait LinearOperator {
    /// The dimension `d`.
    fn dim(&self) -> usize;
    /// `out = A v`. Errors (a NaN loss, a failing model) are passed up unchanged.
    fn apply(&mut self, v: &[f64], out: &mut [f64]) -> anyhow::Result<()>;
    /// How many times [`LinearOperator::apply`] has run so far.
    fn applications(&self) -> usize;
}

/// An explicit dense symmetric matrix A (row major), for tests and benchmarks; also the quadratic
/// objective L(x) = ½ xᵀAx + bᵀx about a centre θ (b = 0, θ = 0 unless a test sets them
/// with `with_objective`), whose Hessian is A everywhere.
pub struct DenseSymmetric {
    n: usize,
    a: Vec<f64>,
    count: usize,
    b: Vec<f64>,
    theta: Vec<f64>,
    layout: Vec<ParamSlot>,
}

impl DenseSymmetric {
    /// `a` is `n × n`, row major; it is symmetrized as `(A + Aᵀ)/2`.
    pub fn new(n: usize, a: Vec<f64>) -> anyhow::Result<Self> {
        anyhow::ensure!(a.len() == n * n, "matrix has {} entries, expected {n}×{n}", a.len());
        let mut s = a.clone();
        for i in 0..n {
            for j in 0..n {
                s[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
            }
        }
        Ok(DenseSymmetric {
            n,
            a: s,
            count: 0,
            b: vec![0.0; n],
            theta: vec![0.0; n],
            layout: vec![ParamSlot { name: "a.weight".into(), shape: vec![n], offset: 0 }],
        })
    }

    /// Sets the linear term `b` and the centre θ of the quadratic objective.
    #[cfg(test)]
    pub(crate) fn with_objective(mut self, b: Vec<f64>, theta: Vec<f64>) -> anyhow::Result<Self> {
        anyhow::ensure!(b.len() == self.n && theta.len() == self.n, "b and θ must have {} values", self.n);
        self.b = b;
        self.theta = theta;
        Ok(self)
    }

    /// `Q diag(eigs) Qᵀ` with a random orthogonal `Q` (product of `n` Householder reflections): a matrix
    /// with a known spectrum.
    pub fn with_spectrum(eigs: &[f64], seed: u64) -> Self {
        let n = eigs.len();
        let mut rng = super::rng::Rng::new(seed);
        // Start from diag(eigs) and apply reflections H = I - 2uuᵀ on both sides: A ← H A H.
        let mut a = vec![0.0; n * n];
        for (i, e) in eigs.iter().enumerate() {
            a[i * n + i] = *e;
        }
        for _ in 0..n.min(8) {
            let mut u: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            let nu = norm(&u);
            u.iter_mut().for_each(|x| *x /= nu);
            // A ← (I - 2uuᵀ) A (I - 2uuᵀ)
            let au: Vec<f64> = (0..n).map(|i| dot(&a[i * n..(i + 1) * n], &u)).collect();
            let uau = dot(&u, &au);
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] += -2.0 * au[i] * u[j] - 2.0 * u[i] * au[j] + 4.0 * uau * u[i] * u[j];
                }
            }
        }
        DenseSymmetric::new(n, a).unwrap_or_else(|_| DenseSymmetric {
            n: 0,
            a: Vec::new(),
            count: 0,
            b: Vec::new(),
            theta: Vec::new(),
            layout: Vec::new(),
        })
    }

    pub fn entry(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }
}

impl LinearOperator for DenseSymmetric {
    fn dim(&self) -> usize {
        self.n
    }
    fn apply(&mut self, v: &[f64], out: &mut [f64]) -> anyhow::Result<()> {
        self.count += 1;
        for (i, o) in out.iter_mut().enumerate().take(self.n) {
            *o = dot(&self.a[i * self.n..(i + 1) * self.n], v);
        }
        Ok(())
    }
    fn applications(&self) -> usize {
        self.count
    }
}

impl Objective for DenseSymmetric {
    fn layout(&self) -> &[ParamSlot] {
        &self.layout
    }
    fn dim(&self) -> usize {
        self.n
    }
    fn center(&self) -> &[f64] {
        &self.theta
    }
    fn loss(&mut self, x: &[f64]) -> anyhow::Result<f64> {
        anyhow::ensure!(x.len() == self.n, "point has {} values, expected {}", x.len(), self.n);
        let ax: Vec<f64> = (0..self.n).map(|i| dot(&self.a[i * self.n..(i + 1) * self.n], x)).collect();
        Ok(0.5 * dot(x, &ax) + dot(&self.b, x))
    }
    fn loss_grad(&mut self, x: &[f64], g: &mut [f64]) -> anyhow::Result<f64> {
        anyhow::ensure!(
            x.len() == self.n && g.len() == self.n,
            "point has {} values, expected {}",
            x.len(),
            self.n
        );
        for (i, gi) in g.iter_mut().enumerate() {
            *gi = dot(&self.a[i * self.n..(i + 1) * self.n], x) + self.b[i];
        }
        self.loss(x)
    }
}

/// `Σ x_i y_i`.
pub fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// Euclidean norm.
pub fn norm(x: &[f64]) -> f64 {
    dot(x, x).sqrt()
}

/// Scales `x` to unit norm; returns the norm it had.
pub fn normalize(x: &mut [f64]) -> f64 {
    let n = norm(x);
    if n > 0.0 {
        x.iter_mut().for_each(|v| *v /= n);
    }
    n
}
