//! The images landscaped writes: the charts its `plot` commands draw (built by `crate::charts`, one
//! definition each), as PNG, at the step of the record they show. [`IMAGE_SOURCES`] lists them, one
//! function per chart (a new chart is one more function): each complete slice of the run (2D: loss
//! contours with the optimizer path for PCA slices, as `plot slice --kind contour`; 1D: the loss curve),
//! the optimizer path on each PCA plane (`plot trajectory`), and the Hessian eigenvalue density (SLQ;
//! `plot spectrum`), each with the CLI's defaults.

use crate::charts::{
    CONTOUR_LEVELS, DENSITY_BINS, PlotKind, density_chart, density_series, slice_panels, trajectory_chart,
};
use crate::plot::{self, Panel};
use crate::store::sharpness::SharpnessRecord;
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
    for (step, r) in super::scalars::complete_slices(store, run)? {
        for panel in slice_panels(&r, PlotKind::Contour, CONTOUR_LEVELS) {
            out.push(Picture {
                tag: format!("landscaped/image/slice_{}", r.kind()),
                step,
                wall_time: r.updated as f64,
                panel,
            });
        }
    }
    Ok(out)
}

/// `landscaped/image/trajectory`: the optimizer path on the PC1/PC2 plane of each PCA with two
/// components, at its newest step.
fn trajectory_pictures(store: &Store, run: &str) -> store::Result<Vec<Picture>> {
    let mut out = Vec::new();
    for r in store::trajectory::pca_history(store, run)? {
        let Some(&step) = r.steps.last() else { continue };
        let Ok(chart) = trajectory_chart(&r) else { continue };
        out.push(Picture {
            tag: "landscaped/image/trajectory".into(),
            step,
            wall_time: r.computed_at as f64,
            panel: Panel::Path(chart),
        });
    }
    Ok(out)
}

/// `landscaped/image/spectrum`: the Hessian eigenvalue density of each sharpness record that has one.
fn spectrum_pictures(store: &Store, run: &str) -> store::Result<Vec<Picture>> {
    let mut out = Vec::new();
    for r in SharpnessRecord::list(store, run)? {
        let Some(curve) = density_series(&r, DENSITY_BINS, None, true) else { continue };
        out.push(Picture {
            tag: "landscaped/image/spectrum".into(),
            step: r.step,
            wall_time: r.computed_unix as f64,
            panel: Panel::Line(density_chart(vec![curve], true)),
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
    let read = plot::panel_chart(&tmp, panel).and_then(|()| {
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
