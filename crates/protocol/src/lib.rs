//! The worker protocol: how `landscaped` (the caller) and a model worker talk. Its Rust types are the
//! source of truth; docs/worker-protocol.md describes them and the Python worker
//! (`python/landscaped_worker`) is checked against them.
//!
//! - [`messages`]: the versioned requests and replies, error kinds and handles;
//! - [`transport`]: frames (length + MessagePack) and what carries them (a pipe, a socket);
//! - [`connect`]: a worker's side of dialling in over TCP (the coordinator's side is the app's);
//! - [`loss`]: the loss names of the model contract;
//! - [`export_dir`]: the export folder a TorchScript contract is read from.
//!
//! No model work, no store, no async runtime: both the daemon and the TorchScript worker link this.

pub mod connect;
pub mod export_dir;
pub mod loss;
pub mod messages;
pub mod transport;

pub use messages::PROTOCOL_VERSION;
