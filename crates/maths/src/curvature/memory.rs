//! A [`HessianSpace`] whose vectors live in this process (`HashMap<handle, Vec<f64>>`), over an
//! in-process operator and objective: an explicit symmetric matrix in the unit tests, so they test the
//! very code that drives a model worker; or the model's Hessian in one process (benchmarks).
//!
//! Random vectors come from [`Rng`](super::rng::Rng) seeded by the given seed (a worker draws from torch's
//! generator instead; the algorithms don't depend on which).

use super::measures::{Objective, ParamSlot};
use super::operator::{LinearOperator, dot};
use super::rng::Rng;
use super::space::{HessianSpace, Init, Vector};
use anyhow::{Result, anyhow, bail};
use std::collections::HashMap;

/// Vectors in memory over `F`, which gives the Hessian (`LinearOperator`) and the loss (`Objective`).
pub struct MemorySpace<F> {
    f: F,
    layout: Vec<ParamSlot>,
    dim: usize,
    vectors: HashMap<Vector, Vec<f64>>,
    next: Vector,
    centre: Vector,
    count: usize,
    ops: usize,
}

impl<F: LinearOperator + Objective> MemorySpace<F> {
    /// The space at `f`'s centre.
    pub fn new(f: F) -> MemorySpace<F> {
        let dim = LinearOperator::dim(&f);
        let layout = f.layout().to_vec();
        let mut vectors = HashMap::new();
        vectors.insert(1, f.center().to_vec());
        MemorySpace { f, layout, dim, vectors, next: 1, centre: 1, count: 0, ops: 0 }
    }

    /// The operator and objective back.
    pub fn into_inner(self) -> F {
        self.f
    }

    /// How many vectors are held (the centre included): tests check that the algorithms free theirs.
    pub fn live(&self) -> usize {
        self.vectors.len()
    }

    /// How many operations (each a round trip to a worker) have run: tests check the algorithms' cost.
    pub fn operations(&self) -> usize {
        self.ops
    }

    fn get(&self, h: Vector) -> Result<&Vec<f64>> {
        self.vectors.get(&h).ok_or_else(|| anyhow!("unknown vector handle {h}"))
    }

    fn insert(&mut self, v: Vec<f64>) -> Vector {
        self.next += 1;
        self.vectors.insert(self.next, v);
        self.next
    }
}

impl<F: LinearOperator + Objective> HessianSpace for MemorySpace<F> {
    fn dim(&self) -> usize {
        self.dim
    }
    fn layout(&self) -> &[ParamSlot] {
        &self.layout
    }
    fn centre(&self) -> Vector {
        self.centre
    }
    fn new_vector(&mut self, init: Init) -> Result<Vector> {
        self.ops += 1;
        let d = self.dim;
        let v = match init {
            Init::Zeros => vec![0.0; d],
            Init::Gaussian { seed } => {
                let mut r = Rng::new(seed);
                (0..d).map(|_| r.normal()).collect()
            }
            Init::Rademacher { seed } => {
                let mut r = Rng::new(seed);
                (0..d).map(|_| r.rademacher()).collect()
            }
            Init::Copy(of) => self.get(of)?.clone(),
            Init::Values(v) => {
                if v.len() != d {
                    bail!("values: {} numbers, the space has {d}", v.len());
                }
                v
            }
        };
        Ok(self.insert(v))
    }
    fn dots(&mut self, x: Vector, ys: &[Vector]) -> Result<Vec<f64>> {
        self.ops += 1;
        let xv = self.get(x)?;
        ys.iter().map(|y| Ok(dot(xv, self.get(*y)?))).collect()
    }
    fn combine(&mut self, y: Vector, scale: f64, terms: &[(f64, Vector)]) -> Result<()> {
        self.ops += 1;
        if terms.iter().any(|(_, x)| *x == y) {
            bail!("combine: y may not appear among the terms");
        }
        let mut yv = self.vectors.remove(&y).ok_or_else(|| anyhow!("unknown vector handle {y}"))?;
        if scale != 1.0 {
            yv.iter_mut().for_each(|v| *v *= scale);
        }
        let r = terms.iter().try_for_each(|(c, x)| {
            let xv = self.get(*x)?;
            yv.iter_mut().zip(xv).for_each(|(a, b)| *a += c * b);
            Ok(())
        });
        self.vectors.insert(y, yv);
        r
    }
    fn free(&mut self, vs: &[Vector]) -> Result<()> {
        self.ops += 1;
        for v in vs {
            self.vectors.remove(v);
        }
        Ok(())
    }
    fn multiply(&mut self, y: Vector, x: Vector) -> Result<()> {
        self.ops += 1;
        if x == y {
            bail!("multiply: y and x must be distinct vectors");
        }
        let xv = self.get(x)?.clone();
        let yv = self.vectors.get_mut(&y).ok_or_else(|| anyhow!("unknown vector handle {y}"))?;
        yv.iter_mut().zip(&xv).for_each(|(a, b)| *a *= b);
        Ok(())
    }
    fn hvp(&mut self, v: Vector, out: Vector) -> Result<()> {
        self.ops += 1;
        let vv = self.get(v)?.clone();
        let mut o = vec![0.0; self.dim];
        self.get(out)?;
        self.count += 1;
        self.f.apply(&vv, &mut o)?;
        self.vectors.insert(out, o);
        Ok(())
    }
    fn loss(&mut self, at: Option<Vector>) -> Result<f64> {
        self.ops += 1;
        let theta = self.get(at.unwrap_or(self.centre))?.clone();
        self.f.loss(&theta)
    }
    fn gradient(&mut self, at: Option<Vector>, out: Vector) -> Result<f64> {
        self.ops += 1;
        let theta = self.get(at.unwrap_or(self.centre))?.clone();
        self.get(out)?;
        let mut g = vec![0.0; self.dim];
        let l = self.f.loss_grad(&theta, &mut g)?;
        self.vectors.insert(out, g);
        Ok(l)
    }
    fn read(&mut self, v: Vector) -> Result<Vec<f64>> {
        self.ops += 1;
        Ok(self.get(v)?.clone())
    }
    fn applications(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::operator::DenseSymmetric;
    use crate::curvature::space::{normalize, orthogonalize};

    #[test]
    fn vector_operations() {
        let a = DenseSymmetric::new(3, vec![2.0, 1.0, 0.0, 1.0, 3.0, 0.0, 0.0, 0.0, -1.0]).unwrap();
        let mut s = MemorySpace::new(a);
        let x = s.new_vector(Init::Values(vec![1.0, 2.0, 2.0])).unwrap();
        let y = s.new_vector(Init::Copy(x)).unwrap();
        assert_eq!(s.dots(x, &[x, y]).unwrap(), vec![9.0, 9.0]);
        assert_eq!(normalize(&mut s, y).unwrap(), 3.0);
        let e0 = s.new_vector(Init::Values(vec![1.0, 0.0, 0.0])).unwrap();
        s.combine(x, 2.0, &[(-1.0, e0)]).unwrap();
        assert_eq!(s.read(x).unwrap(), vec![1.0, 4.0, 4.0]);
        orthogonalize(&mut s, x, &[e0]).unwrap();
        assert_eq!(s.read(x).unwrap(), vec![0.0, 4.0, 4.0]);
        assert!(s.combine(x, 1.0, &[(1.0, x)]).is_err());
        let hx = s.new_vector(Init::Zeros).unwrap();
        s.hvp(e0, hx).unwrap();
        assert_eq!(s.read(hx).unwrap(), vec![2.0, 1.0, 0.0]);
        assert_eq!(s.applications(), 1);
        // ½ xᵀAx at x = e0, and its gradient A e0.
        assert_eq!(s.loss(Some(e0)).unwrap(), 1.0);
        assert_eq!(s.gradient(Some(e0), hx).unwrap(), 1.0);
        assert_eq!(s.read(hx).unwrap(), vec![2.0, 1.0, 0.0]);
        let m = s.new_vector(Init::Values(vec![1.0, -2.0, 0.5])).unwrap();
        let k = s.new_vector(Init::Values(vec![3.0, 3.0, 4.0])).unwrap();
        s.multiply(m, k).unwrap();
        assert_eq!(s.read(m).unwrap(), vec![3.0, -6.0, 2.0]);
        assert!(s.multiply(m, m).is_err());
        s.free(&[m, k]).unwrap();
        let r = s.new_vector(Init::Rademacher { seed: 3 }).unwrap();
        assert!(s.read(r).unwrap().iter().all(|v| v.abs() == 1.0));
        s.free(&[x, y, e0, hx, r]).unwrap();
        assert_eq!(s.live(), 1);
        assert!(s.read(x).unwrap_err().to_string().contains("unknown vector handle"));
        assert!(s.new_vector(Init::Values(vec![1.0])).is_err());
    }
}
