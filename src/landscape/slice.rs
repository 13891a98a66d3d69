//! Slice values on a grid, Z[iy][ix] with explicit coordinates and a done mask (NaN where not computed),
//! and the loop that fills them: resumable (points already done are skipped), cancellable, persisting
//! progress every few points through a callback (the store), reporting progress for a bar.

use anyhow::Result;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SliceValues {
    /// x coordinates (the first direction), length nx.
    pub xs: Vec<f64>,
    /// y coordinates; empty for a 1D slice (which has one row).
    pub ys: Vec<f64>,
    /// Row-major Z[iy][ix], length ny·nx; NaN where not computed.
    pub loss: Vec<f64>,
    /// Accuracy, same layout; NaN where not computed or not a classification loss.
    pub accuracy: Vec<f64>,
    pub done: Vec<bool>,
}

/// How a run of [`evaluate_points`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Cancelled,
}

impl SliceValues {
    pub fn new(xs: Vec<f64>, ys: Vec<f64>) -> SliceValues {
        let n = xs.len() * ys.len().max(1);
        SliceValues { xs, ys, loss: vec![f64::NAN; n], accuracy: vec![f64::NAN; n], done: vec![false; n] }
    }

    pub fn nx(&self) -> usize {
        self.xs.len()
    }

    /// Rows: 1 for a 1D slice.
    pub fn ny(&self) -> usize {
        self.ys.len().max(1)
    }

    pub fn is_2d(&self) -> bool {
        !self.ys.is_empty()
    }

    /// (x, y) of point `i` (y = 0 for 1D).
    pub fn coords(&self, i: usize) -> (f64, f64) {
        let (iy, ix) = (i / self.nx(), i % self.nx());
        (self.xs[ix], self.ys.get(iy).copied().unwrap_or(0.0))
    }

    pub fn loss_at(&self, iy: usize, ix: usize) -> f64 {
        self.loss[iy * self.nx() + ix]
    }

    /// Rows of the loss grid, Z[iy][ix].
    pub fn loss_rows(&self) -> Vec<Vec<f64>> {
        self.loss.chunks(self.nx().max(1)).map(<[f64]>::to_vec).collect()
    }

    pub fn accuracy_rows(&self) -> Vec<Vec<f64>> {
        self.accuracy.chunks(self.nx().max(1)).map(<[f64]>::to_vec).collect()
    }

    pub fn done_count(&self) -> usize {
        self.done.iter().filter(|&&d| d).count()
    }

    pub fn is_complete(&self) -> bool {
        self.done.iter().all(|&d| d)
    }

    /// The point at the centre θ* (x = 0 and y = 0), if the grid has it.
    pub fn centre(&self) -> Option<usize> {
        let ix = self.xs.iter().position(|&x| x == 0.0)?;
        let iy = if self.is_2d() { self.ys.iter().position(|&y| y == 0.0)? } else { 0 };
        Some(iy * self.nx() + ix)
    }

    /// Checks the internal shape (records read from the store are untrusted).
    pub fn check(&self) -> Result<(), String> {
        let n = self.nx() * self.ny();
        if self.loss.len() != n || self.accuracy.len() != n || self.done.len() != n {
            return Err(format!(
                "slice values have inconsistent lengths for a {}×{} grid",
                self.ny(),
                self.nx()
            ));
        }
        Ok(())
    }
}

/// Fills every point not yet done, in row-major order. `eval(x, y)` gives (loss, accuracy);
/// `persist` is called every `persist_every` points and at the end (complete or cancelled);
/// `progress` after every point with the number done. Stops early when `cancel` is set.
pub fn evaluate_points(
    values: &mut SliceValues,
    mut eval: impl FnMut(f64, f64) -> Result<(f64, Option<f64>)>,
    cancel: &AtomicBool,
    persist_every: usize,
    mut persist: impl FnMut(&SliceValues) -> Result<()>,
    mut progress: impl FnMut(usize),
) -> Result<Outcome> {
    let mut since = 0;
    let mut done = values.done_count();
    for i in 0..values.done.len() {
        if values.done[i] {
            continue;
        }
        if cancel.load(Ordering::Relaxed) {
            persist(values)?;
            return Ok(Outcome::Cancelled);
        }
        let (x, y) = values.coords(i);
        let (loss, acc) = eval(x, y)?;
        values.loss[i] = loss;
        values.accuracy[i] = acc.unwrap_or(f64::NAN);
        values.done[i] = true;
        done += 1;
        since += 1;
        progress(done);
        if since >= persist_every.max(1) {
            persist(values)?;
            since = 0;
        }
    }
    persist(values)?;
    Ok(Outcome::Complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_square_grid_is_row_major_with_nan_until_done() {
        let mut v = SliceValues::new(vec![-1.0, 0.0, 1.0], vec![0.0, 2.0]);
        assert_eq!((v.ny(), v.nx()), (2, 3));
        assert!(v.loss.iter().all(|x| x.is_nan()));
        assert_eq!(v.centre(), Some(1));
        let never = AtomicBool::new(false);
        let out =
            evaluate_points(&mut v, |x, y| Ok((10.0 * y + x, None)), &never, 2, |_| Ok(()), |_| {}).unwrap();
        assert_eq!(out, Outcome::Complete);
        assert_eq!(v.loss_rows(), vec![vec![-1.0, 0.0, 1.0], vec![19.0, 20.0, 21.0]]);
        assert_eq!(v.loss_at(1, 0), 19.0);
    }

    #[test]
    fn resumes_after_interruption_without_recomputing() {
        let mut v = SliceValues::new(vec![0.0, 1.0, 2.0, 3.0, 4.0], vec![]);
        let cancel = AtomicBool::new(false);
        let mut saved = None;
        let mut calls = 0;
        let out = evaluate_points(
            &mut v,
            |x, _| {
                calls += 1;
                if calls == 3 {
                    cancel.store(true, Ordering::Relaxed);
                }
                Ok((x * x, Some(0.5)))
            },
            &cancel,
            100,
            |s| {
                saved = Some(s.clone());
                Ok(())
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(out, Outcome::Cancelled);
        let mut resumed = saved.unwrap();
        assert_eq!(resumed.done, vec![true, true, true, false, false]);
        assert!(resumed.loss[3].is_nan());
        let mut xs_seen = Vec::new();
        let never = AtomicBool::new(false);
        evaluate_points(
            &mut resumed,
            |x, _| {
                xs_seen.push(x);
                Ok((x * x, Some(0.5)))
            },
            &never,
            1,
            |_| Ok(()),
            |_| {},
        )
        .unwrap();
        assert_eq!(xs_seen, vec![3.0, 4.0]);
        assert_eq!(resumed.loss, vec![0.0, 1.0, 4.0, 9.0, 16.0]);
        assert!(resumed.is_complete());
    }
}
