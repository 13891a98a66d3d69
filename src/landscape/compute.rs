//! Evaluating a slice with a loaded model: the plane θ* + a·δ + b·η held on the device once, each grid
//! point written into the module in place and evaluated (eval mode, no grad), on copies of the model in
//! parallel when there are [`Replicas`], the module put back at θ* afterwards.

use super::slice::{Outcome, SliceValues, evaluate_points};
use crate::model::{Evaluation, Model, Replicas, State, set_threads};
use anyhow::Result;
use std::sync::atomic::AtomicBool;

/// Callbacks and limits of one slice computation.
pub struct Control<'a> {
    pub cancel: &'a AtomicBool,
    /// Persist after this many points.
    pub persist_every: usize,
    pub persist: &'a mut dyn FnMut(&SliceValues) -> Result<()>,
    pub progress: &'a mut dyn FnMut(usize),
}

/// Loss and accuracy at the centre alone.
pub fn evaluate_centre(model: &mut Model, centre: &State) -> Result<Evaluation> {
    model.set_state(centre)?;
    model.evaluate()
}

/// Fills the points of `values` not yet done. `dy` is required for a 2D slice. With replicas, each copy
/// of the model evaluates its own points on its own thread (`replicas.intra_op` libtorch threads each);
/// without, points are evaluated one by one on the calling thread.
pub fn evaluate_slice(
    model: &mut Model,
    replicas: &mut Replicas,
    centre: &State,
    dx: &State,
    dy: Option<&State>,
    values: &mut SliceValues,
    ctl: Control<'_>,
) -> Result<Outcome> {
    if values.is_2d() && dy.is_none() {
        anyhow::bail!("a 2D slice needs a y direction");
    }
    model.set_state(centre)?;
    let plane = model.plane(centre, dx, dy.map(|d| d.as_slice()))?;
    let intra_op = replicas.intra_op;
    let parallel = !replicas.models.is_empty();
    let evals: Vec<_> = std::iter::once(&mut *model)
        .chain(replicas.models.iter_mut())
        .map(|m| {
            let plane = plane.share();
            let mut first = parallel;
            move |a: f64, b: f64| -> Result<(f64, Option<f64>)> {
                if first {
                    // A new thread starts with libtorch's default thread count: set this worker's share.
                    set_threads(intra_op);
                    first = false;
                }
                m.set_point(&plane, a, b)?;
                let e = m.evaluate()?;
                Ok((e.loss, e.accuracy))
            }
        })
        .collect();
    let out = evaluate_points(
        values,
        evals,
        ctl.cancel,
        ctl.persist_every,
        |v| (ctl.persist)(v),
        |n| (ctl.progress)(n),
    );
    model.set_state(centre)?;
    out
}
