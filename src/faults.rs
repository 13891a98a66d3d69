//! Fault injection for tests: the daemon tests make the environment fail (a full disk, a denied open)
//! without root or a special filesystem. Off unless `LANDSCAPED_TEST_FAULTS` names a file; that file
//! (re-read at every check, so a test can switch faults on and off while the daemon runs) holds lines
//! `POINT=ERRNO`, e.g. `store_write=28` (ENOSPC) or `checkpoint_read=13` (EACCES).
//!
//! Points: `store_write` (every store commit and the recovery probe), `checkpoint_read` (before the
//! daemon reads a checkpoint).

use std::sync::OnceLock;

/// The injected error at `point`, if the fault file names one.
pub fn injected(point: &str) -> Option<std::io::Error> {
    static FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let file = FILE.get_or_init(|| std::env::var_os("LANDSCAPED_TEST_FAULTS").map(Into::into)).as_ref()?;
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| {
            let (p, errno) = l.split_once('=')?;
            (p.trim() == point).then(|| errno.trim().parse::<i32>().ok()).flatten()
        })
        .map(std::io::Error::from_raw_os_error)
}
