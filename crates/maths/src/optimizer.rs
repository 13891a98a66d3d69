//! Optimizer-state telemetry, streamed chunk by chunk (no I/O): for Adam-family states the effective
//! step size η/(√v̂+ε) (its distribution: quantiles from a log-scale histogram, exact harmonic mean,
//! min, max) and the RMS of the implied update m̂/(√v̂+ε), with v̂ = v/(1−β2^t), m̂ = m/(1−β1^t),
//! exactly as PyTorch's Adam computes its update (`v` is `max_exp_avg_sq` with amsgrad); for SGD
//! with momentum the momentum buffer's norm.
//!
//! Quantiles use `inverted_cdf` (NumPy's name): the smallest value whose rank reaches ⌈q·n⌉, reported
//! as the geometric centre of its histogram bin (the float's exponent and top [`MANTISSA_BITS`]
//! mantissa bits), within 0.049 % relative of the exact order statistic, clamped to the exact min and max.
//!
//! f32 state (the usual case, and bf16/f16 widened to f32) goes through one vectorized pass
//! ([`AdamFigures::push_f32`]): each element's terms in f32 lanes, as PyTorch computes an f32 Adam
//! step, summed in f64 lanes; the bin from the f32's bits; min and max of the f32 step sizes. f64
//! state keeps the f64 path ([`AdamFigures::push`]). Both count into the same bins and merge.

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
    /// Whether the moments are bias-corrected (PyTorch: always; DeepSpeed's FusedAdam / CPUAdam:
    /// `bias_correction`, whose kernels take 1 − β^t as 1 when it is off).
    pub bias_correction: bool,
}

impl AdamConsts {
    /// (1 − β1^t, 1 − β2^t), or (1, 1) without bias correction.
    fn corrections(&self) -> (f64, f64) {
        if self.bias_correction {
            (1.0 - self.beta1.powf(self.step), 1.0 - self.beta2.powf(self.step))
        } else {
            (1.0, 1.0)
        }
    }
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

/// f32 lanes of the f32 kernel ([`AdamFigures::push_f32`]) and the elements of one block.
const LANES: usize = 8;
const BLOCK: usize = 256;
/// An f32's bits shifted right by this keep its exponent and top [`MANTISSA_BITS`] mantissa bits.
const F32_SHIFT: u32 = 23 - MANTISSA_BITS;

/// The histogram bin (as [`bin_of`] numbers them) of a positive f32 from its key (its bits shifted by
/// [`F32_SHIFT`]): the same bin [`bin_of`] gives the value widened to f64, since the f64 exponent is
/// the f32's plus 1023 − 127 (f32 subnormals, below 2^-126, go to bin 0 as below 2^MIN_EXP). None for
/// zero, infinities, NaN and negative values.
#[inline]
fn f32_bin(key: u32) -> Option<usize> {
    const INF_KEY: u32 = 0x7f80_0000 >> F32_SHIFT;
    if key == 0 || key >= INF_KEY {
        return None;
    }
    if key < (1 << MANTISSA_BITS) {
        return Some(0);
    }
    let b = key as i64 + (((1023 - 127) - (1023 + MIN_EXP)) as i64) * (1 << MANTISSA_BITS);
    Some(b.clamp(0, NBINS as i64 - 1) as usize)
}

/// [`AdamConsts`] as the f32 kernel uses them.
struct F32Consts {
    /// 1/√(1−β2^t).
    inv_sqrt_bc2: f32,
    eps: f32,
    lr: f32,
    /// 1/(1−β1^t).
    inv_bc1: f32,
}

impl F32Consts {
    fn of(c: &AdamConsts) -> F32Consts {
        let (bc1, bc2) = c.corrections();
        F32Consts {
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            eps: c.eps as f32,
            lr: c.lr as f32,
            inv_bc1: (1.0 / bc1) as f32,
        }
    }

    /// PyTorch's denom = √v/√(1−β2^t) + ε, the effective step size η/denom and the update over η,
    /// m/(1−β1^t)/denom, in f32.
    #[inline(always)]
    fn terms(&self, m: f32, v: f32) -> (f32, f32, f32) {
        let d = v.sqrt() * self.inv_sqrt_bc2 + self.eps;
        let r = 1.0 / d;
        (d, self.lr * r, m * self.inv_bc1 * r)
    }
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
        let (bc1, bc2) = c.corrections();
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

    /// [`AdamFigures::push`] over f32 slices, in f32 lanes the compiler vectorizes (as PyTorch's own
    /// update of f32 state is computed: `denom`, `1/denom`, the effective step size and the update
    /// element by element in f32), summed into f64 lanes: the sums then differ from the f64 path's by
    /// the f32 rounding of each element's terms (≤ 2^-23 relative each, far inside the 1e-6 stated in
    /// docs/tolerances.md); the histogram bin of the effective step size comes from the f32's own bits
    /// (the same bins as the f64 path, [`f32_bin`]), so no logarithm and no branch per element in the
    /// arithmetic, then one counting loop per block.
    #[inline(never)]
    pub fn push_f32(&mut self, c: &AdamConsts, m: &[f32], v: &[f32]) {
        let n = m.len().min(v.len());
        let k = F32Consts::of(c);
        let mut keys = [[0u32; LANES]; BLOCK / LANES];
        let (mut min, mut max) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
        let (mut sum_d, mut sum_u2) = ([0f64; LANES], [0f64; LANES]);
        for (mb, vb) in m[..n].chunks(BLOCK).zip(v[..n].chunks(BLOCK)) {
            let (mc, mrest) = mb.as_chunks::<LANES>();
            let (vc, vrest) = vb.as_chunks::<LANES>();
            for (j, (m8, v8)) in mc.iter().zip(vc).enumerate() {
                let out = &mut keys[j];
                for l in 0..LANES {
                    let (d, eff, u) = k.terms(m8[l], v8[l]);
                    sum_d[l] += d as f64;
                    sum_u2[l] += (u * u) as f64;
                    min[l] = min[l].min(eff);
                    max[l] = max[l].max(eff);
                    out[l] = eff.to_bits() >> F32_SHIFT;
                }
            }
            let done = mc.len() * LANES;
            for (i, (&mi, &vi)) in mrest.iter().zip(vrest).enumerate() {
                let (d, eff, u) = k.terms(mi, vi);
                sum_d[0] += d as f64;
                sum_u2[0] += (u * u) as f64;
                min[0] = min[0].min(eff);
                max[0] = max[0].max(eff);
                keys.as_flattened_mut()[done + i] = eff.to_bits() >> F32_SHIFT;
            }
            self.count_keys(&keys.as_flattened()[..mb.len()]);
        }
        self.n += n as u64;
        self.sum_inv += sum_d.iter().sum::<f64>() / c.lr;
        self.sum_upd2 += sum_u2.iter().sum::<f64>();
        for l in 0..LANES {
            self.min = self.min.min(min[l] as f64);
            self.max = self.max.max(max[l] as f64);
        }
    }

    /// Counts a block's f32 keys (see [`f32_bin`]) into the histogram; zero, infinite, NaN and
    /// negative step sizes into `zeros`, as the f64 path does.
    fn count_keys(&mut self, keys: &[u32]) {
        for &key in keys {
            let Some(b) = f32_bin(key) else {
                self.zeros += 1;
                continue;
            };
            let i = b.wrapping_sub(self.lo);
            if i < self.bins.len() {
                self.bins[i] += 1;
            } else {
                self.cover(b, b + 1);
                self.bins[b - self.lo] += 1;
            }
        }
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
        let c = AdamConsts { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, step: 2.0, bias_correction: true };
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

    /// The f32 kernel against the f64 path and against the exact order statistics (`inverted_cdf`:
    /// the sorted value at rank ⌈q·n⌉) of the same f32 inputs, over a spread of nine binades plus a
    /// zero v, with lengths that leave partial lanes and blocks; an infinite v (a zero step size).
    #[test]
    fn the_f32_kernel_matches_the_f64_path_and_exact_quantiles() {
        let c =
            AdamConsts { lr: 3e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 17.0, bias_correction: true };
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = 100_003;
        let m: Vec<f32> = (0..n).map(|_| (next() - 0.5) as f32 * 1e-3).collect();
        let mut v: Vec<f32> = (0..n).map(|_| (1e-12 * 10f64.powf(9.0 * next())) as f32).collect();
        v[17] = 0.0;
        let (mut fast, mut slow) = (AdamFigures::default(), AdamFigures::default());
        for (mc, vc) in m.chunks(4099).zip(v.chunks(4099)) {
            fast.push_f32(&c, mc, vc);
        }
        slow.push(&c, m.iter().map(|&x| x as f64), v.iter().map(|&x| x as f64));
        let (f, s) = (fast.figures(), slow.figures());
        assert_eq!(f.n, n as u64);
        let (fs, ss) = (f.step_size.unwrap(), s.step_size.unwrap());
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        assert!(rel(fs.harmonic_mean, ss.harmonic_mean) < 1e-6, "{} {}", fs.harmonic_mean, ss.harmonic_mean);
        assert!(rel(f.update_rms.unwrap(), s.update_rms.unwrap()) < 1e-6);
        assert!(rel(fs.max, ss.max) < 1e-6 && rel(fs.min, ss.min) < 1e-6);
        let mut eff: Vec<f64> =
            v.iter().map(|&v| c.lr / ((v as f64 / (1.0 - c.beta2.powf(c.step))).sqrt() + c.eps)).collect();
        eff.sort_by(f64::total_cmp);
        for (i, &q) in QUANTILES.iter().enumerate() {
            let exact = eff[((q * n as f64).ceil() as usize).max(1) - 1];
            assert!(rel(fs.quantiles[i], exact) < 5e-4, "q{q}: {} vs exact {exact}", fs.quantiles[i]);
        }
        // An infinite v: a zero step size, counted below every bin by both paths.
        let (mut fast, mut slow) = (AdamFigures::default(), AdamFigures::default());
        fast.push_f32(&c, &[0.1, 0.1], &[f32::INFINITY, 1e-6]);
        slow.push(&c, [0.1, 0.1].into_iter(), [f64::INFINITY, 1e-6].into_iter());
        let (f, s) = (fast.figures().step_size.unwrap(), slow.figures().step_size.unwrap());
        assert_eq!((f.min, f.quantiles[0]), (0.0, 0.0));
        assert_eq!((s.min, s.quantiles[0]), (0.0, 0.0));
        assert!(rel(f.max, s.max) < 1e-6);
    }
}
