//! Hessian-vector products and Hessian extremes of a tiny TorchScript model against PyTorch in float64
//! (tests/python/sharpness_reference.py: torch.autograd.functional.hessian + eigvalsh, and
//! torch.autograd.functional.hvp). Tolerances: λmax, λmin and the trace within 1e-4 relative (the trace
//! is the exact one, Σ e_iᵀHe_i over the d basis vectors, i.e. d HVPs); single HVPs, the loss and the
//! gradient within 1e-5 relative (the model runs in float32); repeated HVPs bit-identical.

use landscaped_maths::curvature::lanczos::{LanczosOptions, extremes};
use landscaped_maths::curvature::measures::Objective;
use landscaped_maths::curvature::memory::MemorySpace;
use landscaped_maths::curvature::operator::LinearOperator;
use landscaped_maths::curvature::trace::{exact_trace, hutchinson};
use landscaped_worker::model::hvp::{ModelHessian, ParamSubset};
use landscaped_worker::model::{Model, ModelSpec};
use std::path::Path;

// The workspace's test support (tests/support): its paths (root, the venv's Python) and fixture makers;
// the rest of it needs the app's binaries and crates. `fixtures` finds `paths` as `super::paths`.
#[path = "../../../tests/support/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/support/paths.rs"]
mod paths;
use fixtures::*;

/// Runs the Python reference once per test binary (the tests share it).
fn reference() -> &'static (tempfile::TempDir, serde_json::Value) {
    static REF: std::sync::OnceLock<(tempfile::TempDir, serde_json::Value)> = std::sync::OnceLock::new();
    REF.get_or_init(|| python_made("sharpness_reference.py", "reference.json"))
}

fn load(dir: &Path, model: &str, eval: &str) -> anyhow::Result<Model> {
    let mut spec = ModelSpec::new(&dir.join(model), &dir.join(eval));
    spec.batch_size = 16; // 16+16+16+2: the last batch must get weight 2/50
    Model::load(&spec)
}

fn vec_of(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn hessian_matches_pytorch() {
    let (dir, r) = reference();
    let mut model = load(dir.path(), "model.pt", "eval.safetensors").unwrap();
    let loss0 = model.evaluate().unwrap().loss;
    for (key, subset) in [("all", ParamSubset::All), ("matrices", ParamSubset::Matrices)] {
        let want = &r[key];
        let mut h = ModelHessian::new(&mut model, subset).unwrap();
        let names: Vec<String> = h.layout().iter().map(|s| s.name.clone()).collect();
        let want_names: Vec<String> =
            want["names"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
        assert_eq!(names, want_names);
        let d = want["dim"].as_u64().unwrap() as usize;
        assert_eq!(LinearOperator::dim(&h), d);

        // Single HVP against torch.autograd.functional.hvp; repeated HVPs bit-identical.
        let v = vec_of(&want["v"]);
        let mut hv = vec![0.0; d];
        h.apply(&v, &mut hv).unwrap();
        let e = rel_err(&hv, &vec_of(&want["hv"]));
        assert!(e < 1e-5, "{key}: HVP relative error {e}");
        let mut other = vec![0.0; d];
        h.apply(&vec![1.0; d], &mut other).unwrap();
        for _ in 0..3 {
            let mut again = vec![0.0; d];
            h.apply(&v, &mut again).unwrap();
            assert_eq!(again, hv, "{key}: repeated HVP changed");
        }

        // Loss and gradient.
        let mut g = vec![0.0; d];
        let theta = h.center().to_vec();
        let l = h.loss_grad(&theta, &mut g).unwrap();
        assert!(rel(l, want["loss"].as_f64().unwrap()) < 1e-5, "{key}: loss {l}");
        let e = rel_err(&g, &vec_of(&want["grad"]));
        assert!(e < 1e-5, "{key}: gradient relative error {e}");

        // Extremes by Lanczos.
        let mut h = MemorySpace::new(h);
        let opts = LanczosOptions { max_steps: 200, tol: 1e-7, top_k: 3, seed: 5 };
        let x = extremes(&mut h, &opts).unwrap();
        assert!(x.converged);
        assert_eq!(x.hvps, x.steps);
        let (lmax, lmin) = (want["lambda_max"].as_f64().unwrap(), want["lambda_min"].as_f64().unwrap());
        assert!(rel(x.lambda_max, lmax) < 1e-4, "{key}: λmax {} vs {lmax}", x.lambda_max);
        assert!(rel(x.lambda_min, lmin) < 1e-4, "{key}: λmin {} vs {lmin}", x.lambda_min);
        for (a, b) in x.top_k.iter().zip(vec_of(&want["top3"])) {
            assert!(rel(*a, b) < 1e-4, "{key}: top-3 {a} vs {b}");
        }

        // Trace: exact (d HVPs) within 1e-4; Hutchinson within 4 standard errors.
        let t = exact_trace(&mut h).unwrap();
        let tw = want["trace"].as_f64().unwrap();
        assert!(rel(t, tw) < 1e-4, "{key}: trace {t} vs {tw}");
        let hu = hutchinson(&mut h, 100, 10, 0.0, 9).unwrap();
        assert!(
            (hu.trace - tw).abs() < 4.0 * hu.std_error,
            "{key}: Hutchinson {} ± {} vs {tw}",
            hu.trace,
            hu.std_error
        );

        // Moving the parameters (loss at a perturbed point) and dropping restores them.
        let mut h = h.into_inner();
        let moved: Vec<f64> = theta.iter().map(|x| x + 0.1).collect();
        let lm = h.loss(&moved).unwrap();
        assert!((lm - l).abs() > 1e-6);
        drop(h);
        assert_eq!(model.evaluate().unwrap().loss, loss0);
    }
}

#[test]
fn unreachable_parameters_and_nan_loss_are_errors() {
    let (dir, _) = reference();
    let mut m = load(dir.path(), "noparam.pt", "eval.safetensors").unwrap();
    let mut h = ModelHessian::new(&mut m, ParamSubset::All).unwrap();
    let d = LinearOperator::dim(&h);
    let e = h.apply(&vec![1.0; d], &mut vec![0.0; d]).unwrap_err().to_string();
    assert!(e.contains("reachable"), "{e}");

    let mut m = load(dir.path(), "model.pt", "eval_nan.safetensors").unwrap();
    let mut h = MemorySpace::new(ModelHessian::new(&mut m, ParamSubset::All).unwrap());
    let e = format!("{:#}", extremes(&mut h, &LanczosOptions::default()).unwrap_err());
    assert!(e.contains("Lanczos step 1") && (e.contains("NaN") || e.contains("non-finite")), "{e}");
}
