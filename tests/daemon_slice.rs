//! The daemon's `[run.slice]` job end to end: a tiny model exported by examples/landscaped_export.py
//! (via tests/python/slice_reference.py, which also computes PyTorch reference losses), its checkpoint
//! dropped into a watched folder; the daemon computes a 2D random slice about it (same seed as the
//! reference) and stores it. Checked: the grid and centre loss against PyTorch (1e-5 relative, as
//! tests/slice_reference.rs), the gauges against their documented formulas on the reference grid
//! (1e-5 relative), the JSON and CSV API; a slice in the trajectory-PCA plane against scikit-learn's
//! PCA and the loss in plain PyTorch (1e-5 relative).

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

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
    start_daemon_with(dir, model, grid, seed, batch, "")
}

/// [`start_daemon`] with `tail` appended to the config (e.g. another job section).
fn start_daemon_with(
    dir: &Path,
    model: &str,
    grid: &str,
    seed: u64,
    batch: u64,
    tail: &str,
) -> (Daemon, PathBuf) {
    let ck = dir.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let run = format!(
        "[run.slice]\nevery = 1\n{model}\n{grid}\nnorm = \"filter\"\nseed = {seed}\n\
         batch_size = {batch}\nabandon_on_newer = true\n{tail}\n"
    );
    let config = write_config(dir, &[&ck], "", &run);
    (restart(config, dir), ck)
}

/// The run's slices as the API lists them (none while the daemon can't answer).
fn run_slices(port: u16) -> Vec<serde_json::Value> {
    get(port, "/api/v1/runs/r/slices")
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Copies a checkpoint into the watched folder under `name` (copy, then rename: never seen partial).
fn drop_checkpoint(from: &Path, ck: &Path, name: &str) {
    std::fs::copy(from, ck.join("tmp.part")).unwrap();
    std::fs::rename(ck.join("tmp.part"), ck.join(name)).unwrap();
}

/// The fixture folder made by tests/python/slice_reference.py (model export, checkpoints, reference).
fn fixture(dir: &Path) -> (PathBuf, serde_json::Value) {
    let fx = dir.join("fixture");
    let r = python_reference("slice_reference.py", &fx, &[]);
    (fx, r)
}

/// Slice `id` from the API, its loss grid checked against the PyTorch reference (x = -0.5:0.5:3,
/// y = 0:1:2; 1e-5 relative). Returns the record.
fn slice_matching_reference(port: u16, id: u64, r: &serde_json::Value) -> serde_json::Value {
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
    rec
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
    // The training script exports the model contract into its checkpoint folder, as people do: the
    // daemon must not take model.pt or eval.safetensors for checkpoints (the marker comes last).
    let export = ck.join("landscaped");
    std::fs::create_dir(&export).unwrap();
    for f in ["model.pt", "eval.safetensors", "landscaped.toml"] {
        std::fs::copy(fx.join("model").join(f), export.join(f)).unwrap();
    }
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
    let rec = slice_matching_reference(port, id, &r);
    let loss: Vec<f64> =
        rec["values"]["loss"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want = r["grid"]["loss"].as_array().unwrap();
    let loss_b = r["loss_b"].as_f64().unwrap();
    assert!(rel_close(rec["centre_loss"].as_f64().unwrap(), loss_b, 1e-5));

    // Gauges: from the reference row y = 0 (h = 0.5). Every slice gauge the dashboard may use is there.
    let m = d.metrics();
    let errors: Vec<&str> = m.lines().filter(|l| l.starts_with("landscaped_errors_total{")).collect();
    assert!(
        !errors.is_empty() && errors.iter().all(|l| l.ends_with(" 0")),
        "the export was taken for a checkpoint: {errors:?}"
    );
    assert_eq!(metric(&m, "landscaped_checkpoints_processed_total{run=\"r\"}"), Some(1.0));
    for name in
        landscaped::daemon::jobs::JOB_METRIC_NAMES.iter().filter(|n| n.starts_with("landscaped_slice_"))
    {
        assert!(m.contains(&format!("# TYPE {name} gauge")), "{name} missing");
    }
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
    for missing in ["/api/v1/runs/other/slices/latest.csv", "/api/v1/slices/999"] {
        assert_eq!(get_status(port, missing).map(|s| s.0), Some(404), "{missing}");
    }
    // Not an id at all: a bad request.
    assert_eq!(get_status(port, "/api/v1/slices/abc.csv").map(|s| s.0), Some(400));
    assert_eq!(d.stop(), Some(0));
}

/// `abandon_on_newer`: a long slice about step 40 stops once step 50 is ingested; its partial record
/// stays (not complete: some points done, with PyTorch's loss where the reference has one, the rest not
/// computed) and stops growing, and a slice about step 50 is started. The model is given file by file
/// (`model`, `eval_data`, `loss`) and the job runs on two copies of it (`threads = 2`).
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
    // 100000 points (the most a grid may have): far longer than the test takes to ingest the next
    // checkpoint. Point 0 is x = -0.5, the reference grid's (x = -0.5, y = 0).
    let n = 100_000;
    let (d, ck) = start_daemon(dir.path(), &model, "x = \"-0.5:0.5:100000\"", seed, batch);
    let port = d.port;
    let slices = || run_slices(port);
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
    let values = &rec["values"];
    assert_eq!(values["xs"].as_array().unwrap().len(), n);
    let done: Vec<bool> = values["done"].as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect();
    // JSON has no NaN: a point not computed is null.
    let loss: Vec<Option<f64>> = values["loss"].as_array().unwrap().iter().map(|v| v.as_f64()).collect();
    assert_eq!((done.len(), loss.len()), (n, n));
    let count = done.iter().filter(|&&b| b).count();
    assert!(count >= 1 && count < n, "abandoned slice has {count} of {n} points done");
    for (i, (&dn, l)) in done.iter().zip(&loss).enumerate() {
        match (dn, l) {
            (true, Some(v)) => assert!(v.is_finite() && *v > 0.0, "point {i}: loss {v}"),
            (false, None) => {}
            _ => panic!("point {i}: done = {dn} but loss {l:?}"),
        }
    }
    // The first block goes out first: point 0 is done, with PyTorch's loss at (x = -0.5, y = 0).
    let want = r["grid"]["loss"][0][0].as_f64().unwrap();
    assert!(done[0], "point 0 not done");
    let got = loss[0].unwrap();
    assert!(rel_close(got, want, 1e-5), "point 0: {got} vs PyTorch {want}");
    // No gauges from an abandoned slice.
    assert!(metric(&d.metrics(), "landscaped_slice_centre_loss{run=\"r\"}").is_none());
    // Shutdown cancels the running slice promptly.
    assert_eq!(d.stop(), Some(0));
    // Abandoned means stopped: a job still computing it would have stored more points at shutdown.
    let store = landscaped::store::Store::open(&dir.path().join("data")).unwrap();
    let last = landscaped::store::slices::get(&store, id).unwrap().unwrap();
    assert_eq!(last.values.done, done, "the abandoned slice went on after the newer one started");
}

/// `dirs = "pca"` beside `[run.pca]`: once the run's PCA has two components, the job slices its plane
/// about the PCA's centre checkpoint, with the trajectory in it; the centre loss is PyTorch's loss of
/// that checkpoint, and `landscaped slice --dirs pca` on the same store computes the same values.
/// Both are checked against an outside reference at all 441 points: the plane from scikit-learn's PCA
/// of the same checkpoints (sign-aligned), the loss in plain PyTorch (tests/python/pca_slice_reference.py);
/// the explained variance ratios and the trajectory's coordinates against sklearn's too.
#[test]
fn daemon_pca_slice_lies_in_the_trajectory_plane() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, r) = fixture(dir.path());
    let (seed, batch) = (r["seed"].as_u64().unwrap(), r["batch_size"].as_u64().unwrap());
    // A third checkpoint off the line between a and b, so that the trajectory spans a plane.
    let mid = fx.join("ckpt_mid.safetensors");
    let ok = Command::new(venv_python())
        .args(["-c", "import sys, torch\nfrom safetensors.torch import load_file, save_file\n\
             a, b = load_file(sys.argv[1]), load_file(sys.argv[2]); g = torch.Generator().manual_seed(1)\n\
             save_file({k: (0.5 * (a[k] + b[k]) + 0.3 * a[k].abs().mean() * torch.randn(a[k].shape, generator=g))\n\
                        if a[k].is_floating_point() else b[k] for k in a}, sys.argv[3])"])
        .args([fx.join("ckpt_a.safetensors"), fx.join("ckpt_b.safetensors"), mid.clone()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let pca = "[run.pca]\nevery = 1\ncomponents = 2";
    let (d, ck) = start_daemon_with(dir.path(), &model_dir_keys(&fx), "dirs = \"pca\"", seed, batch, pca);
    let port = d.port;
    for (src, step) in [(fx.join("ckpt_a.safetensors"), 10), (mid, 20), (fx.join("ckpt_b.safetensors"), 30)] {
        drop_checkpoint(&src, &ck, &format!("step-{step}.safetensors"));
        wait_until(Duration::from_secs(60), "checkpoint ingested", || {
            get(port, "/api/v1/runs/r/checkpoints").is_some_and(|t| t.contains(&format!("\"step\":{step}")))
        });
    }
    let slices = || run_slices(port);
    wait_until(Duration::from_secs(120), "PCA slice about step 30", || {
        slices().iter().any(|s| s["kind"] == "pca" && s["step"] == 30 && s["complete"] == true)
    });
    let id = slices().iter().find(|s| s["step"] == 30).unwrap()["id"].as_u64().unwrap();
    let rec: serde_json::Value =
        serde_json::from_str(&get(port, &format!("/api/v1/slices/{id}")).unwrap()).unwrap();
    assert!(rel_close(rec["centre_loss"].as_f64().unwrap(), r["loss_b"].as_f64().unwrap(), 1e-5));
    // The trajectory: three checkpoints, the centre (step 30) at the origin, inside the default grid.
    let traj = rec["trajectory"].as_array().unwrap();
    let steps: Vec<u64> = traj.iter().map(|p| p[2].as_u64().unwrap()).collect();
    assert_eq!(steps, [10, 20, 30]);
    assert!(traj[2][0].as_f64().unwrap().abs() < 1e-6 && traj[2][1].as_f64().unwrap().abs() < 1e-6);
    let axis = |k: &str| -> Vec<f64> {
        rec["values"][k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    let (xs, ys) = (axis("xs"), axis("ys"));
    assert_eq!((xs.len(), ys.len()), (21, 21));
    for p in traj {
        let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
        assert!(xs[0] < x && x < xs[20] && ys[0] < y && y < ys[20], "({x}, {y}) outside the grid");
    }
    let daemon_loss = rec["values"]["loss"].clone();
    // The outside reference: scikit-learn's PCA of the same three checkpoints and the loss in plain
    // PyTorch at θc + x·pc1 + y·pc2 for every point of the grid (tests/python/pca_slice_reference.py).
    let reference = pca_plane_reference(&fx, &rec);
    let ratios: Vec<f64> = rec["directions"]["Pca"]["explained_variance_ratio"]
        .as_array()
        .unwrap_or_else(|| panic!("the record's PCA directions: {}", rec["directions"]))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (k, want) in reference["ratio"].as_array().unwrap().iter().enumerate() {
        // sklearn's ratios; landscaped's agree to 1e-6 (tests/trajectory_pca.rs measures ~1e-15).
        let want = want.as_f64().unwrap();
        assert!(
            (ratios[k] - want).abs() <= 1e-6,
            "explained variance ratio {k}: {} vs sklearn {want}",
            ratios[k]
        );
    }
    for (p, want) in traj.iter().zip(reference["coords"].as_array().unwrap()) {
        for k in 0..2 {
            // The coordinates are f32 archive values projected in f64: 1e-5 relative to the path's size.
            let (got, want) = (p[k].as_f64().unwrap(), want[k].as_f64().unwrap());
            let scale = reference["coords"][0][k].as_f64().unwrap().abs().max(1e-12);
            assert!((got - want).abs() <= 1e-5 * scale, "trajectory coordinate {k}: {got} vs sklearn {want}");
        }
    }
    let want = flat_grid(&reference["loss"]);
    let got: Vec<f64> = daemon_loss.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(want.len(), 441);
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / w.abs()).fold(0.0, f64::max);
    eprintln!(
        "PCA-plane slice vs PyTorch + scikit-learn: worst relative difference {worst:.2e} over 441 points"
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(rel_close(*g, *w, PCA_SLICE_TOLERANCE), "loss at point {i}: daemon {g} vs PyTorch {w}");
    }
    // The y direction's gauges exist for a 2D slice.
    // (Published once the job has stopped its workers, right after the record is complete.)
    wait_until(Duration::from_secs(30), "the y curvature gauge", || {
        metric(&d.metrics(), "landscaped_slice_curvature{direction=\"y\",run=\"r\"}").is_some()
    });
    assert_eq!(d.stop(), Some(0));

    // The command line, on the same store and PCA, slices the same plane to the same values.
    let out = Command::new(BIN)
        .env("LANDSCAPED_LOG", "warn")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--format", "json", "slice", "--run", "r", "--dirs", "pca", "--threads", "1", "--model-dir"])
        .arg(fx.join("model"))
        .args(["--batch-size", &batch.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let show = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--format", "json", "slices", "show", &(id + 1).to_string()])
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let (a, b) = (
        flat_grid(&cli["loss"]),
        daemon_loss.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>(),
    );
    assert_eq!(a.len(), 441);
    for ((x, y), w) in a.iter().zip(&b).zip(&want) {
        assert!(rel_close(*x, *y, 1e-9), "CLI {x} vs daemon {y}");
        assert!(rel_close(*x, *w, PCA_SLICE_TOLERANCE), "CLI {x} vs PyTorch {w}");
    }
}

/// Relative tolerance of a PCA-plane loss against the PyTorch reference: the reference forms
/// θc + x·v1 + y·v2 in float64 from sklearn's float64 components, landscaped in float32 from float32
/// direction files (a relative rounding of ~6e-8 per weight, times the grid's reach), and the losses
/// are float32 sums over the batches; 1e-5 as the random slices against the reference code
/// (tests/slice_reference.rs).
const PCA_SLICE_TOLERANCE: f64 = 1e-5;

/// A grid Z[iy][ix] as one row-major vector.
fn flat_grid(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().clone())
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// tests/python/pca_slice_reference.py on the fixture's three checkpoints (steps 10, 20, 30) and the
/// slice record `rec` (its grid coordinates and trajectory signs).
fn pca_plane_reference(fx: &Path, rec: &serde_json::Value) -> serde_json::Value {
    let record = fx.join("pca_slice_record.json");
    std::fs::write(&record, rec.to_string()).unwrap();
    let mut args = vec![fx.to_path_buf(), record];
    args.extend(["ckpt_a", "ckpt_mid", "ckpt_b"].map(|n| fx.join(format!("{n}.safetensors"))));
    serde_json::from_str(&run_script_args("pca_slice_reference.py", args)).unwrap()
}

/// A `[run.slice]` job computing on workers from a launcher (`workers_listen`): each run of the job
/// listens, a worker dialling in with the token (here started by hand, as srun would) computes the
/// grid, and the stored slice has the PyTorch reference values. A stop while the job waits for workers
/// ends the wait at once.
#[test]
fn daemon_slice_job_on_workers_that_dial_in() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, r) = fixture(dir.path());
    let seed = r["seed"].as_u64().unwrap();
    let batch = r["batch_size"].as_u64().unwrap();
    let token = dir.path().join("token");
    // The job's coordinator binds a free port itself and names it in its "waiting … on ADDR" log line.
    let keys = format!(
        "{}\nworkers_listen = \"127.0.0.1:0\"\nexpect = 1\nwait = 120\ntoken_file = {:?}",
        model_dir_keys(&fx),
        token.to_str().unwrap()
    );
    let (d, ck) = start_daemon(dir.path(), &keys, "x = \"-0.5:0.5:3\"\ny = \"0:1:2\"", seed, batch);
    drop_checkpoint(&fx.join("ckpt_b.safetensors"), &ck, "step-40.safetensors");
    let mut at = None;
    wait_until(Duration::from_secs(60), "the job listening for workers", || {
        at = d.log().lines().find_map(coordinator_addr);
        at.is_some()
    });
    let at = at.unwrap();
    // The worker reads the token file the job creates (it waits for it within its connect timeout).
    let worker = worker_bin();
    let w = Command::new(&worker)
        .args(["--connect", &at, "--connect-timeout", "90", "--token-file"])
        .arg(&token)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(120), "a complete slice from the dial-in worker", || {
        run_slices(d.port).iter().any(|s| s["complete"] == true)
    });
    let id = run_slices(d.port)[0]["id"].as_u64().unwrap();
    slice_matching_reference(d.port, id, &r);
    let log = d.log();
    assert!(log.contains("worker(s) ready"), "{log}");
    let mut w = w;
    let status = w.wait().unwrap();
    assert!(status.success(), "the worker ends cleanly after the job");
    // A second checkpoint: the job listens again; nobody comes, and the daemon stops at once anyway.
    drop_checkpoint(&fx.join("ckpt_a.safetensors"), &ck, "step-50.safetensors");
    wait_until(Duration::from_secs(60), "the job waiting for workers again", || {
        d.log().matches("waiting up to 120 s").count() >= 2
    });
    // stop() allows 20 s, far less than the 120 s wait; the log says the stop ended the wait.
    let log = d.log.clone();
    assert_eq!(d.stop(), Some(0));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("job stopped by the shutdown") && log.contains("cancelled while waiting"), "{log}");
}
