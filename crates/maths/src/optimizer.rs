//! Optimizer-state telemetry, streamed chunk by chunk (no I/O): for Adam-family states the effective
//! step size η/(√v̂+ε) (its distribution: quantiles from a log-scale histogram, exact harmonic mean,
//! min, max) and the RMS of the implied update m̂/(√v̂+ε), with v̂ = v/(1−β2^t), m̂ = m/(1−β1^t),
//! exactly as PyTorch's Adam computes its update (`v` is `max_exp_avg_sq` with amsgrad); for SGD
//! with momentum the momentum buffer's norm.
//!
//! Quantiles use `inverted_cdf` (NumPy's name): the smallest value whose rank reaches ⌈q·n⌉, reported
//! as the geometric centre of its histogram bin (the float's exponent and top [`MANTISSA_BITS`]
//! mantissa bits), within 0.049 % relative of the exact order statistic, clamped to the exact min and max.

use serde::{Deserialize, Serialize};

/// The quantiles reported, in order.
pub const QUANTILES: [f64; 5] = [0.01, 0.1, 0.5, 0.9, 0.99];

/// Histogram resolution: the top mantissa bits kept, so a bin spans at most a factor of 1 + 2^-10
/// and its geometric centre is within 0.049 % of any value in it. Bins are indexed by the float's own
/// bits (exponent and top mantissa bits): no logarithm per element.
pub const MANTISSA_BITS: u32 = 10;
/// The binades covered: 2^MIN_EXP .. 2^MAX_EXP (values outside go to the end bins; min and max stay
/// exact).
const MIN_EXP: i32 = -128;
const MAX_EXP: i32 = 96;
const NBINS: usize = ((MAX_EXP - MIN_EXP) as usize) << MANTISSA_BITS;

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
/// Merge per-tensor accumulators into a group's or a checkpoint's with [`AdamFigures::merge`]
/// (sums in merge order: merge in a fixed order for identical figures whatever the threads).
#[derive(Clone, Debug)]
pub struct AdamFigures {
    n: u64,
    sum_inv: f64,
    sum_upd2: f64,
    min: f64,
    max: f64,
    zeros: u64,
    /// Counts of bins `lo .. lo + bins.len()` (only the range touched is held).
    lo: usize,
    bins: Vec<u64>,
}

impl Default for AdamFigures {
    fn default() -> Self {
        AdamFigures {
            n: 0,
            sum_inv: 0.0,
            sum_upd2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            zeros: 0,
            lo: 0,
            bins: Vec::new(),
        }
    }
}

/// The bin of a positive finite x: its binade and top mantissa bits, from its bits.
fn bin_of(x: f64) -> usize {
    let key = (x.to_bits() >> (52 - MANTISSA_BITS)) as i64; // exponent (biased) and top mantissa bits
    let base = ((1023 + MIN_EXP) as i64) << MANTISSA_BITS;
    (key - base).clamp(0, NBINS as i64 - 1) as usize
}

/// The lower edge of bin `b`.
fn edge_of(b: usize) -> f64 {
    f64::from_bits(
        (((1023 + MIN_EXP) as u64) << MANTISSA_BITS).wrapping_add(b as u64) << (52 - MANTISSA_BITS),
    )
}

/// The geometric centre of bin `b`: within 2^-11 (0.049 %) relative of every value in it.
fn centre_of(b: usize) -> f64 {
    (edge_of(b) * edge_of(b + 1)).sqrt()
}

impl AdamFigures {
    /// Makes bins `from .. to` part of the held range.
    fn cover(&mut self, from: usize, to: usize) {
        if self.bins.is_empty() {
            self.lo = from;
            self.bins.resize(to - from, 0);
            return;
        }
        if from < self.lo {
            self.bins.splice(0..0, std::iter::repeat_n(0, self.lo - from));
            self.lo = from;
        }
        if to > self.lo + self.bins.len() {
            self.bins.resize(to - self.lo, 0);
        }
    }

    /// One chunk of `exp_avg` (m) and `exp_avg_sq` (v, or `max_exp_avg_sq` with amsgrad), aligned.
    pub fn push(&mut self, c: &AdamConsts, m: impl Iterator<Item = f64>, v: impl Iterator<Item = f64>) {
        let bc1 = 1.0 - c.beta1.powf(c.step);
        let bc2 = 1.0 - c.beta2.powf(c.step);
        let inv_sqrt_bc2 = 1.0 / bc2.sqrt();
        let (inv_bc1, inv_lr) = (1.0 / bc1, 1.0 / c.lr);
        let (mut sum_inv, mut sum_upd2, mut min, mut max) = (0.0, 0.0, self.min, self.max);
        for (m, v) in m.zip(v) {
            // PyTorch: denom = (√v / √bc2) + ε; update = (η / bc1) · m / denom.
            let denom = v.sqrt() * inv_sqrt_bc2 + c.eps;
            let r = 1.0 / denom;
            let eff = c.lr * r;
            let upd = m * inv_bc1 * r;
            self.n += 1;
            sum_inv += denom * inv_lr;
            sum_upd2 += upd * upd;
            min = eff.min(min);
            max = eff.max(max);
            if eff > 0.0 && eff.is_finite() {
                let b = bin_of(eff);
                if b < self.lo || b >= self.lo + self.bins.len() {
                    self.cover(b, b + 1);
                }
                self.bins[b - self.lo] += 1;
            } else {
                self.zeros += 1;
            }
        }
        self.sum_inv += sum_inv;
        self.sum_upd2 += sum_upd2;
        self.min = min;
        self.max = max;
    }

    /// [`AdamFigures::push`] over f32 slices (compiled here, at this crate's optimization level).
    #[inline(never)]
    pub fn push_f32(&mut self, c: &AdamConsts, m: &[f32], v: &[f32]) {
        self.push(c, m.iter().map(|&x| x as f64), v.iter().map(|&x| x as f64));
    }

    /// [`AdamFigures::push`] over f64 slices.
    #[inline(never)]
    pub fn push_f64(&mut self, c: &AdamConsts, m: &[f64], v: &[f64]) {
        self.push(c, m.iter().copied(), v.iter().copied());
    }

    pub fn merge(&mut self, o: &AdamFigures) {
        self.n += o.n;
        self.sum_inv += o.sum_inv;
        self.sum_upd2 += o.sum_upd2;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.zeros += o.zeros;
        if !o.bins.is_empty() {
            self.cover(o.lo, o.lo + o.bins.len());
            let off = o.lo - self.lo;
            for (a, b) in self.bins[off..off + o.bins.len()].iter_mut().zip(&o.bins) {
                *a += b;
            }
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
                return centre_of(self.lo + i).clamp(self.min, self.max);
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
        assert!((s.quantiles[2] / eff[1] - 1.0).abs() < 5e-4);
        // Bins: every value lies within 0.049 % of its bin's centre, including a binade's edges.
        for x in [1e-30, 3.7e-9, 0.001, 1.0, 0.99999999, 123.456, 300000.0, 5e20] {
            assert!((centre_of(bin_of(x)) / x - 1.0).abs() < 4.9e-4, "{x}");
        }
    }
}
