//! The daemon's `[run.slice]` job end to end: a tiny model exported by examples/landscaped_export.py
//! (via tests/python/slice_reference.py, which also computes PyTorch reference losses), its checkpoint
//! dropped into a watched folder; the daemon computes a 2D random slice about it (same seed as the
//! reference) and stores it. Checked: the grid and centre loss against PyTorch (1e-5 relative, as
//! tests/slice_reference.rs), the gauges against their documented formulas on the reference grid
//! (1e-5 relative), the JSON and CSV API.

mod daemon_support;
use daemon_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn rel_close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

/// The `[run.slice]` model keys for the fixture: its export folder.
fn model_dir_keys(fx: &Path) -> String {
    format!("model_dir = {:?}\nthreads = 1", fx.join("model").to_str().unwrap())
}

/// Starts the daemon watching `<dir>/ck` with a `[run.slice]` section (`grid` = the x/y lines, `model` =
/// the model-contract lines).
fn start_daemon(dir: &Path, model: &str, grid: &str, seed: u64, batch: u64) -> (Daemon, PathBuf) {
    let ck = dir.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let port = free_port();
    let config = dir.join("landscaped.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\nquiet_period_secs = 0.3\nincomplete_timeout_secs = 2.0\n\
             rescan_interval_secs = 30\n[[run]]\nname = \"r\"\nwatch = [{:?}]\n[run.slice]\nevery = 1\n\
             {model}\n{grid}\nnorm = \"filter\"\nseed = {seed}\n\
             batch_size = {batch}\nabandon_on_newer = true\n",
            dir.join("data").to_str().unwrap(),
            ck.to_str().unwrap(),
        ),
    )
    .unwrap();
    (restart(config, port, dir), ck)
}

/// Copies a checkpoint into the watched folder under `name` (copy, then rename: never seen partial).
fn drop_checkpoint(from: &Path, ck: &Path, name: &str) {
    std::fs::copy(from, ck.join("tmp.part")).unwrap();
    std::fs::rename(ck.join("tmp.part"), ck.join(name)).unwrap();
}

/// The fixture folder made by tests/python/slice_reference.py (model export, checkpoints, reference).
fn fixture(dir: &Path) -> (PathBuf, serde_json::Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fx = dir.join("fixture");
    let ok = Command::new(python())
        .arg(root.join("tests/python/slice_reference.py"))
        .arg(&fx)
        .status()
        .unwrap()
        .success();
    assert!(ok, "slice_reference.py failed");
    let r = serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap()).unwrap();
    (fx, r)
}

#[test]
fn daemon_slice_job_stores_serves_and_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, r) = fixture(dir.path());
    let seed = r["seed"].as_u64().unwrap();
    let batch = r["batch_size"].as_u64().unwrap();

    let (d, ck) =
        start_daemon(dir.path(), &model_dir_keys(&fx), "x = \"-0.5:0.5:3\"\ny = \"0:1:2\"", seed, batch);
    let port = d.port;
    drop_checkpoint(&fx.join("ckpt_b.safetensors"), &ck, "step-40.safetensors");

    wait_until(Duration::from_secs(90), "slice gauges on /metrics", || {
        metric(&d.metrics(), "landscaped_slice_centre_loss{run=\"r\"}").is_some()
    });

    let list: serde_json::Value = serde_json::from_str(&get(port, "/api/v1/runs/r/slices").unwrap()).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["step"], 40);
    assert_eq!(list[0]["kind"], "random");
    assert_eq!(list[0]["complete"], true);
    assert_eq!(list[0]["points"], 6);
    let id = list[0]["id"].as_u64().unwrap();

    // Values against PyTorch: Z[iy][ix] for x = -0.5:0.5:3, y = 0:1:2.
    let rec: serde_json::Value =
        serde_json::from_str(&get(port, &format!("/api/v1/slices/{id}")).unwrap()).unwrap();
    let loss: Vec<f64> =
        rec["values"]["loss"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want = r["grid"]["loss"].as_array().unwrap();
    for (iy, row) in want.iter().enumerate() {
        for (ix, w) in row.as_array().unwrap().iter().enumerate() {
            let w = w.as_f64().unwrap();
            assert!(rel_close(loss[iy * 3 + ix], w, 1e-5), "loss[{iy}][{ix}] {} vs {w}", loss[iy * 3 + ix]);
        }
    }
    let loss_b = r["loss_b"].as_f64().unwrap();
    assert!(rel_close(rec["centre_loss"].as_f64().unwrap(), loss_b, 1e-5));

    // Gauges: from the reference row y = 0 (h = 0.5).
    let m = d.metrics();
    let row: Vec<f64> = want[0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let g = |k: &str| metric(&m, k).unwrap_or_else(|| panic!("{k} missing:\n{m}"));
    assert!(rel_close(g("landscaped_slice_centre_loss{run=\"r\"}"), loss_b, 1e-5));
    let curv = (row[2] - 2.0 * row[1] + row[0]) / 0.25;
    // Each loss agrees to 1e-5 relative, so the second difference to 4e-5·max|L| / h².
    let lmax = row.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    let got = g("landscaped_slice_curvature{direction=\"x\",run=\"r\"}");
    assert!((got - curv).abs() <= 4e-5 * lmax / 0.25, "curvature {got} vs {curv}");
    let rise = (row[0] + row[2]) / 2.0 - loss_b;
    let got = g("landscaped_slice_loss_rise{direction=\"x\",radius=\"0.5\",run=\"r\"}");
    assert!((got - rise).abs() <= 2e-5 * lmax, "rise {got} vs {rise}");
    // Radius 1 lies outside the x grid (±0.5): NaN by definition.
    assert!(g("landscaped_slice_loss_rise{direction=\"x\",radius=\"1\",run=\"r\"}").is_nan());
    // Along y (0:1:2, two points, none below 0): no second difference, no symmetric rise.
    assert!(g("landscaped_slice_curvature{direction=\"y\",run=\"r\"}").is_nan());
    assert!(g("landscaped_slice_loss_rise{direction=\"y\",radius=\"0.5\",run=\"r\"}").is_nan());

    // CSV for Grafana's Infinity data source: header and one row per point, same values.
    let csv = get(port, &format!("/api/v1/slices/{id}.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "ix,iy,x,y,loss,accuracy,done");
    assert_eq!(lines.len(), 7);
    for (i, l) in lines[1..].iter().enumerate() {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f[4].parse::<f64>().unwrap(), loss[i]);
        assert_eq!(f[6], "true");
    }
    // The run's latest complete slice, as the Grafana panel asks for it.
    assert_eq!(get(port, "/api/v1/runs/r/slices/latest.csv").unwrap(), csv);
    let latest: serde_json::Value =
        serde_json::from_str(&get(port, "/api/v1/runs/r/slices/latest").unwrap()).unwrap();
    assert_eq!(latest["id"].as_u64(), Some(id));
    assert!(get(port, "/api/v1/runs/other/slices/latest.csv").is_none());
    assert!(get(port, "/api/v1/slices/999").is_none());
    assert!(get(port, "/api/v1/slices/abc.csv").is_none());
    assert_eq!(d.stop(), Some(0));
}

/// `abandon_on_newer`: a long slice about step 40 stops once step 50 is ingested; its partial record
/// stays (not complete, fewer points done), and a slice about step 50 is started. The model is given
/// file by file (`model`, `eval_data`, `loss`) and the job runs on two copies of it (`threads = 2`).
#[test]
fn daemon_slice_abandoned_when_a_newer_checkpoint_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, r) = fixture(dir.path());
    let (seed, batch) = (r["seed"].as_u64().unwrap(), r["batch_size"].as_u64().unwrap());
    let model = format!(
        "model = {:?}\neval_data = {:?}\nloss = \"cross_entropy\"\nthreads = 2",
        fx.join("model/model.pt").to_str().unwrap(),
        fx.join("model/eval.safetensors").to_str().unwrap()
    );
    // 100000 points: far longer than the test takes to ingest the next checkpoint.
    let (d, ck) = start_daemon(dir.path(), &model, "x = \"-1:1:100000\"", seed, batch);
    let port = d.port;
    let slices = || -> Vec<serde_json::Value> {
        get(port, "/api/v1/runs/r/slices")
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    drop_checkpoint(&fx.join("ckpt_b.safetensors"), &ck, "step-40.safetensors");
    wait_until(Duration::from_secs(60), "slice about step 40 started", || {
        slices().iter().any(|s| s["step"] == 40)
    });
    drop_checkpoint(&fx.join("ckpt_a.safetensors"), &ck, "step-50.safetensors");
    wait_until(Duration::from_secs(60), "slice about step 50 started", || {
        slices().iter().any(|s| s["step"] == 50)
    });
    let first = slices().into_iter().find(|s| s["step"] == 40).unwrap();
    assert_eq!(first["complete"], false, "{first}");
    let id = first["id"].as_u64().unwrap();
    let rec: serde_json::Value =
        serde_json::from_str(&get(port, &format!("/api/v1/slices/{id}")).unwrap()).unwrap();
    let done = rec["values"]["done"].as_array().unwrap().iter().filter(|b| b.as_bool().unwrap()).count();
    assert!(done < 100_000, "abandoned slice has {done} points done");
    // No gauges from an abandoned slice.
    assert!(metric(&d.metrics(), "landscaped_slice_centre_loss{run=\"r\"}").is_none());
    // Shutdown cancels the running slice promptly.
    assert_eq!(d.stop(), Some(0));
}
