//! Is the run stable? Per checkpoint, the optimizer's stability threshold against λmax of the Hessian,
//! the preconditioned λ1(P⁻¹H) for adaptive optimizers and critical sharpness (docs/stability.md), for
//! `landscaped stability` and the daemon's stability job alike:
//!
//! - [`optimizer`]: [`optimizer::OptimizerInput`], what the job knows of the optimizer (kind,
//!   hyperparameters, the learning rate, where the per-parameter second moment comes from), resolved to
//!   a threshold or to a note saying what is missing;
//! - [`scaling`]: Adam's D = P^{-1/2} per parameter tensor from the second moment, written for the worker;
//! - [`state`]: the checkpoint's own optimizer state (formats' `OptimizerState::open`) mapped to the
//!   model's parameter names and laid over the input (the state is the truth; the config fills gaps);
//! - [`direction`]: the optimizer's real next update from that state and one gradient;
//! - [`runner`]: the whole job at one checkpoint (worker, Lanczos with warm start, the scaled Lanczos,
//!   the line search) into a [`StabilityRecord`](crate::store::stability::StabilityRecord).

pub mod direction;
pub mod optimizer;
pub mod runner;
pub mod scaling;
pub mod state;
