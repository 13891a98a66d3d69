//! Per-tensor statistics: numel, L2 norm, mean, unbiased std, min, max, max |x|, fraction of exact
//! zeros, NaN/Inf counts and a histogram, in two passes over the tensor in memory.

use super::histogram::Histogram;
use super::kernels::{self, Element, Pass1, Pass2};
use crate::checkpoint::Values;
use serde::{Deserialize, Serialize};

/// Statistics of one float tensor. Moments are over its finite elements (see the module docs); fields
/// that have no value (e.g. the mean of a tensor with no finite element, std of one element) are NaN.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TensorStats {
    pub numel: u64,
    /// ‖x‖₂ over finite elements.
    pub l2: f64,
    pub mean: f64,
    /// Unbiased sample standard deviation (divisor n − 1), torch.std's default.
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub max_abs: f64,
    /// Exact zeros / numel.
    pub zero_frac: f64,
    pub nan_count: u64,
    pub inf_count: u64,
    pub histogram: Histogram,
}

impl TensorStats {
    /// Σ x² over finite elements (the tensor's share of the global squared norm).
    pub fn sum_sq(&self) -> f64 {
        self.l2 * self.l2
    }
}

/// Statistics of `values` with a `bins`-bucket histogram.
pub fn tensor_stats(values: &Values, bins: usize) -> TensorStats {
    match values {
        Values::F32(v) => stats_of(v, bins),
        Values::F64(v) => stats_of(v, bins),
    }
}

/// Statistics of a plain slice (f32 or f64).
pub fn stats_of<T: Element>(xs: &[T], bins: usize) -> TensorStats {
    let numel = xs.len() as u64;
    let mut p1 = Pass1 {
        finite: 0,
        zeros: 0,
        nan: 0,
        inf: 0,
        sum: Default::default(),
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };
    for part in kernels::par_parts(xs, kernels::pass1) {
        p1.merge(&part);
    }
    let n = p1.finite;
    let nan = f64::NAN;
    if n == 0 {
        return TensorStats {
            numel,
            l2: 0.0,
            mean: nan,
            std: nan,
            min: nan,
            max: nan,
            max_abs: nan,
            zero_frac: 0.0,
            nan_count: p1.nan,
            inf_count: p1.inf,
            histogram: Histogram { lo: nan, hi: nan, counts: vec![0; bins] },
        };
    }
    let mean = p1.sum.value() / n as f64;
    let (lo, hi) = Histogram::range_for(p1.min, p1.max).unwrap_or((p1.min, p1.max));
    let mut p2: Option<Pass2> = None;
    for part in kernels::par_parts(xs, |x| kernels::pass2(x, mean, lo, hi, bins)) {
        match &mut p2 {
            None => p2 = Some(part),
            Some(acc) => acc.merge(&part),
        }
    }
    let p2 = p2.unwrap_or(Pass2 {
        dev_sq: Default::default(),
        dev: Default::default(),
        sq: Default::default(),
        counts: vec![0; bins],
    });
    // Corrected two-pass variance: Σd² − (Σd)²/n removes the rounding error left in the mean.
    let dev = p2.dev.value();
    let m2 = (p2.dev_sq.value() - dev * dev / n as f64).max(0.0);
    let std = if n >= 2 { (m2 / (n - 1) as f64).sqrt() } else { nan };
    let max_abs = p1.min.abs().max(p1.max.abs());
    let l2 = l2_norm(xs, p2.sq.value(), max_abs);
    TensorStats {
        numel,
        l2,
        mean,
        std,
        min: p1.min,
        max: p1.max,
        max_abs,
        zero_frac: p1.zeros as f64 / numel as f64,
        nan_count: p1.nan,
        inf_count: p1.inf,
        histogram: Histogram { lo, hi, counts: p2.counts },
    }
}

/// ‖x‖₂ from Σx²; when that over- or underflowed (f64 tensors with huge or tiny values), recomputed
/// scaled by max |x| like LAPACK's dnrm2.
fn l2_norm<T: Element>(xs: &[T], sum_sq: f64, max_abs: f64) -> f64 {
    if max_abs == 0.0 {
        return 0.0;
    }
    if sum_sq.is_finite() && sum_sq > 1e-290 {
        return sum_sq.sqrt();
    }
    let inv = 1.0 / max_abs;
    let mut s = kernels::CompensatedSum::default();
    for x in xs {
        let v = x.to_f64();
        if v.is_finite() {
            let y = v * inv;
            s.add(y * y);
        }
    }
    s.value().sqrt() * max_abs
}

/// ‖a − b‖² between two tensors of the same length (None when lengths differ).
pub fn squared_distance(a: &Values, b: &Values) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    Some(match (a, b) {
        (Values::F32(x), Values::F32(y)) => kernels::par_sq_diff(x, y),
        (Values::F32(x), Values::F64(y)) => kernels::par_sq_diff(x, y),
        (Values::F64(x), Values::F32(y)) => kernels::par_sq_diff(x, y),
        (Values::F64(x), Values::F64(y)) => kernels::par_sq_diff(x, y),
    })
}

/// ‖a[start..start + b.len()] − b‖²: a chunk of a tensor against the same chunk of another, given as f64
/// (None when the chunk runs past the end of `a`).
pub fn squared_distance_chunk(a: &Values, start: usize, b: &[f64]) -> Option<f64> {
    let end = start.checked_add(b.len())?;
    match a {
        Values::F32(x) => x.get(start..end).map(|x| kernels::par_sq_diff(x, b)),
        Values::F64(x) => x.get(start..end).map(|x| kernels::par_sq_diff(x, b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(xs: &[f64]) -> (f64, f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        (xs.iter().map(|x| x * x).sum::<f64>().sqrt(), mean, var.sqrt())
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1e-300)
    }

    #[test]
    fn small_tensor_by_hand() {
        let s = stats_of(&[0.0f32, 1.0, 2.0, 3.0], 3);
        assert_eq!(s.numel, 4);
        assert_eq!(s.mean, 1.5);
        assert!(rel(s.std, (5.0f64 / 3.0).sqrt()) < 1e-15);
        assert!(rel(s.l2, 14.0f64.sqrt()) < 1e-15);
        assert_eq!((s.min, s.max, s.max_abs), (0.0, 3.0, 3.0));
        assert_eq!(s.zero_frac, 0.25);
        assert_eq!(s.histogram.counts, vec![1, 1, 2]);
    }

    #[test]
    fn large_tensor_matches_naive_and_splits_over_threads() {
        // Deterministic pseudo-random values with an offset (a hard case for one-pass variance).
        let mut x = 12345u64;
        let xs: Vec<f32> = (0..3_000_001)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                1000.0 + ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            })
            .collect();
        let wide: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
        let s = stats_of(&xs, 30);
        let (l2, mean, std) = naive(&wide);
        assert!(rel(s.l2, l2) < 1e-12, "{} {}", s.l2, l2);
        assert!(rel(s.mean, mean) < 1e-12);
        assert!(rel(s.std, std) < 1e-9, "{} {}", s.std, std);
        assert_eq!(s.histogram.total(), xs.len() as u64);
        let f64s = stats_of(&wide, 30);
        assert_eq!(f64s.histogram.counts, s.histogram.counts);
    }

    #[test]
    fn non_finite_values_are_counted_not_mixed_in() {
        let s = stats_of(&[1.0f32, f32::NAN, f32::INFINITY, -1.0, f32::NEG_INFINITY, 0.0], 2);
        assert_eq!((s.nan_count, s.inf_count, s.numel), (1, 2, 6));
        assert_eq!(s.mean, 0.0);
        assert_eq!((s.min, s.max), (-1.0, 1.0));
        assert!(rel(s.l2, 2f64.sqrt()) < 1e-15);
        assert_eq!(s.histogram.counts, vec![1, 2]);
        let none = stats_of(&[f32::NAN], 30);
        assert!(none.mean.is_nan() && none.l2 == 0.0);
    }

    #[test]
    fn extreme_f64_values_do_not_overflow_the_norm() {
        let s = stats_of(&[1e200f64, -1e200, 1e200], 30);
        assert!(rel(s.l2, 3f64.sqrt() * 1e200) < 1e-14, "{}", s.l2);
        let t = stats_of(&[1e-200f64, 1e-200], 30);
        assert!(rel(t.l2, 2f64.sqrt() * 1e-200) < 1e-14, "{}", t.l2);
    }

    #[test]
    fn constant_and_single_element() {
        let s = stats_of(&[2.0f32; 5], 4);
        assert_eq!(s.std, 0.0);
        assert_eq!((s.histogram.lo, s.histogram.hi), (1.0, 3.0));
        assert_eq!(s.histogram.counts, vec![0, 0, 5, 0]);
        assert!(stats_of(&[2.0f32], 4).std.is_nan());
    }

    #[test]
    fn distance_between_tensors() {
        let a = Values::F32(vec![1.0, 2.0, 3.0]);
        let b = Values::F64(vec![1.0, 0.0, 7.0]);
        assert_eq!(squared_distance(&a, &b), Some(20.0));
        assert_eq!(squared_distance(&a, &Values::F32(vec![1.0])), None);
        assert_eq!(squared_distance_chunk(&a, 1, &[0.0, 7.0]), Some(20.0));
        assert_eq!(squared_distance_chunk(&a, 2, &[0.0, 7.0]), None);
    }
}
