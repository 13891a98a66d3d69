//! The text landscaped writes (TensorBoard's text dashboard, markdown): the run's settings, and what
//! each group of tags means. [`CONVENTIONS`] holds one entry per group; a new job adds its own.

/// (tag, markdown) of each group's conventions, written once at step 0.
pub const CONVENTIONS: &[(&str, &str)] = &[
    (
        "landscaped/conventions/weights",
        "**landscaped/weights/**: `global_norm` ‖θ‖₂ over every float tensor of the checkpoint; \
         `dist_from_first` ‖θ − θ_first‖₂ from the run's first checkpoint; `update_norm` ‖θ − θ_prev‖₂ \
         since the previous checkpoint; `update_cosine` cos(θ − θ_prev, θ_prev − θ_prev2), the direction \
         change between consecutive updates; `nan_count`, `inf_count` non-finite elements. Distances \
         leave out tensors the reference lacked. The step is the checkpoint's training step.",
    ),
    (
        "landscaped/conventions/tensors",
        "**landscaped/tensor_norm/NAME** ‖W‖₂ of one tensor (finite elements); **landscaped/histogram/NAME** \
         its weight histogram: the buckets landscaped stores (equal widths over [min, max] of the tensor, \
         torch.histc's rule), from the first to the last non-empty bucket. The tensors: the ones matching \
         the configured globs, then the largest by element count (the rule of /metrics' \
         `landscaped_tensor_norm`).",
    ),
    (
        "landscaped/conventions/sharpness",
        "**landscaped/sharpness/**: `lambda_max`, `lambda_min` the largest and smallest algebraic Hessian \
         eigenvalues (Lanczos); `ratio` |λmin/λmax| (the loss-landscape paper's convexity measure); \
         `trace` Hutchinson's estimate of tr(H) and `trace_std_error` its standard error; `base_loss` \
         L(θ) on the evaluation set; `measure/NAME` each sharpness measure (keskar, sam, ...) at its \
         configured radius. Images: `landscaped/image/spectrum`, the eigenvalue density (SLQ).",
    ),
    (
        "landscaped/conventions/slices",
        "**landscaped/slice/KIND/** (KIND random, pca or interpolation), at the slice's centre step: \
         `centre_loss` the checkpoint's own loss; `curvature_x`, `curvature_y` the second finite \
         difference (L(x₊) − 2L(x₀) + L(x₋))/h² about the grid point nearest 0 along the line through \
         the centre (as `landscaped_slice_curvature`). Directions are filter-normalized unless the job \
         says otherwise. Images: `landscaped/image/slice_KIND`, contours (2D, with the optimizer path on \
         PCA slices) or the loss curve (1D).",
    ),
    (
        "landscaped/conventions/pca",
        "**landscaped/pca/explained_variance_ratio/pcK** the share of the trajectory's variance along \
         the K-th principal direction, at the newest step of the PCA. Image: `landscaped/image/trajectory`, \
         the checkpoints on the PC1/PC2 plane (coordinates ⟨θ_i − θ_c, v_k⟩, the centre at the origin).",
    ),
];

/// The tag of the run's settings.
pub const SETTINGS_TAG: &str = "landscaped/settings";
