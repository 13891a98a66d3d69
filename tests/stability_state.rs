//! `landscaped stability` with no optimizer settings at all, on checkpoints that carry their optimizer's
//! state (tests/python/stability_state_reference.py: real torch.optim AdamW with HF Trainer's decay /
//! no-decay groups, the same with per-group learning rates, SGD with momentum and weight decay, Adagrad;
//! plain `torch.save({"model", "optimizer"})`, index-keyed; and an HF folder without optimizer.pt):
//!
//! - the job finds kind, β, ε, t and η itself; its preconditioned λ1 equals the top eigenvalue of the
//!   dense P^{-1/2} H P^{-1/2} PyTorch builds from `torch.load` of the same state (1e-6), also with the
//!   per-group η folded into P (dimensionless threshold);
//! - the update it searches along equals the step PyTorch's own `optimizer.step()` takes after loading
//!   that state with the same full-batch gradient, and critical sharpness equals PyTorch's brute-force
//!   line search along it;
//! - the Python backend maps and forms the same; so does the daemon's `[run.stability]` job, its config
//!   without a single optimizer key;
//! - SGD's (2+2μ)/η threshold without config; an unknown optimizer is listed with no threshold; a
//!   checkpoint without state takes η from trainer_state.json.

use landscaped::store::stability as records;
use landscaped::store::{RunStepRecord, Store};

mod support;
use support::*;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn row(rows: &[serde_json::Value], q: &str) -> serde_json::Value {
    rows.iter().find(|row| row["quantity"] == q).unwrap_or_else(|| panic!("no {q} in {rows:?}")).clone()
}

#[test]
fn the_checkpoints_own_optimizer_state_drives_the_job() {
    let (dir, r) = python_made("stability_state_reference.py", "reference.json");
    let data = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let (model, eval) = (p("model.pt"), p("eval.safetensors"));
    let run_with = |case: &str, ck: &str, extra: &[&str]| {
        let out = landscaped_cmd(data.path())
            .args(["--format", "json", "stability", "--run", case, "--step", "6", "--checkpoint", ck])
            .args(extra)
            .args(["--model", &model, "--eval-data", &eval, "--batch-size", "64"])
            .args(["--tol", "1e-10", "--max-steps", "200"])
            .output()
            .unwrap();
        let (ok, out, err) = outcome(out);
        assert!(ok, "{case}: {err}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let store = Store::open(data.path()).unwrap();
        let rec = records::StabilityRecord::get(&store, case, 6).unwrap().unwrap();
        (rows, rec, err)
    };
    let run = |case: &str, ck: &str| run_with(case, ck, &[]);
    let update = |case: &str| {
        update_error(
            &data.path().join("stability").join(case).join("update.safetensors"),
            &dir.path().join(case).join("delta.safetensors"),
        )
    };

    // (a) AdamW, two groups, one η: everything from the state.
    let a = &r["adamw"];
    let (rows, rec, err) = run("adamw", &p("adamw/ck.pt"));
    assert_eq!(rec.optimizer, "adamw(β1=0.9, β2=0.99, ε=1e-7, t=6), η=0.01", "{err}");
    assert!(rec.source.contains("lr: optimizer state") && rec.source.contains("exp_avg_sq: optimizer state"));
    assert!(rec.notes.is_empty(), "{:?}", rec.notes);
    let pre = row(&rows, "preconditioned_lambda_1");
    let want = a["preconditioned_lambda_1"].as_f64().unwrap();
    let got = pre["value"].as_f64().unwrap();
    eprintln!("adamw: λ1(P⁻¹H) rel {:.1e}", rel(got, want));
    assert!(rel(got, want) < 1e-6, "preconditioned λ1 {got} vs PyTorch {want}");
    assert!(rel(pre["threshold"].as_f64().unwrap(), 38.0 / 0.01) < 1e-12, "{pre}");
    let lmax = row(&rows, "lambda_max")["value"].as_f64().unwrap();
    assert!(rel(lmax, a["lambda_max"].as_f64().unwrap()) < 1e-6, "λmax {lmax}");
    // (b) The update is PyTorch's step; critical sharpness along it vs the brute-force search.
    let e = update("adamw");
    eprintln!("adamw: update vs optimizer.step() {e:.1e}");
    assert!(e < 1e-5, "AdamW's next update differs from PyTorch's step by {e:.1e}");
    assert!(rec.direction.contains("adamw step"), "{}", rec.direction);
    let crit = row(&rows, "critical_sharpness");
    let eta_c = 2.0 / crit["value"].as_f64().unwrap();
    let want_c = a["s_c"].as_f64().unwrap() * 0.01;
    eprintln!("adamw: ηc rel {:.1e}, {}", rel(eta_c, want_c), crit["cost"]);
    assert!(rel(eta_c, want_c) < 1e-2, "ηc {eta_c} vs brute force {want_c}");

    // The Python backend (the factory contract: the model and data beside the checkpoint) maps the same
    // state by its own parameter order and forms the same update.
    for f in ["model.pt", "eval.safetensors"] {
        std::fs::copy(dir.path().join(f), dir.path().join("adamw").join(f)).unwrap();
    }
    let out = landscaped_cmd(data.path())
        .env("PYTHONPATH", tests_python())
        .args([
            "--format",
            "json",
            "stability",
            "--run",
            "py",
            "--step",
            "6",
            "--checkpoint",
            &p("adamw/ck.pt"),
        ])
        .args(["--backend", "python", "--python"])
        .arg(venv_python())
        .args(["--factory", "stability_factory:build", "--batch-size", "64", "--threads", "1"])
        .args(["--tol", "1e-10", "--max-steps", "200"])
        .output()
        .unwrap();
    let (ok, out, err) = outcome(out);
    assert!(ok, "{err}");
    let rows_py: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let got_py = row(&rows_py, "preconditioned_lambda_1")["value"].as_f64().unwrap();
    let want = a["preconditioned_lambda_1"].as_f64().unwrap();
    assert!(rel(got_py, want) < 1e-6, "Python backend: λ1 {got_py} vs PyTorch {want}");
    let e = update_error(
        &data.path().join("stability").join("py").join("update.safetensors"),
        &dir.path().join("adamw").join("delta.safetensors"),
    );
    eprintln!("python backend: λ1 rel {:.1e}, update {e:.1e}", rel(got_py, want));
    assert!(e < 1e-5, "Python backend: update vs PyTorch's step {e:.1e}");

    // Explicit values that disagree with the state are named; the state's are used.
    let (rows, rec, _) = run_with(
        "conflict",
        &p("adamw/ck.pt"),
        &["--optimizer", "sgd", "--lr", "0.5", "--betas", "0.8", "0.9", "--no-critical"],
    );
    assert_eq!(rec.optimizer, "adamw(β1=0.9, β2=0.99, ε=1e-7, t=6), η=0.01");
    assert!(rel(row(&rows, "preconditioned_lambda_1")["threshold"].as_f64().unwrap(), 3800.0) < 1e-12);
    for what in ["optimizer = sgd", "lr = 0.5", "beta1 = 0.8", "beta2 = 0.9"] {
        assert!(
            rec.notes.iter().any(|n| n.starts_with(what) && n.contains("the state's is used")
                || n.starts_with(what) && n.contains("the checkpoint's is used")),
            "{what}: {:?}",
            rec.notes
        );
    }

    // Per-group η folded into P: dimensionless thresholds (38 and 2), the real step is 1.
    let f = &r["folded"];
    let (rows, rec, _) = run("folded", &p("folded/ck.pt"));
    assert!(rec.optimizer.contains("per-group η folded into P"), "{}", rec.optimizer);
    let pre = row(&rows, "preconditioned_lambda_1");
    let (got, want) = (pre["value"].as_f64().unwrap(), f["preconditioned_lambda_1"].as_f64().unwrap());
    eprintln!("folded: λ1(P⁻¹H) rel {:.1e}", rel(got, want));
    assert!(rel(got, want) < 1e-6, "folded λ1 {got} vs PyTorch {want}");
    assert!(rel(pre["threshold"].as_f64().unwrap(), 38.0) < 1e-12);
    let e = update("folded");
    assert!(e < 1e-5, "folded: update vs PyTorch's step {e:.1e}");
    let crit = row(&rows, "critical_sharpness");
    assert_eq!(crit["threshold"].as_f64().unwrap(), 2.0);
    let s_c = 2.0 / crit["value"].as_f64().unwrap();
    assert!(rel(s_c, f["s_c"].as_f64().unwrap()) < 1e-2, "s_c {s_c} vs {}", f["s_c"]);

    // (c) SGD with momentum: (2+2μ)/η from the state alone; its update is PyTorch's step.
    let s = &r["sgd"];
    let (rows, rec, _) = run("sgd", &p("sgd/ck.pt"));
    let lm = row(&rows, "lambda_max");
    assert!(rel(lm["threshold"].as_f64().unwrap(), (2.0 + 2.0 * 0.9) / 0.05) < 1e-12, "{lm}");
    assert!(rel(lm["value"].as_f64().unwrap(), s["lambda_max"].as_f64().unwrap()) < 1e-6);
    let e = update("sgd");
    eprintln!("sgd: update vs optimizer.step() {e:.1e}");
    assert!(e < 1e-5, "SGD's next update differs from PyTorch's step by {e:.1e}");
    let eta_c = 2.0 / row(&rows, "critical_sharpness")["value"].as_f64().unwrap();
    assert!(rel(eta_c, s["s_c"].as_f64().unwrap() * 0.05) < 1e-2, "sgd ηc {eta_c}");
    assert!(rec.source.contains("momentum: optimizer state"), "{}", rec.source);

    // (d) Adagrad: listed, no threshold, one note naming its keys.
    let (rows, rec, err) = run("adagrad", &p("adagrad/ck.pt"));
    assert!(rows.iter().all(|r| r["threshold"].is_null()), "{rows:?}");
    assert_eq!(rec.notes.len(), 1, "{:?}", rec.notes);
    assert!(rec.notes[0].contains("no threshold is invented") && rec.notes[0].contains("sum"), "{err}");

    // No optimizer state: η from trainer_state.json, λmax against 2/η.
    let (rows, rec, _) = run("hf", &p("hf/checkpoint-6"));
    assert_eq!(rec.lr, Some(r["hf_lr"].as_f64().unwrap()));
    assert!(rec.source.contains("lr: trainer_state.json"), "{}", rec.source);
    assert!(rel(row(&rows, "lambda_max")["threshold"].as_f64().unwrap(), 2.0 / 0.025) < 1e-12);

    // The daemon's job, its config without a single optimizer key, on a checkpoint dropped into the
    // watched folder: the same preconditioned λ1 against 38/η.
    let daemon_dir = tempfile::tempdir().unwrap();
    let watched = daemon_dir.path().join("watch");
    std::fs::create_dir_all(&watched).unwrap();
    let section = format!(
        "[run.stability]\nevery = 1\nmodel = {model:?}\neval_data = {eval:?}\nbatch_size = 64\nthreads = 1\ntol = 1e-10\nmax_hvps = 200\n"
    );
    let d = restart(write_config(daemon_dir.path(), &[&watched], "", &section), daemon_dir.path());
    std::fs::copy(dir.path().join("adamw").join("ck.pt"), watched.join("tmp.part")).unwrap();
    std::fs::rename(watched.join("tmp.part"), watched.join("step-6.pt")).unwrap();
    let runs = |outcome: &str| {
        d.metric(&format!("landscaped_job_runs_total{{job=\"stability\",outcome=\"{outcome}\",run=\"r\"}}"))
    };
    wait_until(std::time::Duration::from_secs(120), "the daemon's stability job", || {
        runs("ok").is_some() || runs("error").is_some()
    });
    let g = |what: &str| {
        d.metric(&format!("landscaped_stability_{what}{{quantity=\"preconditioned_lambda_1\",run=\"r\"}}"))
            .unwrap_or_else(|| panic!("no preconditioned {what}:\n{}", d.log()))
    };
    let (value, threshold) = (g("value"), g("threshold"));
    eprintln!("daemon: λ1 rel {:.1e}", rel(value, a["preconditioned_lambda_1"].as_f64().unwrap()));
    assert!(rel(value, a["preconditioned_lambda_1"].as_f64().unwrap()) < 1e-6, "daemon λ1 {value}");
    assert!(rel(threshold, 3800.0) < 1e-12, "daemon threshold {threshold}");
    assert_eq!(d.stop(), Some(0));
}
