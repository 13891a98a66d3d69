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

/// `ingest` archives each tensor in the checkpoint's own precision (bf16 stays bf16, values exact)
/// and obeys the archive's budget and retention flags (the same options as `trajectory --import`); it
/// says what the archive did in one line at its end, not an INFO line per checkpoint.
#[test]
fn ingest_archives_bf16_as_bf16_within_budget_and_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let data = tmp.path().join("data");
    // d = 112,540 parameters: about 225 KB per archived bf16 checkpoint, so 1 MiB holds 4 of the 6.
    run_script_args("pca_reference.py", ["make", ck.to_str().unwrap(), "6", "5", "bf16", "1050"]);
    let ingest = |run: &str, flags: &[&str]| {
        let mut c = landscaped_cmd(&data);
        c.args(["--format", "csv", "ingest", ck.to_str().unwrap(), "--run", run]).args(flags);
        c.env("LANDSCAPED_LOG", "info").output().expect("run landscaped")
    };
    let o = ingest("b", &["--archive-budget-mib", "1"]);
    assert_eq!(ok(&o).lines().count(), 7);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("trajectory archived"), "a log line per checkpoint: {err}");
    let said: Vec<&str> = err.lines().filter(|l| l.contains("trajectory archive")).collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(said[0].starts_with("trajectory archive: 6 checkpoints archived"), "{}", said[0]);
    assert!(said[0].contains("of a 1 MiB budget") && said[0].contains("removed"), "{}", said[0]);

    let kept = landscaped::trajectory::archive::list_run(&data, "b").unwrap();
    let steps: Vec<u64> = kept.iter().map(|e| e.step).collect();
    assert!(kept.iter().map(|e| e.bytes).sum::<u64>() <= 1 << 20, "over the budget: {kept:?}");
    assert!(steps.len() >= 2 && steps.len() < 6, "{steps:?}");
    assert_eq!((steps[0], steps[steps.len() - 1]), (100, 600), "the first and the newest are kept");
    let mut scratch = Vec::new();
    for e in &kept {
        let a = landscaped::trajectory::archive::ArchiveFile::open(&e.path).unwrap();
        assert_eq!(a.stored_types(), "bf16");
        let c =
            landscaped_formats::Checkpoint::open(&ck.join(format!("step_{}.safetensors", e.step))).unwrap();
        for (i, t) in a.tensors.iter().enumerate() {
            let j = c.tensors.iter().position(|x| x.name == t.name).unwrap();
            assert_eq!(c.tensors[j].dtype, landscaped_formats::Dtype::BF16);
            let v = c.read(j).unwrap();
            let mut got = vec![0.0; t.numel()];
            a.read_f64(i, 0, &mut got, &mut scratch).unwrap();
            assert!((0..v.len()).all(|k| v.get(k) == Some(got[k])), "step {} {}", e.step, t.name);
        }
    }
    let listed = ok(&bin(&data, &["--format", "csv", "trajectory", "--run", "b", "--archive"]));
    assert!(listed.lines().skip(1).all(|l| l.split(',').nth(2) == Some("bf16")), "{listed}");

    // Retention every:2: the 0th, 2nd and 4th checkpoints seen, and the newest.
    let o = ingest("e", &["--archive-retention", "every:2", "--no-distances"]);
    ok(&o);
    let steps: Vec<u64> =
        landscaped::trajectory::archive::list_run(&data, "e").unwrap().iter().map(|e| e.step).collect();
    assert_eq!(steps, vec![100, 300, 500, 600]);
}
