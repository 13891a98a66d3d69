//! Trajectory PCA against scikit-learn on the same checkpoints (tests/python/pca_reference.py).
//! Checkpoints are written by PyTorch, read by landscaped's checkpoint reader into the trajectory archive
//! (the ingest path), PCA'd, and compared with sklearn PCA on the matrix Python builds from the same files:
//! explained-variance ratios within 1e-13 absolute, 1 − |cos| between matching components ≤ 1e-13 (also
//! after PyTorch loads our safetensors directions), coordinates within 1e-10 relative (see
//! docs/tolerances.md for what each achieves).

use landscaped::sink::TensorSink;
use landscaped::store::trajectory::PcaConfig;
use landscaped::trajectory::archive::{
    ArchiveConfig, ArchiveFile, ArchiveSink, Precision, list_run, write_checkpoint,
};
use landscaped::trajectory::pca::compute_pca;
use landscaped::trajectory::select::Selection;
use landscaped_formats::safetensors_file::load_float_tensors as load_directions_with_shapes;
use landscaped_formats::{Checkpoint, Dtype, TensorInfo, Values};
use serde_json::Value;
use std::path::Path;

mod support;
use support::*;

fn py(args: &[&str]) {
    run_script_args("pca_reference.py", args);
}

/// Ingests every checkpoint of `ckdir` into the archive of `run` through the TensorSink path.
fn ingest(ckdir: &Path, data: &Path, run: &str, cfg: &ArchiveConfig) {
    let mut sink = ArchiveSink::new(data, cfg).unwrap();
    for e in std::fs::read_dir(ckdir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let step: u64 = name.trim_start_matches("step_").trim_end_matches(".safetensors").parse().unwrap();
        let ck = Checkpoint::open(&p).unwrap();
        sink.begin(run, step, &ck).unwrap();
        let floats: Vec<(usize, TensorInfo)> = ck.float_tensors().map(|(i, t)| (i, t.clone())).collect();
        for (i, info) in floats {
            let v = ck.read(i).unwrap();
            sink.put_tensor(&info, &v).unwrap();
        }
        sink.finish().unwrap();
    }
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

struct Case {
    n: usize,
    seed: u32,
    dtype: &'static str,
    k: usize,
    center: Option<u64>,
    exclude_1d: bool,
    precision: Precision,
    /// Width of the hidden layer of pca_reference.py's wide head (0: the small net, d = 1,150).
    hidden: usize,
}

fn check(case: Case) {
    let tmp = tempfile::tempdir().unwrap();
    let ckdir = tmp.path().join("ck");
    let data = tmp.path().join("data");
    let (n, seed, hidden) = (case.n.to_string(), case.seed.to_string(), case.hidden.to_string());
    py(&["make", ckdir.to_str().unwrap(), &n, &seed, case.dtype, &hidden]);
    let acfg = ArchiveConfig { precision: case.precision, ..Default::default() };
    ingest(&ckdir, &data, "run", &acfg);
    let cfg = PcaConfig {
        components: case.k,
        center_step: case.center,
        selection: Selection { exclude_1d: case.exclude_1d, ..Default::default() },
    };
    let rec = compute_pca(&data, "run", &cfg).unwrap();
    let pcdir = Path::new(&rec.direction_files[0]).parent().unwrap().to_path_buf();
    let out = tmp.path().join("ref.json");
    if case.precision == Precision::Native {
        // Each tensor archived in the checkpoint's own type (bf16 stays bf16): sklearn sees the same
        // values widened, exactly.
        for e in list_run(&data, "run").unwrap() {
            let f = ArchiveFile::open(&e.path).unwrap();
            assert_eq!(f.stored_types(), case.dtype, "step {}", e.step);
            let params: usize = f.tensors.iter().map(|t| t.numel()).sum();
            let elem = if case.dtype == "bf16" { 2 } else { 4 };
            assert!(
                e.bytes >= (elem * params) as u64 && e.bytes < (elem * params) as u64 + 4096,
                "{}",
                e.bytes
            );
        }
    }
    let prec = match case.precision {
        Precision::Native | Precision::F32 => "f32",
        Precision::Bf16 => "bf16",
    };
    let center = case.center.map(|c| c as i64).unwrap_or(-1).to_string();
    let ex = if case.exclude_1d { "1" } else { "0" };
    py(&[
        "reference",
        ckdir.to_str().unwrap(),
        out.to_str().unwrap(),
        &case.k.to_string(),
        &center,
        ex,
        prec,
        pcdir.to_str().unwrap(),
    ]);
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let steps: Vec<u64> = r["steps"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    assert_eq!(rec.steps, steps);
    assert_eq!(rec.center_step, r["center_step"].as_u64().unwrap());
    let names: Vec<String> =
        r["names"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().into()).collect();
    assert_eq!(rec.n_tensors, names.len());
    if case.exclude_1d {
        assert!(r["shapes"].as_array().unwrap().iter().all(|s| s.as_array().unwrap().len() > 1));
    }

    // Explained variance and ratios.
    let ratio = f64s(&r["explained_variance_ratio"]);
    let var = f64s(&r["explained_variance"]);
    let sv = f64s(&r["singular_values"]);
    let mut worst = [0.0f64; 7]; // observed: ratio, variance, sv, 1−|cos| torch, 1−|cos|, |‖v‖−1|, coords
    for j in 0..case.k {
        worst[0] = worst[0].max((rec.explained_variance_ratio[j] - ratio[j]).abs());
        worst[1] = worst[1].max((rec.explained_variance[j] - var[j]).abs() / var[j]);
        worst[2] = worst[2].max((rec.singular_values[j] - sv[j]).abs() / sv[j]);
        // Both in float64 from the same float32/bf16 values (our Gram + Jacobi, sklearn's LAPACK SVD):
        // measured ≤ 1.6e-15 (ratio, absolute), 7.5e-15 (variance), 3.7e-15 (singular value).
        assert!((rec.explained_variance_ratio[j] - ratio[j]).abs() < 1e-13, "ratio {j}");
        assert!((rec.explained_variance[j] - var[j]).abs() <= 5e-13 * var[j], "variance {j}");
        assert!((rec.singular_values[j] - sv[j]).abs() <= 2e-13 * sv[j], "singular value {j}");
    }
    assert!(ratio[0] > 0.3, "the trajectory should have a dominant direction: {ratio:?}");

    // Directions: PyTorch loaded ours and compared (torch_cosines); compare here too, by tensor name.
    let comps: Vec<Vec<f64>> = r["components"].as_array().unwrap().iter().map(f64s).collect();
    let shapes: Vec<Vec<usize>> = r["shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect())
        .collect();
    let mut offsets = std::collections::HashMap::new();
    let mut off = 0;
    for (n, s) in names.iter().zip(&shapes) {
        offsets.insert(n.clone(), (off, s.clone()));
        off += s.iter().product::<usize>();
    }
    if case.hidden > 0 {
        let chunk = landscaped::trajectory::gram::CHUNK;
        assert!(
            off >= 100_000 && shapes.iter().any(|s| s.iter().product::<usize>() > 3 * chunk),
            "d = {off}"
        );
    }
    let mut signs = Vec::new();
    for j in 0..case.k {
        let tc = r["torch_cosines"][j].as_f64().unwrap();
        worst[3] = worst[3].max(1.0 - tc.abs());
        // Directions are stored as float32: rounding each value by ≤ 6e-8 turns the angle by as much,
        // 1 − |cos| ≈ θ²/2 ~ 1e-15 (measured ≤ 6.7e-16 by PyTorch, 1.3e-15 here); was 1e-5.
        assert!(1.0 - tc.abs() <= 1e-13, "torch cos of component {j}: {tc}");
        let dirs = load_directions_with_shapes(Path::new(&rec.direction_files[j])).unwrap();
        assert_eq!(dirs.len(), names.len());
        let mut ours = vec![0.0f64; off];
        for (n, s, v) in dirs {
            let (o, shape) = offsets.get(&n).unwrap_or_else(|| panic!("unexpected tensor {n}"));
            assert_eq!(&s, shape, "{n}");
            for (i, x) in v.iter().enumerate() {
                ours[o + i] = *x as f64;
            }
        }
        let dotp: f64 = ours.iter().zip(&comps[j]).map(|(a, b)| a * b).sum();
        let na: f64 = ours.iter().map(|a| a * a).sum::<f64>().sqrt();
        let nb: f64 = comps[j].iter().map(|a| a * a).sum::<f64>().sqrt();
        let cos = dotp / (na * nb);
        worst[4] = worst[4].max(1.0 - cos.abs());
        worst[5] = worst[5].max((na - 1.0).abs());
        assert!(1.0 - cos.abs() <= 1e-13, "cos of component {j}: {cos}");
        // The float32 rounding of a unit vector's values: measured ≤ 2.4e-9.
        assert!((na - 1.0).abs() < 1e-7, "direction {j} is not unit: {na}");
        // Same sign convention as sklearn's svd_flip.
        assert!(cos > 0.0, "component {j} has the opposite sign to sklearn's");
        signs.push(cos.signum());
    }
    for a in 0..case.k {
        for b in 0..case.k {
            let want = if a == b { 1.0 } else { 0.0 };
            assert!((rec.cosines[a][b] - want).abs() < 1e-6, "cosine {a},{b}: {}", rec.cosines[a][b]);
        }
    }

    // Coordinates and residuals.
    let coords: Vec<Vec<f64>> = r["coords"].as_array().unwrap().iter().map(f64s).collect();
    let resid = f64s(&r["residuals"]);
    for j in 0..case.k {
        let scale = coords.iter().map(|c| c[j].abs()).fold(0.0, f64::max);
        for (i, c) in coords.iter().enumerate() {
            let (got, want) = (rec.coords[i][j] * signs[j], c[j]);
            worst[6] = worst[6].max((got - want).abs() / want.abs().max(1e-3 * scale));
            assert!(
                // float64 projections on both sides: measured ≤ 3.0e-12 (was 1e-5).
                (got - want).abs() <= 1e-10 * want.abs().max(1e-3 * scale),
                "coord step {} pc{}: {got} vs {want}",
                steps[i],
                j + 1
            );
        }
    }
    let rscale = resid.iter().cloned().fold(0.0, f64::max);
    let rworst = resid
        .iter()
        .enumerate()
        .map(|(i, w)| (rec.residuals[i] - w).abs() / w.max(1e-3 * rscale))
        .fold(0.0, f64::max);
    let seen: Vec<String> = worst.iter().chain([&rworst]).map(|v| format!("{v:.1e}")).collect();
    eprintln!("observed (ratio, var, sv, 1-|cos| torch, 1-|cos|, |norm-1|, coords, residuals): {seen:?}");
    for (i, w) in resid.iter().enumerate() {
        // measured ≤ 9.9e-13 (was 1e-5).
        assert!((rec.residuals[i] - w).abs() <= 5e-11 * w.max(1e-3 * rscale), "residual step {}", steps[i]);
    }
    let ci = steps.iter().position(|&s| s == rec.center_step).unwrap();
    assert!(rec.coords[ci].iter().all(|c| c.abs() < 1e-12) && rec.residuals[ci] < 1e-12);
}

#[test]
fn agrees_with_sklearn_f32_default() {
    check(Case {
        n: 12,
        seed: 1,
        dtype: "f32",
        k: 2,
        center: None,
        exclude_1d: false,
        precision: Precision::F32,
        hidden: 0,
    });
}

/// bf16 checkpoints archived at the default precision (native: stored as bf16, half the bytes of f32).
#[test]
fn agrees_with_sklearn_bf16_checkpoints_excluding_1d_centre_step() {
    check(Case {
        n: 10,
        seed: 2,
        dtype: "bf16",
        k: 3,
        center: Some(500),
        exclude_1d: true,
        precision: Precision::Native,
        hidden: 0,
    });
}

#[test]
fn agrees_with_sklearn_bf16_archive() {
    check(Case {
        n: 8,
        seed: 3,
        dtype: "f32",
        k: 2,
        center: None,
        exclude_1d: false,
        precision: Precision::Bf16,
        hidden: 0,
    });
}

/// d = 112,540 parameters, beyond one 32 Ki-element chunk of the Gram pass (gram::CHUNK): the 100,800-
/// element weight is accumulated over four chunks, and rows of many tensors over many chunks; same
/// tolerances as the small net (the Gram matrix is summed in f64, so its rounding grows ∝ √chunks at most).
#[test]
fn agrees_with_sklearn_beyond_one_gram_chunk() {
    let case = Case {
        n: 10,
        seed: 4,
        dtype: "f32",
        k: 3,
        center: None,
        exclude_1d: false,
        precision: Precision::F32,
        hidden: 1050,
    };
    check(case);
}

fn tensor(name: &str, shape: &[usize], seed: u64) -> (TensorInfo, Values) {
    let n: usize = shape.iter().product();
    let vals = (0..n).map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 1000.0).collect();
    (TensorInfo { name: name.into(), dtype: Dtype::F32, shape: shape.to_vec() }, Values::F32(vals))
}

#[test]
fn too_few_checkpoints_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let cfg = ArchiveConfig::default();
    for s in 0..2 {
        write_checkpoint(d.path(), "r", s, &cfg, &[tensor("w", &[3, 4], s)]).unwrap();
    }
    let e = compute_pca(d.path(), "r", &PcaConfig { components: 2, ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 archived checkpoint") && e.contains("at least 3"), "{e}");
    let e = compute_pca(d.path(), "nope", &PcaConfig::default()).unwrap_err().to_string();
    assert!(e.contains("no archived checkpoints"), "{e}");
    write_checkpoint(d.path(), "r", 2, &cfg, &[tensor("w", &[3, 4], 2)]).unwrap();
    let e = compute_pca(d.path(), "r", &PcaConfig { center_step: Some(7), ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("centre step 7 is not archived"), "{e}");
    assert!(compute_pca(d.path(), "r", &PcaConfig::default()).is_ok());
}

#[test]
fn changed_architecture_names_step_and_tensor() {
    let d = tempfile::tempdir().unwrap();
    let cfg = ArchiveConfig::default();
    for s in 0..3 {
        write_checkpoint(d.path(), "r", s, &cfg, &[tensor("w", &[3, 4], s), tensor("b", &[3], s)]).unwrap();
    }
    write_checkpoint(d.path(), "r", 3, &cfg, &[tensor("w", &[4, 4], 3), tensor("b", &[3], 3)]).unwrap();
    let e = compute_pca(d.path(), "r", &PcaConfig::default()).unwrap_err().to_string();
    assert!(e.contains("tensor w") && e.contains("step 3") && e.contains("[4, 4]"), "{e}");

    write_checkpoint(d.path(), "r", 3, &cfg, &[tensor("w", &[3, 4], 3)]).unwrap();
    let e = compute_pca(d.path(), "r", &PcaConfig::default()).unwrap_err().to_string();
    assert!(e.contains("step 3 has no tensor b"), "{e}");
    // ... which excluding 1-D tensors makes fine.
    let sel = Selection { exclude_1d: true, ..Default::default() };
    assert!(compute_pca(d.path(), "r", &PcaConfig { selection: sel, ..Default::default() }).is_ok());

    write_checkpoint(
        d.path(),
        "r",
        3,
        &cfg,
        &[tensor("w", &[3, 4], 3), tensor("b", &[3], 3), tensor("x", &[2, 2], 3)],
    )
    .unwrap();
    let e = compute_pca(d.path(), "r", &PcaConfig::default()).unwrap_err().to_string();
    assert!(e.contains("step 3 has tensor x"), "{e}");
}

#[test]
fn flat_trajectory_is_an_error_not_nan() {
    let d = tempfile::tempdir().unwrap();
    for s in 0..4 {
        write_checkpoint(d.path(), "r", s, &ArchiveConfig::default(), &[tensor("w", &[3, 4], 0)]).unwrap();
    }
    let e = compute_pca(d.path(), "r", &PcaConfig::default()).unwrap_err().to_string();
    assert!(e.contains("does not move"), "{e}");
}
