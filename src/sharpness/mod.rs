//! Curvature and sharpness: Lanczos for Hessian extremes, Hutchinson's trace, stochastic Lanczos
//! quadrature, and the sharpness measures (Keskar ε-sharpness, SAM, ASAM, filter-normalized loss rise).
//!
//! Everything here but [`compute`] is plain Rust over two traits: [`operator::LinearOperator`] (a
//! symmetric operator: the Hessian through HVPs, or an explicit matrix in tests) and
//! [`measures::Objective`] (loss and gradient at a parameter vector). The model implements both in
//! `crate::model::hvp`; [`compute`] drives a model through it. Nothing here touches tch.

pub mod compute;
pub mod daemon_job;
pub mod density;
pub mod lanczos;
pub mod measures;
pub mod operator;
pub mod power;
pub mod rng;
pub mod trace;
pub mod tridiag;
