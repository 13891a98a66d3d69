//! The empirical spectral density of one layer: the eigenvalues λ = σ² of WᵀW for every matrix slice
//! of the layer, pooled and sorted ascending, as WeightWatcher's `apply_normalize_Wmats` +
//! `combined_eigenvalues` + `apply_esd` compute them (no 1/N normalization; Conv2d slices multiplied
//! by √(conv2d_count/2) = √(1/2) first, WeightWatcher's default `conv2d_norm=True`).
//!
//! Each slice is copied into an f64 matrix and its singular values computed by faer's values-only SVD
//! (no vectors): memory is the tensor's values plus one slice and the SVD's workspace.

use faer::{Mat, Par};
use landscaped_formats::Values;
use serde::{Deserialize, Serialize};

use super::layers::{LayerKind, LayerPlan};

/// WeightWatcher's `WEAK_RANK_LOSS_TOLERANCE`: eigenvalues below it count as weak rank loss.
pub const WEAK_RANK_TOLERANCE: f64 = 1e-6;

/// One layer's ESD and what WeightWatcher's `apply_esd` records beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Esd {
    /// Every eigenvalue, ascending.
    pub evals: Vec<f64>,
    /// The largest singular value over the slices.
    pub sv_max: f64,
    /// WeightWatcher's `sv_min`: the largest over the slices of each slice's smallest singular value.
    pub sv_min: f64,
    /// Σ over slices of (singular values − those above max σ · N · ε).
    pub rank_loss: usize,
    /// Eigenvalues below [`WEAK_RANK_TOLERANCE`].
    pub weak_rank_loss: usize,
    /// Every eigenvalue was computed by an exact (dense, values-only) SVD.
    pub exact: bool,
}

impl Esd {
    pub fn lambda_max(&self) -> f64 {
        self.evals.last().copied().unwrap_or(f64::NAN)
    }
}

/// The ESD of the layer `plan` whose values (row-major, the tensor's own shape) are `values`, with
/// `threads` threads for the SVD (1: sequential). Errors name the cause: wrong length, a non-finite
/// weight, an SVD that did not converge.
pub fn esd(plan: &LayerPlan, values: &Values, threads: usize) -> Result<Esd, String> {
    let want: usize = plan.shape.iter().product();
    if values.len() != want {
        return Err(format!("{} values for a tensor of shape {:?}", values.len(), plan.shape));
    }
    if threads > 1 {
        // A pool of our own, made from the calling thread: its workers inherit that thread's nice value
        // (the daemon's low-priority job thread), which rayon's global pool would not.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| format!("could not start {threads} threads: {e}"))?;
        return pool.install(|| esd_with(plan, values, Par::rayon(threads)));
    }
    esd_with(plan, values, Par::Seq)
}

fn esd_with(plan: &LayerPlan, values: &Values, par: Par) -> Result<Esd, String> {
    let scale = match plan.kind {
        LayerKind::Dense => 1.0,
        _ => (1.0f64 / 2.0).sqrt(),
    };
    let (rows, cols) = plan.slice_shape();
    let mut evals = Vec::with_capacity(plan.num_evals());
    let (mut sv_max, mut sv_min, mut rank_loss) = (0.0f64, 0.0f64, 0usize);
    for k in 0..plan.rf {
        let w = slice(plan, values, k, rows, cols, scale)?;
        let mut sv = singular_values(w.as_ref(), par)?;
        sv.sort_by(f64::total_cmp);
        let top = sv.last().copied().unwrap_or(0.0);
        sv_max = sv_max.max(top);
        sv_min = sv_min.max(sv.first().copied().unwrap_or(0.0));
        rank_loss += super::metrics::rank_loss(&sv, plan.n);
        evals.extend(sv.iter().map(|s| s * s));
    }
    evals.sort_by(f64::total_cmp);
    let weak_rank_loss = evals.iter().filter(|&&l| l < WEAK_RANK_TOLERANCE).count();
    Ok(Esd { evals, sv_max, sv_min, rank_loss, weak_rank_loss, exact: true })
}

/// Slice `k` of the layer as a tall f64 matrix (rows ≥ cols; singular values don't change), times `scale`.
fn slice(
    plan: &LayerPlan,
    values: &Values,
    k: usize,
    rows: usize,
    cols: usize,
    scale: f64,
) -> Result<Mat<f64>, String> {
    let at = |r: usize, c: usize| -> usize {
        match plan.kind {
            LayerKind::Dense => r * cols + c,
            // (out, in, kh, kw): slice k = kernel position (i, j), element (o, c) at ((o·in + c)·rf + k).
            LayerKind::Conv2d => (r * cols + c) * plan.rf + k,
        }
    };
    let get = |i: usize| -> f64 {
        match values {
            Values::F32(v) => v[i] as f64,
            Values::F64(v) => v[i],
        }
    };
    let mut bad = false;
    let m = if rows >= cols {
        Mat::from_fn(rows, cols, |r, c| {
            let x = get(at(r, c));
            bad |= !x.is_finite();
            x * scale
        })
    } else {
        Mat::from_fn(cols, rows, |c, r| {
            let x = get(at(r, c));
            bad |= !x.is_finite();
            x * scale
        })
    };
    if bad {
        return Err("the tensor has a non-finite value (NaN or ±Inf)".into());
    }
    Ok(m)
}

/// faer's values-only SVD (descending order on return).
fn singular_values(a: faer::MatRef<'_, f64>, par: Par) -> Result<Vec<f64>, String> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::svd::{self, ComputeSvdVectors};
    let (m, n) = (a.nrows(), a.ncols());
    let mut s = faer::diag::Diag::<f64>::zeros(m.min(n));
    let scratch =
        svd::svd_scratch::<f64>(m, n, ComputeSvdVectors::No, ComputeSvdVectors::No, par, Default::default());
    svd::svd(a, s.as_mut(), None, None, par, MemStack::new(&mut MemBuffer::new(scratch)), Default::default())
        .map_err(|e| format!("the SVD did not converge ({e:?})"))?;
    Ok(s.column_vector().iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectra::layers::{Filter, plan};

    #[test]
    fn diagonal_matrix_eigenvalues_are_squares() {
        // 10 × 8 with 1..8 on the diagonal: σ = 1..8, λ = σ².
        let mut v = vec![0.0f32; 80];
        for i in 0..8 {
            v[i * 8 + i] = (i + 1) as f32;
        }
        let p = plan("x.weight", &[10, 8], &Filter::default()).unwrap();
        let e = esd(&p, &Values::F32(v), 1).unwrap();
        for (i, l) in e.evals.iter().enumerate() {
            assert!((l - ((i + 1) * (i + 1)) as f64).abs() < 1e-12, "{l}");
        }
        assert_eq!(e.rank_loss, 0);
    }

    #[test]
    fn conv_slices_are_halved() {
        // (out=4, in=2, 1, 1): one slice, W = [[1,0],[0,2],[0,0],[0,0]] → λ = {1, 4} / 2.
        let v = vec![1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0];
        let p = LayerPlan { kind: LayerKind::Conv2d, shape: vec![4, 2, 1, 1], n: 4, m: 2, rf: 1 };
        let e = esd(&p, &Values::F64(v), 1).unwrap();
        assert!((e.evals[0] - 0.5).abs() < 1e-15 && (e.evals[1] - 2.0).abs() < 1e-15);
    }
}
