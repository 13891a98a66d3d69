//! Crash consistency: a writer produces checkpoints while the daemon is killed with SIGKILL at random
//! moments (during start, scans, ingest) and restarted; in the end every checkpoint is recorded once,
//! with the norms the writer computed (NumPy, float64), and the trajectory archive holds each step once.
//!
//! The short variant runs in the suite (40 checkpoints, 5 kills); `make soak` runs the long one
//! (`SOAK_CHECKPOINTS`, `SOAK_KILLS`, default 200 and 20 there).

mod daemon_support;

use daemon_support::*;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small xorshift generator (seeded by time, printed so a failure can be replayed with SOAK_SEED).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let n = env_or("SOAK_CHECKPOINTS", 40);
    let kills = env_or("SOAK_KILLS", 5);
    let seed = env_or(
        "SOAK_SEED",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1,
    );
    eprintln!("crash test: {n} checkpoints, {kills} kills, SOAK_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    // Spread the writes over the kills: about one kill per n/kills checkpoints.
    let interval = 0.15f64;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/daemon_writer.py");
    let mut w = Command::new(python())
        .arg(&script)
        .arg(&ck)
        .args(["--steps", &format!("1-{n}"), "--interval", &interval.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut d = start(tmp.path(), &[&ck], "io_idle = false\n");
    let writing = Duration::from_secs_f64(interval * n as f64);
    let t0 = Instant::now();
    for k in 0..kills {
        // Kill at a random moment within this kill's share of the writing time (at least 50 ms of life).
        let share = (writing.as_millis() as u64 / kills).max(300);
        std::thread::sleep(rng.millis(50, share));
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        d.child = spawn_env(&d.config, tmp.path(), &[]).0;
        eprintln!("kill {} at {:.2}s", k + 1, t0.elapsed().as_secs_f64());
    }
    let mut written = Vec::new();
    let out = w.stdout.take().unwrap();
    for line in std::io::BufReader::new(out).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        written.push((v["step"].as_u64().unwrap(), v["norm"].as_f64().unwrap()));
    }
    assert!(w.wait().unwrap().success());
    assert_eq!(written.len() as u64, n);
    let port = d.port;
    wait_until(Duration::from_secs(60 + n / 2), "every checkpoint recorded", || {
        recorded(port).len() as u64 == n
    });
    let got = recorded(port);
    let steps: Vec<u64> = got.iter().map(|g| g.0).collect();
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(unique.len(), steps.len(), "duplicated steps");
    for ((s, norm), (gs, gn)) in written.iter().zip(&got) {
        assert_eq!(s, gs);
        assert!(close(*norm, *gn), "step {s}: writer {norm} vs daemon {gn}");
    }
    assert_eq!(d.stop(), Some(0));
    let archived = landscaped::trajectory::archive::list_run(&tmp.path().join("data"), "r").unwrap();
    let mut arch_steps: Vec<u64> = archived.iter().map(|e| e.step).collect();
    arch_steps.dedup();
    assert_eq!(arch_steps, steps, "archive differs from the records");
    // What the killed daemons were writing (archive `.tmp` files) went at the restarts.
    let mut temps = Vec::new();
    let mut dirs = vec![tmp.path().join("data/trajectory")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else if e.file_name().to_string_lossy().ends_with(".tmp") {
                temps.push(e.path());
            }
        }
    }
    assert!(temps.is_empty(), "temporaries left: {temps:?}");
    println!(
        "crash test: {n} checkpoints, {kills} kills in {:.1}s: 0 lost, 0 duplicated, norms equal",
        t0.elapsed().as_secs_f64()
    );
}
