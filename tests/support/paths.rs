//! Where things are: the workspace root, the venv's Python, the test scripts and the Python packages.
//! Free of the app's crates and of `CARGO_BIN_EXE_*` (see `cli.rs` for the binaries), so the worker
//! crate's tests include this file too (`#[path = "../../../tests/support/paths.rs"]`).
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The workspace root (the folder above the test's crate that holds `Cargo.lock`): the checkout, for
/// the root crate's tests and for `crates/*`'s alike.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("Cargo.lock").is_file())
        .expect("a Cargo.lock above CARGO_MANIFEST_DIR")
}

/// The venv's Python (`make setup` makes it).
pub fn venv_python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// `tests/python`: the reference scripts and the test factories.
pub fn tests_python() -> PathBuf {
    root().join("tests/python")
}

/// `tests/python/<name>`.
pub fn script(name: &str) -> PathBuf {
    tests_python().join(name)
}

/// A PYTHONPATH with the worker package (`python/`) and the test factories (`tests/python`).
pub fn worker_python_path() -> OsString {
    std::env::join_paths([root().join("python"), tests_python()]).unwrap()
}
