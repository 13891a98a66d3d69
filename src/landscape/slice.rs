//! Slice values on a grid, Z[iy][ix] with explicit coordinates and a done mask (NaN where not computed):
//! what is stored and resumed. `dispatch` fills them.

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

/// How a run of [`super::dispatch::evaluate_points`] ended.
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

    pub(crate) fn is_2d(&self) -> bool {
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
    pub(crate) fn loss_rows(&self) -> Vec<Vec<f64>> {
        self.loss.chunks(self.nx().max(1)).map(<[f64]>::to_vec).collect()
    }

    /// Computed points whose loss is NaN, and those whose loss is ±∞ (a point not computed is neither:
    /// it is missing, not NaN).
    pub fn nonfinite_counts(&self) -> (usize, usize) {
        let mut nan = 0;
        let mut inf = 0;
        for (l, &d) in self.loss.iter().zip(&self.done) {
            if d && l.is_nan() {
                nan += 1;
            } else if d && l.is_infinite() {
                inf += 1;
            }
        }
        (nan, inf)
    }

    /// The smallest and largest finite computed loss, if any.
    pub fn finite_loss_range(&self) -> Option<(f64, f64)> {
        let mut it = self.loss.iter().zip(&self.done).filter(|(l, d)| **d && l.is_finite()).map(|(l, _)| *l);
        let first = it.next()?;
        Some(it.fold((first, first), |(a, b), x| (a.min(x), b.max(x))))
    }

    pub fn done_count(&self) -> usize {
        self.done.iter().filter(|&&d| d).count()
    }

    pub(crate) fn is_complete(&self) -> bool {
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

// The lines through the centre and the curvature along them: the slice job's gauges and the
// TensorBoard scalars read the same numbers.

/// The loss row along x through y ≈ 0 (the only row of a 1D slice).
pub(crate) fn x_row(v: &SliceValues) -> Vec<f64> {
    let iy = if v.is_2d() { nearest(&v.ys, 0.0) } else { 0 };
    (0..v.nx()).map(|ix| v.loss_at(iy, ix)).collect()
}

/// The loss column along y through x ≈ 0 (2D slices; empty for 1D).
pub(crate) fn y_column(v: &SliceValues) -> Vec<f64> {
    if !v.is_2d() {
        return Vec::new();
    }
    let ix = nearest(&v.xs, 0.0);
    (0..v.ny()).map(|iy| v.loss_at(iy, ix)).collect()
}

pub(crate) fn nearest(xs: &[f64], t: f64) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if (x - t).abs() < (xs[best] - t).abs() {
            best = i;
        }
    }
    best
}

/// Curvature at 0 along x: `(L[i+1] − 2 L[i] + L[i−1]) / h²` about the grid point nearest 0 (moved in
/// by one at the ends of the grid); NaN with fewer than 3 points.
pub(crate) fn curvature_at_zero(xs: &[f64], loss: &[f64]) -> f64 {
    if xs.len() < 3 || loss.len() != xs.len() {
        return f64::NAN;
    }
    let i = nearest(xs, 0.0).clamp(1, xs.len() - 2);
    let h = (xs[i + 1] - xs[i - 1]) / 2.0;
    (loss[i + 1] - 2.0 * loss[i] + loss[i - 1]) / (h * h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landscape::dispatch::evaluate_points;
    use crate::workers::scheduler::Evaluator;

    #[test]
    fn non_square_grid_is_row_major_with_nan_until_done() {
        let mut v = SliceValues::new(vec![-1.0, 0.0, 1.0], vec![0.0, 2.0]);
        assert_eq!((v.ny(), v.nx()), (2, 3));
        assert!(v.loss.iter().all(|x| x.is_nan()));
        assert_eq!(v.centre(), Some(1));
        let never = crate::cancel::Cancel::new();
        let one = Evaluator::per_point("one", |x, y| Ok((10.0 * y + x, None)));
        let (out, _) = evaluate_points(&mut v, vec![one], &never, 2, |_| Ok(()), |_| {}, |_| {}).unwrap();
        assert_eq!(out, Outcome::Complete);
        assert_eq!(v.loss_rows(), vec![vec![-1.0, 0.0, 1.0], vec![19.0, 20.0, 21.0]]);
        assert_eq!(v.loss_at(1, 0), 19.0);
    }

    #[test]
    fn resumes_after_interruption_without_recomputing() {
        let mut v = SliceValues::new((0..9).map(f64::from).collect(), vec![]);
        let cancel = crate::cancel::Cancel::new();
        let mut saved = None;
        let mut calls = 0;
        let first = Evaluator::per_point("first", |x, _| {
            calls += 1;
            if calls == 3 {
                cancel.cancel(crate::cancel::Reason::Requested);
            }
            Ok((x * x, Some(0.5)))
        });
        let save = |s: &SliceValues| {
            saved = Some(s.clone());
            Ok(())
        };
        let (out, _) = evaluate_points(&mut v, vec![first], &cancel, 100, save, |_| {}, |_| {}).unwrap();
        assert_eq!(out, Outcome::Cancelled);
        let mut resumed = saved.unwrap();
        let done = resumed.done_count();
        // The block holding the third point finishes; nothing after it starts.
        assert!((3..9).contains(&done), "{done}");
        assert!(resumed.done[..done].iter().all(|&d| d) && !resumed.done[done..].iter().any(|&d| d));
        assert!(resumed.loss[done].is_nan());
        let xs_seen = std::sync::Mutex::new(Vec::new());
        let never = crate::cancel::Cancel::new();
        let rest = Evaluator::per_point("rest", |x, _| {
            xs_seen.lock().unwrap().push(x);
            Ok((x * x, Some(0.5)))
        });
        evaluate_points(&mut resumed, vec![rest], &never, 1, |_| Ok(()), |_| {}, |_| {}).unwrap();
        assert_eq!(xs_seen.into_inner().unwrap(), (done..9).map(|i| i as f64).collect::<Vec<_>>());
        assert_eq!(resumed.loss, (0..9).map(|i| (i * i) as f64).collect::<Vec<_>>());
        assert!(resumed.is_complete());
    }
}
