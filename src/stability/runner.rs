//! The stability job at one checkpoint, for the CLI and the daemon alike: read the checkpoint's own
//! optimizer state ([`super::state`]), start the worker (or admit dial-in ones) with the checkpoint
//! bound, map the state to the model's parameters by the order the worker reports, lay it over the
//! job's input, open the Hessian space, then
//!
//! 1. λmax by Lanczos (top only), warm-started from the previous checkpoint's top vector when one is
//!    stored and fits the model's shapes; the new top vector is stored for the next checkpoint;
//! 2. for Adam/AdamW with the second moment (the state's, or an expert file): λ1(P⁻¹H) by Lanczos on
//!    D·H·D, D = P^{-1/2} loaded into the worker from a file the app writes ([`super::scaling`]),
//!    warm-started likewise;
//! 3. critical sharpness: a forward-only line search along the optimizer's real next update formed
//!    from the state and one gradient ([`super::direction`]; stored as `update.safetensors`, the step
//!    θ − θ_next, beside the warm-start vectors), else along the gradient (P⁻¹g for Adam with a
//!    second-moment file), its first guess from the slope gᵀu;
//!
//! and each against the optimizer's threshold, with the convention named, into a [`StabilityRecord`].

use super::direction::{needs_parameters, next_update};
use super::optimizer::{OptimizerInput, Resolved};
use super::scaling::{write_scaling, write_scaling_from_state};
use super::state::{self, MappedState};
use crate::cancel::Cancel;
use crate::sharpness::remote::WorkerSpace;
use crate::sharpness::runner::workers_at_checkpoint;
use crate::store::slices::ModelUsed;
use crate::store::stability::{Against, StabilityRecord};
use crate::store::unix_now;
use crate::workers::contract::ModelContract;
use anyhow::{Context, Result, anyhow};
use landscaped_formats::ParamShape;
use landscaped_formats::safetensors_file::SafetensorsWriter;
use landscaped_maths::curvature::lanczos::{Extremes, LanczosOptions, top_eigen};
use landscaped_maths::curvature::measures::ParamSlot;
use landscaped_maths::curvature::space::{HessianSpace, Init, ParamSubset, Vector};
use landscaped_maths::stability::critical::{LineSearchOptions, critical_sharpness_along};
use landscaped_maths::stability::preconditioner::AdamMoments;
use landscaped_maths::stability::scaled::Scaled;
use landscaped_maths::stability::threshold::{UpdateRule, gd_threshold, stability_ratio};
use landscaped_protocol::messages::BindRules;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How the job computes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct StabilityOptions {
    /// Lanczos for λmax and λ1 (top only).
    pub lanczos: LanczosOptions,
    /// Start Lanczos from the previous checkpoint's top vector when stored and shapes allow.
    pub warm_start: bool,
    /// Run the critical-sharpness line search.
    pub critical: bool,
    pub line_search: LineSearchOptions,
}

impl Default for StabilityOptions {
    fn default() -> Self {
        StabilityOptions {
            lanczos: LanczosOptions { max_steps: 100, tol: 1e-3, top_k: 1, seed: 0 },
            warm_start: true,
            critical: true,
            line_search: LineSearchOptions::default(),
        }
    }
}

/// Where a run's warm-start vectors live: `<data dir>/stability/<run>/`.
pub fn warm_dir(data_dir: &Path, run: &str) -> PathBuf {
    let safe: String = run
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    data_dir.join("stability").join(safe)
}

/// What one checkpoint's job needs besides the model contract.
pub struct StabilityRequest<'a> {
    pub run: &'a str,
    pub step: u64,
    pub checkpoint: &'a Path,
    pub input: &'a OptimizerInput,
    pub opts: &'a StabilityOptions,
    /// The run's warm-start folder (`None`: no warm start, nothing stored).
    pub warm: Option<PathBuf>,
}

/// `landscaped stability` and the daemon's stability job: the record at one checkpoint.
pub fn stability_at(
    contract: &ModelContract,
    req: &StabilityRequest<'_>,
    label: &str,
    cancel: &Cancel,
) -> Result<StabilityRecord> {
    req.input.check()?;
    let t0 = std::time::Instant::now();
    let found = state::find(req.checkpoint);
    let (mut set, used) = workers_at_checkpoint(contract, Some(req.checkpoint), label, cancel)?;
    let w = set.workers.first_mut().ok_or_else(|| anyhow!("{label}: no worker started"))?;
    let order: Vec<ParamShape> = w
        .model
        .as_ref()
        .map(|m| m.parameter_order().into_iter().map(ParamShape::from).collect())
        .unwrap_or_default();
    let applied = state::apply(req.input, found, &order);
    let mut resolved = applied.input.resolve(req.step);
    resolved.notes.splice(0..0, applied.notes);
    let req = StabilityRequest { input: &applied.input, warm: req.warm.clone(), ..*req };
    let mut space = WorkerSpace::open(w, ParamSubset::All)?;
    let r = measure(&mut space, &req, &resolved, applied.mapped.as_ref());
    let closed = space.close();
    let mut rec = r?;
    closed?;
    set.shutdown();
    fill_model(&mut rec, &used);
    rec.seconds = t0.elapsed().as_secs_f64();
    Ok(rec)
}

fn fill_model(rec: &mut StabilityRecord, used: &ModelUsed) {
    rec.model = used.model.clone();
    rec.loss = used.loss.clone();
    rec.samples = used.samples;
}

/// The measurements in an open space (see the module docs).
pub(crate) fn measure(
    space: &mut WorkerSpace<'_>,
    req: &StabilityRequest<'_>,
    res: &Resolved,
    ms: Option<&MappedState>,
) -> Result<StabilityRecord> {
    let mut rec = StabilityRecord {
        run: req.run.to_string(),
        step: req.step,
        dim: space.dim(),
        optimizer: res.describe.clone(),
        lr: res.lr,
        source: req.input.source.clone(),
        notes: res.notes.clone(),
        computed_unix: unix_now(),
        ..Default::default()
    };
    rec.base_loss = space.loss(None).context("the loss at the checkpoint")?;
    let warm = if req.opts.warm_start { req.warm.clone() } else { None };
    // 1. λmax.
    let start = load_warm(space, warm.as_deref(), "hessian", &mut rec.notes);
    rec.warm_hessian = start.is_some();
    let e = top_and_store(space, &req.opts.lanczos, start, warm.as_deref(), "hessian", &mut rec.notes)?;
    rec.hvps += e.hvps;
    rec.hessian = Some(e);
    // 2. λ1(P⁻¹H) for Adam with v (the checkpoint's state, or an expert file).
    let mut scale: Option<Vector> = None;
    if let Some(UpdateRule::Adam { beta1, beta2, eps, step, amsgrad }) = &res.rule {
        let adam = AdamMoments {
            beta1: *beta1,
            beta2: *beta2,
            eps: *eps,
            step: *step,
            bias_correction: !res.uncorrected,
        };
        let loaded = match (ms.filter(|_| res.moments_in_state), &res.exp_avg_sq) {
            (Some(ms), _) => {
                let (file, missing) =
                    write_scaling_from_state(space.layout(), ms, &adam, *amsgrad, res.folded)?;
                if !missing.is_empty() {
                    rec.notes.push(format!(
                        "{} parameter(s) without Adam state (e.g. {:?}) are left out of P⁻¹H (D = 0)",
                        missing.len(),
                        missing[0]
                    ));
                }
                let rules =
                    BindRules { strip_prefixes: Vec::new(), missing_zero: true, ..BindRules::default() };
                let d = space.load_tensors(&file.path, &rules).with_context(|| {
                    format!("the preconditioner from {} does not fit the model", ms.state.source.display())
                })?;
                Some((d, file))
            }
            (None, Some(v)) => {
                let fold = if res.folded { Some(&req.input.lr_by_param) } else { None };
                let file = write_scaling(v, &adam, fold)?;
                let d = space.load_tensors(&file.path, &BindRules::default()).with_context(|| {
                    format!("the preconditioner from {} does not fit the model", v.display())
                })?;
                Some((d, file))
            }
            (None, None) => None,
        };
        if let Some((d, _file)) = loaded {
            scale = Some(d);
            let start = load_warm(space, warm.as_deref(), "preconditioned", &mut rec.notes);
            rec.warm_preconditioned = start.is_some();
            let mut scaled = Scaled::new(space, d);
            let e = top_and_store(
                &mut scaled,
                &req.opts.lanczos,
                start,
                warm.as_deref(),
                "preconditioned",
                &mut rec.notes,
            )?;
            rec.hvps += e.hvps;
            rec.preconditioned = Some(e);
        }
    }
    // 3. Critical sharpness along the optimizer's next update (or the gradient).
    if req.opts.critical {
        let u = space.new_vector(Init::Zeros)?;
        let g = space.new_vector(Init::Zeros)?;
        let mut dir = String::new();
        let r = (|| {
            space.gradient(None, g)?;
            let lr_ref = if res.folded { Some(1.0) } else { res.lr };
            let update = match (ms.and_then(|m| m.rule.map(|r| (m, r))), lr_ref) {
                (Some((m, rule)), Some(lr_ref)) => {
                    Some(update_vector(space, g, u, m, rule, lr_ref, warm.as_deref(), &mut rec.notes)?)
                }
                _ => None,
            };
            match update {
                Some(describe) => dir = describe,
                None => {
                    space.combine(u, 0.0, &[(1.0, g)])?;
                    dir = "∇L".into();
                    if let Some(d) = scale.filter(|_| !res.moments_in_state) {
                        space.multiply(u, d)?;
                        space.multiply(u, d)?;
                        dir = "P⁻¹∇L".into();
                    }
                    if ms.is_some_and(|m| m.rule.is_some()) && lr_ref.is_none() {
                        rec.notes.push("critical sharpness along ∇L: the learning rate is needed to form the optimizer's next update".into());
                    }
                }
            }
            let slope = space.dots(g, &[u])?[0];
            let scale_of = rec.preconditioned.as_ref().or(rec.hessian.as_ref()).map(|e| e.lambda_max);
            let eta0 = match (res.lr, res.folded) {
                (Some(lr), false) => lr,
                _ if dir.starts_with("the optimizer") => 1.0,
                _ => scale_of.filter(|l| *l > 0.0).map_or(1e-3, |l| 2.0 / l),
            };
            critical_sharpness_along(space, u, eta0, Some(slope), &req.opts.line_search)
        })();
        space.free(&[u, g])?;
        let c = r.context("critical sharpness (line search)")?;
        rec.forward_passes = c.forward_passes;
        rec.direction = dir;
        if !c.found {
            rec.notes.push(format!(
                "critical sharpness: no step in [{:.3e}, {:.3e}] brackets the loss rise within {} forward passes",
                c.lo, c.hi, c.forward_passes
            ));
        }
        rec.critical = Some(c);
    }
    if let Some(d) = scale {
        space.free(&[d])?;
    }
    rec.rows = rows(&rec, res);
    Ok(rec)
}

/// Fills `u` with the optimizer's next update (see [`super::direction`]) from the gradient `g`; stores
/// the step θ − θ_next (u·η_ref) at `<warm>/update.safetensors`. Returns the direction's description.
#[allow(clippy::too_many_arguments)]
fn update_vector(
    space: &mut WorkerSpace<'_>,
    g: Vector,
    u: Vector,
    ms: &MappedState,
    rule: &str,
    lr_ref: f64,
    warm: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<String> {
    let grad = space.read(g)?;
    let theta = if needs_parameters(ms) { Some(space.read(space.centre())?) } else { None };
    let layout = space.layout().to_vec();
    let up = next_update(&layout, &grad, theta.as_deref(), ms, rule, lr_ref)?;
    if !up.unmoved.is_empty() {
        notes.push(format!(
            "{} parameter(s) in no param group of the optimizer (e.g. {:?}) do not move in its next update",
            up.unmoved.len(),
            up.unmoved[0]
        ));
    }
    let v = space.new_vector(Init::Values(up.values.clone()))?;
    space.combine(u, 0.0, &[(1.0, v)])?;
    space.free(&[v])?;
    if let Some(dir) = warm {
        let step: Vec<f64> = up.values.iter().map(|x| x * lr_ref).collect();
        if let Err(e) = store_values(&layout, &step, &dir.join("update.safetensors")) {
            notes.push(format!("the next update not stored: {e:#}"));
        }
    }
    Ok(format!("the optimizer's next update ({rule} step from the checkpoint's state and ∇L)"))
}

/// The stored top vector `<warm>/<name>.safetensors`, loaded into the worker when it fits the model
/// (same names and shapes); else `None`, with a note when a stored one did not fit.
fn load_warm(
    space: &mut WorkerSpace<'_>,
    warm: Option<&Path>,
    name: &str,
    notes: &mut Vec<String>,
) -> Option<Vector> {
    let f = warm?.join(format!("{name}.safetensors"));
    if !f.is_file() {
        return None;
    }
    let exact = BindRules { strip_prefixes: Vec::new(), ..BindRules::default() };
    match space.load_tensors(&f, &exact) {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!("warm start ({name}) not used: {e:#}"));
            None
        }
    }
}

/// Lanczos (top only) from `start` (or cold); the new top vector is stored at `<warm>/<name>.safetensors`.
fn top_and_store(
    space: &mut dyn HessianSpace,
    opts: &LanczosOptions,
    start: Option<Vector>,
    warm: Option<&Path>,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<Extremes> {
    let (e, top) = top_eigen(space, opts, start)?;
    let stored = match warm {
        Some(d) => store_vector(space, top, &d.join(format!("{name}.safetensors"))),
        None => Ok(()),
    };
    space.free(&[top])?;
    if let Err(e) = stored {
        notes.push(format!("warm start ({name}) not stored: {e:#}"));
    }
    Ok(e)
}

/// Writes the vector `v` of the space, tensor by tensor as the layout names them, to `dest` (f32).
fn store_vector(space: &mut dyn HessianSpace, v: Vector, dest: &Path) -> Result<()> {
    let values = space.read(v)?;
    let layout = space.layout().to_vec();
    store_values(&layout, &values, dest)
}

/// Writes `values` (in `layout`'s order) tensor by tensor to `dest` (f32).
fn store_values(layout: &[ParamSlot], values: &[f64], dest: &Path) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let names: Vec<(String, Vec<usize>)> = layout.iter().map(|s| (s.name.clone(), s.shape.clone())).collect();
    let mut w = SafetensorsWriter::create(dest, &names, &Default::default())?;
    for s in layout {
        w.write(&values[s.offset..s.offset + s.len()])?;
    }
    w.finish(dest, false)
}

/// Each measured quantity against its threshold (see docs/stability.md for the conventions).
fn rows(rec: &StabilityRecord, res: &Resolved) -> Vec<Against> {
    let mut out = Vec::new();
    let Some(lr) = res.lr else { return out };
    let gd = |q: &str, v: f64, conv: String| Against {
        quantity: q.to_string(),
        value: v,
        threshold: gd_threshold(lr),
        ratio: stability_ratio(v, gd_threshold(lr)),
        convention: conv,
    };
    let critical = |c: &landscaped_maths::stability::critical::CriticalSharpness| {
        let dir = if rec.direction.is_empty() { "∇L" } else { rec.direction.as_str() };
        if res.folded {
            gd(
                "critical_sharpness",
                c.lambda_c,
                format!(
                    "2 vs λc = 2/sc along {dir}, per-group η folded in (sc: the critical multiple of the real step; Kalra et al. 2026); ratio = 1/sc"
                ),
            )
        } else {
            gd(
                "critical_sharpness",
                c.lambda_c,
                format!("2/η vs λc = 2/ηc along {dir} (Kalra et al. 2026); ratio = η/ηc"),
            )
        }
    };
    let Some(rule) = &res.rule else {
        // No optimizer known at all (no state, none given): the raw ratio against gradient descent's.
        if res.kind_unknown && !res.folded {
            if let Some(e) = &rec.hessian {
                out.push(gd(
                    "lambda_max",
                    e.lambda_max,
                    "2/η: gradient descent's limit (Cohen et al. 2021); the optimizer is not known, its own limit may differ".into(),
                ));
            }
            if let Some(c) = &rec.critical {
                out.push(critical(c));
            }
        }
        return out;
    };
    let Ok(thr) = rule.threshold(lr) else { return out };
    if let Some(e) = &rec.hessian {
        if rule.adaptive() {
            if !res.folded {
                out.push(gd(
                    "lambda_max",
                    e.lambda_max,
                    "2/η: gradient descent's limit, for reference only (Adam's limit is on the preconditioned sharpness)"
                        .to_string(),
                ));
            }
        } else if !res.folded {
            out.push(Against {
                quantity: "lambda_max".into(),
                value: e.lambda_max,
                threshold: thr.value,
                ratio: stability_ratio(e.lambda_max, thr.value),
                convention: format!("{} — {}", thr.formula, thr.source),
            });
        }
    }
    if let Some(e) = &rec.preconditioned {
        out.push(Against {
            quantity: "preconditioned_lambda_1".into(),
            value: e.lambda_max,
            threshold: thr.value,
            ratio: stability_ratio(e.lambda_max, thr.value),
            convention: format!(
                "{} — {}; {}, ε outside the root, η {}",
                thr.formula,
                thr.source,
                if res.uncorrected {
                    "P = √v+ε (bias_correction off, as DeepSpeed's kernel)"
                } else {
                    "P = (1−β1^t)(√(v/(1−β2^t))+ε)"
                },
                if res.folded { "folded into P per group (threshold dimensionless)" } else { "outside P" }
            ),
        });
    }
    if let Some(c) = &rec.critical
        && (!res.folded || rec.direction.starts_with("the optimizer"))
    {
        out.push(critical(c));
    }
    out
}
