//! Optimizer-state telemetry, streamed chunk by chunk (no I/O): for Adam-family states the effective
//! step size η/(√v̂+ε) (its distribution: quantiles from a log-scale histogram, exact harmonic mean,
//! min, max) and the RMS of the implied update m̂/(√v̂+ε), with v̂ = v/(1−β2^t), m̂ = m/(1−β1^t),
//! exactly as PyTorch's Adam computes its update (`v` is `max_exp_avg_sq` with amsgrad); for SGD
//! with momentum the momentum buffer's norm.
//!
//! Quantiles use `inverted_cdf` (NumPy's name): the smallest value whose rank reaches ⌈q·n⌉, reported
//! as the geometric centre of its histogram bin (bins of 1/[`BINS_PER_DECADE`] decade, so within
//! 0.12 % relative of the exact order statistic), clamped to the exact min and max.

use serde::{Deserialize, Serialize};

/// The quantiles reported, in order.
pub const QUANTILES: [f64; 5] = [0.01, 0.1, 0.5, 0.9, 0.99];

/// Histogram resolution: bins per decade of the effective step size.
pub const BINS_PER_DECADE: f64 = 1000.0;
/// The decades covered: 10^LOW_DECADE .. 10^HIGH_DECADE (values outside are put in the end bins;
/// min and max stay exact).
const LOW_DECADE: f64 = -30.0;
const HIGH_DECADE: f64 = 20.0;

/// The figures of one tensor, one group or a whole checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Figures {
    /// Elements counted.
    pub n: u64,
    /// Adam: the effective step size's distribution.
    pub step_size: Option<StepSize>,
    /// Adam: RMS of m̂/(√v̂+ε) (the update divided by η).
    pub update_rms: Option<f64>,
    /// SGD with momentum: ‖momentum_buffer‖₂.
    pub momentum_norm: Option<f64>,
}

/// The distribution of η/(√v̂+ε) over elements.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepSize {
    pub harmonic_mean: f64,
    /// At [`QUANTILES`].
    pub quantiles: Vec<f64>,
    pub min: f64,
    pub max: f64,
}

/// PyTorch's Adam constants for one parameter: η, β1, β2, ε and the step t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConsts {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step: f64,
}

/// Streams Adam figures: [`AdamFigures::push`] chunks of (m, v), then [`AdamFigures::figures`].
/// Merge per-tensor accumulators into a group's or a checkpoint's with [`AdamFigures::merge`].
#[derive(Clone, Debug)]
pub struct AdamFigures {
    n: u64,
    sum_inv: f64,
    sum_upd2: f64,
    min: f64,
    max: f64,
    zeros: u64,
    bins: Vec<u64>,
}

impl Default for AdamFigures {
    fn default() -> Self {
        let nb = ((HIGH_DECADE - LOW_DECADE) * BINS_PER_DECADE) as usize;
        AdamFigures {
            n: 0,
            sum_inv: 0.0,
            sum_upd2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            zeros: 0,
            bins: vec![0; nb],
        }
    }
}

fn bin_of(x: f64, nb: usize) -> usize {
    let b = ((x.log10() - LOW_DECADE) * BINS_PER_DECADE).floor();
    if b.is_nan() || b < 0.0 { 0 } else { (b as usize).min(nb - 1) }
}

impl AdamFigures {
    /// One chunk of `exp_avg` (m) and `exp_avg_sq` (v, or `max_exp_avg_sq` with amsgrad), aligned.
    pub fn push(&mut self, c: &AdamConsts, m: impl Iterator<Item = f64>, v: impl Iterator<Item = f64>) {
        let bc1 = 1.0 - c.beta1.powf(c.step);
        let bc2 = 1.0 - c.beta2.powf(c.step);
        let sqrt_bc2 = bc2.sqrt();
        let nb = self.bins.len();
        for (m, v) in m.zip(v) {
            // PyTorch: denom = (√v / √bc2) + ε; update = (η / bc1) · m / denom.
            let denom = v.sqrt() / sqrt_bc2 + c.eps;
            let eff = c.lr / denom;
            let upd = (m / bc1) / denom;
            self.n += 1;
            self.sum_inv += denom / c.lr;
            self.sum_upd2 += upd * upd;
            self.min = self.min.min(eff);
            self.max = self.max.max(eff);
            if eff > 0.0 {
                self.bins[bin_of(eff, nb)] += 1;
            } else {
                self.zeros += 1;
            }
        }
    }

    pub fn merge(&mut self, o: &AdamFigures) {
        self.n += o.n;
        self.sum_inv += o.sum_inv;
        self.sum_upd2 += o.sum_upd2;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.zeros += o.zeros;
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            *a += b;
        }
    }

    /// The q-quantile (`inverted_cdf`) from the histogram.
    fn quantile(&self, q: f64) -> f64 {
        let rank = ((q * self.n as f64).ceil() as u64).max(1);
        if rank <= self.zeros {
            return 0.0;
        }
        let mut seen = self.zeros;
        for (i, &c) in self.bins.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let centre = 10f64.powf(LOW_DECADE + (i as f64 + 0.5) / BINS_PER_DECADE);
                return centre.clamp(self.min, self.max);
            }
        }
        self.max
    }

    pub fn figures(&self) -> Figures {
        if self.n == 0 {
            return Figures::default();
        }
        let step_size = StepSize {
            harmonic_mean: self.n as f64 / self.sum_inv,
            quantiles: QUANTILES.iter().map(|&q| self.quantile(q)).collect(),
            min: self.min,
            max: self.max,
        };
        Figures {
            n: self.n,
            step_size: Some(step_size),
            update_rms: Some((self.sum_upd2 / self.n as f64).sqrt()),
            momentum_norm: None,
        }
    }
}

/// Streams a momentum buffer's squared norm.
#[derive(Clone, Debug, Default)]
pub struct MomentumFigures {
    n: u64,
    sum_sq: f64,
}

impl MomentumFigures {
    pub fn push(&mut self, buf: impl Iterator<Item = f64>) {
        for x in buf {
            self.n += 1;
            self.sum_sq += x * x;
        }
    }

    pub fn merge(&mut self, o: &MomentumFigures) {
        self.n += o.n;
        self.sum_sq += o.sum_sq;
    }

    pub fn figures(&self) -> Figures {
        Figures { n: self.n, momentum_norm: Some(self.sum_sq.sqrt()), ..Figures::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_figures_of_a_handful_by_hand() {
        let c = AdamConsts { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, step: 2.0 };
        let m = [0.5, -0.2, 0.0];
        let v = [0.04, 0.01, 0.0];
        let mut a = AdamFigures::default();
        a.push(&c, m.iter().copied(), v.iter().copied());
        let (bc1, bc2) = (1.0 - 0.81, 1.0 - 0.99f64.powi(2));
        let eff: Vec<f64> = v.iter().map(|v: &f64| 0.1 / ((v / bc2).sqrt() + 1e-8)).collect();
        let f = a.figures();
        let s = f.step_size.unwrap();
        let hm = 3.0 / eff.iter().map(|e| 1.0 / e).sum::<f64>();
        assert!((s.harmonic_mean - hm).abs() < 1e-12 * hm);
        assert!((s.max / eff[2] - 1.0).abs() < 1e-12 && (s.min / eff[0] - 1.0).abs() < 1e-12);
        let upd: Vec<f64> = m.iter().zip(&v).map(|(m, v)| (m / bc1) / ((v / bc2).sqrt() + 1e-8)).collect();
        let rms = (upd.iter().map(|u| u * u).sum::<f64>() / 3.0).sqrt();
        assert!((f.update_rms.unwrap() - rms).abs() < 1e-12 * rms);
        // The median is the second smallest (rank ⌈1.5⌉ = 2): eff[1], within half a bin.
        assert!((s.quantiles[2] / eff[1] - 1.0).abs() < 1.2e-3);
    }
}
