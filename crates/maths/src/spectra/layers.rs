//! Which tensors of a checkpoint are layers, how each is cut into matrices, and WeightWatcher's filter.
//!
//! A checkpoint has no module types, so the type is read from the tensor: a float tensor whose name's
//! last component is `weight` is a layer when it has 2 dimensions (Linear, Embedding, Hugging Face's
//! `Conv1D`: one N × M matrix, N ≥ M after transposing, rf = 1) or 4 (Conv2d: PyTorch's
//! `(out, in, kh, kw)`, one matrix per kernel position, rf = kh·kw, pooled into one ESD). Everything
//! else (biases, norms, 3-D `nn.Conv1d` kernels, buffers, optimizer state) is not a layer. This is what
//! WeightWatcher's `PyTorchLayer.layer_type` gives for the modules that own such weights; its
//! `layer_supported` then keeps a layer when `min_evals ≤ M·rf ≤ max_evals` and `N ≤ max_N`.
//!
//! N and M are WeightWatcher's, quirks included: `conv2D_Wmats` swaps its N and M once per kernel
//! position whose slice it transposes (out < in), so a Conv2d with out < in and an even number of
//! kernel positions reports N = out < M = in; a kernel with out + in < kh + kw (e.g. 1 → 4 channels,
//! 3 × 3) reports N = out, M = in whatever their order. The filter and the matrix rank use those
//! values, as WeightWatcher's do; the eigenvalues do not depend on them.

use serde::{Deserialize, Serialize};

/// WeightWatcher's `analyze()` defaults (constants.py: `DEFAULT_MIN_EVALS`, `DEFAULT_MAX_EVALS`,
/// `DEFAULT_MAX_N`).
pub const MIN_EVALS: usize = 8;
pub const MAX_EVALS: usize = 15000;
pub const MAX_N: usize = 50000;

/// The layer filter's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub min_evals: usize,
    pub max_evals: usize,
    pub max_n: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Filter { min_evals: MIN_EVALS, max_evals: MAX_EVALS, max_n: MAX_N }
    }
}

/// How a layer's tensor becomes matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// A 2-D weight: one matrix.
    Dense,
    /// A 4-D `(out, in, kh, kw)` kernel: one `out × in` matrix per kernel position.
    Conv2d,
}

/// A tensor that is a layer: its shape, kind and WeightWatcher's N, M, rf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPlan {
    pub kind: LayerKind,
    pub shape: Vec<usize>,
    /// WeightWatcher's N and M (see the module doc for Conv2d).
    pub n: usize,
    pub m: usize,
    /// Matrices per layer (1 for a dense layer).
    pub rf: usize,
}

impl LayerPlan {
    /// Rows and columns of each matrix slice, as stored.
    pub fn slice_shape(&self) -> (usize, usize) {
        match self.kind {
            LayerKind::Dense | LayerKind::Conv2d => (self.shape[0], self.shape[1]),
        }
    }

    /// The number of eigenvalues the layer's ESD has (every singular value of every slice).
    pub fn num_evals(&self) -> usize {
        let (r, c) = self.slice_shape();
        r.min(c) * self.rf
    }

    /// The largest slice dimension (the SVD's cost grows as rows · cols · min(rows, cols)).
    pub fn flops(&self) -> f64 {
        let (r, c) = self.slice_shape();
        let (big, small) = (r.max(c) as f64, r.min(c) as f64);
        self.rf as f64 * big * small * small
    }
}

/// Why a tensor is not measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// Not a float tensor named `…weight`.
    NotAWeight,
    /// Not 2-D or 4-D (norms, biases, 3-D Conv1d kernels).
    Rank(usize),
    /// M·rf below the filter's minimum.
    TooFewEvals(usize),
    /// M·rf above the filter's maximum.
    TooManyEvals(usize),
    /// N above the filter's maximum.
    TooLarge(usize),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NotAWeight => write!(f, "not a layer weight"),
            Skip::Rank(d) => write!(f, "{d}-D tensor (only 2-D and 4-D weights are layers)"),
            Skip::TooFewEvals(k) => write!(f, "{k} eigenvalues, below min_evals"),
            Skip::TooManyEvals(k) => write!(f, "{k} eigenvalues, above max_evals"),
            Skip::TooLarge(n) => write!(f, "N = {n}, above max_N"),
        }
    }
}

/// Whether the float tensor `name` of `shape` is a layer under `filter`, and how it is cut.
pub fn plan(name: &str, shape: &[usize], filter: &Filter) -> Result<LayerPlan, Skip> {
    if name.rsplit('.').next() != Some("weight") {
        return Err(Skip::NotAWeight);
    }
    let plan = match shape.len() {
        2 => LayerPlan {
            kind: LayerKind::Dense,
            shape: shape.to_vec(),
            n: shape[0].max(shape[1]),
            m: shape[0].min(shape[1]),
            rf: 1,
        },
        4 => conv2d_plan(shape),
        d => return Err(Skip::Rank(d)),
    };
    supported(plan, filter)
}

/// `conv2D_Wmats` for a PyTorch layer (channels "last"): one `out × in` slice per kernel position,
/// rf = kh·kw. N and M start as (out, in); when WeightWatcher detects the same channel order
/// (out + in ≥ kh + kw) it swaps them once per slice it transposes (out < in), so an odd number of
/// swaps leaves N ≥ M; when it detects the other order (out + in < kh + kw) it flips twice and reports
/// (out, in) as they are.
fn conv2d_plan(shape: &[usize]) -> LayerPlan {
    let (o, i, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
    let rf = kh * kw;
    let (mut n, mut m) = (o, i);
    if o + i >= kh + kw && o < i && rf % 2 == 1 {
        std::mem::swap(&mut n, &mut m);
    }
    LayerPlan { kind: LayerKind::Conv2d, shape: shape.to_vec(), n, m, rf }
}

/// `layer_supported` with `pool=True`: M·rf within [min_evals, max_evals] and N ≤ max_N, in that order.
fn supported(plan: LayerPlan, filter: &Filter) -> Result<LayerPlan, Skip> {
    let evals = plan.m * plan.rf;
    if filter.min_evals > 0 && evals < filter.min_evals {
        return Err(Skip::TooFewEvals(evals));
    }
    if filter.max_evals > 0 && evals > filter.max_evals {
        return Err(Skip::TooManyEvals(evals));
    }
    if plan.n > filter.max_n {
        return Err(Skip::TooLarge(plan.n));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_layers_are_n_by_m_with_n_at_least_m() {
        let p = plan("h.0.mlp.c_fc.weight", &[64, 256], &Filter::default()).unwrap();
        assert_eq!((p.n, p.m, p.rf, p.num_evals()), (256, 64, 1, 64));
    }

    #[test]
    fn conv_quirk_keeps_out_in_order_for_even_kernels() {
        let p = plan("c.weight", &[8, 16, 3, 3], &Filter::default()).unwrap();
        assert_eq!((p.n, p.m, p.rf), (16, 8, 9));
        let p = plan("c.weight", &[8, 16, 2, 2], &Filter::default()).unwrap();
        assert_eq!((p.n, p.m, p.rf), (8, 16, 4));
        assert_eq!(p.num_evals(), 32);
        // The digits CNN's first conv: 1 → 4 channels, 3 × 3: (N, M) = (4, 1), 9 eigenvalues.
        let p = plan("conv.weight", &[4, 1, 3, 3], &Filter::default()).unwrap();
        assert_eq!((p.n, p.m, p.rf, p.num_evals()), (4, 1, 9, 9));
    }

    #[test]
    fn filter_and_names() {
        let f = Filter::default();
        assert_eq!(plan("ln.weight", &[64], &f), Err(Skip::Rank(1)));
        assert_eq!(plan("fc.bias", &[64, 3], &f), Err(Skip::NotAWeight));
        assert_eq!(plan("fc.weight", &[64, 7], &f), Err(Skip::TooFewEvals(7)));
        assert_eq!(plan("wte.weight", &[50257, 768], &f), Err(Skip::TooLarge(50257)));
        assert_eq!(plan("big.weight", &[16000, 16000], &f), Err(Skip::TooManyEvals(16000)));
    }
}
