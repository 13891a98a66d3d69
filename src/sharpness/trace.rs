//! The Hessian trace: Hutchinson's estimator tr(H) = E[vᵀHv] over Rademacher vectors v (each entry ±1),
//! with the standard error of the sample mean, and the exact trace Σ e_iᵀHe_i (d HVPs, small models).
//!
//! Probe i is the space's Rademacher vector drawn with seed `seed + i` (a worker draws it from torch's
//! generator); each sample costs one HVP and four operations on the space, and no vector crosses.

use super::space::{HessianSpace, Init};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TraceEstimate {
    /// Mean of vᵀHv over the samples.
    pub trace: f64,
    /// Standard error of that mean: sample standard deviation / √n (NaN with one sample).
    pub std_error: f64,
    pub samples: usize,
    pub hvps: usize,
}

/// Welford's running mean and variance of the samples, in probe order, and the stopping rule: after
/// `min_samples` (at least 2), stop once the standard error is below `rel_tol · |mean|`.
#[derive(Clone, Copy, Default)]
struct Running {
    n: usize,
    mean: f64,
    m2: f64,
}

impl Running {
    fn push(&mut self, q: f64) {
        self.n += 1;
        let delta = q - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (q - self.mean);
    }
    fn se(&self) -> f64 {
        if self.n > 1 { (self.m2 / (self.n - 1) as f64 / self.n as f64).sqrt() } else { f64::NAN }
    }
    fn enough(&self, min_samples: usize, rel_tol: f64) -> bool {
        rel_tol > 0.0 && self.n >= min_samples.max(2) && self.se() <= rel_tol * self.mean.abs()
    }
}

/// Hutchinson's estimator with `samples` Rademacher vectors (at least `min_samples`); stops early, after
/// `min_samples`, once the standard error is below `rel_tol · |mean|` (`rel_tol = 0` disables that).
pub fn hutchinson(
    op: &mut dyn HessianSpace,
    samples: usize,
    min_samples: usize,
    rel_tol: f64,
    seed: u64,
) -> anyhow::Result<TraceEstimate> {
    let d = op.dim();
    anyhow::ensure!(d > 0, "the operator has dimension 0 (no parameters)");
    anyhow::ensure!(samples >= 1, "Hutchinson needs at least one sample");
    let start = op.applications();
    let hv = op.new_vector(Init::Zeros)?;
    let mut run = Running::default();
    while run.n < samples {
        let v = op.new_vector(Init::Rademacher { seed: seed.wrapping_add(run.n as u64) })?;
        let probe = run.n;
        anyhow::Context::with_context(op.hvp(v, hv), || format!("Hutchinson probe {probe}"))?;
        let q = op.dots(v, &[hv])?[0];
        op.free(&[v])?;
        anyhow::ensure!(q.is_finite(), "Hutchinson: vᵀHv is not finite");
        run.push(q);
        if run.enough(min_samples, rel_tol) {
            break;
        }
    }
    op.free(&[hv])?;
    Ok(TraceEstimate {
        trace: run.mean,
        std_error: run.se(),
        samples: run.n,
        hvps: op.applications() - start,
    })
}

/// One Hutchinson sample: vᵀHv for probe `i` (the Rademacher vector of seed `seed + i`).
pub fn hutchinson_sample(op: &mut dyn HessianSpace, seed: u64, i: usize) -> anyhow::Result<f64> {
    let v = op.new_vector(Init::Rademacher { seed: seed.wrapping_add(i as u64) })?;
    let hv = op.new_vector(Init::Zeros)?;
    let r = anyhow::Context::with_context(op.hvp(v, hv), || format!("Hutchinson probe {i}"))
        .and_then(|()| op.dots(v, &[hv]));
    op.free(&[v, hv])?;
    let q = r?[0];
    anyhow::ensure!(q.is_finite(), "Hutchinson: vᵀHv is not finite (probe {i})");
    Ok(q)
}

/// [`hutchinson`] with its probes spread over several spaces (workers at the same parameters): each
/// probe is independent, handed out in blocks ([`crate::landscape::dispatch`]). The samples are folded
/// in probe order with the same stopping rule, so the estimate is the one a single space gives, bit for
/// bit when the spaces compute identical HVPs; a few probes past the stopping point may be computed
/// and are not used. `classify` tells a lost worker (its probes go to the others) from a fatal error.
pub fn hutchinson_spread<S: HessianSpace + Send>(
    spaces: &mut [S],
    samples: usize,
    min_samples: usize,
    rel_tol: f64,
    seed: u64,
    classify: fn(anyhow::Error) -> crate::landscape::dispatch::PointError,
) -> anyhow::Result<TraceEstimate> {
    use crate::landscape::dispatch::{Evaluator, run_tasks};
    if spaces.len() == 1 {
        return hutchinson(&mut spaces[0], samples, min_samples, rel_tol, seed);
    }
    anyhow::ensure!(samples >= 1, "Hutchinson needs at least one sample");
    let d = spaces.first().map_or(0, |s| s.dim());
    anyhow::ensure!(d > 0, "the operator has dimension 0 (no parameters)");
    let starts: Vec<usize> = spaces.iter().map(|s| s.applications()).collect();
    let probes: Vec<usize> = (0..samples).collect();
    let evals: Vec<Evaluator<'_, usize, f64>> = spaces
        .iter_mut()
        .enumerate()
        .map(|(w, s)| Evaluator {
            name: format!("{w}"),
            eval: Box::new(move |block, sink| {
                for &(k, i) in block {
                    sink(k, hutchinson_sample(s, seed, i).map_err(classify)?);
                }
                Ok(())
            }),
            abort: None,
        })
        .collect();
    let enough = std::sync::atomic::AtomicBool::new(false);
    let mut got: Vec<Option<f64>> = vec![None; samples];
    let mut run = Running::default();
    run_tasks(
        &probes,
        evals,
        &enough,
        |k, _, q| {
            got[k] = Some(q);
            while run.n < samples && !run.enough(min_samples, rel_tol) {
                let Some(q) = got[run.n] else { break };
                run.push(q);
            }
            if run.enough(min_samples, rel_tol) {
                enough.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        },
        |line| tracing::warn!("Hutchinson: {line}"),
    )?;
    anyhow::ensure!(
        run.n == samples || run.enough(min_samples, rel_tol),
        "Hutchinson: only {} of {samples} probes were computed",
        run.n
    );
    let hvps = spaces.iter().zip(&starts).map(|(s, st)| s.applications() - st).sum();
    Ok(TraceEstimate { trace: run.mean, std_error: run.se(), samples: run.n, hvps })
}

/// The exact trace Σ_i e_iᵀ H e_i: `dim` HVPs, for small models and tests (each e_i crosses to the space).
pub fn exact_trace(op: &mut dyn HessianSpace) -> anyhow::Result<f64> {
    let d = op.dim();
    let mut e = vec![0.0; d];
    let he = op.new_vector(Init::Zeros)?;
    let mut t = 0.0;
    for i in 0..d {
        e[i] = 1.0;
        let ei = op.new_vector(Init::Values(e.clone()))?;
        e[i] = 0.0;
        op.hvp(ei, he)?;
        t += op.dots(ei, &[he])?[0];
        op.free(&[ei])?;
    }
    op.free(&[he])?;
    anyhow::ensure!(t.is_finite(), "exact trace is not finite");
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharpness::memory::MemorySpace;
    use crate::sharpness::operator::DenseSymmetric;

    #[test]
    fn hutchinson_within_its_standard_error() {
        let eigs: Vec<f64> = (0..200).map(|i| ((i as f64) * 0.1).cos() + 0.3).collect();
        let want: f64 = eigs.iter().sum();
        let mut a = MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 11));
        let r = hutchinson(&mut a, 400, 10, 0.0, 3).unwrap();
        assert_eq!(r.samples, 400);
        assert_eq!(r.hvps, 400);
        assert!(r.std_error > 0.0);
        assert!((r.trace - want).abs() < 4.0 * r.std_error, "{} vs {want} ± {}", r.trace, r.std_error);
        let exact = exact_trace(&mut a).unwrap();
        assert!((exact - want).abs() < 1e-9 * want.abs().max(1.0));
        // A diagonal matrix has zero Hutchinson variance with Rademacher vectors.
        assert_eq!(a.live(), 1, "probes are freed");
        let mut diag = MemorySpace::new(
            DenseSymmetric::new(3, vec![1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, -4.0]).unwrap(),
        );
        let r = hutchinson(&mut diag, 50, 2, 1e-6, 0).unwrap();
        assert_eq!(r.samples, 2);
        assert!((r.trace + 1.0).abs() < 1e-12 && r.std_error == 0.0);
    }

    #[test]
    fn spread_probes_give_the_single_space_estimate_bit_for_bit() {
        let eigs: Vec<f64> = (0..120).map(|i| ((i as f64) * 0.37).sin() * 3.0 + 0.5).collect();
        let op = || DenseSymmetric::with_spectrum(&eigs, 5);
        for (samples, rel_tol) in [(60, 0.0), (200, 0.05)] {
            let one = hutchinson(&mut MemorySpace::new(op()), samples, 10, rel_tol, 9).unwrap();
            for n in [2, 3] {
                let mut spaces: Vec<_> = (0..n).map(|_| MemorySpace::new(op())).collect();
                let got = hutchinson_spread(&mut spaces, samples, 10, rel_tol, 9, |e| {
                    crate::landscape::dispatch::PointError::Fatal(e)
                })
                .unwrap();
                assert_eq!(got.samples, one.samples, "{n} spaces, tol {rel_tol}");
                assert_eq!(got.trace.to_bits(), one.trace.to_bits());
                assert_eq!(got.std_error.to_bits(), one.std_error.to_bits());
                assert!(got.hvps >= one.hvps, "probes past the stop may be computed, never fewer");
                assert!(spaces.iter().all(|s| s.live() == 1), "probes are freed (the centre stays)");
            }
            if rel_tol > 0.0 {
                assert!(one.samples < samples, "the early stop is exercised");
            }
        }
    }
}
