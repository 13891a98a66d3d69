//! Slices against a PyTorch re-implementation of the paper's reference code
//! (tests/python/slice_reference.py, same seed): the same directions element for element (1e-6
//! relative, f32 rounding of the norms), the same non-square grid of losses within 1e-5 relative, the
//! same accuracies, interpolation reproducing each checkpoint's own loss at 0 and 1, and the centre of
//! the slice equal to the checkpoint's loss.

use landscaped::checkpoint::Checkpoint;
use landscaped::landscape::build::{parameter_list, random_directions};
use landscaped::landscape::compute::{Control, evaluate_centre, evaluate_slice};
use landscaped::landscape::directions::{
    Ignore, Normalization, RandomDirections, cosine, interpolation_direction,
};
use landscaped::landscape::slice::{Outcome, SliceValues};
use landscaped::model::{BindOptions, Model, ModelSpec, Replicas, ThreadPlan, checkpoint_state};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn fixture(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/python/slice_reference.py"))
        .arg(dir)
        .args(extra)
        .status()
        .unwrap()
        .success();
    assert!(ok, "slice_reference.py failed");
    serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap()
}

fn load(dir: &Path) -> Model {
    let mut s = ModelSpec::new(&dir.join("model/model.pt"), &dir.join("model/eval.safetensors"));
    s.batch_size = 64;
    Model::load(&s).unwrap()
}

fn rel_close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

/// Fills `v`, on the calling thread (`workers` = 1) or on `workers` copies of the model in parallel.
fn run_grid(
    model: &mut Model,
    workers: usize,
    centre: &Vec<Vec<f32>>,
    (dx, dy): (&Vec<Vec<f32>>, Option<&Vec<Vec<f32>>>),
    v: &mut SliceValues,
) {
    let cancel = AtomicBool::new(false);
    let mut replicas = if workers > 1 {
        Replicas::new(model, ThreadPlan { replicas: workers, intra_op: 1 }).unwrap()
    } else {
        Replicas::none()
    };
    assert_eq!(replicas.workers(), workers);
    let out = evaluate_slice(
        model,
        &mut replicas,
        centre,
        dx,
        dy,
        v,
        Control { cancel: &cancel, persist_every: 4, persist: &mut |_| Ok(()), progress: &mut |_| {} },
    )
    .unwrap();
    assert_eq!(out, Outcome::Complete);
}

fn check_directions_and_grid(norm: Normalization, ignore: Ignore, args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    let r = fixture(&dir, args);
    let mut model = load(&dir);
    let ck = Checkpoint::open(&dir.join("ckpt_b.safetensors")).unwrap();
    let centre = checkpoint_state(&model, &ck, &BindOptions::default()).unwrap();
    let spec =
        RandomDirections { seed: 7, norm, ignore, params: parameter_list(&model), orthogonalize: false };
    let (dx, dy) = random_directions(&model, &centre, &spec, true).unwrap();
    let dy = dy.unwrap();

    // Directions, element for element.
    let refdirs = Checkpoint::open(&dir.join("dirs.safetensors")).unwrap();
    let mut compared = 0;
    for (i, (name, _)) in spec.params.iter().enumerate() {
        for (axis, d) in [("x", &dx), ("y", &dy)] {
            let want = refdirs.read_f32(refdirs.index_of(&format!("{axis}.{name}")).unwrap()).unwrap();
            assert_eq!(want.len(), d[i].len());
            for (k, (&a, &b)) in d[i].iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-6), "{axis}.{name}[{k}]: {a} vs {b}");
                compared += 1;
            }
        }
    }
    assert!(compared > 1000);
    // Buffers never get a random direction.
    assert!(dx[spec.params.len()..].iter().flatten().all(|&v| v == 0.0));
    assert!((cosine(&dx, &dy) - r["cosine"].as_f64().unwrap()).abs() < 1e-6);

    // The non-square grid x = -0.5:0.5:3, y = 0:1:2, Z[iy][ix].
    let g = &r["grid"];
    let xs: Vec<f64> = g["xs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let ys: Vec<f64> = g["ys"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(xs, "-0.5:0.5:3".parse::<landscaped::landscape::grid::Axis>().unwrap().values());
    // Point by point, and on three copies of the model in parallel: both give the reference grid.
    let mut v = SliceValues::new(xs.clone(), ys.clone());
    run_grid(&mut model, 1, &centre, (&dx, Some(&dy)), &mut v);
    let mut vp = SliceValues::new(xs, ys);
    run_grid(&mut model, 3, &centre, (&dx, Some(&dy)), &mut vp);
    for (what, v) in [("sequential", &v), ("3 replicas", &vp)] {
        for iy in 0..2 {
            for ix in 0..3 {
                let want = g["loss"][iy][ix].as_f64().unwrap();
                let got = v.loss_at(iy, ix);
                assert!(rel_close(got, want, 1e-5), "{what}: loss[{iy}][{ix}] {got} vs {want}");
                let wa = g["acc"][iy][ix].as_f64().unwrap();
                assert!((v.accuracy[iy * 3 + ix] - wa).abs() < 1e-9, "{what}: acc[{iy}][{ix}]");
            }
        }
    }
    // The centre of the slice is the checkpoint's own loss.
    let c = v.centre().unwrap();
    assert!(rel_close(v.loss[c], r["loss_b"].as_f64().unwrap(), 1e-5));
    let e = evaluate_centre(&mut model, &centre).unwrap();
    assert!(rel_close(e.loss, v.loss[c], 1e-9));
}

#[test]
fn filter_normalized_biasbn_matches_reference_code() {
    check_directions_and_grid(Normalization::Filter, Ignore::Biasbn, &[]);
}

#[test]
fn layer_normalized_without_ignore_matches_reference_code() {
    check_directions_and_grid(Normalization::Layer, Ignore::None, &["--norm", "layer", "--ignore", "none"]);
}

#[test]
fn interpolation_moves_running_stats_and_reproduces_both_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let r = fixture(dir, &[]);
    let mut model = load(dir);
    let a = checkpoint_state(
        &model,
        &Checkpoint::open(&dir.join("ckpt_a.safetensors")).unwrap(),
        &BindOptions::default(),
    )
    .unwrap();
    let b = checkpoint_state(
        &model,
        &Checkpoint::open(&dir.join("ckpt_b.safetensors")).unwrap(),
        &BindOptions::default(),
    )
    .unwrap();
    let d = interpolation_direction(&a, &b);
    // Running statistics are part of the direction.
    let nparams = parameter_list(&model).len();
    assert!(d[nparams..].iter().flatten().any(|&x| x != 0.0));
    let alphas: Vec<f64> =
        r["interpolation"]["alphas"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    // Replicas must move their own running statistics too: run it both ways.
    for workers in [1, 2] {
        let mut v = SliceValues::new(alphas.clone(), vec![]);
        run_grid(&mut model, workers, &a, (&d, None), &mut v);
        for (i, al) in alphas.iter().enumerate() {
            let want = r["interpolation"]["loss"][i].as_f64().unwrap();
            assert!(
                rel_close(v.loss[i], want, 1e-5),
                "{workers} worker(s), alpha {al}: {} vs {want}",
                v.loss[i]
            );
        }
        assert!(rel_close(v.loss[1], r["loss_a"].as_f64().unwrap(), 1e-5), "alpha 0 is checkpoint a");
        assert!(rel_close(v.loss[3], r["loss_b"].as_f64().unwrap(), 1e-5), "alpha 1 is checkpoint b");
    }
}
