//! `landscaped` (CLI + daemon) doesn't link libtorch: model work runs in `landscaped-worker`. Checked on
//! the built binaries with `readelf -d` (what the dynamic loader will map), and on the root package's
//! manifest (no tch / torch-sys dependency).

use std::path::Path;
use std::process::Command;

mod support;
use support::*;

fn needed(bin: &Path) -> Vec<String> {
    let out = Command::new("readelf").arg("-d").arg(bin).output().expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1).map(|s| s.trim_end_matches(']').to_string()))
        .collect()
}

#[test]
fn landscaped_needs_no_libtorch_and_the_worker_does() {
    let light = needed(Path::new(BIN));
    assert!(light.iter().any(|l| l.starts_with("libc.so")), "no NEEDED entries parsed: {light:?}");
    let torchy = |l: &String| l.contains("torch") || l.contains("c10");
    assert!(!light.iter().any(torchy), "landscaped links {light:?}");
    // The worker sits beside it (cargo builds the whole workspace before the tests).
    let worker = worker_bin();
    if worker.exists() {
        let heavy = needed(&worker);
        assert!(
            heavy.iter().any(|l| l.starts_with("libtorch")),
            "the worker doesn't link libtorch: {heavy:?}"
        );
    }
}

#[test]
fn the_root_package_has_no_tch_dependency() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let table: toml::Table = toml::from_str(&manifest).unwrap();
    for section in ["dependencies", "build-dependencies"] {
        if let Some(deps) = table.get(section).and_then(|d| d.as_table()) {
            for bad in ["tch", "torch-sys"] {
                assert!(!deps.contains_key(bad), "[{section}] of the root package lists {bad}");
            }
        }
    }
}
