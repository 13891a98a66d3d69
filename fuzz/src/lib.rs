//! The checkpoint readers of landscaped, compiled on their own for fuzzing (no libtorch), and the
//! functions the fuzz targets call.

#[path = "../../src/checkpoint/mod.rs"]
pub mod checkpoint;

/// The pickle scanner on its own (it is private to `checkpoint`; the file needs nothing else).
#[path = "../../src/checkpoint/pickle_scan.rs"]
#[allow(dead_code)]
mod pickle_scan;

/// Scan arbitrary bytes as a pickle (`data.pkl`): refused or malformed is fine; a panic, a hang or
/// unbounded memory is a bug. What it accepts must name only allowed globals.
pub fn scan_pickle(data: &[u8]) {
    if let Ok(scan) = pickle_scan::scan(data) {
        for g in &scan.globals {
            let (module, name) = g.rsplit_once('.').unwrap_or(("", g));
            assert!(pickle_scan::allowed(module, name), "accepted a pickle naming {g}");
        }
    }
}

use std::io::Write;
use std::path::PathBuf;

/// Write `data` to a per-process temp file named `name`, then open it as a checkpoint, read every
/// tensor (floats and raw), and run the completeness check. Errors are fine; panics are bugs.
pub fn exercise(name: &str, data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("landscaped-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path: PathBuf = dir.join(name);
    {
        let Ok(mut f) = std::fs::File::create(&path) else { return };
        if f.write_all(data).is_err() {
            return;
        }
    }
    let _ = checkpoint::check_complete(&path);
    if let Ok(ck) = checkpoint::Checkpoint::open(&path) {
        for i in 0..ck.tensors.len() {
            let _ = ck.read_raw(i);
            if let Ok(v) = ck.read(i) {
                assert_eq!(v.len(), ck.tensors[i].numel());
            }
        }
        let _ = ck.files();
    }
}
