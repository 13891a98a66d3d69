//! Keeping the daemon's resident memory where its work puts it, and handing back what it freed.
//!
//! The daemon's peak comes from one checkpoint at a time (bounded chunks, a pickle's value tree), but
//! glibc keeps what a multi-threaded program frees: in per-thread arenas (up to 8 per core), and below a
//! mmap threshold that grows to 32 MiB after the first large free. A hostile run that made a 28 MB
//! `data.pkl` be parsed left 548 MB resident for good (trimmed by hand: 112 MB). So, at start, before any
//! thread exists: two arenas and fixed mmap / trim thresholds (large buffers are mapped and unmapped
//! whole); and while running, [`return_freed`] trims the heaps every few seconds (`malloc_trim`, which
//! also releases free pages inside a heap).

use std::time::Duration;

use crate::daemon::shutdown::Shutdown;

/// How often freed memory is handed back to the kernel.
pub(crate) const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Allocations from this size up are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Bounds the allocator's retention (glibc only; elsewhere nothing to do). Call before threads start.
pub(crate) fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the daemon starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Hands freed heap memory back to the kernel now.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims every [`TRIM_INTERVAL`] until shutdown.
pub(crate) async fn return_freed(shutdown: Shutdown) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = tokio::task::spawn_blocking(trim).await;
            }
            _ = shutdown.wait() => return,
        }
    }
}
