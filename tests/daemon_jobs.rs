//! The daemon's model-running jobs when the model misbehaves (tests/python/bad_factories.py, a tiny linear
//! classifier on the Python backend, misbehaving only at the checkpoint `step-10.safetensors`): a loss that
//! hangs is stopped at its call's deadline and counted `outcome="timeout"`, later jobs still run, and no
//! worker process is left; SIGTERM stops the daemon promptly while a job waits on a hung worker; a
//! runaway allocation is stopped by `worker_memory_limit` in the job section, and a worker that cannot
//! even load torch within it dies and is counted `outcome="worker_failed"`; a worker killed with SIGKILL
//! (as the OOM killer kills) is counted `outcome="worker_failed"`, the daemon serves on and the job runs
//! again at its next checkpoint; a checkpoint rotated away (HF `save_total_limit`, also by a real HF
//! `Trainer`) while its job's worker starts is still computed from the files held before the worker
//! started.

mod support;
use std::time::Duration;
use support::*;

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

/// The one log line of `log` holding `what`.
fn one_line<'a>(log: &'a str, what: &str) -> &'a str {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(what)).collect();
    assert_eq!(lines.len(), 1, "one line with {what:?}:\n{log}");
    lines[0]
}

/// The sharpness job's worker is killed with SIGKILL mid-call (what the kernel's OOM killer sends): the
/// job is counted `outcome="worker_failed"` with one line naming the signal, the daemon keeps serving,
/// and at the next checkpoint the job runs again and succeeds.
#[test]
fn a_killed_worker_is_counted_worker_failed_and_the_job_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[run.sharpness]\nevery = 1\nmeasures = [\"eigs\"]\nmax_hvps = 10";
    let (d, ck, pids) = start_daemon(dir.path(), job, "bad_factories:hangs_at_step_10", "");
    drop_checkpoint(&ck, "step-10.safetensors", 0.0);
    let pid = noted_pid(&d, &pids, "hang");
    // SAFETY: a plain signal to the worker process the factory named.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_until(Duration::from_secs(30), "the killed worker's job counted", || {
        runs(&d, "sharpness", "worker_failed") == 1.0
    });
    let log = d.log();
    let line = one_line(&log, "its model worker failed");
    assert!(line.contains(&format!("pid {pid}")) && line.contains("SIGKILL"), "{line}");
    assert!(get(d.port, "/healthz").is_some_and(|h| h.contains("\"ready\":true")));

    drop_checkpoint(&ck, "step-20.safetensors", 1.0);
    wait_until(Duration::from_secs(90), "the sharpness job at step 20", || {
        runs(&d, "sharpness", "ok") == 1.0
    });
    let v: serde_json::Value =
        serde_json::from_str(&get(d.port, "/api/v1/runs/r/sharpness").unwrap()).unwrap();
    assert!(v.to_string().contains("\"step\":20"), "{v}");
    assert_eq!((runs(&d, "sharpness", "worker_failed"), runs(&d, "sharpness", "error")), (1.0, 0.0));
    assert_eq!(d.stop(), Some(0));
}

/// A `worker_memory_limit` too small for torch (1 GiB: torch maps about 3.2 GB once imported): the
/// worker cannot load it, says so naming the limit, and exits; the job is counted
/// `outcome="worker_failed"` with that line, and the daemon serves on.
#[test]
fn a_worker_over_its_memory_limit_at_start_dies_and_is_counted_worker_failed() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[run.slice]\nevery = 1\nx = \"-0.5:0.5:3\"";
    let (d, ck, _) =
        start_daemon(dir.path(), job, "bad_factories:hangs_at_step_10", "worker_memory_limit = \"1G\"");
    drop_checkpoint(&ck, "step-20.safetensors", 0.0);
    wait_until(Duration::from_secs(60), "the slice job counted worker_failed", || {
        runs(&d, "slice", "worker_failed") == 1.0
    });
    let log = d.log();
    let line = one_line(&log, "its model worker failed");
    assert!(line.contains("exited with code 3") && line.contains("address-space limit of 1.0 GiB"), "{line}");
    assert!(get(d.port, "/healthz").is_some_and(|h| h.contains("\"ready\":true")));
    assert_eq!((runs(&d, "slice", "ok"), runs(&d, "slice", "error")), (0.0, 0.0));
    assert_eq!(d.stop(), Some(0));
}

/// Issue 25: a Python worker starts slowly while the trainer's `save_total_limit` rotates the HF folder
/// `checkpoint-10/` away. The job's checkpoint was held (hard-linked into the data dir) before its worker
/// started, so the factory's `AutoConfig.from_pretrained` reads the held folder and the slice is computed
/// (`outcome="ok"`), its record naming the checkpoint as watched; the held copy goes with the job.
#[test]
fn a_checkpoint_rotated_away_while_the_worker_starts_is_still_sliced() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[run.slice]\nevery = 1\nx = \"-0.5:0.5:3\"";
    let (d, ck, pids) = start_daemon(dir.path(), job, "bad_factories:from_pretrained_after_rotation", "");
    // An HF checkpoint folder, written elsewhere and moved in whole, as the Trainer does.
    let stage = dir.path().join("stage/checkpoint-10");
    std::fs::create_dir_all(&stage).unwrap();
    drop_checkpoint(&stage, "model.safetensors", 0.0);
    std::fs::write(stage.join("trainer_state.json"), r#"{"global_step": 10}"#).unwrap();
    std::fs::write(stage.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let folder = ck.join("checkpoint-10");
    std::fs::rename(&stage, &folder).unwrap();
    noted_pid(&d, &pids, "slow_start");
    assert_eq!(recorded(d.port).iter().map(|(s, _)| *s).collect::<Vec<_>>(), [10]);
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::write(pids.join("rotated"), "").unwrap();
    wait_until(Duration::from_secs(90), "the slice job counted", || {
        ["ok", "skipped", "error"].iter().any(|o| runs(&d, "slice", o) > 0.0)
    });
    let log = d.log();
    assert_eq!((runs(&d, "slice", "ok"), runs(&d, "slice", "error")), (1.0, 0.0), "{log}");
    let slices: Vec<serde_json::Value> =
        serde_json::from_str(&get(d.port, "/api/v1/runs/r/slices").unwrap()).unwrap();
    assert_eq!(slices.len(), 1);
    let rec: serde_json::Value =
        serde_json::from_str(&get(d.port, &format!("/api/v1/slices/{}", slices[0]["id"])).unwrap()).unwrap();
    assert_eq!(rec["checkpoint"].as_str(), folder.to_str(), "the record names the watched checkpoint");
    assert_eq!(rec["step"], 10);
    let held = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("-hold-"))
        .count();
    assert_eq!(held, 0, "the held copy went with the job");
    assert_eq!(d.stop(), Some(0));
}

/// A real HF `Trainer` run (tests/python/hf_trainer_rotate.py: a tiny GPT-2, a checkpoint every step,
/// `save_total_limit=1`) beside the daemon with a slow-starting factory: `checkpoint-1` is rotated away
/// while its slice job's worker starts, and the slice about step 1 is still computed from the held
/// files; no job ends in error.
#[test]
fn an_hf_trainer_rotating_checkpoints_while_a_worker_starts() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[run.slice]\nevery = 1\nabandon_on_newer = false\nx = \"-0.5:0.5:3\"";
    let (d, ck, pids) =
        start_daemon(dir.path(), job, "bad_factories:hf_trainer_slow_start", "loss = \"causal_lm\"");
    run_script_args("hf_trainer_rotate.py", [ck.as_os_str(), pids.as_os_str()]);
    // The Trainer waited for the worker at checkpoint-1, then saved on and rotated it away.
    assert!(pids.join("slow_start.pid").exists());
    assert!(!ck.join("checkpoint-1").exists() && ck.join("checkpoint-3").exists());
    std::fs::write(pids.join("rotated"), "").unwrap();
    let step1 = || -> Option<serde_json::Value> {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&get(d.port, "/api/v1/runs/r/slices")?).ok()?;
        list.into_iter().find(|s| s["step"] == 1 && s["complete"] == true)
    };
    wait_until(Duration::from_secs(120), "the slice about step 1", || step1().is_some());
    let log = d.log();
    assert_eq!(runs(&d, "slice", "error"), 0.0, "{log}");
    assert!(!log.lines().any(|l| l.contains("job failed")), "{log}");
    let rec: serde_json::Value =
        serde_json::from_str(&get(d.port, &format!("/api/v1/slices/{}", step1().unwrap()["id"])).unwrap())
            .unwrap();
    assert!(rec["checkpoint"].as_str().unwrap().ends_with("checkpoint-1"), "{rec}");
    let loss = rec["values"]["loss"].as_array().unwrap();
    assert!(loss.iter().all(|l| l.as_f64().is_some_and(f64::is_finite)), "{rec}");
    assert_eq!(d.stop(), Some(0));
}
