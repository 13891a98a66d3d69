//! Loss-landscape slices: grid specs (`min:max:num`), directions (filter/layer/none normalized random,
//! PCA, interpolation between checkpoints), slice values with resume, and handing grid points to
//! workers (`dispatch`, on the task scheduler of `crate::workers::scheduler`).

pub mod dispatch;
pub mod export;
pub mod pca_dirs;
pub mod runner;
pub mod slice;
