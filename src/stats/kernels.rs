//! The inner loops behind the statistics: blocked, lane-parallel f64 accumulation over one block of
//! [`BLOCK`] f32 or f64 values. A tensor is cut into blocks at fixed element offsets (multiples of
//! `BLOCK`), whatever chunks it is read in, and the block results are added in block order with
//! Neumaier compensation: the same tensor gives bit-identical sums however it is chunked or threaded.

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

    pub fn value(&self) -> f64 {
        self.sum + self.comp
    }
}

/// One block's first pass: the sum of its finite elements, extremes, zeros, NaN and Inf.
#[derive(Clone, Copy, Debug)]
pub struct Block1 {
    pub sum: f64,
    pub finite: u64,
    pub zeros: u64,
    pub nan: u64,
    pub inf: u64,
    pub min: f64,
    pub max: f64,
}

/// First pass over one block (at most [`BLOCK`] elements; the same block always gives the same
/// result, whatever chunk it arrived in).
pub fn block1<T: Element>(block: &[T]) -> Block1 {
    let (s, mn, mx, z) = pass1_fast(block);
    if s.is_finite() {
        // No NaN or Inf in this block (either would make the sum non-finite).
        return Block1 { sum: s, finite: block.len() as u64, zeros: z, nan: 0, inf: 0, min: mn, max: mx };
    }
    let mut b =
        Block1 { sum: 0.0, finite: 0, zeros: 0, nan: 0, inf: 0, min: f64::INFINITY, max: f64::NEG_INFINITY };
    for x in block {
        let v = x.to_f64();
        if v.is_nan() {
            b.nan += 1;
        } else if v.is_infinite() {
            b.inf += 1;
        } else {
            b.finite += 1;
            b.zeros += (v == 0.0) as u64;
            b.sum += v;
            b.min = b.min.min(v);
            b.max = b.max.max(v);
        }
    }
    b
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

/// One block's second pass over its finite elements: Σ(x − mean)², Σ(x − mean), Σx² and, when
/// `scale` is given, Σ(x · scale)² (the overflow-safe norm of f64 tensors with huge or tiny values).
#[derive(Clone, Copy, Debug, Default)]
pub struct Block2 {
    pub dev_sq: f64,
    pub dev: f64,
    pub sq: f64,
    pub scaled: f64,
}

/// Second pass over one block, adding its histogram counts to `sub` (see [`histogram_block`]).
pub fn block2<T: Element>(
    block: &[T],
    mean: f64,
    scale: Option<f64>,
    hist: Option<(f64, f64, usize)>,
    sub: &mut [u64],
) -> Block2 {
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
    let mut out = if s_ds.is_finite() && s_sq.is_finite() {
        Block2 { dev_sq: s_ds, dev: s_d1, sq: s_sq, scaled: 0.0 }
    } else {
        // Non-finite elements in this block (or an overflowing square): skip the non-finite ones.
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
        Block2 { dev_sq: a, dev: b, sq: c, scaled: 0.0 }
    };
    if let Some(k) = scale {
        let mut s = 0.0;
        for x in block {
            let v = x.to_f64();
            if v.is_finite() {
                let y = v * k;
                s += y * y;
            }
        }
        out.scaled = s;
    }
    if let Some((lo, hi, bins)) = hist {
        histogram_block(block, lo, hi, bins, sub);
    }
    out
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

/// Interleaved sub-histograms per bucket in [`block2`].
pub const SUB: usize = 4;

/// Adds a block's values to the interleaved sub-histograms `sub` (bucket i, lane j at `i * SUB + j`).
/// The bucket is torch.histc's `trunc((v − lo) · bins / (hi − lo))`; the division is replaced by a
/// multiplication with the reciprocal, which can differ from it by a few ulps, so values whose quotient
/// lies within 1e-9 of a bucket boundary take the exact division.
#[inline]
pub fn histogram_block<T: Element>(block: &[T], lo: f64, hi: f64, bins: usize, sub: &mut [u64]) {
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

/// Σ (a_i − b_i)² over one block in f64. A NaN or Inf on either side makes it non-finite, as in
/// torch. Lengths must match (checked by the caller).
pub fn block_sq_diff<A: Element, B: Element>(a: &[A], b: &[B]) -> f64 {
    let mut s = [0.0f64; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
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
    s.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of<T: Element>(xs: &[T], lo: f64, hi: f64, bins: usize) -> Vec<u64> {
        let mut sub = vec![0u64; bins * SUB];
        for b in xs.chunks(BLOCK) {
            block2(b, 0.0, None, Some((lo, hi, bins)), &mut sub);
        }
        (0..bins).map(|i| sub[i * SUB..(i + 1) * SUB].iter().sum()).collect()
    }

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
        let got = hist_of(&xs, lo, hi, bins);
        assert_eq!(got, want);
        let xs32: Vec<f32> =
            xs.iter().map(|&v| v as f32).filter(|v| (*v as f64) >= lo && (*v as f64) <= hi).collect();
        let mut want32 = vec![0u64; bins];
        for &v in &xs32 {
            want32[bucket(v as f64, lo, hi, bins).unwrap()] += 1;
        }
        assert_eq!(hist_of(&xs32, lo, hi, bins), want32);
    }
}
