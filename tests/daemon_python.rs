//! The daemon's `[run.slice]` and `[run.sharpness]` jobs on the Python backend: a tiny GPT-2
//! (tests/python/gpt2_make.py, built from its config) trained by the Hugging Face Trainer itself into a
//! watched folder (`checkpoint-N/` folders appearing while the daemon runs, `save_total_limit` deleting
//! old ones); the job sections name `backend = "python"`, the venv's Python and the factory
//! (tests/python/gpt2_factory.py); the daemon computes the slice and λmax on Python workers: the slice's
//! centre is the model's own loss, λmax the plain-PyTorch power iteration's (1e-3).

mod support;
use std::time::Duration;
use support::*;

#[test]
fn the_daemon_slices_a_hugging_face_checkpoint_on_the_python_worker() {
    let dir = tempfile::tempdir().unwrap();
    // The Trainer's output folder, watched by the daemon while it trains.
    let ck = dir.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let config = write_config(
        dir.path(),
        &[&ck],
        "",
        &format!(
            "[run.slice]\nevery = 1\n\
             backend = \"python\"\npython = {:?}\nfactory = \"gpt2_factory:build\"\nbatch_size = 4\n\
             x = \"-0.5:0.5:3\"\nseed = 1\n[run.sharpness]\nevery = 1\nbackend = \"python\"\npython = {:?}\n\
             factory = \"gpt2_factory:build\"\nbatch_size = 4\nmeasures = [\"eigs\"]\ntol = 1e-4\nmax_hvps = 30\n",
            venv_python().to_str().unwrap(),
            venv_python().to_str().unwrap(),
        ),
    );
    // gpt2_make.py writes the evaluation ids (before training) and its reference values here.
    let made = dir.path().join("made");
    std::fs::create_dir_all(&made).unwrap();
    let eval_ids = made.join("eval_ids.safetensors");
    let path = tests_python();
    let env = [("PYTHONPATH", path.to_str().unwrap()), ("GPT2_EVAL_IDS", eval_ids.to_str().unwrap())];
    let d = restart_env(config, dir.path(), &env);
    let port = d.port;
    // The real Hugging Face Trainer, into the watched folder: checkpoint-10/, -20/, -30/ appear while the
    // daemon runs, and save_total_limit=2 deletes checkpoint-10/ behind it.
    let ok = std::process::Command::new(venv_python())
        .arg(script("gpt2_make.py"))
        .arg(&made)
        .arg("--trainer-out")
        .arg(&ck)
        .args(["--power-iterations", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "gpt2_make.py failed");
    let r = read_json(&made.join("reference.json"));
    let own = r["own_loss"].as_f64().unwrap();
    assert!(!ck.join("checkpoint-10").exists(), "save_total_limit kept only the last two");

    // The last checkpoint's slice: its centre is the model's own loss.
    let slices = || -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&get(port, "/api/v1/runs/r/slices").unwrap_or_default())
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(240), "a complete slice at step 30", || {
        slices().iter().any(|s| s["step"] == 30 && s["complete"] == true)
    });
    let last = slices().into_iter().find(|s| s["step"] == 30).unwrap();
    let rec: serde_json::Value = serde_json::from_str(
        &get(port, &format!("/api/v1/slices/{}", last["id"].as_u64().unwrap())).unwrap(),
    )
    .unwrap();
    let got = rec["centre_loss"].as_f64().unwrap();
    assert!((got - own).abs() <= 1e-6 * own, "centre loss {got} vs the model's own {own}");
    assert!(rec["model"]["model"].as_str().unwrap().contains("gpt2_factory:build"), "{rec}");
    // λmax at step 30 against the plain-PyTorch power iteration run to convergence.
    let sharp = || -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(
            &get(port, "/api/v1/runs/r/sharpness?all=true").unwrap_or_default(),
        )
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
    };
    let t = std::time::Instant::now();
    while !sharp().iter().any(|s| s["step"] == 30) {
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "no λmax at step 30 after 240 s: {:?}\n{}",
            sharp(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let at30 = sharp().into_iter().find(|s| s["step"] == 30).unwrap();
    let lmax = at30["extremes"]["lambda_max"].as_f64().unwrap_or_else(|| panic!("{at30}"));
    let want = r["lambda_converged"].as_f64().unwrap();
    assert!((lmax - want).abs() <= 1e-3 * want, "λmax {lmax} vs power iteration {want}");
    // checkpoint-10 went before its jobs could run (or while they ran): skipped or failed, one line each,
    // and the daemon kept going.
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(d.stop(), Some(0));
}
