//! landscaped's TorchScript model worker as a library: [`model`] (the only code that touches tch/libtorch:
//! loading the TorchScript contract, binding checkpoints, evaluation, grid points, Hessian-vector
//! products) and [`session`], which answers the worker protocol with it. The `landscaped-worker` binary
//! (`main.rs`) serves a session over stdin/stdout ([`bench`]: the in-process baseline of the benchmarks); the `landscaped` binary never links any of this.

pub mod bench;
pub mod model;
pub mod session;
