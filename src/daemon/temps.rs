//! Temporaries left by a process that was killed (SIGKILL, OOM killer, power loss) are removed when
//! the daemon starts, after it has opened (and so locked) the store:
//! - trajectory archive files being written, `<data_dir>/trajectory/<run>/.<step>.bin.<pid>.tmp`;
//! - PCA directions being written, `<data_dir>/trajectory/<run>/pca/pcK.safetensors.<pid>.tmp`;
//! - checkpoint handoff folders, `landscaped-handoff-<pid>-…`, directly in the data dir or in
//!   `$LANDSCAPED_HANDOFF_DIR` (the system temp folder is left alone: other users' and containers'
//!   processes share it);
//! - `<data_dir>/daemon.json.tmp`.
//!
//! Only those whose writer (the pid in the name) is no longer alive; one line says how many and how
//! many bytes went.

use std::path::{Path, PathBuf};

/// Whether process `pid` exists (signal 0; EPERM means it exists under another user).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(p) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 sends nothing; it only checks for the process.
    unsafe { libc::kill(p, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// The writer's pid of a temporary file name of ours, if it is one.
fn temp_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_suffix(".tmp")?;
    let (stem, pid) = rest.rsplit_once('.')?;
    let ours = (stem.starts_with('.') && stem.ends_with(".bin")) || stem.ends_with(".safetensors");
    if !ours || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// The pid of a handoff folder name (`landscaped-handoff-<pid>-<n>-<nanos>`).
fn handoff_pid(name: &str) -> Option<u32> {
    name.strip_prefix("landscaped-handoff-")?.split('-').next()?.parse().ok()
}

fn size_of(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(p).map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum()).unwrap_or(0)
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn collect_temp_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let name = e.file_name();
        let name = name.to_string_lossy();
        if t.is_dir() && depth < 3 {
            collect_temp_files(&e.path(), depth + 1, out);
        } else if t.is_file() && temp_file_pid(&name).is_some_and(|pid| !alive(pid)) {
            out.push(e.path());
        }
    }
}

fn collect_handoffs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        if e.file_type().is_ok_and(|t| t.is_dir())
            && handoff_pid(&name.to_string_lossy()).is_some_and(|pid| !alive(pid))
        {
            out.push(e.path());
        }
    }
}

/// Removes the stale temporaries (see the module doc); returns (how many, bytes).
pub(crate) fn remove_stale(data_dir: &Path) -> (usize, u64) {
    let mut victims = Vec::new();
    collect_temp_files(&data_dir.join("trajectory"), 0, &mut victims);
    collect_handoffs(data_dir, &mut victims);
    if let Some(h) = std::env::var_os("LANDSCAPED_HANDOFF_DIR").filter(|d| !d.is_empty()) {
        collect_handoffs(Path::new(&h), &mut victims);
    }
    let json_tmp = data_dir.join("daemon.json.tmp");
    if json_tmp.is_file() {
        victims.push(json_tmp);
    }
    let (mut n, mut bytes) = (0, 0);
    for v in victims {
        let b = size_of(&v);
        let res = if v.is_dir() { std::fs::remove_dir_all(&v) } else { std::fs::remove_file(&v) };
        match res {
            Ok(()) => {
                n += 1;
                bytes += b;
            }
            Err(e) => tracing::warn!("{}: removing a stale temporary: {e}", v.display()),
        }
    }
    if n > 0 {
        tracing::info!(
            "removed {n} stale temporary file(s) or folder(s) ({bytes} bytes) left by a process that was killed"
        );
    }
    (n, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_temporaries_of_dead_writers_go() {
        assert_eq!(temp_file_pid(".00000000000000000042.bin.1234.tmp"), Some(1234));
        assert_eq!(temp_file_pid("pc1.safetensors.77.tmp"), Some(77));
        assert_eq!(temp_file_pid("notes.1234.tmp"), None);
        assert_eq!(temp_file_pid("00000000000000000042.bin"), None);
        assert_eq!(handoff_pid("landscaped-handoff-99-0-123"), Some(99));
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("trajectory/r");
        std::fs::create_dir_all(run.join("pca")).unwrap();
        // A pid that cannot exist (above pid_max's ceiling of 2^22) and our own (alive).
        let dead = run.join(".00000000000000000001.bin.4194999.tmp");
        let mine = run.join(format!(".00000000000000000002.bin.{}.tmp", std::process::id()));
        let pca = run.join("pca/pc1.safetensors.4194999.tmp");
        let keep = run.join("00000000000000000001.bin");
        for p in [&dead, &mine, &pca, &keep] {
            std::fs::write(p, b"12345").unwrap();
        }
        let handoff = d.path().join("landscaped-handoff-4194999-0-1");
        std::fs::create_dir(&handoff).unwrap();
        std::fs::write(handoff.join("x.safetensors"), b"1").unwrap();
        assert_eq!(remove_stale(d.path()), (3, 11));
        assert!(!dead.exists() && !pca.exists() && !handoff.exists());
        assert!(mine.exists() && keep.exists());
    }
}
