//! Computing a slice with model workers, for the CLI and the daemon alike. [`run_slice`] reads:
//! resolve the contract into a [`ModelPlan`] → start the [`WorkerSet`] (one worker first: a complete
//! record means nothing to do; then the rest, one per GPU for a bare `--device cuda`, or those dialling
//! in from a cluster's launcher) → prepare (each worker rebuilds the plane: centre read from the
//! checkpoint, directions drawn from their seed or read from their files — never shipped; the centre
//! evaluated; the stored record to resume found or a new one made) → run the grid's points as tasks
//! ([`super::dispatch`] on the [task scheduler](crate::workers::scheduler): lost workers' points go to
//! the others, a straggler's block is copied; results recorded on the calling thread, persisted every
//! few points) → save once more at the end.

use super::dispatch::evaluate_points;
use super::slice::{Outcome, SliceValues};
use crate::cancel::Cancel;
use crate::store::slices::{self, DirectionSource, ModelUsed, SliceRecord};
use crate::store::{Store, unix_now};
use crate::workers::contract::ModelContract;
use crate::workers::plan::{ModelPlan, Sizing};
use crate::workers::pool::ThreadPlan;
use crate::workers::scheduler::{DispatchReport, Evaluator, PointError, PointEvaluator};
use crate::workers::set::WorkerSet;
use crate::workers::{Worker, WorkerError};
use anyhow::{Result, anyhow};
use landscaped_maths::directions::RandomDirections;
use landscaped_protocol::messages::{BindRules, GridPoint, Handle, ModelInfo, StateSource};
use std::path::{Path, PathBuf};

/// The plane a slice lies in, as every worker rebuilds it.
#[derive(Clone, Debug)]
pub enum PlaneSpec {
    /// Random directions about `centre`, drawn from their seed (the parameter list is filled in from
    /// the model). One direction for a 1D slice, two for 2D.
    Random { centre: PathBuf, dirs: RandomDirections, two_d: bool },
    /// Directions read from safetensors files (trajectory PCA), about `centre`.
    Files { centre: PathBuf, x: PathBuf, y: PathBuf },
    /// From `centre` (α = 0) towards `to` (α = 1): parameters and float buffers.
    Interpolation { centre: PathBuf, to: PathBuf },
}

impl PlaneSpec {
    pub fn centre(&self) -> &Path {
        match self {
            PlaneSpec::Random { centre, .. }
            | PlaneSpec::Files { centre, .. }
            | PlaneSpec::Interpolation { centre, .. } => centre,
        }
    }
}

/// What the caller wants computed, and how the record describes it.
pub struct SliceRequest<'a> {
    pub contract: &'a ModelContract,
    pub plane: PlaneSpec,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub run: Option<String>,
    pub step: Option<u64>,
    /// The direction description stored in the record (for random directions, the parameter list is
    /// filled in from the model).
    pub directions: DirectionSource,
    pub trajectory: Vec<(f64, f64, u64)>,
    /// Distinguishes requests: the same request resumes its unfinished record.
    pub signature_prefix: String,
    /// When a complete record with the same signature exists, return it instead of computing.
    pub skip_if_complete: bool,
    /// Save to the store after this many points.
    pub persist_every: usize,
    /// Shown in worker error messages, e.g. `slice` or `daemon slice job`.
    pub label: String,
    /// The centre as the record names it (and its signature), when the plane reads a held copy of it
    /// (the daemon's jobs: `crate::daemon::hold`); `None`: the plane's centre.
    pub recorded_as: Option<PathBuf>,
}

impl SliceRequest<'_> {
    /// The centre checkpoint as records name it.
    pub fn centre_name(&self) -> &Path {
        self.recorded_as.as_deref().unwrap_or_else(|| self.plane.centre())
    }
}

/// How the computation went.
pub struct SliceRun {
    pub record: SliceRecord,
    pub outcome: Outcome,
    /// Points computed by this call, and the seconds the grid took.
    pub computed: usize,
    pub seconds: f64,
    pub plan: ThreadPlan,
    /// Whether an unfinished record was resumed, or a complete one found (nothing computed).
    pub resumed: bool,
    pub already_complete: bool,
    /// Points per worker, lost workers, copied blocks.
    pub dispatch: DispatchReport,
}

/// A worker as the dispatcher sees it: blocks of grid points in one `evaluate_points` request each. A
/// worker that dies or hangs up is lost (its points go to the others); an error reply is the model's
/// and stops the grid.
pub(crate) fn worker_evaluator(w: &mut Worker) -> PointEvaluator<'_> {
    let name = w.what().to_string();
    let aborter = w.aborter();
    Evaluator {
        name,
        eval: Box::new(move |block, sink| {
            let points: Vec<GridPoint> =
                block.iter().map(|&(k, (a, b))| GridPoint { index: k as u64, a, b }).collect();
            let mut bad = None;
            let r = w.evaluate_points(&points, |index, loss, acc| {
                // Only the block's own indices count: a worker answering others is not trusted.
                match block.iter().find(|(k, _)| *k as u64 == index) {
                    Some(&(k, _)) => sink(k, (loss, acc)),
                    None => bad = Some(index),
                }
            });
            if let Some(i) = bad {
                return Err(PointError::Fatal(anyhow!(
                    "model worker {} answered for grid point {i}, which it was not asked for",
                    w.what()
                )));
            }
            r.map_err(|e| {
                if e.is_worker_failure() { PointError::Lost(e.into()) } else { PointError::Fatal(e.into()) }
            })
        }),
        abort: Some(Box::new(move || aborter.abort())),
    }
}

/// The record's description of the model contract in use.
pub(crate) fn model_used(
    info: &ModelInfo,
    contract: &landscaped_protocol::messages::WireContract,
) -> ModelUsed {
    ModelUsed {
        model: contract
            .model
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| contract.factory.clone())
            .unwrap_or_default(),
        // With a factory the data is the factory's own: named so, rather than left empty.
        eval_data: contract
            .eval_data
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| contract.factory.as_ref().map(|f| format!("{f} (the factory's data)")))
            .unwrap_or_default(),
        loss: info.loss.clone(),
        batch_size: contract.batch_size,
        subsample: contract.subsample,
        samples: info.samples,
        device: contract.device.clone(),
    }
}

/// The parameters (name, shape) random directions cover, in module order.
pub fn parameter_list(info: &ModelInfo) -> Vec<(String, Vec<usize>)> {
    info.slots.iter().filter(|s| s.parameter).map(|s| (s.name.clone(), s.shape.clone())).collect()
}

/// Rebuilds the plane in one worker: returns the centre's handle and cos(δ, η) for two directions.
pub(crate) fn prepare_plane(
    w: &mut Worker,
    plane: &PlaneSpec,
    bind: &BindRules,
) -> Result<(Handle, Option<f64>), WorkerError> {
    let source = |p: &Path| StateSource::Checkpoint { path: p.to_path_buf() };
    let centre = w.load_state(source(plane.centre()), bind)?;
    let (dx, dy, cosine) = match plane {
        PlaneSpec::Random { dirs, two_d, .. } => {
            let (h, cos) = w.random_directions(
                centre,
                dirs.seed,
                &dirs.norm.to_string(),
                &dirs.ignore.to_string(),
                if *two_d { 2 } else { 1 },
                dirs.orthogonalize,
            )?;
            (h[0], h.get(1).copied(), cos)
        }
        PlaneSpec::Files { x, y, .. } => {
            let files = BindRules { missing_zero: true, allow_unexpected: false, ..bind.clone() };
            let dx = w.load_state(StateSource::Safetensors { path: x.clone() }, &files)?;
            let dy = w.load_state(StateSource::Safetensors { path: y.clone() }, &files)?;
            (dx, Some(dy), None)
        }
        PlaneSpec::Interpolation { to, .. } => {
            let end = w.load_state(source(to), bind)?;
            let d = w.difference(centre, end)?;
            w.free(&[end])?;
            (d, None, None)
        }
    };
    w.set_plane(centre, dx, dy)?;
    Ok((centre, cosine))
}

/// Computes (or resumes) a slice: see the module docs. `cancel` stops it between points (what is done
/// is kept); `progress(done, total)` is called after every point; `on_start(record, resumed)` once the
/// record is known, before the grid.
pub fn run_slice(
    store: &Store,
    req: SliceRequest<'_>,
    cancel: &Cancel,
    on_start: &mut dyn FnMut(&SliceRecord, bool),
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SliceRun> {
    let total = req.xs.len() * req.ys.len().max(1);
    let centre = req.plane.centre();
    let mut plan = ModelPlan::resolve(req.contract, Some(centre), Sizing::Grid { points: total })?;
    // One worker first: its model's parameter list completes the record's signature, and a complete
    // record with that signature means there is nothing to compute (no other worker is started).
    let mut set = WorkerSet::start_first(&plan, &req.label, cancel)?;
    let info = set.workers[0].model.clone().unwrap_or_default();
    let mut directions = req.directions.clone();
    if let DirectionSource::Random(d) = &mut directions {
        d.params = parameter_list(&info);
    }
    let signature = slice_signature(&plan, &req, &directions)?;
    if req.skip_if_complete
        && let Some(rec) = slices::find_complete(store, &signature)?
    {
        set.shutdown();
        return Ok(SliceRun {
            record: rec,
            outcome: Outcome::Complete,
            computed: 0,
            seconds: 0.0,
            plan: plan.threads,
            resumed: false,
            already_complete: true,
            dispatch: DispatchReport::default(),
        });
    }
    set.start_rest(&mut plan)?;
    // Every worker rebuilds the same plane (same files, same seed): nothing of size d crosses a pipe.
    let prepared = set.prepare("rebuilding the plane", |w| prepare_plane(w, &req.plane, &plan.bind))?;
    let mut centres: Vec<Handle> = prepared.iter().map(|p| p.0).collect();
    let cosine = prepared[0].1;
    let (mut rec, resumed) = match slices::find_unfinished(store, &signature)? {
        Some(rec) => {
            rec.values.check().map_err(|e| anyhow!("stored slice {}: {e}", rec.id))?;
            (rec, true)
        }
        None => {
            let (centre_loss, centre_accuracy) = evaluate_centre(&mut set, &mut centres)?;
            let rec = SliceRecord {
                id: slices::next_id(store)?,
                run: req.run.clone(),
                step: req.step,
                checkpoint: req.centre_name().display().to_string(),
                directions,
                cosine,
                model: model_used(&info, &plan.wire),
                centre_loss,
                centre_accuracy,
                values: SliceValues::new(req.xs.clone(), req.ys.clone()),
                trajectory: req.trajectory.clone(),
                created: unix_now(),
                updated: unix_now(),
                signature,
            };
            slices::put(store, &rec)?;
            (rec, false)
        }
    };
    on_start(&rec, resumed);
    let before = rec.values.done_count();
    let (out, seconds) = run_grid(store, &mut rec, &mut set, &req, cancel, progress);
    // Saved once more whatever the grid's end (complete, cancelled, failed): the finished points stay.
    rec.updated = unix_now();
    slices::put(store, &rec)?;
    store.flush()?;
    let (outcome, dispatch) = out?;
    set.shutdown();
    let computed = rec.values.done_count().saturating_sub(before);
    let plan = plan.threads;
    Ok(SliceRun { record: rec, outcome, computed, seconds, plan, resumed, already_complete: false, dispatch })
}

/// The grid's points not yet done, as tasks to the set's workers; `rec`'s values hold what finished
/// (saved every `persist_every` points). Returns how it ended (and the dispatch report), and the seconds.
fn run_grid(
    store: &Store,
    rec: &mut SliceRecord,
    set: &mut WorkerSet,
    req: &SliceRequest<'_>,
    cancel: &Cancel,
    progress: &mut dyn FnMut(usize, usize),
) -> (Result<(Outcome, DispatchReport)>, f64) {
    let total = rec.values.done.len();
    let base = rec.clone();
    let mut persist = |v: &SliceValues| -> Result<()> {
        let mut r = base.clone();
        r.values = v.clone();
        r.updated = unix_now();
        slices::put(store, &r)?;
        Ok(())
    };
    let evals: Vec<_> = set.workers.iter_mut().map(worker_evaluator).collect();
    let started = std::time::Instant::now();
    let label = &req.label;
    let out = evaluate_points(
        &mut rec.values,
        evals,
        cancel,
        req.persist_every.max(1),
        &mut persist,
        |n| progress(n, total),
        |line| tracing::warn!("{label}: {line}"),
    );
    (out, started.elapsed().as_secs_f64())
}

/// The record's signature: the request's prefix, the centre, and a hash of the directions, the grid and
/// the model in use (the same request resumes its unfinished record).
fn slice_signature(plan: &ModelPlan, req: &SliceRequest<'_>, directions: &DirectionSource) -> Result<String> {
    let parts = [
        serde_json::to_string(directions)?,
        serde_json::to_string(&req.xs)?,
        serde_json::to_string(&req.ys)?,
    ];
    Ok(plan.record_signature(&req.signature_prefix, req.centre_name(), &parts))
}

/// The centre's loss and accuracy on the first worker; one lost meanwhile is left out and the next
/// one asked.
fn evaluate_centre(set: &mut WorkerSet, centres: &mut Vec<Handle>) -> Result<(f64, Option<f64>)> {
    loop {
        let others = set.len() > 1;
        let Some(w) = set.workers.first_mut() else {
            return Err(anyhow!("every worker was lost before the centre checkpoint was evaluated"));
        };
        match w.set_state(centres[0]).and_then(|()| w.evaluate()) {
            Ok((loss, accuracy, _)) => return Ok((loss, accuracy)),
            Err(e) if e.is_worker_failure() && others => {
                set.lose(0, "evaluating the centre", &e);
                centres.remove(0);
            }
            Err(e) => return Err(anyhow::Error::from(e).context("evaluating the centre checkpoint")),
        }
    }
}
