//! Hardening of the daemon: environment failures are retried, not recorded; a failed store write makes
//! /healthz unhealthy until writes succeed again; connections are capped and /healthz still answers;
//! the watch-folder policy (symlinks, non-regular files, run names, missing folders); one-line errors.
//! Faults are injected through `LANDSCAPED_TEST_FAULTS` (see `landscaped::faults`).

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use support::*;

fn faults(dir: &Path, text: &str) {
    std::fs::write(dir.join("faults"), text).unwrap();
}

#[test]
fn environment_errors_are_retried_and_counted_not_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    faults(tmp.path(), "checkpoint_read=13\n"); // EACCES
    let fault_file = tmp.path().join("faults");
    let d = start_env(tmp.path(), &[&ck], "", &[("LANDSCAPED_TEST_FAULTS", fault_file.to_str().unwrap())]);
    let written = writer(&ck, &["--steps", "1,2,3"]);
    wait_until(Duration::from_secs(20), "permission errors counted", || {
        d.metric(r#"landscaped_environment_errors_total{kind="permission_denied",run="r"}"#).unwrap_or(0.0)
            >= 3.0
    });
    assert!(recorded(d.port).is_empty());
    // Cured: every checkpoint is picked up by its retry, without a touch or a restart.
    faults(tmp.path(), "");
    wait_until(Duration::from_secs(30), "all three recorded after the fault is gone", || {
        recorded(d.port).len() == 3
    });
    let got = recorded(d.port);
    for ((s, n), (gs, gn)) in written.iter().zip(&got) {
        assert!(s == gs && close(*n, *gn), "step {s}: {n} vs {gs}: {gn}");
    }
    let m = d.metrics();
    // Nothing was counted as a bad file.
    for kind in ["io", "malformed", "refused", "incomplete"] {
        let v = metric(&m, &format!(r#"landscaped_errors_total{{kind="{kind}",run="r"}}"#));
        assert_eq!(v, Some(0.0), "{kind}");
    }
    let log = d.log();
    assert!(!log.contains('\x1b'), "ANSI colour codes in a log file:\n{log}");
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn a_failed_store_write_makes_healthz_unhealthy_until_writes_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    faults(tmp.path(), "");
    let fault_file = tmp.path().join("faults");
    // Normal I/O priority: the store reopen flushes and fsyncs, which the idle class can starve on a busy machine.
    let d = start_env(
        tmp.path(),
        &[&ck],
        "io_idle = false\n",
        &[("LANDSCAPED_TEST_FAULTS", fault_file.to_str().unwrap())],
    );
    writer(&ck, &["--steps", "1"]);
    wait_until(Duration::from_secs(20), "step 1 recorded", || recorded(d.port).len() == 1);
    let (code, _) = get_status(d.port, "/healthz").unwrap();
    assert_eq!(code, 200);

    faults(tmp.path(), "store_write=28\n"); // ENOSPC
    writer(&ck, &["--steps", "2"]);
    wait_until(Duration::from_secs(20), "healthz unhealthy", || {
        get_status(d.port, "/healthz").is_some_and(|(c, _)| c == 503)
    });
    let (_, body) = get_status(d.port, "/healthz").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unhealthy");
    assert!(v["store"]["error"].as_str().unwrap().contains("No space left on device"), "{body}");
    // Reads are still served.
    assert_eq!(get_status(d.port, "/api/v1/runs").unwrap().0, 200);
    assert_eq!(recorded(d.port).len(), 1);
    assert_eq!(d.metric("landscaped_store_healthy"), Some(0.0));

    faults(tmp.path(), "");
    wait_until(Duration::from_secs(30), "healthy again, step 2 recorded", || {
        get_status(d.port, "/healthz").is_some_and(|(c, _)| c == 200) && recorded(d.port).len() == 2
    });
    assert_eq!(d.metric("landscaped_store_healthy"), Some(1.0));
    assert!(d.metric(r#"landscaped_environment_errors_total{kind="store",run="r"}"#).unwrap_or(0.0) >= 1.0);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn healthz_answers_past_the_connection_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "http_max_connections = 8\nhttp_header_timeout_secs = 3\n");
    // 300 connections that never send a byte.
    let idle: Vec<std::net::TcpStream> =
        (0..300).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", d.port)).ok()).collect();
    assert!(idle.len() >= 250, "only {} connections", idle.len());
    // The daemon has accepted them all: every one past the 8 of the main lane counted as over the cap.
    let over_cap = r#"landscaped_http_rejected_total{reason="over_cap"}"#;
    wait_until(Duration::from_secs(10), "every idle connection accepted", || {
        d.metric(over_cap).unwrap_or(0.0) >= (idle.len() - 8) as f64
    });
    for _ in 0..5 {
        let (code, body) = get_status(d.port, "/healthz").expect("/healthz answered past the cap");
        assert_eq!(code, 200, "{body}");
    }
    // Anything else past the cap: a clear 503, not a hang.
    let (code, body) = get_status(d.port, "/api/v1/runs").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("too many open connections"), "{body}");
    // The header-read timeout closes the idle ones; then the API answers normally.
    let mut first = idle.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    // Closed by the daemon: end of stream (a read timeout here would be a connection left open).
    let r = first.read(&mut buf);
    assert!(matches!(r, Ok(0)), "idle connection not closed by the header timeout: {r:?}");
    wait_until(Duration::from_secs(10), "API answers again", || {
        get_status(d.port, "/api/v1/runs").is_some_and(|(c, _)| c == 200)
    });
    assert!(d.metric(r#"landscaped_http_rejected_total{reason="over_cap"}"#).unwrap_or(0.0) > 0.0);
    drop(first);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn metrics_answer_while_slow_clients_hold_the_cap_and_every_burst_connection_gets_an_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    // The default cap (256 connections); slow clients are not timed out during the test.
    let d = start(tmp.path(), &[&ck], "http_header_timeout_secs = 60\n");
    // 340 slow clients: each sends the start of a request head, then nothing. 256 fill the main lane and
    // 84 the overflow lane, which holds 64: the oldest silent ones are evicted whatever the timing (with
    // fewer, eviction depended on the burst below arriving faster than it was answered).
    let slow: Vec<std::net::TcpStream> = (0..340)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).ok()?;
            s.write_all(b"GET /api/v1/runs HTTP/1.1\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert!(slow.len() >= 330, "only {} connections", slow.len());
    // The daemon has accepted them all: every one past the 256 of the main lane counted as over the cap.
    let over_cap = r#"landscaped_http_rejected_total{reason="over_cap"}"#;
    wait_until(Duration::from_secs(10), "every slow connection accepted", || {
        d.metric(over_cap).unwrap_or(0.0) >= (slow.len() - 256) as f64
    });
    // Prometheus keeps scraping (the lane /healthz has).
    for _ in 0..5 {
        let (code, body) = get_status(d.port, "/metrics").expect("/metrics answered past the cap");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("landscaped_http_connections"), "{body}");
    }
    // A burst past the cap (more than the overflow lane holds): every connection gets an HTTP answer,
    // a 503 at least, none a bare close.
    let burst: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).ok()?;
            s.write_all(b"GET /api/v1/runs HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert!(burst.len() >= 180, "only {} connections", burst.len());
    let mut unanswered = 0;
    for mut s in burst {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        if !(buf.starts_with(b"HTTP/1.1 503 ") || buf.starts_with(b"HTTP/1.1 200 ")) {
            unanswered += 1;
        }
    }
    assert_eq!(unanswered, 0, "connections closed without an HTTP answer");
    assert!(d.metric(r#"landscaped_http_rejected_total{reason="evicted"}"#).unwrap_or(0.0) > 0.0);
    drop(slow);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn half_sent_requests_are_closed_by_the_header_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "http_header_timeout_secs = 1\n");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap(); // never finished
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // End of stream within the 10 s read timeout (the timeout itself would be an error: kept open).
    let mut buf = Vec::new();
    let r = s.read_to_end(&mut buf);
    assert!(r.is_ok(), "half-sent request kept open: {r:?}");
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn watch_policy_symlinks_non_files_run_names_and_missing_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let outside = tmp.path().join("outside");
    let later = tmp.path().join("later");
    std::fs::create_dir(&ck).unwrap();
    std::fs::create_dir(&outside).unwrap();
    writer(&outside, &["--steps", "50"]);
    writer(&ck, &["--steps", "1,2"]);
    // A link leaving the watched folders, one staying inside, a FIFO and a folder with checkpoint names.
    std::os::unix::fs::symlink(outside.join("step-50.safetensors"), ck.join("step-51.safetensors")).unwrap();
    std::os::unix::fs::symlink(ck.join("step-2.safetensors"), ck.join("step-52.safetensors")).unwrap();
    let fifo = std::ffi::CString::new(ck.join("step-60.safetensors").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::create_dir(ck.join("step-70.safetensors")).unwrap();
    let d = start(tmp.path(), &[&ck, &later], "rescan_interval_secs = 1");
    wait_until(Duration::from_secs(20), "two steps recorded", || recorded(d.port).len() == 2);
    wait_until(Duration::from_secs(10), "skipped paths reported", || {
        d.metric(r#"landscaped_not_a_file_total{kind="not_a_file",run="r"}"#) == Some(2.0)
            && d.metric(r#"landscaped_not_a_file_total{kind="outside_root",run="r"}"#) == Some(1.0)
    });
    // Reported once, not at every event.
    // Touch the FIFO (utimensat: no open) and the link: events for both.
    for name in ["step-60.safetensors", "step-51.safetensors"] {
        let p = std::ffi::CString::new(ck.join(name).to_str().unwrap()).unwrap();
        let rc = unsafe {
            libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), libc::AT_SYMLINK_NOFOLLOW)
        };
        assert_eq!(rc, 0);
    }
    d.settle(); // the events and a whole rescan went through: still reported once
    assert_eq!(d.metric(r#"landscaped_not_a_file_total{kind="not_a_file",run="r"}"#), Some(2.0));
    assert_eq!(d.metric(r#"landscaped_not_a_file_total{kind="outside_root",run="r"}"#), Some(1.0));
    let steps: Vec<u64> = recorded(d.port).iter().map(|r| r.0).collect();
    assert_eq!(steps, vec![1, 2]);
    let log = d.log();
    assert!(log.contains("does not exist") && log.contains("later"), "{log}");
    assert!(log.contains("a FIFO"), "{log}");
    // The missing folder is picked up when created.
    writer(&later, &["--steps", "3"]);
    wait_until(Duration::from_secs(20), "step 3 from the folder created later", || {
        recorded(d.port).len() == 3
    });
    // `r%00` is not a way into run r's keys.
    let (code, body) = get_status(d.port, "/api/v1/runs/r%00/checkpoints").unwrap();
    assert_eq!(code, 400, "{body}");
    assert_eq!(get_status(d.port, "/api/v1/runs/r%2Fx/checkpoints").unwrap().0, 400);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn follow_symlinks_true_follows_links_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&ck).unwrap();
    std::fs::create_dir(&outside).unwrap();
    writer(&outside, &["--steps", "50"]);
    std::os::unix::fs::symlink(outside.join("step-50.safetensors"), ck.join("step-50.safetensors")).unwrap();
    let d = start(tmp.path(), &[&ck], "follow_symlinks = true\n");
    wait_until(Duration::from_secs(20), "the linked step recorded", || recorded(d.port).len() == 1);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn warnings_name_the_path_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let bad = ck.join("step-5.safetensors");
    std::fs::write(&bad, b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage").unwrap();
    let d = start(tmp.path(), &[&ck], "");
    wait_until(Duration::from_secs(20), "the bad file counted", || {
        d.metric(r#"landscaped_errors_total{kind="malformed",run="r"}"#).unwrap_or(0.0)
            + d.metric(r#"landscaped_errors_total{kind="incomplete",run="r"}"#).unwrap_or(0.0)
            >= 1.0
    });
    let log = d.log();
    let line = log.lines().find(|l| l.contains("WARN") && l.contains("step-5.safetensors")).expect(&log);
    assert_eq!(line.matches(bad.to_str().unwrap()).count(), 1, "{line}");
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn a_data_dir_error_names_the_key_and_says_the_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        "data_dir = \"/proc/landscaped-test/data\"\nlisten = \"127.0.0.1:0\"\n[[run]]\nname = \"r\"\nwatch = [\"/tmp\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN).args(["daemon", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(!out.status.success() && last.contains("data_dir"), "{err}");
    assert_eq!(last.matches("No such file or directory").count(), 1, "{last}");
    assert!(!err.contains('\x1b'), "{err}");
}
