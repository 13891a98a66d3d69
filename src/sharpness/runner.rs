//! Curvature with model workers, for the CLI and the daemon alike: start a worker for the model
//! contract, bind the checkpoint, and run the estimators of [`compute`](super::compute) in the worker's
//! Hessian space ([`WorkerSpace`]); and the paper's Fig. 7 map of |λmin/λmax| over a stored 2D slice, its
//! grid points handed out to several workers (each point's Lanczos is independent of the others).

use super::compute::{SharpnessOptions, SharpnessReport, compute_spread};
use super::remote::WorkerSpace;
use crate::cancel::Cancel;
use crate::landscape::runner::{PlaneSpec, model_used, prepare_plane};
use crate::store::sharpness::SharpnessRecord;
use crate::store::slices::ModelUsed;
use crate::store::{Store, checkpoints, unix_now};
use crate::workers::contract::ModelContract;
use crate::workers::plan::{ModelPlan, Sizing};
use crate::workers::scheduler::{Evaluator, PointError, run_tasks};
use crate::workers::set::WorkerSet;
use crate::workers::{Worker, WorkerError};
use anyhow::{Context, Result, anyhow, bail};
use landscaped_maths::curvature::lanczos::{Extremes, LanczosOptions, extremes};
use landscaped_maths::curvature::space::ParamSubset;
use landscaped_protocol::messages::StateSource;
use std::path::{Path, PathBuf};

/// The step of a checkpoint named by path: `explicit` (`--step`), else the step its name, layout or
/// metadata gives ([`landscaped_formats::Checkpoint::open`], the rule `ingest` applies to the same file),
/// else 0 with one line saying so.
pub(crate) fn step_of(path: &Path, explicit: Option<u64>) -> u64 {
    if let Some(s) = explicit {
        return s;
    }
    match landscaped_formats::Checkpoint::open(path).map(|c| c.step) {
        Ok(Some(s)) => s,
        Ok(None) => {
            tracing::warn!(path = %path.display(), "no training step in its name or metadata: recorded as step 0 (pass --step)");
            0
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read its step ({e}): recorded as step 0 (pass --step)");
            0
        }
    }
}

/// The checkpoint of (run, step) as recorded at ingest (`step` None: the run's last), or the explicit
/// `checkpoint` (its step by [`step_of`]). Returns the path and the step.
pub(crate) fn resolve_checkpoint(
    store: Option<&Store>,
    run: &str,
    step: Option<u64>,
    checkpoint: Option<&Path>,
) -> Result<(PathBuf, u64)> {
    if let Some(p) = checkpoint {
        return Ok((p.to_path_buf(), step_of(p, step)));
    }
    let Some(store) = store else { bail!("no store to find run {run:?} in; pass --checkpoint") };
    let rec = match step {
        Some(s) => checkpoints::checkpoint(store, run, s)?.ok_or_else(|| {
            anyhow!("run {run:?} has no checkpoint at step {s} in the store (see `landscaped checkpoints`)")
        })?,
        None => checkpoints::latest(store, run)?
            .ok_or_else(|| anyhow!("no run named {run:?} in the store (ingest it first)"))?,
    };
    Ok((PathBuf::from(&rec.path), rec.step))
}

/// Starts one worker for `contract` (all the budget's threads inside it) and binds `checkpoint` into its
/// module (`None`: the model keeps its own weights). Returns the worker and the description of the model
/// for records.
pub(crate) fn worker_at_checkpoint(
    contract: &ModelContract,
    checkpoint: Option<&Path>,
    label: &str,
) -> Result<(Worker, ModelUsed)> {
    let c = ModelContract { workers: Some(1), workers_listen: None, ..contract.clone() };
    let (mut set, used) = workers_at_checkpoint(&c, checkpoint, label, &Cancel::new())?;
    let w = set.workers.pop().ok_or_else(|| anyhow!("{label}: no worker started"))?;
    Ok((w, used))
}

/// Workers for a sharpness report, each with `checkpoint` bound (`None`: the model's own weights):
/// `--workers N` started here (the thread budget split between them; default one), or those that dial
/// in with `--workers-listen`. Hutchinson's probes and SLQ's runs are spread over them
/// ([`compute_in_workers`]). Returns them and the description of the model for records.
pub(crate) fn workers_at_checkpoint(
    contract: &ModelContract,
    checkpoint: Option<&Path>,
    label: &str,
    cancel: &Cancel,
) -> Result<(WorkerSet, ModelUsed)> {
    let plan = ModelPlan::resolve(contract, checkpoint, Sizing::Probes)?;
    let mut set = WorkerSet::start_all(&plan, label, cancel)?;
    let first = set.workers.first().ok_or_else(|| anyhow!("{label}: no worker started"))?;
    let used =
        model_used(first.model.as_ref().ok_or_else(|| anyhow!("{label}: no model loaded"))?, &plan.wire);
    if let Some(path) = checkpoint {
        for w in &mut set.workers {
            let state = w.load_state(StateSource::Checkpoint { path: path.to_path_buf() }, &plan.bind)?;
            w.set_state(state)?;
        }
    }
    Ok((set, used))
}

/// The chosen quantities with the workers at the same parameters: probes spread over all of them,
/// the rest in the first (Hessian work opened and closed in each).
pub(crate) fn compute_in_workers(
    workers: &mut [Worker],
    opts: &SharpnessOptions,
    cancel: &Cancel,
    progress: impl FnMut(&str),
) -> Result<SharpnessReport> {
    let mut spaces = Vec::with_capacity(workers.len());
    for w in workers.iter_mut() {
        spaces.push(WorkerSpace::open(w, opts.subset)?.stop_on(cancel));
    }
    let rep = compute_spread(&mut spaces, opts, progress, classify);
    // Close even after an error so the workers free their vectors; the first error wins.
    let mut closed = Ok(());
    for s in spaces {
        let c = s.close();
        if closed.is_ok() {
            closed = c;
        }
    }
    let rep = rep?;
    closed?;
    Ok(rep)
}

/// `landscaped sharpness` and the daemon's sharpness job: the report at `checkpoint`, and the model used.
/// `cancel` ends a wait for workers from a launcher, and the computation at its next model evaluation
/// ([`crate::cancel::Cancelled`]; the workers are stopped, nothing is returned to store).
pub fn sharpness_at(
    contract: &ModelContract,
    checkpoint: &Path,
    opts: &SharpnessOptions,
    label: &str,
    cancel: &Cancel,
    progress: impl FnMut(&str),
) -> Result<(SharpnessReport, ModelUsed)> {
    opts.validate()?;
    let (mut set, used) = workers_at_checkpoint(contract, Some(checkpoint), label, cancel)?;
    let rep = compute_in_workers(&mut set.workers, opts, cancel, progress)?;
    set.shutdown();
    Ok((rep, used))
}

/// What [`ratio_map`] computes: Lanczos with `lanczos` over `subset` at θ(xs[ix], ys[iy]) of `plane`.
#[derive(Clone, Copy)]
pub(crate) struct RatioMapRequest<'a> {
    pub contract: &'a ModelContract,
    pub plane: &'a PlaneSpec,
    pub xs: &'a [f64],
    pub ys: &'a [f64],
    pub subset: ParamSubset,
    pub lanczos: &'a LanczosOptions,
}

/// What [`ratio_map`] found: grids `[iy][ix]` of |λmin/λmax|, λmax, λmin and convergence.
pub struct RatioMap {
    pub ratio: Vec<Vec<f64>>,
    pub lambda_max: Vec<Vec<f64>>,
    pub lambda_min: Vec<Vec<f64>>,
    pub converged: Vec<Vec<bool>>,
    pub hvps: usize,
    pub workers: usize,
}

/// |λmin/λmax| (and both eigenvalues) at every point θ(a, b) = centre + a·δ + b·η of a plane, for
/// a = xs[ix], b = ys[iy]: every worker rebuilds the plane, then the points are handed out in small
/// blocks ([`crate::workers::scheduler`]: fast workers take more, a lost worker's points go to the
/// others); for each, the worker moves its module there (`set_point`) and runs Lanczos. Workers are
/// started here or dial in from a launcher (`--workers-listen`). The values don't depend on the number
/// of workers. `progress(done, total)` after each point; `cancel` stops it (between blocks, and a
/// point's Lanczos at its next HVP) with [`crate::cancel::Cancelled`].
pub(crate) fn ratio_map(
    req: &RatioMapRequest<'_>,
    cancel: &Cancel,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<RatioMap> {
    let RatioMapRequest { contract, plane, xs, ys, subset, lanczos } = *req;
    let (nx, ny) = (xs.len(), ys.len());
    let total = nx * ny;
    let label = "sharpness map";
    let mut plan = ModelPlan::resolve(contract, Some(plane.centre()), Sizing::Grid { points: total })?;
    let mut set = WorkerSet::start_first(&plan, label, cancel)?;
    set.start_rest(&mut plan)?;
    // Every worker rebuilds the plane; here any failure stops the map.
    for p in set.each(|w| prepare_plane(w, plane, &plan.bind).map(|_| ())) {
        p.context("rebuilding the slice's plane")?;
    }
    let points: Vec<(f64, f64)> = (0..total).map(|i| (xs[i % nx], ys[i / nx])).collect();
    let evals: Vec<Evaluator<'_, (f64, f64), Extremes>> = set
        .workers
        .iter_mut()
        .map(|w| {
            let name = w.what().to_string();
            let aborter = w.aborter();
            Evaluator {
                name,
                eval: Box::new(move |block, sink| {
                    for &(k, (a, b)) in block {
                        let e = lanczos_at(w, a, b, subset, lanczos, cancel);
                        sink(k, e.map_err(classify)?);
                    }
                    Ok(())
                }),
                abort: Some(Box::new(move || aborter.abort())),
            }
        })
        .collect();
    let mut results: Vec<Option<Extremes>> = vec![None; total];
    let mut done = 0usize;
    run_tasks(
        &points,
        evals,
        cancel,
        |k, _, e| {
            results[k] = Some(e);
            done += 1;
            progress(done, total);
            Ok(())
        },
        |line| tracing::warn!("{label}: {line}"),
    )?;
    if done < total {
        cancel.check()?;
    }
    let n = set.len();
    set.shutdown();
    let mut map = RatioMap {
        ratio: vec![vec![f64::NAN; nx]; ny],
        lambda_max: vec![vec![f64::NAN; nx]; ny],
        lambda_min: vec![vec![f64::NAN; nx]; ny],
        converged: vec![vec![false; nx]; ny],
        hvps: 0,
        workers: n,
    };
    for (i, e) in results.into_iter().enumerate() {
        let e = e.ok_or_else(|| anyhow!("grid point {i} was not computed"))?;
        let (ix, iy) = (i % nx, i / nx);
        map.ratio[iy][ix] = e.ratio;
        map.lambda_max[iy][ix] = e.lambda_max;
        map.lambda_min[iy][ix] = e.lambda_min;
        map.converged[iy][ix] = e.converged;
        map.hvps += e.hvps;
    }
    Ok(map)
}

/// Lanczos for the extreme eigenvalues at θ(a, b) of the plane the worker holds.
fn lanczos_at(
    w: &mut Worker,
    a: f64,
    b: f64,
    subset: ParamSubset,
    lanczos: &LanczosOptions,
    cancel: &Cancel,
) -> Result<Extremes> {
    w.set_point(a, b)?;
    let mut space = WorkerSpace::open(w, subset)?.stop_on(cancel);
    let e =
        extremes(&mut space, lanczos).with_context(|| format!("Lanczos at grid point (x = {a}, y = {b})"));
    let closed = space.close();
    let e = e?;
    closed?;
    Ok(e)
}

/// A failed worker (died, hung up) is lost, its points go to others; anything else stops the map.
pub fn classify(e: anyhow::Error) -> PointError {
    let lost = e.chain().any(|c| c.downcast_ref::<WorkerError>().is_some_and(WorkerError::is_worker_failure));
    if lost { PointError::Lost(e) } else { PointError::Fatal(e) }
}

/// The record of a report computed with the model `used`.
pub fn record(run: &str, step: u64, used: &ModelUsed, rep: SharpnessReport) -> SharpnessRecord {
    SharpnessRecord {
        run: run.to_string(),
        step,
        model: used.model.clone(),
        eval_data: used.eval_data.clone(),
        loss: used.loss.clone(),
        samples: used.samples,
        subset: rep.subset,
        dim: rep.dim,
        base_loss: rep.base_loss,
        extremes: rep.extremes,
        trace: rep.trace,
        density: rep.density,
        measures: rep.measures,
        hvps: rep.hvps,
        seconds: rep.seconds,
        computed_unix: unix_now(),
    }
}
