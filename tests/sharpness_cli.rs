//! `landscaped sharpness`, `sharpness-map` and `plot spectrum` end to end on the tiny model of
//! tests/python/sharpness_reference.py: stored results match PyTorch's full-Hessian eigenvalues (1e-4
//! relative), the Fig. 7 map's centre point equals |λmin/λmax| at the checkpoint, and bad input gives
//! one clear line.

use landscaped::store::Store;
use landscaped::store::sharpness as records;
use std::path::Path;
use std::process::Command;

fn reference() -> &'static (tempfile::TempDir, serde_json::Value) {
    static REF: std::sync::OnceLock<(tempfile::TempDir, serde_json::Value)> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let st = Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/python/sharpness_reference.py"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        let text = std::fs::read_to_string(dir.path().join("reference.json")).unwrap();
        (dir, serde_json::from_str(&text).unwrap())
    })
}

fn landscaped(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_landscaped"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

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
    assert!(rel(lmax, want["lambda_max"].as_f64().unwrap()) < 1e-4, "{lmax}");
    assert!(rel(lmin, want["lambda_min"].as_f64().unwrap()) < 1e-4, "{lmin}");
    let tr = get("trace");
    let tw = want["trace"].as_f64().unwrap();
    assert!((tr["value"].as_f64().unwrap() - tw).abs() < 4.0 * tr["pm"].as_f64().unwrap(), "{tr} vs {tw}");
    assert!(rel(get("loss")["value"].as_f64().unwrap(), want["loss"].as_f64().unwrap()) < 1e-5);
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
    assert!(rel(centre, want_ratio) < 1e-4, "{centre} vs {want_ratio}");
    assert!(rel(map.lambda_max[0][1], want["lambda_max"].as_f64().unwrap()) < 1e-4);
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
