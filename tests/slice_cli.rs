//! The slice commands end to end through the binary: a slice interrupted by Ctrl-C resumes where it
//! stopped (same record, same values as an uninterrupted run), exports (CSV, JSON, VTK, NPZ read back
//! by NumPy), plots, and one-line errors for bad grids and missing files.

use std::path::Path;
use std::process::{Command, Stdio};

mod support;
use support::*;

fn fixture() -> &'static Path {
    &slice_fixture().0
}

fn bin(data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("LANDSCAPED_DATA_DIR", data).env("LANDSCAPED_LOG", "warn");
    c
}

fn slice_cmd(data: &Path) -> Command {
    slice_cmd_on(data, &["--threads", "1"])
}

/// The test slice with these thread settings (`--threads`, `--workers`).
fn slice_cmd_on(data: &Path, threads: &[&str]) -> Command {
    let f = fixture();
    let mut c = bin(data);
    c.args(["slice", "--checkpoint"])
        .arg(f.join("ckpt_b.safetensors"))
        .arg("--model-dir")
        .arg(f.join("model"))
        .args(["--x", "-1:1:31", "--y", "-1:0.5:25", "--seed", "5", "--persist-every", "3"])
        .args(threads);
    c
}

/// N from "slice 1: cancelled after N/775 points".
fn cancelled_after(stdout: &str) -> usize {
    let rest = stdout.split("cancelled after ").nth(1).unwrap_or_else(|| panic!("not cancelled: {stdout}"));
    rest.split('/').next().unwrap().parse().unwrap()
}

fn show_json(data: &Path, id: &str) -> serde_json::Value {
    let out = bin(data).args(["--format", "json", "slices", "show", id]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn interrupted_slice_resumes_to_the_same_values() {
    let full = tempfile::tempdir().unwrap();
    let out = slice_cmd(full.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = show_json(full.path(), "1");
    assert_eq!(want["shape"], serde_json::json!([25, 31]));

    // Interrupted after 40 points (as Ctrl-C does, via the deterministic test hook): the block of points
    // in flight then still finishes (at most 16 points), then once more.
    let part = tempfile::tempdir().unwrap();
    let out = slice_cmd(part.path()).env("LANDSCAPED_STOP_AFTER_POINTS", "40").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let first = cancelled_after(&stdout);
    assert!((40..=56).contains(&first), "{stdout}");
    let mid = show_json(part.path(), "1");
    let done = mid["done"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap());
    assert_eq!(done.filter(|d| d.as_bool().unwrap()).count(), first);
    // Points not computed are null (NaN) in JSON, never a fake loss.
    assert!(mid["loss"][24][30].is_null());
    let out = slice_cmd(part.path()).env("LANDSCAPED_STOP_AFTER_POINTS", "300").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("resuming slice 1 ({first}/775 points done)"))
    );
    let second = cancelled_after(&String::from_utf8_lossy(&out.stdout));
    assert!((first + 300..=first + 316).contains(&second), "{second}");
    // A real SIGINT (sent once the run has said it is resuming) is handled the same way: saved, exit 0.
    let mut child = slice_cmd(part.path()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains(&format!("resuming slice 1 ({second}/775 points done)")), "{line}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled after"));
    let out = slice_cmd(part.path()).output().unwrap();
    assert!(out.status.success());
    let got = show_json(part.path(), "1");
    assert_eq!(got["loss"], want["loss"]);
    assert_eq!(got["accuracy"], want["accuracy"]);
    // One record, not two.
    let list = bin(part.path()).args(["--format", "json", "slices", "list"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
}

#[test]
fn exports_and_plots() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let f = fixture();
    let out = bin(d)
        .arg("interpolate")
        .arg(f.join("ckpt_a.safetensors"))
        .arg(f.join("ckpt_b.safetensors"))
        .arg("--model-dir")
        .arg(f.join("model"))
        .args(["--x", "-0.5:1.5:9"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The interpolation's summary names α = 0 for what it is.
    assert!(String::from_utf8_lossy(&out.stdout).contains("loss at α = 0"));
    let out = bin(d)
        .args(["--format", "json", "slice", "--checkpoint"])
        .arg(f.join("ckpt_b.safetensors"))
        .arg("--model-dir")
        .arg(f.join("model"))
        .args(["--x", "0:1:4", "--y", "-1:1:3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // --format json: the summary as one JSON object, not the human line.
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["id"].as_u64(), summary["points"].as_u64()), (Some(2), Some(12)), "{summary}");
    assert_eq!((summary["complete"].as_bool(), summary["nan_points"].as_u64()), (Some(true), Some(0)));

    let csv = bin(d).args(["--format", "csv", "slices", "export", "1"]).output().unwrap();
    let text = String::from_utf8(csv.stdout).unwrap();
    assert_eq!(text.lines().count(), 1 + 9);
    assert!(text.starts_with("ix,iy,x,y,loss,accuracy,done"));

    let vtk = d.join("s2.vtk");
    assert!(bin(d).args(["slices", "export", "2", "-o"]).arg(&vtk).status().unwrap().success());
    let v = std::fs::read_to_string(&vtk).unwrap();
    assert!(v.contains("DATASET STRUCTURED_GRID\nDIMENSIONS 4 3 1\nPOINTS 12 double"), "{v}");
    assert!(v.contains("SCALARS loss double 1"));

    let npz = d.join("s2.npz");
    assert!(bin(d).args(["slices", "export", "2", "-o"]).arg(&npz).status().unwrap().success());
    let json = show_json(d, "2");
    let py = Command::new(venv_python())
        .arg("-c")
        .arg("import sys, json, numpy as np; z=np.load(sys.argv[1]); print(json.dumps({'shape': list(z['loss'].shape), 'xs': z['xs'].tolist(), 'loss': z['loss'].tolist(), 'done': bool(z['done'].all())}))")
        .arg(&npz)
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let back: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(back["shape"], serde_json::json!([3, 4]));
    assert_eq!(back["xs"], json["xs"]);
    assert_eq!(back["loss"], json["loss"]);
    assert_eq!(back["done"], serde_json::json!(true));
    // The centre (x = 0, y = 0) is the checkpoint's own loss.
    assert_eq!(json["loss"][1][0], json["centre_loss"]);

    for (id, name) in [("1", "interp.png"), ("2", "contours.svg")] {
        let p = d.join(name);
        let out = bin(d).args(["plot", "slice", id, "-o"]).arg(&p).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::metadata(&p).unwrap().len() > 1000);
    }
}

/// Three worker processes on three threads give the values of one worker on one thread, bit for bit
/// (each point is the same single-threaded evaluation), also when interrupted and resumed.
#[test]
fn slice_on_workers_in_parallel_equals_the_sequential_one() {
    let seq = tempfile::tempdir().unwrap();
    let out = slice_cmd(seq.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 worker × 1 thread(s)"));
    let want = show_json(seq.path(), "1");

    let par = tempfile::tempdir().unwrap();
    let on3 = ["--threads", "3", "--workers", "3"];
    let out = slice_cmd_on(par.path(), &on3).env("LANDSCAPED_STOP_AFTER_POINTS", "40").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mid = show_json(par.path(), "1");
    let done = mid["done"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap());
    // The blocks in flight when the stop came are kept too: at most 16 more points per worker.
    let done = done.filter(|d| d.as_bool().unwrap()).count();
    assert!((40..=40 + 3 * 16).contains(&done), "{done} points done");
    let out = slice_cmd_on(par.path(), &on3).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("computed {} points", 775 - done)), "{err}");
    assert!(err.contains("3 workers × 1 thread(s)"), "{err}");
    let got = show_json(par.path(), "1");
    assert_eq!(got["loss"], want["loss"]);
    assert_eq!(got["accuracy"], want["accuracy"]);
    assert_eq!(got["centre_loss"], want["centre_loss"]);
}

/// The build links torch_cuda (so a GPU is used where one exists). With a GPU, a slice on `cuda:0` gives
/// the CPU's values (1e-5 relative); without one, `--device cuda:0` is a one-line error saying so.
#[test]
fn cuda_is_linked_and_a_gpu_slice_matches_the_cpu() {
    let data = tempfile::tempdir().unwrap();
    let out = bin(data.path()).args(["--format", "json", "info"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let get = |k: &str| rows.as_array().unwrap().iter().find(|r| r["key"] == k).unwrap()["value"].clone();
    let version = get("backend_version").as_str().unwrap_or_default().to_string();
    assert!(version.contains("torch_cuda linked: true"), "libtorch_cuda.so is not loaded: {rows}");
    let cuda_available = get("capabilities").as_array().is_some_and(|c| c.iter().any(|c| c == "cuda"));
    let small = |device: &str| {
        let f = fixture();
        bin(data.path())
            .args(["slice", "--checkpoint"])
            .arg(f.join("ckpt_b.safetensors"))
            .arg("--model-dir")
            .arg(f.join("model"))
            .args(["--x", "-1:1:5", "--seed", "5", "--device", device])
            .output()
            .unwrap()
    };
    let cpu = small("cpu");
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    let gpu = small("cuda:0");
    if cuda_available {
        assert!(gpu.status.success(), "{}", String::from_utf8_lossy(&gpu.stderr));
        let (a, b) = (show_json(data.path(), "1"), show_json(data.path(), "2"));
        assert_eq!(b["model"]["device"], "cuda:0");
        for (x, y) in a["loss"][0].as_array().unwrap().iter().zip(b["loss"][0].as_array().unwrap()) {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5 * x.abs(), "cpu {x} vs cuda {y}");
        }
    } else {
        assert!(!gpu.status.success());
        let err = String::from_utf8_lossy(&gpu.stderr);
        assert!(err.contains("no CUDA GPU is visible") && err.lines().count() == 1, "{err}");
    }
}

#[test]
fn bad_requests_are_one_line_errors() {
    let data = tempfile::tempdir().unwrap();
    let f = fixture();
    let out = bin(data.path())
        .args(["slice", "--checkpoint"])
        .arg(f.join("ckpt_b.safetensors"))
        .arg("--model-dir")
        .arg(f.join("model"))
        .args(["--x", "1:0:3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max is below min"));
    let out = bin(data.path())
        .args(["slice", "--checkpoint", "/nonexistent/ckpt.safetensors", "--model-dir"])
        .arg(f.join("model"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/ckpt.safetensors") && err.lines().count() == 1, "{err}");
    for flag in ["--workers", "--threads"] {
        let out = slice_cmd_on(data.path(), &[flag, "0"]).output().unwrap();
        assert!(!out.status.success());
        let want = format!("{flag}: must be at least 1");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&want), "{flag}");
    }
    let out = bin(data.path()).args(["slices", "show", "42"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no slice with id 42"));
}
