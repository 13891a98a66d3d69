//! Fixture makers: hand-written safetensors files, and the Python reference scripts of tests/python run in
//! the venv's Python. Uses `super::paths` and no crate beyond serde_json and tempfile, so the worker
//! crate's tests include this file too.
#![allow(dead_code)]

use super::paths::{script, venv_python};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The bytes of a safetensors file with the JSON header `header` exactly as given (no padding; it may be
/// malformed on purpose) followed by `data`.
pub fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Writes a safetensors file by hand (u64 header length, JSON header padded to 8 bytes, data):
/// `tensors` are (name, dtype, shape, little-endian bytes), in file order.
pub fn write_safetensors_raw(path: &Path, tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

/// [`write_safetensors_raw`] of f32 tensors: (name, shape, values).
pub fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let raw: Vec<(&str, &str, Vec<u64>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, vals)| {
            let shape = shape.iter().map(|&d| d as u64).collect();
            (*name, "F32", shape, vals.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    write_safetensors_raw(path, &raw);
}

/// Runs `tests/python/<name>` with `args` in the venv's Python; fails with its stderr unless it
/// succeeded; its stdout.
pub fn run_script_args<S: AsRef<OsStr>>(name: &str, args: impl IntoIterator<Item = S>) -> String {
    let out = Command::new(venv_python())
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run .venv/bin/python (make setup): {e}"));
    assert!(out.status.success(), "{name} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// [`run_script_args`] with `dir` (where the script writes) in front of `args`.
pub fn run_script(name: &str, dir: &Path, args: &[&str]) -> String {
    let args = std::iter::once(dir.as_os_str()).chain(args.iter().map(OsStr::new));
    run_script_args(name, args)
}

/// Runs `tests/python/<name>` on `dir` (see [`run_script`]); the JSON object of each line it printed.
pub fn python_lines(name: &str, dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    run_script(name, dir, args).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The JSON file `dir/<file>`.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Runs `tests/python/<name>` on `dir` (see [`run_script`]); the `reference.json` it wrote there.
pub fn python_reference(name: &str, dir: &Path, args: &[&str]) -> serde_json::Value {
    run_script(name, dir, args);
    read_json(&dir.join("reference.json"))
}

/// Runs `tests/python/<name>` on a fresh temporary folder (see [`run_script`]): the folder and the JSON
/// file `json` the script wrote there.
pub fn python_made(name: &str, json: &str) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    run_script(name, dir.path(), &[]);
    let v = read_json(&dir.path().join(json));
    (dir, v)
}

/// [`python_made`] with `args` after the folder.
pub fn python_made_args(name: &str, json: &str, args: &[&str]) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    run_script(name, dir.path(), args);
    let v = read_json(&dir.path().join(json));
    (dir, v)
}

/// A folder (kept) with tests/python/slice_reference.py's digits CNN (`model/`), checkpoints
/// (`ckpt_*.safetensors`) and PyTorch's values (`reference.json`), made once per test binary.
pub fn slice_fixture() -> &'static (PathBuf, serde_json::Value) {
    static F: OnceLock<(PathBuf, serde_json::Value)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let r = python_reference("slice_reference.py", &dir, &[]);
        (dir, r)
    })
}
