//! TensorBoard event files written by landscaped itself, in plain Rust: a run's landscape (weight
//! norms and distances, per-tensor norms and histograms, sharpness, slice summaries, the charts, the
//! settings) beside the trainer's own event files, so TensorBoard shows both as one run.
//!
//! - [`record`]: TFRecord framing (length, masked CRC-32C, payload, masked CRC-32C) and its reader;
//! - [`proto`]: the protobuf messages (prost derive);
//! - [`writer`]: landscaped's event file in a folder: named like TensorBoard's own, reopened and
//!   repaired after a crash, steps only going up per tag;
//! - [`select`]: the tensors that get their own series;
//! - [`scalars`], [`images`], [`texts`]: what goes in, one list of sources per record kind;
//! - [`run_log`]: a run's records → events, for `landscaped export tensorboard` and the daemon's
//!   `tensorboard = "DIR"` key.

pub mod images;
pub mod proto;
pub mod record;
pub mod run_log;
pub mod scalars;
pub mod select;
pub mod texts;
pub mod writer;

pub use run_log::{RunLog, Written};
pub use select::TensorChoice;
