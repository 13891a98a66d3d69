//! Computed NaN losses are not missing points: a torchvision ResNet-18 interpolated past the point where
//! its batch-norm running variances turn negative (tests/python/resnet_bn_make.py: the network as
//! initialized, and the same weights after train-mode passes over inputs of small spread) evaluates to
//! NaN there, as in PyTorch. `landscaped interpolate` (Python backend) counts them in its summary, `slices
//! show` prints `nan` (table) and `"nan"` (JSON) beside `null`/blank for points not computed, and the plot
//! marks them with a count in the legend. Finite points against PyTorch: 1e-5 relative.

mod support;
use support::*;

#[test]
fn resnet_interpolation_past_negative_bn_variances_counts_nan_points() {
    let dir = tempfile::tempdir().unwrap();
    let r = python_reference("resnet_bn_make.py", dir.path(), &[]);
    let want: Vec<Option<f64>> = r["loss"].as_array().unwrap().iter().map(|v| v.as_f64()).collect();
    let nan_want = want.iter().filter(|v| v.is_none()).count();
    // The reference crosses the sign change: some points NaN, some finite.
    assert!(nan_want >= 1 && nan_want < want.len(), "{r}");
    let data = dir.path().join("data");
    let a = dir.path().join("step_00100.pt");
    let b = dir.path().join("step_00200.pt");
    let out = landscaped_cmd(&data)
        .env("PYTHONPATH", tests_python())
        .env("LANDSCAPED_LOG", "warn")
        .arg("interpolate")
        .args([&a, &b])
        .args(["--x=0:2:5", "--backend", "python", "--python"])
        .arg(venv_python())
        .args(["--factory", "resnet_factory:build", "--threads", "1", "--workers", "1"])
        .output()
        .unwrap();
    let (ok, summary, err) = outcome(out);
    assert!(ok, "{err}");
    assert!(summary.contains(&format!("{nan_want} NaN point(s) (computed, not missing)")), "{summary}");
    assert!(summary.contains("loss at α = 0"), "{summary}");

    let (ok, show, err) = cli_query(&data, None, &["--format", "json", "slices", "show", "1"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["nan_points"].as_u64(), Some(nan_want as u64), "{v}");
    // The step rule gives the positional checkpoint's step, as ingest reads it.
    assert_eq!(v["step"].as_u64(), Some(100), "{v}");
    let loss = v["loss"][0].as_array().unwrap();
    assert_eq!(loss.len(), want.len());
    for (i, (got, w)) in loss.iter().zip(&want).enumerate() {
        match w {
            None => assert_eq!(got, "nan", "α point {i}: PyTorch gives NaN"),
            Some(w) => {
                assert!(rel_close(got.as_f64().unwrap(), *w, 1e-5), "α point {i}: {got} vs PyTorch {w}")
            }
        }
    }
    let (ok, table, err) = cli_query(&data, None, &["slices", "show", "1"]);
    assert!(ok, "{err}");
    assert!(table.contains(&format!("{nan_want} NaN point(s)")) && table.contains(" nan"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("alpha  ") && !l.contains(" y ")), "{table}");
    let (ok, list, err) = cli_query(&data, None, &["--format", "json", "slices", "list"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["nan"].as_u64(), Some(nan_want as u64), "{list}");
    let svg = dir.path().join("s.svg");
    let (ok, _, err) = cli_query(&data, None, &["plot", "slice", "1", "-o", svg.to_str().unwrap()]);
    assert!(ok, "{err}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains(&format!("loss NaN: {nan_want} point(s)")), "the legend counts the NaN points");
}

fn rel_close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs())
}
