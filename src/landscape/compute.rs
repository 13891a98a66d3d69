//! Evaluating a slice with a loaded model: the plane θ* + a·δ + b·η held on the device once, each grid
//! point written into the module in place and evaluated (eval mode, no grad), the module put back at
//! θ* afterwards.

use super::slice::{Outcome, SliceValues, evaluate_points};
use crate::model::{Evaluation, Model, State};
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

/// Fills the points of `values` not yet done. `dy` is required for a 2D slice.
pub fn evaluate_slice(
    model: &mut Model,
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
    let out = evaluate_points(
        values,
        |a, b| {
            model.set_point(&plane, a, b)?;
            let e = model.evaluate()?;
            Ok((e.loss, e.accuracy))
        },
        ctl.cancel,
        ctl.persist_every,
        |v| (ctl.persist)(v),
        |n| (ctl.progress)(n),
    );
    model.set_state(centre)?;
    out
}
