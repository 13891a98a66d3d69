//! Curvature and sharpness jobs: running the estimators of `landscaped_maths::curvature` against model
//! workers. [`remote::WorkerSpace`] is a Hessian space whose vectors live in a worker, [`spread`] hands
//! Hutchinson's and SLQ's probes to several workers, [`compute`] chooses and runs the measures and
//! [`runner`] is the whole job (resolve the model, start the workers, compute, save once).

pub mod compute;
pub mod remote;
pub mod runner;
pub mod spread;
