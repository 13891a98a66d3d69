//! The images landscaped writes: the charts its `plot` commands draw, as PNG, at the step of the record
//! they show. [`IMAGE_SOURCES`] lists them, one function per chart (a new chart is one more function):
//! each complete slice of the run (2D: loss contours with the optimizer path for PCA slices; 1D: the
//! loss curve), the optimizer path on the latest PCA plane, and the Hessian eigenvalue density (SLQ).

use crate::plot::{self, ContourChart, Grid, LabeledPath, Levels, LineChart, Panel, PathChart, Series};
use crate::store::slices::{DirectionSource, SliceRecord};
use crate::store::{self, RunStepRecord, Store};
use std::sync::atomic::{AtomicU64, Ordering};

/// One chart to draw for a tag at a step.
pub struct Picture {
    pub tag: String,
    pub step: u64,
    pub wall_time: f64,
    pub panel: Panel,
}

pub type ImageSource = fn(&Store, &str) -> store::Result<Vec<Picture>>;

/// Every chart written for a run.
pub const IMAGE_SOURCES: &[ImageSource] = &[slice_pictures, trajectory_pictures, spectrum_pictures];

/// `landscaped/image/slice_<kind>`: each complete slice of the run at its centre step.
fn slice_pictures(store: &Store, run: &str) -> store::Result<Vec<Picture>> {
    let mut out = Vec::new();
    for r in store::slices::list(store)? {
        let (Some(rrun), Some(step)) = (&r.run, r.step) else { continue };
        if rrun != run || !r.values.is_complete() {
            continue;
        }
        out.push(Picture {
            tag: format!("landscaped/image/slice_{}", r.kind()),
            step,
            wall_time: r.updated as f64,
            panel: slice_panel(&r),
        });
    }
    Ok(out)
}

fn slice_panel(r: &SliceRecord) -> Panel {
    let v = &r.values;
    let (xl, yl) = match &r.directions {
        DirectionSource::Random(d) => {
            (format!("δ ({} normalized)", d.norm), format!("η ({} normalized)", d.norm))
        }
        DirectionSource::Pca { explained_variance_ratio: e, .. } => (
            format!("1st PC: {:.1} %", e.first().copied().unwrap_or(f64::NAN) * 100.0),
            format!("2nd PC: {:.1} %", e.get(1).copied().unwrap_or(f64::NAN) * 100.0),
        ),
        DirectionSource::Interpolation { .. } => ("α (interpolation from θ to θ')".into(), String::new()),
    };
    let title = format!("slice {} ({}) at step {}", r.id, r.kind(), r.step.unwrap_or(0));
    if !v.is_2d() {
        let pts = v.xs.iter().copied().zip(v.loss.iter().copied()).collect();
        return Panel::Line(LineChart {
            title,
            x_label: xl,
            y_label: "loss".into(),
            series: vec![Series::new("loss", pts)],
            ..Default::default()
        });
    }
    let positive = v.loss.iter().filter(|x| x.is_finite()).all(|&x| x > 0.0);
    let paths = if r.trajectory.is_empty() {
        Vec::new()
    } else {
        vec![LabeledPath {
            label: "optimizer path".into(),
            points: r.trajectory.iter().map(|&(x, y, _)| (x, y)).collect(),
            point_labels: r.trajectory.iter().map(|&(_, _, s)| s.to_string()).collect(),
            markers_only: false,
        }]
    };
    Panel::Contour(ContourChart {
        title,
        x_label: xl,
        y_label: yl,
        grid: Grid { xs: v.xs.clone(), ys: v.ys.clone(), z: v.loss_rows() },
        levels: if positive { Levels::Log(12) } else { Levels::Linear(12) },
        label_lines: true,
        z_label: "loss".into(),
        paths,
        ..Default::default()
    })
}

/// `landscaped/image/trajectory`: the optimizer path on the PC1/PC2 plane of each PCA with two
/// components, at its newest step.
fn trajectory_pictures(store: &Store, run: &str) -> store::Result<Vec<Picture>> {
    let mut out = Vec::new();
    for r in store::trajectory::pca_history(store, run)? {
        let (Some(&step), true) = (r.steps.last(), r.explained_variance_ratio.len() >= 2) else { continue };
        out.push(Picture {
            tag: "landscaped/image/trajectory".into(),
            step,
            wall_time: r.computed_at as f64,
            panel: Panel::Path(PathChart {
                title: format!("{}: optimizer path (centre step {})", r.run, r.center_step),
                x_label: format!("1st PC: {:.1} %", r.explained_variance_ratio[0] * 100.0),
                y_label: format!("2nd PC: {:.1} %", r.explained_variance_ratio[1] * 100.0),
                paths: vec![LabeledPath {
                    label: String::new(),
                    points: r.coords.iter().filter(|c| c.len() >= 2).map(|c| (c[0], c[1])).collect(),
                    point_labels: r.steps.iter().map(|s| s.to_string()).collect(),
                    markers_only: false,
                }],
                ..Default::default()
            }),
        });
    }
    Ok(out)
}

/// `landscaped/image/spectrum`: the Hessian eigenvalue density of each sharpness record that has one.
fn spectrum_pictures(store: &Store, run: &str) -> store::Result<Vec<Picture>> {
    let mut out = Vec::new();
    for r in store::sharpness::SharpnessRecord::list(store, run)? {
        let Some(q) = &r.density else { continue };
        let (grid, dens) = q.density(200, None);
        out.push(Picture {
            tag: "landscaped/image/spectrum".into(),
            step: r.step,
            wall_time: r.computed_unix as f64,
            panel: Panel::Line(LineChart {
                title: format!("Hessian eigenvalue density (SLQ), step {}", r.step),
                x_label: "eigenvalue".into(),
                y_label: "density".into(),
                series: vec![Series::new(run.to_string(), grid.into_iter().zip(dens).collect())],
                ..Default::default()
            }),
        });
    }
    Ok(out)
}

/// A PNG of the chart, with its width and height in pixels.
pub fn render_png(panel: &Panel) -> Result<(Vec<u8>, u32, u32), plot::PlotError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let tmp = std::env::temp_dir().join(format!(
        "landscaped-tb-{}-{}.png",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let drawn = match panel {
        Panel::Line(c) => plot::line_chart(&tmp, c),
        Panel::Histogram(c) => plot::histogram_chart(&tmp, c),
        Panel::Contour(c) => plot::contour_chart(&tmp, c),
        Panel::Heatmap(c) => plot::heatmap_chart(&tmp, c),
        Panel::Path(c) => plot::path_chart(&tmp, c),
    };
    let read = drawn.and_then(|()| {
        std::fs::read(&tmp).map_err(|e| plot::PlotError::Write { path: tmp.clone(), reason: e.to_string() })
    });
    let _ = std::fs::remove_file(&tmp);
    let png = read?;
    let (w, h) = png_size(&png)
        .ok_or_else(|| plot::PlotError::Write { path: tmp.clone(), reason: "not a PNG".into() })?;
    Ok((png, w, h))
}

/// Width and height from a PNG's IHDR chunk.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}
