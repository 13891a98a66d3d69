//! The daemon's `slice` job: every N ingested checkpoints of a run, a filter-normalized random slice
//! (1D along x, or 2D with `y`) about the checkpoint just ingested — or, with `dirs = "pca"`, a 2D slice
//! in the plane of the run's latest trajectory PCA ([run.pca]) about its centre checkpoint, with the
//! trajectory in it (skipped until a PCA with two components exists, and when that plane is sliced).
//! Computed with the same functions as `landscaped slice` ([`random_directions`], [`pca_plane`],
//! [`evaluate_centre`], [`evaluate_slice`]; no progress bar) on the daemon's low-priority job thread, stored as a [`SliceRecord`]; then gauges (label `run`):
//!
//! - `landscaped_slice_centre_loss`: the loss of the checkpoint itself;
//! - `landscaped_slice_curvature{direction="x"|"y"}`: second finite difference of the loss along one
//!   direction at 0, `(L(x₊) − 2·L(x₀) + L(x₋)) / h²`, from the three consecutive grid points centred on
//!   the grid point x₀ nearest 0 (h the grid spacing). Along x: the row y nearest 0 (the only row of a 1D
//!   slice); along y (2D slices): the column x nearest 0. NaN if that line has < 3 points;
//! - `landscaped_slice_loss_rise{direction, radius="0.5"|"1"}`: mean of L(−r) and L(+r), linearly
//!   interpolated on the same line, minus the centre loss. NaN where ±r is outside the grid.
//!
//! ```toml
//! [run.slice]
//! every = 50                 # after every 50 new checkpoints
//! model_dir = "/scratch/job42/landscaped-model"   # written by examples/landscaped_export.py
//! dirs = "random"            # random (default) | pca
//! x = "-1:1:11"              # grid, min:max:num (required for random; pca: the trajectory's extent)
//! y = "-1:1:11"              # optional: 2D slice
//! norm = "filter"            # filter | layer | none
//! seed = 0
//! threads = 1                # CPU threads; above 1, grid points run on copies of the model
//! abandon_on_newer = true    # stop (keeping the partial record) once a newer checkpoint is ingested
//! ```
//! plus the model keys every model-running job takes (`model`/`eval_data`/`loss` instead of
//! `model_dir`, `batch_size`, `subsample`, `device`, `map`, `allow_unexpected`): see
//! [`crate::daemon::job_model`].

use crate::cancel::Reason;
use crate::daemon::jobs::{JobContext, PeriodicJob, RunGauge};
use crate::landscape::pca_dirs::pca_plane;
use crate::landscape::runner::{PlaneSpec, SliceRequest, run_slice};
use crate::landscape::slice::{Outcome, curvature_at_zero, x_row, y_column};
use crate::store::slices::{DirectionSource, SliceRecord};
use crate::workers::contract::ModelContract;
use anyhow::{Context, Result, anyhow, bail};
use landscaped_maths::directions::{Ignore, Normalization, RandomDirections};
use landscaped_maths::grid::Axis;
use std::path::Path;
use std::time::{Duration, Instant};

/// The `[run.slice]` section.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SliceJobConfig {
    pub every: u64,
    /// `random` (default): seeded filter-normalized directions about the new checkpoint; `pca`: the
    /// run's latest trajectory PCA (first two components) about its centre checkpoint.
    #[serde(default)]
    pub dirs: JobDirs,
    /// Required for random directions; for PCA ones the default covers the trajectory.
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    #[serde(default)]
    pub norm: Normalization,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub abandon_on_newer: bool,
}

/// Which directions the job's slices use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobDirs {
    #[default]
    Random,
    Pca,
}

/// The job, with its parsed grid and model contract.
pub(crate) struct SliceJob {
    cfg: SliceJobConfig,
    model: ModelContract,
    x: Option<Axis>,
    y: Option<Axis>,
}

/// Builds the job from its `[run.slice]` section (errors name the key).
pub fn build(section: &toml::Value) -> Result<Box<dyn PeriodicJob>> {
    let (model, section) = crate::daemon::job_model::split(section)?;
    let cfg: SliceJobConfig = section.try_into().map_err(|e| anyhow!("{e}"))?;
    if cfg.every == 0 {
        bail!("every: must be at least 1");
    }
    let axis = |key: &str, v: &Option<String>| -> Result<Option<Axis>> {
        v.as_deref().map(|v| v.parse::<Axis>().map_err(|e: String| anyhow!("{key}: {e}"))).transpose()
    };
    let (x, y) = (axis("x", &cfg.x)?, axis("y", &cfg.y)?);
    if cfg.dirs == JobDirs::Random && x.is_none() {
        bail!("x: missing (the grid along the first random direction, e.g. x = \"-1:1:11\")");
    }
    Ok(Box::new(SliceJob { cfg, model, x, y }))
}

/// The slice job's gauge families (see [`super::JobGauges`]).
pub struct Gauges {
    centre_loss: RunGauge,
    curvature: RunGauge,
    loss_rise: RunGauge,
}

impl Gauges {
    /// Registers the families in `reg`; None if any can't be.
    pub(crate) fn register(reg: &prometheus::Registry) -> Option<Gauges> {
        let make = |name: &str, help: &str, labels: &[&str]| RunGauge::register(reg, name, help, labels);
        Some(Gauges {
            centre_loss: make(
                "landscaped_slice_centre_loss",
                "Loss of the checkpoint at the centre of the latest slice",
                &[],
            )?,
            curvature: make(
                "landscaped_slice_curvature",
                "Second finite difference of the latest slice's loss along a direction at 0 (L(h)-2L(0)+L(-h))/h^2",
                &["direction"],
            )?,
            loss_rise: make(
                "landscaped_slice_loss_rise",
                "Mean loss at -r and +r along a direction (interpolated on the latest slice) minus the centre loss",
                &["direction", "radius"],
            )?,
        })
    }
}

/// Loss at `t` by linear interpolation on the grid (`xs` ascending); None outside it.
pub fn interpolate(xs: &[f64], loss: &[f64], t: f64) -> Option<f64> {
    let (first, last) = (*xs.first()?, *xs.last()?);
    if t < first - 1e-12 || t > last + 1e-12 || loss.len() != xs.len() {
        return None;
    }
    if xs.len() == 1 {
        return Some(loss[0]);
    }
    let j = xs.iter().position(|&x| x >= t - 1e-12).unwrap_or(xs.len() - 1).max(1);
    let (x0, x1) = (xs[j - 1], xs[j]);
    let w = if x1 > x0 { ((t - x0) / (x1 - x0)).clamp(0.0, 1.0) } else { 0.0 };
    Some(loss[j - 1] + w * (loss[j] - loss[j - 1]))
}

/// Mean of L(−r) and L(+r) minus `centre`; NaN where ±r is outside the grid.
pub(crate) fn loss_rise(xs: &[f64], loss: &[f64], centre: f64, r: f64) -> f64 {
    match (interpolate(xs, loss, -r), interpolate(xs, loss, r)) {
        (Some(a), Some(b)) => (a + b) / 2.0 - centre,
        _ => f64::NAN,
    }
}

/// Sets the run's gauges from a complete slice.
pub(crate) fn publish(g: &Gauges, run: &str, rec: &SliceRecord) {
    let v = &rec.values;
    g.centre_loss.set(run, rec.centre_loss);
    let mut lines = vec![("x", v.xs.as_slice(), x_row(v))];
    if v.is_2d() {
        lines.push(("y", v.ys.as_slice(), y_column(v)));
    } else {
        // A 1D slice has no y direction: drop what an earlier 2D configuration may have left.
        g.curvature.remove_for(run, &["y"]);
        for radius in ["0.5", "1"] {
            g.loss_rise.remove_for(run, &["y", radius]);
        }
    }
    for (dir, coords, line) in lines {
        g.curvature.set_for(run, &[dir], curvature_at_zero(coords, &line));
        for (label, r) in [("0.5", 0.5), ("1", 1.0)] {
            g.loss_rise.set_for(run, &[dir, label], loss_rise(coords, &line, rec.centre_loss, r));
        }
    }
}

/// The newest ingested step of `run`.
fn newest_step(store: &crate::store::Store, run: &str) -> Option<u64> {
    crate::store::checkpoints::latest(store, run).ok()?.map(|c| c.step)
}

impl SliceJob {
    /// The plane about `centre`: the latest trajectory PCA's (with the trajectory in it), or random
    /// directions from the job's seed; and its grid.
    #[allow(clippy::type_complexity)]
    fn plane(
        &self,
        pca: Option<&crate::store::trajectory::PcaRecord>,
        centre: &Path,
    ) -> Result<(PlaneSpec, DirectionSource, Vec<f64>, Vec<f64>, Vec<(f64, f64, u64)>)> {
        let path = centre.to_path_buf();
        Ok(match pca {
            Some(p) => {
                let pp = pca_plane(p, self.x, self.y)?;
                let [fx, fy] = pp.files;
                (
                    PlaneSpec::Files { centre: path.clone(), x: fx, y: fy },
                    pp.source,
                    pp.xs,
                    pp.ys,
                    pp.trajectory,
                )
            }
            None => {
                let dirs = RandomDirections {
                    seed: self.cfg.seed,
                    norm: self.cfg.norm,
                    ignore: Ignore::Biasbn,
                    params: Vec::new(),
                    orthogonalize: false,
                };
                let xs = self.x.map(|x| x.values()).unwrap_or_default();
                let ys = self.y.map(|y| y.values()).unwrap_or_default();
                let plane =
                    PlaneSpec::Random { centre: path.clone(), dirs: dirs.clone(), two_d: self.y.is_some() };
                (plane, DirectionSource::Random(dirs), xs, ys, Vec::new())
            }
        })
    }
}

impl PeriodicJob for SliceJob {
    fn name(&self) -> &'static str {
        "slice"
    }

    fn every(&self) -> u64 {
        self.cfg.every
    }

    fn run(&self, ctx: &JobContext, run: &str, step: u64) -> Result<()> {
        let store = &ctx.store;
        // A PCA slice is about the latest PCA's centre checkpoint, where the trajectory coordinates are.
        let pca = match self.cfg.dirs {
            JobDirs::Random => None,
            JobDirs::Pca => match crate::store::trajectory::latest_pca(store, run)? {
                Some(p) if p.direction_files.len() >= 2 => Some(p),
                _ => {
                    tracing::info!(run, step, "slice job: no trajectory PCA with 2 components yet; skipped");
                    return Ok(());
                }
            },
        };
        let centre_step = pca.as_ref().map_or(step, |p| p.center_step);
        let path = ctx.checkpoint_path(run, centre_step)?;
        // Held before the workers start: a rotation while they import can't take it away.
        let held = crate::daemon::hold::hold(&ctx.data_dir, &path)?;
        let (plane, directions, xs, ys, trajectory) = self.plane(pca.as_ref(), &held.path)?;
        // Stop when the daemon shuts down (the job's token is a child of the daemon's, so that reaches
        // a job still waiting for workers from a launcher too), or (abandon_on_newer) once a newer
        // checkpoint is ingested (checked at most every 0.5 s). The partial record stays, its done mask
        // showing what was computed.
        let stop = ctx.cancel().child();
        let mut last_check = Instant::now();
        let mut progress = |_n: usize, _total: usize| {
            if self.cfg.abandon_on_newer
                && !stop.is_cancelled()
                && last_check.elapsed() >= Duration::from_millis(500)
            {
                last_check = Instant::now();
                if newest_step(store, run).is_some_and(|s| s > step) {
                    stop.cancel(Reason::NewerCheckpoint);
                }
            }
        };
        let contract = &self.model;
        // Each save rewrites the whole record: about 20 saves per slice, at least 5 points apart.
        let points = xs.len() * ys.len().max(1);
        let req = SliceRequest {
            contract,
            plane,
            xs,
            ys,
            run: Some(run.to_string()),
            step: Some(centre_step),
            directions,
            trajectory,
            signature_prefix: format!("daemon-slice|{run}|{centre_step}"),
            // The same PCA about the same checkpoint, already sliced: nothing new to compute.
            skip_if_complete: pca.is_some(),
            persist_every: (points / 20).max(5),
            label: format!("slice job, run {run}"),
            recorded_as: Some(path.clone()),
        };
        let r = run_slice(store, req, &stop, &mut |_, _| {}, &mut progress).context("slice job")?;
        let rec = &r.record;
        if r.already_complete {
            tracing::info!(run, step = centre_step, "slice job: this PCA plane is already sliced; skipped");
            return Ok(());
        }
        match r.outcome {
            Outcome::Complete => {
                if let Some(g) = &ctx.gauges.slice {
                    publish(g, run, rec);
                }
                tracing::info!(run, step, id = rec.id, centre_loss = rec.centre_loss, "slice stored");
            }
            Outcome::Cancelled => tracing::info!(
                run,
                step,
                id = rec.id,
                done = rec.values.done_count(),
                reason = %stop.reason().map_or_else(|| "none".to_string(), |r| r.to_string()),
                "slice stopped early (shutdown or a newer checkpoint)"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landscape::slice::SliceValues;

    #[test]
    fn curvature_of_a_parabola_is_exact() {
        let xs: Vec<f64> = (0..11).map(|i| -1.0 + 0.2 * i as f64).collect();
        let l: Vec<f64> = xs.iter().map(|x| 3.0 * x * x + x + 2.0).collect();
        assert!((curvature_at_zero(&xs, &l) - 6.0).abs() < 1e-9);
        // Rise of 3r² at r: mean of L(±r) − L(0).
        assert!((loss_rise(&xs, &l, 2.0, 0.6) - 3.0 * 0.36).abs() < 1e-9);
        // Between grid points: L(±0.5) interpolated from ±0.4 and ±0.6; the linear term cancels.
        assert!((loss_rise(&xs, &l, 2.0, 0.5) - 3.0 * (0.16 + 0.36) / 2.0).abs() < 1e-9);
        assert!(loss_rise(&xs, &l, 2.0, 1.5).is_nan());
        assert!(curvature_at_zero(&xs[..2], &l[..2]).is_nan());
    }

    #[test]
    fn each_direction_of_a_2d_slice_has_its_own_line_through_zero() {
        let axis: Vec<f64> = (0..5).map(|i| -1.0 + 0.5 * i as f64).collect();
        let mut v = SliceValues::new(axis.clone(), axis.clone());
        let f = |x: f64, y: f64| 3.0 * x * x + 5.0 * y * y + x * y + 1.0;
        for i in 0..25 {
            let (x, y) = v.coords(i);
            v.loss[i] = f(x, y);
            v.done[i] = true;
        }
        let (row, col) = (x_row(&v), y_column(&v));
        assert_eq!(row, axis.iter().map(|&x| f(x, 0.0)).collect::<Vec<_>>());
        assert_eq!(col, axis.iter().map(|&y| f(0.0, y)).collect::<Vec<_>>());
        assert!((curvature_at_zero(&v.xs, &row) - 6.0).abs() < 1e-9);
        assert!((curvature_at_zero(&v.ys, &col) - 10.0).abs() < 1e-9);
        assert!((loss_rise(&v.ys, &col, 1.0, 0.5) - 5.0 * 0.25).abs() < 1e-9);
        assert!(y_column(&SliceValues::new(axis, vec![])).is_empty(), "a 1D slice has no y line");
    }

    #[test]
    fn config_errors_name_the_key() {
        let v: toml::Value = toml::from_str("every = 2\nmodel_dir = \"/m\"\nx = \"1:0:3\"").unwrap();
        assert!(build(&v).err().unwrap().to_string().starts_with("x: "));
        let v: toml::Value =
            toml::from_str("every = 2\nmodel_dir = \"/m\"\nx = \"-1:1:3\"\nbogus = 1").unwrap();
        assert!(build(&v).err().unwrap().to_string().contains("bogus"));
        let v: toml::Value = toml::from_str("every = 0\nmodel_dir = \"/m\"\nx = \"-1:1:3\"").unwrap();
        assert!(build(&v).err().unwrap().to_string().starts_with("every"));
        let v: toml::Value =
            toml::from_str("every = 3\nmodel_dir = \"/m\"\nx = \"-1:1:3\"\ny = \"-1:1:5\"\nnorm = \"layer\"")
                .unwrap();
        let j = build(&v).unwrap();
        assert_eq!((j.name(), j.every()), ("slice", 3));
    }
}
