//! PCA directions (the trajectory's direction files) as directions over a model's slots, and the plane
//! of the first two components with the trajectory's coordinates in it (for `slice --dirs pca` and the
//! daemon's PCA slices).

use crate::store::slices::DirectionSource;
use crate::store::trajectory::PcaRecord;
use anyhow::{Result, bail};
use landscaped_maths::grid::Axis;
use std::path::PathBuf;

/// The plane of a PCA's first two components: direction files, grid and the trajectory in it.
pub(crate) struct PcaPlane {
    pub source: DirectionSource,
    /// The first two components' direction files (safetensors), which workers read.
    pub files: [PathBuf; 2],
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    /// (x, y, step) of every checkpoint that took part, the centre at the origin.
    pub trajectory: Vec<(f64, f64, u64)>,
}

/// The plane of the first two components of `pca`; grid axes `x`/`y`, or by default 21 points over the
/// trajectory's extent (and the origin) padded by a quarter on each side.
pub(crate) fn pca_plane(pca: &PcaRecord, x: Option<Axis>, y: Option<Axis>) -> Result<PcaPlane> {
    let run = &pca.run;
    if pca.direction_files.len() < 2 {
        bail!("run {run:?}: the PCA has {} direction file(s); a 2D slice needs 2", pca.direction_files.len());
    }
    let files = [PathBuf::from(&pca.direction_files[0]), PathBuf::from(&pca.direction_files[1])];
    let trajectory: Vec<(f64, f64, u64)> =
        pca.coords.iter().zip(&pca.steps).filter_map(|(c, &s)| Some((*c.first()?, *c.get(1)?, s))).collect();
    let extent = |k: usize| -> Axis {
        let (lo, hi) = trajectory.iter().fold((0.0f64, 0.0f64), |(lo, hi), p| {
            let v = if k == 0 { p.0 } else { p.1 };
            (lo.min(v), hi.max(v))
        });
        let pad = 0.25 * (hi - lo).max(1e-3);
        Axis { min: lo - pad, max: hi + pad, num: 21 }
    };
    let xs = x.unwrap_or_else(|| extent(0)).values();
    let ys = y.unwrap_or_else(|| extent(1)).values();
    let source = DirectionSource::Pca {
        run: run.to_string(),
        pca_step: pca.center_step,
        components: vec![0, 1],
        explained_variance_ratio: pca.explained_variance_ratio.clone(),
        files: pca.direction_files[..2].to_vec(),
    };
    Ok(PcaPlane { source, files, xs, ys, trajectory })
}
