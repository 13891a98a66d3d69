//! The stability thresholds of PyTorch's optimizers on a quadratic (docs/stability.md derives each).
//!
//! A quadratic L = ½ λ x² along one eigendirection; the update's linear recurrence is stable while its
//! companion matrix has spectral radius < 1 (the Jury conditions). With h = ηλ:
//!
//! - gradient descent x' = x − η g: |1 − h| < 1 ⇔ λ < 2/η ([`gd_threshold`]);
//! - PyTorch's heavy ball b' = μ b + (1 − τ) g, x' = x − η b': eigenvalues of [[1 − h', −μ], [h', μ]]
//!   with h' = (1 − τ) h, trace 1 + μ − h', determinant μ; 1 + tr + det > 0 ⇔ λ < (2 + 2μ)/((1 − τ)η)
//!   ([`heavy_ball_threshold`]);
//! - PyTorch's Nesterov (τ = 0): b' = μ b + g, x' = x − η (g + μ b'): with y = η b, the matrix
//!   [[1 − (1 + μ)h, −μ²], [h, μ]], trace 1 + μ − (1 + μ)h, determinant μ(1 − h);
//!   1 − tr + det = h > 0, 1 + tr + det = 2 + 2μ − (1 + 2μ)h > 0 ⇔ λ < (2 + 2μ)/((1 + 2μ)η), and
//!   |det| < 1 holds there ([`nesterov_threshold`]);
//! - Adam/AdamW with the preconditioner P frozen: m' = β1 m + (1 − β1) g, x' = x − η P⁻¹ m', which is the
//!   heavy ball with μ = β1, τ = β1 along each eigendirection of P⁻¹H: λ1(P⁻¹H) < (2 + 2β1)/((1 − β1)η),
//!   38/η at β1 = 0.9 (Cohen et al. 2022; [`adam_preconditioned_threshold`]).
//!
//! Weight decay is left out (it adds its coefficient to every curvature: negligible against 2/η in
//! practice; docs/stability.md).

use serde::{Deserialize, Serialize};

/// Gradient descent with step η: λmax(H) < 2/η (Cohen et al. 2021).
pub fn gd_threshold(lr: f64) -> f64 {
    2.0 / lr
}

/// PyTorch's SGD with momentum μ and dampening τ (heavy ball): λmax(H) < (2 + 2μ)/((1 − τ)η).
pub fn heavy_ball_threshold(lr: f64, momentum: f64, dampening: f64) -> f64 {
    (2.0 + 2.0 * momentum) / ((1.0 - dampening) * lr)
}

/// PyTorch's SGD with `nesterov=True` (dampening 0): λmax(H) < (2 + 2μ)/((1 + 2μ)η).
pub fn nesterov_threshold(lr: f64, momentum: f64) -> f64 {
    (2.0 + 2.0 * momentum) / ((1.0 + 2.0 * momentum) * lr)
}

/// Adam/AdamW with EMA momentum β1: the preconditioned sharpness λ1(P⁻¹H) < (2 + 2β1)/((1 − β1)η).
pub fn adam_preconditioned_threshold(lr: f64, beta1: f64) -> f64 {
    (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)
}

/// Critical sharpness from the critical step size: λc = 2/ηc (Kalra et al. 2026).
pub fn critical_sharpness(eta_c: f64) -> f64 {
    2.0 / eta_c
}

/// Measured / threshold: 1.0 is at the edge of stability.
pub fn stability_ratio(measured: f64, threshold: f64) -> f64 {
    measured / threshold
}

/// The optimizer's update rule, as far as its threshold depends on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UpdateRule {
    /// `torch.optim.SGD`: plain (momentum 0), heavy ball, or Nesterov.
    Sgd { momentum: f64, dampening: f64, nesterov: bool },
    /// `torch.optim.Adam` / `AdamW` (the same threshold; AdamW's decoupled decay is left out).
    Adam { beta1: f64, beta2: f64, eps: f64, step: u64, amsgrad: bool },
}

/// Which curvature a threshold bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Against {
    /// λmax(H).
    Hessian,
    /// λ1(P⁻¹H) = λmax(P^{-1/2} H P^{-1/2}).
    Preconditioned,
}

/// A threshold, what it bounds, and the formula and paper it comes from (printed beside the ratio).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub value: f64,
    pub against: Against,
    pub formula: String,
    pub source: String,
}

impl UpdateRule {
    /// Rejects hyperparameters outside the optimizer's own domain, naming the value.
    pub fn validate(&self) -> anyhow::Result<()> {
        match *self {
            UpdateRule::Sgd { momentum, dampening, nesterov } => {
                anyhow::ensure!((0.0..1.0).contains(&momentum), "momentum must be in [0, 1), not {momentum}");
                anyhow::ensure!(
                    (0.0..1.0).contains(&dampening),
                    "dampening must be in [0, 1), not {dampening}"
                );
                anyhow::ensure!(
                    !nesterov || (momentum > 0.0 && dampening == 0.0),
                    "Nesterov momentum needs momentum > 0 and dampening 0 (as torch.optim.SGD requires)"
                );
            }
            UpdateRule::Adam { beta1, beta2, eps, .. } => {
                anyhow::ensure!((0.0..1.0).contains(&beta1), "beta1 must be in [0, 1), not {beta1}");
                anyhow::ensure!((0.0..1.0).contains(&beta2), "beta2 must be in [0, 1), not {beta2}");
                anyhow::ensure!(eps >= 0.0 && eps.is_finite(), "eps must be ≥ 0, not {eps}");
            }
        }
        Ok(())
    }

    /// Whether the threshold bounds the preconditioned sharpness (adaptive optimizers).
    pub fn adaptive(&self) -> bool {
        matches!(self, UpdateRule::Adam { .. })
    }

    /// The threshold at learning rate `lr` (1.0 when η is folded into the preconditioner: then it is
    /// dimensionless).
    pub fn threshold(&self, lr: f64) -> anyhow::Result<Threshold> {
        self.validate()?;
        anyhow::ensure!(lr.is_finite() && lr > 0.0, "the learning rate must be positive, not {lr}");
        let t = |value: f64, against, formula: &str, source: &str| Threshold {
            value,
            against,
            formula: formula.to_string(),
            source: source.to_string(),
        };
        Ok(match *self {
            UpdateRule::Sgd { momentum: 0.0, .. } => t(
                gd_threshold(lr),
                Against::Hessian,
                "2/η",
                "gradient descent on a quadratic (Cohen et al. 2021)",
            ),
            UpdateRule::Sgd { momentum, nesterov: true, .. } => t(
                nesterov_threshold(lr, momentum),
                Against::Hessian,
                "(2+2μ)/((1+2μ)η)",
                "PyTorch SGD, nesterov=True, on a quadratic (docs/stability.md)",
            ),
            UpdateRule::Sgd { momentum, dampening, .. } => t(
                heavy_ball_threshold(lr, momentum, dampening),
                Against::Hessian,
                "(2+2μ)/((1−τ)η)",
                "PyTorch SGD heavy ball on a quadratic (Cohen et al. 2021, App.)",
            ),
            UpdateRule::Adam { beta1, .. } => t(
                adam_preconditioned_threshold(lr, beta1),
                Against::Preconditioned,
                "(2+2β1)/((1−β1)η)",
                "Adam with frozen preconditioner (Cohen et al. 2022)",
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x after `n` steps of PyTorch's SGD algorithm (torch/optim/sgd.py: the first step's buffer is the
    /// gradient itself, later ones μb + (1−τ)g; Nesterov steps along g + μb) on L = ½λx² from x = 1.
    fn torch_sgd(lambda: f64, lr: f64, mu: f64, tau: f64, nesterov: bool, n: usize) -> f64 {
        let (mut x, mut b) = (1.0f64, None::<f64>);
        for _ in 0..n {
            let g = lambda * x;
            let buf = match b {
                None => g,
                Some(b) => mu * b + (1.0 - tau) * g,
            };
            b = Some(buf);
            let d = if nesterov { g + mu * buf } else { buf };
            x -= lr * d;
        }
        x
    }

    /// Just below each threshold the iterates shrink, just above they grow: the thresholds are the
    /// boundary of the update's own dynamics (tests/stability_thresholds.rs runs torch.optim itself).
    #[test]
    fn thresholds_separate_convergence_from_divergence() {
        for &(lr, mu, tau, nesterov) in &[
            (0.1, 0.0, 0.0, false),
            (0.05, 0.9, 0.0, false),
            (0.02, 0.5, 0.3, false),
            (0.1, 0.9, 0.0, true),
            (0.3, 0.5, 0.0, true),
            // Adam's frozen-preconditioner dynamics are the heavy ball with τ = μ = β1.
            (0.01, 0.9, 0.9, false),
        ] {
            let rule = UpdateRule::Sgd { momentum: mu, dampening: tau, nesterov };
            let thr = if tau == mu && mu > 0.0 {
                adam_preconditioned_threshold(lr, mu)
            } else {
                rule.threshold(lr).unwrap().value
            };
            let below = torch_sgd(thr * 0.98, lr, mu, tau, nesterov, 5000).abs();
            let above = torch_sgd(thr * 1.02, lr, mu, tau, nesterov, 5000).abs(); // inf or NaN: diverged
            assert!(below < 1e-3, "{lr} {mu} {tau} {nesterov}: below {thr}: |x| = {below}");
            assert!(above.is_nan() || above > 1e3, "{lr} {mu} {tau} {nesterov}: above {thr}: |x| = {above}");
        }
        assert!((adam_preconditioned_threshold(1.0, 0.9) - 38.0).abs() < 1e-12);
        assert!((nesterov_threshold(1.0, 0.9) - 3.8 / 2.8).abs() < 1e-15);
    }

    #[test]
    fn threshold_names_what_it_bounds_and_refuses_what_torch_refuses() {
        let adam = UpdateRule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 10, amsgrad: false };
        let t = adam.threshold(1e-3).unwrap();
        assert_eq!(t.against, Against::Preconditioned);
        assert!((t.value - 38_000.0).abs() < 1e-9);
        let sgd = UpdateRule::Sgd { momentum: 0.0, dampening: 0.0, nesterov: false };
        assert_eq!(sgd.threshold(0.5).unwrap().value, 4.0);
        let bad = UpdateRule::Sgd { momentum: 0.9, dampening: 0.1, nesterov: true };
        assert!(bad.threshold(0.1).unwrap_err().to_string().contains("Nesterov"));
        assert!(sgd.threshold(0.0).unwrap_err().to_string().contains("learning rate"));
    }
}
