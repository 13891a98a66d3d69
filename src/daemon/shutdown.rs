//! Graceful shutdown: SIGTERM or SIGINT cancels the daemon's [`Cancel`] token (reason
//! [`Reason::Shutdown`]) that every part of the daemon checks (async tasks wait on it). The watcher and
//! scans stop taking work, workers finish the item they hold (ingest is atomic, so an abandoned item
//! would simply be redone), jobs see `cancelled()`, then the store is flushed and the process exits 0.

use crate::cancel::{Cancel, Reason};
use std::sync::Arc;

#[derive(Clone)]
pub struct Shutdown {
    cancel: Cancel,
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, _) = tokio::sync::watch::channel(false);
        Shutdown { cancel: Cancel::new(), tx: Arc::new(tx) }
    }

    pub(crate) fn trigger(&self) {
        self.cancel.cancel(Reason::Shutdown);
        self.tx.send_replace(true);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The token itself (for blocking code and jobs; a job's own token is a child of it).
    pub fn cancel(&self) -> Cancel {
        self.cancel.clone()
    }

    /// Resolves once shutdown is triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Spawns the task that turns SIGTERM/SIGINT into [`Shutdown::trigger`].
    pub(crate) fn listen_for_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: finishing the current item, then exiting"),
                _ = int.recv() => tracing::info!("SIGINT: finishing the current item, then exiting"),
            }
            me.trigger();
        });
        Ok(())
    }
}
