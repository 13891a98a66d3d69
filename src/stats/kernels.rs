//! The inner loops behind the statistics: blocked, lane-parallel f64 accumulation over a slice of f32 or
//! f64 values, split across threads for big tensors. Results are merged with Neumaier compensation.

/// An element type the statistics read: widened exactly to f64.
pub trait Element: Copy + Send + Sync {
    fn to_f64(self) -> f64;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

/// Independent accumulators per block: lets the compiler keep 8 additions in flight (and vectorize).
pub const LANES: usize = 8;
/// Elements per block; block sums are then added with compensation.
pub const BLOCK: usize = 4096;
/// Below this many elements a tensor is processed on the calling thread.
const PAR_MIN: usize = 1 << 20;

/// A Neumaier (improved Kahan) compensated sum.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompensatedSum {
    sum: f64,
    comp: f64,
}

impl CompensatedSum {
    #[inline]
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub fn merge(&mut self, other: CompensatedSum) {
        self.add(other.sum);
        self.add(other.comp);
    }

    pub fn value(&self) -> f64 {
        self.sum + self.comp
    }
}

/// How many threads to split `len` elements over.
fn threads_for(len: usize) -> usize {
    if len < PAR_MIN {
        return 1;
    }
    let avail = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    avail.min(len / (PAR_MIN / 2)).clamp(1, 16)
}

/// Runs `f` over contiguous parts of `xs` (split on block boundaries), in parallel for big slices, and
/// returns the parts' results in order.
pub fn par_parts<T: Sync, R: Send>(xs: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let n = threads_for(xs.len());
    if n <= 1 {
        return vec![f(xs)];
    }
    let per = xs.len().div_ceil(n).div_ceil(BLOCK) * BLOCK;
    std::thread::scope(|s| {
        let handles: Vec<_> = xs.chunks(per).map(|part| s.spawn(|| f(part))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// First pass: count, sum, extremes, zeros, NaN and Inf.
#[derive(Clone, Copy, Debug)]
pub struct Pass1 {
    pub finite: u64,
    pub zeros: u64,
    pub nan: u64,
    pub inf: u64,
    pub sum: CompensatedSum,
    pub min: f64,
    pub max: f64,
}

impl Pass1 {
    fn new() -> Pass1 {
        Pass1 {
            finite: 0,
            zeros: 0,
            nan: 0,
            inf: 0,
            sum: CompensatedSum::default(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    pub fn merge(&mut self, o: &Pass1) {
        self.finite += o.finite;
        self.zeros += o.zeros;
        self.nan += o.nan;
        self.inf += o.inf;
        self.sum.merge(o.sum);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

pub fn pass1<T: Element>(xs: &[T]) -> Pass1 {
    let mut acc = Pass1::new();
    for block in xs.chunks(BLOCK) {
        let (s, mn, mx, z) = pass1_fast(block);
        if s.is_finite() {
            // No NaN or Inf in this block (either would make the sum non-finite).
            acc.finite += block.len() as u64;
            acc.zeros += z;
            acc.sum.add(s);
            acc.min = acc.min.min(mn);
            acc.max = acc.max.max(mx);
        } else {
            pass1_careful(block, &mut acc);
        }
    }
    acc
}

#[inline]
fn pass1_fast<T: Element>(b: &[T]) -> (f64, f64, f64, u64) {
    let mut s = [0.0f64; LANES];
    let mut mn = [f64::INFINITY; LANES];
    let mut mx = [f64::NEG_INFINITY; LANES];
    let mut z = [0u64; LANES];
    let chunks = b.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            let v = c[j].to_f64();
            s[j] += v;
            mn[j] = if v < mn[j] { v } else { mn[j] };
            mx[j] = if v > mx[j] { v } else { mx[j] };
            z[j] += (v == 0.0) as u64;
        }
    }
    for x in rem {
        let v = x.to_f64();
        s[0] += v;
        mn[0] = mn[0].min(v);
        mx[0] = mx[0].max(v);
        z[0] += (v == 0.0) as u64;
    }
    let sum: f64 = s.iter().sum();
    let min = mn.iter().copied().fold(f64::INFINITY, f64::min);
    let max = mx.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (sum, min, max, z.iter().sum())
}

fn pass1_careful<T: Element>(b: &[T], acc: &mut Pass1) {
    let mut s = 0.0;
    for x in b {
        let v = x.to_f64();
        if v.is_nan() {
            acc.nan += 1;
        } else if v.is_infinite() {
            acc.inf += 1;
        } else {
            acc.finite += 1;
            acc.zeros += (v == 0.0) as u64;
            s += v;
            acc.min = acc.min.min(v);
            acc.max = acc.max.max(v);
        }
    }
    acc.sum.add(s);
}

/// Second pass: squared deviations from the mean (with their plain sum, for the corrected two-pass
/// formula), the sum of squares, and histogram counts.
#[derive(Clone, Debug)]
pub struct Pass2 {
    pub dev_sq: CompensatedSum,
    pub dev: CompensatedSum,
    pub sq: CompensatedSum,
    pub counts: Vec<u64>,
}

impl Pass2 {
    pub fn merge(&mut self, o: &Pass2) {
        self.dev_sq.merge(o.dev_sq);
        self.dev.merge(o.dev);
        self.sq.merge(o.sq);
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
    }
}

/// The histogram bucket of `v` for `bins` buckets over [lo, hi], exactly as torch.histc computes it
/// (`(v - lo) * bins / (hi - lo)`, truncated; `hi` itself goes to the last bucket); None outside.
#[cfg(test)]
pub fn bucket(v: f64, lo: f64, hi: f64, bins: usize) -> Option<usize> {
    if !(v >= lo && v <= hi) {
        return None;
    }
    let pos = ((v - lo) * bins as f64 / (hi - lo)) as usize;
    Some(if pos >= bins { bins - 1 } else { pos })
}

/// Interleaved sub-histograms per bucket in [`pass2`].
const SUB: usize = 4;

/// Adds a block's values to the interleaved sub-histograms `sub` (bucket i, lane j at `i * SUB + j`).
/// The bucket is torch.histc's `trunc((v − lo) · bins / (hi − lo))`; the division is replaced by a
/// multiplication with the reciprocal, which can differ from it by a few ulps, so values whose quotient
/// lies within 1e-9 of a bucket boundary take the exact division.
#[inline]
fn histogram_block<T: Element>(block: &[T], lo: f64, hi: f64, bins: usize, sub: &mut [u64]) {
    const W: usize = 256;
    const SKIP: u32 = u32::MAX;
    const EXACT: u32 = u32::MAX - 1;
    let nb = bins as f64;
    let range = hi - lo;
    let inv = 1.0 / range;
    let last = (bins - 1) as u32;
    let mut pos = [0u32; W];
    for chunk in block.chunks(W) {
        // Branch-free bucket numbers (vectorizable), marking values outside [lo, hi] (or NaN) and values
        // too close to a bucket edge for the reciprocal.
        for (p, x) in pos.iter_mut().zip(chunk) {
            let v = x.to_f64();
            let q = (v - lo) * nb * inv;
            let k = q as u32;
            let f = q - k as f64;
            let inside = v >= lo && v <= hi;
            let clear = f > 1e-9 && f < 1.0 - 1e-9;
            *p = if !inside {
                SKIP
            } else if clear {
                k.min(last)
            } else {
                EXACT
            };
        }
        for (i, (&p, x)) in pos.iter().zip(chunk).enumerate() {
            let j = i % SUB;
            if p <= last {
                sub[p as usize * SUB + j] += 1;
            } else if p == EXACT {
                let v = x.to_f64();
                let k = ((v - lo) * nb / range) as usize;
                sub[k.min(bins - 1) * SUB + j] += 1;
            }
        }
    }
}

pub fn pass2<T: Element>(xs: &[T], mean: f64, lo: f64, hi: f64, bins: usize) -> Pass2 {
    let mut acc = Pass2 {
        dev_sq: CompensatedSum::default(),
        dev: CompensatedSum::default(),
        sq: CompensatedSum::default(),
        counts: vec![0; bins],
    };
    let hist = bins > 0 && lo < hi;
    // SUB interleaved sub-histograms: consecutive elements usually land in the same bucket, and one
    // counter would make every increment wait for the previous one.
    let mut sub = vec![0u64; if hist { bins * SUB } else { 0 }];
    for block in xs.chunks(BLOCK) {
        let mut ds = [0.0f64; LANES];
        let mut d1 = [0.0f64; LANES];
        let mut sq = [0.0f64; LANES];
        let chunks = block.chunks_exact(LANES);
        let rem = chunks.remainder();
        for c in chunks {
            for j in 0..LANES {
                let v = c[j].to_f64();
                let d = v - mean;
                ds[j] += d * d;
                d1[j] += d;
                sq[j] += v * v;
            }
        }
        for x in rem {
            let v = x.to_f64();
            let d = v - mean;
            ds[0] += d * d;
            d1[0] += d;
            sq[0] += v * v;
        }
        let (s_ds, s_d1, s_sq): (f64, f64, f64) = (ds.iter().sum(), d1.iter().sum(), sq.iter().sum());
        if s_ds.is_finite() && s_sq.is_finite() {
            acc.dev_sq.add(s_ds);
            acc.dev.add(s_d1);
            acc.sq.add(s_sq);
        } else {
            // Non-finite elements in this block: skip them.
            let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
            for x in block {
                let v = x.to_f64();
                if v.is_finite() {
                    let d = v - mean;
                    a += d * d;
                    b += d;
                    c += v * v;
                }
            }
            acc.dev_sq.add(a);
            acc.dev.add(b);
            acc.sq.add(c);
        }
        if hist {
            histogram_block(block, lo, hi, bins, &mut sub);
        }
    }
    if hist {
        for (i, c) in acc.counts.iter_mut().enumerate() {
            *c = sub[i * SUB..(i + 1) * SUB].iter().sum();
        }
    }
    acc
}

/// Σ (a_i − b_i)² in f64. A NaN or Inf on either side makes the result non-finite, as in torch.
/// Lengths must match (checked by the caller).
pub fn sq_diff<A: Element, B: Element>(a: &[A], b: &[B]) -> f64 {
    let mut total = CompensatedSum::default();
    for (ba, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut s = [0.0f64; LANES];
        let ca = ba.chunks_exact(LANES);
        let cb = bb.chunks_exact(LANES);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for j in 0..LANES {
                let d = x[j].to_f64() - y[j].to_f64();
                s[j] += d * d;
            }
        }
        for (x, y) in ra.iter().zip(rb) {
            let d = x.to_f64() - y.to_f64();
            s[0] += d * d;
        }
        total.add(s.iter().sum());
    }
    total.value()
}

/// [`sq_diff`] split over threads for big tensors.
pub fn par_sq_diff<A: Element, B: Element>(a: &[A], b: &[B]) -> f64 {
    let n = threads_for(a.len());
    if n <= 1 {
        return sq_diff(a, b);
    }
    let per = a.len().div_ceil(n).div_ceil(BLOCK) * BLOCK;
    let parts: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> =
            a.chunks(per).zip(b.chunks(per)).map(|(x, y)| s.spawn(move || sq_diff(x, y))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut total = CompensatedSum::default();
    for p in parts {
        total.add(p);
    }
    total.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_histogram_equals_exact_histc_rule() {
        let (lo, hi, bins) = (-0.37f64, 1.91f64, 30usize);
        let mut xs: Vec<f64> = Vec::new();
        let mut x = 99u64;
        for _ in 0..200_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            xs.push(lo + (hi - lo) * ((x >> 11) as f64 / (1u64 << 53) as f64));
        }
        // Values on and next to the bucket edges, where rounding decides the bucket.
        for i in 0..=bins {
            let e = lo + (hi - lo) * i as f64 / bins as f64;
            xs.extend([e, e.next_up(), e.next_down(), lo + i as f64 * ((hi - lo) / bins as f64)]);
        }
        xs.retain(|v| *v >= lo && *v <= hi);
        let mut want = vec![0u64; bins];
        for &v in &xs {
            want[bucket(v, lo, hi, bins).unwrap()] += 1;
        }
        let got = pass2(&xs, 0.0, lo, hi, bins).counts;
        assert_eq!(got, want);
        let xs32: Vec<f32> =
            xs.iter().map(|&v| v as f32).filter(|v| (*v as f64) >= lo && (*v as f64) <= hi).collect();
        let mut want32 = vec![0u64; bins];
        for &v in &xs32 {
            want32[bucket(v as f64, lo, hi, bins).unwrap()] += 1;
        }
        assert_eq!(pass2(&xs32, 0.0, lo, hi, bins).counts, want32);
    }
}
