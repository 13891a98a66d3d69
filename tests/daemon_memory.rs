//! The daemon hands back what a checkpoint made it allocate (issue 20: its RSS crept from ~18 MB to
//! 168 MB over a hostile run and was never returned). The cause, found here: glibc keeps freed memory
//! in per-thread arenas and, after a large free, serves even big buffers from them; a `torch.save` file
//! whose `data.pkl` is 28 MB of small dicts and lists (parsed into a value tree of ~500 MB) left
//! 548 MB resident for good. `daemon::memory` bounds the arenas and trims the heaps every few seconds.

mod support;

use std::time::Duration;
use support::*;

fn rss_kb(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn memory_a_big_pickle_needed_is_handed_back() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "");
    let idle_kb = rss_kb(d.pid());
    assert!(idle_kb > 0);
    // Written beside the watched folder, then moved in whole.
    let py = r#"
import sys, torch
d = {f"k{i}": [i, str(i) * 3, (i, i + 1)] for i in range(400000)}
d["w"] = torch.ones(3)
torch.save(d, sys.argv[1])
"#;
    let file = tmp.path().join("step-1.pt");
    let ok = std::process::Command::new(venv_python())
        .args(["-c", py, file.to_str().unwrap()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "torch.save");
    std::fs::rename(&file, ck.join("step-1.pt")).unwrap();
    // Done with it, one way or the other (recorded, or refused by a reader's limit).
    wait_until(Duration::from_secs(120), "step-1.pt dealt with", || {
        let m = d.metrics();
        errors_total(&m) + metric(&m, r#"landscaped_checkpoints_processed_total{run="r"}"#).unwrap_or(0.0)
            >= 1.0
    });
    let peak_kb = d.peak_rss_kb();
    assert!(
        peak_kb > idle_kb + 100_000,
        "the pickle should have needed memory: idle {idle_kb} kB, peak {peak_kb} kB"
    );
    // Handed back: within 48 MB of the idle daemon (it was ~500 MB above it, for good, before).
    wait_until(Duration::from_secs(30), "memory handed back", || rss_kb(d.pid()) < idle_kb + 48_000);
    assert_eq!(d.stop(), Some(0));
}
