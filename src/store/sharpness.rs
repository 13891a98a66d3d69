//! Records of curvature and sharpness (one sled tree each), written by `landscaped sharpness` and the
//! daemon's sharpness job, read by the CLI, the API and the plots. Every struct is `#[serde(default)]`.
//!
//! | tree | key | record |
//! |---|---|---|
//! | `sharpness` | `run \0 step` | [`SharpnessRecord`] |
//! | `sharpness_ratio_maps` | slice id (u64 BE, as in the `slices` tree) | [`RatioMapRecord`] |

use super::{Record, Result, Store};
use landscaped_maths::curvature::density::Quadrature;
use landscaped_maths::curvature::lanczos::Extremes;
use landscaped_maths::curvature::measures::Measure;
use landscaped_maths::curvature::trace::TraceEstimate;
use serde::{Deserialize, Serialize};

/// Curvature and sharpness of one checkpoint, with everything needed to know how it was computed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharpnessRecord {
    pub run: String,
    pub step: u64,
    /// The model contract used: TorchScript file, evaluation set, loss, samples.
    pub model: String,
    pub eval_data: String,
    pub loss: String,
    pub samples: usize,
    /// `all` or `matrices` (tensors with ≥ 2 dims).
    pub subset: String,
    /// Number of parameters the Hessian is taken over.
    pub dim: usize,
    /// L(θ) on the evaluation set.
    pub base_loss: f64,
    pub extremes: Option<Extremes>,
    pub trace: Option<TraceEstimate>,
    pub density: Option<Quadrature>,
    pub measures: Vec<Measure>,
    /// HVPs spent in all, and wall-clock seconds.
    pub hvps: usize,
    pub seconds: f64,
    pub computed_unix: u64,
}

impl Record for SharpnessRecord {
    const TREE: &'static str = "sharpness";
    const SCHEMA: u32 = 1;
}

/// The paper's Fig. 7: |λmin/λmax| at every point of a 2D slice. `z[iy][ix]` at `(xs[ix], ys[iy])`;
/// NaN where not computed (see `done`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RatioMapRecord {
    /// The slice this map belongs to (its id in the `slices` tree), and that slice's run and step.
    pub slice_id: u64,
    pub run: Option<String>,
    pub step: Option<u64>,
    /// `all` or `matrices`.
    pub subset: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub ratio: Vec<Vec<f64>>,
    pub lambda_max: Vec<Vec<f64>>,
    pub lambda_min: Vec<Vec<f64>>,
    /// Whether Lanczos met its tolerance at each point (false also where not computed).
    pub converged: Vec<Vec<bool>>,
    pub done: Vec<Vec<bool>>,
    pub tol: f64,
    pub hvps: usize,
    pub computed_unix: u64,
}

impl Record for RatioMapRecord {
    const TREE: &'static str = "sharpness_ratio_maps";
    const SCHEMA: u32 = 1;
}

pub(crate) fn put_ratio_map(store: &Store, rec: &RatioMapRecord) -> Result<()> {
    store.put(&rec.slice_id.to_be_bytes(), rec)
}

pub fn get_ratio_map(store: &Store, slice_id: u64) -> Result<Option<RatioMapRecord>> {
    store.get(&slice_id.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunStepRecord;

    #[test]
    fn round_trip() {
        let rec = SharpnessRecord {
            run: "a".into(),
            step: 7,
            dim: 3,
            measures: vec![Measure { name: "sam".into(), value: 0.5, ..Default::default() }],
            ..Default::default()
        };
        let (_dir, store) =
            crate::store::run_step::assert_round_trip(&[rec.clone(), SharpnessRecord { step: 2, ..rec }]);
        assert!(SharpnessRecord::get(&store, "ab", 7).unwrap().is_none());
        let m = RatioMapRecord { slice_id: 3, ratio: vec![vec![f64::NAN]], ..Default::default() };
        put_ratio_map(&store, &m).unwrap();
        let back = get_ratio_map(&store, 3).unwrap().unwrap();
        assert!(get_ratio_map(&store, 4).unwrap().is_none());
        assert!(back.ratio[0][0].is_nan());
    }
}
