//! The approximation for layers over the exact-SVD budget (exact top-k by Lanczos on WᵀW + deflated SLQ,
//! `landscaped_maths::spectra::approx`), on matrices forced over a small budget
//! (tests/python/spectra_approx_reference.py: a heavy-tailed random matrix, a GPT-2-small MLP shape and
//! ResNet-18's layer3.0.conv1 at initialization), against `torch.linalg.svdvals(W.double())**2` and
//! against the exact path (itself equal to WeightWatcher 0.7.7 to 1e-10, tests/spectra.rs):
//! - every approximated layer says so: `exact = false`, the method and k;
//! - the top k eigenvalues equal torch's to 1e-9 relative;
//! - λmax, log_norm, log_spectral_norm, stable_rank, sv_max equal the exact path's to 1e-12;
//! - where the exact fit's xmin lies within the top k: α, xmin, D, σ, α_weighted to 1e-9 and num_pl_spikes
//!   equal (elsewhere the difference is printed);
//! - the estimated log_alpha_norm (where α is exact) and entropy within the tolerances of
//!   docs/tolerances.md; the matrix rank equal.

use landscaped::spectra::{Options, checkpoint_spectra_with};
use landscaped_formats::Checkpoint;
use landscaped_maths::spectra::ApproxOptions;
use landscaped_maths::spectra::metrics::LayerSpectrum;
use std::collections::BTreeMap;
use std::path::Path;

mod support;
use support::*;

/// Top-k eigenvalues: Lanczos to 1e-12 (its bound) against LAPACK in f64; the issue asks 1e-9.
const TOP_K: f64 = 1e-9;
/// Quantities exact by construction (Σλ = ‖W‖_F² in f64, λmax converged): summation order only.
const EXACT: f64 = 1e-12;
/// The fit at an xmin within the top k: the same numbers from eigenvalues equal to ~1e-12.
const FIT: f64 = 1e-9;
/// Estimated by SLQ (8 probes × 40 steps, Σλ as control variate), relative: log10 Σλ^α where α is the
/// exact one (6.2e-6 seen) and the matrix entropy (5.0e-4 seen, the heavy-tailed matrix).
const LOG_ALPHA_NORM: f64 = 1e-4;
const ENTROPY: f64 = 2e-3;

fn rel(got: f64, want: f64) -> f64 {
    if got == want { 0.0 } else { (got - want).abs() / want.abs().max(1e-300) }
}

fn spectra(ck: &Checkpoint, opts: &Options) -> (BTreeMap<String, LayerSpectrum>, BTreeMap<String, Vec<f64>>) {
    let mut evals = BTreeMap::new();
    let got = checkpoint_spectra_with(ck, opts, &|| false, |name, e| {
        evals.insert(name.to_string(), e.evals.clone());
    });
    assert!(got.refused.is_empty(), "refused {:?}", got.refused);
    (got.layers.into_iter().map(|l| (l.name.clone(), l)).collect(), evals)
}

#[test]
fn approximation_matches_torch_and_the_exact_path() {
    let dir = tempfile::tempdir().unwrap();
    let r = python_reference("spectra_approx_reference.py", dir.path(), &[]);
    let ck = Checkpoint::open(Path::new(r["checkpoint"].as_str().unwrap())).unwrap();
    let (exact, _) = spectra(&ck, &Options::default());
    let forced = Options {
        max_flops: 1e7,
        approx: ApproxOptions { top_k: 96, ..ApproxOptions::default() },
        ..Options::default()
    };
    let (mut approx, mut tops) = spectra(&ck, &forced);
    assert_eq!(approx.len(), 3);
    // The conv's 128-wide slices are explored whole at k = 96; at k = 24 its Krylov spaces are not.
    let conv = Options {
        approx: ApproxOptions { top_k: 24, ..ApproxOptions::default() },
        layer: Some(globset::Glob::new("layer3.*").unwrap().compile_matcher()),
        ..forced.clone()
    };
    let (c, t) = spectra(&ck, &conv);
    approx.extend(c);
    tops.extend(t);
    for (name, a) in &approx {
        let e = &exact[name];
        assert!(e.exact && e.approx.is_none(), "{name}: the default budget measures it exactly");
        let info = a.approx.as_ref().unwrap_or_else(|| panic!("{name}: not approximated"));
        assert!(
            !a.exact && info.method == "lanczos-top-k+slq" && a.method().starts_with("lanczos-top-k+slq k=")
        );
        assert!(info.k >= 32, "{name}: only {} top eigenvalues converged ({info:?})", info.k);
        // The top k against torch.
        let torch: Vec<f64> =
            r["evals"][name].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let top = &tops[name];
        assert_eq!(top.len(), info.k);
        let worst_top =
            top.iter().rev().zip(torch.iter().rev()).map(|(g, w)| rel(*g, *w)).fold(0.0, f64::max);
        assert!(worst_top <= TOP_K, "{name}: top-{} eigenvalues off by {worst_top:e}", info.k);
        // Exact quantities.
        for (what, g, w) in [
            ("lambda_max", a.lambda_max, e.lambda_max),
            ("sv_max", a.sv_max, e.sv_max),
            ("log_norm", a.metrics.log_norm, e.metrics.log_norm),
            ("log_spectral_norm", a.metrics.log_spectral_norm, e.metrics.log_spectral_norm),
            ("stable_rank", a.metrics.stable_rank, e.metrics.stable_rank),
        ] {
            assert!(rel(g, w) <= EXACT, "{name}: {what} {g} vs exact {w}");
        }
        assert_eq!(a.num_evals, e.num_evals);
        // The fit: exact where the exact xmin is a candidate.
        let inside = e.fit.xmin >= top[0];
        if inside {
            for (what, g, w) in [
                ("alpha", a.fit.alpha, e.fit.alpha),
                ("xmin", a.fit.xmin, e.fit.xmin),
                ("D", a.fit.d, e.fit.d),
                ("sigma", a.fit.sigma, e.fit.sigma),
                ("alpha_weighted", a.metrics.alpha_weighted, e.metrics.alpha_weighted),
            ] {
                assert!(rel(g, w) <= FIT, "{name}: {what} {g} vs exact {w}");
            }
            assert_eq!(a.fit.num_pl_spikes, e.fit.num_pl_spikes, "{name}");
        }
        // Estimated.
        let lan = rel(a.metrics.log_alpha_norm, e.metrics.log_alpha_norm);
        let ent = rel(a.metrics.entropy, e.metrics.entropy);
        eprintln!(
            "{name}: k = {} ({} steps, {} matvecs), top-k {worst_top:.1e}; xmin {} the top k: alpha {:.4} vs exact {:.4} \
             (exact tail {}), xmin_at_edge {}; log_alpha_norm {lan:.1e}, entropy {ent:.1e}, rank {} vs {}, \
             weak_rank_loss {} vs {}, sv_min {:.4e} vs {:.4e}",
            info.k,
            info.lanczos_steps,
            info.matvecs,
            if inside { "within" } else { "below" },
            a.fit.alpha,
            e.fit.alpha,
            e.fit.num_pl_spikes,
            info.xmin_at_edge,
            a.metrics.matrix_rank,
            e.metrics.matrix_rank,
            a.weak_rank_loss,
            e.weak_rank_loss,
            a.sv_min,
            e.sv_min,
        );
        // log10 Σλ^α depends on α: compared where α is the exact one.
        if inside {
            assert!(
                lan <= LOG_ALPHA_NORM,
                "{name}: log_alpha_norm {} vs exact {}",
                a.metrics.log_alpha_norm,
                e.metrics.log_alpha_norm
            );
        }
        assert_eq!(a.metrics.matrix_rank, e.metrics.matrix_rank, "{name}: matrix rank");
        assert!(ent <= ENTROPY, "{name}: entropy {} vs exact {}", a.metrics.entropy, e.metrics.entropy);
    }
}
