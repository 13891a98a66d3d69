//! Layer spectra against the real references (tests/python/spectra_reference.py): on a small CNN, the
//! digits CNN, torchvision's ResNet-18, the tiny GPT-2 with tied weights (float32 torch.save and bfloat16
//! safetensors) and a Hugging Face Trainer checkpoint folder (tests/python/gpt2_make.py):
//! - the layers selected are WeightWatcher's (`describe()`), less the tied `lm_head.weight` a file that
//!   stores it once does not hold;
//! - the eigenvalues equal `torch.linalg.svdvals(W.double())**2` (Conv2d: kernel slices pooled, times
//!   WeightWatcher's conv2d_norm 1/2) to 1e-12 relative at the top and 1e-10 on the bulk;
//! - every metric equals WeightWatcher 0.7.7's `analyze()` (its defaults): α, xmin, D, σ, α_weighted,
//!   log_norm, log_spectral_norm, stable_rank, log_alpha_norm, entropy, sv_max, sv_min, λmax to 1e-10
//!   relative; N, M, rf, num_evals, num_pl_spikes, matrix_rank, rank_loss, weak_rank_loss equal.

use landscaped::spectra::{Options, checkpoint_spectra_with};
use landscaped_formats::Checkpoint;
use landscaped_maths::spectra::metrics::LayerSpectrum;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

mod support;
use support::*;

/// Both sides are f64 SVDs of the same values (faer vs LAPACK gesdd): the largest eigenvalues agree to a
/// few ulps (8.9e-15 seen); small ones to ε·σmax·σ absolutely, hence relative to their own size on the
/// bulk (5.1e-13 seen, ResNet-18's 512×512 slices). The issue asks 1e-9 and 1e-6; these are ~100× the
/// observed, and still fail any float32 step (≈ 1e-7).
const TOP: f64 = 1e-12;
const BULK: f64 = 1e-10;
/// The fit is deterministic: α, D, xmin differ only by summation order in the log sums (3.2e-13 seen;
/// the issue asks 1e-6).
const METRIC: f64 = 1e-10;

static WORST: std::sync::Mutex<BTreeMap<&'static str, (f64, String)>> =
    std::sync::Mutex::new(BTreeMap::new());

fn note(kind: &'static str, err: f64, what: String) {
    let mut w = WORST.lock().unwrap();
    let e = w.entry(kind).or_insert((0.0, String::new()));
    if err > e.0 {
        *e = (err, what);
    }
}

fn rel(got: f64, want: f64) -> f64 {
    if got == want { 0.0 } else { (got - want).abs() / want.abs().max(1e-300) }
}

fn check_evals(ctx: &str, ours: &[f64], torch: &[f64]) {
    assert_eq!(ours.len(), torch.len(), "{ctx}: eigenvalue count");
    let top = *torch.last().unwrap();
    for (k, (g, w)) in ours.iter().zip(torch).enumerate() {
        let is_top = k + 1 == torch.len();
        // Bulk: relative to the eigenvalue itself, with a floor at 1e-12 λmax (f64 SVDs resolve
        // eigenvalues only to about ε·λmax absolutely; rank-deficient directions are ~0 on both sides).
        let err = (g - w).abs() / w.abs().max(1e-12 * top);
        let (kind, tol) = if is_top { ("eigenvalue top", TOP) } else { ("eigenvalue bulk", BULK) };
        note(kind, err, format!("{ctx}[{k}]"));
        assert!(err <= tol, "{ctx}: eigenvalue {k}: ours {g:e}, torch {w:e} (rel {err:e})");
    }
}

fn check_layer(ctx: &str, ours: &LayerSpectrum, ww: &Value) {
    let f = |k: &str| ww[k].as_f64().unwrap_or_else(|| panic!("{ctx}: WeightWatcher has no {k}"));
    let ints = [
        ("N", ours.plan.n as f64),
        ("M", ours.plan.m as f64),
        ("rf", ours.plan.rf as f64),
        ("num_evals", ours.num_evals as f64),
        ("num_pl_spikes", ours.fit.num_pl_spikes as f64),
        ("matrix_rank", ours.metrics.matrix_rank as f64),
        ("rank_loss", ours.rank_loss as f64),
        ("weak_rank_loss", ours.weak_rank_loss as f64),
    ];
    for (k, v) in ints {
        assert_eq!(v, f(k), "{ctx}: {k}");
    }
    let reals = [
        ("alpha", ours.fit.alpha),
        ("xmin", ours.fit.xmin),
        ("D", ours.fit.d),
        ("sigma", ours.fit.sigma),
        ("alpha_weighted", ours.metrics.alpha_weighted),
        ("log_norm", ours.metrics.log_norm),
        ("log_spectral_norm", ours.metrics.log_spectral_norm),
        ("stable_rank", ours.metrics.stable_rank),
        ("log_alpha_norm", ours.metrics.log_alpha_norm),
        ("entropy", ours.metrics.entropy),
        ("sv_max", ours.sv_max),
        ("sv_min", ours.sv_min),
        ("lambda_max", ours.lambda_max),
    ];
    for (k, v) in reals {
        let err = rel(v, f(k));
        note("metric", err, format!("{ctx} {k}"));
        assert!(err <= METRIC, "{ctx}: {k}: ours {v:e}, WeightWatcher {:e} (rel {err:e})", f(k));
    }
    assert!(ours.exact, "{ctx}: not exact");
}

fn check_case(case: &Value) {
    let name = case["name"].as_str().unwrap();
    let path = Path::new(case["checkpoint"].as_str().unwrap());
    let ck = Checkpoint::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want_evals: BTreeMap<String, Vec<f64>> = case["evals"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()))
        .collect();
    let mut evals = BTreeMap::new();
    let got = checkpoint_spectra_with(&ck, &Options::default(), &|| false, |layer, e| {
        if want_evals.contains_key(layer) {
            evals.insert(layer.to_string(), e.evals.clone());
        }
    });
    assert!(got.refused.is_empty(), "{name}: refused {:?}", got.refused);
    // The same layers as WeightWatcher's filter. A tied lm_head is measured under its own name when the
    // file names it (an alias of the embedding: torch.save), and is absent when the file stores it once
    // without a record of the tie (HF's save_pretrained).
    let ours: BTreeSet<&str> = got.layers.iter().map(|l| l.name.as_str()).collect();
    let present: BTreeSet<&str> = ck
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .chain(ck.aliases.iter().map(|a| a.name.as_str()))
        .collect();
    let theirs: BTreeSet<&str> =
        case["selected"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let missing: Vec<&&str> = theirs.difference(&present).collect();
    assert!(
        missing.iter().all(|n| **n == "lm_head.weight"),
        "{name}: WeightWatcher layers not in the file: {missing:?}"
    );
    let expected: BTreeSet<&str> = theirs.intersection(&present).copied().collect();
    assert_eq!(ours, expected, "{name}: layers selected");
    for (layer, torch) in &want_evals {
        let e = evals.get(layer).unwrap_or_else(|| panic!("{name}: {layer} not measured"));
        check_evals(&format!("{name} {layer}"), e, torch);
    }
    let by_name: BTreeMap<&str, &LayerSpectrum> = got.layers.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut compared = 0;
    for ww in case["layers"].as_array().unwrap() {
        let t = ww["tensor"].as_str().unwrap();
        let Some(ours) = by_name.get(t) else {
            assert_eq!(t, "lm_head.weight", "{name}: {t} not measured");
            continue;
        };
        check_layer(&format!("{name} {t}"), ours, ww);
        compared += 1;
    }
    assert!(compared >= 1, "{name}: no layer compared");
    eprintln!(
        "{name}: {} layers, {compared} compared with WeightWatcher, {:.2} s",
        got.layers.len(),
        got.seconds
    );
}

#[test]
fn spectra_match_weightwatcher_and_torch() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    run_script("gpt2_make.py", &hf, &["--steps", "4", "--power-iterations", "0"]);
    let ck = hf.join("checkpoint-4");
    let reference = python_reference("spectra_reference.py", dir.path(), &["--hf", ck.to_str().unwrap()]);
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        check_case(case);
    }
    for (kind, (err, what)) in WORST.lock().unwrap().iter() {
        eprintln!("largest relative difference, {kind}: {err:.1e} ({what})");
    }
}
