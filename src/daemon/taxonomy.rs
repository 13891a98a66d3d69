//! The error taxonomy of the daemon: a failure is either about a file's *content* (malformed, refused,
//! incomplete past its timeout, unsupported, no step) and recorded once per version of the file, or
//! about the *environment* (permission denied, too many open files, disk full, I/O error, a failed
//! store write) and retried with backoff, counted by kind, never recorded against the file.

use crate::ingest::IngestError;
use landscaped_formats::CheckpointError;
use std::time::Duration;

/// What a failure means for the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The file itself is bad: record the kind once for this version of the file.
    Content(&'static str),
    /// Not the file's fault: retry later; the label says which resource failed.
    Environment(&'static str),
}

/// The environment label of an I/O error, or None if it is about the file (e.g. a short read).
pub fn io_environment(e: &std::io::Error) -> Option<&'static str> {
    if let Some(code) = e.raw_os_error() {
        return match code {
            libc::EACCES | libc::EPERM => Some("permission_denied"),
            libc::EMFILE | libc::ENFILE => Some("too_many_open_files"),
            libc::ENOSPC | libc::EDQUOT => Some("no_space"),
            libc::EIO => Some("io_error"),
            libc::EROFS => Some("read_only"),
            libc::ENOMEM => Some("out_of_memory"),
            libc::EAGAIN | libc::EINTR | libc::ETIMEDOUT | libc::ESTALE | libc::EBUSY | libc::ENOLCK => {
                Some("transient")
            }
            _ => None,
        };
    }
    use std::io::ErrorKind as K;
    match e.kind() {
        K::PermissionDenied => Some("permission_denied"),
        K::StorageFull | K::QuotaExceeded => Some("no_space"),
        K::OutOfMemory => Some("out_of_memory"),
        K::ReadOnlyFilesystem => Some("read_only"),
        K::Interrupted | K::TimedOut | K::WouldBlock | K::ResourceBusy | K::StaleNetworkFileHandle => {
            Some("transient")
        }
        _ => None,
    }
}

pub fn classify_checkpoint(e: &CheckpointError) -> Class {
    match e {
        CheckpointError::Io { source, .. } => match io_environment(source) {
            Some(k) => Class::Environment(k),
            None => Class::Content(e.kind()),
        },
        _ => Class::Content(e.kind()),
    }
}

pub fn classify_ingest(e: &IngestError) -> Class {
    match e {
        IngestError::Checkpoint(c) => classify_checkpoint(c),
        IngestError::Store(s) if s.is_environment() => Class::Environment("store"),
        // The archive sink writes files in the data dir: its failures are the disk's.
        IngestError::Sink { .. } => Class::Environment("archive"),
        // More than the whole filesystem: never fits. More than is free now: space may be freed.
        IngestError::DoesNotFit { ever: true, .. } => Class::Content("does_not_fit"),
        IngestError::DoesNotFit { ever: false, .. } => Class::Environment("does_not_fit"),
        other => Class::Content(other.kind()),
    }
}

/// Retry delay after an environment error: 1 s doubling to 30 s.
pub fn backoff(attempts: u32) -> Duration {
    (Duration::from_secs(1) * 2u32.saturating_pow(attempts.min(5))).min(Duration::from_secs(30))
}

/// `err`'s message, with `path` in front unless the message already names it (no path printed twice).
pub fn with_path(path: &std::path::Path, err: &str) -> String {
    let p = path.display().to_string();
    if err.contains(&p) { err.to_string() } else { format!("{p}: {err}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Error;
    use std::path::PathBuf;

    fn io(code: i32) -> CheckpointError {
        CheckpointError::Io { path: PathBuf::from("/c/step-1.pt"), source: Error::from_raw_os_error(code) }
    }

    #[test]
    fn environment_errors_are_told_from_content_errors() {
        assert_eq!(classify_checkpoint(&io(libc::EACCES)), Class::Environment("permission_denied"));
        assert_eq!(classify_checkpoint(&io(libc::EMFILE)), Class::Environment("too_many_open_files"));
        assert_eq!(classify_checkpoint(&io(libc::ENOSPC)), Class::Environment("no_space"));
        assert_eq!(classify_checkpoint(&io(libc::EIO)), Class::Environment("io_error"));
        let eof = CheckpointError::Io {
            path: PathBuf::from("/c/x.pt"),
            source: Error::new(std::io::ErrorKind::UnexpectedEof, "short"),
        };
        assert_eq!(classify_checkpoint(&eof), Class::Content("io"));
        for (e, k) in [
            (CheckpointError::Malformed { path: "/x".into(), why: "bad".into() }, "malformed"),
            (CheckpointError::Refused { path: "/x".into(), why: "bad".into() }, "refused"),
            (CheckpointError::Incomplete { path: "/x".into(), why: "bad".into() }, "incomplete"),
            (CheckpointError::Unsupported { path: "/x".into(), why: "bad".into() }, "unsupported"),
        ] {
            assert_eq!(classify_checkpoint(&e), Class::Content(k));
        }
        let store = crate::store::StoreError::Sled {
            path: "/d".into(),
            source: sled::Error::Io(Error::from_raw_os_error(libc::ENOSPC)),
        };
        assert_eq!(classify_ingest(&IngestError::Store(store)), Class::Environment("store"));
        assert_eq!(classify_ingest(&IngestError::NoStep("/x".into())), Class::Content("no_step"));
        // An archive that can never fit fails the item; one that does not fit now is retried.
        let fit = |ever| IngestError::DoesNotFit { path: "/x".into(), why: "big".into(), ever };
        assert_eq!(classify_ingest(&fit(true)), Class::Content("does_not_fit"));
        assert_eq!(classify_ingest(&fit(false)), Class::Environment("does_not_fit"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn paths_are_not_repeated() {
        let p = std::path::Path::new("/c/step-1.pt");
        assert_eq!(
            with_path(p, "/c/step-1.pt: malformed checkpoint: x"),
            "/c/step-1.pt: malformed checkpoint: x"
        );
        assert_eq!(with_path(p, "store: busy"), "/c/step-1.pt: store: busy");
    }
}
