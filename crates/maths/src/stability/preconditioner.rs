//! Adam's diagonal preconditioner at a checkpoint, as PyTorch's own update applies it.
//!
//! `torch.optim.Adam` steps θ ← θ − η · m / ((1 − β1^t) · (√(v / (1 − β2^t)) + ε)) with m = `exp_avg`,
//! v = `exp_avg_sq` (`max_exp_avg_sq` with amsgrad) and t = `step`: θ ← θ − η P⁻¹ m with
//!
//!   P = (1 − β1^t) · (√(v / (1 − β2^t)) + ε),
//!
//! ε outside the root and η outside P (Cohen et al. 2022's convention; init2winit omits (1 − β1^t), the
//! central-flows code folds η into P). When parameter groups have different learning rates, η is folded
//! in per parameter (P/η) and the threshold becomes dimensionless. Lanczos runs on the symmetric
//! D H D with D = P^{-1/2} (same spectrum as P⁻¹H).

/// Adam's hyperparameters the preconditioner needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamMoments {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Optimizer steps taken (PyTorch's `state["step"]`), at least 1.
    pub step: u64,
    /// Whether the moments are bias-corrected (PyTorch's Adam: always). DeepSpeed's FusedAdam and
    /// DeepSpeedCPUAdam with `bias_correction` off take both corrections as 1: P = √v + ε.
    pub bias_correction: bool,
}

impl AdamMoments {
    /// 1 − β1^t (1 without bias correction).
    pub fn bias_correction1(&self) -> f64 {
        if self.bias_correction { 1.0 - self.beta1.powf(self.step as f64) } else { 1.0 }
    }
    /// 1 − β2^t (1 without bias correction).
    pub fn bias_correction2(&self) -> f64 {
        if self.bias_correction { 1.0 - self.beta2.powf(self.step as f64) } else { 1.0 }
    }

    /// P for one second moment v: (1 − β1^t)(√(v/(1 − β2^t)) + ε).
    pub fn preconditioner(&self, v: f64) -> f64 {
        self.bias_correction1() * ((v / self.bias_correction2()).sqrt() + self.eps)
    }

    /// The scaling D = (P/η_fold)^{-1/2} for each v in `v` into `out` (η_fold = 1: η outside P); a
    /// negative, NaN or infinite v, or a P of 0 (v = 0 and ε = 0), is an error naming its index.
    pub fn inverse_sqrt_scaling(&self, v: &[f64], lr_fold: f64, out: &mut [f64]) -> anyhow::Result<()> {
        anyhow::ensure!(v.len() == out.len(), "scaling: {} values into {}", v.len(), out.len());
        anyhow::ensure!(self.step >= 1, "Adam's step count is 0 (no update taken yet: P is undefined)");
        anyhow::ensure!(lr_fold.is_finite() && lr_fold > 0.0, "learning rate {lr_fold} is not positive");
        for (i, (&x, o)) in v.iter().zip(out.iter_mut()).enumerate() {
            anyhow::ensure!(
                x.is_finite() && x >= 0.0,
                "second moment {x} at index {i} (exp_avg_sq must be finite and ≥ 0)"
            );
            let p = self.preconditioner(x) / lr_fold;
            anyhow::ensure!(p > 0.0, "preconditioner 0 at index {i} (v = 0 with eps = 0)");
            *o = 1.0 / p.sqrt();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P equals the denominator PyTorch's Adam divides by (bias_correction1 folded in), written out.
    #[test]
    fn preconditioner_is_pytorchs_denominator() {
        let a = AdamMoments { beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 3, bias_correction: true };
        let v: f64 = 2.5e-4;
        let torch_denom = v.sqrt() / (1.0f64 - 0.999f64.powi(3)).sqrt() + 1e-8;
        let want = (1.0 - 0.9f64.powi(3)) * torch_denom;
        assert!((a.preconditioner(v) - want).abs() < 1e-15 * want);
        let mut d = [0.0; 2];
        a.inverse_sqrt_scaling(&[v, 0.0], 1.0, &mut d).unwrap();
        assert!((d[0] - 1.0 / want.sqrt()).abs() < 1e-12 * d[0]);
        // v = 0: P = (1 − β1^t) ε.
        assert!((d[1] - 1.0 / ((1.0 - 0.729) * 1e-8f64).sqrt()).abs() < 1e-6 * d[1]);
        // η folded: D scales by √η.
        let mut f = [0.0; 1];
        a.inverse_sqrt_scaling(&[v], 0.01, &mut f).unwrap();
        assert!((f[0] - d[0] * 0.1).abs() < 1e-12 * f[0]);
        assert!(a.inverse_sqrt_scaling(&[-1.0], 1.0, &mut f).unwrap_err().to_string().contains("index 0"));
        let zero = AdamMoments { eps: 0.0, ..a };
        assert!(zero.inverse_sqrt_scaling(&[0.0], 1.0, &mut f).is_err());
    }
}
