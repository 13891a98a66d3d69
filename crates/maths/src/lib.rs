//! The maths of landscaped, in plain Rust over plain numbers: no I/O, no store, no model.
//!
//! - [`stats`]: per-tensor moments and histograms, norms, distances and update cosines (f64-accurate,
//!   streamed chunk by chunk);
//! - [`curvature`]: Lanczos, power iteration, Hutchinson's trace, SLQ density and the sharpness measures
//!   (Keskar ε-sharpness, SAM, ASAM, loss rise), over a Hessian space whose vectors live elsewhere;
//! - [`directions`] and [`grid`]: the paper's filter-normalized directions and `min:max:num` axes;
//! - [`eigen`]: symmetric eigendecomposition (the trajectory's Gram matrix for PCA).
//! - [`stability`]: the optimizers' stability thresholds, Adam's preconditioner, critical sharpness.
//! - [`spectra`]: each layer's empirical spectral density and WeightWatcher's heavy-tailed metrics.
//!
//! It reads tensor values in the form the checkpoint readers hand them out (`landscaped_formats`'
//! [`Values`](landscaped_formats::Values) and [`ChunkValues`](landscaped_formats::ChunkValues)); nothing
//! else crosses from the formats.

pub mod curvature;
pub mod directions;
pub mod eigen;
pub mod grid;
pub mod optimizer;
pub mod spectra;
pub mod stability;
pub mod stats;
