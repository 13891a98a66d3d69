//! The sinks ingest streams a checkpoint's tensors to while it reads them once: the [`TensorSink`]
//! contract, and the one error a sink may give that ingest treats apart ([`DoesNotFit`]). Its own module
//! so that ingest (which calls sinks) and the trajectory archive (a sink) each depend on it, not on each
//! other.

use landscaped_formats::{Checkpoint, ChunkValues};

/// Something else that wants every float tensor of a checkpoint while it is being ingested (e.g. the
/// trajectory archive), so each checkpoint is read from disk once.
///
/// Call order: `begin`, then `chunk` for every chunk of every float tensor, then `finish` once the
/// store batch is ready to commit (or `abort` if ingest failed: the sink must leave no partial state).
/// Chunks arrive **from several threads at once and in any order**, each element exactly once:
/// `chunk(index, start, values)` holds elements `start .. start + values.len()` of tensor `index` of
/// the checkpoint given to `begin`. A checkpoint found `unchanged` by its file stamps never reaches the
/// sinks; one found `unchanged` by its fingerprint (after reading) gets `abort`.
pub trait TensorSink: Sync {
    fn begin(&mut self, run: &str, step: u64, checkpoint: &Checkpoint) -> anyhow::Result<()>;
    fn chunk(&self, index: usize, start: usize, values: ChunkValues<'_>) -> anyhow::Result<()>;
    fn finish(&mut self) -> anyhow::Result<()>;
    fn abort(&mut self);
}

/// A sink's refusal of a checkpoint that needs more space than there is: `ever` when more than the
/// whole filesystem (retrying cannot help), else more than is free now.
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub(crate) struct DoesNotFit {
    pub why: String,
    pub ever: bool,
}
