//! The daemon speaks systemd's notify protocol at run time (Type=notify with WatchdogSec, as
//! systemd/landscaped.service runs it): the test binds the unix datagram socket systemd would, starts the
//! daemon with `NOTIFY_SOCKET` and `WATCHDOG_USEC` pointing at it, and reads what arrives: `READY=1` with a
//! `STATUS=` line once the initial scan is done, `WATCHDOG=1` pings after it, `STOPPING=1` at SIGTERM.
//! (The unit files themselves: tests/daemon_files.rs.)

mod support;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use support::*;

/// Reads datagrams from `sock` into `got` until `done(got)` or `limit` passes (then panics, showing them).
fn read_until(sock: &UnixDatagram, got: &mut Vec<String>, limit: Duration, done: impl Fn(&[String]) -> bool) {
    let t = Instant::now();
    let mut buf = vec![0u8; 4096];
    while !done(got) {
        assert!(t.elapsed() < limit, "timed out after {limit:?}; datagrams so far: {got:#?}");
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

fn has(d: &str, line: &str) -> bool {
    d.lines().any(|l| l == line)
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    writer(&ck, &["--steps", "1,2"]);
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // A 1 s watchdog: the daemon pings every half of it.
    let env = [("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "1000000")];
    let d = start_env(dir.path(), &[&ck], "", &env);

    let mut got = Vec::new();
    let pings = |g: &[String]| g.iter().filter(|d| has(d, "WATCHDOG=1")).count();
    read_until(&sock, &mut got, Duration::from_secs(30), |g| pings(g) >= 3);
    let ready: Vec<usize> = (0..got.len()).filter(|&i| has(&got[i], "READY=1")).collect();
    assert_eq!(ready.len(), 1, "one READY=1: {got:#?}");
    let first_ping = got.iter().position(|d| has(d, "WATCHDOG=1")).unwrap();
    assert!(ready[0] < first_ping, "READY=1 before the watchdog pings: {got:#?}");
    let status = got[ready[0]].lines().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or_default();
    assert!(status.contains("watching 1 folder(s)") && status.contains("2 checkpoint(s) queued"), "{status}");
    assert!(!got.iter().any(|d| has(d, "STOPPING=1")), "{got:#?}");

    assert_eq!(d.stop(), Some(0));
    read_until(&sock, &mut got, Duration::from_secs(5), |g| g.iter().any(|d| has(d, "STOPPING=1")));
}
