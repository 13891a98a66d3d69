//! Critical sharpness (Kalra et al. 2026, arXiv 2601.16979): λc = 2/ηc, where ηc is the smallest step
//! size along the optimizer's update direction u at which the loss rises, L(θ − ηc u) > L(θ). Forward
//! passes only (no double backward), so it works where HVPs don't.
//!
//! The line search: one forward pass at θ and one at the learning rate η0; when the slope gᵀu is known
//! (it is, from the gradient that formed u: no forward pass), the parabola through L(θ), the slope and
//! L(θ − η0 u) gives a first estimate 2gᵀu/c of ηc, exact on a quadratic; from there (or from η0) a
//! bracket (up while the loss does not rise, down while it does: by a factor that squares at each step
//! from 1 + `rel_tol` after the estimate, by 2 without one), then bisection in log scale until the bracket [lo, hi] is within `rel_tol`, and ηc read off by
//! linear interpolation of the loss change between lo (no rise) and hi (rise). Every loss evaluation is
//! one forward pass over the evaluation set, counted in the result; the paper reports 5–10.
//!
//! On a quadratic with gradient g, L(θ − ηu) − L(θ) = −η gᵀu + ½η² uᵀHu, so ηc = 2 gᵀu / uᵀHu and
//! λc = uᵀHu / gᵀu: for gradient descent (u = g) the curvature along the gradient, ≤ λmax.

use crate::curvature::space::{HessianSpace, Init, Vector};
use serde::{Deserialize, Serialize};

/// The line search's budget and precision.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineSearchOptions {
    /// Largest number of forward passes (the first, at θ, included).
    pub max_forward: usize,
    /// Stop bisecting once hi/lo ≤ 1 + rel_tol.
    pub rel_tol: f64,
}

impl Default for LineSearchOptions {
    fn default() -> Self {
        LineSearchOptions { max_forward: 12, rel_tol: 0.05 }
    }
}

/// What the line search found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CriticalSharpness {
    /// The critical step size ηc (interpolated in the final bracket) and λc = 2/ηc.
    pub eta_c: f64,
    pub lambda_c: f64,
    /// The bracket: the loss does not rise at `lo`, rises at `hi` (lo = 0 when even the smallest step
    /// tried rises).
    pub lo: f64,
    pub hi: f64,
    /// Whether a bracket within `rel_tol` was found inside the budget.
    pub found: bool,
    /// The loss at θ.
    pub base_loss: f64,
    /// Forward passes (loss evaluations) spent.
    pub forward_passes: usize,
}

/// The line search along −`direction` from the space's centre, starting at step `eta0`, with the slope
/// gᵀu of the loss along the direction when known (see the module docs). `direction` is left as it was.
pub fn critical_sharpness_along(
    space: &mut dyn HessianSpace,
    direction: Vector,
    eta0: f64,
    slope: Option<f64>,
    opts: &LineSearchOptions,
) -> anyhow::Result<CriticalSharpness> {
    anyhow::ensure!(eta0.is_finite() && eta0 > 0.0, "line search: start step {eta0} is not positive");
    anyhow::ensure!(opts.max_forward >= 3, "line search: at least 3 forward passes are needed");
    anyhow::ensure!(opts.rel_tol > 0.0, "line search: rel_tol must be positive");
    let centre = space.centre();
    let point = space.new_vector(Init::Copy(centre))?;
    let r = search(space, centre, point, direction, eta0, slope, opts);
    space.free(&[point])?;
    r
}

/// The loss change L(θ − η u) − L(θ), one forward pass each, counted.
struct Line<'s> {
    space: &'s mut dyn HessianSpace,
    centre: Vector,
    point: Vector,
    u: Vector,
    base: f64,
    passes: usize,
}

impl Line<'_> {
    fn change(&mut self, eta: f64) -> anyhow::Result<f64> {
        self.space.combine(self.point, 0.0, &[(1.0, self.centre), (-eta, self.u)])?;
        self.passes += 1;
        Ok(self.space.loss(Some(self.point))? - self.base)
    }
}

fn search(
    space: &mut dyn HessianSpace,
    centre: Vector,
    point: Vector,
    u: Vector,
    eta0: f64,
    slope: Option<f64>,
    opts: &LineSearchOptions,
) -> anyhow::Result<CriticalSharpness> {
    let base = space.loss(None)?;
    let mut line = Line { space, centre, point, u, base, passes: 1 };
    let budget = opts.max_forward;
    // Bracket: (lo, dlo) no rise, (hi, dhi) rise.
    let mut eta = eta0;
    let mut d0 = line.change(eta)?;
    let mut factor = 2.0;
    let mut widen = false;
    // The parabola L0 − η s + ½cη² through L(η0): c = 2(Δ0 + η0 s)/η0², ηc ≈ 2s/c.
    if let Some(s) = slope.filter(|s| s.is_finite() && *s > 0.0) {
        let c = 2.0 * (d0 + eta0 * s) / (eta0 * eta0);
        let est = 2.0 * s / c;
        if c > 0.0 && est.is_finite() && est > 0.0 && line.passes < budget {
            eta = est;
            d0 = line.change(eta)?;
            factor = 1.0 + opts.rel_tol;
            widen = true;
        }
    }
    let (mut lo, mut dlo, mut hi, mut dhi);
    if d0 > 0.0 {
        (lo, dlo, hi, dhi) = (0.0, 0.0, eta, d0);
        while line.passes < budget {
            eta /= factor;
            if widen {
                factor *= factor;
            }
            let d = line.change(eta)?;
            if d > 0.0 {
                (hi, dhi) = (eta, d);
            } else {
                (lo, dlo) = (eta, d);
                break;
            }
        }
    } else {
        (lo, dlo, hi, dhi) = (eta, d0, f64::INFINITY, f64::NAN);
        while line.passes < budget {
            eta *= factor;
            if widen {
                factor *= factor;
            }
            let d = line.change(eta)?;
            if d > 0.0 {
                (hi, dhi) = (eta, d);
                break;
            }
            (lo, dlo) = (eta, d);
        }
    }
    let bracketed = lo > 0.0 && hi.is_finite();
    if bracketed {
        while hi / lo > 1.0 + opts.rel_tol && line.passes < budget {
            let mid = (lo * hi).sqrt();
            let d = line.change(mid)?;
            if d > 0.0 {
                (hi, dhi) = (mid, d);
            } else {
                (lo, dlo) = (mid, d);
            }
        }
    }
    let found = bracketed && hi / lo <= 1.0 + opts.rel_tol;
    // Linear interpolation of the loss change between lo (no rise) and hi (rise); unbracketed: the
    // step that rose (hi), or the largest tried without a rise (then λc is an upper bound).
    let eta_c = if bracketed && dhi > dlo {
        lo + (hi - lo) * (-dlo) / (dhi - dlo)
    } else if hi.is_finite() {
        hi
    } else {
        lo
    };
    Ok(CriticalSharpness {
        eta_c,
        lambda_c: super::threshold::critical_sharpness(eta_c),
        lo,
        hi,
        found,
        base_loss: base,
        forward_passes: line.passes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::memory::MemorySpace;
    use crate::curvature::operator::DenseSymmetric;

    fn quadratic() -> MemorySpace<DenseSymmetric> {
        let n = 8;
        let eigs: Vec<f64> = (0..n).map(|i| 0.5 + 1.5 * i as f64).collect();
        let b = (0..n).map(|i| ((i as f64) * 1.1).cos()).collect();
        let theta = (0..n).map(|i| 0.3 * ((i as f64) * 0.9).sin()).collect();
        MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 2).with_objective(b, theta).unwrap())
    }

    /// On a quadratic the critical step along the gradient is 2 gᵀg / gᵀHg exactly; the search finds it
    /// within its tolerance from a start below and above, in 5–12 forward passes.
    #[test]
    fn critical_step_on_a_quadratic_is_twice_the_inverse_rayleigh_quotient() {
        for eta0 in [0.01, 10.0] {
            let mut s = quadratic();
            let g = s.new_vector(Init::Zeros).unwrap();
            s.gradient(None, g).unwrap();
            let hg = s.new_vector(Init::Zeros).unwrap();
            s.hvp(g, hg).unwrap();
            let d = s.dots(g, &[g, hg]).unwrap();
            let want = 2.0 * d[0] / d[1];
            let opts = LineSearchOptions { max_forward: 20, rel_tol: 0.01 };
            let c = critical_sharpness_along(&mut s, g, eta0, None, &opts).unwrap();
            assert!(c.found, "{c:?}");
            // With the slope gᵀg the parabola's estimate is exact on a quadratic: a few passes.
            let fast = critical_sharpness_along(&mut s, g, eta0, Some(d[0]), &opts).unwrap();
            assert!(fast.found && (fast.eta_c - want).abs() < 0.01 * want, "{fast:?} vs {want}");
            assert!(fast.forward_passes <= 5, "{} passes with the slope", fast.forward_passes);
            assert!(c.lo <= want && want <= c.hi, "{want} outside [{}, {}]", c.lo, c.hi);
            // The loss change is a parabola through 0: interpolation in a 1 % bracket is within 1 %.
            assert!((c.eta_c - want).abs() < 0.01 * want, "{} vs {want}", c.eta_c);
            assert!((c.lambda_c - 2.0 / c.eta_c).abs() < 1e-12);
            assert!((5..=20).contains(&c.forward_passes), "{} passes", c.forward_passes);
            s.free(&[g, hg]).unwrap();
            assert_eq!(s.live(), 1);
        }
    }

    /// An ascent direction rises at every step: no bracket, reported as not found.
    #[test]
    fn ascent_direction_is_not_found() {
        let mut s = quadratic();
        let g = s.new_vector(Init::Zeros).unwrap();
        s.gradient(None, g).unwrap();
        s.combine(g, -1.0, &[]).unwrap();
        let c = critical_sharpness_along(&mut s, g, 1.0, None, &LineSearchOptions::default()).unwrap();
        assert!(!c.found && c.lo == 0.0, "{c:?}");
        assert_eq!(c.forward_passes, LineSearchOptions::default().max_forward);
    }
}
