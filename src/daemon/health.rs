//! The health of what the daemon writes besides the store: the trajectory archive
//! (`<data_dir>/trajectory/`). An ingest whose archive write fails (disk full, I/O error) is retried
//! with backoff like any environment error, and marks the archive unwritable with its cause until a
//! later ingest writes it again; `/healthz` answers 503 meanwhile, as it does for a failed store write
//! ([`crate::store::Store::health`]).

use std::sync::Mutex;

#[derive(Default)]
pub struct ArchiveHealth {
    error: Mutex<Option<String>>,
}

impl ArchiveHealth {
    /// An archive write failed with `cause`.
    pub fn failed(&self, cause: String) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(cause);
    }

    /// An ingest wrote the archive: it is writable again.
    pub fn ok(&self) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// None while writes succeed; else the cause of the last failure.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_lasts_until_the_next_successful_write() {
        let h = ArchiveHealth::default();
        assert_eq!(h.error(), None);
        h.failed("No space left on device".into());
        assert_eq!(h.error().as_deref(), Some("No space left on device"));
        h.ok();
        assert_eq!(h.error(), None);
    }
}
