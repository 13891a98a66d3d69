//! Spectral health of a layer from its weights alone: the empirical spectral density (ESD) of each
//! weight matrix and WeightWatcher's heavy-tailed metrics on it (Martin & Mahoney, "Implicit
//! self-regularization in deep neural networks", JMLR 2021; "Predicting trends in the quality of
//! state-of-the-art neural networks without access to training or testing data", Nat. Commun. 2021).
//!
//! Every quantity is defined as the installed `weightwatcher` 0.7.7 computes it with `analyze()`'s
//! defaults (`pool=True`, `conv2d_norm=True`, `pl_package="ww"`, `fit="PL"`, `min_evals=8`,
//! `max_evals=15000`, `max_N=50000`, `mp_fit=False`, CPU, i.e. scipy's SVD on float64); tests/spectra.rs
//! checks it against that library and against `torch.linalg.svdvals`. Where ours corresponds to theirs:
//!
//! | here | WeightWatcher 0.7.7 |
//! |---|---|
//! | [`layers::plan`]: which tensors are layers, their N, M, rf and the filter | `PyTorchLayer.layer_type`, `WWLayer.set_weight_matrices` + `conv2D_Wmats` (weightwatcher.py), `WWLayerIterator.layer_supported` |
//! | [`esd::esd`]: σ² of every slice, pooled, sorted ascending; Conv2d slices scaled by √(1/2) | `apply_normalize_Wmats` (`conv2d_norm`), `combined_eigenvalues`, `apply_esd` |
//! | [`powerlaw::fit`]: every eigenvalue but the last as xmin, α = 1 + n/Σ ln(λ/xmin), least KS distance; below 20 eigenvalues the small-N variant | `fit_powerlaw` (weightwatcher.py, eigenvalues > `EVALS_THRESH` = 1e-5), `WWFit` (WW_powerlaw.py: `fit_power_law_standard`, `fit_powerlaw_smallN`) |
//! | [`metrics::norm_metrics`]: log_norm, log_spectral_norm, α_weighted, log_alpha_norm, stable_rank, matrix rank and entropy | `apply_norm_metrics` (weightwatcher.py), `matrix_rank`, `matrix_entropy` (RMT_Util.py) |
//! | [`metrics::summary`]: mean α, fraction α < 2, mean α_weighted | `get_summary`, `OVER_TRAINED_THRESH` (constants.py) |
//!
//! Not reproduced: the Marchenko–Pastur fit and `num_spikes` (WeightWatcher computes them only with
//! `mp_fit=True`, not by default), randomization, fingers fixing, the truncated power law.
//!
//! Beyond WeightWatcher: a layer whose exact SVD is over the caller's budget can be approximated
//! ([`approx`]: exact top-k by Lanczos on the Gram operator [`gram`] + deflated SLQ, [`krylov`]); its
//! record says `exact = false` and names the method.
//!
//! Precision: the eigenvalues come from a values-only SVD of the matrix in f64 (faer; as WeightWatcher,
//! which widens to float64 before `scipy.linalg.svd`), not from the Gram matrix WᵀW, whose small
//! eigenvalues would lose relative accuracy. f32/f16/bf16 weights are widened exactly; f64 weights stay
//! f64 (WeightWatcher rounds them to float32 first: the only place the two can differ by design).

pub mod approx;
pub mod esd;
pub mod gram;
pub mod krylov;
pub mod layers;
pub mod metrics;
pub mod powerlaw;

pub use approx::{ApproxOptions, Approximation, approximate_layer};
pub use esd::{Esd, esd};
pub use layers::{LayerKind, LayerPlan, Skip, plan};
pub use metrics::{LayerSpectrum, Summary, analyze_layer, norm_metrics, summary};
pub use powerlaw::{PowerLawFit, fit};
