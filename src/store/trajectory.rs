//! Records for trajectory PCA: one [`PcaRecord`] per computation, keyed `run \0 newest step`, so the last
//! record of a run is its latest PCA and older ones stay as history.

use super::{Record, RunStepRecord, Store};
use crate::trajectory::select::Selection;
use serde::{Deserialize, Serialize};

/// How a PCA was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PcaConfig {
    /// Number of components k (default 2).
    pub components: usize,
    /// The centre θ_c; `None` = the last archived checkpoint.
    pub center_step: Option<u64>,
    /// Which archived tensors take part.
    pub selection: Selection,
}

/// The result of one trajectory PCA (the paper's optimizer-path directions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PcaRecord {
    pub run: String,
    pub config: PcaConfig,
    /// Unix seconds when computed.
    pub computed_at: u64,
    /// The centre step actually used.
    pub center_step: u64,
    /// Archived steps that took part, ascending (rows of the matrix).
    pub steps: Vec<u64>,
    /// Selected parameters d and tensors.
    pub n_params: u64,
    pub n_tensors: usize,
    /// Per component: variance (S²/(n−1), as scikit-learn), its ratio to the total, singular value.
    pub explained_variance: Vec<f64>,
    pub explained_variance_ratio: Vec<f64>,
    pub singular_values: Vec<f64>,
    /// Total variance of the rows (sum over all components).
    pub total_variance: f64,
    /// coords[i][k]: ⟨θ_i − θ_c, v_k⟩ for the unit direction v_k (the centre sits at the origin, as in
    /// the paper's plots; scikit-learn's `transform` differs by the constant shift −⟨mean, v_k⟩).
    pub coords: Vec<Vec<f64>>,
    /// Distance of θ_i from the plane θ_c + span(v_1..v_k).
    pub residuals: Vec<f64>,
    /// ‖θ_i − θ_c‖.
    pub distances: Vec<f64>,
    /// cos(v_k, v_l) of the stored directions (k × k; ≈ identity).
    pub cosines: Vec<Vec<f64>>,
    /// Safetensors files holding the directions, one per component, as absolute paths.
    pub direction_files: Vec<String>,
}

impl Record for PcaRecord {
    const TREE: &'static str = "trajectory_pca";
    const SCHEMA: u32 = 1;
}

/// Filed under its newest step: the last record of a run is its latest PCA.
impl RunStepRecord for PcaRecord {
    fn run_step(&self) -> (&str, u64) {
        (&self.run, self.steps.last().copied().unwrap_or(0))
    }
}

/// Stores a PCA result (replacing one computed at the same newest step).
pub(crate) fn put_pca(store: &Store, rec: &PcaRecord) -> super::Result<()> {
    PcaRecord::put(store, rec)
}

/// The latest PCA of a run, if any.
pub(crate) fn latest_pca(store: &Store, run: &str) -> super::Result<Option<PcaRecord>> {
    PcaRecord::latest(store, run)
}

/// Every PCA of a run, oldest first.
pub(crate) fn pca_history(store: &Store, run: &str) -> super::Result<Vec<PcaRecord>> {
    PcaRecord::list(store, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_is_newest_step() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        for last in [30u64, 10, 20] {
            let r = PcaRecord { run: "a".into(), steps: vec![0, last], ..Default::default() };
            put_pca(&s, &r).unwrap();
        }
        put_pca(&s, &PcaRecord { run: "ab".into(), steps: vec![99], ..Default::default() }).unwrap();
        assert_eq!(latest_pca(&s, "a").unwrap().unwrap().steps, vec![0, 30]);
        assert_eq!(pca_history(&s, "a").unwrap().len(), 3);
        assert!(latest_pca(&s, "b").unwrap().is_none());
    }
}
