//! The sidecar never competes with the trainer: at start, before any thread exists (so every thread
//! inherits it), the daemon lowers its CPU priority (nice), moves its I/O to the idle class, and
//! hides GPUs unless the config allows them.

/// Applies the config's priority settings to this process. Call before starting threads.
pub(crate) fn lower_priority(nice: i32, io_idle: bool) {
    // SAFETY: plain syscalls on this process with integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        tracing::warn!("could not set nice {nice}: {}", std::io::Error::last_os_error());
    }
    if io_idle {
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
        // SAFETY: ioprio_set(which, who, ioprio) takes three integers.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0 as libc::c_long,
                IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
            )
        };
        if rc != 0 {
            tracing::warn!("could not set idle I/O priority: {}", std::io::Error::last_os_error());
        }
    }
}

/// Hides every GPU from this process (and what it loads later, e.g. libtorch).
///
/// Must be called before any other thread exists (environment writes race with reads elsewhere).
pub(crate) fn hide_gpus() {
    // SAFETY: called from `daemon::server::run` before the runtime or any thread is started.
    unsafe { std::env::set_var("CUDA_VISIBLE_DEVICES", "") };
}
