//! The CLI end to end: ingest a folder twice (idempotent), runs / checkpoints / norms / hist as JSON,
//! charts, and the one-line message when another process holds the store.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

mod support;
use support::*;

fn checkpoint(dir: &Path, step: u64, scale: f32) {
    let w: Vec<f32> = (0..200).map(|i| ((i as f32) * 0.37).sin() * scale).collect();
    let b: Vec<f32> = (0..10).map(|i| i as f32 * 0.1 * scale).collect();
    write_safetensors(
        &dir.join(format!("step-{step}.safetensors")),
        &[("fc.weight", vec![20, 10], w), ("fc.bias", vec![10], b)],
    );
}

fn landscaped(data: &Path, args: &[&str]) -> Output {
    landscaped_cmd(data).args(args).output().expect("run landscaped")
}

fn json_ok(data: &Path, args: &[&str]) -> Vec<Value> {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let out = landscaped(data, &a);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    v.as_array().unwrap().clone()
}

fn statuses(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|r| r["status"].as_str().unwrap().to_string()).collect()
}

#[test]
fn ingest_is_idempotent_and_queries_answer_in_json() {
    let tmp = tempfile::tempdir().unwrap();
    let (ck, data) = (tmp.path().join("run"), tmp.path().join("data"));
    std::fs::create_dir(&ck).unwrap();
    for (step, scale) in [(10, 1.0), (20, 1.5), (30, 1.7)] {
        checkpoint(&ck, step, scale);
    }
    let dir = ck.to_str().unwrap();
    let first = json_ok(&data, &["ingest", dir, "--run", "demo"]);
    assert_eq!(statuses(&first), ["added", "added", "added"]);
    assert_eq!(first.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), [10, 20, 30]);
    // The same checkpoints again: nothing changes.
    assert_eq!(statuses(&json_ok(&data, &["ingest", dir, "--run", "demo"])), ["unchanged"; 3]);
    // New content at a step already seen: replaced.
    checkpoint(&ck, 30, 2.0);
    let p30 = ck.join("step-30.safetensors");
    assert_eq!(statuses(&json_ok(&data, &["ingest", p30.to_str().unwrap(), "--run", "demo"])), ["replaced"]);
    // Same bytes, new mtime: recognised by the fingerprint.
    let p20 = ck.join("step-20.safetensors");
    let bytes = std::fs::read(&p20).unwrap();
    let mtime = std::fs::metadata(&p20).unwrap().modified().unwrap();
    std::fs::write(&p20, &bytes).unwrap();
    // A later mtime set explicitly (not waited for: the clock's granularity varies by filesystem).
    let f = std::fs::File::options().write(true).open(&p20).unwrap();
    f.set_modified(mtime + std::time::Duration::from_secs(5)).unwrap();
    drop(f);
    assert_eq!(statuses(&json_ok(&data, &["ingest", p20.to_str().unwrap(), "--run", "demo"])), ["unchanged"]);

    let runs = json_ok(&data, &["runs"]);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run"], "demo");
    assert_eq!(runs[0]["checkpoints"], 3);

    let cks = json_ok(&data, &["checkpoints", "--run", "demo"]);
    assert_eq!(cks.len(), 3);
    // The global norm of step 10: sqrt(sum of squares), computed here independently.
    let w: f64 = (0..200).map(|i| (((i as f32) * 0.37).sin() as f64).powi(2)).sum();
    let b: f64 = (0..10).map(|i| ((i as f32 * 0.1) as f64).powi(2)).sum();
    let norm = cks[0]["global_norm"].as_f64().unwrap();
    assert!((norm - (w + b).sqrt()).abs() < 1e-9 * norm, "{norm}");
    assert!(cks[0]["dist_first"].is_null());
    assert!(cks[1]["update_norm"].as_f64().unwrap() > 0.0);
    // Checkpoints that scale θ: consecutive updates point the same way.
    assert!((cks[2]["update_cos"].as_f64().unwrap() - 1.0).abs() < 1e-6);

    let norms = json_ok(&data, &["norms", "--run", "demo"]);
    assert_eq!(norms.len(), 3);
    let per = json_ok(&data, &["norms", "--run", "demo", "--tensor", "fc.w*"]);
    assert_eq!(per.len(), 3);
    assert!(per.iter().all(|r| r["tensor"] == "fc.weight"));

    let hist = json_ok(&data, &["hist", "--run", "demo", "--step", "20", "--tensor", "fc.weight"]);
    assert_eq!(hist.len(), 30);
    assert_eq!(hist.iter().map(|r| r["count"].as_u64().unwrap()).sum::<u64>(), 200);

    // Errors are one clear line.
    let out = landscaped(&data, &["hist", "--run", "demo", "--step", "25", "--tensor", "fc.weight"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no checkpoint at step 25"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn plots_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (ck, data) = (tmp.path().join("run"), tmp.path().join("data"));
    std::fs::create_dir(&ck).unwrap();
    for (step, scale) in [(1, 1.0), (2, 1.2)] {
        checkpoint(&ck, step, scale);
    }
    json_ok(&data, &["ingest", ck.to_str().unwrap(), "--run", "p"]);
    for (kind, extra, file) in [
        ("norms", vec![], "norms.svg"),
        ("norms", vec!["--tensor", "fc.*"], "per.png"),
        ("hist", vec!["--tensor", "fc.weight", "--step", "1", "--step", "2"], "hist.svg"),
    ] {
        let out_path = tmp.path().join(file);
        let mut args = vec!["plot", kind, "--run", "p", "-o", out_path.to_str().unwrap()];
        args.extend(extra);
        let out = landscaped(&data, &args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(&out_path).unwrap();
        if file.ends_with(".svg") {
            assert!(String::from_utf8_lossy(&bytes).contains("<svg"));
        } else {
            assert_eq!(&bytes[1..4], b"PNG");
        }
    }
}

#[test]
fn a_locked_store_gives_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ck = tmp.path().join("run");
    std::fs::create_dir(&ck).unwrap();
    checkpoint(&ck, 1, 1.0);
    // This test process holds the store; the CLI is another process.
    let _held = landscaped::store::Store::open(&data).unwrap();
    let out = landscaped(&data, &["ingest", ck.to_str().unwrap(), "--run", "r"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("the store at {} is locked by another process", data.display())), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Queries then try the daemon's API (none here): still one line naming the store.
    let out = landscaped(&data, &["--endpoint", "127.0.0.1:9", "runs"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn distances_survive_rotation_through_the_trajectory_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("run");
    std::fs::create_dir(&ck).unwrap();
    checkpoint(&ck, 10, 1.0);
    checkpoint(&ck, 20, 1.5);
    let (p10, p20) = (ck.join("step-10.safetensors"), ck.join("step-20.safetensors"));
    let (p10, p20) = (p10.to_str().unwrap(), p20.to_str().unwrap());
    let dist = |rows: &[Value]| rows[0]["dist_first"].as_f64();

    // Reference: both files present.
    let a = tmp.path().join("a");
    json_ok(&a, &["ingest", p10, "--run", "r"]);
    let want = dist(&json_ok(&a, &["ingest", p20, "--run", "r"])).unwrap();

    // Step 10 archived at ingest (the default), then deleted (rotated away): the distance comes from the archive.
    let b = tmp.path().join("b");
    json_ok(&b, &["ingest", p10, "--run", "r"]);
    std::fs::remove_file(ck.join("step-10.safetensors")).unwrap();
    let got = dist(&json_ok(&b, &["ingest", p20, "--run", "r"])).unwrap();
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");

    // Not archived and gone: no distance rather than a wrong one.
    let c = tmp.path().join("c");
    checkpoint(&ck, 10, 1.0);
    json_ok(&c, &["ingest", p10, "--run", "r", "--no-archive"]);
    std::fs::remove_file(ck.join("step-10.safetensors")).unwrap();
    assert_eq!(dist(&json_ok(&c, &["ingest", p20, "--run", "r", "--no-archive"])), None);
}

#[test]
fn a_frozen_daemon_fails_within_seconds_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    // A listener that never accepts: connections complete in its backlog and nothing ever answers (a
    // daemon stopped with SIGSTOP looks the same from outside).
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = frozen.local_addr().unwrap().to_string();
    for data_dir in [None, Some(tmp.path().join("data"))] {
        let mut c = Command::new(BIN);
        if let Some(d) = &data_dir {
            c.arg("--data-dir").arg(d);
        }
        // "no answer in time" below is the CLI's own probe deadline firing; a CLI that hung instead
        // would be killed here after 60 s (a guard, not a measurement).
        let child = c.args(["--endpoint", &at, "runs"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let out = output_within(child, std::time::Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&at) && err.contains("no answer in time"), "{err}");
    }
    drop(frozen);
}

/// The output of `child`, which must end within `limit` (killed and failed otherwise).
fn output_within(mut child: std::process::Child, limit: std::time::Duration) -> std::process::Output {
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Answers every request with `body` (HTTP/1.1, one request per connection), `n` times.
fn fake_daemon(n: usize, identity: Value) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => head.extend_from_slice(&b[..k]),
                }
            }
            let body = if head.starts_with(b"GET /api/v1/identity") {
                identity.to_string()
            } else {
                serde_json::json!({"headers": ["run"], "rows": []}).to_string()
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (at, h)
}

#[test]
fn a_copied_data_dir_is_not_taken_for_its_original() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ck = tmp.path().join("run");
    std::fs::create_dir(&ck).unwrap();
    checkpoint(&ck, 1, 1.0);
    assert!(landscaped(&data, &["ingest", ck.to_str().unwrap(), "--run", "r"]).status.success());
    let copy = tmp.path().join("copy");
    assert!(Command::new("cp").arg("-a").arg(&data).arg(&copy).status().unwrap().success());
    let id = landscaped::store::read_store_id(&data).expect("the original has its id");
    // A daemon serving the original (its identity, as /api/v1/identity gives it).
    let identity = serde_json::json!({
        "data_dir": std::fs::canonicalize(&data).unwrap().display().to_string(),
        "store_id": id, "pid": 1, "listen": "127.0.0.1:1", "version": "test"
    });
    let (at, server) = fake_daemon(4, identity);
    // The original is matched to it.
    let out =
        Command::new(BIN).arg("--data-dir").arg(&data).args(["--endpoint", &at, "runs"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The copy is not: one line saying it is a copy.
    let out =
        Command::new(BIN).arg("--data-dir").arg(&copy).args(["--endpoint", &at, "runs"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the copy was answered by the original's daemon");
    assert!(err.contains("is a copy of the store in"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Opened, the copy gets an id of its own; the original keeps its id.
    let rows = json_ok(&copy, &["runs"]);
    assert_eq!(rows.len(), 1);
    let new = landscaped::store::read_store_id(&copy).expect("the copy has its own id now");
    assert_ne!(new, id);
    assert_eq!(landscaped::store::read_store_id(&data).as_deref(), Some(id.as_str()));
    // Moved (same inode), a data dir keeps its id.
    let moved = tmp.path().join("moved");
    std::fs::rename(&data, &moved).unwrap();
    assert!(json_ok(&moved, &["runs"]).len() == 1);
    assert_eq!(landscaped::store::read_store_id(&moved).as_deref(), Some(id.as_str()));
    // Unblock the fake daemon's last accept.
    let _ = std::net::TcpStream::connect(&at);
    server.join().unwrap();
}
