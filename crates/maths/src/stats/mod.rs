//! Weight statistics: per-tensor moments and histograms, per-checkpoint norms, distances and update
//! cosines. Plain numbers in, plain numbers out: no I/O, no store.
//!
//! Conventions (checked against PyTorch in float64 by tests/stats_agreement.rs):
//! - Everything is accumulated in f64: f32/f16/bf16 values are widened exactly, sums are blocked (8 lanes
//!   inside blocks of 4096 elements) and the block sums are added with Neumaier compensation.
//! - Moments, norm, min/max and the histogram are taken over the *finite* elements; NaN and ±Inf are only
//!   counted (`nan_count`, `inf_count`), so one bad value doesn't wipe out the rest. On an all-finite tensor
//!   this is exactly what `torch.linalg.vector_norm`, `mean`, `std`, `min`, `max` and `histc` give.
//! - `std` is the *unbiased* sample standard deviation (divisor n − 1), torch.std's default; NaN for n < 2.
//! - The histogram is torch.histc / TensorBoard v2: `bins` equal-width buckets over [min, max] (30 by
//!   default), the maximum falls in the last bucket, a constant tensor gets the range [x − 1, x + 1].

pub mod checkpoint;
pub mod histogram;
mod kernels;

/// Elements per block: statistics are summed per block at fixed offsets (see `kernels`); chunks that
/// are multiples of it are processed independently and merged exactly.
pub const BLOCK_ELEMENTS: usize = kernels::BLOCK;
pub(crate) mod moments;

pub use checkpoint::{global_norm, update_cosine};
pub use histogram::{DEFAULT_BINS, Histogram};
pub use moments::{
    DistanceAcc, Part1, Part2, PatternCounts, PatternTotals, Plan2, TensorAcc, TensorStats, part1, part2,
    sq_diff_blocks, stats_streamed, tensor_stats,
};
