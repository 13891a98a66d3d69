//! Per-tensor statistics: numel, L2 norm, mean, unbiased std, min, max, max |x|, fraction of exact
//! zeros, NaN/Inf counts and a histogram, in two passes (the histogram needs the extremes first).
//!
//! Streaming: a tensor is processed in runs of whole blocks ([`part1`], [`part2`]), which may be
//! computed on any thread in any order and are added in tensor order by [`TensorAcc`]; a stream
//! of arbitrary chunks is re-cut into such runs by [`Blocker`] ([`stats_streamed`]). The result is
//! bit-identical however the tensor was chunked or threaded.

use super::histogram::Histogram;
use super::kernels::{self, BLOCK, Block2, CompensatedSum, Element};
use landscaped_formats::{ChunkValues, Dtype, Values};
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

/// Elements per part when a tensor in memory is split over threads (a multiple of [`BLOCK`], so the
/// result is the same on any number of threads).
const PART: usize = 1 << 20;

/// Statistics of a plain slice (f32 or f64), in parts over the available cores.
pub(crate) fn stats_of<T: Wide>(xs: &[T], bins: usize) -> TensorStats {
    let mut acc = TensorAcc::new(xs.len() as u64, bins);
    for p in par_map(xs, |c| part1(T::chunk(c))) {
        acc.add1(&p);
    }
    if let Some(plan) = acc.plan() {
        for p in par_map(xs, |c| part2(T::chunk(c), &plan)) {
            acc.add2(&p);
        }
    }
    acc.finish()
}

/// f32 or f64: the element types values are widened to.
pub(crate) trait Wide: Element {
    fn chunk(xs: &[Self]) -> ChunkValues<'_>;
}

impl Wide for f32 {
    fn chunk(xs: &[f32]) -> ChunkValues<'_> {
        ChunkValues::F32(xs)
    }
}

impl Wide for f64 {
    fn chunk(xs: &[f64]) -> ChunkValues<'_> {
        ChunkValues::F64(xs)
    }
}

/// `f` over consecutive [`PART`]-element parts of `xs`, on up to the available cores; results in order.
fn par_map<T: Sync, R: Send>(xs: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let parts: Vec<&[T]> = xs.chunks(PART).collect();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(parts.len()).min(16);
    if threads <= 1 {
        return parts.into_iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Option<R>> = (0..parts.len()).map(|_| None).collect();
    let results: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(p) = parts.get(i) else { break };
                        mine.push((i, f(p)));
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    for (i, r) in results.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter().flatten().collect()
}

/// The first pass over a run of whole blocks of one tensor (a chunk starting at a multiple of
/// [`BLOCK`] elements and ending at one, or at the tensor's end): per-block sums, to be added in
/// block order by [`TensorAcc::add1`], and the order-free counts and extremes.
#[derive(Clone, Debug)]
pub struct Part1 {
    sums: Vec<f64>,
    finite: u64,
    zeros: u64,
    nan: u64,
    inf: u64,
    min: f64,
    max: f64,
}

impl Part1 {
    /// A part of no blocks, to [`Part1::append`] runs to.
    pub fn empty() -> Part1 {
        Part1 {
            sums: Vec::new(),
            finite: 0,
            zeros: 0,
            nan: 0,
            inf: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Appends `next`, the run of whole blocks that follows this part's (the result is the part of
    /// both runs together, exactly).
    pub fn append(&mut self, next: Part1) {
        self.sums.extend_from_slice(&next.sums);
        self.finite += next.finite;
        self.zeros += next.zeros;
        self.nan += next.nan;
        self.inf += next.inf;
        self.min = self.min.min(next.min);
        self.max = self.max.max(next.max);
    }
}

/// [`Part1`] of `xs`.
pub fn part1(xs: ChunkValues<'_>) -> Part1 {
    fn go<T: Element>(xs: &[T]) -> Part1 {
        let mut p = Part1 { sums: Vec::with_capacity(xs.len().div_ceil(BLOCK)), ..Part1::empty() };
        for b in xs.chunks(BLOCK) {
            let r = kernels::block1(b);
            p.sums.push(r.sum);
            p.finite += r.finite;
            p.zeros += r.zeros;
            p.nan += r.nan;
            p.inf += r.inf;
            p.min = p.min.min(r.min);
            p.max = p.max.max(r.max);
        }
        p
    }
    match xs {
        ChunkValues::F32(v) => go(v),
        ChunkValues::F64(v) => go(v),
    }
}

/// What the second pass needs from the first: the mean, the histogram range, and a scale for the
/// overflow-safe norm (f64 tensors with |x| above 1e140 or below 1e-140 only).
#[derive(Clone, Copy, Debug)]
pub struct Plan2 {
    mean: f64,
    scale: Option<f64>,
    hist: Option<(f64, f64, usize)>,
    bins: usize,
}

/// The second pass over a run of whole blocks (as for [`Part1`]).
#[derive(Clone, Debug)]
pub struct Part2 {
    blocks: Vec<Block2>,
    counts: Vec<u64>,
}

impl Part2 {
    /// A part of no blocks, to [`Part2::append`] runs to.
    pub fn empty() -> Part2 {
        Part2 { blocks: Vec::new(), counts: Vec::new() }
    }

    /// Appends `next`, the run of whole blocks that follows this part's (same plan).
    pub fn append(&mut self, next: Part2) {
        self.blocks.extend_from_slice(&next.blocks);
        if self.counts.is_empty() {
            self.counts = next.counts;
        } else {
            for (a, b) in self.counts.iter_mut().zip(&next.counts) {
                *a += b;
            }
        }
    }
}

/// [`Part2`] of `xs`.
pub fn part2(xs: ChunkValues<'_>, plan: &Plan2) -> Part2 {
    fn go<T: Element>(xs: &[T], plan: &Plan2) -> Part2 {
        let mut sub = vec![0u64; if plan.hist.is_some() { plan.bins * kernels::SUB } else { 0 }];
        let blocks = xs
            .chunks(BLOCK)
            .map(|b| kernels::block2(b, plan.mean, plan.scale, plan.hist, &mut sub))
            .collect();
        let counts = if plan.hist.is_some() {
            (0..plan.bins).map(|i| sub[i * kernels::SUB..(i + 1) * kernels::SUB].iter().sum()).collect()
        } else {
            Vec::new()
        };
        Part2 { blocks, counts }
    }
    match xs {
        ChunkValues::F32(v) => go(v, plan),
        ChunkValues::F64(v) => go(v, plan),
    }
}

/// The count of each bit pattern of a run of f16 or bf16 elements: for those types every statistic is a
/// function of these 65,536 counts ([`PatternTotals::stats`]), so one pass that counts them replaces both
/// passes over the values, and the result is exactly the same however the tensor was split (the counts are
/// integers). u32 counters: fewer than 2^32 elements between two [`PatternCounts::drain_into`].
#[derive(Clone, Debug)]
pub struct PatternCounts {
    counts: Vec<u32>,
    seen: u64,
}

impl Default for PatternCounts {
    fn default() -> Self {
        PatternCounts { counts: vec![0; 1 << 16], seen: 0 }
    }
}

impl PatternCounts {
    /// Counts the elements of `raw`, 16-bit patterns in little-endian order as the formats store them (a
    /// trailing odd byte is ignored).
    pub fn count_le(&mut self, raw: &[u8]) {
        kernels::count_patterns_le(raw, &mut self.counts);
        self.seen += (raw.len() / 2) as u64;
    }

    /// Elements counted since the last drain or clear.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Adds the counts to `totals` and starts again from zero.
    pub fn drain_into(&mut self, totals: &mut PatternTotals) {
        if self.seen == 0 {
            return;
        }
        for (t, c) in totals.counts.iter_mut().zip(self.counts.iter_mut()) {
            *t += *c as u64;
            *c = 0;
        }
        self.seen = 0;
    }

    /// Starts again from zero.
    pub fn clear(&mut self) {
        if self.seen > 0 {
            self.counts.fill(0);
            self.seen = 0;
        }
    }

    /// [`PatternTotals::stats`] of the counts so far, which then start again from zero.
    pub fn take_stats(&mut self, numel: u64, bins: usize, dtype: Dtype) -> Option<TensorStats> {
        let s = stats_from_counts(&self.counts, numel, bins, dtype);
        self.clear();
        s
    }
}

/// A whole tensor's [`PatternCounts`], added up in u64.
#[derive(Clone, Debug)]
pub struct PatternTotals {
    counts: Vec<u64>,
}

impl Default for PatternTotals {
    fn default() -> Self {
        PatternTotals { counts: vec![0; 1 << 16] }
    }
}

impl PatternTotals {
    /// The statistics of a tensor of `numel` elements of `dtype` (f16 or bf16, else None) whose bit
    /// patterns were counted here: moments, extremes, zeros, NaN/Inf counts (left out of the rest) and the
    /// histogram, as the two passes over the values compute them (same definitions, same bucket rule),
    /// from one term per pattern present, in f64 with compensated sums.
    pub fn stats(&self, numel: u64, bins: usize, dtype: Dtype) -> Option<TensorStats> {
        stats_from_counts(&self.counts, numel, bins, dtype)
    }
}

/// Each 16-bit pattern's value, widened the way the readers widen values (None for other types).
fn pattern_values(dtype: Dtype) -> Option<&'static [f32]> {
    static F16: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    static BF16: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    let cell = match dtype {
        Dtype::F16 => &F16,
        Dtype::BF16 => &BF16,
        _ => return None,
    };
    let v = cell.get_or_init(|| {
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let (mut wide, mut wide64) = (Vec::new(), Vec::new());
        match landscaped_formats::widen_into(dtype, &all, &mut wide, &mut wide64) {
            ChunkValues::F32(v) => v.to_vec(),
            ChunkValues::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    });
    Some(v)
}

/// [`PatternTotals::stats`] of per-pattern counts of any width.
fn stats_from_counts<C: Copy + Into<u64>>(
    counts: &[C],
    numel: u64,
    bins: usize,
    dtype: Dtype,
) -> Option<TensorStats> {
    let values = pattern_values(dtype)?;
    let mut acc = TensorAcc::new(numel, bins);
    // What the first pass gives: counts, extremes and the sum of the finite elements.
    for (&c, &v) in counts.iter().zip(values) {
        let c: u64 = c.into();
        if c == 0 {
            continue;
        }
        let v = v as f64;
        if v.is_nan() {
            acc.nan += c;
        } else if v.is_infinite() {
            acc.inf += c;
        } else {
            acc.finite += c;
            if v == 0.0 {
                acc.zeros += c;
            }
            acc.sum.add(c as f64 * v);
            acc.min = acc.min.min(v);
            acc.max = acc.max.max(v);
        }
    }
    let Some(plan) = acc.plan() else { return Some(acc.finish()) };
    // What the second pass gives: deviations from the mean, squares and the histogram.
    for (&c, &v) in counts.iter().zip(values) {
        let c: u64 = c.into();
        let v = v as f64;
        if c == 0 || !v.is_finite() {
            continue;
        }
        let w = c as f64;
        let d = v - plan.mean;
        acc.dev_sq.add(w * (d * d));
        acc.dev.add(w * d);
        acc.sq.add(w * (v * v));
        if let Some(k) = plan.scale {
            let y = v * k;
            acc.scaled.add(w * (y * y));
        }
        if let Some((lo, hi, bins)) = plan.hist
            && let Some(b) = kernels::bucket(v, lo, hi, bins)
        {
            acc.counts[b] += c;
        }
    }
    Some(acc.finish())
}

/// Accumulates one tensor's parts, in order: all [`Part1`]s, then (if [`TensorAcc::plan`] says a
/// second pass is needed) all [`Part2`]s, then [`TensorAcc::finish`].
#[derive(Clone, Debug)]
pub struct TensorAcc {
    numel: u64,
    bins: usize,
    finite: u64,
    zeros: u64,
    nan: u64,
    inf: u64,
    sum: CompensatedSum,
    min: f64,
    max: f64,
    dev_sq: CompensatedSum,
    dev: CompensatedSum,
    sq: CompensatedSum,
    scaled: CompensatedSum,
    counts: Vec<u64>,
    scale: Option<f64>,
}

impl TensorAcc {
    pub fn new(numel: u64, bins: usize) -> TensorAcc {
        TensorAcc {
            numel,
            bins,
            finite: 0,
            zeros: 0,
            nan: 0,
            inf: 0,
            sum: CompensatedSum::default(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            dev_sq: CompensatedSum::default(),
            dev: CompensatedSum::default(),
            sq: CompensatedSum::default(),
            scaled: CompensatedSum::default(),
            counts: vec![0; bins],
            scale: None,
        }
    }

    pub fn add1(&mut self, p: &Part1) {
        for &s in &p.sums {
            self.sum.add(s);
        }
        self.finite += p.finite;
        self.zeros += p.zeros;
        self.nan += p.nan;
        self.inf += p.inf;
        self.min = self.min.min(p.min);
        self.max = self.max.max(p.max);
    }

    /// The second pass's inputs; None when the tensor has no finite element (no second pass).
    pub fn plan(&mut self) -> Option<Plan2> {
        if self.finite == 0 {
            return None;
        }
        let mean = self.sum.value() / self.finite as f64;
        let (lo, hi) = Histogram::range_for(self.min, self.max).unwrap_or((self.min, self.max));
        let max_abs = self.min.abs().max(self.max.abs());
        let scale = (max_abs > 0.0 && !(1e-140..=1e140).contains(&max_abs)).then(|| 1.0 / max_abs);
        self.scale = scale;
        let hist = (self.bins > 0 && lo < hi).then_some((lo, hi, self.bins));
        Some(Plan2 { mean, scale, hist, bins: self.bins })
    }

    pub fn add2(&mut self, p: &Part2) {
        for b in &p.blocks {
            self.dev_sq.add(b.dev_sq);
            self.dev.add(b.dev);
            self.sq.add(b.sq);
            if self.scale.is_some() {
                self.scaled.add(b.scaled);
            }
        }
        for (a, b) in self.counts.iter_mut().zip(&p.counts) {
            *a += b;
        }
    }

    pub fn finish(&self) -> TensorStats {
        let nan = f64::NAN;
        let n = self.finite;
        if n == 0 {
            return TensorStats {
                numel: self.numel,
                l2: 0.0,
                mean: nan,
                std: nan,
                min: nan,
                max: nan,
                max_abs: nan,
                zero_frac: 0.0,
                nan_count: self.nan,
                inf_count: self.inf,
                histogram: Histogram { lo: nan, hi: nan, counts: vec![0; self.bins] },
            };
        }
        let mean = self.sum.value() / n as f64;
        let (lo, hi) = Histogram::range_for(self.min, self.max).unwrap_or((self.min, self.max));
        // Corrected two-pass variance: Σd² − (Σd)²/n removes the rounding error left in the mean.
        let dev = self.dev.value();
        let m2 = (self.dev_sq.value() - dev * dev / n as f64).max(0.0);
        let std = if n >= 2 { (m2 / (n - 1) as f64).sqrt() } else { nan };
        let max_abs = self.min.abs().max(self.max.abs());
        // ‖x‖₂ from Σx²; when that over- or underflowed (f64 tensors with huge or tiny values), from
        // Σ(x / max|x|)² like LAPACK's dnrm2.
        let sum_sq = self.sq.value();
        let l2 = if max_abs == 0.0 {
            0.0
        } else if (sum_sq.is_finite() && sum_sq > 1e-290) || self.scale.is_none() {
            sum_sq.sqrt()
        } else {
            self.scaled.value().sqrt() * max_abs
        };
        TensorStats {
            numel: self.numel,
            l2,
            mean,
            std,
            min: self.min,
            max: self.max,
            max_abs,
            zero_frac: if self.numel == 0 { 0.0 } else { self.zeros as f64 / self.numel as f64 },
            nan_count: self.nan,
            inf_count: self.inf,
            histogram: Histogram { lo, hi, counts: self.counts.clone() },
        }
    }
}

/// Re-cuts a stream of chunks of any sizes into runs of whole blocks (the last one may end short at
/// the tensor's end), so [`part1`]/[`part2`] see the same blocks however the tensor was read.
#[derive(Debug, Default)]
pub(crate) struct Blocker {
    f32s: Vec<f32>,
    f64s: Vec<f64>,
}

impl Blocker {
    /// Feeds the next chunk; `f` gets each run of whole blocks as it completes.
    pub fn push(&mut self, xs: ChunkValues<'_>, f: &mut dyn FnMut(ChunkValues<'_>)) {
        fn go<T: Copy>(buf: &mut Vec<T>, mut xs: &[T], f: &mut dyn FnMut(&[T])) {
            if !buf.is_empty() {
                let take = (BLOCK - buf.len()).min(xs.len());
                buf.extend_from_slice(&xs[..take]);
                xs = &xs[take..];
                if buf.len() == BLOCK {
                    f(buf);
                    buf.clear();
                }
            }
            let whole = xs.len() / BLOCK * BLOCK;
            if whole > 0 {
                f(&xs[..whole]);
            }
            buf.extend_from_slice(&xs[whole..]);
        }
        match xs {
            ChunkValues::F32(v) => go(&mut self.f32s, v, &mut |c| f(ChunkValues::F32(c))),
            ChunkValues::F64(v) => go(&mut self.f64s, v, &mut |c| f(ChunkValues::F64(c))),
        }
    }

    /// The tensor ended: `f` gets the last, partial block (if any).
    pub fn finish(&mut self, f: &mut dyn FnMut(ChunkValues<'_>)) {
        if !self.f32s.is_empty() {
            f(ChunkValues::F32(&self.f32s));
        }
        if !self.f64s.is_empty() {
            f(ChunkValues::F64(&self.f64s));
        }
        self.f32s.clear();
        self.f64s.clear();
    }
}

/// Statistics of a tensor of `numel` elements streamed in chunks of any size, by `read`, which
/// feeds the whole tensor in order to the callback it is given and is called once per pass (twice:
/// the histogram needs the extremes first). Memory: one block, whatever the tensor's size.
pub fn stats_streamed<E>(
    numel: u64,
    bins: usize,
    mut read: impl FnMut(&mut dyn FnMut(ChunkValues<'_>)) -> Result<(), E>,
) -> Result<TensorStats, E> {
    let mut acc = TensorAcc::new(numel, bins);
    let mut blocker = Blocker::default();
    read(&mut |c| blocker.push(c, &mut |b| acc.add1(&part1(b))))?;
    blocker.finish(&mut |b| acc.add1(&part1(b)));
    if let Some(plan) = acc.plan() {
        read(&mut |c| blocker.push(c, &mut |b| acc.add2(&part2(b, &plan))))?;
        blocker.finish(&mut |b| acc.add2(&part2(b, &plan)));
    }
    Ok(acc.finish())
}

/// Σ(a − b)² per block of two equally long, block-aligned runs of two tensors (None when the lengths
/// differ); add them in order with [`DistanceAcc`].
pub fn sq_diff_blocks(a: ChunkValues<'_>, b: ChunkValues<'_>) -> Option<Vec<f64>> {
    fn go<A: Element, B: Element>(a: &[A], b: &[B]) -> Vec<f64> {
        a.chunks(BLOCK).zip(b.chunks(BLOCK)).map(|(x, y)| kernels::block_sq_diff(x, y)).collect()
    }
    if a.len() != b.len() {
        return None;
    }
    Some(match (a, b) {
        (ChunkValues::F32(x), ChunkValues::F32(y)) => go(x, y),
        (ChunkValues::F32(x), ChunkValues::F64(y)) => go(x, y),
        (ChunkValues::F64(x), ChunkValues::F32(y)) => go(x, y),
        (ChunkValues::F64(x), ChunkValues::F64(y)) => go(x, y),
    })
}

/// ‖a − b‖² accumulated from per-block sums in block order (compensated).
#[derive(Clone, Copy, Debug, Default)]
pub struct DistanceAcc(CompensatedSum);

impl DistanceAcc {
    pub fn add(&mut self, blocks: &[f64]) {
        for &s in blocks {
            self.0.add(s);
        }
    }
    pub fn value(&self) -> f64 {
        self.0.value()
    }
}

/// ‖a − b‖² between two tensors of the same length (None when lengths differ).
#[cfg(test)]
pub(crate) fn squared_distance(a: &Values, b: &Values) -> Option<f64> {
    let blocks = sq_diff_blocks(a.into(), b.into())?;
    let mut d = DistanceAcc::default();
    d.add(&blocks);
    Some(d.value())
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
    }

    /// Statistics from bit-pattern counts equal those of the two passes over the values (within the
    /// summation-order error of the latter; counts, extremes and NaN/Inf counts exactly) on f16 and bf16
    /// values including NaN, ±Inf, zeros, subnormals and a partial block; and counting in pieces, drained
    /// into totals in any order, gives the same bits.
    #[test]
    fn pattern_counts_give_the_two_pass_statistics() {
        for dt in [Dtype::BF16, Dtype::F16] {
            let mut x = 5u64;
            let mut bits: Vec<u16> = (0..3 * BLOCK + 77)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let v = ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 0.3 + 0.05;
                    match dt {
                        Dtype::BF16 => (v.to_bits() >> 16) as u16,
                        _ => half_bits(v),
                    }
                })
                .collect();
            // NaN, +Inf, -Inf, +0, -0, the smallest subnormal, in both types' encodings.
            for (i, b) in [0x7fc0u16, 0x7f80, 0xff80, 0, 0x8000, 1].iter().enumerate() {
                bits[100 + 17 * i] = match (dt, *b) {
                    (Dtype::F16, 0x7fc0) => 0x7e00,
                    (Dtype::F16, 0x7f80) => 0x7c00,
                    (Dtype::F16, 0xff80) => 0xfc00,
                    (_, b) => b,
                };
            }
            let bytes: Vec<u8> = bits.iter().flat_map(|h| h.to_le_bytes()).collect();
            let (mut w, mut w64) = (Vec::new(), Vec::new());
            let xs = match landscaped_formats::widen_into(dt, &bytes, &mut w, &mut w64) {
                ChunkValues::F32(v) => v.to_vec(),
                ChunkValues::F64(_) => unreachable!(),
            };
            let want = stats_of(&xs, 30);
            let mut patterns = PatternCounts::default();
            patterns.count_le(&bytes);
            assert_eq!(patterns.seen(), xs.len() as u64);
            let got = patterns.take_stats(xs.len() as u64, 30, dt).unwrap();
            assert_eq!(patterns.seen(), 0);
            for (g, w) in [(got.l2, want.l2), (got.mean, want.mean), (got.std, want.std)] {
                assert!(rel(g, w) < 1e-13, "{dt:?}: {g} vs {w}");
            }
            let exact = |s: &TensorStats| {
                (s.numel, s.min, s.max, s.max_abs, s.zero_frac, s.nan_count, s.inf_count, s.histogram.clone())
            };
            assert_eq!(exact(&got), exact(&want), "{dt:?}");
            assert_eq!((got.nan_count, got.inf_count), (1, 2));
            // Pieces of odd sizes, drained into totals in reverse order: the same bits.
            let mut totals = PatternTotals::default();
            let pieces: Vec<&[u8]> = bytes.chunks(2 * 1237).collect();
            for p in pieces.iter().rev() {
                patterns.count_le(p);
                patterns.drain_into(&mut totals);
            }
            let pieced = totals.stats(xs.len() as u64, 30, dt).unwrap();
            assert_eq!(format!("{pieced:?}"), format!("{got:?}"));
            assert!(PatternTotals::default().stats(0, 30, Dtype::F32).is_none());
        }
        // No finite element: as the two passes give it.
        let mut patterns = PatternCounts::default();
        patterns.count_le(&[0xc0, 0x7f, 0x80, 0x7f]);
        let s = patterns.take_stats(2, 30, Dtype::BF16).unwrap();
        assert_eq!((s.nan_count, s.inf_count, s.l2), (1, 1, 0.0));
        assert!(s.mean.is_nan() && s.std.is_nan());
    }

    /// f32 → f16 bits, rounded to nearest (enough for test data in f16's normal range).
    fn half_bits(v: f32) -> u16 {
        let b = v.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let e = ((b >> 23) & 0xff) as i32 - 127 + 15;
        if e <= 0 {
            return sign;
        }
        let m = (b & 0x7f_ffff) >> 13;
        sign | ((e as u16) << 10) | m as u16
    }
}
