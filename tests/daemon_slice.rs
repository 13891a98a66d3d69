//! The daemon's `[run.slice]` job end to end: a tiny model exported by examples/landscaped_export.py
//! (via tests/python/slice_reference.py, which also computes PyTorch reference losses), its checkpoint
//! dropped into a watched folder; the daemon computes a 2D random slice about it (same seed as the
//! reference) and stores it. Checked: the grid and centre loss against PyTorch (1e-5 relative, as
//! tests/slice_reference.rs), the gauges against their documented formulas on the reference grid
//! (1e-5 relative), the JSON and CSV API.

mod daemon_support;
use daemon_support::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn rel_close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

#[test]
fn daemon_slice_job_stores_serves_and_publishes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("fixture");
    let ok = Command::new(python())
        .arg(root.join("tests/python/slice_reference.py"))
        .arg(&fx)
        .status()
        .unwrap()
        .success();
    assert!(ok, "slice_reference.py failed");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap()).unwrap();
    let seed = r["seed"].as_u64().unwrap();
    let batch = r["batch_size"].as_u64().unwrap();

    let ck = dir.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let port = free_port();
    let config = dir.path().join("landscaped.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\nquiet_period_secs = 0.3\nincomplete_timeout_secs = 2.0\n\
             rescan_interval_secs = 30\n[[run]]\nname = \"r\"\nwatch = [{:?}]\n[run.slice]\nevery = 1\n\
             model_dir = {:?}\nx = \"-0.5:0.5:3\"\ny = \"0:1:2\"\nnorm = \"filter\"\nseed = {seed}\n\
             batch_size = {batch}\nthreads = 1\nabandon_on_newer = true\n",
            dir.path().join("data").to_str().unwrap(),
            ck.to_str().unwrap(),
            fx.join("model").to_str().unwrap(),
        ),
    )
    .unwrap();
    let d = restart(config, port, dir.path());
    // Copy then rename, so the daemon never sees a partial file.
    std::fs::copy(fx.join("ckpt_b.safetensors"), ck.join("tmp.part")).unwrap();
    std::fs::rename(ck.join("tmp.part"), ck.join("step-40.safetensors")).unwrap();

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
    let got = g("landscaped_slice_curvature{run=\"r\"}");
    assert!((got - curv).abs() <= 4e-5 * lmax / 0.25, "curvature {got} vs {curv}");
    let rise = (row[0] + row[2]) / 2.0 - loss_b;
    let got = g("landscaped_slice_loss_rise{radius=\"0.5\",run=\"r\"}");
    assert!((got - rise).abs() <= 2e-5 * lmax, "rise {got} vs {rise}");
    // Radius 1 lies outside the x grid (±0.5): NaN by definition.
    assert!(g("landscaped_slice_loss_rise{radius=\"1\",run=\"r\"}").is_nan());

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
