//! Which filesystem a folder is on (statfs magic numbers), to decide between inotify and polling:
//! inotify only sees writes made through this kernel, so on network and parallel filesystems (NFS,
//! Lustre, GPFS, CIFS/SMB, FUSE mounts such as sshfs or s3fs) other nodes' writes arrive late or never.

use std::path::Path;

/// statfs `f_type` values of filesystems where inotify misses remote writes.
const REMOTE: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x0BD0_0BD0, "lustre"),
    (0x4750_4653, "gpfs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x517B, "smb"),
    (0x6573_5546, "fuse"),
];

/// The name of the remote filesystem `path` lives on, or None for a local one (or if statfs fails).
/// A path that doesn't exist yet is judged by its nearest existing ancestor.
pub(crate) fn remote_fs(path: &Path) -> Option<&'static str> {
    let existing = path.ancestors().find(|a| a.exists())?;
    let magic = statfs_magic(existing)?;
    REMOTE.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)
}

/// The statfs `f_type` of `path`.
pub(crate) fn statfs_magic(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a properly sized, writable statfs struct.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    if rc != 0 {
        return None;
    }
    // f_type's integer width differs between targets; magic numbers are 32-bit values.
    Some((buf.f_type as i64) & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_temp_dir_is_not_remote() {
        let d = tempfile::tempdir().unwrap();
        assert!(statfs_magic(d.path()).is_some());
        assert_eq!(remote_fs(d.path()), None);
        assert_eq!(remote_fs(&d.path().join("not/yet/there")), None);
    }

    #[test]
    fn proc_magic_is_read() {
        // procfs has a well-known magic (0x9fa0): proves the number is read, not made up.
        assert_eq!(statfs_magic(Path::new("/proc")), Some(0x9fa0));
    }
}
