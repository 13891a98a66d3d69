//! `landscaped stability` end to end on the tiny model of tests/python/stability_reference.py (trained
//! six steps by torch.optim.Adam, whose own exp_avg_sq is handed over): the preconditioned λ1 equals the
//! top eigenvalue of the dense P^{-1/2} H P^{-1/2} PyTorch builds (torch.func.hessian + eigvalsh) to 1e-6,
//! λmax to the dense Hessian's, critical sharpness to a brute-force line search in PyTorch on the same
//! direction; the ratios are the thresholds' own; a second run warm-starts from the first's top vectors;
//! the Python backend gives the same λ1; bad input (no lr, unknown optimizer) says what is needed; the
//! plot is drawn.

use landscaped::store::RunStepRecord;
use landscaped::store::Store;
use landscaped::store::stability as records;
use std::path::Path;

mod support;
use support::*;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn landscaped(data: &Path, args: &[&str]) -> (bool, String, String) {
    outcome(landscaped_cmd(data).args(args).output().unwrap())
}

#[test]
fn preconditioned_sharpness_and_critical_sharpness_match_pytorch() {
    let (dir, r) = python_made("stability_reference.py", "reference.json");
    let data = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let (ck, model, eval, v) =
        (p("ck.safetensors"), p("model.pt"), p("eval.safetensors"), p("v.safetensors"));
    let t = r["step"].as_u64().unwrap().to_string();
    let lr = r["lr"].as_f64().unwrap();
    let base = [
        "--format",
        "json",
        "stability",
        "--run",
        "tiny",
        "--step",
        "6",
        "--checkpoint",
        &ck,
        "--model",
        &model,
        "--eval-data",
        &eval,
        "--batch-size",
        "64",
        "--tol",
        "1e-10",
        "--max-steps",
        "200",
    ];
    let adam = ["--optimizer", "adam", "--lr", "0.01", "--adam-step", &t, "--exp-avg-sq", &v];
    let (ok, out, err) = landscaped(data.path(), &[&base[..], &adam].concat());
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let get = |rows: &[serde_json::Value], q: &str| {
        rows.iter().find(|row| row["quantity"] == q).unwrap_or_else(|| panic!("no {q} in {rows:?}")).clone()
    };
    let pre = get(&rows, "preconditioned_lambda_1");
    let want = r["preconditioned_lambda_1"].as_f64().unwrap();
    let got = pre["value"].as_f64().unwrap();
    let lmax = get(&rows, "lambda_max")["value"].as_f64().unwrap();
    eprintln!(
        "λ1(P⁻¹H) rel {:.1e}, λmax rel {:.1e}",
        rel(got, want),
        rel(lmax, r["lambda_max"].as_f64().unwrap())
    );
    // Lanczos over the whole 51-dim space (exact) on float32 HVPs and D stored as float32.
    assert!(rel(got, want) < 1e-6, "preconditioned λ1 {got} vs PyTorch {want}");
    assert!(rel(lmax, r["lambda_max"].as_f64().unwrap()) < 1e-6, "λmax {lmax}");
    // The threshold is (2+2β1)/((1−β1)η) = 38/η, and the ratio is value/threshold.
    let thr = pre["threshold"].as_f64().unwrap();
    assert!(rel(thr, 38.0 / lr) < 1e-12, "{thr}");
    assert!(rel(pre["ratio"].as_f64().unwrap(), got / thr) < 1e-12);
    assert!(pre["note"].as_str().unwrap().contains("ε outside the root"), "{pre}");
    // Critical sharpness along P⁻¹∇L vs PyTorch's brute-force grid (ratio 1.0005): the search brackets to
    // 5 % and interpolates; float32 losses.
    let crit = get(&rows, "critical_sharpness");
    let eta_c = 2.0 / crit["value"].as_f64().unwrap();
    let want_c = r["eta_c_preconditioned"].as_f64().unwrap();
    eprintln!("ηc (P⁻¹g) rel {:.1e}, {}", rel(eta_c, want_c), crit["cost"]);
    assert!(rel(eta_c, want_c) < 1e-2, "ηc {eta_c} vs brute force {want_c}");

    // The Python backend (the factory contract) gives the same preconditioned λ1.
    let out = landscaped_cmd(data.path())
        .env("PYTHONPATH", tests_python())
        .args(["--format", "json", "stability", "--run", "py", "--step", "6", "--checkpoint", &ck])
        .args(["--backend", "python", "--python"])
        .arg(venv_python())
        .args([
            "--factory",
            "stability_factory:build",
            "--batch-size",
            "64",
            "--threads",
            "1",
            "--tol",
            "1e-10",
        ])
        .args(["--max-steps", "200", "--no-critical", "--no-store"])
        .args(adam)
        .output()
        .unwrap();
    let (ok, out, err) = outcome(out);
    assert!(ok, "{err}");
    let rows_py: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let got_py = get(&rows_py, "preconditioned_lambda_1")["value"].as_f64().unwrap();
    eprintln!("Python backend: λ1(P⁻¹H) rel {:.1e}", rel(got_py, want));
    assert!(rel(got_py, want) < 1e-6, "Python backend: preconditioned λ1 {got_py} vs PyTorch {want}");

    // SGD: critical sharpness along ∇L; a second run warm-starts λmax from the stored top vector.
    let sgd = ["--optimizer", "sgd", "--lr", "0.5"];
    let (ok, out, err) = landscaped(data.path(), &[&base[..], &sgd].concat());
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let crit = get(&rows, "critical_sharpness");
    let eta_c = 2.0 / crit["value"].as_f64().unwrap();
    let want_c = r["eta_c_gradient"].as_f64().unwrap();
    eprintln!("ηc (g) rel {:.1e}, {}", rel(eta_c, want_c), crit["cost"]);
    assert!(rel(eta_c, want_c) < 1e-2, "ηc {eta_c} vs brute force {want_c}");
    let lm = get(&rows, "lambda_max");
    assert_eq!(lm["threshold"].as_f64().unwrap(), 4.0, "2/η");
    assert!(lm["cost"].as_str().unwrap().contains("warm start"), "{lm}");
    let store = Store::open(data.path()).unwrap();
    let rec = records::StabilityRecord::get(&store, "tiny", 6).unwrap().unwrap();
    assert!(rec.warm_hessian);
    drop(store);

    // Without --run (a checkpoint file alone): computed cold, printed, not stored, no store opened.
    let elsewhere = data.path().join("never");
    let mut alone: Vec<&str> = base.iter().copied().filter(|a| !matches!(*a, "--run" | "tiny")).collect();
    alone.extend(sgd);
    let (ok, out, err) = landscaped(&elsewhere, &alone);
    assert!(ok, "{err}");
    assert!(err.contains("not stored"), "{err}");
    assert!(!elsewhere.exists(), "the store was opened");
    let rows_alone: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let lm_alone = get(&rows_alone, "lambda_max");
    assert!(!lm_alone["cost"].as_str().unwrap().contains("warm start"), "{lm_alone}");
    assert!(rel(lm_alone["value"].as_f64().unwrap(), r["lambda_max"].as_f64().unwrap()) < 1e-6, "{lm_alone}");
    assert!(rows_alone.iter().all(|row| row["step"] == 6 && row["run"] == ""), "{out}");

    // Bad input: no lr, an unknown optimizer.
    let (ok, _, err) = landscaped(
        data.path(),
        &[&base[..], &["--optimizer", "sgd", "--no-store", "--no-critical"]].concat(),
    );
    assert!(ok, "{err}");
    assert!(err.contains("learning rate unknown"), "{err}");
    let (ok, out, err) = landscaped(
        data.path(),
        &[&base[..], &["--optimizer", "muon", "--lr", "0.1", "--no-store", "--no-critical"]].concat(),
    );
    assert!(ok, "{err}");
    assert!(err.contains("no threshold is invented"), "{err}");
    assert!(out.contains("no threshold"), "{out}");

    let svg = data.path().join("stability.svg");
    let (ok, _, err) =
        landscaped(data.path(), &["plot", "stability", "--run", "tiny", "-o", svg.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}
