//! Waiting for a condition: bounded, polling; no sleep stands for an event.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it holds; fails after `limit` naming `what`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
