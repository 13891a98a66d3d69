//! Computing a slice with model workers, for the CLI and the daemon alike: start the workers, have each
//! rebuild the plane (centre read from the checkpoint, directions drawn from their seed or read from
//! their files — never shipped), evaluate the centre, find the stored record to resume or make a new
//! one, then hand grid points out to the workers in small blocks ([`super::dispatch`]: lost workers'
//! points go to the others, a straggler's block is copied) and record the results on the calling thread
//! (persisting every few points, progress, cancel): one resume loop for every caller. Workers are
//! started here, one per GPU for a bare `--device cuda`, or dial in from a cluster's launcher
//! (`--workers-listen`).

use super::dispatch::{DispatchReport, Evaluator, PointError, PointEvaluator, evaluate_points};
use super::slice::{Outcome, SliceValues};
use crate::store::slices::{self, DirectionSource, ModelUsed, SliceRecord};
use crate::store::{Store, unix_now};
use crate::workers::contract::{ModelContract, WorkerSource};
use crate::workers::listen::workers_from_launcher;
use crate::workers::pool::{ThreadPlan, default_threads, start_workers};
use crate::workers::{Worker, WorkerError};
use anyhow::{Result, anyhow};
use landscaped_formats::Checkpoint;
use landscaped_maths::directions::RandomDirections;
use landscaped_protocol::messages::{BindRules, GridPoint, Handle, ModelInfo, StateSource, WireContract};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

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
pub fn worker_evaluator(w: &mut Worker) -> PointEvaluator<'_> {
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

/// The devices of extra local workers for a bare `--device cuda` on a node with several GPUs: one
/// worker per GPU the first worker's `hello` listed (`cuda:1`, `cuda:2`, …; the first has `cuda`,
/// i.e. `cuda:0`). Empty when the device names one GPU, or the count of workers was given.
pub fn extra_gpu_devices(device: &str, workers_given: bool, hello_devices: &[String]) -> Vec<String> {
    if workers_given || !device.trim().eq_ignore_ascii_case("cuda") {
        return Vec::new();
    }
    let gpus = hello_devices.iter().filter(|d| d.starts_with("cuda:")).count();
    (1..gpus).map(|i| format!("cuda:{i}")).collect()
}

/// Workers for a job about `centre`: started here (the first, then the rest once the caller knows it
/// needs them) or gathered from a launcher (all at once). See [`start_more`].
pub fn first_workers(
    contract: &ModelContract,
    source: &WorkerSource,
    pc: &WireContract,
    label: &str,
    cancel: &AtomicBool,
) -> Result<Vec<Worker>> {
    match source {
        WorkerSource::Local => Ok(start_workers(&contract.worker_options()?, pc, 1, label)?),
        WorkerSource::Listen(l) => {
            let timeout = contract
                .worker_options()
                .map_or(std::time::Duration::from_secs(120), |o| o.handshake_timeout);
            let mut ws = workers_from_launcher(l, pc, contract.threads, timeout, label, cancel)?;
            if let Some(secs) = contract.worker_call_timeout {
                for w in &mut ws {
                    w.set_call_timeout(std::time::Duration::from_secs(secs));
                }
            }
            Ok(ws)
        }
    }
}

/// Starts the rest of a local job's workers beside `workers` (nothing for workers from a launcher):
/// one per further GPU for a bare `--device cuda`, else up to `plan.workers`.
pub fn start_more(
    workers: &mut Vec<Worker>,
    contract: &ModelContract,
    source: &WorkerSource,
    pc: &WireContract,
    plan: &mut ThreadPlan,
    label: &str,
) -> Result<()> {
    if !matches!(source, WorkerSource::Local) {
        plan.workers = workers.len();
        return Ok(());
    }
    let opts = contract.worker_options()?;
    let devices = workers.first().map(|w| w.hello.devices.clone()).unwrap_or_default();
    let gpus = extra_gpu_devices(&contract.device, contract.workers.is_some(), &devices);
    if !gpus.is_empty() {
        for (i, d) in gpus.iter().enumerate() {
            let c = WireContract { device: d.clone(), ..pc.clone() };
            let more = format!("{label} (GPU {}/{})", i + 2, gpus.len() + 1);
            workers.extend(start_workers(&opts, &c, 1, &more)?);
        }
        plan.workers = workers.len();
    } else if plan.workers > workers.len() {
        let n = plan.workers - workers.len();
        workers.extend(start_workers(&opts, pc, n, &format!("{label} (more)"))?);
    }
    Ok(())
}

/// Bytes the checkpoint's float tensors take as f32: what each extra worker adds in weights.
pub fn checkpoint_weight_bytes(path: &Path) -> Result<usize> {
    let ck = Checkpoint::open(path)?;
    Ok(ck.float_tensors().map(|(_, t)| t.numel() * 4).sum())
}

/// The record's description of the model contract in use.
pub fn model_used(info: &ModelInfo, contract: &landscaped_protocol::messages::WireContract) -> ModelUsed {
    ModelUsed {
        model: contract
            .model
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| contract.factory.clone())
            .unwrap_or_default(),
        eval_data: contract.eval_data.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
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
pub fn prepare_plane(
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
    cancel: &AtomicBool,
    on_start: &mut dyn FnMut(&SliceRecord, bool),
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SliceRun> {
    let contract = req.contract;
    let bind = contract.bind_rules().map_err(|e| anyhow!("--map: {e}"))?;
    let total = req.xs.len() * req.ys.len().max(1);
    let threads = contract.threads.unwrap_or_else(default_threads);
    let weights = checkpoint_weight_bytes(req.plane.centre())?;
    let plan = ThreadPlan::choose(threads, contract.wants_gpu(), weights, total, contract.workers);
    let mut plan = plan;
    let mut pc = contract.protocol_contract(Some(plan.intra_op))?;
    // A factory that takes the checkpoint path gets the centre's (to read a config beside the weights).
    pc.checkpoint = Some(req.plane.centre().to_path_buf());
    let source = contract.worker_source(&pc.id())?;
    // One worker first: its model's parameter list completes the record's signature, and a complete
    // record with that signature means there is nothing to compute (no other worker is started).
    let mut workers = first_workers(contract, &source, &pc, &req.label, cancel)?;
    let info = workers[0].model.clone().unwrap_or_default();
    let mut directions = req.directions.clone();
    if let DirectionSource::Random(d) = &mut directions {
        d.params = parameter_list(&info);
    }
    let signature = format!(
        "{}|{}|{:?}|{:?}|{:?}|{:?}",
        req.signature_prefix,
        req.plane.centre().display(),
        directions,
        req.xs,
        req.ys,
        (
            &pc.model,
            &pc.eval_data,
            &pc.factory,
            &pc.loss,
            pc.batch_size,
            pc.subsample,
            &pc.device,
            &pc.precision
        )
    );
    if req.skip_if_complete
        && let Some(rec) = slices::find_complete(store, &signature)?
    {
        return Ok(SliceRun {
            record: rec,
            outcome: Outcome::Complete,
            computed: 0,
            seconds: 0.0,
            plan,
            resumed: false,
            already_complete: true,
            dispatch: DispatchReport::default(),
        });
    }
    start_more(&mut workers, contract, &source, &pc, &mut plan, &req.label)?;
    // Every worker rebuilds the same plane (same files, same seed): nothing of size d crosses a pipe.
    let prepared: Vec<Result<(Handle, Option<f64>), WorkerError>> = std::thread::scope(|s| {
        let hs: Vec<_> =
            workers.iter_mut().map(|w| s.spawn(|| prepare_plane(w, &req.plane, &bind))).collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(WorkerError::Start("a worker thread panicked".into()))))
            .collect()
    });
    // A worker lost while rebuilding the plane is left out (with a line); a model error stops the job.
    let mut centre_cos = None;
    let mut centres = Vec::with_capacity(workers.len());
    let mut kept = Vec::with_capacity(workers.len());
    let mut first_err = None;
    for (w, p) in workers.into_iter().zip(prepared) {
        match p {
            Ok(cc) => {
                centre_cos.get_or_insert(cc);
                centres.push(cc.0);
                kept.push(w);
            }
            Err(e) if e.is_worker_failure() => {
                tracing::warn!("{}: worker {} was lost while rebuilding the plane: {e}", req.label, w.what());
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut workers = kept;
    let Some((_, cosine)) = centre_cos else {
        return Err(first_err.map_or_else(|| anyhow!("no worker"), |e| e.into()));
    };
    let (mut rec, resumed) = match slices::find_unfinished(store, &signature)? {
        Some(rec) => {
            rec.values.check().map_err(|e| anyhow!("stored slice {}: {e}", rec.id))?;
            (rec, true)
        }
        None => {
            // The centre on the first worker; one lost meanwhile is left out and the next one asked.
            let (loss, accuracy) = loop {
                let others = workers.len() > 1;
                let Some(w) = workers.first_mut() else {
                    return Err(anyhow!("every worker was lost before the centre checkpoint was evaluated"));
                };
                let r = w.set_state(centres[0]).and_then(|()| w.evaluate());
                match r {
                    Ok((loss, accuracy, _)) => break (loss, accuracy),
                    Err(e) if e.is_worker_failure() && others => {
                        tracing::warn!(
                            "{}: worker {} was lost evaluating the centre: {e}",
                            req.label,
                            w.what()
                        );
                        workers.remove(0);
                        centres.remove(0);
                    }
                    Err(e) => return Err(anyhow::Error::from(e).context("evaluating the centre checkpoint")),
                }
            };
            let rec = SliceRecord {
                id: slices::next_id(store)?,
                run: req.run.clone(),
                step: req.step,
                checkpoint: req.plane.centre().display().to_string(),
                directions,
                cosine,
                model: model_used(&info, &pc),
                centre_loss: loss,
                centre_accuracy: accuracy,
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
    let base = rec.clone();
    let mut persist = |v: &SliceValues| -> Result<()> {
        let mut r = base.clone();
        r.values = v.clone();
        r.updated = unix_now();
        slices::put(store, &r)?;
        Ok(())
    };
    let mut values = rec.values.clone();
    let evals: Vec<_> = workers.iter_mut().map(worker_evaluator).collect();
    let started = std::time::Instant::now();
    let label = req.label.clone();
    let out = evaluate_points(
        &mut values,
        evals,
        cancel,
        req.persist_every.max(1),
        &mut persist,
        |n| progress(n, total),
        |line| tracing::warn!("{label}: {line}"),
    );
    let seconds = started.elapsed().as_secs_f64();
    rec.values = values;
    rec.updated = unix_now();
    slices::put(store, &rec)?;
    store.flush()?;
    let (outcome, dispatch) = out?;
    let stopped = crate::workers::pool::shutdown_all(workers, crate::workers::pool::SHUTDOWN_WITHIN);
    if stopped > 0 {
        tracing::warn!("{}: {stopped} worker(s) did not answer shutdown; stopped", req.label);
    }
    let computed = rec.values.done_count().saturating_sub(before);
    Ok(SliceRun { record: rec, outcome, computed, seconds, plan, resumed, already_complete: false, dispatch })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_cuda_device_gets_one_local_worker_per_gpu() {
        let hello: Vec<String> =
            ["cpu", "cuda:0", "cuda:1", "cuda:2"].iter().map(|s| s.to_string()).collect();
        assert_eq!(extra_gpu_devices("cuda", false, &hello), vec!["cuda:1", "cuda:2"]);
        assert_eq!(extra_gpu_devices(" CUDA ", false, &hello), vec!["cuda:1", "cuda:2"]);
        // A named GPU, an explicit worker count, the CPU, or one GPU: no extra workers.
        assert!(extra_gpu_devices("cuda:1", false, &hello).is_empty());
        assert!(extra_gpu_devices("cuda", true, &hello).is_empty());
        assert!(extra_gpu_devices("cpu", false, &hello).is_empty());
        assert!(extra_gpu_devices("cuda", false, &["cpu".into(), "cuda:0".into()]).is_empty());
    }
}
