//! The trajectory CLI end to end: archive PyTorch checkpoints (`trajectory --import`), `pca`,
//! `trajectory` as JSON/CSV, `plot trajectory` as SVG, and the one-line errors for bad input.

use std::path::Path;
use std::process::Output;

mod support;
use support::*;

fn bin(data: &Path, args: &[&str]) -> Output {
    landscaped_cmd(data).args(args).env("LANDSCAPED_LOG", "warn").output().expect("run landscaped")
}

fn ok(o: &Output) -> String {
    stdout_ok(o)
}

#[test]
fn import_pca_trajectory_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let data = tmp.path().join("data");
    run_script_args("pca_reference.py", ["make", ck.to_str().unwrap(), "6", "4", "f32"]);

    // Too early: no PCA yet, and no archive yet.
    let o = bin(&data, &["trajectory", "--run", "r"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no PCA yet") && err.lines().count() == 1, "{err}");

    let out =
        ok(&bin(&data, &["--format", "csv", "trajectory", "--run", "r", "--import", ck.to_str().unwrap()]));
    assert_eq!(out.lines().count(), 7, "{out}");

    let o = bin(&data, &["pca", "--run", "r", "--components", "6"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("at least 7"), "{err}");

    let out = ok(&bin(&data, &["--format", "json", "pca", "--run", "r", "--exclude-1d"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ratio1 = v[0]["explained_variance_ratio"].as_f64().unwrap();
    assert!(ratio1 > 0.3 && ratio1 <= 1.0);

    let out = ok(&bin(&data, &["--format", "json", "trajectory", "--run", "r"]));
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[5]["step"].as_u64(), Some(600));
    assert_eq!(rows[5]["pc1"].as_f64(), Some(0.0));
    for r in rows {
        let (a, b, res, d) = (
            r["pc1"].as_f64().unwrap(),
            r["pc2"].as_f64().unwrap(),
            r["residual"].as_f64().unwrap(),
            r["distance"].as_f64().unwrap(),
        );
        // Pythagoras: the distance splits into the in-plane part and the residual.
        assert!((a * a + b * b + res * res - d * d).abs() <= 1e-9 * d * d.max(1.0));
    }

    let svg = tmp.path().join("t.svg");
    ok(&bin(&data, &["plot", "trajectory", "--run", "r", "-o", svg.to_str().unwrap()]));
    let text = std::fs::read_to_string(&svg).unwrap();
    let label = format!("1st PC: {:.1} %", ratio1 * 100.0);
    assert!(text.contains(&label), "axis label {label} missing");
    let labels: Vec<&str> =
        text.split("</text>").filter_map(|t| t.rsplit('>').next()).map(str::trim).collect();
    assert!(labels.contains(&"600") && labels.contains(&"100"), "step labels missing: {labels:?}");
}
