//! The Python backend (`python -m landscaped_worker`, the factory contract) against the TorchScript
//! backend and the PyTorch reference, on the digits CNN of tests/python/slice_reference.py: the same
//! directions for a seed (bit for bit), the same slice grid (1e-12 relative; measured bit for bit) and
//! the reference code's grid;
//! λmax/λmin of both against `eigvalsh` of the full float64 Hessian (tests/python/digits_hessian_reference.py)
//! and the bf16 loss against PyTorch's own autocast;
//! checkpoints in other formats handed over as temporary safetensors (removed after); the bad-input
//! lines (factory not importable, wrong return, a Python without torch, a misfit output, a NaN loss);
//! and `landscaped slice --backend python` end to end. The conformance suite runs on this worker too
//! (tests/worker_protocol.rs, module `python`).

use landscaped::landscape::runner::PlaneSpec;
use landscaped::landscape::slice::Outcome;
use landscaped::sharpness::compute::{Quantity, SharpnessOptions};
use landscaped::sharpness::runner::sharpness_at;
use landscaped::store::slices::SliceRecord;
use landscaped::workers::{ModelContract, Worker, WorkerError};
use landscaped_maths::curvature::lanczos::LanczosOptions;
use landscaped_maths::directions::{Ignore, Normalization, RandomDirections};
use landscaped_protocol::messages::{BindRules, ErrorKind, StateSource, VectorInit, WireContract};
use std::path::PathBuf;
use std::sync::OnceLock;

mod support;
use support::*;

/// The fixture folder (made once per test binary), its reference values, and a torch.save copy of
/// checkpoint b (a zip pickle, which only the caller's readers read).
fn fixture() -> &'static (PathBuf, serde_json::Value) {
    static F: OnceLock<(PathBuf, serde_json::Value)> = OnceLock::new();
    F.get_or_init(|| {
        // The factories' module folder for every worker this binary starts (the caller puts the
        // package folder in front). Set before any process is spawned: every test comes here first.
        // SAFETY: no other thread reads the environment yet (they all wait on this initialisation).
        unsafe { std::env::set_var("PYTHONPATH", tests_python()) };
        let (dir, r) = slice_fixture().clone();
        let code = "import sys, torch; from safetensors.torch import load_file; \
                    torch.save(load_file(sys.argv[1]), sys.argv[2])";
        let ok = std::process::Command::new(venv_python())
            .args(["-c", code])
            .arg(dir.join("ckpt_b.safetensors"))
            .arg(dir.join("ckpt_b.pt"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        (dir, r)
    })
}

/// The contract for either backend on the fixture (the factory's module comes from tests/python, which
/// the worker finds on PYTHONPATH: the caller adds the package folder in front of ours).
fn model_contract(python: bool, factory: &str, workers: usize) -> ModelContract {
    if python { python_contract(factory, workers) } else { torchscript_contract(&fixture().0, workers) }
}

/// A started worker of either backend with the model loaded.
fn worker(python: bool, factory: &str) -> Result<Worker, WorkerError> {
    let c = model_contract(python, factory, 1);
    let mut pc: WireContract = c.protocol_contract(Some(1)).unwrap();
    pc.checkpoint = Some(fixture().0.join("ckpt_b.safetensors"));
    let mut w = Worker::start(&c.worker_options().unwrap())?;
    w.load_model(&pc)?;
    Ok(w)
}

fn ckpt(name: &str) -> StateSource {
    StateSource::Checkpoint { path: fixture().0.join(name) }
}

fn slice(python: bool, workers: usize, plane: PlaneSpec, xs: Vec<f64>, ys: Vec<f64>) -> SliceRecord {
    let c = model_contract(python, "digits_factory:build", workers);
    let r = slice_in_fresh_store(&c, plane, xs, ys, "test");
    assert_eq!(r.outcome, Outcome::Complete);
    r.record
}

/// The largest relative differences seen at the 1e-12 and 1e-5 bounds (printed by the slice tests).
static WORST: std::sync::Mutex<[f64; 2]> = std::sync::Mutex::new([0.0; 2]);

fn rel_close(a: f64, b: f64, rel: f64) -> bool {
    let e = (a - b).abs() / a.abs().max(b.abs()).max(1e-12);
    let mut w = WORST.lock().unwrap();
    if rel == 1e-12 {
        w[0] = w[0].max(e);
    } else if rel == 1e-5 {
        w[1] = w[1].max(e);
    }
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
}

fn remote(e: WorkerError) -> (ErrorKind, String) {
    match e {
        WorkerError::Remote { kind, message } => (kind, message),
        other => panic!("expected an error reply, got {other}"),
    }
}

#[test]
fn both_backends_draw_the_same_directions_and_compute_the_same_grid() {
    let (_, r) = fixture();
    let mut dirs = Vec::new();
    for python in [false, true] {
        let mut w = worker(python, "digits_factory:build").unwrap();
        assert_eq!(w.hello.backend, if python { "python" } else { "torchscript" });
        let c = w.load_state(ckpt("ckpt_b.safetensors"), &BindRules::default()).unwrap();
        let (h, cos) = w.random_directions(c, 7, "filter", "biasbn", 2, true).unwrap();
        let (h1, _) = w.random_directions(c, 7, "layer", "none", 1, false).unwrap();
        dirs.push((
            w.read_state(h[0]).unwrap(),
            w.read_state(h[1]).unwrap(),
            w.read_state(h1[0]).unwrap(),
            cos,
        ));
        // Start vectors from the same generator too.
        w.set_state(c).unwrap();
        let (dim, _, _) = w.hessian_open("all").unwrap();
        let g = w.new_vector(VectorInit::Gaussian { seed: 3 }).unwrap();
        let rd = w.new_vector(VectorInit::Rademacher { seed: 3 }).unwrap();
        dirs.push((w.read_vector(g).unwrap(), w.read_vector(rd).unwrap(), vec![dim as f64], None));
        let _ = w.shutdown();
    }
    for (k, (a, b)) in [(0, 2), (1, 3)].iter().map(|&(i, j)| (i, (&dirs[i], &dirs[j]))) {
        assert_eq!(a.0, b.0, "x direction / gaussian start vector ({k})");
        assert_eq!(a.1, b.1, "y direction / rademacher start vector ({k})");
        assert_eq!(a.2, b.2, "layer-normalized direction / dimension ({k})");
    }
    assert!((dirs[0].3.unwrap() - dirs[2].3.unwrap()).abs() < 1e-12, "cosines");
    // The same 2D grid through the runner on either backend (one worker each), and the reference's.
    let g = &r["grid"];
    let xs: Vec<f64> = g["xs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let ys: Vec<f64> = g["ys"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let centre = fixture().0.join("ckpt_b.safetensors");
    let spec = RandomDirections {
        seed: 7,
        norm: Normalization::Filter,
        ignore: Ignore::Biasbn,
        params: vec![],
        orthogonalize: false,
    };
    let plane = PlaneSpec::Random { centre, dirs: spec, two_d: true };
    let ts = slice(false, 1, plane.clone(), xs.clone(), ys.clone());
    let py = slice(true, 1, plane, xs, ys);
    assert_eq!(ts.directions, py.directions, "the record's direction description (parameter list)");
    for (i, (a, b)) in ts.values.loss.iter().zip(&py.values.loss).enumerate() {
        // The same float32 kernels in both runtimes: measured bit for bit (was allowed 1e-6).
        assert!(rel_close(*a, *b, 1e-12), "loss[{i}]: torchscript {a} vs python {b}");
    }
    assert_eq!(ts.values.accuracy, py.values.accuracy);
    assert!(rel_close(ts.centre_loss, py.centre_loss, 1e-9));
    for iy in 0..2 {
        for ix in 0..3 {
            let want = g["loss"][iy][ix].as_f64().unwrap();
            let got = py.values.loss_at(iy, ix);
            // float32 forwards, eager vs the reference code's: measured 1.0e-7.
            assert!(rel_close(got, want, 1e-5), "python: loss[{iy}][{ix}] {got} vs reference {want}");
            assert!((py.values.accuracy[iy * 3 + ix] - g["acc"][iy][ix].as_f64().unwrap()).abs() < 1e-9);
        }
    }
    assert!(py.model.model.contains("digits_factory:build"), "{:?}", py.model);
    let w = *WORST.lock().unwrap();
    eprintln!("grid: backends {:.1e} apart, python {:.1e} from the reference", w[0], w[1]);
}

#[test]
fn interpolation_on_two_python_workers_matches_the_reference() {
    let (dir, r) = fixture();
    let alphas: Vec<f64> =
        r["interpolation"]["alphas"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    // Checkpoint a as safetensors, b as a torch.save zip: the worker gets b through the handoff.
    let plane =
        PlaneSpec::Interpolation { centre: dir.join("ckpt_a.safetensors"), to: dir.join("ckpt_b.pt") };
    let v = slice(true, 2, plane, alphas.clone(), vec![]).values;
    for (i, al) in alphas.iter().enumerate() {
        let want = r["interpolation"]["loss"][i].as_f64().unwrap();
        assert!(rel_close(v.loss[i], want, 1e-5), "alpha {al}: {} vs {want}", v.loss[i]);
    }
}

#[test]
fn checkpoints_reach_the_worker_as_temporary_safetensors_removed_after() {
    let mut w = worker(true, "digits_factory:build").unwrap();
    assert!(!w.has_capability("read_checkpoints"));
    let handoffs = || -> Vec<String> {
        let tag = format!("landscaped-handoff-{}-", std::process::id());
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&tag))
            .collect()
    };
    let before = handoffs();
    let st = w.load_state(ckpt("ckpt_b.safetensors"), &BindRules::default()).unwrap();
    let pt = w.load_state(ckpt("ckpt_b.pt"), &BindRules::default()).unwrap();
    assert_eq!(w.read_state(st).unwrap(), w.read_state(pt).unwrap(), "the same state from either format");
    // A checkpoint that doesn't fit: the error names the user's file, not the temporary one.
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("partial.pt");
    let code = "import sys, torch; from safetensors.torch import load_file; d = load_file(sys.argv[1]); \
                d.pop('module.fc.bias'); d['module.extra'] = torch.zeros(2); torch.save(d, sys.argv[2])";
    let ok = std::process::Command::new(venv_python())
        .args(["-c", code])
        .arg(fixture().0.join("ckpt_b.safetensors"))
        .arg(&partial)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let (kind, msg) = remote(
        w.load_state(StateSource::Checkpoint { path: partial.clone() }, &BindRules::default()).unwrap_err(),
    );
    assert_eq!(kind, ErrorKind::BadCheckpoint);
    assert!(msg.contains(&partial.display().to_string()) && !msg.contains("landscaped-handoff"), "{msg}");
    assert!(msg.contains("fc.bias") && msg.contains("module.extra"), "{msg}");
    // A file that isn't a checkpoint at all: the caller's reader says so.
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let (kind, msg) = remote(
        w.load_state(StateSource::Checkpoint { path: junk.clone() }, &BindRules::default()).unwrap_err(),
    );
    assert_eq!(kind, ErrorKind::BadCheckpoint);
    assert!(msg.contains("junk.pt") && !msg.contains('\n'), "{msg}");
    assert_eq!(handoffs(), before, "every temporary folder is gone");
    w.set_state(pt).unwrap();
    w.evaluate().unwrap();
}

#[test]
fn bad_factories_and_pythons_are_one_line_each() {
    let one_line = |e: &WorkerError| {
        let m = e.to_string();
        assert!(!m.contains('\n'), "{m}");
        m
    };
    // Not importable: the import error, the module, the Python used.
    let e = worker(true, "no_such_module_here:build").err().unwrap();
    let m = one_line(&e);
    assert_eq!(e.kind(), "bad_contract");
    assert!(m.contains("no_such_module_here") && m.contains(&venv_python().display().to_string()), "{m}");
    assert!(m.contains("ModuleNotFoundError"), "{m}");
    let e = worker(true, "bad_factories:missing").err().unwrap();
    assert!(one_line(&e).contains("no attribute 'missing'"));
    // Returns the wrong things: what it returned, and what is expected.
    for (f, what) in [
        ("bad_factories:wrong_return", "returned a str"),
        ("bad_factories:not_a_module", "list as the model"),
    ] {
        let e = worker(true, f).err().unwrap();
        let m = one_line(&e);
        assert_eq!(e.kind(), "bad_contract", "{m}");
        assert!(m.contains(what) && m.contains("expected (model, data, loss)"), "{m}");
    }
    let e = worker(true, "bad_factories:raises").err().unwrap();
    assert!(one_line(&e).contains("not mounted"));
    // An output that doesn't fit the targets names both shapes.
    let (kind, m) = remote(worker(true, "bad_factories:lm_shapes").err().unwrap());
    assert_eq!(kind, ErrorKind::ShapeMismatch, "{m}");
    assert!(m.contains("[64, 10, 3]") && m.contains("[64]"), "{m}");
    // A NaN loss during Hessian work names the batch.
    let mut w = worker(true, "bad_factories:nan_loss").unwrap();
    w.hessian_open("all").unwrap();
    let v = w.new_vector(VectorInit::Gaussian { seed: 1 }).unwrap();
    let out = w.new_vector(VectorInit::Zeros).unwrap();
    let (kind, m) = remote(w.hvp(v, out).unwrap_err());
    assert_eq!(kind, ErrorKind::NonFinite);
    assert!(m.contains("batch 0"), "{m}");
    w.dots(v, &[v]).unwrap();
    // A Python without torch (the venv's without its site-packages): says so, with the path.
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("python-without-torch");
    std::fs::write(&fake, format!("#!/bin/sh\nexec {} -S \"$@\"\n", venv_python().display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = ModelContract { python: Some(fake), ..model_contract(true, "digits_factory:build", 1) };
    let e = Worker::start(&c.worker_options().unwrap()).err().unwrap();
    let m = one_line(&e);
    assert!(e.is_worker_failure() && m.contains("has no torch") && m.contains("python"), "{m}");
}

#[test]
fn the_slice_command_runs_the_python_backend() {
    let dir = &fixture().0;
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .env("LANDSCAPED_DATA_DIR", data.path())
        .env("LANDSCAPED_LOG", "warn")
        .env("PYTHONPATH", tests_python())
        .args(["--format", "json", "slice", "--checkpoint"])
        .arg(dir.join("ckpt_b.pt"))
        .args(["--backend", "python", "--python"])
        .arg(venv_python())
        .args(["--factory", "digits_factory:build", "--batch-size", "64", "--x=-0.5:0.5:3", "--threads", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let show = std::process::Command::new(BIN)
        .env("LANDSCAPED_DATA_DIR", data.path())
        .args(["--format", "json", "slices", "show", "1"])
        .output()
        .unwrap();
    assert!(show.status.success());
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let loss = v["loss"][0].as_array().unwrap();
    assert_eq!(loss.len(), 3, "{v}");
    let want = fixture().1["loss_b"].as_f64().unwrap();
    assert!(rel_close(loss[1].as_f64().unwrap(), want, 1e-5), "{v}");
    // A factory without the python backend is refused with the flag named.
    let out = std::process::Command::new(BIN)
        .env("LANDSCAPED_DATA_DIR", data.path())
        .args(["slice", "--checkpoint"])
        .arg(dir.join("ckpt_b.pt"))
        .args(["--backend", "torchscript", "--factory", "m:f"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--factory"));
}

#[test]
fn the_workers_codecs_and_contract_pass_their_python_tests() {
    // tests/python/worker_codecs_test.py: MessagePack and safetensors round trips and refusals, and
    // both codecs against the `msgpack` package and `safetensors.torch`, both directions;
    // tests/python/worker_factory_test.py: factory returns, data, losses, binding, without a process.
    let out = std::process::Command::new(venv_python())
        .args(["-m", "unittest", "-q"])
        .arg(script("worker_codecs_test.py"))
        .arg(script("worker_factory_test.py"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn reduced_precision_evaluates_under_autocast_and_hessian_work_stays_f32() {
    let (_, r) = fixture();
    let c =
        ModelContract { precision: Some("bf16".into()), ..model_contract(true, "digits_factory:build", 1) };
    c.validate().unwrap();
    let mut pc = c.protocol_contract(Some(1)).unwrap();
    assert_eq!(pc.precision.as_deref(), Some("bf16"));
    pc.checkpoint = Some(fixture().0.join("ckpt_b.safetensors"));
    let mut w = Worker::start(&c.worker_options().unwrap()).unwrap();
    let info = w.load_model(&pc).unwrap();
    assert!(info.source.contains("autocast bfloat16"), "{}", info.source);
    let b = w.load_state(ckpt("ckpt_b.safetensors"), &BindRules::default()).unwrap();
    w.set_state(b).unwrap();
    let want = r["loss_b"].as_f64().unwrap();
    let (bf16, _, _) = w.evaluate().unwrap();
    // The reference: PyTorch's own CPU autocast to bfloat16 on the same model, data and batches
    // (tests/python/autocast_reference.py). Same kernels: measured equal; 1e-6 is a few float32 ulps.
    let out = run_script("autocast_reference.py", &fixture().0, &[&c.batch_size.to_string()]);
    let autocast: serde_json::Value = serde_json::from_str(&out).unwrap();
    let reference = autocast["loss_bf16"].as_f64().unwrap();
    eprintln!(
        "bf16 loss {bf16} vs PyTorch autocast {reference}, f32 {want}: {:.2e} from f32",
        (bf16 - want).abs() / want
    );
    assert!(rel_close(bf16, reference, 1e-6), "bf16 loss {bf16} vs PyTorch autocast {reference}");
    // And it is really bf16: 8 significant bits move this loss by 1.0e-2 relative (was allowed 5e-2).
    assert!(bf16 != want && rel_close(bf16, want, 3e-2), "bf16 loss {bf16} vs f32 {want}");
    w.hessian_open("all").unwrap();
    let l = w.loss_at(None).unwrap();
    assert!(rel_close(l, want, 1e-6), "Hessian work in f32: {l} vs {want}");
    // The TorchScript backend refuses it rather than ignoring it.
    let ts = ModelContract { precision: Some("bf16".into()), ..model_contract(false, "", 1) };
    assert!(ts.validate().unwrap_err().to_string().starts_with("precision: bf16 needs"));
}

#[test]
fn both_backends_give_the_same_curvature() {
    let opts = SharpnessOptions {
        quantities: vec![Quantity::Eigs],
        lanczos: LanczosOptions { max_steps: 40, tol: 1e-6, top_k: 3, seed: 5 },
        ..Default::default()
    };
    let ck = fixture().0.join("ckpt_b.safetensors");
    let mut got = Vec::new();
    for python in [false, true] {
        let c = model_contract(python, "digits_factory:build", 1);
        let (rep, _) =
            sharpness_at(&c, &ck, &opts, "test", &landscaped::cancel::Cancel::new(), |_| {}).unwrap();
        got.push(rep.extremes.unwrap());
    }
    // The outside reference: eigvalsh of the full float64 Hessian (628 parameters, all 200 samples),
    // tests/python/digits_hessian_reference.py, which uses neither Lanczos nor a worker.
    let want: serde_json::Value =
        serde_json::from_str(&run_script("digits_hessian_reference.py", &fixture().0, &[])).unwrap();
    let (lmax, lmin) = (want["lambda_max"].as_f64().unwrap(), want["lambda_min"].as_f64().unwrap());
    for (backend, e) in [("torchscript", &got[0]), ("python", &got[1])] {
        eprintln!(
            "{backend}: λmax {} (rel err {:.1e}), λmin {} (rel err {:.1e}) vs eigvalsh {lmax} {lmin}",
            e.lambda_max,
            ((e.lambda_max - lmax) / lmax).abs(),
            e.lambda_min,
            ((e.lambda_min - lmin) / lmin).abs()
        );
        // float32 HVPs against a float64 Hessian (Lanczos stops at residual 1e-6): measured 1.3e-7 (λmax),
        // 2.2e-7 (λmin).
        assert!(rel_close(e.lambda_max, lmax, 1e-5), "{backend}: λmax {} vs eigvalsh {lmax}", e.lambda_max);
        assert!(rel_close(e.lambda_min, lmin, 1e-5), "{backend}: λmin {} vs eigvalsh {lmin}", e.lambda_min);
    }
    let (ts, py) = (&got[0], &got[1]);
    // The same float32 kernels in two runtimes (libtorch, eager PyTorch), the same Lanczos: measured 2.5e-16
    // and 2e-15 apart; a different kernel or order would differ at float32 level (~1e-7).
    assert!(rel_close(ts.lambda_max, py.lambda_max, 1e-12), "λmax {} vs {}", ts.lambda_max, py.lambda_max);
    assert!(rel_close(ts.lambda_min, py.lambda_min, 1e-12), "λmin {} vs {}", ts.lambda_min, py.lambda_min);
}

#[test]
fn info_asks_the_python_worker_in_a_given_python() {
    let out = std::process::Command::new(BIN)
        .args(["--format", "json", "info", "--python"])
        .arg(venv_python())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"python\"") && text.contains("PyTorch 2.13"), "{text}");
    // A Python that doesn't exist: the reason instead of the worker's answers.
    let out =
        std::process::Command::new(BIN).args(["info", "--python", "/nonexistent/python"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("unavailable: python /nonexistent/python"));
}
