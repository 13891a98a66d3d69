//! The checkpoint readers of landscaped, compiled on their own for fuzzing (no libtorch), and the
//! one function both fuzz targets call.

#[path = "../../src/checkpoint/mod.rs"]
pub mod checkpoint;

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
