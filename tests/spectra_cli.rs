//! `landscaped spectra` (CLI: --checkpoint, --run --compute, --summary, json), `landscaped plot spectra`,
//! and the daemon's `[run.spectra]` job (store record, /metrics run-level gauges, per-layer gauges only
//! for `layer_gauges`, the API query), each checked against WeightWatcher 0.7.7's `analyze()` on the same
//! checkpoint (tests/python/spectra_reference.py --only small_cnn; the full comparison is tests/spectra.rs).

mod support;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::*;

/// As tests/spectra.rs: the fit is deterministic, both sides f64 (3.2e-13 seen there).
const METRIC: f64 = 1e-10;

fn small_cnn(dir: &Path) -> Value {
    let r = python_reference("spectra_reference.py", dir, &["--only", "small_cnn"]);
    r["cases"][0].clone()
}

fn ww_mean(case: &Value, key: &str) -> f64 {
    let l = case["layers"].as_array().unwrap();
    l.iter().map(|x| x[key].as_f64().unwrap()).sum::<f64>() / l.len() as f64
}

fn near(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= METRIC * want.abs(), "{what}: ours {got}, WeightWatcher {want}");
}

/// The layer rows of a json table against WeightWatcher's layers.
fn check_rows(ctx: &str, rows: &[Value], case: &Value) {
    let ww = case["layers"].as_array().unwrap();
    assert_eq!(rows.len(), ww.len(), "{ctx}: rows {rows:?}");
    for w in ww {
        let name = w["tensor"].as_str().unwrap();
        let row = rows.iter().find(|r| r["layer"] == name).unwrap_or_else(|| panic!("{ctx}: no row {name}"));
        for (col, key) in
            [("alpha", "alpha"), ("xmin", "xmin"), ("D", "D"), ("alpha_weighted", "alpha_weighted")]
        {
            near(&format!("{ctx} {name} {col}"), row[col].as_f64().unwrap(), w[key].as_f64().unwrap());
        }
        assert_eq!(row["num_pl_spikes"].as_f64(), w["num_pl_spikes"].as_f64(), "{ctx} {name}");
        assert_eq!(row["exact"], Value::Bool(true));
        assert_eq!(row["method"], "svd");
    }
}

fn json_rows(out: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(out).unwrap().as_array().unwrap().clone()
}

#[test]
fn cli_measures_stores_prints_and_plots_spectra() {
    let dir = tempfile::tempdir().unwrap();
    let case = small_cnn(dir.path());
    let ck = dir.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let file = ck.join("step-5.pt");
    std::fs::copy(dir.path().join("small_cnn.pt"), &file).unwrap();
    let data = dir.path().join("data");
    let f = file.to_str().unwrap();

    // Directly on the file: nothing stored.
    let (ok, out, err) = cli_query(&data, None, &["spectra", "--checkpoint", f, "--format", "json"]);
    assert!(ok, "{err}");
    check_rows("--checkpoint", &json_rows(&out), &case);

    // Ingested, then measured for the run and stored; the summary is WeightWatcher's mean α.
    let (ok, _, err) = cli_query(&data, None, &["ingest", f, "--run", "r"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli_query(&data, None, &["spectra", "--run", "r"]);
    assert!(!ok && err.contains("--compute"), "before any record: {err}");
    let (ok, out, err) = cli_query(&data, None, &["spectra", "--run", "r", "--compute", "--format", "json"]);
    assert!(ok, "{err}");
    let rows = json_rows(&out);
    assert!(rows.iter().all(|r| r["step"] == 5));
    check_rows("--run --compute", &rows, &case);
    let (ok, out, err) = cli_query(&data, None, &["spectra", "--run", "r", "--summary", "--format", "json"]);
    assert!(ok, "{err}");
    let s = &json_rows(&out)[0];
    near("mean alpha", s["mean_alpha"].as_f64().unwrap(), ww_mean(&case, "alpha"));
    near("mean alpha_weighted", s["mean_alpha_weighted"].as_f64().unwrap(), ww_mean(&case, "alpha_weighted"));
    let below =
        case["layers"].as_array().unwrap().iter().filter(|l| l["alpha"].as_f64().unwrap() < 2.0).count();
    near("fraction < 2", s["frac_alpha_lt_2"].as_f64().unwrap(), below as f64 / 7.0);
    let (ok, out, _) =
        cli_query(&data, None, &["spectra", "--run", "r", "--layer", "fc*", "--format", "csv"]);
    assert!(ok && out.lines().count() == 3, "header + fc1, fc2: {out}");

    // A budget no layer fits: every layer approximated, and saying so (exact = false, the method and k);
    // with --no-approx every layer refused by name instead.
    let (ok, out, _) =
        cli_query(&data, None, &["spectra", "--checkpoint", f, "--max-flops", "1", "--format", "json"]);
    assert!(ok);
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 7);
    for r in &rows {
        assert_eq!(r["exact"], false, "{r}");
        assert!(r["method"].as_str().unwrap().starts_with("lanczos-top-k+slq k="), "{r}");
        assert!(r["alpha"].is_number() && r["log_norm"].is_number(), "{r}");
    }
    let (ok, out, _) =
        cli_query(&data, None, &["spectra", "--checkpoint", f, "--max-flops", "1", "--format", "csv"]);
    assert!(ok && out.lines().next().unwrap().ends_with("exact,method"), "{out}");
    assert!(out.lines().skip(1).all(|l| l.contains(",false,lanczos-top-k+slq k=")), "{out}");
    let (ok, out, _) = cli_query(
        &data,
        None,
        &["spectra", "--checkpoint", f, "--max-flops", "1", "--no-approx", "--format", "json"],
    );
    assert!(ok);
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r["exact"] == false && r["alpha"].is_null() && r["method"] == "refused"));
    assert!(rows[0]["warning"].as_str().unwrap().starts_with("refused: exact SVD"));

    // Plots: α over steps, and one layer's ESD with the fit.
    for args in [
        vec!["--run", "r"],
        vec!["--run", "r", "--esd", "c2.weight"],
        vec!["--checkpoint", f, "--esd", "fc1.weight"],
    ] {
        let out = dir.path().join("p.svg");
        let _ = std::fs::remove_file(&out);
        let mut a = vec!["plot", "spectra", "-o", out.to_str().unwrap()];
        a.extend(args.iter().copied());
        let (ok, _, err) = cli_query(&data, None, &a);
        assert!(ok, "{a:?}: {err}");
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains("<svg") && svg.contains("α"), "{a:?}");
    }
    let (ok, _, err) =
        cli_query(&data, None, &["plot", "spectra", "--run", "r", "--esd", "bn.weight", "-o", "/tmp/x.svg"]);
    assert!(!ok && err.contains("not a measured layer"), "{err}");
}

#[test]
fn daemon_job_records_spectra_and_publishes_run_level_gauges() {
    let dir = tempfile::tempdir().unwrap();
    let case = small_cnn(dir.path());
    let ck = dir.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let config =
        write_config(dir.path(), &[&ck], "", "[run.spectra]\nevery = 1\nlayer_gauges = [\"fc1.*\"]\n");
    let d = restart(config.clone(), dir.path());
    std::fs::copy(dir.path().join("small_cnn.pt"), ck.join("tmp.part")).unwrap();
    std::fs::rename(ck.join("tmp.part"), ck.join("step-7.pt")).unwrap();
    let key = "landscaped_spectra_mean_alpha{run=\"r\"}";
    wait_until(Duration::from_secs(90), "spectra gauge", || metric(&d.metrics(), key).is_some());
    let m = d.metrics();
    near("gauge mean alpha", metric(&m, key).unwrap(), ww_mean(&case, "alpha"));
    let fc1 = case["layers"].as_array().unwrap().iter().find(|l| l["tensor"] == "fc1.weight").unwrap();
    let g = metric(&m, "landscaped_spectra_layer_alpha{layer=\"fc1.weight\",run=\"r\"}").expect("fc1 gauge");
    near("fc1 alpha gauge", g, fc1["alpha"].as_f64().unwrap());
    assert!(!m.contains("landscaped_spectra_layer_alpha{layer=\"c1.weight\""), "per-layer only on request");
    assert_eq!(metric(&m, "landscaped_spectra_layers{run=\"r\",state=\"measured\"}"), Some(7.0));
    // The CLI asks the daemon (it holds the store): the same rows.
    let (ok, out, err) =
        cli_query(&dir.path().join("data"), Some(&config), &["spectra", "--run", "r", "--format", "json"]);
    assert!(ok, "{err}");
    check_rows("daemon", &json_rows(&out), &case);
    assert_eq!(d.stop(), Some(0));
}
