//! The daemon's model-running jobs when the model misbehaves (tests/python/bad_factories.py, a tiny linear
//! classifier on the Python backend, misbehaving only at the checkpoint `step-10.safetensors`): a loss that
//! hangs is stopped at its call's deadline and counted `outcome="timeout"`, later jobs still run, and no
//! worker process is left; SIGTERM stops the daemon promptly while a job waits on a hung worker; a
//! runaway allocation is stopped by `worker_memory_limit` in the job section.

mod daemon_support;
use daemon_support::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A checkpoint of the factories' model (weight [3, 4], bias [3]) in `ck` as `name`, written whole.
fn drop_checkpoint(ck: &Path, name: &str, seed: f32) {
    let values: Vec<f32> = (0..15).map(|i| ((i as f32) * 0.37 + seed).sin() * 0.5).collect();
    let header = r#"{"weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,48]},"bias":{"dtype":"F32","shape":[3],"data_offsets":[48,60]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    for v in values {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(ck.join("tmp.part"), bytes).unwrap();
    std::fs::rename(ck.join("tmp.part"), ck.join(name)).unwrap();
}

/// Starts the daemon watching `<dir>/ck` with `job` (a section header and its keys besides the model's)
/// computing on the Python factory `factory`; the workers note their pid in `<dir>/pids`.
fn start_daemon(dir: &Path, job: &str, factory: &str, model_extra: &str) -> (Daemon, PathBuf, PathBuf) {
    let ck = dir.join("ck");
    let pids = dir.join("pids");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::create_dir_all(&pids).unwrap();
    let config = dir.join("landscaped.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"{LISTEN_ANY}\"\nquiet_period_secs = 0.3\nincomplete_timeout_secs = 2.0\n\
             rescan_interval_secs = 30\n[[run]]\nname = \"r\"\nwatch = [{:?}]\n{job}\nbackend = \"python\"\n\
             python = {:?}\nfactory = {factory:?}\nbatch_size = 32\nthreads = 1\n{model_extra}\n",
            dir.join("data").to_str().unwrap(),
            ck.to_str().unwrap(),
            python().to_str().unwrap(),
        ),
    )
    .unwrap();
    let tests_python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let env =
        [("PYTHONPATH", tests_python.to_str().unwrap()), ("LANDSCAPED_TEST_PID_DIR", pids.to_str().unwrap())];
    (restart_env(config, dir, &env), ck, pids)
}

/// The pid a worker noted in `<pids>/<what>.pid`, once it has.
fn noted_pid(d: &Daemon, pids: &Path, what: &str) -> i32 {
    let file = pids.join(format!("{what}.pid"));
    wait_until(Duration::from_secs(90), &format!("a worker at {what}"), || file.exists());
    std::fs::read_to_string(&file).unwrap().trim().parse().unwrap_or_else(|e| panic!("{e}\n{}", d.log()))
}

/// Whether process `pid` is gone (no /proc entry: not running, not a zombie).
fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn runs(d: &Daemon, job: &str, outcome: &str) -> f64 {
    d.metric(&format!("landscaped_job_runs_total{{job=\"{job}\",outcome=\"{outcome}\",run=\"r\"}}"))
        .unwrap_or(0.0)
}

/// A loss that hangs at step 10: the call is stopped at its deadline (the floor given by
/// `worker_call_timeout`), the worker process is gone, the run counted `outcome="timeout"` with one line.
/// Steps 20 and 30 are ingested meanwhile: the job due at 20 is replaced by 30 (one line, counted), and
/// the slice at step 30 is then computed as usual.
#[test]
fn a_hung_model_is_timed_out_and_later_jobs_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[run.slice]\nevery = 1\nx = \"-0.5:0.5:3\"";
    let (d, ck, pids) =
        start_daemon(dir.path(), job, "bad_factories:hangs_at_step_10", "worker_call_timeout = 20");
    drop_checkpoint(&ck, "step-10.safetensors", 0.0);
    let pid = noted_pid(&d, &pids, "hang");
    for (step, seed) in [(20, 1.0), (30, 2.0)] {
        drop_checkpoint(&ck, &format!("step-{step}.safetensors"), seed);
        wait_until(Duration::from_secs(10), &format!("step {step} ingested"), || {
            recorded(d.port).iter().any(|(s, _)| *s == step)
        });
    }
    assert_eq!(runs(&d, "slice", "timeout"), 0.0, "the hang outlived 20 s before the test went on");
    let replaced = || d.metric("landscaped_job_replaced_total{job=\"slice\",run=\"r\"}");
    assert_eq!(replaced(), Some(1.0));
    wait_until(Duration::from_secs(60), "the hung slice job counted as a timeout", || {
        runs(&d, "slice", "timeout") == 1.0
    });
    wait_until(Duration::from_secs(10), "the hung worker gone", || gone(pid));
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("job timed out")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("did not answer") && lines[0].contains("within 20 s"), "{}", lines[0]);
    assert!(log.lines().any(|l| l.contains("replaced by step 30")), "{log}");

    wait_until(Duration::from_secs(90), "the slice at step 30", || runs(&d, "slice", "ok") == 1.0);
    let list: serde_json::Value =
        serde_json::from_str(&get(d.port, "/api/v1/runs/r/slices").unwrap()).unwrap();
    let steps: Vec<_> =
        list.as_array().unwrap().iter().map(|s| (s["step"].clone(), s["complete"].clone())).collect();
    assert_eq!(steps, [(serde_json::json!(30), serde_json::json!(true))], "{list}");
    assert_eq!((runs(&d, "slice", "timeout"), replaced()), (1.0, Some(1.0)));
    assert_eq!(d.stop(), Some(0));
}

/// SIGTERM while the sharpness job waits on a hung worker (the default deadline, minutes away): the
/// daemon stops its workers, exits 0 within seconds, and the worker process is gone.
#[test]
fn sigterm_exits_promptly_while_a_job_waits_on_a_hung_worker() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[run.sharpness]\nevery = 1\nmeasures = [\"eigs\"]\nmax_hvps = 10";
    let (d, ck, pids) = start_daemon(dir.path(), job, "bad_factories:hangs_at_step_10", "");
    drop_checkpoint(&ck, "step-10.safetensors", 0.0);
    let pid = noted_pid(&d, &pids, "hang");
    assert!(!gone(pid));
    let log = d.log.clone();
    // stop() allows 20 s; the log below tells a job stopped at once from one that ran out its 10 s grace.
    assert_eq!(d.stop(), Some(0));
    wait_until(Duration::from_secs(5), "the hung worker gone", || gone(pid));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("job stopped by the shutdown"), "{log}");
    assert!(!log.contains("did not stop within"), "{log}");
}

/// `worker_memory_limit` in the job section caps the worker: the runaway loss at step 10 fails to
/// allocate (the run counted as an error, with the allocator's words), the daemon serves on, and the
/// slice at step 20 is computed.
#[test]
fn worker_memory_limit_stops_a_runaway_loss() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[run.slice]\nevery = 1\nx = \"-0.5:0.5:3\"";
    // 8 GiB of address space: room for Python and torch (about 3 GiB mapped), not for 16 GiB more.
    let (d, ck, pids) =
        start_daemon(dir.path(), job, "bad_factories:allocates_at_step_10", "worker_memory_limit = \"8G\"");
    drop_checkpoint(&ck, "step-10.safetensors", 0.0);
    noted_pid(&d, &pids, "runaway");
    wait_until(Duration::from_secs(60), "the runaway slice job counted as failed", || {
        runs(&d, "slice", "error") == 1.0
    });
    let log = d.log();
    assert!(log.lines().any(|l| l.contains("job failed") && l.contains("allocate")), "{log}");
    drop_checkpoint(&ck, "step-20.safetensors", 1.0);
    wait_until(Duration::from_secs(90), "the slice at step 20", || runs(&d, "slice", "ok") == 1.0);
    assert!(get(d.port, "/healthz").is_some_and(|h| h.contains("\"ready\":true")));
    assert_eq!(runs(&d, "slice", "error"), 1.0);
    assert_eq!(d.stop(), Some(0));
}
