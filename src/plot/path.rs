//! Paths of labelled points joined in order (the optimizer's trajectory on the PC1/PC2 plane), on their
//! own axes or on top of a contour plot. Point labels that would overlap an earlier one are skipped, but
//! the first and last points are always labelled.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::colormap::category;
use super::line::best_corner;
use super::render::{Axes2d, AxesSpec, Res, Theme, build_axes, data_err, de, draw_frame, draw_legend, px_in};
use super::scale::Scale;
use super::{LabeledPath, PathChart};

pub(crate) fn validate_paths(paths: &[LabeledPath]) -> Res<()> {
    for (i, p) in paths.iter().enumerate() {
        if let Some(k) = p.points.iter().position(|(x, y)| !x.is_finite() || !y.is_finite()) {
            let name =
                if p.label.is_empty() { format!("path {}", i + 1) } else { format!("path '{}'", p.label) };
            return Err(data_err(format!("{name}: point {} is not finite", k + 1)));
        }
    }
    Ok(())
}

pub(crate) fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &PathChart) -> Res<()> {
    let t = Theme::for_area(area);
    let pts = || c.paths.iter().flat_map(|p| p.points.iter().copied());
    let mut x = Scale::fit(pts().map(|p| p.0), false, 0.08).ok_or_else(|| data_err("no points to plot"))?;
    let mut y = Scale::fit(pts().map(|p| p.1), false, 0.08).ok_or_else(|| data_err("no points to plot"))?;
    if c.equal_aspect {
        // Approximate plotting-area size: the image less the axis label areas and title.
        let (w, h) = area.dim_in_pixel();
        let pw = (w as f64 - t.base * 8.0).max(50.0);
        let ph = (h as f64 - t.base * 7.0).max(50.0);
        let per_px = ((x.hi - x.lo) / pw).max((y.hi - y.lo) / ph);
        let (cx, cy) = ((x.lo + x.hi) / 2.0, (y.lo + y.hi) / 2.0);
        x = Scale { lo: cx - per_px * pw / 2.0, hi: cx + per_px * pw / 2.0, ..x };
        y = Scale { lo: cy - per_px * ph / 2.0, hi: cy + per_px * ph / 2.0, ..y };
    }
    let spec = AxesSpec {
        title: &c.title,
        x_label: &c.x_label,
        y_label: &c.y_label,
        x,
        y,
        x_ticks: 7,
        y_ticks: 7,
        grid: true,
        right_area: 0.0,
        y_named: None,
    };
    let mut chart = build_axes(area, &spec)?;
    draw_paths_on(area, &mut chart, &c.paths, t, false)?;
    draw_frame(&mut chart)?;
    if c.paths.iter().any(|p| !p.label.is_empty()) {
        let fracs: Vec<(f64, f64)> =
            pts().map(|(px, py)| ((px - x.lo) / (x.hi - x.lo), (py - y.lo) / (y.hi - y.lo))).collect();
        draw_legend(&mut chart, t, best_corner(&fracs))?;
    }
    Ok(())
}

/// Draws the paths (lines, markers, point labels with a white halo box) on an existing chart.
/// `on_colour`: the background is a filled colour map, so use black/white rather than palette colours.
pub(crate) fn draw_paths_on<'a, DB: DrawingBackend + 'a>(
    area: &DrawingArea<DB, Shift>,
    chart: &mut ChartContext<'a, DB, Axes2d>,
    paths: &[LabeledPath],
    t: Theme,
    on_colour: bool,
) -> Res<()> {
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    let r = t.px(0.3).max(3) as i32;
    for (i, p) in paths.iter().enumerate() {
        if p.points.is_empty() {
            continue;
        }
        let color = if on_colour {
            if i == 0 { RGBColor(214, 39, 40) } else { category(i + 1) }
        } else {
            category(i)
        };
        if p.markers_only {
            let mark = if on_colour { RGBColor(255, 0, 255) } else { color };
            let anno = chart
                .draw_series(
                    p.points
                        .iter()
                        .map(|&pt| EmptyElement::at(pt) + Cross::new((0, 0), r + 1, mark.stroke_width(2))),
                )
                .map_err(de)?;
            if !p.label.is_empty() {
                anno.label(p.label.clone())
                    .legend(move |(lx, ly)| Cross::new((lx + 8, ly), 4, mark.stroke_width(2)));
            }
            continue;
        }
        let anno = chart
            .draw_series(LineSeries::new(p.points.iter().copied(), color.stroke_width(2)))
            .map_err(de)?;
        if !p.label.is_empty() {
            anno.label(p.label.clone()).legend(move |(lx, ly)| {
                EmptyElement::at((lx, ly))
                    + PathElement::new(vec![(0, 0), (16, 0)], color.stroke_width(2))
                    + Circle::new((8, 0), 3, color.filled())
            });
        }
        let n = p.points.len();
        chart
            .draw_series(p.points.iter().enumerate().map(|(k, &pt)| {
                let rr = if k == 0 || k + 1 == n { r + 1 } else { r };
                EmptyElement::at(pt)
                    + Circle::new((0, 0), rr, color.filled())
                    + Circle::new((0, 0), rr, WHITE.stroke_width(1))
            }))
            .map_err(de)?;
        // Labels: first and last always, others when they don't collide with one already placed.
        let font = t.small_font().into_font().color(&BLACK);
        let mut order: Vec<usize> = Vec::with_capacity(n);
        order.push(0);
        if n > 1 {
            order.push(n - 1);
        }
        order.extend(1..n.saturating_sub(1));
        for k in order {
            let Some(text) = p.point_labels.get(k).filter(|s| !s.is_empty()) else { continue };
            let (px, py) = px_in(area, &*chart, &p.points[k]);
            let (tw, th) = area.estimate_text_size(text, &font).map_err(de)?;
            let (tw, th) = (tw as i32, th as i32);
            let (bx, by) = (px + r + 3, py - r - 3 - th);
            let bbox = (bx - 2, by - 1, bx + tw + 2, by + th + 1);
            let forced = k == 0 || k + 1 == n;
            if !forced && placed.iter().any(|b| overlaps(*b, bbox)) {
                continue;
            }
            placed.push(bbox);
            area.draw(&Rectangle::new([(bbox.0, bbox.1), (bbox.2, bbox.3)], WHITE.filled())).map_err(de)?;
            area.draw(&Text::new(text.clone(), (bx, by), font.pos(Pos::new(HPos::Left, VPos::Top))))
                .map_err(de)?;
        }
    }
    Ok(())
}

pub(crate) fn overlaps(a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}
