//! Real training stacks through the Python worker: a LightningModule trained by `lightning.Trainer`
//! (its `.ckpt` read by the caller's readers, keys `model.*` bound to the module's `model.*`, the data a
//! DataLoader) sliced about its checkpoint, the centre equal to the module's own loss; and a
//! `torch.compile`d module (names `_orig_mod.*`): evaluated compiled, differentiated through the original
//! module, with the plain module's values.

use landscaped::landscape::runner::PlaneSpec;
use landscaped::landscape::slice::Outcome;
use landscaped::workers::Worker;
use landscaped_maths::directions::{Ignore, Normalization, RandomDirections};
use landscaped_protocol::messages::{BindRules, StateSource, VectorInit};
use std::path::PathBuf;
use std::sync::OnceLock;

mod support;
use support::*;

fn rel_close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
}

/// The digits fixture (slice_reference.py) and its reference values.
fn fixture() -> &'static (PathBuf, serde_json::Value) {
    static F: OnceLock<(PathBuf, serde_json::Value)> = OnceLock::new();
    F.get_or_init(|| {
        // SAFETY: set before any process is spawned; every test comes here first.
        unsafe { std::env::set_var("PYTHONPATH", tests_python()) };
        slice_fixture().clone()
    })
}

fn started(factory: &str) -> Worker {
    let c = python_contract(factory, 1);
    let mut pc = c.protocol_contract(Some(1)).unwrap();
    pc.checkpoint = Some(fixture().0.join("ckpt_b.safetensors"));
    let mut w = Worker::start(&c.worker_options().unwrap()).unwrap();
    w.load_model(&pc).unwrap();
    w
}

#[test]
fn a_lightning_module_is_sliced_about_its_trainer_checkpoint() {
    let (dir, _) = fixture();
    let ckpt = dir.join("lit.ckpt");
    let mut cmd = std::process::Command::new(venv_python());
    let out = cmd
        .env("PYTHONPATH", worker_python_path())
        .arg(script("lightning_make.py"))
        .arg(dir)
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = String::from_utf8(out.stdout).unwrap();
    let r: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    let own = r["own_loss"].as_f64().unwrap();

    let c = python_contract("lightning_factory:build", 1);
    let dirs = RandomDirections {
        seed: 2,
        norm: Normalization::Filter,
        ignore: Ignore::Biasbn,
        params: vec![],
        orthogonalize: false,
    };
    let plane = PlaneSpec::Random { centre: ckpt, dirs, two_d: false };
    let run = slice_in_fresh_store(&c, plane, vec![-0.25, 0.0, 0.25], vec![], "lightning");
    assert_eq!(run.outcome, Outcome::Complete);
    let l = &run.record.values.loss;
    assert!(rel_close(l[1], own, 1e-6), "centre {} vs the module's own loss {own}", l[1]);
    assert!(l.iter().all(|x| x.is_finite()) && l[0] != l[1]);
    assert_eq!(run.record.model.samples, 200);
}

#[test]
fn a_compiled_module_gives_the_plain_modules_values() {
    let (_, r) = fixture();
    let mut values = Vec::new();
    for factory in ["lightning_factory:build_compiled", "digits_factory:build"] {
        let mut w = started(factory);
        let info = w.model.clone().unwrap();
        assert!(info.slots.iter().all(|s| !s.name.contains("_orig_mod")), "{:?}", info.slots);
        let b = w
            .load_state(
                StateSource::Checkpoint { path: fixture().0.join("ckpt_b.safetensors") },
                &BindRules::default(),
            )
            .unwrap();
        w.set_state(b).unwrap();
        let (loss, _, _) = w.evaluate().unwrap();
        // The reference's own eager float32 evaluation in the same batches: measured equal (was 1e-6).
        assert!(rel_close(loss, r["loss_b"].as_f64().unwrap(), 1e-12), "{factory}: {loss}");
        let (dirs, _) = w.random_directions(b, 3, "filter", "biasbn", 2, false).unwrap();
        w.set_plane(b, dirs[0], Some(dirs[1])).unwrap();
        let (p, _) = w.evaluate_point(0.3, -0.2).unwrap();
        w.set_state(b).unwrap();
        w.hessian_open("all").unwrap();
        let v = w.new_vector(VectorInit::Gaussian { seed: 4 }).unwrap();
        let hv = w.new_vector(VectorInit::Zeros).unwrap();
        w.hvp(v, hv).unwrap();
        values.push((loss, p, w.read_vector(hv).unwrap()));
        let _ = w.shutdown();
    }
    let (a, b) = (&values[0].2, &values[1].2);
    let err = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|x| x.abs()).fold(0.0, f64::max);
    eprintln!(
        "compiled vs plain: loss {:.1e}, point {:.1e}, HVP {:.1e}; loss vs reference {:.1e}",
        (values[0].0 - values[1].0).abs() / values[1].0,
        (values[0].1 - values[1].1).abs() / values[1].1,
        err / scale,
        (values[0].0 - r["loss_b"].as_f64().unwrap()).abs() / values[0].0
    );
    // The compiled module's original runs the plain module's float32 ops: measured bit for bit (was 1e-6).
    assert!(rel_close(values[0].0, values[1].0, 1e-12) && rel_close(values[0].1, values[1].1, 1e-12));
    assert!(err <= 1e-12 * scale, "HVP through the compiled module's original: {err} vs {scale}");
}
