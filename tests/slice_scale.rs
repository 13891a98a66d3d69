//! Scale-out end to end: `landscaped slice --workers-listen ADDR --expect N` with workers that dial in
//! (`landscaped-worker --connect`, `python -m landscaped_worker --connect`), started by hand as a
//! launcher would, by Open MPI's `mpirun` and by `torchrun`. The grid is the single-worker grid bit for
//! bit, also when a worker dies in the middle and another is a straggler; intruders (wrong token,
//! another contract) are refused with one line each and change nothing.

mod support;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

const TOKEN: &str = "test-token-3f9a";

fn fixture() -> &'static Path {
    &slice_fixture().0
}

/// The CLI on the store `data` (named by LANDSCAPED_DATA_DIR), logging at info, no token in the environment.
fn landscaped(data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("LANDSCAPED_DATA_DIR", data).env("LANDSCAPED_LOG", "info").env_remove("LANDSCAPED_TOKEN");
    c
}

/// The test slice: 11 × 9 points about ckpt_b, seed 5, one intra-op thread per worker.
fn slice_args(python: bool) -> Vec<String> {
    let f = fixture();
    let mut a: Vec<String> =
        vec!["slice".into(), "--checkpoint".into(), f.join("ckpt_b.safetensors").display().to_string()];
    if python {
        a.extend(["--backend", "python", "--python"].map(String::from));
        a.push(venv_python().display().to_string());
        a.extend(["--factory", "scale_factory:build", "--batch-size", "64"].map(String::from));
    } else {
        a.push("--model-dir".into());
        a.push(f.join("model").display().to_string());
    }
    a.extend(["--x=-1:1:11", "--y=-1:1:9", "--seed", "5", "--threads", "1"].map(String::from));
    a
}

/// The grid as JSON (loss, accuracy, centre loss) of slice `id`.
fn show(data: &Path, id: &str) -> serde_json::Value {
    let out = landscaped(data).args(["--format", "json", "slices", "show", id]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn reference(python: bool) -> serde_json::Value {
    let data = tempfile::tempdir().unwrap();
    let out = landscaped(data.path())
        .args(slice_args(python))
        .args(["--workers", "1"])
        .env("PYTHONPATH", worker_python_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    show(data.path(), "1")
}

fn assert_same_grid(got: &serde_json::Value, want: &serde_json::Value) {
    for k in ["loss", "accuracy", "centre_loss", "shape"] {
        assert_eq!(got[k], want[k], "{k} differs");
    }
}

/// A coordinator started on `127.0.0.1:0`: it binds a free port itself and names the bound address in
/// its log line `waiting … for N worker(s) on ADDR (contract …)`, read here from its stderr (no port is
/// picked, released and bound again, so parallel tests cannot race for one).
struct Coordinator {
    child: Child,
    /// Where workers dial in (`127.0.0.1:PORT`).
    addr: String,
    /// The whole stderr, once the coordinator has ended.
    stderr: std::thread::JoinHandle<String>,
}

impl Coordinator {
    /// Starts `cmd` (a slice or sharpness command with `--workers-listen 127.0.0.1:0`) and waits, up to
    /// 60 s, for the line naming its address; fails with its stderr if it ends first.
    fn spawn(cmd: &mut Command) -> Coordinator {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = coordinator_addr(&line) {
                    let _ = tx.send(a);
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Coordinator { child, addr, stderr },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the coordinator never said where it listens ({e}):\n{}", stderr.join().unwrap());
            }
        }
    }

    /// Waits for the coordinator to end (within `secs`); its output with the whole stderr.
    fn finish(self, secs: u64) -> Output {
        let mut out = finish(self.child, secs, "the coordinator");
        out.stderr = self.stderr.join().unwrap().into_bytes();
        out
    }
}

/// The `--workers-listen` flags of a coordinator on a free loopback port.
fn listen_flags(expect: usize, wait: u64) -> Vec<String> {
    let (e, w) = (expect.to_string(), wait.to_string());
    ["--workers-listen", "127.0.0.1:0", "--expect", &e, "--wait", &w].map(String::from).to_vec()
}

/// The coordinator: the test slice, listening on a free loopback port for `expect` workers.
fn coordinator(data: &Path, python: bool, expect: usize) -> Coordinator {
    Coordinator::spawn(
        landscaped(data)
            .args(slice_args(python))
            .args(listen_flags(expect, 90))
            .env("LANDSCAPED_TOKEN", TOKEN)
            .env("PYTHONPATH", worker_python_path()),
    )
}

/// A TorchScript worker dialling `addr` with `token`.
fn ts_worker(addr: &str, token: &str) -> Command {
    let mut c = Command::new(worker_bin());
    c.args(["--connect", addr, "--connect-timeout", "60"]).env("LANDSCAPED_TOKEN", token);
    c
}

fn py_worker(addr: &str) -> Command {
    let mut c = Command::new(venv_python());
    c.args(["-m", "landscaped_worker", "--connect", addr, "--connect-timeout", "60"])
        .env("LANDSCAPED_TOKEN", TOKEN)
        .env("PYTHONPATH", worker_python_path());
    c
}

/// Waits for a child with a limit (a hung test fails instead of hanging CI).
fn finish(mut child: Child, secs: u64, what: &str) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not finish within {secs} s: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn workers_that_dial_in_compute_the_single_worker_grid_and_intruders_are_refused() {
    let want = reference(false);
    let data = tempfile::tempdir().unwrap();
    let coord = coordinator(data.path(), false, 2);
    // Intruders first: a wrong token, then a worker started for another contract. Each is told why.
    let out = ts_worker(&coord.addr, "not-the-token").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused by the coordinator") && err.contains("wrong token"), "{err}");
    let out = ts_worker(&coord.addr, TOKEN).args(["--contract", "00000000deadbeef"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("00000000deadbeef"));
    // Then two good workers.
    let stderr = two_workers_finish(coord);
    assert!(stderr.contains("refused a worker") && stderr.contains("wrong token"), "{stderr}");
    assert!(!stderr.contains("not-the-token") && !stderr.contains(TOKEN), "tokens never reach the log");
    assert!(stderr.contains("2 workers × "), "{stderr}");
    assert_same_grid(&show(data.path(), "1"), &want);
}

/// Two good workers dial in to `coord`; the coordinator succeeds with both ready and each worker ends
/// cleanly after the job. Returns the coordinator's stderr.
fn two_workers_finish(coord: Coordinator) -> String {
    let workers: Vec<Child> = (0..2)
        .map(|_| ts_worker(&coord.addr, TOKEN).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let out = coord.finish(240);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 worker(s) ready"), "{stderr}");
    for w in workers {
        let o = finish(w, 30, "a worker");
        assert!(
            o.status.success(),
            "a worker ends cleanly after the job: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    stderr
}

/// 300 connections that never send their join (more than the coordinator reads at once) are open
/// before two honest workers dial in: the workers still join, and the grid is the one-worker grid.
#[test]
fn idle_unauthenticated_connections_do_not_stop_the_job() {
    let want = reference(false);
    let data = tempfile::tempdir().unwrap();
    let coord = coordinator(data.path(), false, 2);
    // It listens (it said where); a connection that fails (a full accept backlog) is tried again.
    let t = Instant::now();
    let mut idle = Vec::new();
    while idle.len() < 300 && t.elapsed() < Duration::from_secs(60) {
        if let Ok(s) = std::net::TcpStream::connect(&coord.addr) {
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 300);
    let stderr = two_workers_finish(coord);
    // A flood is a few lines, not one per connection.
    let refusals = stderr.lines().filter(|l| l.contains("refused a worker")).count();
    assert!(refusals <= 25, "{refusals} refusal lines:\n{stderr}");
    drop(idle);
    assert_same_grid(&show(data.path(), "1"), &want);
}

#[test]
fn nobody_joining_is_one_line_and_fewer_than_expected_start_after_the_wait() {
    let data = tempfile::tempdir().unwrap();
    let out = landscaped(data.path())
        .args(slice_args(false))
        .args(listen_flags(2, 1))
        .env("LANDSCAPED_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no worker joined within 1 s") && err.contains("--connect"), "{err}");
    // No token anywhere: refused before listening, saying what to set.
    let out = landscaped(data.path())
        .args(slice_args(false))
        .args(["--workers-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LANDSCAPED_TOKEN"));
    // One of two expected workers: the job starts with it after the wait, saying so.
    let want = reference(false);
    let data = tempfile::tempdir().unwrap();
    let coord = Coordinator::spawn(
        landscaped(data.path())
            .args(slice_args(false))
            .args(listen_flags(2, 3))
            .env("LANDSCAPED_TOKEN", TOKEN),
    );
    let w = ts_worker(&coord.addr, TOKEN).stdout(Stdio::null()).spawn().unwrap();
    let out = coord.finish(240);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("only 1 of 2 workers joined within 3 s; starting with those"), "{stderr}");
    finish(w, 30, "the worker");
    assert_same_grid(&show(data.path(), "1"), &want);
}

/// Python workers: one dies after a few points (its unfinished points go to the others), one is slow
/// (its last block is copied to an idle worker): the grid is still the one-worker grid, bit for bit.
#[test]
fn a_lost_worker_and_a_straggler_change_nothing() {
    let want = reference(true);
    let data = tempfile::tempdir().unwrap();
    let coord = coordinator(data.path(), true, 3);
    // Every worker is paced (a Python worker's first evaluation can take a second to warm up; unpaced,
    // the first worker could finish the whole grid before the others start).
    let steady = py_worker(&coord.addr)
        .env("SCALE_TEST_SLOW", "0.02")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // This worker's process ends at the 7th batch it evaluates: inside the first block it takes (every
    // worker takes one at once, blocks start at up to 4 points), or during the centre's evaluation when
    // it is the first worker.
    let dying =
        py_worker(&coord.addr).env("SCALE_TEST_DIE_AFTER", "6").stderr(Stdio::null()).spawn().unwrap();
    let slow = py_worker(&coord.addr).env("SCALE_TEST_SLOW", "0.05").stderr(Stdio::null()).spawn().unwrap();
    let out = coord.finish(400);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Lost in the grid (its points go to the others) or, when it was the first, while evaluating the
    // centre (the next worker evaluates it).
    let in_grid =
        stderr.contains("unfinished points go to the others") && stderr.contains("1 worker(s) lost");
    assert!(in_grid || stderr.contains("was lost evaluating the centre"), "{stderr}");
    for w in [steady, dying, slow] {
        let _ = finish(w, 60, "a worker");
    }
    assert_same_grid(&show(data.path(), "1"), &want);
}

/// A launcher's two ranks did the job: the coordinator (within `secs`) and the launcher (within
/// `launcher_secs`) both succeed,
/// ranks 0 and 1 joined, and the stored grid is `want`.
fn launched_ranks_computed_the_grid(
    coord: Coordinator,
    secs: u64,
    launcher: Child,
    launcher_secs: u64,
    name: &str,
    data: &Path,
    want: &serde_json::Value,
) {
    let out = coord.finish(secs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("rank 0 on ") && stderr.contains("rank 1 on "), "{stderr}");
    let l = finish(launcher, launcher_secs, name);
    assert!(l.status.success(), "{}", String::from_utf8_lossy(&l.stderr));
    assert_same_grid(&show(data, "1"), want);
}

/// The mpirun line of docs/scale-out.md, with Debian's Open MPI (scripts/ci-deps.sh installs it): two
/// ranks, each a TorchScript worker that reports its rank.
#[test]
fn mpirun_places_the_workers() {
    let mpirun = Path::new("/usr/bin/mpirun");
    assert!(
        mpirun.exists(),
        "mpirun is missing: `make test-deps` (scripts/ci-deps.sh) installs Debian's openmpi-bin"
    );
    let want = reference(false);
    let data = tempfile::tempdir().unwrap();
    let coord = coordinator(data.path(), false, 2);
    let ranks = Command::new(mpirun)
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", "LANDSCAPED_TOKEN"])
        .arg(worker_bin())
        .args(["--connect", &coord.addr, "--connect-timeout", "60"])
        .env("LANDSCAPED_TOKEN", TOKEN)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    launched_ranks_computed_the_grid(coord, 240, ranks, 60, "mpirun", data.path(), &want);
}

/// The torchrun line of docs/scale-out.md: two Python workers started by torchrun (RANK, LOCAL_RANK).
#[test]
fn torchrun_places_python_workers() {
    let want = reference(true);
    let data = tempfile::tempdir().unwrap();
    let coord = coordinator(data.path(), true, 2);
    let ranks = Command::new(root().join(".venv/bin/torchrun"))
        .args(["--standalone", "--nproc-per-node", "2", "-m", "landscaped_worker"])
        .args(["--connect", &coord.addr, "--connect-timeout", "60"])
        .env("LANDSCAPED_TOKEN", TOKEN)
        .env("PYTHONPATH", worker_python_path())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    launched_ranks_computed_the_grid(coord, 400, ranks, 120, "torchrun", data.path(), &want);
}

/// Hutchinson's probes and SLQ's runs spread over two workers that dial in give the one-worker trace
/// and quadrature bit for bit (probes are folded in order).
#[test]
fn sharpness_probes_spread_over_dial_in_workers_give_the_one_worker_figures() {
    let f = fixture();
    let args = |data: &Path| {
        let mut c = landscaped(data);
        c.args(["--format", "json", "sharpness", "--run", "x", "--checkpoint"])
            .arg(f.join("ckpt_b.safetensors"))
            .arg("--model-dir")
            .arg(f.join("model"))
            .args(["--measures", "trace,density", "--trace-samples", "40", "--trace-rel-tol", "0"])
            .args(["--density-runs", "4", "--density-steps", "10", "--threads", "1"]);
        c
    };
    let rows = |out: &[u8]| -> Vec<(String, serde_json::Value, serde_json::Value)> {
        let v: Vec<serde_json::Value> = serde_json::from_slice(out).unwrap();
        v.into_iter()
            .map(|r| (r["quantity"].as_str().unwrap().to_string(), r["value"].clone(), r["pm"].clone()))
            .collect()
    };
    let one = tempfile::tempdir().unwrap();
    let out = args(one.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = rows(&out.stdout);
    assert!(want.iter().any(|(q, _, _)| q == "trace") && want.iter().any(|(q, _, _)| q == "trace_slq"));

    let data = tempfile::tempdir().unwrap();
    let coord =
        Coordinator::spawn(args(data.path()).args(listen_flags(2, 90)).env("LANDSCAPED_TOKEN", TOKEN));
    let workers: Vec<Child> = (0..2)
        .map(|_| ts_worker(&coord.addr, TOKEN).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
        .collect();
    let out = coord.finish(240);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 worker(s) ready"));
    assert_eq!(rows(&out.stdout), want);
    for w in workers {
        assert!(finish(w, 30, "a worker").status.success());
    }
}

/// A distributed slice interrupted (as Ctrl-C or the end of an allocation would) resumes from the stored
/// points, here on a local worker: the finished grid is the one-worker grid.
#[test]
fn an_interrupted_distributed_slice_resumes_from_the_stored_points() {
    let want = reference(false);
    let data = tempfile::tempdir().unwrap();
    let coord = Coordinator::spawn(
        landscaped(data.path())
            .args(slice_args(false))
            .args(listen_flags(2, 90))
            .env("LANDSCAPED_TOKEN", TOKEN)
            .env("LANDSCAPED_STOP_AFTER_POINTS", "30"),
    );
    let workers: Vec<Child> = (0..2)
        .map(|_| ts_worker(&coord.addr, TOKEN).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
        .collect();
    let out = coord.finish(240);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cancelled after"), "{stdout}");
    for w in workers {
        assert!(finish(w, 30, "a worker").status.success(), "workers end cleanly when the coordinator stops");
    }
    let out = landscaped(data.path()).args(slice_args(false)).args(["--workers", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming slice 1"), "{err}");
    assert_same_grid(&show(data.path(), "1"), &want);
}
