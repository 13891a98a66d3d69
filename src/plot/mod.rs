//! Charts as SVG or PNG (chosen by the output file's extension): lines, histograms, contours, heat maps,
//! trajectories. Takes plain data, never the store.
//!
//! Every chart is a plain struct (build it with `..Default::default()` for the fields you don't need) and
//! one function that writes it to a file:
//!
//! | function | chart | used for |
//! |---|---|---|
//! | [`line_chart`] | labelled series, legend, optional log y, optional right-hand y axis | norm history, 1D slices (loss + accuracy) |
//! | [`histogram_chart`] | bin edges + counts, overlaid, small multiples or ridge (TensorBoard-like) | weight histograms (Fig. 2 c/f) |
//! | [`contour_chart`] | grid `z[iy][ix]`, labelled isolines (`contour` crate), filled bands, path overlay | 2D loss slices (Fig. 1, 5, 8) |
//! | [`heatmap_chart`] | grid with a colour bar | |λmin/λmax| maps (Fig. 7), loss heat maps |
//! | [`path_chart`] | points joined in order, each labelled | optimizer trajectory on PC1/PC2 (Fig. 9) |
//! | [`panels_chart`] / [`side_by_side`] | several of the above in one image | small vs large batch, 1D slices in two panels |
//!
//! The output format comes from the extension of `out`: `.svg` or `.png` (case-insensitive); anything else
//! is [`PlotError::UnsupportedFormat`]. PNG text needs a TrueType font (DejaVu Sans, Liberation Sans, ...
//! from the usual system folders, or the file named by `LANDSCAPED_FONT`); without one, PNG output fails
//! with [`PlotError::NoFont`], which names the package to install (`fonts-dejavu-core`), while SVG still
//! works (the viewer draws the text). `LANDSCAPED_FONT=none` skips the system search.
//!
//! Grids: `z[iy][ix]` holds the value at `(xs[ix], ys[iy])`; `xs` and `ys` must be strictly increasing
//! and may have different lengths and non-uniform spacing. `NaN` marks a point that was not computed; it
//! is left blank in heat maps and filled contours and no isoline crosses it.
//!
//! ```no_run
//! use landscaped::plot::{line_chart, LineChart, Series};
//! let chart = LineChart {
//!     title: "Weight norm".into(),
//!     x_label: "step".into(),
//!     y_label: "‖θ‖₂".into(),
//!     series: vec![Series::new("fc1.weight", vec![(0.0, 1.0), (100.0, 1.4)])],
//!     ..Default::default()
//! };
//! line_chart(std::path::Path::new("norms.svg"), &chart).unwrap();
//! ```

mod colormap;
mod font;
mod grid;
mod histogram;
mod line;
mod path;
mod render;
mod scale;

use std::path::{Path, PathBuf};

pub use colormap::viridis;
pub use grid::level_values;
pub use render::OutputFormat;

/// Why a chart could not be written. Every message names the output file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The output path's extension is neither `.svg` nor `.png`.
    #[error("{path}: unsupported chart format (use a .svg or .png file name)")]
    UnsupportedFormat { path: PathBuf },
    /// No TrueType font could be found to draw PNG text.
    #[error(
        "{path}: no TrueType font found for chart text (looked for {looked}); install one, e.g. \
         `apt-get install fonts-dejavu-core`, or set LANDSCAPED_FONT=/path/to/font.ttf"
    )]
    NoFont { path: PathBuf, looked: String },
    /// The chart's data is unusable (empty, mismatched lengths, non-increasing axes, ...).
    #[error("{path}: cannot plot: {reason}")]
    InvalidData { path: PathBuf, reason: String },
    /// Drawing or writing the file failed.
    #[error("{path}: cannot write chart: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Which y axis a line series is measured against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Axis {
    #[default]
    Left,
    /// The right-hand axis: its label is [`LineChart::y2_label`].
    Right,
}

/// One labelled line in a [`LineChart`].
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Legend entry (empty: not in the legend).
    pub label: String,
    /// `(x, y)` points, drawn in the given order; non-finite points break the line.
    pub points: Vec<(f64, f64)>,
    pub axis: Axis,
    /// Draw a small marker at every point as well.
    pub markers: bool,
    /// Dashed line (e.g. to tell accuracy from loss).
    pub dashed: bool,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { label: label.into(), points, ..Default::default() }
    }
    /// Measure this series against the right-hand y axis.
    pub fn on_right(mut self) -> Self {
        self.axis = Axis::Right;
        self
    }
    pub(crate) fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
    pub fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }
}

/// Image size in pixels (`None`: a default that suits the chart type).
pub type Size = Option<(u32, u32)>;

/// Several labelled series against x; optional log-scaled y and a second (right-hand) y axis.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Log-scale the left y axis (non-positive values are skipped).
    pub log_y: bool,
    /// Label of the right-hand y axis; needed when any series is on [`Axis::Right`].
    pub y2_label: Option<String>,
    /// Log-scale the right-hand y axis.
    pub log_y2: bool,
    /// Log-scale x (non-positive values are skipped).
    pub log_x: bool,
    pub size: Size,
}

/// One histogram: `edges.len() == counts.len() + 1`, edges increasing.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Legend entry or panel title, e.g. "step 1000".
    pub label: String,
    pub edges: Vec<f64>,
    pub counts: Vec<f64>,
}

/// How several histograms share a chart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HistogramLayout {
    /// All on the same axes, outlined and lightly filled, with a legend.
    #[default]
    Overlay,
    /// One small panel each, on a grid, sharing the x range.
    SmallMultiples,
    /// Stacked with a vertical offset, first at the back (TensorBoard's "offset" view).
    Ridge,
}

/// One or several histograms.
#[derive(Debug, Clone, Default)]
pub struct HistogramChart {
    pub title: String,
    pub x_label: String,
    /// Usually "count" or "density".
    pub y_label: String,
    pub histograms: Vec<Histogram>,
    pub layout: HistogramLayout,
    /// Log-scale the counts (zero bins are left empty).
    pub log_y: bool,
    pub size: Size,
}

/// Values on a rectilinear grid: `z[iy][ix]` at `(xs[ix], ys[iy])`; `NaN` = not computed.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub z: Vec<Vec<f64>>,
}

/// Which values the contour lines and filled bands are drawn at.
#[derive(Debug, Clone, PartialEq)]
pub enum Levels {
    /// About this many evenly spaced "nice" values between the grid's min and max.
    Linear(usize),
    /// This many geometrically spaced values between min and max (needs positive values; loss surfaces
    /// span decades, so this is what the paper-style plots use).
    Log(usize),
    /// Exactly these values.
    Values(Vec<f64>),
}

impl Default for Levels {
    fn default() -> Self {
        Levels::Linear(10)
    }
}

/// A sequence of points joined in order, each optionally labelled (e.g. by step).
#[derive(Debug, Clone, Default)]
pub struct LabeledPath {
    /// Legend entry (empty: no legend).
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// One label per point (may be shorter than `points`; empty strings are skipped).
    pub point_labels: Vec<String>,
    /// Marks only (crosses, no line joining them): points of note such as NaN grid points.
    pub markers_only: bool,
}

/// A 2D field as labelled isolines, optionally with filled bands and overlaid paths.
#[derive(Debug, Clone, Default)]
pub struct ContourChart {
    pub title: String,
    /// E.g. "1st PC: 45.2 %" or "δ direction".
    pub x_label: String,
    pub y_label: String,
    pub grid: Grid,
    pub levels: Levels,
    /// Fill the bands between levels with a viridis colour map (and draw a colour bar).
    pub filled: bool,
    /// Write the level value on the isolines.
    pub label_lines: bool,
    /// Label of the colour bar (what z is, e.g. "loss").
    pub z_label: String,
    /// Paths drawn on top (the optimizer trajectory on PCA axes).
    pub paths: Vec<LabeledPath>,
    pub size: Size,
}

/// A 2D field as coloured cells with a colour bar.
#[derive(Debug, Clone, Default)]
pub struct HeatmapChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub grid: Grid,
    /// Label of the colour bar.
    pub z_label: String,
    /// Colour by log10(z) (non-positive values are left blank).
    pub log_scale: bool,
    /// Fix the colour range (otherwise the finite min..max of the grid).
    pub range: Option<(f64, f64)>,
    pub size: Size,
}

/// Labelled points joined in order (the optimizer's path on the PC1/PC2 plane).
#[derive(Debug, Clone, Default)]
pub struct PathChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub paths: Vec<LabeledPath>,
    /// Keep one unit of x as long as one unit of y (PCA planes).
    pub equal_aspect: bool,
    pub size: Size,
}

/// One panel of a [`PanelsChart`]: any chart type (its own `size` is ignored).
#[derive(Debug, Clone)]
pub enum Panel {
    Line(LineChart),
    Histogram(HistogramChart),
    Contour(ContourChart),
    Heatmap(HeatmapChart),
    Path(PathChart),
}

/// Several charts in one image, on a grid of `columns` columns (0: all in one row).
#[derive(Debug, Clone, Default)]
pub struct PanelsChart {
    /// Overall title above the panels (may be empty).
    pub title: String,
    pub panels: Vec<Panel>,
    pub columns: usize,
    pub size: Size,
}

/// Write a line chart to `out` (`.svg` or `.png`).
pub fn line_chart(out: &Path, chart: &LineChart) -> Result<(), PlotError> {
    render::render(out, render::Figure::Line(chart))
}

/// Write one or several histograms to `out` (`.svg` or `.png`).
pub fn histogram_chart(out: &Path, chart: &HistogramChart) -> Result<(), PlotError> {
    render::render(out, render::Figure::Histogram(chart))
}

/// Write a contour plot to `out` (`.svg` or `.png`).
pub fn contour_chart(out: &Path, chart: &ContourChart) -> Result<(), PlotError> {
    render::render(out, render::Figure::Contour(chart))
}

/// Write a heat map with a colour bar to `out` (`.svg` or `.png`).
pub fn heatmap_chart(out: &Path, chart: &HeatmapChart) -> Result<(), PlotError> {
    render::render(out, render::Figure::Heatmap(chart))
}

/// Write labelled paths (trajectories) to `out` (`.svg` or `.png`).
pub fn path_chart(out: &Path, chart: &PathChart) -> Result<(), PlotError> {
    render::render(out, render::Figure::Path(chart))
}

/// Writes one panel on its own, as its chart type's function would (its `size` is kept).
pub fn panel_chart(out: &Path, panel: &Panel) -> Result<(), PlotError> {
    render::render(out, render::Figure::of_panel(panel))
}

/// Write several charts in one image to `out` (`.svg` or `.png`).
pub fn panels_chart(out: &Path, chart: &PanelsChart) -> Result<(), PlotError> {
    render::render(out, render::Figure::Panels(chart))
}

/// Write the given panels next to each other, in one row, under a common title.
pub fn side_by_side(out: &Path, title: &str, panels: Vec<Panel>) -> Result<(), PlotError> {
    panels_chart(out, &PanelsChart { title: title.to_string(), panels, columns: 0, size: None })
}
