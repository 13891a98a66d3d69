//! Hutchinson's trace and SLQ's density with their probes spread over several workers at the same
//! parameters: the estimators are [`landscaped_maths::curvature`]'s, the hand-out is the task scheduler
//! of [`crate::workers::scheduler`] (a lost worker's probes go to the others). Each gives the estimate
//! a single space gives.

use landscaped_maths::curvature::density::{Quadrature, SlqRun, slq, slq_run};
use landscaped_maths::curvature::space::HessianSpace;
use landscaped_maths::curvature::trace::{Running, TraceEstimate, hutchinson, hutchinson_sample};

use crate::workers::scheduler::{Evaluator, PointError, run_tasks};

/// [`hutchinson`] with its probes spread over several spaces (workers at the same parameters): each
/// probe is independent, handed out in blocks ([`crate::workers::scheduler`]). The samples are folded
/// in probe order with the same stopping rule, so the estimate is the one a single space gives, bit for
/// bit when the spaces compute identical HVPs; a few probes past the stopping point may be computed
/// and are not used. `classify` tells a lost worker (its probes go to the others) from a fatal error.
pub(crate) fn hutchinson_spread<S: HessianSpace + Send>(
    spaces: &mut [S],
    samples: usize,
    min_samples: usize,
    rel_tol: f64,
    seed: u64,
    classify: fn(anyhow::Error) -> PointError,
) -> anyhow::Result<TraceEstimate> {
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
    let enough = crate::cancel::Cancel::new();
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
                enough.cancel(crate::cancel::Reason::Requested);
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

/// [`slq`] with its runs spread over several spaces (workers at the same parameters), handed out as in
/// [`crate::workers::scheduler`]; the runs are kept in run order, so the quadrature is the one a single
/// space gives. `classify` tells a lost worker (its runs go to the others) from a fatal error.
pub(crate) fn slq_spread<S: HessianSpace + Send>(
    spaces: &mut [S],
    runs: usize,
    steps: usize,
    seed: u64,
    classify: fn(anyhow::Error) -> PointError,
) -> anyhow::Result<Quadrature> {
    if spaces.len() == 1 || runs == 1 {
        return slq(&mut spaces[0], runs, steps, seed);
    }
    let d = spaces.first().map_or(0, |s| s.dim());
    anyhow::ensure!(d > 0, "the operator has dimension 0 (no parameters)");
    anyhow::ensure!(steps >= 1, "SLQ needs at least one run and one step");
    let starts: Vec<usize> = spaces.iter().map(|s| s.applications()).collect();
    let ids: Vec<usize> = (0..runs).collect();
    let evals: Vec<Evaluator<'_, usize, SlqRun>> = spaces
        .iter_mut()
        .enumerate()
        .map(|(w, s)| Evaluator {
            name: format!("{w}"),
            eval: Box::new(move |block, sink| {
                for &(k, r) in block {
                    sink(k, slq_run(s, steps, seed, r).map_err(classify)?);
                }
                Ok(())
            }),
            abort: None,
        })
        .collect();
    let mut got: Vec<Option<SlqRun>> = vec![None; runs];
    let never = crate::cancel::Cancel::new();
    run_tasks(
        &ids,
        evals,
        &never,
        |k, _, nw| {
            got[k] = Some(nw);
            Ok(())
        },
        |line| tracing::warn!("SLQ: {line}"),
    )?;
    let (mut nodes, mut weights) = (Vec::new(), Vec::new());
    for (r, g) in got.into_iter().enumerate() {
        let (n, w) = g.ok_or_else(|| anyhow::anyhow!("SLQ run {r} was not computed"))?;
        nodes.push(n);
        weights.push(w);
    }
    let hvps = spaces.iter().zip(&starts).map(|(s, st)| s.applications() - st).sum();
    Ok(Quadrature { nodes, weights, dim: d, hvps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use landscaped_maths::curvature::memory::MemorySpace;
    use landscaped_maths::curvature::operator::DenseSymmetric;

    #[test]
    fn spread_probes_give_the_single_space_estimate_bit_for_bit() {
        let eigs: Vec<f64> = (0..120).map(|i| ((i as f64) * 0.37).sin() * 3.0 + 0.5).collect();
        let op = || DenseSymmetric::with_spectrum(&eigs, 5);
        for (samples, rel_tol) in [(60, 0.0), (200, 0.05)] {
            let one = hutchinson(&mut MemorySpace::new(op()), samples, 10, rel_tol, 9).unwrap();
            for n in [2, 3] {
                let mut spaces: Vec<_> = (0..n).map(|_| MemorySpace::new(op())).collect();
                let got = hutchinson_spread(&mut spaces, samples, 10, rel_tol, 9, PointError::Fatal).unwrap();
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

    #[test]
    fn spread_slq_runs_give_the_single_space_quadrature_bit_for_bit() {
        let eigs: Vec<f64> = (0..200)
            .map(|i| if i < 150 { 0.01 * (i as f64 / 150.0) } else { 5.0 + 0.01 * (i as f64 / 200.0) })
            .collect();
        let q = slq(&mut MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 2)), 8, 30, 1).unwrap();
        let mut spaces: Vec<_> =
            (0..3).map(|_| MemorySpace::new(DenseSymmetric::with_spectrum(&eigs, 2))).collect();
        let spread = slq_spread(&mut spaces, 8, 30, 1, PointError::Fatal).unwrap();
        assert_eq!(
            (&spread.nodes, &spread.weights, spread.dim),
            (&q.nodes, &q.weights, q.dim),
            "runs spread over three spaces give the same quadrature, bit for bit"
        );
        assert!(spread.hvps >= q.hvps, "a straggler's run may be computed twice, never skipped");
    }
}
