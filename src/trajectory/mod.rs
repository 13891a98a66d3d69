//! The parameter trajectory: the archive of parameter vectors kept at ingest, the streaming Gram
//! matrix, PCA of the path (the paper's optimizer-path directions) and projections onto it.

pub mod archive;
pub mod gram;
pub mod pca;
pub mod select;
