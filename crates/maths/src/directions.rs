//! Directions in weight space: filter-normalized Gaussian (the paper's), layer-normalized or raw;
//! PCA directions from the trajectory; the interpolation direction between two checkpoints.
//!
//! Plain Rust on one f32 vector per model slot (parameters, then float buffers). Random directions are
//! described by a [`RandomDirections`] record (seed, normalization, ignore rule, parameter list) and
//! rebuilt from it, never stored as tensors. The Gaussian draws come from libtorch's CPU generator
//! (`model::rng`) in the reference code's order: after `manual_seed(seed)`, one `randn(shape)` per
//! parameter in module order for x, then the same again for y; buffers get no direction.

use std::fmt;
use std::str::FromStr;

/// How a random direction is scaled to the weights (net_plotter.py's `--xnorm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Every filter (dim-0 slice) rescaled to the norm of the matching filter of θ.
    #[default]
    Filter,
    /// Every tensor rescaled to the norm of the matching tensor of θ.
    Layer,
    /// Raw N(0, 1).
    None,
}

/// What happens to tensors of ≤ 1 dimension (net_plotter.py's `--xignore`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ignore {
    /// Direction 0 for biases and batch-norm γ/β (every figure of the paper).
    #[default]
    Biasbn,
    /// As the reference code does without `biasbn`: the direction is a copy of the weights.
    None,
}

impl FromStr for Normalization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "filter" => Ok(Normalization::Filter),
            "layer" => Ok(Normalization::Layer),
            "none" => Ok(Normalization::None),
            _ => Err(format!("unknown normalization {s:?} (expected filter, layer or none)")),
        }
    }
}

impl FromStr for Ignore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "biasbn" => Ok(Ignore::Biasbn),
            "none" => Ok(Ignore::None),
            _ => Err(format!("unknown ignore rule {s:?} (expected biasbn or none)")),
        }
    }
}

impl fmt::Display for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Normalization::Filter => "filter",
            Normalization::Layer => "layer",
            Normalization::None => "none",
        })
    }
}

impl fmt::Display for Ignore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ignore::Biasbn => "biasbn",
            Ignore::None => "none",
        })
    }
}

/// Everything needed to rebuild a pair of random directions exactly.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RandomDirections {
    pub seed: u64,
    pub norm: Normalization,
    pub ignore: Ignore,
    /// The parameters that receive a direction, in module order, with their shapes.
    pub params: Vec<(String, Vec<usize>)>,
    /// y made orthogonal to x by Gram-Schmidt.
    pub orthogonalize: bool,
}

/// Scales every filter (slice along dim 0) of `d` to the norm of the same filter of `w`:
/// d_f ← d_f · ‖θ_f‖ / (‖d_f‖ + 1e-10).
pub(crate) fn filter_normalize(d: &mut [f32], w: &[f32], shape: &[usize]) {
    let filters = shape.first().copied().unwrap_or(1).max(1);
    let len = d.len() / filters;
    if len == 0 {
        return;
    }
    for (df, wf) in d.chunks_mut(len).zip(w.chunks(len)) {
        let scale = (norm(wf) / (norm(df) + 1e-10)) as f32;
        df.iter_mut().for_each(|x| *x *= scale);
    }
}

/// Scales the whole tensor `d` to the norm of `w` (the reference code: no epsilon).
pub(crate) fn layer_normalize(d: &mut [f32], w: &[f32]) {
    let scale = (norm(w) / norm(d)) as f32;
    d.iter_mut().for_each(|x| *x *= scale);
}

/// Turns Gaussian draws into a direction (net_plotter.py's `normalize_directions_for_weights`):
/// ≤ 1-D tensors are zeroed (ignore biasbn) or copied from the weights; others normalized.
pub fn create_random_direction(
    mut draws: Vec<Vec<f32>>,
    weights: &[&[f32]],
    shapes: &[Vec<usize>],
    norm: Normalization,
    ignore: Ignore,
) -> Vec<Vec<f32>> {
    for ((d, w), shape) in draws.iter_mut().zip(weights).zip(shapes) {
        if shape.len() <= 1 {
            match ignore {
                Ignore::Biasbn => d.iter_mut().for_each(|x| *x = 0.0),
                Ignore::None => d.copy_from_slice(w),
            }
        } else {
            match norm {
                Normalization::Filter => filter_normalize(d, w, shape),
                Normalization::Layer => layer_normalize(d, w),
                Normalization::None => {}
            }
        }
    }
    draws
}

/// ‖v‖₂ accumulated in f64.
pub fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt()
}

fn dot(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y)).map(|(&p, &q)| p as f64 * q as f64).sum()
}

/// cos∠(a, b) over all tensors together (0 when either is zero).
pub fn cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let na = dot(a, a).sqrt();
    let nb = dot(b, b).sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot(a, b) / (na * nb) }
}

/// Gram-Schmidt: removes from `y` its component along `x`, keeping ‖y‖ (so the slice's scale stays).
pub fn orthogonalize(y: &mut [Vec<f32>], x: &[Vec<f32>]) {
    let xx = dot(x, x);
    if xx == 0.0 {
        return;
    }
    let before = dot(y, y).sqrt();
    let c = dot(x, y) / xx;
    for (yt, xt) in y.iter_mut().zip(x) {
        for (p, &q) in yt.iter_mut().zip(xt) {
            *p = (*p as f64 - c * q as f64) as f32;
        }
    }
    let after = dot(y, y).sqrt();
    if after > 0.0 {
        let s = (before / after) as f32;
        y.iter_mut().flatten().for_each(|p| *p *= s);
    }
}

/// The direction from checkpoint `a` to checkpoint `b`, over parameters AND float buffers (running
/// statistics move with the weights; `num_batches_tracked` is not a slot and never moves).
pub fn interpolation_direction(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f32>> {
    a.iter().zip(b).map(|(x, y)| x.iter().zip(y).map(|(p, q)| q - p).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_normalize_matches_each_filter_norm() {
        let w = vec![3.0f32, 4.0, 0.0, 1.0];
        let mut d = vec![1.0f32, 0.0, 0.0, 2.0];
        filter_normalize(&mut d, &w, &[2, 2]);
        assert!((norm(&d[..2]) - 5.0).abs() < 1e-6);
        assert!((norm(&d[2..]) - 1.0).abs() < 1e-6);
        assert!((d[3] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn biasbn_zeroes_vectors_and_none_copies_weights() {
        let w0 = vec![1.0f32, 2.0, 3.0, 4.0];
        let w1 = vec![5.0f32, 6.0];
        let shapes = vec![vec![2, 2], vec![2]];
        let draws = vec![vec![1.0f32, 1.0, 1.0, 1.0], vec![1.0, 1.0]];
        let d = create_random_direction(
            draws.clone(),
            &[&w0, &w1],
            &shapes,
            Normalization::Layer,
            Ignore::Biasbn,
        );
        assert_eq!(d[1], vec![0.0, 0.0]);
        assert!((norm(&d[0]) - norm(&w0)).abs() < 1e-5);
        let d = create_random_direction(draws, &[&w0, &w1], &shapes, Normalization::None, Ignore::None);
        assert_eq!(d[0], vec![1.0; 4]);
        assert_eq!(d[1], w1);
    }

    #[test]
    fn orthogonalize_removes_the_shared_component() {
        let x = vec![vec![1.0f32, 0.0], vec![0.0]];
        let mut y = vec![vec![1.0f32, 1.0], vec![0.0]];
        assert!((cosine(&x, &y) - 0.5f64.sqrt()).abs() < 1e-7);
        orthogonalize(&mut y, &x);
        assert!(cosine(&x, &y).abs() < 1e-7);
        assert!((norm(&y[0]) - 2f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn interpolation_is_b_minus_a() {
        let d = interpolation_direction(&[vec![1.0, 2.0]], &[vec![4.0, 0.0]]);
        assert_eq!(d, vec![vec![3.0, -2.0]]);
    }
}
