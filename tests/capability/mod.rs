//! Tests whose real scenario needs something a developer's machine may lack (a private mount namespace,
//! a filesystem holding a 4 TiB sparse file): without it they say so and skip, except under CI (`CI` set
//! and not `false`/`0`, as .ci/run sets it), where a missing capability fails the test: CI never passes
//! a scenario it did not run.
#![allow(dead_code)]

/// Whether this run is CI's.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `available` when true; otherwise fails under CI and prints a skip note elsewhere (then false).
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!under_ci(), "CI must run this scenario, but {what}");
    eprintln!("SKIPPED (not under CI): {what}");
    false
}
