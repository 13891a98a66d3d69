//! The scalars landscaped writes, by record kind. Each source maps store records to [`Scalar`]s with
//! tags under `landscaped/…`; the writer drops values at steps a tag already has.
//!
//! Two lists, one line per source:
//! - [`CHECKPOINT_SOURCES`]: what one ingested checkpoint gives (its record and its chosen tensors),
//!   written as each checkpoint lands;
//! - [`JOB_SOURCES`]: what a periodic job's records of a run give (every step they hold), written after
//!   each job run. A new job's scalars are one function `fn(&Store, run) -> store::Result<Vec<Scalar>>`
//!   added to that list.

use crate::store::checkpoints::{CheckpointRecord, TensorRecord};
use crate::store::slices::SliceRecord;
use crate::store::{self, RunStepRecord, Store};

/// One value of a tag at a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub step: u64,
    pub value: f64,
    /// Unix seconds when the value was made (the event's wall time).
    pub wall_time: f64,
}

impl Scalar {
    pub fn new(tag: impl Into<String>, step: u64, value: f64, wall_time: f64) -> Scalar {
        Scalar { tag: tag.into(), step, value, wall_time }
    }
}

/// One ingested checkpoint: its record and the tensors chosen for per-tensor series.
pub struct CheckpointView<'a> {
    pub record: &'a CheckpointRecord,
    pub chosen: &'a [&'a TensorRecord],
}

pub type CheckpointSource = fn(&CheckpointView<'_>) -> Vec<Scalar>;
pub type JobSource = fn(&Store, &str) -> store::Result<Vec<Scalar>>;

/// Scalars of each ingested checkpoint.
pub const CHECKPOINT_SOURCES: &[CheckpointSource] = &[weights, tensor_norms];

/// Scalars of the periodic jobs' records (the stability and spectra jobs add theirs here).
pub const JOB_SOURCES: &[JobSource] = &[sharpness, slices, pca, stability, spectra];

/// `landscaped/weights/…`: ‖θ‖₂, ‖θ − θ_first‖₂, ‖θ − θ_prev‖₂, cos between consecutive updates, and
/// the NaN / Inf counts (the columns of `landscaped checkpoints`).
fn weights(v: &CheckpointView<'_>) -> Vec<Scalar> {
    let r = v.record;
    let wall = r.ingested_unix as f64;
    let mut out = vec![
        Scalar::new("landscaped/weights/global_norm", r.step, r.global_norm, wall),
        Scalar::new("landscaped/weights/nan_count", r.step, r.nan_count as f64, wall),
        Scalar::new("landscaped/weights/inf_count", r.step, r.inf_count as f64, wall),
    ];
    let optional = [
        ("landscaped/weights/dist_from_first", r.dist_first),
        ("landscaped/weights/update_norm", r.update_norm),
        ("landscaped/weights/update_cosine", r.update_cos),
    ];
    out.extend(optional.into_iter().filter_map(|(t, x)| x.map(|x| Scalar::new(t, r.step, x, wall))));
    out
}

/// `landscaped/tensor_norm/<name>`: ‖W‖₂ of each chosen tensor.
fn tensor_norms(v: &CheckpointView<'_>) -> Vec<Scalar> {
    let wall = v.record.ingested_unix as f64;
    v.chosen
        .iter()
        .filter_map(|t| {
            let s = t.stats.as_ref()?;
            Some(Scalar::new(format!("landscaped/tensor_norm/{}", t.name), v.record.step, s.l2, wall))
        })
        .collect()
}

/// `landscaped/sharpness/…`: Hessian λmax, λmin, |λmin/λmax|, trace (and its standard error), the
/// loss it was taken at, and each sharpness measure by name.
fn sharpness(store: &Store, run: &str) -> store::Result<Vec<Scalar>> {
    let mut out = Vec::new();
    for r in store::sharpness::SharpnessRecord::list(store, run)? {
        let wall = r.computed_unix as f64;
        let mut put = |name: &str, x: f64| {
            out.push(Scalar::new(format!("landscaped/sharpness/{name}"), r.step, x, wall))
        };
        put("base_loss", r.base_loss);
        if let Some(e) = &r.extremes {
            put("lambda_max", e.lambda_max);
            put("lambda_min", e.lambda_min);
            put("ratio", e.ratio);
        }
        if let Some(t) = &r.trace {
            put("trace", t.trace);
            put("trace_std_error", t.std_error);
        }
        for m in &r.measures {
            put(&format!("measure/{}", m.name), m.value);
        }
    }
    Ok(out)
}

/// `landscaped/stability/<quantity>/{ratio,value,threshold}` of each stability record (`landscaped
/// stability`, `[run.stability]`): each curvature against its optimizer's threshold (ratio 1 = at the edge
/// of stability), as `landscaped_stability_{ratio,value,threshold}` on /metrics; quantities without a
/// threshold (no learning rate known, an optimizer without one) give nothing.
fn stability(store: &Store, run: &str) -> store::Result<Vec<Scalar>> {
    let mut out = Vec::new();
    for r in store::stability::StabilityRecord::list(store, run)? {
        let wall = r.computed_unix as f64;
        for row in &r.rows {
            let q = tag_part(&row.quantity);
            for (name, x) in [("ratio", row.ratio), ("value", row.value), ("threshold", row.threshold)] {
                out.push(Scalar::new(format!("landscaped/stability/{q}/{name}"), r.step, x, wall));
            }
        }
    }
    Ok(out)
}

/// `landscaped/spectra/…` of each spectra record (`[run.spectra]`): the run-level summaries of every
/// layer's WeightWatcher metrics, as the `landscaped_spectra_*` gauges (per layer: `landscaped spectra`).
fn spectra(store: &Store, run: &str) -> store::Result<Vec<Scalar>> {
    let mut out = Vec::new();
    for r in store::spectra::SpectraRecord::list(store, run)? {
        let Some(s) = &r.summary else { continue };
        let wall = r.computed_unix as f64;
        for (name, x) in [
            ("mean_alpha", s.mean_alpha),
            ("mean_alpha_weighted", s.mean_alpha_weighted),
            ("alpha_below_2_fraction", s.frac_alpha_below_2),
            ("mean_log_norm", s.mean_log_norm),
            ("mean_log_spectral_norm", s.mean_log_spectral_norm),
            ("mean_stable_rank", s.mean_stable_rank),
            ("layers_fitted", s.fitted as f64),
        ] {
            out.push(Scalar::new(format!("landscaped/spectra/{name}"), r.step, x, wall));
        }
    }
    Ok(out)
}

/// A name made safe as one part of a tag (letters, digits, `_`, `-`, `.`).
fn tag_part(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect()
}

/// `landscaped/slice/<kind>/…` of each complete slice of the run at its centre step: the centre loss
/// and the curvature at 0 along x and y (as `landscaped_slice_curvature`).
fn slices(store: &Store, run: &str) -> store::Result<Vec<Scalar>> {
    use crate::landscape::slice::{curvature_at_zero, x_row, y_column};
    let mut out = Vec::new();
    for (step, r) in complete_slices(store, run)? {
        let v = &r.values;
        let wall = r.updated as f64;
        let tag = |what: &str| format!("landscaped/slice/{}/{what}", r.kind());
        out.push(Scalar::new(tag("centre_loss"), step, r.centre_loss, wall));
        out.push(Scalar::new(tag("curvature_x"), step, curvature_at_zero(&v.xs, &x_row(v)), wall));
        if v.is_2d() {
            out.push(Scalar::new(tag("curvature_y"), step, curvature_at_zero(&v.ys, &y_column(v)), wall));
        }
    }
    Ok(out)
}

/// Each complete slice of the run that has a centre step, with that step.
pub(super) fn complete_slices(store: &Store, run: &str) -> store::Result<Vec<(u64, SliceRecord)>> {
    let slices = store::slices::of_run(store, run)?;
    Ok(slices.into_iter().filter(|r| r.values.is_complete()).filter_map(|r| Some((r.step?, r))).collect())
}

/// `landscaped/pca/explained_variance_ratio/<k>` of each trajectory PCA, at its newest step.
fn pca(store: &Store, run: &str) -> store::Result<Vec<Scalar>> {
    let mut out = Vec::new();
    for r in store::trajectory::pca_history(store, run)? {
        let Some(&step) = r.steps.last() else { continue };
        for (k, x) in r.explained_variance_ratio.iter().enumerate() {
            out.push(Scalar::new(
                format!("landscaped/pca/explained_variance_ratio/pc{}", k + 1),
                step,
                *x,
                r.computed_at as f64,
            ));
        }
    }
    Ok(out)
}
