//! 2D fields on a rectilinear grid: contour plots (isolines and filled bands from the `contour` crate's
//! marching squares, labelled, with paths on top) and heat maps, both with a viridis colour bar.
//!
//! The `contour` crate puts value `(ix, iy)` at pixel centre `(ix + 0.5, iy + 0.5)` of a unit-step grid
//! and treats everything outside the grid as below every threshold. We run it in index space and map
//! fractional indices to data coordinates piecewise-linearly, so non-uniform and non-square grids work.
//! Not-computed points (`NaN`) become a value far below the data: no band covers them, and isoline
//! pieces that only run along the edge of the grid or of a NaN hole are dropped.

use contour::ContourBuilder;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::colormap::viridis;
use super::path::{draw_paths_on, overlaps};
use super::render::{AxesSpec, Res, Theme, build_axes, data_err, de, draw_frame, draw_legend, px_in};
use super::scale::{Scale, format_number, nice_ticks};
use super::{ContourChart, Grid, HeatmapChart, Levels};

pub(crate) fn validate_grid(g: &Grid) -> Res<()> {
    for (name, v) in [("xs", &g.xs), ("ys", &g.ys)] {
        if v.len() < 2 {
            return Err(data_err(format!("grid: {name} needs at least 2 values, got {}", v.len())));
        }
        if v.iter().any(|a| !a.is_finite()) || v.windows(2).any(|w| w[1] <= w[0]) {
            return Err(data_err(format!("grid: {name} must be finite and strictly increasing")));
        }
    }
    if g.z.len() != g.ys.len() {
        return Err(data_err(format!(
            "grid: z has {} rows but ys has {} values (z is indexed z[iy][ix])",
            g.z.len(),
            g.ys.len()
        )));
    }
    if let Some((iy, row)) = g.z.iter().enumerate().find(|(_, r)| r.len() != g.xs.len()) {
        return Err(data_err(format!(
            "grid: row z[{iy}] has {} values but xs has {} (z is indexed z[iy][ix])",
            row.len(),
            g.xs.len()
        )));
    }
    if g.z.iter().flatten().any(|v| v.is_infinite()) {
        return Err(data_err("grid: z holds an infinite value (use NaN for points not computed)"));
    }
    if !g.z.iter().flatten().any(|v| v.is_finite()) {
        return Err(data_err("grid: every z value is NaN (nothing computed)"));
    }
    Ok(())
}

fn finite_range(g: &Grid, positive_only: bool) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for &v in g.z.iter().flatten() {
        if v.is_finite() && (!positive_only || v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    (lo <= hi).then_some((lo, hi))
}

/// Round to 2 significant digits (for readable log-spaced levels).
fn round_sig2(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let mag = 10f64.powf(v.abs().log10().floor() - 1.0);
    (v / mag).round() * mag
}

/// The contour levels strictly inside `(zmin, zmax)` for a [`Levels`] choice, increasing.
pub fn level_values(levels: &Levels, zmin: f64, zmax: f64) -> Vec<f64> {
    let mut out: Vec<f64> = match levels {
        Levels::Linear(n) => nice_ticks(zmin, zmax, (*n).max(1)),
        Levels::Log(n) => {
            let lo = zmin.max(zmax * 1e-12).max(f64::MIN_POSITIVE);
            if zmax <= 0.0 {
                Vec::new()
            } else {
                let (a, b) = (lo.log10(), zmax.log10());
                let n = (*n).max(1);
                (1..=n).map(|k| round_sig2(10f64.powf(a + (b - a) * k as f64 / (n + 1) as f64))).collect()
            }
        }
        Levels::Values(v) => v.iter().copied().filter(|v| v.is_finite()).collect(),
    };
    out.retain(|v| *v > zmin && *v < zmax);
    out.sort_by(f64::total_cmp);
    out.dedup();
    out
}

/// A grid prepared for the `contour` crate: row-major values with NaN replaced by a low sentinel.
struct Field<'g> {
    g: &'g Grid,
    nx: usize,
    ny: usize,
    values: Vec<f64>,
}

impl<'g> Field<'g> {
    fn new(g: &'g Grid, zmin: f64, zmax: f64) -> Field<'g> {
        let sentinel = zmin - 1e6 * (zmax - zmin).abs().max(1.0);
        let values = g.z.iter().flatten().map(|v| if v.is_finite() { *v } else { sentinel }).collect();
        Field { g, nx: g.xs.len(), ny: g.ys.len(), values }
    }

    fn builder(&self) -> ContourBuilder {
        ContourBuilder::new(self.nx, self.ny, true)
    }

    /// Contour-crate coordinate → fractional grid index (value `i` sits at `i + 0.5`).
    fn index(c: f64) -> f64 {
        c - 0.5
    }

    /// Fractional index → data coordinate, piecewise linear over `axis` (clamped to the grid).
    fn coord(axis: &[f64], fi: f64) -> f64 {
        let n = axis.len();
        let fi = fi.clamp(0.0, (n - 1) as f64);
        let i = (fi.floor() as usize).min(n - 2);
        let f = fi - i as f64;
        axis[i] + f * (axis[i + 1] - axis[i])
    }

    fn to_data(&self, cx: f64, cy: f64) -> (f64, f64) {
        (Self::coord(&self.g.xs, Self::index(cx)), Self::coord(&self.g.ys, Self::index(cy)))
    }

    /// Where a contour-crate point lies: `(outer, nan_edge)`. `outer`: half a cell outside the grid, on
    /// the detour that closes rings (the real line already ends on the border row or column).
    /// `nan_edge`: on a grid edge that ends at a NaN point, so its position comes from the sentinel.
    fn classify(&self, cx: f64, cy: f64) -> (bool, bool) {
        let (fx, fy) = (Self::index(cx), Self::index(cy));
        let eps = 1e-9;
        let (mx, my) = ((self.nx - 1) as f64, (self.ny - 1) as f64);
        let outer = fx < -eps || fy < -eps || fx > mx + eps || fy > my + eps;
        let (fx, fy) = (fx.clamp(0.0, mx), fy.clamp(0.0, my));
        let tol = 1e-4;
        let on_int = |f: f64| (f - f.round()).abs() < tol;
        let nan = |ix: usize, iy: usize| !self.g.z[iy][ix].is_finite();
        let (x0, x1) = (fx.floor() as usize, (fx.ceil() as usize).min(self.nx - 1));
        let (y0, y1) = (fy.floor() as usize, (fy.ceil() as usize).min(self.ny - 1));
        let nan_edge = match (on_int(fx), on_int(fy)) {
            // On a horizontal edge (between two points of one row).
            (false, true) => {
                let iy = fy.round() as usize;
                nan(x0, iy) || nan(x1, iy)
            }
            // On a vertical edge.
            (true, false) => {
                let ix = fx.round() as usize;
                nan(ix, y0) || nan(ix, y1)
            }
            // On (or squashed onto) a grid point: the edge it came from ends at a NaN neighbour.
            (true, true) => {
                let (ix, iy) = (fx.round() as usize, fy.round() as usize);
                nan(ix, iy)
                    || (ix > 0 && nan(ix - 1, iy))
                    || (ix + 1 < self.nx && nan(ix + 1, iy))
                    || (iy > 0 && nan(ix, iy - 1))
                    || (iy + 1 < self.ny && nan(ix, iy + 1))
            }
            (false, false) => nan(x0, y0) || nan(x1, y0) || nan(x0, y1) || nan(x1, y1),
        };
        (outer, nan_edge)
    }

    /// Isolines at `threshold` as polylines in data coordinates: segments touching a point outside the
    /// grid or on an edge to a NaN point are dropped (they belong to ring closures, not to the field).
    fn isolines(&self, threshold: f64) -> Res<Vec<Vec<(f64, f64)>>> {
        let lines = self
            .builder()
            .lines(&self.values, &[threshold])
            .map_err(|e| Fail::Draw(format!("contour lines: {e:?}")))?;
        let mut out = Vec::new();
        for line in lines {
            for ls in line.geometry().0.iter() {
                let pts: Vec<(f64, f64, (bool, bool))> =
                    ls.0.iter().map(|c| (c.x, c.y, self.classify(c.x, c.y))).collect();
                let mut cur: Vec<(f64, f64)> = Vec::new();
                for w in pts.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    let drop = a.2.0 || b.2.0 || a.2.1 || b.2.1;
                    if drop {
                        if cur.len() >= 2 {
                            out.push(std::mem::take(&mut cur));
                        }
                        cur.clear();
                        continue;
                    }
                    if cur.is_empty() {
                        cur.push(self.to_data(a.0, a.1));
                    }
                    cur.push(self.to_data(b.0, b.1));
                }
                if cur.len() >= 2 {
                    out.push(cur);
                }
            }
        }
        Ok(out)
    }

    /// Regions where value ≥ threshold, each as one point list: exterior, then every hole joined by a
    /// zero-width slit (cancels under both even-odd and non-zero filling, since holes run the other way).
    fn regions_at_or_above(&self, threshold: f64) -> Res<Vec<Vec<(f64, f64)>>> {
        let contours = self
            .builder()
            .contours(&self.values, &[threshold])
            .map_err(|e| Fail::Draw(format!("filled contours: {e:?}")))?;
        let mut out = Vec::new();
        for c in contours {
            for poly in c.geometry().0.iter() {
                let ext = &poly.exterior().0;
                if ext.len() < 3 {
                    continue;
                }
                let mut pts: Vec<(f64, f64)> = ext.iter().map(|c| self.to_data(c.x, c.y)).collect();
                let anchor = pts[0];
                for hole in poly.interiors() {
                    if hole.0.len() < 3 {
                        continue;
                    }
                    let h: Vec<(f64, f64)> = hole.0.iter().map(|c| self.to_data(c.x, c.y)).collect();
                    let h0 = h[0];
                    pts.push(anchor);
                    pts.extend(h);
                    pts.push(h0);
                    pts.push(anchor);
                }
                out.push(pts);
            }
        }
        Ok(out)
    }
}

use super::render::Fail;

/// Colour of band `k` of `n` (between consecutive thresholds).
fn band_colour(k: usize, n: usize) -> RGBColor {
    viridis(if n <= 1 { 0.5 } else { k as f64 / (n - 1) as f64 })
}

pub(crate) fn draw_contour<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &ContourChart) -> Res<()> {
    let t = Theme::for_area(area);
    let g = &c.grid;
    let (zmin, zmax) = finite_range(g, false).ok_or_else(|| data_err("grid: nothing computed"))?;
    let levels = level_values(&c.levels, zmin, zmax);
    let field = Field::new(g, zmin, zmax);
    let (plot_area, bar_area) = if c.filled {
        let (w, _) = area.dim_in_pixel();
        let (a, b) = area.split_horizontally(w.saturating_sub(t.px(7.5)));
        (a, Some(b))
    } else {
        (area.clone(), None)
    };
    // Axes: the grid, widened if a path leaves it.
    let px = c.paths.iter().flat_map(|p| p.points.iter().map(|q| q.0));
    let py = c.paths.iter().flat_map(|p| p.points.iter().map(|q| q.1));
    let (gx0, gx1) = (g.xs[0], g.xs[g.xs.len() - 1]);
    let (gy0, gy1) = (g.ys[0], g.ys[g.ys.len() - 1]);
    let widen = |lo: f64, hi: f64, vals: Vec<f64>| {
        let (mut a, mut b) = (lo, hi);
        let pad = 0.04 * (hi - lo);
        for v in vals {
            if v < a + pad {
                a = a.min(v - pad);
            }
            if v > b - pad {
                b = b.max(v + pad);
            }
        }
        (a, b)
    };
    let (x0, x1) = widen(gx0, gx1, px.filter(|v| *v < gx0 || *v > gx1).collect());
    let (y0, y1) = widen(gy0, gy1, py.filter(|v| *v < gy0 || *v > gy1).collect());
    let spec = AxesSpec {
        title: &c.title,
        x_label: &c.x_label,
        y_label: &c.y_label,
        x: Scale { log: false, lo: x0, hi: x1 },
        y: Scale { log: false, lo: y0, hi: y1 },
        x_ticks: 7,
        y_ticks: 7,
        grid: false,
        right_area: 0.0,
        y_named: None,
    };
    let mut chart = build_axes(&plot_area, &spec)?;
    // Filled bands: paint "≥ threshold" regions from the lowest up; the first covers every computed point.
    let mut thresholds = vec![zmin];
    thresholds.extend(levels.iter().copied());
    if c.filled {
        let nb = thresholds.len();
        for (k, &th) in thresholds.iter().enumerate() {
            let colour = band_colour(k, nb);
            let regions = field.regions_at_or_above(th)?;
            chart
                .draw_series(regions.into_iter().map(|pts| Polygon::new(pts, colour.filled())))
                .map_err(de)?;
        }
    }
    // Isolines.
    let mut labelled: Vec<(Vec<(f64, f64)>, f64)> = Vec::new();
    let nl = levels.len();
    for (k, &lv) in levels.iter().enumerate() {
        let colour = if c.filled {
            RGBColor(30, 30, 30)
        } else {
            viridis(if nl <= 1 { 0.4 } else { 0.85 * k as f64 / (nl - 1) as f64 })
        };
        let width = if c.filled { 1 } else { 2 };
        let lines = field.isolines(lv)?;
        for l in &lines {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    l.clone(),
                    colour.mix(0.85).stroke_width(width),
                )))
                .map_err(de)?;
        }
        labelled.extend(lines.into_iter().map(|l| (l, lv)));
    }
    let plot_px = chart.plotting_area().get_pixel_range().1;
    if c.label_lines {
        // Keep isoline labels off the path's points and their labels (up and right of each point).
        let avoid: Vec<(i32, i32, i32, i32)> = c
            .paths
            .iter()
            .flat_map(|p| p.points.iter())
            .map(|p| {
                let (x, y) = px_in(&plot_area, &chart, p);
                (x - 8, y - t.px(2.0) as i32, x + t.px(3.5) as i32, y + 8)
            })
            .collect();
        label_isolines(&plot_area, &chart, &labelled, t, &avoid)?;
    }
    if !c.paths.is_empty() {
        draw_paths_on(&plot_area, &mut chart, &c.paths, t, c.filled)?;
    }
    draw_frame(&mut chart)?;
    if c.paths.iter().any(|p| !p.label.is_empty()) {
        draw_legend(&mut chart, t, SeriesLabelPosition::UpperRight)?;
    }
    if let Some(bar) = bar_area {
        let log = matches!(c.levels, Levels::Log(_)) && zmin > 0.0;
        let nb = thresholds.len();
        let mut edges = thresholds.clone();
        edges.push(zmax);
        let bands: Vec<(f64, f64, RGBColor)> =
            (0..nb).map(|k| (edges[k], edges[k + 1], band_colour(k, nb))).collect();
        let ticks: Vec<f64> = if levels.len() <= 12 {
            levels.clone()
        } else {
            levels.iter().step_by(levels.len().div_ceil(10)).copied().collect()
        };
        let spec =
            ColourBar { label: &c.z_label, bands, log, ticks: Some(ticks), range: (zmin, zmax), plot_px };
        draw_colour_bar(&bar, t, spec)?;
    }
    Ok(())
}

/// Writes each level's value on its longer isoline pieces, in a white box, avoiding overlaps.
fn label_isolines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &ChartContext<'_, DB, super::render::Axes2d>,
    lines: &[(Vec<(f64, f64)>, f64)],
    t: Theme,
    avoid: &[(i32, i32, i32, i32)],
) -> Res<()> {
    let font = t.small_font().into_font().color(&BLACK);
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    // Longest pieces first, so the most visible lines get labels.
    // (length in pixels, pixel points, level)
    type Piece = (f64, Vec<(i32, i32)>, f64);
    let mut pieces: Vec<Piece> = lines
        .iter()
        .map(|(l, v)| {
            let px: Vec<(i32, i32)> = l.iter().map(|p| px_in(area, chart, p)).collect();
            let len: f64 = px
                .windows(2)
                .map(|w| (((w[1].0 - w[0].0) as f64).powi(2) + ((w[1].1 - w[0].1) as f64).powi(2)).sqrt())
                .sum();
            (len, px, *v)
        })
        .collect();
    pieces.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (len, px, v) in pieces {
        let text = format_number(v);
        let (tw, th) = area.estimate_text_size(&text, &font).map_err(de)?;
        let (tw, th) = (tw as i32, th as i32);
        if len < 3.0 * tw as f64 {
            continue;
        }
        // Try a few spots along the piece; take the first that collides with nothing placed.
        for frac in [0.5, 0.25, 0.75, 0.1, 0.9] {
            let target = len * frac;
            let mut acc = 0.0;
            let mut at = px[0];
            for w in px.windows(2) {
                let d = (((w[1].0 - w[0].0) as f64).powi(2) + ((w[1].1 - w[0].1) as f64).powi(2)).sqrt();
                if acc + d >= target {
                    let f = if d > 0.0 { (target - acc) / d } else { 0.0 };
                    at = (
                        w[0].0 + ((w[1].0 - w[0].0) as f64 * f) as i32,
                        w[0].1 + ((w[1].1 - w[0].1) as f64 * f) as i32,
                    );
                    break;
                }
                acc += d;
            }
            let bbox = (at.0 - tw / 2 - 2, at.1 - th / 2 - 1, at.0 + tw / 2 + 2, at.1 + th / 2 + 1);
            let margin = (bbox.0 - 6, bbox.1 - 6, bbox.2 + 6, bbox.3 + 6);
            if placed.iter().chain(avoid).any(|b| overlaps(*b, margin)) {
                continue;
            }
            placed.push(bbox);
            area.draw(&Rectangle::new([(bbox.0, bbox.1), (bbox.2, bbox.3)], WHITE.filled())).map_err(de)?;
            area.draw(&Text::new(text.clone(), at, font.pos(Pos::new(HPos::Center, VPos::Center))))
                .map_err(de)?;
            break;
        }
    }
    Ok(())
}

/// Cell edges around grid points: midpoints between neighbours, half a step beyond the ends.
fn cell_edges(axis: &[f64]) -> Vec<f64> {
    let n = axis.len();
    let mut e = Vec::with_capacity(n + 1);
    e.push(axis[0] - (axis[1] - axis[0]) / 2.0);
    for w in axis.windows(2) {
        e.push((w[0] + w[1]) / 2.0);
    }
    e.push(axis[n - 1] + (axis[n - 1] - axis[n - 2]) / 2.0);
    e
}

pub(crate) fn draw_heatmap<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &HeatmapChart) -> Res<()> {
    let t = Theme::for_area(area);
    let g = &c.grid;
    let (lo, hi) = match c.range {
        Some((a, b)) if a.is_finite() && b.is_finite() && b > a && (!c.log_scale || a > 0.0) => (a, b),
        Some(r) => {
            return Err(data_err(format!("heat map: colour range {:?} is not a valid increasing range", r)));
        }
        None => finite_range(g, c.log_scale)
            .ok_or_else(|| data_err("heat map: a log colour scale needs positive values"))?,
    };
    let scale = Scale::fit([lo, hi], c.log_scale, 0.0).ok_or_else(|| data_err("heat map: empty range"))?;
    let (w, _) = area.dim_in_pixel();
    let (plot_area, bar_area) = area.split_horizontally(w.saturating_sub(t.px(7.5)));
    let ex = cell_edges(&g.xs);
    let ey = cell_edges(&g.ys);
    let spec = AxesSpec {
        title: &c.title,
        x_label: &c.x_label,
        y_label: &c.y_label,
        x: Scale { log: false, lo: ex[0], hi: ex[ex.len() - 1] },
        y: Scale { log: false, lo: ey[0], hi: ey[ey.len() - 1] },
        x_ticks: 7,
        y_ticks: 7,
        grid: false,
        right_area: 0.0,
        y_named: None,
    };
    let mut chart = build_axes(&plot_area, &spec)?;
    let colour_of = |v: f64| -> Option<RGBColor> {
        let p = scale.map(v)?;
        Some(viridis((p - scale.lo) / (scale.hi - scale.lo)))
    };
    let mut cells = Vec::new();
    for (iy, row) in g.z.iter().enumerate() {
        for (ix, &v) in row.iter().enumerate() {
            if let Some(col) = colour_of(v) {
                cells.push(Rectangle::new([(ex[ix], ey[iy]), (ex[ix + 1], ey[iy + 1])], col.filled()));
            }
        }
    }
    chart.draw_series(cells).map_err(de)?;
    draw_frame(&mut chart)?;
    let steps = 96;
    let bands: Vec<(f64, f64, RGBColor)> = (0..steps)
        .map(|k| {
            let a = scale.lo + (scale.hi - scale.lo) * k as f64 / steps as f64;
            let b = scale.lo + (scale.hi - scale.lo) * (k + 1) as f64 / steps as f64;
            let inv = |p: f64| if c.log_scale { 10f64.powf(p) } else { p };
            (inv(a), inv(b), viridis((k as f64 + 0.5) / steps as f64))
        })
        .collect();
    let plot_px = chart.plotting_area().get_pixel_range().1;
    let spec =
        ColourBar { label: &c.z_label, bands, log: c.log_scale, ticks: None, range: (lo, hi), plot_px };
    draw_colour_bar(&bar_area, t, spec)
}

/// What a colour bar shows: `bands` (value from, value to, colour), ticks (default: nice ones).
struct ColourBar<'s> {
    label: &'s str,
    bands: Vec<(f64, f64, RGBColor)>,
    log: bool,
    ticks: Option<Vec<f64>>,
    range: (f64, f64),
    /// Absolute pixel rows of the plotting area it stands beside.
    plot_px: std::ops::Range<i32>,
}

/// A vertical colour bar, ticks on the right, its label beside them.
fn draw_colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    t: Theme,
    bar: ColourBar<'_>,
) -> Res<()> {
    let ColourBar { label, bands, log, ticks, range: (lo, hi), plot_px } = bar;
    let scale = Scale::fit([lo, hi], log, 0.0).ok_or_else(|| data_err("colour bar: empty range"))?;
    let ticks: Vec<f64> = match ticks {
        Some(v) => v.iter().filter_map(|x| scale.map(*x)).collect(),
        None => scale.ticks(7),
    };
    // Align the bar with the plotting area next to it (absolute pixel rows).
    let top = area.get_base_pixel().1;
    let bottom = top + area.dim_in_pixel().1 as i32;
    let (m_top, m_bottom) = ((plot_px.start - top).max(0) as u32, (bottom - plot_px.end).max(0) as u32);
    let mut chart = ChartBuilder::on(area)
        .margin_top(m_top)
        .margin_bottom(m_bottom)
        .margin_left(t.px(0.3))
        .margin_right(t.px(0.3))
        .y_label_area_size(0)
        .right_y_label_area_size(t.px(5.2))
        .build_cartesian_2d(
            super::render::TickAxis::new(0.0..1.0, vec![]),
            super::render::TickAxis::new(scale.range(), ticks),
        )
        .map_err(de)?;
    let yf = |v: &f64| scale.label(*v);
    chart
        .configure_mesh()
        .disable_x_axis()
        .disable_x_mesh()
        .disable_y_mesh()
        .y_label_formatter(&yf)
        .label_style(t.small_font())
        .axis_desc_style(t.label_font())
        .y_desc(label)
        .set_all_tick_mark_size(t.px(0.3))
        .draw()
        .map_err(de)?;
    chart
        .draw_series(bands.iter().filter_map(|&(a, b, col)| {
            let (pa, pb) = (scale.map(a)?, scale.map(b)?);
            Some(Rectangle::new([(0.0, pa), (1.0, pb)], col.filled()))
        }))
        .map_err(de)?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, scale.lo), (1.0, scale.hi)],
            BLACK.stroke_width(1),
        )))
        .map_err(de)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane_grid(xs: Vec<f64>, ys: Vec<f64>, along_x: bool) -> Grid {
        let z = ys.iter().map(|&y| xs.iter().map(|&x| if along_x { x } else { y }).collect()).collect();
        Grid { xs, ys, z }
    }

    fn range_of(v: impl Iterator<Item = f64>) -> (f64, f64) {
        v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)))
    }

    #[test]
    fn isolines_of_planes_on_a_non_square_non_uniform_grid() {
        // 9 columns, 4 rows, uneven spacing: z = x gives vertical lines, z = y horizontal ones.
        let xs = vec![-1.0, -0.7, -0.5, -0.1, 0.0, 0.2, 0.55, 0.8, 1.0];
        let ys = vec![-2.0, -0.5, 1.0, 3.0];
        for (along_x, level) in [(true, 0.37), (true, -0.93), (false, 0.1), (false, -1.9)] {
            let g = plane_grid(xs.clone(), ys.clone(), along_x);
            let f = Field::new(&g, -2.0, 3.0);
            let lines = f.isolines(level).unwrap();
            assert_eq!(lines.len(), 1, "one straight isoline for level {level}");
            let pts = &lines[0];
            let (along, across): (Vec<f64>, Vec<f64>) =
                pts.iter().map(|&(x, y)| if along_x { (x, y) } else { (y, x) }).unzip();
            for v in &along {
                assert!((v - level).abs() < 1e-9, "point off the isoline: {v} vs {level}");
            }
            // It spans the whole grid in the other direction.
            let (lo, hi) = range_of(across.into_iter());
            let other = if along_x { &ys } else { &xs };
            assert!((lo - other[0]).abs() < 1e-9 && (hi - other[other.len() - 1]).abs() < 1e-9, "{lo}..{hi}");
        }
    }

    #[test]
    fn isolines_of_a_bowl_are_circles() {
        let n = 81;
        let xs: Vec<f64> = (0..n).map(|i| -1.0 + 2.0 * i as f64 / (n - 1) as f64).collect();
        let ys: Vec<f64> = (0..61).map(|i| -0.75 + 1.5 * i as f64 / 60.0).collect();
        let z = ys.iter().map(|&y| xs.iter().map(|&x| x * x + y * y).collect()).collect();
        let g = Grid { xs, ys, z };
        let f = Field::new(&g, 0.0, 2.0);
        let lines = f.isolines(0.25).unwrap();
        let pts: Vec<&(f64, f64)> = lines.iter().flatten().collect();
        assert!(pts.len() > 50);
        for (x, y) in pts {
            let r = (x * x + y * y).sqrt();
            // Linear interpolation of x²+y² between points 0.025 apart: error well under 1e-3.
            assert!((r - 0.5).abs() < 1e-3, "r = {r}");
        }
        // The region at or above 0.25 has the disc as a hole: the centre is outside, a corner inside.
        let regions = f.regions_at_or_above(0.25).unwrap();
        let inside = |p: (f64, f64)| regions.iter().filter(|poly| point_in_polygon(p, poly)).count() % 2 == 1;
        assert!(!inside((0.0, 0.0)));
        assert!(inside((0.9, 0.7)));
        assert!(inside((-0.9, -0.7)));
    }

    /// Even-odd point-in-polygon test.
    fn point_in_polygon((px, py): (f64, f64), poly: &[(f64, f64)]) -> bool {
        let mut inside = false;
        let n = poly.len();
        for i in 0..n {
            let (x1, y1) = poly[i];
            let (x2, y2) = poly[(i + 1) % n];
            if (y1 > py) != (y2 > py) && px < x1 + (py - y1) * (x2 - x1) / (y2 - y1) {
                inside = !inside;
            }
        }
        inside
    }

    #[test]
    fn isolines_stop_at_nan_holes_and_draw_no_hole_outline() {
        let xs: Vec<f64> = (0..12).map(|i| i as f64).collect();
        let ys: Vec<f64> = (0..7).map(|i| i as f64).collect();
        let mut g = plane_grid(xs, ys, true);
        // Not computed: columns 4..=7 of rows 2..=4.
        for row in g.z.iter_mut().take(5).skip(2) {
            for v in row.iter_mut().take(8).skip(4) {
                *v = f64::NAN;
            }
        }
        let f = Field::new(&g, 0.0, 11.0);
        for level in [5.5, 2.5, 9.25] {
            for l in f.isolines(level).unwrap() {
                for (x, y) in l {
                    assert!((x - level).abs() < 1e-9, "level {level}: stray point ({x}, {y})");
                    // Nothing drawn inside the hole (rows 2..=4 between columns 4 and 7).
                    assert!(
                        !(x > 3.999 && x < 7.001 && y > 1.999 && y < 4.001),
                        "level {level}: ({x}, {y}) in the hole"
                    );
                }
            }
        }
        // Away from the hole the line is complete, top to bottom.
        let lines = f.isolines(2.5).unwrap();
        assert_eq!(lines.len(), 1);
        let (lo, hi) = range_of(lines[0].iter().map(|p| p.1));
        assert_eq!((lo, hi), (0.0, 6.0));
        // Through the hole: two pieces, below and above it.
        let lines = f.isolines(5.5).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
    }

    #[test]
    fn levels_are_inside_the_range_and_sorted() {
        assert_eq!(level_values(&Levels::Linear(5), 0.0, 1.0), vec![0.2, 0.4, 0.6, 0.8]);
        let log = level_values(&Levels::Log(4), 0.01, 100.0);
        assert_eq!(log, vec![0.063, 0.4, 2.5, 16.0]);
        assert_eq!(
            level_values(&Levels::Values(vec![3.0, f64::NAN, 0.5, 9.0, 0.5]), 0.0, 5.0),
            vec![0.5, 3.0]
        );
    }
}
