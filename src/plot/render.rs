//! Output format from the file extension, the backend (SVG or PNG) and the pieces every chart shares:
//! text sizes, axes with our own ticks, error mapping.

use std::path::Path;

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;

use super::scale::Scale;
use super::{
    ContourChart, HeatmapChart, HistogramChart, HistogramLayout, LineChart, Panel, PanelsChart, PathChart,
    PlotError, font,
};

/// Chart file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Svg,
    Png,
}

impl OutputFormat {
    /// The format named by `path`'s extension (case-insensitive), or [`PlotError::UnsupportedFormat`].
    pub fn from_path(path: &Path) -> Result<Self, PlotError> {
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("svg") => Ok(OutputFormat::Svg),
            Some("png") => Ok(OutputFormat::Png),
            _ => Err(PlotError::UnsupportedFormat { path: path.to_path_buf() }),
        }
    }
}

/// Any chart, borrowed.
#[derive(Clone, Copy)]
pub(crate) enum Figure<'a> {
    Line(&'a LineChart),
    Histogram(&'a HistogramChart),
    Contour(&'a ContourChart),
    Heatmap(&'a HeatmapChart),
    Path(&'a PathChart),
    Panels(&'a PanelsChart),
}

impl<'a> Figure<'a> {
    pub(crate) fn of_panel(p: &'a Panel) -> Figure<'a> {
        match p {
            Panel::Line(c) => Figure::Line(c),
            Panel::Histogram(c) => Figure::Histogram(c),
            Panel::Contour(c) => Figure::Contour(c),
            Panel::Heatmap(c) => Figure::Heatmap(c),
            Panel::Path(c) => Figure::Path(c),
        }
    }

    /// The requested size or a default suited to the chart.
    pub fn size(&self) -> (u32, u32) {
        let (requested, default) = match self {
            Figure::Line(c) => (c.size, (900, 560)),
            Figure::Histogram(c) => {
                let d = match c.layout {
                    HistogramLayout::SmallMultiples => {
                        let (rows, cols) = grid_shape(c.histograms.len(), 0);
                        (340 * cols as u32 + 40, 270 * rows as u32 + 110)
                    }
                    HistogramLayout::Ridge => (900, (420 + 40 * c.histograms.len().min(12)) as u32),
                    HistogramLayout::Overlay => (900, 560),
                };
                (c.size, d)
            }
            Figure::Contour(c) => (c.size, if c.filled { (860, 700) } else { (760, 700) }),
            Figure::Heatmap(c) => (c.size, (860, 700)),
            Figure::Path(c) => (c.size, (760, 680)),
            Figure::Panels(c) => {
                let (rows, cols) = grid_shape(c.panels.len(), c.columns);
                let (w, h) = c
                    .panels
                    .iter()
                    .map(|p| Figure::of_panel(p).size())
                    .fold((0, 0), |(w, h), (pw, ph)| (w.max(pw), h.max(ph)));
                let title = if c.title.is_empty() { 0 } else { 50 };
                (c.size, (w * cols as u32, h * rows as u32 + title))
            }
        };
        requested.unwrap_or(default)
    }
}

/// Rows and columns for `n` panels (`columns == 0`: one row for ≤ 3 panels, else a near-square grid).
pub(crate) fn grid_shape(n: usize, columns: usize) -> (usize, usize) {
    let n = n.max(1);
    let cols = if columns > 0 {
        columns.min(n)
    } else if n <= 3 {
        n
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    (n.div_ceil(cols), cols)
}

/// Failure inside a chart: bad data (reported as [`PlotError::InvalidData`]) or a drawing error.
#[derive(Debug)]
pub(crate) enum Fail {
    Data(String),
    Draw(String),
}

pub(crate) type Res<T> = Result<T, Fail>;

/// Maps any plotters error into [`Fail::Draw`].
pub fn de<E: std::fmt::Display>(e: E) -> Fail {
    Fail::Draw(e.to_string())
}

pub(crate) fn data_err(msg: impl Into<String>) -> Fail {
    Fail::Data(msg.into())
}

/// Draws `fig` into `out`, in the format its extension names.
pub(crate) fn render(out: &Path, fig: Figure<'_>) -> Result<(), PlotError> {
    let format = OutputFormat::from_path(out)?;
    let wrap = |f: Fail| match f {
        Fail::Data(reason) => PlotError::InvalidData { path: out.to_path_buf(), reason },
        Fail::Draw(reason) => PlotError::Write { path: out.to_path_buf(), reason },
    };
    validate(fig).map_err(wrap)?;
    // Without a system font SVG still works (text is measured with a metrics-only font and drawn by
    // the viewer); PNG needs real glyphs.
    if let Err(looked) = font::ensure_font()
        && format == OutputFormat::Png
    {
        return Err(PlotError::NoFont { path: out.to_path_buf(), looked });
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(PlotError::Write {
            path: out.to_path_buf(),
            reason: format!("folder {} does not exist", dir.display()),
        });
    }
    let size = fig.size();
    if size.0 < 100 || size.1 < 100 || size.0 > 20_000 || size.1 > 20_000 {
        return Err(wrap(data_err(format!("image size {}x{} is outside 100..20000 pixels", size.0, size.1))));
    }
    match format {
        OutputFormat::Svg => {
            let root = SVGBackend::new(out, size).into_drawing_area();
            draw_figure(&root, fig).map_err(wrap)?;
            root.present().map_err(|e| wrap(de(e)))?;
        }
        OutputFormat::Png => {
            let root = BitMapBackend::new(out, size).into_drawing_area();
            draw_figure(&root, fig).map_err(wrap)?;
            root.present().map_err(|e| wrap(de(e)))?;
        }
    }
    Ok(())
}

/// Checks the data before any file is created.
fn validate(fig: Figure<'_>) -> Res<()> {
    match fig {
        Figure::Line(c) => super::line::validate(c),
        Figure::Histogram(c) => super::histogram::validate(c),
        Figure::Contour(c) => {
            super::grid::validate_grid(&c.grid).and_then(|_| super::path::validate_paths(&c.paths))
        }
        Figure::Heatmap(c) => super::grid::validate_grid(&c.grid),
        Figure::Path(c) => super::path::validate_paths(&c.paths).and_then(|_| {
            if c.paths.iter().all(|p| p.points.is_empty()) {
                Err(data_err("no points to plot"))
            } else {
                Ok(())
            }
        }),
        Figure::Panels(c) => {
            if c.panels.is_empty() {
                return Err(data_err("no panels to plot"));
            }
            for (i, p) in c.panels.iter().enumerate() {
                validate(Figure::of_panel(p)).map_err(|e| match e {
                    Fail::Data(m) => Fail::Data(format!("panel {}: {m}", i + 1)),
                    other => other,
                })?;
            }
            Ok(())
        }
    }
}

pub(crate) fn draw_figure<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: Figure<'_>) -> Res<()> {
    area.fill(&WHITE).map_err(de)?;
    match fig {
        Figure::Line(c) => super::line::draw(area, c),
        Figure::Histogram(c) => super::histogram::draw(area, c),
        Figure::Contour(c) => super::grid::draw_contour(area, c),
        Figure::Heatmap(c) => super::grid::draw_heatmap(area, c),
        Figure::Path(c) => super::path::draw(area, c),
        Figure::Panels(c) => {
            let t = Theme::for_area(area);
            let inner = if c.title.is_empty() {
                area.clone()
            } else {
                area.titled(&c.title, t.title_font().into_font().style(FontStyle::Bold)).map_err(de)?
            };
            let (rows, cols) = grid_shape(c.panels.len(), c.columns);
            let cells = inner.split_evenly((rows, cols));
            for (cell, p) in cells.iter().zip(&c.panels) {
                draw_figure(cell, Figure::of_panel(p))?;
            }
            Ok(())
        }
    }
}

/// Text sizes scaled to the drawing area, so panels and small multiples stay proportionate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Theme {
    pub base: f64,
}

impl Theme {
    pub(crate) fn for_area<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> Theme {
        let (w, h) = area.dim_in_pixel();
        let m = (w.min(h * 3 / 2)) as f64;
        Theme { base: (m / 48.0).clamp(10.0, 17.0) }
    }
    pub(crate) fn title_font(&self) -> (&'static str, f64) {
        (font::FAMILY, self.base * 1.3)
    }
    pub(crate) fn label_font(&self) -> (&'static str, f64) {
        (font::FAMILY, self.base * 1.1)
    }
    pub(crate) fn tick_font(&self) -> (&'static str, f64) {
        (font::FAMILY, self.base)
    }
    pub(crate) fn small_font(&self) -> (&'static str, f64) {
        (font::FAMILY, self.base * 0.85)
    }
    pub(crate) fn px(&self, k: f64) -> u32 {
        (self.base * k).round() as u32
    }
}

/// A linear f64 axis whose ticks are given (bold mesh lines and labels at exactly these values).
#[derive(Debug, Clone)]
pub(crate) struct TickAxis {
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
}

impl TickAxis {
    pub fn new(range: Range<f64>, ticks: Vec<f64>) -> Self {
        TickAxis { lo: range.start, hi: range.end, ticks }
    }
}

impl Ranged for TickAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        if self.hi == self.lo {
            return (limit.0 + limit.1) / 2;
        }
        let f = (*v - self.lo) / (self.hi - self.lo);
        let px = limit.0 as f64 + f * (limit.1 - limit.0) as f64;
        px.round().clamp(-1e7, 1e7) as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for TickAxis {
    fn format(v: &f64) -> String {
        super::scale::format_number(*v)
    }
}

pub(crate) type Axes2d = Cartesian2d<TickAxis, TickAxis>;

/// Axis titles, scales and tick targets for [`build_axes`].
pub(crate) struct AxesSpec<'s> {
    pub title: &'s str,
    pub x_label: &'s str,
    pub y_label: &'s str,
    pub x: Scale,
    pub y: Scale,
    pub x_ticks: usize,
    pub y_ticks: usize,
    /// Light grid lines at the ticks.
    pub grid: bool,
    /// Extra room on the right (for a second axis), in units of the theme's base size.
    pub right_area: f64,
    /// Named y ticks (position in plot coordinates, text) replacing the numeric ones.
    pub y_named: Option<&'s [(f64, String)]>,
}

/// A titled chart with labelled axes and our tick positions and labels, mesh drawn.
pub(crate) fn build_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    spec: &AxesSpec<'_>,
) -> Res<ChartContext<'a, DB, Axes2d>> {
    let t = Theme::for_area(area);
    let x_ticks = spec.x.ticks(spec.x_ticks);
    let named: Vec<(f64, String)> = spec.y_named.map(|n| n.to_vec()).unwrap_or_default();
    let y_ticks =
        if named.is_empty() { spec.y.ticks(spec.y_ticks) } else { named.iter().map(|p| p.0).collect() };
    let y_text = move |v: f64| -> String {
        if named.is_empty() {
            return spec.y.label(v);
        }
        named.iter().find(|p| (p.0 - v).abs() < 1e-9).map(|p| p.1.clone()).unwrap_or_default()
    };
    // Room for the widest y tick label.
    let widest = y_ticks
        .iter()
        .map(|v| {
            area.estimate_text_size(&y_text(*v), &TextStyle::from(t.tick_font().into_font()))
                .map(|s| s.0)
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(t.px(0.8))
        .margin_right(t.px(1.4 + spec.right_area))
        .margin_left(t.px(0.6))
        .margin_bottom(t.px(0.6))
        .x_label_area_size(t.px(3.4))
        .y_label_area_size(widest + t.px(2.8));
    if !spec.title.is_empty() {
        builder.caption(spec.title, t.title_font().into_font().style(FontStyle::Bold));
    }
    let mut chart = builder
        .build_cartesian_2d(TickAxis::new(spec.x.range(), x_ticks), TickAxis::new(spec.y.range(), y_ticks))
        .map_err(de)?;
    let xs = spec.x;
    let xf = move |v: &f64| xs.label(*v);
    let yf = |v: &f64| y_text(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(spec.x_label)
        .y_desc(spec.y_label)
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style(t.tick_font())
        .axis_desc_style(t.label_font())
        .axis_style(BLACK.stroke_width(1))
        .set_all_tick_mark_size(t.px(0.35))
        .bold_line_style(RGBColor(220, 220, 220).stroke_width(1))
        .light_line_style(TRANSPARENT);
    if !spec.grid {
        mesh.disable_mesh();
    }
    mesh.draw().map_err(de)?;
    Ok(chart)
}

/// Pixel position of a data point relative to `area`'s top-left corner (for drawing text and boxes in
/// pixels on `area`; `backend_coord` is absolute, which differs inside panels).
pub(crate) fn px_in<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &ChartContext<'_, DB, Axes2d>,
    p: &(f64, f64),
) -> (i32, i32) {
    let (x, y) = chart.backend_coord(p);
    let (bx, by) = area.get_base_pixel();
    (x - bx, y - by)
}

/// Draws the plotting area's frame (top and right edges too, like matplotlib's default box).
pub(crate) fn draw_frame<'a, DB: DrawingBackend + 'a>(chart: &mut ChartContext<'a, DB, Axes2d>) -> Res<()> {
    let (xr, yr) = (chart.x_range(), chart.y_range());
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(xr.start, yr.end), (xr.end, yr.end), (xr.end, yr.start)],
            BLACK.stroke_width(1),
        )))
        .map_err(de)?;
    Ok(())
}

/// Standard legend styling.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Axes2d>,
    theme: Theme,
    position: SeriesLabelPosition,
) -> Res<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(theme.small_font())
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .margin(theme.px(0.6))
        .legend_area_size(theme.px(2.0))
        .draw()
        .map_err(de)?;
    Ok(())
}
