//! The Gram operator of one weight slice, matrix-free: x ↦ WᵀW x on the slice's smaller side (WᵀW for a
//! tall slice, WWᵀ for a wide one: the same non-zero eigenvalues, the ESD's λ = σ²), for the Lanczos
//! approximation of a layer too large for an exact SVD ([`super::approx`]).
//!
//! The matrix stays as the checkpoint stored it (f32, or f64) and is read row by row: a dense layer is
//! borrowed from the tensor's values, a Conv2d kernel position (strided in the tensor) is gathered once
//! into an f64 buffer of its own. Every product widens each weight to f64 exactly and accumulates in f64,
//! so the operator is exactly WᵀW of the widened matrix, to f64 rounding. A tall slice costs one pass over
//! W per application (y = Σᵢ (wᵢ·x) wᵢ over the rows wᵢ), a wide one two (z = Wᵀx, then y = Wz).
//! With more than one thread the rows are split in blocks over the caller's rayon pool.

use landscaped_formats::Values;
use rayon::prelude::*;

use super::layers::{LayerKind, LayerPlan};

/// Rows per parallel block.
const BLOCK: usize = 64;

enum Rows<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    Owned(Vec<f64>),
}

/// WᵀW (or WWᵀ) of one slice, times the slice's scale² (WeightWatcher's conv2d_norm).
pub struct Gram<'a> {
    rows: Rows<'a>,
    nrows: usize,
    ncols: usize,
    scale2: f64,
    parallel: bool,
}

impl<'a> Gram<'a> {
    /// Slice `k` of the layer `plan` (values row-major in the tensor's shape); `parallel`: split the rows
    /// over the current rayon pool. Errors name a non-finite weight.
    pub fn new(plan: &LayerPlan, values: &'a Values, k: usize, parallel: bool) -> Result<Gram<'a>, String> {
        let (nrows, ncols) = plan.slice_shape();
        let (rows, scale2) = match plan.kind {
            LayerKind::Dense => (
                match values {
                    Values::F32(v) => Rows::F32(v),
                    Values::F64(v) => Rows::F64(v),
                },
                1.0,
            ),
            LayerKind::Conv2d => {
                let rf = plan.rf;
                let get = |i: usize| match values {
                    Values::F32(v) => v[i] as f64,
                    Values::F64(v) => v[i],
                };
                (Rows::Owned((0..nrows * ncols).map(|i| get(i * rf + k)).collect()), 0.5)
            }
        };
        let g = Gram { rows, nrows, ncols, scale2, parallel };
        if !g.frobenius2().is_finite() {
            return Err("the tensor has a non-finite value (NaN or ±Inf)".into());
        }
        Ok(g)
    }

    /// The operator's dimension: the slice's smaller side.
    pub fn dim(&self) -> usize {
        self.nrows.min(self.ncols)
    }

    /// Rows × columns of the slice as stored.
    pub fn shape(&self) -> (usize, usize) {
        (self.nrows, self.ncols)
    }

    /// The trace Σλ = ‖W‖_F² (times scale²), exactly (f64 sum of the widened squares).
    pub fn frobenius2(&self) -> f64 {
        let s = match &self.rows {
            Rows::F32(v) => sum_squares(v),
            Rows::F64(v) => sum_squares(v),
            Rows::Owned(v) => sum_squares(v),
        };
        s * self.scale2
    }

    /// y = A x.
    pub fn apply(&self, x: &[f64], y: &mut [f64]) {
        match &self.rows {
            Rows::F32(v) => self.apply_to(v, x, y),
            Rows::F64(v) => self.apply_to(v, x, y),
            Rows::Owned(v) => self.apply_to(v, x, y),
        }
        y.iter_mut().for_each(|v| *v *= self.scale2);
    }

    fn apply_to<T: Copy + Into<f64> + Sync>(&self, w: &[T], x: &[f64], y: &mut [f64]) {
        let c = self.ncols;
        if self.nrows >= self.ncols {
            // y = Σᵢ (wᵢ·x) wᵢ
            let acc = |block: &[T], y: &mut [f64]| {
                for row in block.chunks_exact(c) {
                    axpy(y, dot(row, x), row);
                }
            };
            y.iter_mut().for_each(|v| *v = 0.0);
            if self.parallel {
                let parts: Vec<Vec<f64>> = w
                    .par_chunks(BLOCK * c)
                    .fold(
                        || vec![0.0; c],
                        |mut y, block| {
                            acc(block, &mut y);
                            y
                        },
                    )
                    .collect();
                for p in parts {
                    axpy(y, 1.0, &p);
                }
            } else {
                acc(w, y);
            }
        } else {
            // z = Wᵀx (length ncols), then y_i = wᵢ·z
            let mut z = vec![0.0; c];
            if self.parallel {
                let parts: Vec<Vec<f64>> = w
                    .par_chunks(BLOCK * c)
                    .zip(x.par_chunks(BLOCK))
                    .fold(
                        || vec![0.0; c],
                        |mut z, (block, xs)| {
                            for (row, xi) in block.chunks_exact(c).zip(xs) {
                                axpy(&mut z, *xi, row);
                            }
                            z
                        },
                    )
                    .collect();
                for p in parts {
                    axpy(&mut z, 1.0, &p);
                }
                w.par_chunks(c).zip(y.par_iter_mut()).for_each(|(row, yi)| *yi = dot(row, &z));
            } else {
                for (row, xi) in w.chunks_exact(c).zip(x) {
                    axpy(&mut z, *xi, row);
                }
                for (row, yi) in w.chunks_exact(c).zip(y.iter_mut()) {
                    *yi = dot(row, &z);
                }
            }
        }
    }
}

fn sum_squares<T: Copy + Into<f64>>(w: &[T]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut chunks = w.chunks_exact(4);
    for ch in &mut chunks {
        for l in 0..4 {
            let v: f64 = ch[l].into();
            acc[l] += v * v;
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|v| (*v).into() * (*v).into()).sum();
    acc.iter().sum::<f64>() + tail
}

/// Σ wᵢ xᵢ in f64, eight independent partial sums (vectorizable).
pub(crate) fn dot<T: Copy + Into<f64>>(w: &[T], x: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let n8 = w.len() / 8 * 8;
    for (wc, xc) in w[..n8].chunks_exact(8).zip(x[..n8].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += wc[l].into() * xc[l];
        }
    }
    let tail: f64 = w[n8..].iter().zip(&x[n8..]).map(|(a, b)| (*a).into() * b).sum();
    acc.iter().sum::<f64>() + tail
}

/// y += a · w.
pub(crate) fn axpy<T: Copy + Into<f64>>(y: &mut [f64], a: f64, w: &[T]) {
    for (yi, wi) in y.iter_mut().zip(w) {
        *yi += a * (*wi).into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectra::layers::{Filter, plan};

    /// A x against the explicit WᵀW (tall) and WWᵀ (wide), sequential and parallel.
    #[test]
    fn applies_the_gram_matrix() {
        for (r, c) in [(7usize, 5usize), (5, 7), (300, 70), (70, 300)] {
            let w: Vec<f32> = (0..r * c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
            let p = plan("x.weight", &[r, c], &Filter { min_evals: 1, ..Filter::default() }).unwrap();
            let vals = Values::F32(w.clone());
            let d = r.min(c);
            let x: Vec<f64> = (0..d).map(|i| (i as f64 * 0.3).sin()).collect();
            let want: Vec<f64> = (0..d)
                .map(|i| {
                    (0..d)
                        .map(|j| {
                            let g: f64 = if r >= c {
                                (0..r).map(|k| w[k * c + i] as f64 * w[k * c + j] as f64).sum()
                            } else {
                                (0..c).map(|k| w[i * c + k] as f64 * w[j * c + k] as f64).sum()
                            };
                            g * x[j]
                        })
                        .sum()
                })
                .collect();
            for parallel in [false, true] {
                let g = Gram::new(&p, &vals, 0, parallel).unwrap();
                assert_eq!(g.dim(), d);
                let mut y = vec![0.0; d];
                g.apply(&x, &mut y);
                for (a, b) in y.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{r}×{c}: {a} vs {b}");
                }
            }
            let f2: f64 = w.iter().map(|v| (*v as f64).powi(2)).sum();
            let g = Gram::new(&p, &vals, 0, false).unwrap();
            assert!((g.frobenius2() - f2).abs() < 1e-12 * f2);
        }
    }
}
