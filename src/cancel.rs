//! One way to stop model work: a [`Cancel`] token, cheap to clone, that says *why* it was cancelled.
//! The CLI's Ctrl-C ([`Cancel::on_signals`]), the daemon's shutdown and a slice job's "a newer
//! checkpoint came" all cancel a token; the scheduler, the wait for dialling-in workers and the
//! sharpness runs only ask [`Cancel::is_cancelled`]. A job's own token is a [`Cancel::child`] of the
//! daemon's: cancelling the job leaves the daemon running, shutting the daemon down stops the job — no
//! thread copies one flag into another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Why work was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// SIGINT or SIGTERM (the CLI's Ctrl-C).
    Signal,
    /// The daemon is shutting down.
    Shutdown,
    /// A newer checkpoint of the run was ingested (a slice job with `abandon_on_newer`).
    NewerCheckpoint,
    /// The caller asked (e.g. enough results, or a test hook).
    Requested,
}

impl Reason {
    fn code(self) -> u8 {
        match self {
            Reason::Signal => 1,
            Reason::Shutdown => 2,
            Reason::NewerCheckpoint => 3,
            Reason::Requested => 4,
        }
    }

    fn from_code(c: u8) -> Option<Reason> {
        match c {
            1 => Some(Reason::Signal),
            2 => Some(Reason::Shutdown),
            3 => Some(Reason::NewerCheckpoint),
            4 => Some(Reason::Requested),
            _ => None,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Signal => "signal",
            Reason::Shutdown => "shutdown",
            Reason::NewerCheckpoint => "newer checkpoint",
            Reason::Requested => "requested",
        })
    }
}

/// Work a [`Cancel`] token stopped before it finished, with why: what a runner returns when there is
/// nothing to keep (a sharpness report, a ratio map: no partial result is stored). The CLI exits with
/// status 130 on it, as after an interrupted command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cancelled ({reason})")]
pub struct Cancelled {
    pub reason: Reason,
}

impl Cancelled {
    /// The `Cancelled` anywhere in `e`'s chain of causes.
    pub fn in_chain(e: &anyhow::Error) -> Option<Cancelled> {
        e.chain().find_map(|c| c.downcast_ref::<Cancelled>()).copied()
    }
}

/// Set by the process's SIGINT/SIGTERM handler ([`Cancel::on_signals`]); read by tokens that follow it.
static SIGNALLED: AtomicU8 = AtomicU8::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // The first signal cancels (the work stops at its next safe point and is saved); the second exits.
    if SIGNALLED.swap(1, Ordering::SeqCst) != 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

struct Inner {
    reason: AtomicU8,
    parent: Option<Cancel>,
    follows_signals: bool,
}

/// A cancellation token: clones share it; see the module docs.
#[derive(Clone)]
pub struct Cancel(Arc<Inner>);

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cancel({:?})", self.reason())
    }
}

impl Cancel {
    /// A token nothing has cancelled yet.
    pub fn new() -> Cancel {
        Cancel(Arc::new(Inner { reason: AtomicU8::new(0), parent: None, follows_signals: false }))
    }

    /// A token cancelled by the process's first SIGINT or SIGTERM (reason [`Reason::Signal`]); the
    /// second exits at once with status 130. Installs the handler.
    pub(crate) fn on_signals() -> Cancel {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        // SAFETY: installing a handler that only touches an atomic and calls _exit.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
            libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        }
        Cancel(Arc::new(Inner { reason: AtomicU8::new(0), parent: None, follows_signals: true }))
    }

    /// A token cancelled with this one (and then reporting this one's reason), or on its own.
    pub fn child(&self) -> Cancel {
        Cancel(Arc::new(Inner {
            reason: AtomicU8::new(0),
            parent: Some(self.clone()),
            follows_signals: false,
        }))
    }

    /// Cancels (the first reason given is kept). A signal-following token also counts as signalled,
    /// so that a second Ctrl-C exits as after a real first one.
    pub fn cancel(&self, reason: Reason) {
        let _ = self.0.reason.compare_exchange(0, reason.code(), Ordering::SeqCst, Ordering::SeqCst);
        if self.0.follows_signals {
            SIGNALLED.store(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// A safe point: `Err(Cancelled)` once cancelled.
    pub(crate) fn check(&self) -> Result<(), Cancelled> {
        match self.reason() {
            Some(reason) => Err(Cancelled { reason }),
            None => Ok(()),
        }
    }

    /// Why it was cancelled: its own reason, else a signal (if it follows them), else its parent's.
    pub fn reason(&self) -> Option<Reason> {
        if let Some(r) = Reason::from_code(self.0.reason.load(Ordering::Relaxed)) {
            return Some(r);
        }
        if self.0.follows_signals && SIGNALLED.load(Ordering::Relaxed) != 0 {
            return Some(Reason::Signal);
        }
        self.0.parent.as_ref().and_then(Cancel::reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_and_the_first_reason_is_kept() {
        let c = Cancel::new();
        let d = c.clone();
        assert!(!d.is_cancelled() && d.reason().is_none());
        c.cancel(Reason::NewerCheckpoint);
        c.cancel(Reason::Shutdown);
        assert_eq!(d.reason(), Some(Reason::NewerCheckpoint));
    }

    #[test]
    fn a_child_stops_with_its_parent_but_not_the_other_way() {
        let daemon = Cancel::new();
        let job = daemon.child();
        job.cancel(Reason::NewerCheckpoint);
        assert!(job.is_cancelled() && !daemon.is_cancelled());
        let job2 = daemon.child();
        daemon.cancel(Reason::Shutdown);
        assert_eq!(job2.reason(), Some(Reason::Shutdown));
        // A child cancelled first keeps its own reason.
        assert_eq!(job.reason(), Some(Reason::NewerCheckpoint));
    }

    #[test]
    fn a_safe_point_fails_with_the_reason_found_under_context() {
        let c = Cancel::new();
        assert!(c.check().is_ok());
        c.cancel(Reason::Signal);
        let e = anyhow::Error::new(c.check().unwrap_err()).context("Lanczos at grid point (x = 0, y = 0)");
        assert_eq!(Cancelled::in_chain(&e), Some(Cancelled { reason: Reason::Signal }));
        assert_eq!(Cancelled::in_chain(&anyhow::anyhow!("worker died")), None);
        assert_eq!(Cancelled { reason: Reason::Signal }.to_string(), "cancelled (signal)");
    }
}
