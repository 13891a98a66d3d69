//! The binaries of this checkout (cargo builds them for the root crate's integration tests) and running
//! the CLI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `landscaped` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_landscaped");

/// The `landscaped-worker` binary, built next to `landscaped`.
pub fn worker_bin() -> PathBuf {
    Path::new(BIN).with_file_name("landscaped-worker")
}

/// `landscaped --data-dir <data>`, to add arguments and environment to.
pub fn landscaped_cmd(data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(data);
    c
}

/// Whether a finished command succeeded, its stdout and its stderr as text.
pub fn outcome(out: Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The stdout of a command that must have succeeded (fails with its stderr otherwise).
pub fn stdout_ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `landscaped --data-dir <data> <args>` with no daemon named by the environment (LANDSCAPED_ENDPOINT
/// removed) and LANDSCAPED_CONFIG = `config`, or a file that does not exist: (success, stdout, stderr).
pub fn cli_query(data: &Path, config: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    let config = config.unwrap_or(Path::new("/nonexistent/landscaped.toml"));
    let out = landscaped_cmd(data)
        .args(args)
        .env_remove("LANDSCAPED_ENDPOINT")
        .env("LANDSCAPED_CONFIG", config)
        .output()
        .unwrap();
    outcome(out)
}

/// The processes `pid` started that are still its children (its model workers).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

/// Runs `cmd`, sends it one SIGINT (Ctrl-C) once it has started a child process (a model worker: its
/// handler is installed by then), and waits for it: its output and the children it had.
pub fn interrupt_once_working(mut cmd: Command) -> (Output, Vec<u32>) {
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let mut workers = Vec::new();
    let mut ended = false;
    super::wait::wait_until(std::time::Duration::from_secs(120), "a worker process", || {
        workers = children(pid);
        ended = matches!(child.try_wait(), Ok(Some(_)));
        !workers.is_empty() || ended
    });
    if ended {
        let out = child.wait_with_output().unwrap();
        panic!("ended before starting a worker: {}", String::from_utf8_lossy(&out.stderr));
    }
    // SAFETY: signalling our own child, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    (child.wait_with_output().unwrap(), workers)
}

/// Whether process `pid` is gone (or a zombie, exited but not yet reaped).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
