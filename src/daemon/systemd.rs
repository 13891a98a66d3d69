//! systemd integration (Type=notify): READY=1 once the initial scan has queued everything, STATUS=
//! lines, WATCHDOG=1 pings from the scheduler loop (so a stuck loop stops the pings and systemd
//! restarts us), STOPPING=1 at shutdown. Everything is a no-op outside systemd (no $NOTIFY_SOCKET).

use std::time::Duration;

pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
}

pub(crate) fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

pub(crate) fn watchdog_ping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}

/// How often to ping the watchdog (half its timeout), if systemd enabled it for us.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
