//! Fault injection for tests: the daemon tests make the environment fail (a full disk, a denied open)
//! without root or a special filesystem. Off unless `LANDSCAPED_TEST_FAULTS` names a file; that file
//! (re-read at every check, so a test can switch faults on and off while the daemon runs) holds lines
//! `POINT=ERRNO`, e.g. `store_write=28` (ENOSPC) or `checkpoint_read=13` (EACCES).
//!
//! Points: `store_write` (every store commit and the recovery probe), `checkpoint_read` (before the
//! daemon reads a checkpoint). And a hang: `stall_path=PREFIX` + `stall_secs=S` make the daemon's
//! processing of a checkpoint under PREFIX sleep S seconds without progress (a read stuck on a hung
//! filesystem).

use std::sync::OnceLock;

fn fault_text() -> Option<String> {
    static FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let file = FILE.get_or_init(|| std::env::var_os("LANDSCAPED_TEST_FAULTS").map(Into::into)).as_ref()?;
    std::fs::read_to_string(file).ok()
}

/// How long processing `path` is to hang, if the fault file says so (`stall_path`, `stall_secs`).
pub fn stall(path: &std::path::Path) -> Option<std::time::Duration> {
    let text = fault_text()?;
    let value = |key: &str| {
        text.lines().find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == key).map(|(_, v)| v.trim()))
    };
    let prefix = value("stall_path")?;
    let secs: f64 = value("stall_secs")?.parse().ok()?;
    path.starts_with(prefix).then(|| std::time::Duration::from_secs_f64(secs))
}

/// The injected error at `point`, if the fault file names one.
pub(crate) fn injected(point: &str) -> Option<std::io::Error> {
    let text = fault_text()?;
    text.lines()
        .find_map(|l| {
            let (p, errno) = l.split_once('=')?;
            (p.trim() == point).then(|| errno.trim().parse::<i32>().ok()).flatten()
        })
        .map(std::io::Error::from_raw_os_error)
}
