//! Nothing in a watched tree can stall or escape the daemon, and nothing is passed over silently:
//! FIFOs where a checkpoint folder has its files (DeepSpeed model states, DCP `meta.pt`, an HF
//! folder's `trainer_state.json`), symlinks inside checkpoint folders leaving the watched folders,
//! temporaries a killed daemon left, a checkpoint with a name that is not UTF-8, a symlink loop, a
//! folder that cannot be listed, `checkpoint-N/` without weights, an ingest that makes no progress.
//! Checkpoint folders are written by PyTorch (tests/python/daemon_layouts.py), DeepSpeed's by
//! DeepSpeed (tests/fixtures/deepspeed).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

/// Runs tests/python/daemon_layouts.py: (path, step, norm) of every folder written.
fn layouts(out: &Path, specs: &[&str]) -> Vec<(PathBuf, u64, f64)> {
    python_lines("daemon_layouts.py", out, specs)
        .iter()
        .map(|v| {
            (v["path"].as_str().unwrap().into(), v["step"].as_u64().unwrap(), v["norm"].as_f64().unwrap())
        })
        .collect()
}

fn mkfifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", p.display());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn skipped(d: &Daemon, reason: &str) -> f64 {
    d.metric(&format!(r#"landscaped_skipped_paths_total{{reason="{reason}",run="r"}}"#)).unwrap_or(0.0)
}

fn steps(d: &Daemon) -> Vec<u64> {
    recorded(d.port).iter().map(|r| r.0).collect()
}

#[test]
fn fifos_inside_checkpoint_folders_never_stall_ingest_or_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let (ds, dcpd, hf, good) =
        (tmp.path().join("ds"), tmp.path().join("dcp"), tmp.path().join("hf"), tmp.path().join("good"));
    for d in [&ds, &dcpd, &hf, &good] {
        std::fs::create_dir(d).unwrap();
    }
    // DeepSpeed ZeRO-2 step 3 with its model states a FIFO; DCP step 7 with meta.pt a FIFO; HF step 5
    // with trainer_state.json a FIFO. Each blocked open() for good before.
    let fixture = root().join("tests/fixtures/deepspeed/zero2/global_step3");
    copy_dir(&fixture, &ds.join("global_step3"));
    mkfifo(&ds.join("global_step3/mp_rank_00_model_states.pt"));
    layouts(&dcpd, &["dcp:epoch=0-step=7.ckpt"]);
    mkfifo(&dcpd.join("epoch=0-step=7.ckpt/meta.pt"));
    layouts(&hf, &["hf:checkpoint-5"]);
    mkfifo(&hf.join("checkpoint-5/trainer_state.json"));
    // Good checkpoints queued after them (higher steps).
    writer(&good, &["--steps", "10,11"]);
    let d = start(tmp.path(), &[&ds, &dcpd, &hf, &good], "");
    wait_until(Duration::from_secs(30), "the good steps and the three FIFOs reported", || {
        steps(&d) == vec![10, 11] && skipped(&d, "not_a_file") == 3.0
    });
    // The queue still moves.
    writer(&good, &["--steps", "12"]);
    wait_until(Duration::from_secs(20), "step 12 recorded", || steps(&d) == vec![10, 11, 12]);
    let (code, body) = get_status(d.port, "/healthz").unwrap();
    assert_eq!(code, 200, "{body}");
    let log = d.log();
    for fifo in [
        ds.join("global_step3/mp_rank_00_model_states.pt"),
        dcpd.join("epoch=0-step=7.ckpt/meta.pt"),
        hf.join("checkpoint-5/trainer_state.json"),
    ] {
        let lines: Vec<&str> =
            log.lines().filter(|l| l.contains(fifo.to_str().unwrap()) && l.contains("WARN")).collect();
        assert!(lines.len() == 1 && lines[0].contains("a FIFO"), "{}:\n{log}", fifo.display());
    }
    assert_eq!(d.metric(r#"landscaped_not_a_file_total{kind="not_a_file",run="r"}"#), Some(3.0));
    // SIGTERM ends it (within the 20 s stop() allows), and a restart does not stall either.
    let config = d.config.clone();
    assert_eq!(d.stop(), Some(0));
    let d = restart(config, tmp.path());
    assert_eq!(get_status(d.port, "/healthz").unwrap().0, 200);
    assert_eq!(steps(&d), vec![10, 11, 12]);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn symlinks_inside_checkpoint_folders_must_stay_inside_the_watched_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let (ck, outside) = (tmp.path().join("ck"), tmp.path().join("outside"));
    std::fs::create_dir(&ck).unwrap();
    std::fs::create_dir(&outside).unwrap();
    layouts(&outside, &["hf:checkpoint-5", "dcp:step-7"]);
    let written = layouts(&ck, &["hf:checkpoint-5", "dcp:step-7", "hf:checkpoint-6"]);
    // HF step 5: a shard linked outside; DCP step 7: its data file linked outside; HF step 6: a shard
    // linked to a file inside the watched folder (allowed).
    let shard = "model-00001-of-00002.safetensors";
    std::fs::remove_file(ck.join("checkpoint-5").join(shard)).unwrap();
    std::os::unix::fs::symlink(outside.join("checkpoint-5").join(shard), ck.join("checkpoint-5").join(shard))
        .unwrap();
    std::fs::remove_file(ck.join("step-7/__0_0.distcp")).unwrap();
    std::os::unix::fs::symlink(outside.join("step-7/__0_0.distcp"), ck.join("step-7/__0_0.distcp")).unwrap();
    std::fs::create_dir(ck.join("blobs")).unwrap();
    std::fs::rename(ck.join("checkpoint-6").join(shard), ck.join("blobs/shard-a")).unwrap();
    std::os::unix::fs::symlink(ck.join("blobs/shard-a"), ck.join("checkpoint-6").join(shard)).unwrap();
    let d = start(tmp.path(), &[&ck], "");
    wait_until(Duration::from_secs(30), "step 6 recorded, the two links refused", || {
        steps(&d) == vec![6] && skipped(&d, "outside_root") == 2.0
    });
    let got = recorded(d.port);
    assert!(close(got[0].1, written[2].2), "{got:?} vs {written:?}");
    assert_eq!(d.metric(r#"landscaped_not_a_file_total{kind="outside_root",run="r"}"#), Some(2.0));
    let log = d.log();
    for link in [ck.join("checkpoint-5").join(shard), ck.join("step-7/__0_0.distcp")] {
        let line = log.lines().find(|l| l.contains(link.to_str().unwrap())).expect(&log);
        assert!(line.contains("outside the watched folders"), "{line}");
    }
    // Counted once: a rescan (touching the folder) does not count it again.
    writer(&ck, &["--steps", "20"]);
    wait_until(Duration::from_secs(20), "step 20 recorded", || steps(&d) == vec![6, 20]);
    assert_eq!(skipped(&d, "outside_root"), 2.0);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn temporaries_left_by_a_killed_daemon_are_removed_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    writer(&ck, &["--steps", "1,2"]);
    let d = start(tmp.path(), &[&ck], "");
    wait_until(Duration::from_secs(20), "two steps recorded", || steps(&d) == vec![1, 2]);
    let config = d.config.clone();
    let pid = d.pid();
    d.kill9();
    // What a SIGKILL mid-ingest, mid-PCA and mid-handoff leaves behind, with the killed daemon's pid.
    let traj = tmp.path().join("data/trajectory");
    let run_dir = std::fs::read_dir(&traj).unwrap().flatten().next().expect("a run folder").path();
    let stale = [
        run_dir.join(format!(".00000000000000000003.bin.{pid}.tmp")),
        run_dir.join(format!("pca/pc1.safetensors.{pid}.tmp")),
        tmp.path().join(format!("data/landscaped-handoff-{pid}-0-1/ck.safetensors")),
    ];
    for p in &stale {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![0u8; 4096]).unwrap();
    }
    // A temporary of a live process (this test) stays.
    let live = run_dir.join(format!(".00000000000000000004.bin.{}.tmp", std::process::id()));
    std::fs::write(&live, b"x").unwrap();
    let d = restart(config, tmp.path());
    for p in &stale {
        assert!(!p.exists(), "{} left", p.display());
    }
    assert!(!stale[2].parent().unwrap().exists());
    assert!(live.exists());
    assert!(d.log().contains("removed 3 stale temporary file(s) or folder(s) (12288 bytes)"), "{}", d.log());
    // The archive itself is intact.
    assert_eq!(steps(&d), vec![1, 2]);
    assert!(run_dir.join("00000000000000000002.bin").exists());
    assert_eq!(d.stop(), Some(0));
}

/// Starts the daemon (config from [`start`]'s format) without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH,
/// so that a mode-000 folder cannot be listed even when the tests run as root (as a plain user the
/// drops fail and the mode alone denies it).
fn start_without_dac(dir: &Path, watch: &Path) -> Daemon {
    use std::os::unix::process::CommandExt;
    let config = dir.join("landscaped.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"{LISTEN_ANY}\"\nquiet_period_secs = 0.3\nincomplete_timeout_secs = 2.0\n[[run]]\nname = \"r\"\nwatch = [{:?}]\n",
            dir.join("data").to_str().unwrap(),
            watch.to_str().unwrap()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["daemon", "--config", config.to_str().unwrap()])
        .env("LANDSCAPED_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: prctl only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // CAP_DAC_OVERRIDE = 1, CAP_DAC_READ_SEARCH = 2 (linux/capability.h).
            for cap in [1 as libc::c_ulong, 2] {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            Ok(())
        });
    }
    ready(cmd.spawn().unwrap(), config, log)
}

#[test]
fn odd_paths_are_reported_once_and_a_non_utf8_name_is_ingested() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let written = writer(&ck, &["--steps", "1,7"]);
    // Step 7 under a name that is not UTF-8 (Latin-1 "é").
    let odd = ck.join(std::ffi::OsStr::from_bytes(b"step-7-caf\xe9.safetensors"));
    std::fs::rename(ck.join("step-7.safetensors"), &odd).unwrap();
    // A symlink loop with a checkpoint's name.
    std::os::unix::fs::symlink("loop.safetensors", ck.join("loop.safetensors")).unwrap();
    // checkpoint-9/ whose weights never came (trainer state and optimizer only), last touched long ago.
    let pending = ck.join("checkpoint-9");
    std::fs::create_dir(&pending).unwrap();
    std::fs::write(pending.join("trainer_state.json"), b"{\"global_step\": 9}").unwrap();
    std::fs::write(pending.join("optimizer.pt"), b"x").unwrap();
    let old = libc::timespec { tv_sec: 1_600_000_000, tv_nsec: 0 };
    for p in [pending.join("trainer_state.json"), pending.join("optimizer.pt"), pending.clone()] {
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [old, old].as_ptr(), 0) }, 0);
    }
    // A folder that cannot be listed, holding a checkpoint.
    let locked = ck.join("locked");
    std::fs::create_dir(&locked).unwrap();
    writer(&locked, &["--steps", "30"]);
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();

    let d = start_without_dac(tmp.path(), &ck);
    wait_until(Duration::from_secs(30), "steps 1 and 7 recorded, the odd paths reported", || {
        steps(&d) == vec![1, 7]
            && skipped(&d, "symlink_loop") == 1.0
            && skipped(&d, "no_weights") == 1.0
            && skipped(&d, "unreadable_folder") == 1.0
    });
    let got = recorded(d.port);
    assert!(close(got[1].1, written[1].1), "{got:?} vs {written:?}");
    let log = d.log();
    for (path, what) in [
        (ck.join("loop.safetensors"), "loops"),
        (pending.clone(), "no weights"),
        (locked.clone(), "cannot be listed"),
    ] {
        let lines: Vec<&str> =
            log.lines().filter(|l| l.contains(&format!("{}: skipped", path.display()))).collect();
        assert!(lines.len() == 1 && lines[0].contains(what), "{}:\n{log}", path.display());
    }
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn an_ingest_without_progress_makes_healthz_unhealthy_and_does_not_hold_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let (slow, good) = (tmp.path().join("slow"), tmp.path().join("good"));
    std::fs::create_dir(&slow).unwrap();
    std::fs::create_dir(&good).unwrap();
    let faults = tmp.path().join("faults");
    // Every read of a checkpoint under `slow/` hangs (as on a hung filesystem) for 60 s.
    std::fs::write(&faults, format!("stall_path={}\nstall_secs=60\n", slow.display())).unwrap();
    writer(&slow, &["--steps", "1"]);
    let d = start_env(
        tmp.path(),
        &[&slow, &good],
        "ingest_tasks = 1\nstall_limit_secs = 1.0\n",
        &[("LANDSCAPED_TEST_FAULTS", faults.to_str().unwrap())],
    );
    wait_until(Duration::from_secs(20), "healthz 503 for the stuck ingest", || {
        get_status(d.port, "/healthz").is_some_and(|(c, _)| c == 503)
    });
    let (_, body) = get_status(d.port, "/healthz").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unhealthy");
    let why = v["ingest"]["error"].as_str().unwrap();
    assert!(why.contains("step-1.safetensors") && why.contains("no progress"), "{body}");
    // The one worker gives up waiting: other checkpoints are ingested meanwhile.
    writer(&good, &["--steps", "2"]);
    wait_until(Duration::from_secs(20), "step 2 recorded past the stuck one", || steps(&d) == vec![2]);
    assert!(d.metric(r#"landscaped_errors_total{kind="stalled",run="r"}"#).unwrap_or(0.0) >= 1.0);
    // SIGTERM does not wait for the stuck read.
    assert_eq!(d.stop(), Some(0));
}
