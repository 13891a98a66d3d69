//! A real full disk: the daemon's data dir is a small tmpfs in a private mount namespace
//! (`unshare -m`), filled to the last byte (`nsenter` + a ballast file) while checkpoints keep coming.
//! Checked: /healthz answers 503 with the cause while writes fail, environment errors are counted (never
//! recorded against the files), and once space is freed — without a restart — /healthz is 200 again and
//! every checkpoint is recorded once with its true norm (0 lost, 0 duplicated).

mod capability;
mod support;
use support::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn can_mount() -> bool {
    Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs none /mnt"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn in_ns(pid: i32, script: &str) -> bool {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "sh", "-c", script])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_disk_is_unhealthy_then_recovers_without_losing_a_checkpoint() {
    if !capability::require(
        can_mount(),
        "no private mount namespace here (unshare -m), which the full disk needs",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let config = write_config(dir.path(), &[&ck], "rescan_interval_secs = 1", "");
    let log = dir.path().join("daemon.log");
    let child = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=32m none \"$0\" && exec \"$@\""])
        .arg(&data)
        .arg(BIN)
        .args(["daemon", "--config", config.to_str().unwrap()])
        .env("LANDSCAPED_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // daemon.json is on the tmpfs of the daemon's own mount namespace: read through /proc/PID/root.
    let mut child = child;
    let seen = Path::new(&format!("/proc/{}/root", child.id())).join(data.strip_prefix("/").unwrap());
    let port = bound_port(&mut child, &seen.join("daemon.json"), &log, Duration::from_secs(20));
    let d = Daemon { child, port, config, log };
    wait_until(Duration::from_secs(20), "daemon ready", || {
        get(port, "/healthz").is_some_and(|h| h.contains("\"ready\":true"))
    });
    let mut want = writer(&ck, &["--steps", "1,2,3"]);
    wait_until(Duration::from_secs(30), "steps 1-3 recorded", || recorded(port).len() == 3);
    assert_eq!(get_status(port, "/healthz").map(|s| s.0), Some(200));

    // Fill the tmpfs: cat stops at ENOSPC, leaving no byte free.
    let ballast = data.join("ballast");
    in_ns(d.pid(), &format!("cat /dev/zero > {:?} 2>/dev/null; true", ballast.to_str().unwrap()));
    assert!(in_ns(d.pid(), &format!("test -s {:?}", ballast.to_str().unwrap())), "no ballast written");
    want.extend(writer(&ck, &["--steps", "4,5,6"]));
    wait_until(Duration::from_secs(60), "/healthz 503 on the full disk", || {
        get_status(port, "/healthz").is_some_and(|(code, body)| code == 503 && body.contains("\"unhealthy\""))
    });
    let (_, body) = get_status(port, "/healthz").unwrap();
    // The cause is named: the archive's own free-space check, or the kernel's ENOSPC.
    assert!(body.contains("\"writable\":false"), "{body}");
    assert!(body.contains("free") || body.contains("No space"), "{body}");
    let env_errors: f64 = d
        .metrics()
        .lines()
        .filter(|l| l.starts_with("landscaped_environment_errors_total{"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert!(env_errors >= 1.0, "no environment error counted:\n{}", d.metrics());
    assert!(recorded(port).len() < 6, "checkpoints recorded although the disk is full");

    // Free the space: no restart.
    assert!(in_ns(d.pid(), &format!("rm {:?}", ballast.to_str().unwrap())));
    wait_until(Duration::from_secs(90), "all six steps recorded after space came back", || {
        recorded(port).len() == 6
    });
    wait_until(Duration::from_secs(30), "/healthz 200 again", || {
        get_status(port, "/healthz").is_some_and(|(code, _)| code == 200)
    });
    let mut got = recorded(port);
    got.sort_by_key(|c| c.0);
    want.sort_by_key(|c| c.0);
    assert_eq!(
        got.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6],
        "lost or duplicated steps"
    );
    for ((s, a), (_, b)) in got.iter().zip(&want) {
        assert!(close(*a, *b), "step {s}: recorded norm {a}, written {b}");
    }
    let log_text = d.log();
    assert_eq!(d.stop(), Some(0), "daemon log:\n{log_text}");
}
