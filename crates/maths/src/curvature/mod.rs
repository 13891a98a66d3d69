//! Curvature and sharpness: Lanczos for Hessian extremes, power iteration, Hutchinson's trace, stochastic
//! Lanczos quadrature, and the sharpness measures (Keskar ε-sharpness, SAM, ASAM, filter-normalized loss
//! rise).
//!
//! Everything here is plain Rust over [`space::HessianSpace`]: the parameter space at a point, with HVPs,
//! loss and gradient there, whose vectors are handles held elsewhere — by a model worker through the
//! worker protocol (the app's `sharpness::remote::WorkerSpace`), or in memory ([`memory::MemorySpace`]
//! over an explicit [`operator::LinearOperator`] + [`measures::Objective`], in the tests). Lanczos,
//! Hutchinson and SLQ ship no vectors; the sharpness measures run over [`measures::Objective`], which
//! [`space::SpaceObjective`] provides on any space. Spreading probes over several workers is the app's
//! (`sharpness::spread`).

pub mod density;
pub mod lanczos;
pub mod measures;
pub mod memory;
pub mod operator;
pub mod power;
pub mod rng;
pub mod space;
pub mod trace;
pub(crate) mod tridiag;
