//! Which checkpoint headers this thread parsed, for tests that prove a checkpoint's header is parsed
//! once ([`super::Checkpoint::open_complete`]: the completeness rules and the opening in one pass).
//!
//! Off unless a caller runs code inside [`during`]: then each parse of a header (a safetensors JSON
//! header, a DCP `.metadata` pickle, a JSON side file such as `trainer_state.json` or a weights index,
//! a torch zip's `data.pkl`, a DeepSpeed state file's pickle, a zip's end records) is logged with
//! its kind and file. Off, a parse costs one thread-local read.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// One parse: what was parsed (`"safetensors header"`, `"dcp metadata"`, `"json"`, `"torch
/// pickle"`, `"deepspeed pickle"`, `"zip end records"`) and the file it was read from.
pub type Parse = (&'static str, PathBuf);

thread_local! {
    static LOG: RefCell<Option<Vec<Parse>>> = const { RefCell::new(None) };
}

/// Runs `f` with the log on (on this thread only) and returns its result with the parses it made,
/// in order. Nested calls log into the outermost.
pub fn during<T>(f: impl FnOnce() -> T) -> (T, Vec<Parse>) {
    let outer = LOG.with(|l| l.borrow_mut().replace(Vec::new()));
    let out = f();
    let parses = LOG.with(|l| {
        let mut l = l.borrow_mut();
        let mine = l.take().unwrap_or_default();
        match outer {
            Some(mut o) => {
                o.extend(mine.iter().cloned());
                *l = Some(o);
            }
            None => *l = None,
        }
        mine
    });
    (out, parses)
}

/// How many times `parses` name `file` (any kind).
pub fn count(parses: &[Parse], file: &Path) -> usize {
    parses.iter().filter(|(_, p)| p == file).count()
}

/// Logs one parse of `file` when the log is on.
pub(crate) fn record(kind: &'static str, file: &Path) {
    LOG.with(|l| {
        if let Some(v) = l.borrow_mut().as_mut() {
            v.push((kind, file.to_path_buf()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_only_inside_during_and_nests() {
        record("json", Path::new("/x"));
        let ((), outer) = during(|| {
            record("json", Path::new("/a"));
            let ((), inner) = during(|| record("json", Path::new("/b")));
            assert_eq!(inner, vec![("json", PathBuf::from("/b"))]);
        });
        assert_eq!(count(&outer, Path::new("/a")), 1);
        assert_eq!(count(&outer, Path::new("/b")), 1);
        assert_eq!(count(&outer, Path::new("/x")), 0, "off outside `during`");
        record("json", Path::new("/y"));
        let ((), none) = during(|| {});
        assert!(none.is_empty());
    }
}
