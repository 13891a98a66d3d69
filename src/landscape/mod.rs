//! Loss-landscape slices: grid specs (`min:max:num`), directions (filter/layer/none normalized random,
//! PCA, interpolation between checkpoints) and slice evaluation with resume.

pub mod directions;
pub mod export;
pub mod grid;
pub mod pca_dirs;
pub mod runner;
pub mod slice;
