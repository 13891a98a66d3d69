//! The error taxonomy of the daemon: a failure is either about a file's *content* (malformed, refused,
//! incomplete past its timeout, unsupported, no step) and recorded once per version of the file, or
//! about the *environment* (permission denied, too many open files, disk full, I/O error, a failed
//! store write) and retried with backoff, counted by kind, never recorded against the file.

use crate::ingest::{ErrorKind, IngestError};
use landscaped_formats::CheckpointError;
use std::time::Duration;

/// What a failure means for the checkpoint. Matched on, never compared as a string: the metric
/// labels come from [`ErrorKind::label`] and [`EnvKind::label`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// The file itself is bad: record the kind once for this version of the file.
    Content(ErrorKind),
    /// Not the file's fault: retry later; the kind says which resource failed.
    Environment(EnvKind),
}

/// Which resource of the environment failed (`landscaped_environment_errors_total{kind=...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnvKind {
    PermissionDenied,
    TooManyOpenFiles,
    NoSpace,
    IoError,
    ReadOnly,
    OutOfMemory,
    /// EAGAIN, EINTR, a timeout, a stale NFS handle, a busy resource, no lock.
    Transient,
    /// A store write failed.
    Store,
    /// The trajectory archive could not be written.
    Archive,
    /// The trajectory archive needs more space than is free now.
    DoesNotFit,
}

impl EnvKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            EnvKind::PermissionDenied => "permission_denied",
            EnvKind::TooManyOpenFiles => "too_many_open_files",
            EnvKind::NoSpace => "no_space",
            EnvKind::IoError => "io_error",
            EnvKind::ReadOnly => "read_only",
            EnvKind::OutOfMemory => "out_of_memory",
            EnvKind::Transient => "transient",
            EnvKind::Store => "store",
            EnvKind::Archive => "archive",
            EnvKind::DoesNotFit => "does_not_fit",
        }
    }

    /// Whether this is the trajectory archive's failure (`/healthz` reports it).
    pub(crate) fn is_archive(self) -> bool {
        matches!(self, EnvKind::Archive | EnvKind::DoesNotFit)
    }
}

/// The environment kind of an I/O error, or None if it is about the file (e.g. a short read).
pub(crate) fn io_environment(e: &std::io::Error) -> Option<EnvKind> {
    if let Some(code) = e.raw_os_error() {
        return match code {
            libc::EACCES | libc::EPERM => Some(EnvKind::PermissionDenied),
            libc::EMFILE | libc::ENFILE => Some(EnvKind::TooManyOpenFiles),
            libc::ENOSPC | libc::EDQUOT => Some(EnvKind::NoSpace),
            libc::EIO => Some(EnvKind::IoError),
            libc::EROFS => Some(EnvKind::ReadOnly),
            libc::ENOMEM => Some(EnvKind::OutOfMemory),
            libc::EAGAIN | libc::EINTR | libc::ETIMEDOUT | libc::ESTALE | libc::EBUSY | libc::ENOLCK => {
                Some(EnvKind::Transient)
            }
            _ => None,
        };
    }
    use std::io::ErrorKind as K;
    match e.kind() {
        K::PermissionDenied => Some(EnvKind::PermissionDenied),
        K::StorageFull | K::QuotaExceeded => Some(EnvKind::NoSpace),
        K::OutOfMemory => Some(EnvKind::OutOfMemory),
        K::ReadOnlyFilesystem => Some(EnvKind::ReadOnly),
        K::Interrupted | K::TimedOut | K::WouldBlock | K::ResourceBusy | K::StaleNetworkFileHandle => {
            Some(EnvKind::Transient)
        }
        _ => None,
    }
}

pub(crate) fn classify_checkpoint(e: &CheckpointError) -> Class {
    match e {
        CheckpointError::Io { source, .. } => match io_environment(source) {
            Some(k) => Class::Environment(k),
            None => Class::Content(ErrorKind::Io),
        },
        _ => Class::Content(ErrorKind::of_checkpoint(e)),
    }
}

pub(crate) fn classify_ingest(e: &IngestError) -> Class {
    match e {
        IngestError::Checkpoint(c) => classify_checkpoint(c),
        IngestError::Store(s) if s.is_environment() => Class::Environment(EnvKind::Store),
        // The archive sink writes files in the data dir: its failures are the disk's.
        IngestError::Sink { .. } => Class::Environment(EnvKind::Archive),
        // More than the whole filesystem: never fits. More than is free now: space may be freed.
        IngestError::DoesNotFit { ever: true, .. } => Class::Content(ErrorKind::DoesNotFit),
        IngestError::DoesNotFit { ever: false, .. } => Class::Environment(EnvKind::DoesNotFit),
        other => Class::Content(other.kind()),
    }
}

/// Retry delay after an environment error: 1 s doubling to 30 s.
pub(crate) fn backoff(attempts: u32) -> Duration {
    (Duration::from_secs(1) * 2u32.saturating_pow(attempts.min(5))).min(Duration::from_secs(30))
}

/// `err`'s message, with `path` in front unless the message already names it (no path printed twice).
pub(crate) fn with_path(path: &std::path::Path, err: &str) -> String {
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
        assert_eq!(classify_checkpoint(&io(libc::EACCES)), Class::Environment(EnvKind::PermissionDenied));
        assert_eq!(classify_checkpoint(&io(libc::EMFILE)), Class::Environment(EnvKind::TooManyOpenFiles));
        assert_eq!(classify_checkpoint(&io(libc::ENOSPC)), Class::Environment(EnvKind::NoSpace));
        assert_eq!(classify_checkpoint(&io(libc::EIO)), Class::Environment(EnvKind::IoError));
        let eof = CheckpointError::Io {
            path: PathBuf::from("/c/x.pt"),
            source: Error::new(std::io::ErrorKind::UnexpectedEof, "short"),
        };
        assert_eq!(classify_checkpoint(&eof), Class::Content(ErrorKind::Io));
        for (e, k) in [
            (CheckpointError::Malformed { path: "/x".into(), why: "bad".into() }, ErrorKind::Malformed),
            (CheckpointError::Refused { path: "/x".into(), why: "bad".into() }, ErrorKind::Refused),
            (CheckpointError::Incomplete { path: "/x".into(), why: "bad".into() }, ErrorKind::Incomplete),
            (CheckpointError::Unsupported { path: "/x".into(), why: "bad".into() }, ErrorKind::Unsupported),
        ] {
            assert_eq!(classify_checkpoint(&e), Class::Content(k));
        }
        let store = crate::store::StoreError::Sled {
            path: "/d".into(),
            source: sled::Error::Io(Error::from_raw_os_error(libc::ENOSPC)),
        };
        assert_eq!(classify_ingest(&IngestError::Store(store)), Class::Environment(EnvKind::Store));
        assert_eq!(classify_ingest(&IngestError::NoStep("/x".into())), Class::Content(ErrorKind::NoStep));
        // An archive that can never fit fails the item; one that does not fit now is retried.
        let fit = |ever| IngestError::DoesNotFit { path: "/x".into(), why: "big".into(), ever };
        assert_eq!(classify_ingest(&fit(true)), Class::Content(ErrorKind::DoesNotFit));
        assert_eq!(classify_ingest(&fit(false)), Class::Environment(EnvKind::DoesNotFit));
    }

    #[test]
    fn the_metric_labels_come_from_the_kinds() {
        let env = [
            (EnvKind::PermissionDenied, "permission_denied"),
            (EnvKind::TooManyOpenFiles, "too_many_open_files"),
            (EnvKind::NoSpace, "no_space"),
            (EnvKind::IoError, "io_error"),
            (EnvKind::ReadOnly, "read_only"),
            (EnvKind::OutOfMemory, "out_of_memory"),
            (EnvKind::Transient, "transient"),
            (EnvKind::Store, "store"),
            (EnvKind::Archive, "archive"),
            (EnvKind::DoesNotFit, "does_not_fit"),
        ];
        for (k, label) in env {
            assert_eq!(k.label(), label);
            assert_eq!(k.is_archive(), label == "archive" || label == "does_not_fit");
        }
        // A checkpoint error's kind has the label the formats crate gives it.
        for e in [
            io(libc::ENOENT),
            CheckpointError::Malformed { path: "/x".into(), why: "bad".into() },
            CheckpointError::Refused { path: "/x".into(), why: "bad".into() },
            CheckpointError::Incomplete { path: "/x".into(), why: "bad".into() },
            CheckpointError::Unsupported { path: "/x".into(), why: "bad".into() },
            CheckpointError::NotAFile { path: "/x".into(), what: "a FIFO".into() },
        ] {
            assert_eq!(ErrorKind::of_checkpoint(&e).label(), e.kind());
        }
        assert_eq!(IngestError::NoStep("/x".into()).kind().label(), "no_step");
        assert_eq!(ErrorKind::DoesNotFit.label(), "does_not_fit");
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
