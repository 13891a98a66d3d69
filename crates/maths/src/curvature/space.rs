//! The space the curvature algorithms work in: the parameter space of a model at a point, with the loss,
//! its gradient and its Hessian there, and vectors that live *elsewhere* — in a model worker (see
//! `docs/worker-protocol.md`), or in memory in tests — addressed by [`Vector`] handles.
//!
//! The operations are the worker protocol's, at the grain Lanczos, Hutchinson and SLQ need: a new vector
//! (zeros, Gaussian or Rademacher by seed, a copy, explicit values), batched inner products
//! ([`HessianSpace::dots`]: one round trip for ⟨x, y⟩ against a whole Krylov basis), linear combinations
//! ([`HessianSpace::combine`]: y ← s·y + Σ cᵢxᵢ), the elementwise product ([`HessianSpace::multiply`]:
//! a diagonal scaling), `free`, `hvp`, `loss` and `gradient`. No d-dimensional
//! vector crosses to the caller except through the escape hatches [`HessianSpace::read`] and
//! [`Init::Values`]; the eigenvalue and trace estimators never use them. (The sharpness measures do,
//! through [`SpaceObjective`]: they need elementwise operations such as sign, clip and |θ|; see there.)

use super::measures::{Objective, ParamSlot};

/// Which trainable parameters the Hessian is taken over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum ParamSubset {
    /// Every trainable parameter.
    #[default]
    All,
    /// Only tensors with ≥ 2 dimensions (no biases, no batch-norm γ/β), as the reference code does.
    Matrices,
}

impl ParamSubset {
    /// The name in the worker protocol's `hessian_open` and in records: `all`, `matrices`.
    pub fn name(self) -> &'static str {
        match self {
            ParamSubset::All => "all",
            ParamSubset::Matrices => "matrices",
        }
    }
}

/// A vector held by the space (a worker handle). Handles are never reused within one space.
pub type Vector = u64;

/// How a new vector starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    /// Standard normal entries, drawn by the space from `seed` (a worker draws from torch's generator).
    Gaussian {
        seed: u64,
    },
    /// ±1 entries with probability ½ each, drawn from `seed`.
    Rademacher {
        seed: u64,
    },
    /// A copy of another vector.
    Copy(Vector),
    /// These values (d numbers cross to the space: the escape hatch).
    Values(Vec<f64>),
}

/// The parameter space at a point θ, with the loss L, ∇L and the Hessian H there. Errors (a non-finite
/// product, a failing model, a worker that died) are passed up unchanged.
pub trait HessianSpace {
    /// The dimension d (parameters in the Hessian's subset).
    fn dim(&self) -> usize;
    /// The parameter tensors, in order, covering `0..dim()`.
    fn layout(&self) -> &[ParamSlot];
    /// The vector holding θ, the point (checkpoint) the Hessian is taken at.
    fn centre(&self) -> Vector;
    fn new_vector(&mut self, init: Init) -> anyhow::Result<Vector>;
    /// ⟨x, y⟩ for every y, in one operation.
    fn dots(&mut self, x: Vector, ys: &[Vector]) -> anyhow::Result<Vec<f64>>;
    /// y ← scale·y + Σ cᵢ·xᵢ (`y` must not be among the xᵢ).
    fn combine(&mut self, y: Vector, scale: f64, terms: &[(f64, Vector)]) -> anyhow::Result<()>;
    fn free(&mut self, vs: &[Vector]) -> anyhow::Result<()>;
    /// y ← y ⊙ x, elementwise (`y` and `x` distinct): a diagonal scaling such as the preconditioner's
    /// P^{-1/2} applied without the vector leaving the space.
    fn multiply(&mut self, y: Vector, x: Vector) -> anyhow::Result<()>;
    /// out ← H v (counted by [`HessianSpace::applications`]).
    fn hvp(&mut self, v: Vector, out: Vector) -> anyhow::Result<()>;
    /// L(θ') with θ' = `at` (`None`: the centre).
    fn loss(&mut self, at: Option<Vector>) -> anyhow::Result<f64>;
    /// L(θ') and out ← ∇L(θ').
    fn gradient(&mut self, at: Option<Vector>, out: Vector) -> anyhow::Result<f64>;
    /// The values of a vector (the escape hatch: d numbers cross to the caller).
    fn read(&mut self, v: Vector) -> anyhow::Result<Vec<f64>>;
    /// How many HVPs have run so far.
    fn applications(&self) -> usize;
}

/// ‖x‖ (one round trip).
pub fn norm(s: &mut dyn HessianSpace, x: Vector) -> anyhow::Result<f64> {
    Ok(s.dots(x, &[x])?[0].max(0.0).sqrt())
}

/// Scales `x` to unit norm; returns the norm it had (two round trips).
pub fn normalize(s: &mut dyn HessianSpace, x: Vector) -> anyhow::Result<f64> {
    let n = norm(s, x)?;
    if n > 0.0 && n.is_finite() {
        s.combine(x, 1.0 / n, &[])?;
    }
    Ok(n)
}

/// Makes `w` orthogonal to the (orthonormal) `basis` by classical Gram–Schmidt, twice ("twice is
/// enough"): two `dots` and two `combine` whatever the basis size.
pub fn orthogonalize(s: &mut dyn HessianSpace, w: Vector, basis: &[Vector]) -> anyhow::Result<()> {
    if basis.is_empty() {
        return Ok(());
    }
    for _ in 0..2 {
        let c = s.dots(w, basis)?;
        let terms: Vec<(f64, Vector)> = c.iter().zip(basis).map(|(c, q)| (-c, *q)).collect();
        s.combine(w, 1.0, &terms)?;
    }
    Ok(())
}

/// The sharpness measures' view of a space: an [`Objective`] over flat `f64` parameter vectors held by
/// the caller. The measures need elementwise operations (sign and clip for Keskar's box, |θ| for ASAM,
/// per-filter norms for filter-normalized directions) that the space doesn't offer, so they run on the
/// caller's side, and **d numbers cross per evaluation**: θ once when this is made, then, for each loss
/// at a point other than θ, the point (`values`), and for each gradient also the gradient (`read`).
/// That is only for the measures; Lanczos, Hutchinson and SLQ ship no vectors.
pub struct SpaceObjective<'a> {
    space: &'a mut dyn HessianSpace,
    layout: Vec<ParamSlot>,
    centre: Vec<f64>,
}

impl<'a> SpaceObjective<'a> {
    /// Reads θ once.
    pub fn new(space: &'a mut dyn HessianSpace) -> anyhow::Result<SpaceObjective<'a>> {
        let c = space.centre();
        let centre = space.read(c)?;
        anyhow::ensure!(
            centre.len() == space.dim(),
            "the centre has {} values, the space {}",
            centre.len(),
            space.dim()
        );
        Ok(SpaceObjective { layout: space.layout().to_vec(), centre, space })
    }

    /// `None` for θ itself (nothing crosses), else a new vector holding `theta`.
    fn point(&mut self, theta: &[f64]) -> anyhow::Result<Option<Vector>> {
        if theta == self.centre.as_slice() {
            return Ok(None);
        }
        Ok(Some(self.space.new_vector(Init::Values(theta.to_vec()))?))
    }

    fn release(&mut self, v: Option<Vector>) -> anyhow::Result<()> {
        if let Some(v) = v {
            self.space.free(&[v])?;
        }
        Ok(())
    }
}

impl Objective for SpaceObjective<'_> {
    fn layout(&self) -> &[ParamSlot] {
        &self.layout
    }
    fn dim(&self) -> usize {
        self.centre.len()
    }
    fn center(&self) -> &[f64] {
        &self.centre
    }
    fn loss(&mut self, theta: &[f64]) -> anyhow::Result<f64> {
        let at = self.point(theta)?;
        let l = self.space.loss(at);
        self.release(at)?;
        l
    }
    fn loss_grad(&mut self, theta: &[f64], grad: &mut [f64]) -> anyhow::Result<f64> {
        anyhow::ensure!(grad.len() == self.centre.len(), "gradient buffer of the wrong length");
        let at = self.point(theta)?;
        let g = self.space.new_vector(Init::Zeros)?;
        let r = self.space.gradient(at, g).and_then(|l| Ok((l, self.space.read(g)?)));
        self.space.free(&[g])?;
        self.release(at)?;
        let (l, gv) = r?;
        anyhow::ensure!(
            gv.len() == grad.len(),
            "the gradient has {} values, expected {}",
            gv.len(),
            grad.len()
        );
        grad.copy_from_slice(&gv);
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::measures::{asam_sharpness, keskar_sharpness, sam_sharpness};
    use crate::curvature::memory::MemorySpace;
    use crate::curvature::operator::DenseSymmetric;

    fn quadratic() -> DenseSymmetric {
        let n = 6;
        let eigs: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
        let b = (0..n).map(|i| ((i as f64) * 1.3).sin()).collect();
        let theta = (0..n).map(|i| 0.5 * ((i as f64) * 0.7).cos()).collect();
        DenseSymmetric::with_spectrum(&eigs, 1).with_objective(b, theta).unwrap()
    }

    /// The measures give the same numbers through a space (θ read once, points and gradients crossing)
    /// as on the objective itself, and leave no vector behind.
    #[test]
    fn measures_through_a_space_equal_the_direct_ones() {
        let mut direct = quadratic();
        let mut space = MemorySpace::new(quadratic());
        let pairs = [
            (
                keskar_sharpness(&mut direct, 0.05, 10),
                keskar_sharpness(&mut SpaceObjective::new(&mut space).unwrap(), 0.05, 10),
            ),
            (
                sam_sharpness(&mut direct, 0.3, 5),
                sam_sharpness(&mut SpaceObjective::new(&mut space).unwrap(), 0.3, 5),
            ),
            (
                asam_sharpness(&mut direct, 0.5, 0.01, 3),
                asam_sharpness(&mut SpaceObjective::new(&mut space).unwrap(), 0.5, 0.01, 3),
            ),
        ];
        for (a, b) in pairs {
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!(a.value > 0.0);
            assert_eq!(a, b);
        }
        assert_eq!(space.live(), 1);
        assert_eq!(space.applications(), 0, "measures use no HVP");
    }
}
