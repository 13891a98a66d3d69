//! Stability: curvature against the optimizer's own limit (docs/stability.md).
//!
//! On a quadratic an optimizer diverges along a direction whose curvature exceeds its threshold; training
//! drives the measured curvature up to that threshold and keeps it there (the edge of stability, Cohen et
//! al. 2021; adaptive methods, Cohen et al. 2022). Here, in plain numbers:
//!
//! - [`threshold`]: the thresholds of PyTorch's SGD (plain, heavy-ball with dampening, Nesterov) and of
//!   Adam/AdamW's preconditioned sharpness, each a small function named after its formula;
//! - [`preconditioner`]: Adam's diagonal preconditioner P at a checkpoint, and the scaling D = P^{-1/2}
//!   (η folded in when parameter groups differ) that Lanczos runs on;
//! - [`scaled`]: a Hessian space whose products are D·H·D (vectors stay where the space keeps them);
//! - [`critical`]: critical sharpness (Kalra et al. 2026), λc = 2/ηc from a forward-only line search;
//! - [`update`]: the optimizer's real next update from its state and one gradient (PyTorch's step rule),
//!   the direction critical sharpness searches along.

pub mod critical;
pub mod preconditioner;
pub mod scaled;
pub mod threshold;
pub mod update;
