//! `landscaped sharpness`, `sharpness-map` and `plot spectrum` end to end on the tiny model of
//! tests/python/sharpness_reference.py: stored results match PyTorch's full-Hessian eigenvalues (1e-6
//! relative), the Fig. 7 map's centre point equals |λmin/λmax| at the checkpoint, the sharpness measures
//! and the SLQ density match float64 brute force and `eigvalsh`, and bad input gives one clear line.

use landscaped::store::RunStepRecord;
use landscaped::store::Store;
use landscaped::store::sharpness as records;
use std::path::Path;

mod support;
use support::*;

fn reference() -> &'static (tempfile::TempDir, serde_json::Value) {
    static REF: std::sync::OnceLock<(tempfile::TempDir, serde_json::Value)> = std::sync::OnceLock::new();
    REF.get_or_init(|| python_made("sharpness_reference.py", "reference.json"))
}

fn landscaped(data: &Path, args: &[&str]) -> (bool, String, String) {
    outcome(landscaped_cmd(data).args(args).output().unwrap())
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

// Tolerances of measures_and_density_agree_with_float64_brute_force (measured: docs/tolerances.md).
/// First-order SAM, relative: the worker's float32 losses are within ~1e-8 of float64, the rise is 1e-2
/// (measured 2.6e-6).
const TOL_SAM_FIRST: f64 = 1e-4;
/// How far (in loss units) an ascent may land above the brute-force maximum: float32 rounding of two
/// losses (measured 3.6e-8, Keskar).
const TOL_ABOVE_MAX: f64 = 5e-7;
/// How far below the maximum each ascent may stop, relative: SAM's 5 steps in a ρ = 0.05 ball (measured
/// 8.7e-5); ASAM's 5 steps in a scaled ball of ρ = 0.5, half the weights' size (measured 1.2e-2); Keskar's
/// 10 sign steps in a box of 1e-3 (measured at the maximum, +2.7e-5).
const GAP_SAM: f64 = 1e-3;
const GAP_ASAM: f64 = 0.05;
const GAP_KESKAR: f64 = 1e-3;
/// SLQ's largest node against λmax, relative (20 steps on 63 parameters converge it; measured 2.8e-8).
const TOL_NODE: f64 = 1e-6;
/// A run's quadrature moments against vᵀHᵏv/d for its own start vector, relative: float32 HVPs
/// (measured 2.7e-7).
const TOL_RUN_MOMENT: f64 = 1e-5;

#[test]
fn sharpness_store_list_plot_and_ratio_map() {
    let (dir, r) = reference();
    let data = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).display().to_string();
    let (ck, model, eval) = (p("ck.safetensors"), p("model.pt"), p("eval.safetensors"));
    let model_args = ["--model", model.as_str(), "--eval-data", eval.as_str(), "--batch-size", "16"];
    let mut args = vec!["--format", "json", "sharpness", "--run", "tiny", "--step", "5", "--checkpoint", &ck];
    args.extend(model_args);
    args.extend([
        "--measures",
        "eigs,trace,density,sam,fn-loss-rise",
        "--tol",
        "1e-6",
        "--density-steps",
        "30",
    ]);
    let (ok, out, err) = landscaped(data.path(), &args);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let get = |q: &str| {
        rows.iter().find(|row| row["quantity"] == q).unwrap_or_else(|| panic!("no {q} in {out}")).clone()
    };
    let want = &r["all"];
    let lmax = get("lambda_max")["value"].as_f64().unwrap();
    let lmin = get("lambda_min")["value"].as_f64().unwrap();
    eprintln!(
        "λmax rel {:.1e}, λmin rel {:.1e}, loss rel {:.1e}",
        rel(lmax, want["lambda_max"].as_f64().unwrap()),
        rel(lmin, want["lambda_min"].as_f64().unwrap()),
        rel(get("loss")["value"].as_f64().unwrap(), want["loss"].as_f64().unwrap())
    );
    // Lanczos to residual 1e-6 on float32 HVPs against eigvalsh in float64: measured 2.0e-9 / 5.2e-8.
    assert!(rel(lmax, want["lambda_max"].as_f64().unwrap()) < 1e-6, "{lmax}");
    assert!(rel(lmin, want["lambda_min"].as_f64().unwrap()) < 1e-6, "{lmin}");
    let tr = get("trace");
    let tw = want["trace"].as_f64().unwrap();
    assert!((tr["value"].as_f64().unwrap() - tw).abs() < 4.0 * tr["pm"].as_f64().unwrap(), "{tr} vs {tw}");
    // A float32 loss against float64: measured 1.0e-8.
    assert!(rel(get("loss")["value"].as_f64().unwrap(), want["loss"].as_f64().unwrap()) < 1e-6);
    assert!(get("sam")["value"].as_f64().unwrap() > 0.0);
    assert!(get("fn_loss_rise")["pm"].as_f64().unwrap() > 0.0);

    // Stored: --list prints the same rows.
    let (ok, listed, err) =
        landscaped(data.path(), &["--format", "json", "sharpness", "--run", "tiny", "--list"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listed).unwrap(),
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    );

    // Spectrum plot.
    let svg = data.path().join("spectrum.svg");
    let (ok, _, err) =
        landscaped(data.path(), &["plot", "spectrum", "--run", "tiny", "-o", svg.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));

    // Fig. 7: a 3×3 slice, then the ratio map on a grid through the centre.
    let mut args = vec!["slice", "--checkpoint", &ck, "--x", "-1:1:3", "--y", "-1:1:3"];
    args.extend(model_args);
    let (ok, out, err) = landscaped(data.path(), &args);
    assert!(ok, "{err}");
    let id: u64 = out.split_whitespace().nth(1).unwrap().trim_end_matches(':').parse().unwrap();
    let map_svg = data.path().join("map.svg");
    let args =
        ["sharpness-map", "--slice", &id.to_string(), "--x", "-0.5:0.5:3", "--y", "0:0.5:2", "--tol", "1e-6"];
    let (ok, _, err) = landscaped(data.path(), &[&args[..], &["-o", map_svg.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&map_svg).unwrap().contains("<svg"));
    let store = Store::open(data.path()).unwrap();
    let map = records::get_ratio_map(&store, id).unwrap().unwrap();
    assert_eq!((map.xs.len(), map.ys.len()), (3, 2));
    assert!(map.converged.iter().flatten().all(|c| *c));
    let centre = map.ratio[0][1];
    let want_ratio = (want["lambda_min"].as_f64().unwrap() / want["lambda_max"].as_f64().unwrap()).abs();
    eprintln!(
        "map centre ratio rel {:.1e}, λmax rel {:.1e}",
        rel(centre, want_ratio),
        rel(map.lambda_max[0][1], want["lambda_max"].as_f64().unwrap())
    );
    // As above (tol 1e-6): measured 5.0e-8 (ratio), 8.8e-9 (λmax).
    assert!(rel(centre, want_ratio) < 1e-6, "{centre} vs {want_ratio}");
    assert!(rel(map.lambda_max[0][1], want["lambda_max"].as_f64().unwrap()) < 1e-6);
    // Away from the centre the curvature differs.
    assert!((map.ratio[1][0] - centre).abs() > 1e-6);
}

#[test]
fn bad_input_is_one_clear_line() {
    let (dir, _) = reference();
    let data = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.pt").display().to_string();
    let eval = dir.path().join("eval.safetensors").display().to_string();
    let (ok, _, err) =
        landscaped(data.path(), &["sharpness", "--run", "nope", "--model", &model, "--eval-data", &eval]);
    assert!(!ok);
    assert!(err.contains("nope") && err.trim().lines().count() == 1, "{err}");
    let (ok, _, err) =
        landscaped(data.path(), &["sharpness", "--run", "nope", "--checkpoint", "/nonexistent.safetensors"]);
    assert!(!ok);
    assert!(err.contains("--model"), "{err}");
    let (ok, _, err) = landscaped(data.path(), &["sharpness", "--run", "x", "--list"]);
    assert!(!ok && err.contains("no sharpness results"), "{err}");
}

/// The sharpness measures and the SLQ density against float64 brute force on the same tiny model
/// (tests/python/sharpness_reference.py): the maxima over SAM's ρ-ball and ASAM's scaled ball by
/// projected gradient ascent from 65 starts plus 20000 samples, over Keskar's box by scipy's L-BFGS-B
/// (Keskar et al.'s own solver) plus 20000 corners; the filter-normalized loss rise by Monte Carlo
/// over 20000 directions; the density's moments against (1/d) tr(Hᵏ) from `eigvalsh` of the exact
/// Hessian.
#[test]
fn measures_and_density_agree_with_float64_brute_force() {
    let (dir, r) = reference();
    let data = tempfile::tempdir().unwrap();
    let m = &r["measures"];
    let p = |n: &str| dir.path().join(n).display().to_string();
    let (ck, model, eval) = (p("ck.safetensors"), p("model.pt"), p("eval.safetensors"));
    let num = |k: &str| m[k].as_f64().unwrap().to_string();
    let (eps, rho, arho, fnr) = (num("keskar_eps"), num("sam_rho"), num("asam_rho"), num("fn_radius"));
    const RUNS: usize = 16;
    let runs = RUNS.to_string();
    #[rustfmt::skip]
    let args = [
        "--format", "json", "sharpness", "--run", "tiny", "--step", "5", "--checkpoint", &ck,
        "--model", &model, "--eval-data", &eval, "--batch-size", "16",
        "--measures", "density,keskar,sam,sam-ascent,asam,fn-loss-rise",
        "--keskar-eps", &eps, "--sam-rho", &rho, "--asam-rho", &arho, "--fn-radius", &fnr,
        "--fn-directions", "50", "--density-steps", "20", "--density-runs", &runs, "--seed", "0",
    ];
    let (ok, out, err) = landscaped(data.path(), &args);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let get = |q: &str| {
        let row = rows.iter().find(|row| row["quantity"] == q).unwrap_or_else(|| panic!("no {q} in {out}"));
        (row["value"].as_f64().unwrap(), row["pm"].as_f64())
    };
    let want = |k: &str| m[k].as_f64().unwrap();
    let report = |what: &str, got: f64, reference: f64| {
        eprintln!("{what}: {got:.9e} vs {reference:.9e} (relative {:+.2e})", (got - reference) / reference)
    };

    // First-order SAM is a closed form, L(θ + ρ∇L/‖∇L‖) − L(θ): only float32 rounding separates the
    // worker's value from float64 (a loss error of ~1e-8 on a rise of 1e-2).
    let (sam, _) = get("sam");
    report("sam (first order)", sam, want("sam_first_order"));
    assert!(rel(sam, want("sam_first_order")) < TOL_SAM_FIRST, "{sam}");
    // The ascents are lower bounds of the true maxima: never above them (beyond float32 rounding), and
    // within what 5 steps achieve here.
    let keskar_unit = 100.0 / (1.0 + want("loss")); // Keskar's value is a percentage of 1 + L(θ)
    for (q, max, gap, unit) in [
        ("sam_ascent", "sam_max", GAP_SAM, 1.0),
        ("asam", "asam_max", GAP_ASAM, 1.0),
        ("keskar", "keskar_max", GAP_KESKAR, keskar_unit),
    ] {
        let (v, _) = get(q);
        report(q, v, want(max));
        eprintln!("{q}: {:.2e} above the maximum in loss units", (v - want(max)) / unit);
        assert!(
            v <= want(max) + TOL_ABOVE_MAX * unit,
            "{q} {v} exceeds the brute-force maximum {}",
            want(max)
        );
        assert!(
            v >= want(max) * (1.0 - gap),
            "{q} {v} is further than {gap} below the maximum {}",
            want(max)
        );
    }
    // A Monte Carlo mean of 50 directions against one of 20000 (same distribution, independent draws):
    // within 4 standard errors of the difference.
    let (rise, se) = get("fn_loss_rise");
    let se = se.unwrap();
    let se_both = (se * se + want("fn_loss_rise_se").powi(2)).sqrt();
    report("fn_loss_rise", rise, want("fn_loss_rise"));
    eprintln!("fn_loss_rise: {:.2} standard errors apart", (rise - want("fn_loss_rise")).abs() / se_both);
    assert!((rise - want("fn_loss_rise")).abs() <= 4.0 * se_both, "{rise} ± {se}");

    // SLQ: each run's k-th quadrature moment Σ wᵢθᵢᵏ is vᵀHᵏv/d for its Rademacher v (exact for k ≤ 2·20−1),
    // whose mean is (1/d) tr(Hᵏ) and whose variance the reference computes from Hᵏ itself; the mean of
    // 16 runs must lie within 4 standard errors of the exact moment.
    let store = Store::open(data.path()).unwrap();
    let rec = records::SharpnessRecord::get(&store, "tiny", 5).unwrap().unwrap();
    let q = rec.density.unwrap();
    assert_eq!(q.nodes.len(), RUNS);
    let spec = &r["spectrum"];
    let eig: Vec<f64> = spec["eigenvalues"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let mut worst_run = 0.0f64;
    for k in 1..=4 {
        let per: Vec<f64> = q
            .nodes
            .iter()
            .zip(&q.weights)
            .map(|(n, w)| n.iter().zip(w).map(|(t, w)| w * t.powi(k as i32)).sum())
            .collect();
        // Run by run: the same start vector's vᵀHᵏv/d from the exact Hessian (float32 HVPs on one side).
        for (r, got) in per.iter().enumerate() {
            let want = spec["run_moments"][r][k - 1].as_f64().unwrap();
            worst_run = worst_run.max(rel(*got, want));
            assert!(rel(*got, want) < TOL_RUN_MOMENT, "run {r} moment {k}: {got} vs vᵀHᵏv/d {want}");
        }
        let mean = per.iter().sum::<f64>() / RUNS as f64;
        let exact = spec["moments"][k - 1].as_f64().unwrap();
        let se = (spec["probe_var"][k - 1].as_f64().unwrap() / RUNS as f64).sqrt();
        eprintln!(
            "moment {k}: SLQ {mean:.6e}, eigvalsh {exact:.6e}, {:.2} standard errors apart",
            (mean - exact).abs() / se
        );
        assert!((mean - exact).abs() <= 4.0 * se, "moment {k}: SLQ {mean} vs eigvalsh {exact} (se {se})");
    }
    eprintln!("per-run moments: largest relative difference {worst_run:.2e}");
    // Ritz values interlace the spectrum: every node inside [λmin, λmax]; the largest converges to λmax.
    let (lo, hi) = (eig[0], eig[eig.len() - 1]);
    let top = q.nodes.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max);
    let bottom = q.nodes.iter().flatten().copied().fold(f64::INFINITY, f64::min);
    eprintln!("SLQ nodes in [{bottom:.9e}, {top:.9e}], eigvalsh [{lo:.9e}, {hi:.9e}]");
    assert!(
        bottom >= lo - TOL_NODE * hi.abs() && top <= hi + TOL_NODE * hi.abs(),
        "nodes outside the spectrum"
    );
    assert!(rel(top, hi) < TOL_NODE, "largest SLQ node {top} vs λmax {hi}");
}

/// A checkpoint named by path gets the step its name gives (the rule `ingest` applies to the same
/// file), not 0; `--run` is needed only to store the result.
#[test]
fn a_checkpoint_by_path_records_the_step_of_its_name() {
    let (dir, _) = reference();
    let data = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).display().to_string();
    let (ck, model, eval) = (p("ck.safetensors"), p("model.pt"), p("eval.safetensors"));
    // The same tensors as torch.save writes them, under a name with a step.
    let pt = data.path().join("step_00120.pt");
    let status = std::process::Command::new(venv_python())
        .env("PYTHONPATH", worker_python_path())
        .args([
            "-c",
            "import sys, torch; from landscaped_worker import safetensors as st; torch.save(st.load(sys.argv[1]), sys.argv[2])",
            &ck,
            pt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let pt = pt.display().to_string();
    let store = data.path().join("data");
    let base =
        ["--model", model.as_str(), "--eval-data", eval.as_str(), "--measures", "eigs", "--max-steps", "10"];
    let mut args = vec!["--format", "json", "sharpness", "--run", "tiny", "--checkpoint", &pt];
    args.extend(base);
    let (ok, out, err) = landscaped(&store, &args);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(rows.iter().all(|r| r["step"] == 120), "{out}");
    let (ok, out, err) = landscaped(&store, &["--format", "json", "sharpness", "--run", "tiny", "--list"]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["step"] == 120), "{out}");
    // Without --run: computed and printed, not stored, and the store is not even opened.
    let elsewhere = data.path().join("never");
    let mut args = vec!["--format", "json", "sharpness", "--checkpoint", &pt];
    args.extend(base);
    let (ok, out, err) = landscaped(&elsewhere, &args);
    assert!(ok, "{err}");
    assert!(err.contains("not stored"), "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(rows.iter().all(|r| r["step"] == 120), "{out}");
    assert!(!elsewhere.exists(), "a store was created without --run");
}

/// Ctrl-C (a real SIGINT to the CLI, sent once it has started its worker) stops `sharpness` and
/// `sharpness-map` the way it stops a slice: the workers stopped, one line saying so, the interrupt's
/// status 130, and nothing stored (there is no partial result to keep).
#[test]
fn ctrl_c_stops_sharpness_and_the_ratio_map_storing_nothing() {
    let (dir, _) = reference();
    let data = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let (ck, model, eval) = (p("ck.safetensors"), p("model.pt"), p("eval.safetensors"));
    let model_args = ["--model", model.as_str(), "--eval-data", eval.as_str(), "--batch-size", "16"];
    let check = |what: &str, (out, workers): (std::process::Output, Vec<u32>)| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(130), "{what}: {err}");
        let line = err.lines().last().unwrap_or_default();
        assert_eq!(
            line,
            format!(
                "error: {what} stopped before it finished: workers stopped, nothing stored: cancelled (signal)"
            ),
            "{err}"
        );
        for w in workers {
            wait_until(std::time::Duration::from_secs(10), "the worker to be stopped", || process_gone(w));
        }
    };

    // A million Hutchinson probes with no stopping tolerance: it runs until stopped.
    let mut cmd = landscaped_cmd(data.path());
    cmd.args(["sharpness", "--run", "tiny", "--step", "5", "--checkpoint", &ck]).args(model_args);
    cmd.args(["--measures", "trace", "--trace-samples", "1000000", "--trace-rel-tol", "0"]);
    check("sharpness", interrupt_once_working(cmd));
    let (ok, _, err) = landscaped(data.path(), &["sharpness", "--run", "tiny", "--list"]);
    assert!(!ok && err.contains("no sharpness results stored"), "{err}");

    // The ratio map over a 3×3 slice, on a 41 × 41 grid.
    let mut args = vec!["slice", "--checkpoint", &ck, "--x", "-1:1:3", "--y", "-1:1:3"];
    args.extend(model_args);
    let (ok, out, err) = landscaped(data.path(), &args);
    assert!(ok, "{err}");
    let id = out.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string();
    let mut cmd = landscaped_cmd(data.path());
    cmd.args(["sharpness-map", "--slice", &id, "--x", "-1:1:41", "--y", "-1:1:41", "--tol", "1e-9"]);
    check("ratio map", interrupt_once_working(cmd));
    let store = Store::open(data.path()).unwrap();
    assert!(records::get_ratio_map(&store, id.parse().unwrap()).unwrap().is_none(), "nothing stored");
}
