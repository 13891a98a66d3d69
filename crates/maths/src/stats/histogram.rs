//! Weight histograms: equal-width buckets over [min, max], as torch.histc and TensorBoard v2 make them.

use serde::{Deserialize, Serialize};

/// TensorBoard's v2 default bucket count.
pub const DEFAULT_BINS: usize = 30;

/// Counts of `counts.len()` equal-width buckets over [lo, hi]. Bucket i covers
/// [lo + i·w, lo + (i+1)·w) with w = (hi − lo) / bins; the last one includes hi.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// The histc range for data with extremes `min`, `max`: [min, max], widened to [x − 1, x + 1] for a
    /// constant tensor (torch.histc's rule). None when there is no finite value.
    pub(crate) fn range_for(min: f64, max: f64) -> Option<(f64, f64)> {
        if !(min.is_finite() && max.is_finite()) {
            return None;
        }
        if min == max { Some((min - 1.0, max + 1.0)) } else { Some((min, max)) }
    }

    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    pub fn width(&self) -> f64 {
        if self.counts.is_empty() { 0.0 } else { (self.hi - self.lo) / self.counts.len() as f64 }
    }

    /// The bucket edges: bins + 1 values from lo to hi (torch.linspace(lo, hi, bins + 1)).
    pub fn edges(&self) -> Vec<f64> {
        let n = self.counts.len();
        (0..=n).map(|i| if i == n { self.hi } else { self.lo + self.width() * i as f64 }).collect()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::kernels::bucket;

    #[test]
    fn bucket_matches_histc_rule() {
        // torch.histc(torch.tensor([0., 1., 2., 3.]), bins=3, min=0, max=3) == [1, 1, 2]
        let mut c = [0u64; 3];
        for v in [0.0, 1.0, 2.0, 3.0] {
            c[bucket(v, 0.0, 3.0, 3).unwrap()] += 1;
        }
        assert_eq!(c, [1, 1, 2]);
        assert_eq!(bucket(3.5, 0.0, 3.0, 3), None);
        assert_eq!(bucket(f64::NAN, 0.0, 3.0, 3), None);
    }

    #[test]
    fn constant_range_is_widened() {
        assert_eq!(Histogram::range_for(2.0, 2.0), Some((1.0, 3.0)));
        assert_eq!(Histogram::range_for(f64::INFINITY, f64::NEG_INFINITY), None);
        let h = Histogram { lo: 0.0, hi: 3.0, counts: vec![1, 1, 2] };
        assert_eq!(h.edges(), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(h.total(), 4);
    }
}
