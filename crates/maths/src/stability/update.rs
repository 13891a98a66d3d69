//! The optimizer's real next update at a checkpoint: PyTorch's own step rule applied to the state the
//! checkpoint carries and one gradient, per parameter tensor, as a direction u with θ_next = θ − η u
//! (η outside u; the caller folds per-group rates in). Written after `torch/optim/sgd.py` and
//! `adam.py` (`_single_tensor_sgd`, `_single_tensor_adam`):
//!
//! - SGD: d = ±g + λ_wd θ; with momentum μ: b' = d at the first step (no state), else μ b + (1 − τ) d;
//!   u = d + μ b' (Nesterov) or b'; without momentum u = d;
//! - Adam: g' = ±g + λ_wd θ (L2, Adam only); m' = β1 m + (1 − β1) g', v' = β2 v + (1 − β2) g'²,
//!   t' = t + 1, v̂ = max(v_max, v') with amsgrad; u = m' / ((1 − β1^t') (√v̂ / √(1 − β2^t') + ε)),
//!   plus λ_wd θ for AdamW (decoupled: θ ← θ(1 − ηλ_wd) first), ε outside the root.
//!
//! A parameter without state (never stepped) starts from zeros, as PyTorch does.

/// SGD's hyperparameters (one param group).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdHyper {
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub maximize: bool,
}

/// Adam/AdamW's hyperparameters (one param group).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW's decoupled weight decay (else Adam's L2 term added to the gradient).
    pub decoupled: bool,
    pub amsgrad: bool,
    pub maximize: bool,
    /// Whether m and v are bias-corrected (PyTorch: always; DeepSpeed's FusedAdam / DeepSpeedCPUAdam
    /// with `bias_correction` off take both corrections as 1).
    pub bias_correction: bool,
}

/// One tensor's Adam state (`None`: absent, zeros as at PyTorch's first step).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdamState<'a> {
    pub exp_avg: Option<&'a [f64]>,
    pub exp_avg_sq: Option<&'a [f64]>,
    pub max_exp_avg_sq: Option<&'a [f64]>,
    /// Steps taken (`state["step"]`); the update is step t + 1.
    pub step: f64,
}

fn check_len(what: &str, v: Option<&[f64]>, n: usize) -> anyhow::Result<()> {
    if let Some(v) = v {
        anyhow::ensure!(v.len() == n, "{what}: {} values for a tensor of {n}", v.len());
    }
    Ok(())
}

/// The gradient as the optimizer uses it: ±g (maximize) plus the L2 term `wd θ`.
fn decayed(g: f64, theta: f64, wd: f64, maximize: bool) -> f64 {
    let g = if maximize { -g } else { g };
    if wd != 0.0 { g + wd * theta } else { g }
}

/// SGD's next direction u for one tensor (θ_next = θ − η u) into `out`; `theta` is read only when
/// `weight_decay` ≠ 0, `buf` is the `momentum_buffer` (`None`: first step).
pub fn sgd_direction(
    h: &SgdHyper,
    g: &[f64],
    theta: &[f64],
    buf: Option<&[f64]>,
    out: &mut [f64],
) -> anyhow::Result<()> {
    let n = g.len();
    anyhow::ensure!(out.len() == n, "sgd: {} outputs for {n} gradients", out.len());
    anyhow::ensure!(h.weight_decay == 0.0 || theta.len() == n, "sgd: {} parameters for {n}", theta.len());
    check_len("momentum_buffer", buf, n)?;
    for i in 0..n {
        let d = decayed(g[i], theta.get(i).copied().unwrap_or(0.0), h.weight_decay, h.maximize);
        out[i] = if h.momentum == 0.0 {
            d
        } else {
            let b = match buf {
                Some(b) => h.momentum * b[i] + (1.0 - h.dampening) * d,
                None => d,
            };
            if h.nesterov { d + h.momentum * b } else { b }
        };
    }
    Ok(())
}

/// Adam's (AdamW's) next direction u for one tensor (θ_next = θ − η u) into `out`.
pub fn adam_direction(
    h: &AdamHyper,
    g: &[f64],
    theta: &[f64],
    s: &AdamState<'_>,
    out: &mut [f64],
) -> anyhow::Result<()> {
    let n = g.len();
    anyhow::ensure!(out.len() == n, "adam: {} outputs for {n} gradients", out.len());
    anyhow::ensure!(h.weight_decay == 0.0 || theta.len() == n, "adam: {} parameters for {n}", theta.len());
    check_len("exp_avg", s.exp_avg, n)?;
    check_len("exp_avg_sq", s.exp_avg_sq, n)?;
    check_len("max_exp_avg_sq", s.max_exp_avg_sq, n)?;
    anyhow::ensure!(s.step.is_finite() && s.step >= 0.0, "adam: step {} is not a count", s.step);
    let t = s.step + 1.0;
    let (bc1, bc2_sqrt) =
        if h.bias_correction { (1.0 - h.beta1.powf(t), (1.0 - h.beta2.powf(t)).sqrt()) } else { (1.0, 1.0) };
    let l2 = if h.decoupled { 0.0 } else { h.weight_decay };
    for i in 0..n {
        let th = theta.get(i).copied().unwrap_or(0.0);
        let gi = decayed(g[i], th, l2, h.maximize);
        let m = h.beta1 * s.exp_avg.map_or(0.0, |m| m[i]) + (1.0 - h.beta1) * gi;
        let mut v = h.beta2 * s.exp_avg_sq.map_or(0.0, |v| v[i]) + (1.0 - h.beta2) * gi * gi;
        if h.amsgrad {
            v = v.max(s.max_exp_avg_sq.map_or(0.0, |v| v[i]));
        }
        let denom = v.sqrt() / bc2_sqrt + h.eps;
        let mut u = m / (bc1 * denom);
        if h.decoupled && h.weight_decay != 0.0 {
            u += h.weight_decay * th;
        }
        out[i] = u;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Adam steps written out by hand from PyTorch's formulas: the state after the first step fed to
    /// `adam_direction` gives the second step's update.
    #[test]
    fn adam_second_step_matches_the_formula() {
        let (b1, b2, eps, lr, wd): (f64, f64, f64, f64, f64) = (0.9, 0.999, 1e-8, 0.1, 0.01);
        let (theta0, g1, g2) = (1.5f64, 0.3f64, -0.2f64);
        // AdamW step 1 from zeros.
        let m1 = (1.0 - b1) * g1;
        let v1 = (1.0 - b2) * g1 * g1;
        let theta1 =
            theta0 * (1.0 - lr * wd) - lr * (m1 / (1.0 - b1)) / (v1.sqrt() / (1.0 - b2).sqrt() + eps);
        // Step 2.
        let m2 = b1 * m1 + (1.0 - b1) * g2;
        let v2 = b2 * v1 + (1.0 - b2) * g2 * g2;
        let theta2 = theta1 * (1.0 - lr * wd)
            - lr * (m2 / (1.0 - b1 * b1)) / (v2.sqrt() / (1.0 - b2 * b2).sqrt() + eps);
        let h = AdamHyper {
            beta1: b1,
            beta2: b2,
            eps,
            weight_decay: wd,
            decoupled: true,
            amsgrad: false,
            maximize: false,
            bias_correction: true,
        };
        let st = AdamState { exp_avg: Some(&[m1]), exp_avg_sq: Some(&[v1]), max_exp_avg_sq: None, step: 1.0 };
        let mut u = [0.0];
        adam_direction(&h, &[g2], &[theta1], &st, &mut u).unwrap();
        assert!((theta1 - lr * u[0] - theta2).abs() < 1e-15, "{} vs {theta2}", theta1 - lr * u[0]);
        // From no state at all: PyTorch's first step.
        adam_direction(&h, &[g1], &[theta0], &AdamState::default(), &mut u).unwrap();
        assert!((theta0 - lr * u[0] - theta1).abs() < 1e-15);
    }

    #[test]
    fn sgd_momentum_nesterov_and_decay() {
        let h =
            SgdHyper { momentum: 0.9, dampening: 0.1, nesterov: false, weight_decay: 0.5, maximize: false };
        let mut u = [0.0];
        sgd_direction(&h, &[2.0], &[1.0], Some(&[4.0]), &mut u).unwrap();
        // d = 2 + 0.5 = 2.5; b' = 0.9·4 + 0.9·2.5 = 5.85.
        assert!((u[0] - 5.85).abs() < 1e-12);
        let n = SgdHyper { dampening: 0.0, nesterov: true, ..h };
        sgd_direction(&n, &[2.0], &[1.0], Some(&[4.0]), &mut u).unwrap();
        // b' = 3.6 + 2.5 = 6.1; u = 2.5 + 0.9·6.1.
        assert!((u[0] - (2.5 + 0.9 * 6.1)).abs() < 1e-12);
        sgd_direction(&n, &[2.0], &[1.0], None, &mut u).unwrap();
        assert!((u[0] - (2.5 + 0.9 * 2.5)).abs() < 1e-12, "first step: b = d");
        assert!(sgd_direction(&h, &[1.0, 2.0], &[1.0, 2.0], Some(&[1.0]), &mut [0.0; 2]).is_err());
    }
}
