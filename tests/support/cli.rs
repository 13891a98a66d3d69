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
