//! Ingesting one checkpoint: read it tensor by tensor, compute statistics, append to the trajectory
//! archive, and write all of its records to the store in one atomic batch. Used by the CLI's `ingest`
//! and by the daemon alike.

use crate::checkpoint::{Checkpoint, TensorInfo, Values};

/// Something else that wants every float tensor of a checkpoint while it is being ingested (e.g. the
/// trajectory archive), so each checkpoint is read from disk once.
///
/// Call order: `begin`, then `tensor` for each float tensor in checkpoint order, then `finish` once the
/// store batch is ready to commit (or `abort` if ingest failed: the sink must leave no partial state).
pub trait TensorSink {
    fn begin(&mut self, run: &str, step: u64, checkpoint: &Checkpoint) -> anyhow::Result<()>;
    fn tensor(&mut self, info: &TensorInfo, values: &Values) -> anyhow::Result<()>;
    fn finish(&mut self) -> anyhow::Result<()>;
    fn abort(&mut self);
}
