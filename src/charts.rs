//! A stored record → its chart, one definition per chart, for every place that draws it: the CLI's
//! `plot` commands write it to a file, TensorBoard's images (`tensorboard::images`) render the same
//! chart as PNG. Charts are `plot`'s plain structs; nothing here draws or reads the store.
//!
//! - a slice ([`slice_panels`]): 1D, the loss (accuracy on a right-hand axis when measured) with the
//!   computed NaN/±Inf points marked and counted; 2D, labelled contours with the optimizer path and those
//!   points, filled contours, a heat map;
//! - the optimizer path on the PC1/PC2 plane of a trajectory PCA ([`trajectory_chart`]);
//! - the Hessian eigenvalue density of sharpness records (SLQ; [`density_series`], [`density_chart`]).

use crate::landscape::slice::SliceValues;
use crate::plot::{
    ContourChart, Grid, HeatmapChart, LabeledPath, Levels, LineChart, Panel, PathChart, Series,
};
use crate::store::sharpness::SharpnessRecord;
use crate::store::slices::{DirectionSource, SliceRecord};
use crate::store::trajectory::PcaRecord;
use std::path::Path;

/// Which charts of a 2D slice (a 1D slice always has its one loss curve).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotKind {
    /// 2D: labelled contour lines, filled contours and a heat map side by side; 1D: loss and accuracy.
    All,
    Contour,
    Filled,
    Heatmap,
}

/// Contour levels of a 2D slice's chart unless asked otherwise.
pub const CONTOUR_LEVELS: usize = 14;

/// Grid points of the smoothed eigenvalue density unless asked otherwise.
pub const DENSITY_BINS: usize = 2000;

/// "1st", "2nd", "3rd", "4th", ...
pub(crate) fn ordinal(k: usize) -> String {
    let suffix = match (k % 10, k % 100) {
        (1, x) if x != 11 => "st",
        (2, x) if x != 12 => "nd",
        (3, x) if x != 13 => "rd",
        _ => "th",
    };
    format!("{k}{suffix}")
}

/// The paper's axis label for component `k` (0-based): "1st PC: 45.2 %".
pub(crate) fn pc_label(k: usize, ratio: f64) -> String {
    format!("{} PC: {:.1} %", ordinal(k + 1), ratio * 100.0)
}

/// The chart of a PCA record: the path on the PC1/PC2 plane, points labelled by step.
pub(crate) fn trajectory_chart(rec: &PcaRecord) -> anyhow::Result<PathChart> {
    if rec.explained_variance_ratio.len() < 2 {
        anyhow::bail!(
            "run {:?}: the PCA has only {} component(s); the plot needs 2",
            rec.run,
            rec.coords.len()
        );
    }
    let points: Vec<(f64, f64)> = rec.coords.iter().map(|c| (c[0], c[1])).collect();
    Ok(PathChart {
        title: format!("{}: optimizer path (centre step {})", rec.run, rec.center_step),
        x_label: pc_label(0, rec.explained_variance_ratio[0]),
        y_label: pc_label(1, rec.explained_variance_ratio[1]),
        paths: vec![LabeledPath {
            label: String::new(),
            points,
            point_labels: rec.steps.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }],
        equal_aspect: false,
        ..Default::default()
    })
}

/// The eigenvalue density of a sharpness record as one curve, `"{run} step {step}"` (None: the record
/// has no density). `log_y`: densities floored at 1e-12 for a log axis.
pub(crate) fn density_series(
    rec: &SharpnessRecord,
    bins: usize,
    sigma_squared: Option<f64>,
    log_y: bool,
) -> Option<Series> {
    let (grid, dens) = rec.density.as_ref()?.density(bins, sigma_squared);
    let pts = grid.into_iter().zip(dens).map(|(x, y)| (x, if log_y { y.max(1e-12) } else { y })).collect();
    Some(Series::new(format!("{} step {}", rec.run, rec.step), pts))
}

/// The Hessian eigenvalue density chart of one or more curves ([`density_series`]).
pub(crate) fn density_chart(series: Vec<Series>, log_y: bool) -> LineChart {
    LineChart {
        title: "Hessian eigenvalue density (SLQ)".into(),
        x_label: "eigenvalue".into(),
        y_label: "density".into(),
        series,
        log_y,
        ..Default::default()
    }
}

fn axis_labels(r: &SliceRecord) -> (String, String) {
    match &r.directions {
        DirectionSource::Random(d) => {
            (format!("δ ({} normalized)", d.norm), format!("η ({} normalized)", d.norm))
        }
        DirectionSource::Pca { explained_variance_ratio: v, .. } => (
            pc_label(0, v.first().copied().unwrap_or(f64::NAN)),
            pc_label(1, v.get(1).copied().unwrap_or(f64::NAN)),
        ),
        DirectionSource::Interpolation { .. } => ("α (interpolation from θ to θ')".into(), String::new()),
    }
}

fn title_of(r: &SliceRecord) -> String {
    let who = match (&r.run, r.step) {
        (Some(run), Some(s)) => format!("{run} step {s}"),
        (Some(run), None) => run.clone(),
        _ => {
            Path::new(&r.checkpoint).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
        }
    };
    format!("slice {}: {who}", r.id)
}

/// (x, y) of every computed point whose loss is NaN or ±∞.
fn nonfinite_points(r: &SliceRecord) -> Vec<(f64, f64)> {
    let v = &r.values;
    (0..v.loss.len()).filter(|&i| v.done[i] && !v.loss[i].is_finite()).map(|i| v.coords(i)).collect()
}

/// "loss NaN: 3 points", "loss NaN/Inf: 2 + 1 points".
fn nonfinite_label(v: &SliceValues) -> String {
    match v.nonfinite_counts() {
        (n, 0) => format!("loss NaN: {n} point(s)"),
        (0, i) => format!("loss ±Inf: {i} point(s)"),
        (n, i) => format!("loss NaN/±Inf: {n} + {i} point(s)"),
    }
}

/// The charts of a slice: its loss curve (1D), or those `kind` names (2D) with `levels` contour levels.
pub(crate) fn slice_panels(r: &SliceRecord, kind: PlotKind, levels: usize) -> Vec<Panel> {
    if !r.values.is_2d() {
        return vec![Panel::Line(slice_curve(r))];
    }
    let (xl, yl) = axis_labels(r);
    let v = &r.values;
    let grid = Grid { xs: v.xs.clone(), ys: v.ys.clone(), z: v.loss_rows() };
    let bad = nonfinite_points(r);
    let positive = v.loss.iter().filter(|x| x.is_finite()).all(|&x| x > 0.0);
    let lv = if positive { Levels::Log(levels) } else { Levels::Linear(levels) };
    let marks = (!bad.is_empty()).then(|| LabeledPath {
        label: nonfinite_label(v),
        points: bad.clone(),
        point_labels: Vec::new(),
        markers_only: true,
    });
    let paths: Vec<LabeledPath> = optimizer_path(r).into_iter().chain(marks).collect();
    let contour = |filled: bool| {
        Panel::Contour(ContourChart {
            title: if filled { format!("{} (filled)", title_of(r)) } else { title_of(r) },
            x_label: xl.clone(),
            y_label: yl.clone(),
            grid: grid.clone(),
            levels: lv.clone(),
            filled,
            label_lines: !filled,
            z_label: "loss".into(),
            paths: paths.clone(),
            size: None,
        })
    };
    let heat = || {
        Panel::Heatmap(HeatmapChart {
            title: if bad.is_empty() {
                format!("{} (heat map)", title_of(r))
            } else {
                format!("{} (heat map; {} blank)", title_of(r), nonfinite_label(v))
            },
            x_label: xl.clone(),
            y_label: yl.clone(),
            grid: grid.clone(),
            z_label: if positive { "log10 loss".into() } else { "loss".into() },
            log_scale: positive,
            range: None,
            size: None,
        })
    };
    match kind {
        PlotKind::All => vec![contour(false), contour(true), heat()],
        PlotKind::Contour => vec![contour(false)],
        PlotKind::Filled => vec![contour(true)],
        PlotKind::Heatmap => vec![heat()],
    }
}

/// A 1D slice: loss (with markers), accuracy on the right when measured, and the computed NaN/±Inf
/// losses marked at the top of the finite range (each point apart) and counted in the legend; points
/// not computed are simply absent.
fn slice_curve(r: &SliceRecord) -> LineChart {
    let v = &r.values;
    let pts = |vals: &[f64]| -> Vec<(f64, f64)> { v.xs.iter().copied().zip(vals.iter().copied()).collect() };
    let mut series = vec![Series::new("loss", pts(&v.loss)).with_markers()];
    let has_acc = v.accuracy.iter().any(|a| a.is_finite());
    if has_acc {
        series.push(Series::new("accuracy", pts(&v.accuracy)).on_right().dashed());
    }
    let bad = nonfinite_points(r);
    if !bad.is_empty() {
        let top = v.finite_loss_range().map(|r| r.1).unwrap_or(1.0);
        let mut marks = Vec::new();
        for (x, _) in &bad {
            marks.push((*x, top));
            marks.push((f64::NAN, f64::NAN));
        }
        series.push(Series::new(format!("{}, drawn at the top", nonfinite_label(v)), marks).with_markers());
    }
    LineChart {
        title: title_of(r),
        x_label: axis_labels(r).0,
        y_label: "loss".into(),
        series,
        y2_label: has_acc.then(|| "accuracy".to_string()),
        ..Default::default()
    }
}

/// The optimizer path in a PCA slice's plane, its first, last and every quarter's point labelled by step.
fn optimizer_path(r: &SliceRecord) -> Option<LabeledPath> {
    let n = r.trajectory.len();
    (n > 0).then(|| LabeledPath {
        label: "optimizer path".into(),
        points: r.trajectory.iter().map(|&(x, y, _)| (x, y)).collect(),
        point_labels: r
            .trajectory
            .iter()
            .enumerate()
            .map(
                |(i, &(_, _, s))| {
                    if i == 0 || i + 1 == n || i % (n / 4).max(1) == 0 {
                        s.to_string()
                    } else {
                        String::new()
                    }
                },
            )
            .collect(),
        markers_only: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_like_the_paper() {
        assert_eq!(pc_label(0, 0.452), "1st PC: 45.2 %");
        assert_eq!(pc_label(1, 0.0831), "2nd PC: 8.3 %");
        assert_eq!(ordinal(3), "3rd");
        assert_eq!(ordinal(11), "11th");
        assert_eq!(ordinal(22), "22nd");
    }
}
