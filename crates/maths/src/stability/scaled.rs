//! A Hessian space whose products are D·H·D for a diagonal scaling D held by the space itself (the
//! preconditioner's P^{-1/2}): Lanczos on it gives λ1(P⁻¹H) = λmax(P^{-1/2} H P^{-1/2}) with no vector
//! leaving the space (each product: a copy, two elementwise products, one HVP of the inner space).

use crate::curvature::measures::ParamSlot;
use crate::curvature::space::{HessianSpace, Init, Vector};

/// `inner`'s space with the operator D H D; loss and gradient are `inner`'s own (unscaled).
pub struct Scaled<'a> {
    inner: &'a mut dyn HessianSpace,
    d: Vector,
    hvps: usize,
}

impl<'a> Scaled<'a> {
    /// `d`: a vector of `inner` holding the diagonal of D (kept by the caller).
    pub fn new(inner: &'a mut dyn HessianSpace, d: Vector) -> Scaled<'a> {
        Scaled { inner, d, hvps: 0 }
    }
}

impl HessianSpace for Scaled<'_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn layout(&self) -> &[ParamSlot] {
        self.inner.layout()
    }
    fn centre(&self) -> Vector {
        self.inner.centre()
    }
    fn new_vector(&mut self, init: Init) -> anyhow::Result<Vector> {
        self.inner.new_vector(init)
    }
    fn dots(&mut self, x: Vector, ys: &[Vector]) -> anyhow::Result<Vec<f64>> {
        self.inner.dots(x, ys)
    }
    fn combine(&mut self, y: Vector, scale: f64, terms: &[(f64, Vector)]) -> anyhow::Result<()> {
        self.inner.combine(y, scale, terms)
    }
    fn free(&mut self, vs: &[Vector]) -> anyhow::Result<()> {
        self.inner.free(vs)
    }
    fn multiply(&mut self, y: Vector, x: Vector) -> anyhow::Result<()> {
        self.inner.multiply(y, x)
    }
    /// out ← D H (D v).
    fn hvp(&mut self, v: Vector, out: Vector) -> anyhow::Result<()> {
        let t = self.inner.new_vector(Init::Copy(v))?;
        let r = (|| {
            self.inner.multiply(t, self.d)?;
            self.inner.hvp(t, out)?;
            self.inner.multiply(out, self.d)
        })();
        self.inner.free(&[t])?;
        r?;
        self.hvps += 1;
        Ok(())
    }
    fn loss(&mut self, at: Option<Vector>) -> anyhow::Result<f64> {
        self.inner.loss(at)
    }
    fn gradient(&mut self, at: Option<Vector>, out: Vector) -> anyhow::Result<f64> {
        self.inner.gradient(at, out)
    }
    fn read(&mut self, v: Vector) -> anyhow::Result<Vec<f64>> {
        self.inner.read(v)
    }
    fn applications(&self) -> usize {
        self.hvps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::lanczos::{LanczosOptions, extremes};
    use crate::curvature::memory::MemorySpace;
    use crate::curvature::operator::DenseSymmetric;
    use crate::eigen::symmetric_eigen;

    /// λmax of D H D by Lanczos through the space equals the dense eigenvalue of P⁻¹H (computed here
    /// as the symmetric D H D by an independent Jacobi eigensolver).
    #[test]
    fn lanczos_on_dhd_gives_the_preconditioned_top_eigenvalue() {
        let n = 12;
        let eigs: Vec<f64> = (0..n).map(|i| 3.0 - 0.4 * i as f64).collect();
        let h = DenseSymmetric::with_spectrum(&eigs, 5);
        let dense: Vec<f64> = (0..n * n).map(|k| h.entry(k / n, k % n)).collect();
        let dv: Vec<f64> = (0..n).map(|i| 0.5 + 0.3 * (i as f64).sin().abs()).collect();
        let mut s = MemorySpace::new(h);
        let d = s.new_vector(Init::Values(dv.clone())).unwrap();
        let mut dhd = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                dhd[i * n + j] = dv[i] * dense[i * n + j] * dv[j];
            }
        }
        let want = symmetric_eigen(&dhd, n).unwrap().values.iter().cloned().fold(f64::MIN, f64::max);
        let mut sc = Scaled::new(&mut s, d);
        let e = extremes(&mut sc, &LanczosOptions { max_steps: 50, tol: 1e-12, top_k: 1, seed: 3 }).unwrap();
        assert!((e.lambda_max - want).abs() < 1e-10 * want.abs(), "{} vs {want}", e.lambda_max);
        assert_eq!(sc.applications(), e.hvps);
        s.free(&[d]).unwrap();
        assert_eq!(s.live(), 1, "the products' temporaries are freed");
    }
}
