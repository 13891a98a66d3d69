//! The inner loops behind the statistics: blocked, lane-parallel f64 accumulation over one block of
//! [`BLOCK`] f32 or f64 values. A tensor is cut into blocks at fixed element offsets (multiples of
//! `BLOCK`), whatever chunks it is read in, and the block results are added in block order with
//! Neumaier compensation: the same tensor gives bit-identical sums however it is chunked or threaded.

/// An element type the statistics read: widened exactly to f64.
pub(crate) trait Element: Copy + Send + Sync + 'static {
    /// f32 (else f64): how the vector kernels load it.
    const IS_F32: bool;
    fn to_f64(self) -> f64;
}

impl Element for f32 {
    const IS_F32: bool = true;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    const IS_F32: bool = false;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

/// Independent accumulators per block: lets the compiler keep 8 additions in flight (and vectorize).
pub(crate) const LANES: usize = 8;
/// Elements per block; block sums are then added with compensation.
pub const BLOCK: usize = 4096;

/// A Neumaier (improved Kahan) compensated sum.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CompensatedSum {
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
pub(crate) struct Block1 {
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
pub(crate) fn block1<T: Element>(block: &[T]) -> Block1 {
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

/// Per-lane accumulators of the first pass: lane j holds elements j, j + LANES, … of the block.
struct Lanes1 {
    s: [f64; LANES],
    mn: [f64; LANES],
    mx: [f64; LANES],
    z: [u64; LANES],
}

impl Lanes1 {
    fn new() -> Lanes1 {
        Lanes1 { s: [0.0; LANES], mn: [f64::INFINITY; LANES], mx: [f64::NEG_INFINITY; LANES], z: [0; LANES] }
    }

    /// Adds the elements after the last whole group of LANES (to lane 0), then folds the lanes in
    /// lane order: (sum, min, max, zeros).
    #[inline(always)]
    fn finish<T: Element>(mut self, rem: &[T]) -> (f64, f64, f64, u64) {
        for x in rem {
            let v = x.to_f64();
            self.s[0] += v;
            self.mn[0] = self.mn[0].min(v);
            self.mx[0] = self.mx[0].max(v);
            self.z[0] += (v == 0.0) as u64;
        }
        let sum: f64 = self.s.iter().sum();
        let min = self.mn.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.mx.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (sum, min, max, self.z.iter().sum())
    }
}

#[inline(always)]
fn pass1_fast<T: Element>(b: &[T]) -> (f64, f64, f64, u64) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2::pass1(b) };
    }
    pass1_any(b)
}

fn pass1_any<T: Element>(b: &[T]) -> (f64, f64, f64, u64) {
    let mut l = Lanes1::new();
    let chunks = b.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for (j, x) in c.iter().enumerate() {
            let v = x.to_f64();
            l.s[j] += v;
            l.mn[j] = if v < l.mn[j] { v } else { l.mn[j] };
            l.mx[j] = if v > l.mx[j] { v } else { l.mx[j] };
            l.z[j] += (v == 0.0) as u64;
        }
    }
    l.finish(rem)
}

/// One block's second pass over its finite elements: Σ(x − mean)², Σ(x − mean), Σx² and, when
/// `scale` is given, Σ(x · scale)² (the overflow-safe norm of f64 tensors with huge or tiny values).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Block2 {
    pub dev_sq: f64,
    pub dev: f64,
    pub sq: f64,
    pub scaled: f64,
}

/// Second pass over one block, adding its histogram counts to `sub` (see [`histogram_block`]).
pub(crate) fn block2<T: Element>(
    block: &[T],
    mean: f64,
    scale: Option<f64>,
    hist: Option<(f64, f64, usize)>,
    sub: &mut [u64],
) -> Block2 {
    let sums = deviations_and_histogram(block, mean, hist, sub);
    block2_rest(block, mean, scale, sums)
}

/// The part of [`block2`] after the lane sums: the non-finite fallback and the scaled norm.
#[inline(always)]
fn block2_rest<T: Element>(block: &[T], mean: f64, scale: Option<f64>, sums: (f64, f64, f64)) -> Block2 {
    let (s_ds, s_d1, s_sq) = sums;
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
    out
}

/// The lane sums of [`deviations`] and, when `hist` is given, the block's histogram counts added to
/// `sub`: in one loop over the block with AVX2, else one after the other.
#[inline(always)]
fn deviations_and_histogram<T: Element>(
    block: &[T],
    mean: f64,
    hist: Option<(f64, f64, usize)>,
    sub: &mut [u64],
) -> (f64, f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe {
            match hist {
                Some((lo, hi, bins)) if bins <= i32::MAX as usize => {
                    avx2::deviations_histogram(block, mean, lo, hi, bins, sub)
                }
                Some((lo, hi, bins)) => {
                    histogram_block(block, lo, hi, bins, sub);
                    avx2::deviations(block, mean)
                }
                None => avx2::deviations(block, mean),
            }
        };
    }
    if let Some((lo, hi, bins)) = hist {
        histogram_block(block, lo, hi, bins, sub);
    }
    deviations_any(block, mean)
}

/// Adds one to the counter of each 16-bit pattern in `raw` (little endian): with values spread over
/// thousands of patterns, consecutive increments rarely hit the same counter (a bucket's would), so they
/// do not wait for each other.
#[inline]
pub(crate) fn count_patterns_le(raw: &[u8], patterns: &mut [u32]) {
    let Some(patterns) = patterns.get_mut(..1 << 16) else { return };
    for c in raw.chunks_exact(2) {
        patterns[u16::from_le_bytes([c[0], c[1]]) as usize] += 1;
    }
}

/// Per-lane accumulators of the second pass: Σ(x − mean)², Σ(x − mean), Σx².
struct Lanes2 {
    ds: [f64; LANES],
    d1: [f64; LANES],
    sq: [f64; LANES],
}

impl Lanes2 {
    fn new() -> Lanes2 {
        Lanes2 { ds: [0.0; LANES], d1: [0.0; LANES], sq: [0.0; LANES] }
    }

    /// Adds the elements after the last whole group (to lane 0) and folds the lanes in order.
    #[inline(always)]
    fn finish<T: Element>(mut self, rem: &[T], mean: f64) -> (f64, f64, f64) {
        for x in rem {
            let v = x.to_f64();
            let d = v - mean;
            self.ds[0] += d * d;
            self.d1[0] += d;
            self.sq[0] += v * v;
        }
        (self.ds.iter().sum(), self.d1.iter().sum(), self.sq.iter().sum())
    }
}

/// (Σ(x − mean)², Σ(x − mean), Σx²) over a block, lane by lane.
fn deviations_any<T: Element>(block: &[T], mean: f64) -> (f64, f64, f64) {
    let mut l = Lanes2::new();
    let chunks = block.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for (j, x) in c.iter().enumerate() {
            let v = x.to_f64();
            let d = v - mean;
            l.ds[j] += d * d;
            l.d1[j] += d;
            l.sq[j] += v * v;
        }
    }
    l.finish(rem, mean)
}

/// The histogram bucket of `v` for `bins` buckets over [lo, hi], exactly as torch.histc computes it
/// (`(v - lo) * bins / (hi - lo)`, truncated; `hi` itself goes to the last bucket); None outside: the
/// rule of [`histogram_block`] for one value.
pub(crate) fn bucket(v: f64, lo: f64, hi: f64, bins: usize) -> Option<usize> {
    if !(v >= lo && v <= hi) {
        return None;
    }
    let pos = ((v - lo) * bins as f64 / (hi - lo)) as usize;
    Some(if pos >= bins { bins - 1 } else { pos })
}

/// Interleaved sub-histograms per bucket in [`block2`].
pub(crate) const SUB: usize = 8;
// The AVX2 kernel counts groups of LANES elements into SUB lanes.
const _: () = assert!(SUB == LANES);

/// Adds a block's values to the interleaved sub-histograms `sub` (bucket i, lane j at `i * SUB + j`).
/// The bucket is torch.histc's `trunc((v − lo) · bins / (hi − lo))`, computed as written (a true
/// division: exact by construction, and a vector division is cheaper than a reciprocal with a check
/// for quotients near a bucket edge); `hi` itself goes to the last bucket, values outside [lo, hi]
/// and NaN to none.
#[inline(always)]
pub(crate) fn histogram_block<T: Element>(block: &[T], lo: f64, hi: f64, bins: usize, sub: &mut [u64]) {
    const W: usize = 256;
    /// Marks a value outside [lo, hi] (or NaN).
    const OUT: u32 = u32::MAX;
    let nb = bins as f64;
    let range = hi - lo;
    if bins > i32::MAX as usize {
        // Beyond the fast path's integer conversion (no configuration allows this many buckets).
        for (i, x) in block.iter().enumerate() {
            let v = x.to_f64();
            if v >= lo && v <= hi {
                let k = ((v - lo) * nb / range) as usize;
                sub[k.min(bins - 1) * SUB + i % SUB] += 1;
            }
        }
        return;
    }
    let last = (bins - 1) as i32;
    let mut pos = [0u32; W];
    for chunk in block.chunks(W) {
        // Branch-free bucket numbers, written so that the compiler vectorizes them: the quotient is
        // clamped into [0, bins] first (NaN goes to 0), so the conversion needs no saturation.
        for (p, x) in pos.iter_mut().zip(chunk) {
            let v = x.to_f64();
            let q = (v - lo) * nb / range;
            let q = if q > 0.0 { q } else { 0.0 };
            let q = if q < nb { q } else { nb };
            // SAFETY: q is finite and in [0, bins], and bins fits in an i32.
            let k = unsafe { q.to_int_unchecked::<i32>() };
            let k = if k < last { k } else { last };
            *p = if (v >= lo) & (v <= hi) { k as u32 } else { OUT };
        }
        // Counted into SUB interleaved sub-histograms (element i into lane i mod SUB), so that
        // consecutive equal buckets do not wait for each other's increments.
        let groups = pos[..chunk.len()].chunks_exact(SUB);
        let rest = groups.remainder();
        for ps in groups {
            for j in 0..SUB {
                if ps[j] != OUT {
                    sub[ps[j] as usize * SUB + j] += 1;
                }
            }
        }
        for (j, &p) in rest.iter().enumerate() {
            if p != OUT {
                sub[p as usize * SUB + j] += 1;
            }
        }
    }
}

/// Σ (a_i − b_i)² over one block in f64. A NaN or Inf on either side makes it non-finite, as in
/// torch. Lengths must match (checked by the caller).
pub(crate) fn block_sq_diff<A: Element, B: Element>(a: &[A], b: &[B]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2::block_sq_diff(a, b) };
    }
    block_sq_diff_any(a, b)
}

fn block_sq_diff_any<A: Element, B: Element>(a: &[A], b: &[B]) -> f64 {
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
    sq_diff_finish(s, ra, rb)
}

/// Adds the elements after the last whole group (to lane 0) and folds the lanes in order.
#[inline(always)]
fn sq_diff_finish<A: Element, B: Element>(mut s: [f64; LANES], ra: &[A], rb: &[B]) -> f64 {
    for (x, y) in ra.iter().zip(rb) {
        let d = x.to_f64() - y.to_f64();
        s[0] += d * d;
    }
    s.iter().sum()
}

/// The kernels in AVX2 (4 f64 lanes per instruction; the portable versions get SSE2's 2 at best),
/// chosen at run time. Each of the LANES accumulators sees the same operations in the same order as
/// in the portable version (no fused multiply-add, the same remainder and fold code), so both give
/// bit-identical results; a test checks it.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Element, LANES, Lanes1, Lanes2};

    /// Four elements from `p`, widened to f64.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load4<T: Element>(p: *const T) -> __m256d {
        // SAFETY (caller): p points at 4 readable elements of T (f32 or f64, per IS_F32).
        unsafe {
            if T::IS_F32 {
                _mm256_cvtps_pd(_mm_loadu_ps(p as *const f32))
            } else {
                _mm256_loadu_pd(p as *const f64)
            }
        }
    }

    /// Writes lanes 0–3 and 4–7 into `out`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store8(out: &mut [f64; LANES], lo: __m256d, hi: __m256d) {
        // SAFETY: `out` holds 8 f64; the stores are unaligned ones.
        unsafe {
            _mm256_storeu_pd(out.as_mut_ptr(), lo);
            _mm256_storeu_pd(out.as_mut_ptr().add(4), hi);
        }
    }

    /// The second pass's 8 lanes of Σ(x − mean)², Σ(x − mean), Σx², two registers each.
    struct Deviations {
        m: __m256d,
        ds: [__m256d; 2],
        d1: [__m256d; 2],
        sq: [__m256d; 2],
    }

    impl Deviations {
        #[inline]
        #[target_feature(enable = "avx2")]
        fn new(mean: f64) -> Deviations {
            let z = _mm256_setzero_pd();
            Deviations { m: _mm256_set1_pd(mean), ds: [z; 2], d1: [z; 2], sq: [z; 2] }
        }

        /// Adds 8 elements: `v[0]` to lanes 0–3, `v[1]` to lanes 4–7.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn add(&mut self, v: [__m256d; 2]) {
            for (h, x) in v.into_iter().enumerate() {
                let e = _mm256_sub_pd(x, self.m);
                self.ds[h] = _mm256_add_pd(self.ds[h], _mm256_mul_pd(e, e));
                self.d1[h] = _mm256_add_pd(self.d1[h], e);
                self.sq[h] = _mm256_add_pd(self.sq[h], _mm256_mul_pd(x, x));
            }
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        fn lanes(&self) -> Lanes2 {
            let mut l = Lanes2::new();
            store8(&mut l.ds, self.ds[0], self.ds[1]);
            store8(&mut l.d1, self.d1[0], self.d1[1]);
            store8(&mut l.sq, self.sq[0], self.sq[1]);
            l
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn pass1<T: Element>(b: &[T]) -> (f64, f64, f64, u64) {
        let n = b.len() / LANES * LANES;
        let zero = _mm256_setzero_pd();
        let (mut s0, mut s1) = (zero, zero);
        let (mut mn0, mut mn1) = (_mm256_set1_pd(f64::INFINITY), _mm256_set1_pd(f64::INFINITY));
        let (mut mx0, mut mx1) = (_mm256_set1_pd(f64::NEG_INFINITY), _mm256_set1_pd(f64::NEG_INFINITY));
        let (mut z0, mut z1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let p = b.as_ptr();
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= b.len().
            let (v0, v1) = unsafe { (load4(p.add(i)), load4(p.add(i + 4))) };
            s0 = _mm256_add_pd(s0, v0);
            s1 = _mm256_add_pd(s1, v1);
            // min_pd(v, m) is `if v < m { v } else { m }`, as in the portable loop (max alike).
            mn0 = _mm256_min_pd(v0, mn0);
            mn1 = _mm256_min_pd(v1, mn1);
            mx0 = _mm256_max_pd(v0, mx0);
            mx1 = _mm256_max_pd(v1, mx1);
            // An equal lane is all ones (-1 as i64): subtracting it counts a zero.
            z0 = _mm256_sub_epi64(z0, _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_EQ_OQ>(v0, zero)));
            z1 = _mm256_sub_epi64(z1, _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_EQ_OQ>(v1, zero)));
            i += LANES;
        }
        let mut l = Lanes1::new();
        store8(&mut l.s, s0, s1);
        store8(&mut l.mn, mn0, mn1);
        store8(&mut l.mx, mx0, mx1);
        // SAFETY: `l.z` holds 8 u64; the stores are unaligned ones.
        unsafe {
            _mm256_storeu_si256(l.z.as_mut_ptr() as *mut __m256i, z0);
            _mm256_storeu_si256(l.z.as_mut_ptr().add(4) as *mut __m256i, z1);
        }
        l.finish(&b[n..])
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn deviations<T: Element>(b: &[T], mean: f64) -> (f64, f64, f64) {
        let n = b.len() / LANES * LANES;
        let mut acc = Deviations::new(mean);
        let p = b.as_ptr();
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= b.len().
            acc.add(unsafe { [load4(p.add(i)), load4(p.add(i + 4))] });
            i += LANES;
        }
        acc.lanes().finish(&b[n..], mean)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn block_sq_diff<A: Element, B: Element>(a: &[A], b: &[B]) -> f64 {
        let len = a.len().min(b.len());
        let n = len / LANES * LANES;
        let zero = _mm256_setzero_pd();
        let (mut s0, mut s1) = (zero, zero);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= both lengths.
            let (x0, x1, y0, y1) =
                unsafe { (load4(pa.add(i)), load4(pa.add(i + 4)), load4(pb.add(i)), load4(pb.add(i + 4))) };
            let (d0, d1) = (_mm256_sub_pd(x0, y0), _mm256_sub_pd(x1, y1));
            s0 = _mm256_add_pd(s0, _mm256_mul_pd(d0, d0));
            s1 = _mm256_add_pd(s1, _mm256_mul_pd(d1, d1));
            i += LANES;
        }
        let mut s = [0.0f64; LANES];
        // SAFETY: s holds 8 values.
        unsafe {
            _mm256_storeu_pd(s.as_mut_ptr(), s0);
            _mm256_storeu_pd(s.as_mut_ptr().add(4), s1);
        }
        super::sq_diff_finish(s, &a[n..len], &b[n..len])
    }

    /// [`deviations`] and [`super::histogram_block`] in one loop: each group of 8 elements is
    /// loaded and widened once for both. Bucket numbers are computed 4 at a time exactly as the
    /// portable loop does (the same division and clamps), gathered for 256 elements and then counted
    /// into the same sub-histogram lanes (element i into lane i mod SUB). `bins` fits in an i32.
    #[target_feature(enable = "avx2")]
    pub(super) fn deviations_histogram<T: Element>(
        b: &[T],
        mean: f64,
        lo: f64,
        hi: f64,
        bins: usize,
        sub: &mut [u64],
    ) -> (f64, f64, f64) {
        const W: usize = 256;
        const OUT: u32 = u32::MAX;
        let n = b.len() / LANES * LANES;
        let zero = _mm256_setzero_pd();
        let (vlo, vhi, vnb, vrange) =
            (_mm256_set1_pd(lo), _mm256_set1_pd(hi), _mm256_set1_pd(bins as f64), _mm256_set1_pd(hi - lo));
        let last = _mm_set1_epi32((bins - 1) as i32);
        // Picks the low 32 bits of each 64-bit mask lane into the low 128 bits.
        let narrow = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        // Bucket numbers of 4 elements (OUT outside [lo, hi] or NaN).
        let buckets = |v: __m256d| -> __m128i {
            let q = _mm256_div_pd(_mm256_mul_pd(_mm256_sub_pd(v, vlo), vnb), vrange);
            // max_pd(q, 0) is `if q > 0 { q } else { 0 }` (NaN to 0), min_pd(q, nb) `if q < nb …`.
            let q = _mm256_min_pd(_mm256_max_pd(q, zero), vnb);
            let k = _mm_min_epi32(_mm256_cvttpd_epi32(q), last);
            let inside =
                _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(v, vlo), _mm256_cmp_pd::<_CMP_LE_OQ>(v, vhi));
            let inside =
                _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_castpd_si256(inside), narrow));
            // Inside: k; outside: all ones (OUT).
            _mm_or_si128(_mm_and_si128(inside, k), _mm_andnot_si128(inside, _mm_set1_epi32(-1)))
        };
        let mut acc = Deviations::new(mean);
        let mut pos = [0u32; W];
        let p = b.as_ptr();
        let mut i = 0;
        while i < n {
            let end = (i + W).min(n);
            let mut k = 0;
            while i < end {
                // SAFETY: i + 8 <= n <= b.len().
                let (v0, v1) = unsafe { (load4(p.add(i)), load4(p.add(i + 4))) };
                acc.add([v0, v1]);
                // SAFETY: k + 8 <= W: 8 u32 written into `pos`.
                unsafe {
                    _mm_storeu_si128(pos.as_mut_ptr().add(k) as *mut __m128i, buckets(v0));
                    _mm_storeu_si128(pos.as_mut_ptr().add(k + 4) as *mut __m128i, buckets(v1));
                }
                k += LANES;
                i += LANES;
            }
            for ps in pos[..k].chunks_exact(super::SUB) {
                for (j, &q) in ps.iter().enumerate() {
                    if q != OUT {
                        sub[q as usize * super::SUB + j] += 1;
                    }
                }
            }
        }
        // The tail (fewer than 8 elements) starts at a multiple of 8: its lanes are the same.
        super::histogram_block(&b[n..], lo, hi, bins, sub);
        acc.lanes().finish(&b[n..], mean)
    }
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

    /// The AVX2 build of the kernels gives the same bits as the portable one (including NaN, Inf,
    /// values on bucket edges, and a partial block).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_equal_portable_ones_bit_for_bit() {
        if !std::is_x86_feature_detected!("avx2") {
            return; // nothing to compare on this CPU
        }
        let mut x = 7u64;
        let mut xs: Vec<f32> = (0..BLOCK - 3)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 0.07
            })
            .collect();
        let ys: Vec<f64> = xs.iter().map(|&v| v as f64 * 1.5 + 0.01).collect();
        let (lo, hi, bins) = (-0.07f64, 0.07f64, 37usize);
        for i in 0..=bins {
            xs.push((lo + (hi - lo) * i as f64 / bins as f64) as f32);
        }
        xs[9] = 0.0;
        xs[10] = -0.0;
        for (with_odd, len) in [(false, BLOCK), (false, BLOCK - 5), (true, BLOCK), (true, BLOCK - 5)] {
            if with_odd {
                xs[5] = f32::NAN;
                xs[77] = f32::INFINITY;
            }
            let b = &xs[..len];
            let (p1, v1) = (pass1_any(b), unsafe { avx2::pass1(b) });
            assert_eq!(
                (p1.0.to_bits(), p1.1.to_bits(), p1.2.to_bits(), p1.3),
                (v1.0.to_bits(), v1.1.to_bits(), v1.2.to_bits(), v1.3)
            );
            let (pd, vd) = (deviations_any(b, 0.003), unsafe { avx2::deviations(b, 0.003) });
            assert_eq!([pd.0, pd.1, pd.2].map(f64::to_bits), [vd.0, vd.1, vd.2].map(f64::to_bits));
            let b64: Vec<f64> = b.iter().map(|&v| v as f64 - 1e-3).collect();
            assert_eq!(pass1_any(&b64).0.to_bits(), unsafe { avx2::pass1(&b64) }.0.to_bits());
            let (pd, vd) = (deviations_any(&b64, 0.2), unsafe { avx2::deviations(&b64, 0.2) });
            assert_eq!([pd.0, pd.1, pd.2].map(f64::to_bits), [vd.0, vd.1, vd.2].map(f64::to_bits));
            let (mut s1, mut s2) = (vec![0u64; bins * SUB], vec![0u64; bins * SUB]);
            histogram_block(b, lo, hi, bins, &mut s1);
            let fused = unsafe { avx2::deviations_histogram(b, 0.003, lo, hi, bins, &mut s2) };
            assert_eq!(s1, s2, "the same counts in the same lanes");
            let pd = deviations_any(b, 0.003);
            assert_eq!([pd.0, pd.1, pd.2].map(f64::to_bits), [fused.0, fused.1, fused.2].map(f64::to_bits));
            assert!(s1.iter().sum::<u64>() > 4000);
            assert!(with_odd || p1.3 == 2, "two zeros counted");
            let n = b.len().min(ys.len());
            assert_eq!(
                block_sq_diff_any(&b[..n], &ys[..n]).to_bits(),
                unsafe { avx2::block_sq_diff(&b[..n], &ys[..n]) }.to_bits()
            );
        }
    }
}
