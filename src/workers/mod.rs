//! Model workers, seen from the caller: the versioned protocol (`protocol`), frames and what carries
//! them (`transport`), starting and talking to one worker process (`client`), the model contract as
//! users state it (`contract`, with the loss names in `loss` and the export folder in `export_dir`), and
//! how many workers a job gets and where they come from (`pool`; `listen` admits workers a cluster's
//! launcher started, dialling in over TCP; `connect` is the worker's side of that). A runner resolves
//! the contract once into a [`plan::ModelPlan`], starts a [`set::WorkerSet`] from it, and hands its
//! tasks to the workers with the [`scheduler`].
//!
//! Model work (loading the user's model, binding checkpoints, evaluating, Hessian-vector products) never
//! runs in the `landscaped` process, which doesn't link libtorch: it runs in a worker —
//! `landscaped-worker` (Rust + libtorch, the TorchScript contract; the `worker/` crate) or
//! `python -m landscaped_worker` (eager PyTorch in the user's Python, the factory contract; checkpoints
//! reach it through `handoff`) — that may crash without taking the daemon along. docs/worker-protocol.md
//! describes the protocol.

pub mod client;
pub mod contract;
pub mod handoff;
pub mod listen;
pub mod plan;
pub mod pool;
pub mod scheduler;
pub mod set;

pub use client::{Worker, WorkerError, WorkerOptions, locate_worker};
pub use contract::ModelContract;
