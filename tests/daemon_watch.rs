//! The daemon as a subprocess watching real folders while a Python writer produces checkpoints, with
//! the faults a training job produces. Each test bounds its waits (seconds).

mod support;
use std::time::Duration;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn every_checkpoint_is_recorded_with_its_step_and_norm() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let mut expected = writer(&ck, &["--steps", "1,2"]); // present before the daemon starts
    let d = start(tmp.path(), &[&ck], "rescan_interval_secs = 1");
    expected.extend(writer(&ck, &["--steps", "3,4", "--mode", "slow", "--pause", "0.5"])); // seen incomplete
    expected.extend(writer(&ck, &["--steps", "5,6", "--mode", "rename"])); // renamed into place
    // A symlink like last.ckpt pointing at the newest: not processed twice.
    std::os::unix::fs::symlink(ck.join("step-6.safetensors"), ck.join("last.safetensors")).unwrap();
    wait_until(WAIT, "6 checkpoints recorded", || recorded(d.port).len() >= 6);
    d.settle(); // the link and every file looked at again, nothing left to do: still 6, each once
    let got = recorded(d.port);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6], "{}", d.log());
    for ((s, n), (gs, gn)) in expected.iter().zip(&got) {
        assert_eq!(s, gs);
        assert!(close(*n, *gn), "step {s}: norm {gn} vs numpy {n}");
    }
    let m = d.metrics();
    assert_eq!(metric(&m, "landscaped_last_step{run=\"r\"}"), Some(6.0));
    assert_eq!(metric(&m, "landscaped_checkpoints_processed_total{run=\"r\"}"), Some(6.0), "{m}");
    assert!(close(metric(&m, "landscaped_weight_norm{run=\"r\"}").unwrap(), expected[5].1));
    assert!(metric(&m, "landscaped_update_cosine{run=\"r\"}").is_some());
    assert_eq!(d.stop(), Some(0), "SIGTERM must exit 0");
}

#[test]
fn truncated_then_completed_and_rewritten_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "");
    let t = writer(&ck, &["--truncate-then-complete", "7", "--pause", "0.8"]);
    wait_until(WAIT, "step 7", || recorded(d.port).iter().any(|r| r.0 == 7));
    let got = recorded(d.port);
    assert_eq!(got.len(), 1);
    assert!(close(got[0].1, t[0].1), "truncated-then-completed: recorded {} vs {}", got[0].1, t[0].1);
    // Rewritten in place with other values: the record follows the file's final content.
    let r = writer(&ck, &["--rewrite", "7"]);
    wait_until(WAIT, "step 7 rewritten", || recorded(d.port).first().is_some_and(|g| close(g.1, r[0].1)));
    assert_eq!(recorded(d.port).len(), 1, "one record per step");
    assert_eq!(d.metric("landscaped_errors_total{kind=\"malformed\",run=\"r\"}"), Some(0.0), "{}", d.log());
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn watched_folder_deleted_and_recreated() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "");
    writer(&ck, &["--steps", "1"]);
    wait_until(WAIT, "step 1", || recorded(d.port).len() == 1);
    std::fs::remove_dir_all(&ck).unwrap(); // rotation / cleanup: what was recorded stays
    wait_until(WAIT, "the daemon saw the folder go", || {
        d.metric("landscaped_watched_folders{mode=\"inotify\",run=\"r\"}") == Some(0.0)
    });
    assert_eq!(recorded(d.port).len(), 1);
    writer(&ck, &["--steps", "2,3"]); // recreated (the writer makes the folder)
    // Also a new subfolder whose files exist before any watch on it could.
    let sub = ck.join("later/deeper");
    writer(&sub, &["--steps", "4"]);
    wait_until(WAIT, "steps 2..4 after recreation", || recorded(d.port).len() == 4);
    assert_eq!(recorded(d.port).iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4], "{}", d.log());
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn garbage_and_hostile_files_are_one_error_each() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "rescan_interval_secs = 1");
    // Random bytes with checkpoint names; a safetensors header claiming a huge tensor; a zip with a
    // pickle that would run code if executed.
    std::fs::write(ck.join("step-100.pt"), vec![0x5au8; 4096]).unwrap();
    let header = r#"{"w":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4000000000000]}}"#;
    let st = safetensors_bytes(header, &[0u8; 64]);
    std::fs::write(ck.join("step-101.safetensors"), &st).unwrap();
    std::fs::write(ck.join("step-102.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\xff{").unwrap();
    let evil = tmp.path().join("evil.pt");
    let py = format!(
        "import torch, os\nclass E:\n    def __reduce__(self):\n        return (os.system, ('touch {}',))\ntorch.save({{'w': E()}}, {:?})\n",
        tmp.path().join("pwned").display(),
        evil.to_str().unwrap()
    );
    let ok = std::process::Command::new(venv_python()).args(["-c", &py]).status().unwrap().success();
    assert!(ok);
    std::fs::rename(&evil, ck.join("step-103.pt")).unwrap();
    writer(&ck, &["--steps", "104"]); // and one good one
    wait_until(WAIT, "four errors counted", || errors_total(&d.metrics()) >= 4.0);
    wait_until(WAIT, "good checkpoint recorded", || recorded(d.port).len() == 1);
    d.settle(); // more scans and retries must not count them again
    let m = d.metrics();
    assert_eq!(errors_total(&m), 4.0, "one error per bad file:\n{m}\n{}", d.log());
    assert!(!tmp.path().join("pwned").exists(), "pickle must never be executed");
    assert!(get(d.port, "/healthz").unwrap().contains("ok"));
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn burst_of_200_then_kill_9_and_restart_loses_nothing_and_counts_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "rescan_interval_secs = 1");
    let config = d.config.clone();
    // Bound the growth over the daemon's own idle footprint (≈ 19 MB in a debug build), not the total.
    let base_kb = d.peak_rss_kb();
    let expected = writer(&ck, &["--steps", "1-200"]);
    assert_eq!(expected.len(), 200);
    // Kill -9 while the burst is being ingested.
    wait_until(WAIT, "some of the burst ingested", || {
        d.metric("landscaped_checkpoints_processed_total{run=\"r\"}").unwrap_or(0.0) >= 20.0
    });
    let rss_kb = d.peak_rss_kb();
    d.kill9();
    let before = {
        let store = landscaped::store::Store::open(&tmp.path().join("data")).unwrap();
        landscaped::store::checkpoints::checkpoints(&store, "r").unwrap().len()
    };
    assert!(before > 0 && before < 200, "kill -9 should land mid-burst (recorded {before})");
    let d = restart(config, tmp.path());
    wait_until(Duration::from_secs(90), "all 200 recorded after restart", || recorded(d.port).len() == 200);
    let got = recorded(d.port);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (1..=200).collect::<Vec<u64>>());
    for ((s, n), (_, gn)) in expected.iter().zip(&got) {
        assert!(close(*n, *gn), "step {s}");
    }
    d.settle(); // nothing is ingested again after all 200 are recorded
    let processed = d.metric("landscaped_checkpoints_processed_total{run=\"r\"}").unwrap();
    assert_eq!(processed as usize, 200 - before, "after restart only the missing ones are ingested");
    eprintln!("peak RSS {base_kb} kB before the burst, {rss_kb} kB during it");
    // 200 checkpoints of 3 KB each, one at a time: measured +2.4 MB (was allowed 100 MB); 24 MB is 10× that
    // and still far below what holding the burst or leaking per checkpoint would take.
    assert!(rss_kb < base_kb + 24_000, "peak RSS grew from {base_kb} kB to {rss_kb} kB during the burst");
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn poll_mode_finds_checkpoints_without_inotify() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "watch_mode = \"poll\"\npoll_interval_secs = 0.3");
    assert_eq!(d.metric("landscaped_watched_folders{mode=\"poll\",run=\"r\"}"), Some(1.0));
    assert_eq!(d.metric("landscaped_watched_folders{mode=\"inotify\",run=\"r\"}"), Some(0.0));
    writer(&ck, &["--steps", "5,6"]);
    wait_until(WAIT, "2 checkpoints by polling", || recorded(d.port).len() == 2);
    assert!(d.metric("landscaped_scans_total{reason=\"poll\"}").unwrap_or(0.0) >= 1.0);
    assert_eq!(d.stop(), Some(0));
}

/// A trainer rotating HF folders (`checkpoint-N/` moved in whole, the one before removed at once, as
/// `save_total_limit = 1` does) and copying its newest checkpoint under a second name (as Lightning's
/// `last.ckpt` copy): every step recorded once, one `checkpoint recorded` line per step (the copy is not
/// announced again), and no warning from the watcher at each rotation.
#[test]
fn rotations_and_copies_are_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "rescan_interval_secs = 1");
    let stage = tmp.path().join("stage");
    for step in 1..=5u64 {
        let s = stage.join(format!("checkpoint-{step}"));
        std::fs::create_dir_all(&s).unwrap();
        drop_checkpoint(&s, "model.safetensors", step as f32);
        std::fs::write(s.join("trainer_state.json"), format!(r#"{{"global_step": {step}}}"#)).unwrap();
        std::fs::rename(&s, ck.join(format!("checkpoint-{step}"))).unwrap();
        wait_until(WAIT, &format!("step {step}"), || recorded(d.port).iter().any(|r| r.0 == step));
        if step > 1 {
            std::fs::remove_dir_all(ck.join(format!("checkpoint-{}", step - 1))).unwrap();
        }
    }
    // The newest again, copied under names with the same step (the same content).
    let newest = ck.join("checkpoint-5/model.safetensors");
    std::fs::copy(&newest, ck.join("step-5.safetensors")).unwrap();
    std::fs::copy(&newest, ck.join("step-5-last.safetensors")).unwrap();
    d.settle();
    let log = d.log();
    assert_eq!(recorded(d.port).iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5], "{log}");
    let announced: Vec<&str> = log.lines().filter(|l| l.contains("checkpoint recorded")).collect();
    let steps: std::collections::BTreeSet<String> = announced
        .iter()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("step=")).map(str::to_string))
        .collect();
    assert!(announced.len() == 5 && steps.len() == 5, "{announced:#?}");
    assert!(!log.lines().any(|l| l.contains("WARN")), "{log}");
    assert_eq!(d.stop(), Some(0));
}

/// A port already in use: the daemon ends with that error alone, not after a "stopped cleanly" line.
#[test]
fn a_port_in_use_is_an_error_without_stopped_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(tmp.path(), &[&ck], "", "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(LISTEN_ANY, &taken.local_addr().unwrap().to_string())).unwrap();
    let (mut child, log) = spawn_env(&config, tmp.path(), &[]);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(!status.success(), "{log}");
    assert!(!log.contains("stopped cleanly"), "{log}");
    assert!(log.to_lowercase().contains("in use"), "{log}");
}
