//! The daemon's `[run.sharpness]` job end to end: the tiny model of tests/python/sharpness_reference.py
//! (which also computes the full float64 Hessian with PyTorch and its eigvalsh extremes), its checkpoint
//! dropped into a watched folder; the daemon computes Lanczos extremes and the Hutchinson trace at it.
//! Checked: `landscaped_hessian_lambda_{max,min}` on /metrics within 1e-4 relative of the full-Hessian
//! eigenvalues (as tests/sharpness_hessian.rs), the ratio |λmin/λmax| to the same, converged = 1, the
//! trace gauge within 4 standard errors of the exact trace, the record at the API, clean shutdown.

mod support;
use std::time::Duration;
use support::*;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn daemon_sharpness_job_publishes_eigenvalues_matching_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("fixture");
    let r = python_reference("sharpness_reference.py", &fx, &[]);
    let want = &r["all"];

    let ck = dir.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let config = write_config(
        dir.path(),
        &[&ck],
        "",
        &format!(
            "[run.sharpness]\nevery = 1\nmodel_dir = {:?}\nbatch_size = 16\ntol = 1e-7\nmax_hvps = 200\nthreads = 1\n",
            fx.to_str().unwrap(),
        ),
    );
    let d = restart(config, dir.path());
    let port = d.port;
    assert_eq!(
        get_status(port, "/api/v1/runs/r/sharpness").map(|s| s.0),
        Some(404),
        "a record before any checkpoint"
    );
    std::fs::copy(fx.join("ck.safetensors"), ck.join("tmp.part")).unwrap();
    std::fs::rename(ck.join("tmp.part"), ck.join("step-7.safetensors")).unwrap();

    wait_until(Duration::from_secs(60), "sharpness gauges on /metrics", || {
        metric(&d.metrics(), "landscaped_hessian_lambda_max{run=\"r\"}").is_some()
    });
    let m = d.metrics();
    for name in
        landscaped::daemon::jobs::JOB_METRIC_NAMES.iter().filter(|n| n.starts_with("landscaped_hessian_"))
    {
        assert!(m.contains(&format!("# TYPE {name} gauge")), "{name} missing");
    }
    let g = |k: &str| metric(&m, k).unwrap_or_else(|| panic!("{k} missing:\n{m}"));
    let (lmax, lmin) = (want["lambda_max"].as_f64().unwrap(), want["lambda_min"].as_f64().unwrap());
    let got_max = g("landscaped_hessian_lambda_max{run=\"r\"}");
    let got_min = g("landscaped_hessian_lambda_min{run=\"r\"}");
    eprintln!(
        "λmax rel {:.1e}, λmin rel {:.1e}, ratio rel {:.1e}",
        rel(got_max, lmax),
        rel(got_min, lmin),
        rel(g("landscaped_hessian_eigen_ratio{run=\"r\"}"), (lmin / lmax).abs())
    );
    // Lanczos to residual 1e-7 on float32 HVPs against eigvalsh in float64: measured 8.8e-9 / 4.1e-8.
    assert!(rel(got_max, lmax) < 1e-6, "λmax {got_max} vs PyTorch {lmax}");
    assert!(rel(got_min, lmin) < 1e-6, "λmin {got_min} vs PyTorch {lmin}");
    let ratio = (lmin / lmax).abs();
    let got_ratio = g("landscaped_hessian_eigen_ratio{run=\"r\"}");
    // measured 5.0e-8
    assert!(rel(got_ratio, ratio) < 1e-6, "ratio {got_ratio} vs {ratio}");
    assert_eq!(g("landscaped_hessian_converged{run=\"r\"}"), 1.0);

    // The record at the API: same numbers, how it was computed, the trace within 4 standard errors.
    let rec: serde_json::Value =
        serde_json::from_str(&get(port, "/api/v1/runs/r/sharpness").unwrap()).unwrap();
    assert_eq!(rec["run"], "r");
    assert_eq!(rec["step"], 7);
    assert_eq!(rec["dim"], want["dim"]);
    assert_eq!(rec["samples"], 50);
    assert_eq!(rec["extremes"]["converged"], true);
    assert_eq!(rec["extremes"]["lambda_max"].as_f64().unwrap(), got_max);
    assert!(rec["density"].is_null(), "density is not a default measure");
    assert!(rec["measures"].as_array().unwrap().is_empty());
    let (t, se) = (rec["trace"]["trace"].as_f64().unwrap(), rec["trace"]["std_error"].as_f64().unwrap());
    let tw = want["trace"].as_f64().unwrap();
    assert!((t - tw).abs() < 4.0 * se, "Hutchinson {t} ± {se} vs exact {tw}");
    assert_eq!(g("landscaped_hessian_trace{run=\"r\"}"), t);
    let all: serde_json::Value =
        serde_json::from_str(&get(port, "/api/v1/runs/r/sharpness?all=true").unwrap()).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(get_status(port, "/api/v1/runs/other/sharpness").map(|s| s.0), Some(404));
    assert_eq!(d.stop(), Some(0));
}
