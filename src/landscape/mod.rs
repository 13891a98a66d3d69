//! Loss-landscape slices: grid specs (`min:max:num`), directions (filter/layer/none normalized random,
//! PCA, interpolation between checkpoints) and slice evaluation with resume.
