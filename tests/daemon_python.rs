//! The daemon's `[run.slice]` and `[run.sharpness]` jobs on the Python backend: a tiny GPT-2
//! (tests/python/gpt2_make.py, built from its config) whose Trainer-style `checkpoint-N/` folder lands in
//! a watched folder; the job sections name `backend = "python"`, the venv's Python and the factory
//! (tests/python/gpt2_factory.py); the daemon computes the slice and λmax on Python workers: the slice's
//! centre is the model's own loss, λmax the plain-PyTorch power iteration's (1e-3).

mod daemon_support;
use daemon_support::*;
use std::path::Path;
use std::time::Duration;

#[test]
fn the_daemon_slices_a_hugging_face_checkpoint_on_the_python_worker() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let made = dir.path().join("made");
    let ok = std::process::Command::new(python())
        .arg(root.join("tests/python/gpt2_make.py"))
        .arg(&made)
        .args(["--power-iterations", "1"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "gpt2_make.py failed");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(made.join("reference.json")).unwrap()).unwrap();
    let own = r["own_loss"].as_f64().unwrap();

    let ck = dir.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let port = free_port();
    let config = dir.path().join("landscaped.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\nquiet_period_secs = 0.3\nincomplete_timeout_secs = 2.0\n\
             rescan_interval_secs = 30\n[[run]]\nname = \"r\"\nwatch = [{:?}]\n[run.slice]\nevery = 1\n\
             backend = \"python\"\npython = {:?}\nfactory = \"gpt2_factory:build\"\nbatch_size = 4\n\
             x = \"-0.5:0.5:3\"\nseed = 1\n[run.sharpness]\nevery = 1\nbackend = \"python\"\npython = {:?}\n\
             factory = \"gpt2_factory:build\"\nbatch_size = 4\nmeasures = [\"eigs\"]\ntol = 1e-4\nmax_hvps = 30\n",
            dir.path().join("data").to_str().unwrap(),
            ck.to_str().unwrap(),
            python().to_str().unwrap(),
            python().to_str().unwrap(),
        ),
    )
    .unwrap();
    let eval_ids = made.join("eval_ids.safetensors");
    let path = root.join("tests/python");
    let env = [("PYTHONPATH", path.to_str().unwrap()), ("GPT2_EVAL_IDS", eval_ids.to_str().unwrap())];
    let d = restart_env(config, port, dir.path(), &env);
    // The Trainer writes checkpoint-N/ in place; here it appears whole (a rename).
    let src = std::path::PathBuf::from(r["checkpoint"].as_str().unwrap());
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), staging.join(e.file_name())).unwrap();
    }
    std::fs::rename(&staging, ck.join(src.file_name().unwrap())).unwrap();

    wait_until(Duration::from_secs(120), "the slice's centre gauge", || {
        metric(&d.metrics(), "landscaped_slice_centre_loss{run=\"r\"}").is_some()
    });
    let got = metric(&d.metrics(), "landscaped_slice_centre_loss{run=\"r\"}").unwrap();
    assert!((got - own).abs() <= 1e-6 * own, "centre loss {got} vs the model's own {own}");
    let list: serde_json::Value = serde_json::from_str(&get(port, "/api/v1/runs/r/slices").unwrap()).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["step"], 30);
    assert_eq!(list[0]["complete"], true);
    let rec: serde_json::Value = serde_json::from_str(
        &get(port, &format!("/api/v1/slices/{}", list[0]["id"].as_u64().unwrap())).unwrap(),
    )
    .unwrap();
    assert!(rec["model"]["model"].as_str().unwrap().contains("gpt2_factory:build"), "{rec}");
    wait_until(Duration::from_secs(120), "the λmax gauge", || {
        metric(&d.metrics(), "landscaped_hessian_lambda_max{run=\"r\"}").is_some()
    });
    let lmax = metric(&d.metrics(), "landscaped_hessian_lambda_max{run=\"r\"}").unwrap();
    let want = r["lambda_converged"].as_f64().unwrap();
    assert!((lmax - want).abs() <= 1e-3 * want, "λmax {lmax} vs power iteration {want}");
    assert_eq!(d.stop(), Some(0));
}
