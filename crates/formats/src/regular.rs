//! Opening the files of a watched tree safely: every file a reader opens is opened with `O_NONBLOCK`
//! (so a FIFO, which blocks `open` until a writer appears, or a device can never hang the caller) and
//! checked with `fstat` to be a regular file before a byte is read; anything else is
//! [`CheckpointError::NotAFile`], one error naming the file and what it is.

use std::fs::File;
use std::path::Path;

use super::CheckpointError;

/// What a file type is, for a message ("a FIFO", "a socket", ...).
pub(crate) fn describe(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

fn not_a_file(path: &Path, t: std::fs::FileType) -> CheckpointError {
    CheckpointError::NotAFile { path: path.to_path_buf(), what: describe(t).to_string() }
}

/// Opens `path` for reading if it is a regular file (symlinks followed): `O_NONBLOCK` for the open,
/// then `fstat`; the flag is cleared again before the file is returned.
pub(crate) fn open_regular(path: &Path) -> Result<File, CheckpointError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CheckpointError::Io { path: path.to_path_buf(), source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_a_file(path, meta.file_type()));
    }
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file` for the duration of these calls.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// Whether `path` is a regular file (`Ok(true)`), absent (`Ok(false)`), or something else (an error
/// naming what it is). Symlinks are followed; a dangling one counts as absent. Never opens the path.
pub(crate) fn regular_or_absent(path: &Path) -> Result<bool, CheckpointError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(m) => Err(not_a_file(path, m.file_type())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CheckpointError::Io { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("model_states.pt");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // A plain open(O_RDONLY) of a FIFO with no writer would block here for good.
        let e = open_regular(&p).unwrap_err();
        assert!(matches!(e, CheckpointError::NotAFile { .. }), "{e}");
        assert!(e.to_string().contains("a FIFO") && e.to_string().contains("model_states.pt"), "{e}");
        assert!(regular_or_absent(&p).is_err());
        assert!(open_regular(d.path()).unwrap_err().to_string().contains("a folder"));
        let f = d.path().join("x.pt");
        std::fs::write(&f, b"abc").unwrap();
        let file = open_regular(&f).unwrap();
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        assert!(regular_or_absent(&f).unwrap());
        assert!(!regular_or_absent(&d.path().join("none")).unwrap());
    }
}
