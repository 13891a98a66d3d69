//! Measured progress of the ingests in flight, for `/healthz` and the stall limit: each worker's item
//! records when it started and when it last moved (a phase done, a chunk of tensor data read). An item
//! that has not moved for longer than `stall_limit` makes `/healthz` answer 503 with the path and how
//! long it has been stuck; the scheduler stops waiting for it (see [`crate::daemon::scheduler`]).

use crate::sink::TensorSink;
use landscaped_formats::{Checkpoint, ChunkValues};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Slot {
    run: String,
    path: PathBuf,
    last: Instant,
}

#[derive(Default)]
pub struct Progress {
    slots: Mutex<HashMap<u64, Slot>>,
    next: AtomicU64,
}

/// An item in flight; dropping it ends it.
pub struct Ticket<'a> {
    progress: &'a Progress,
    id: u64,
}

impl Progress {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking an item.
    pub fn begin(&self, run: &str, path: &std::path::Path) -> Ticket<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.slots()
            .insert(id, Slot { run: run.to_string(), path: path.to_path_buf(), last: Instant::now() });
        Ticket { progress: self, id }
    }

    /// The item that has gone longest without progress, if longer than `limit`: (run, path, for how long).
    pub fn stalled(&self, limit: Duration) -> Option<(String, PathBuf, Duration)> {
        let now = Instant::now();
        self.slots()
            .values()
            .map(|s| (s, now.saturating_duration_since(s.last)))
            .filter(|(_, d)| *d >= limit)
            .max_by_key(|(_, d)| *d)
            .map(|(s, d)| (s.run.clone(), s.path.clone(), d))
    }

    /// How long the item of `run` at `path` has gone without progress (None when not in flight).
    pub(crate) fn idle_for(&self, run: &str, path: &std::path::Path) -> Option<Duration> {
        let now = Instant::now();
        self.slots()
            .values()
            .filter(|s| s.run == run && s.path == path)
            .map(|s| now.saturating_duration_since(s.last))
            .min()
    }
}

impl Ticket<'_> {
    /// The item moved.
    pub(crate) fn tick(&self) {
        if let Some(s) = self.progress.slots().get_mut(&self.id) {
            s.last = Instant::now();
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.progress.slots().remove(&self.id);
    }
}

/// A [`TensorSink`] that only ticks: every chunk ingest reads is progress.
pub(crate) struct ProgressSink<'a>(pub &'a Ticket<'a>);

impl TensorSink for ProgressSink<'_> {
    fn begin(&mut self, _run: &str, _step: u64, _checkpoint: &Checkpoint) -> anyhow::Result<()> {
        self.0.tick();
        Ok(())
    }
    fn chunk(&self, _index: usize, _start: usize, _values: ChunkValues<'_>) -> anyhow::Result<()> {
        self.0.tick();
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        self.0.tick();
        Ok(())
    }
    fn abort(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_without_progress_is_stalled_until_it_moves_or_ends() {
        let p = Progress::default();
        let t = p.begin("r", std::path::Path::new("/w/step-1.pt"));
        assert!(p.stalled(Duration::from_secs(3600)).is_none());
        let (run, path, _) = p.stalled(Duration::ZERO).unwrap();
        assert_eq!((run.as_str(), path.to_str().unwrap()), ("r", "/w/step-1.pt"));
        assert!(p.idle_for("r", std::path::Path::new("/w/step-1.pt")).is_some());
        t.tick();
        drop(t);
        assert!(p.stalled(Duration::ZERO).is_none());
    }
}
