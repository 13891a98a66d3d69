//! Line charts: labelled series, legend, optional log axes and a right-hand y axis (drawn by mapping the
//! right-axis values onto the left axis' coordinates and labelling the right edge ourselves).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::colormap::category;
use super::render::{AxesSpec, Res, Theme, build_axes, data_err, de, draw_frame, draw_legend, px_in};
use super::scale::Scale;
use super::{Axis, LineChart};

pub fn validate(c: &LineChart) -> Res<()> {
    if c.series.is_empty() {
        return Err(data_err("no series to plot"));
    }
    let usable = |axis: Axis, log_y: bool| {
        c.series
            .iter()
            .filter(|s| s.axis == axis)
            .flat_map(|s| &s.points)
            .any(|&(x, y)| x.is_finite() && y.is_finite() && (!c.log_x || x > 0.0) && (!log_y || y > 0.0))
    };
    if !usable(Axis::Left, c.log_y) && !usable(Axis::Right, c.log_y2) {
        return Err(data_err("no finite points to plot (log axes also need positive values)"));
    }
    Ok(())
}

/// Picks the legend corner with the fewest data points near it (in plot fractions).
pub(crate) fn best_corner(points: &[(f64, f64)]) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::UpperRight, 1.0, 1.0),
        (SeriesLabelPosition::UpperLeft, 0.0, 1.0),
        (SeriesLabelPosition::LowerRight, 1.0, 0.0),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.0),
    ];
    let mut best = (SeriesLabelPosition::UpperRight, usize::MAX);
    for (pos, cx, cy) in corners {
        let n = points.iter().filter(|(fx, fy)| (fx - cx).abs() < 0.4 && (fy - cy).abs() < 0.35).count();
        if n < best.1 {
            best = (pos, n);
        }
    }
    best.0
}

pub(crate) fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &LineChart) -> Res<()> {
    let t = Theme::for_area(area);
    let has_right = c.series.iter().any(|s| s.axis == Axis::Right);
    let has_left = c.series.iter().any(|s| s.axis == Axis::Left);
    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x = Scale::fit(xs, c.log_x, 0.02).ok_or_else(|| data_err("no usable x values"))?;
    let ys_of = |axis: Axis| {
        c.series.iter().filter(move |s| s.axis == axis).flat_map(|s| s.points.iter().map(|p| p.1))
    };
    let left = Scale::fit(ys_of(Axis::Left), c.log_y, 0.05);
    let right = Scale::fit(ys_of(Axis::Right), c.log_y2, 0.05);
    // The left axis carries the plot coordinates; right-axis values are mapped onto it.
    let y = match (left, right) {
        (Some(l), _) => l,
        (None, Some(r)) => r,
        (None, None) => return Err(data_err("no usable y values")),
    };
    let right = if has_right { right } else { None };
    let to_left = |v: f64| -> Option<f64> {
        let r = right?;
        let t = r.map(v)?;
        Some(y.lo + (t - r.lo) / (r.hi - r.lo) * (y.hi - y.lo))
    };
    let spec = AxesSpec {
        title: &c.title,
        x_label: &c.x_label,
        y_label: if has_left { &c.y_label } else { "" },
        x,
        y,
        x_ticks: 8,
        y_ticks: 7,
        grid: true,
        right_area: if right.is_some() { 4.5 } else { 0.0 },
        y_named: None,
    };
    let mut chart = build_axes(area, &spec)?;
    let mut all_fracs = Vec::new();
    for (i, s) in c.series.iter().enumerate() {
        let color = category(i);
        let style = color.stroke_width(2);
        let map_pt = |&(px, py): &(f64, f64)| -> Option<(f64, f64)> {
            let mx = x.map(px)?;
            let my = match s.axis {
                Axis::Left => y.map(py)?,
                Axis::Right => to_left(py)?,
            };
            Some((mx, my))
        };
        // Split at unusable points so gaps stay gaps.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for p in &s.points {
            match map_pt(p) {
                Some(q) => segments.last_mut().map(|seg| seg.push(q)).unwrap_or(()),
                None => segments.push(Vec::new()),
            }
        }
        segments.retain(|seg| !seg.is_empty());
        for seg in &segments {
            all_fracs.extend(
                seg.iter().map(|(px, py)| ((px - x.lo) / (x.hi - x.lo), (py - y.lo) / (y.hi - y.lo))),
            );
        }
        let label = match (s.axis, right.is_some() && has_left) {
            (Axis::Right, true) if !s.label.is_empty() => format!("{} (right axis)", s.label),
            _ => s.label.clone(),
        };
        for (k, seg) in segments.iter().enumerate() {
            let anno = if s.dashed {
                chart
                    .draw_series(DashedLineSeries::new(seg.iter().copied(), t.px(0.55), t.px(0.35), style))
                    .map_err(de)?
            } else {
                chart.draw_series(LineSeries::new(seg.iter().copied(), style)).map_err(de)?
            };
            if k == 0 && !label.is_empty() {
                let dashed = s.dashed;
                let len = t.px(1.6) as i32;
                anno.label(label.clone()).legend(move |(lx, ly)| {
                    let pts = if dashed {
                        vec![(lx, ly), (lx + len / 3, ly)]
                    } else {
                        vec![(lx, ly), (lx + len, ly)]
                    };
                    PathElement::new(pts, color.stroke_width(2))
                });
            }
            if s.markers || seg.len() == 1 {
                let r = t.px(0.25).max(2);
                chart.draw_series(seg.iter().map(|&p| Circle::new(p, r, color.filled()))).map_err(de)?;
            }
        }
    }
    draw_frame(&mut chart)?;
    if let Some(r) = right {
        draw_right_axis(area, &chart, t, r, c.y2_label.as_deref().unwrap_or(""))?;
    }
    if c.series.iter().any(|s| !s.label.is_empty()) {
        draw_legend(&mut chart, t, best_corner(&all_fracs))?;
    }
    Ok(())
}

/// Ticks, tick labels and the rotated title of the right-hand axis, in pixels on the root area.
fn draw_right_axis<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &ChartContext<'_, DB, super::render::Axes2d>,
    t: Theme,
    r: Scale,
    label: &str,
) -> Res<()> {
    let (xr, yr) = (chart.x_range(), chart.y_range());
    let tick_len = t.px(0.35) as i32;
    let font = t.tick_font().into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    let mut max_w = 0;
    for v in r.ticks(7) {
        let yl = yr.start + (v - r.lo) / (r.hi - r.lo) * (yr.end - yr.start);
        let (px, py) = px_in(area, chart, &(xr.end, yl));
        area.draw(&PathElement::new(vec![(px, py), (px + tick_len, py)], BLACK.stroke_width(1)))
            .map_err(de)?;
        let text = r.label(v);
        max_w = max_w.max(area.estimate_text_size(&text, &font).map(|s| s.0 as i32).unwrap_or(0));
        area.draw(&Text::new(text, (px + tick_len + 5, py), font.clone())).map_err(de)?;
    }
    if !label.is_empty() {
        let (px, top) = px_in(area, chart, &(xr.end, yr.end));
        let (_, bottom) = px_in(area, chart, &(xr.end, yr.start));
        let style = t
            .label_font()
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        let x = px + tick_len + 5 + max_w + t.px(1.6) as i32;
        area.draw(&Text::new(label.to_string(), (x, (top + bottom) / 2), style)).map_err(de)?;
    }
    Ok(())
}
