//! Histograms from bin edges and counts: overlaid step outlines, small multiples sharing the x range, or
//! a ridge ("offset") view like TensorBoard's where each histogram sits a little above the next.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::colormap::{category, viridis};
use super::line::best_corner;
use super::render::{AxesSpec, Res, Theme, build_axes, data_err, de, draw_frame, draw_legend, grid_shape};
use super::scale::Scale;
use super::{Histogram, HistogramChart, HistogramLayout};

pub fn validate(c: &HistogramChart) -> Res<()> {
    if c.histograms.is_empty() {
        return Err(data_err("no histograms to plot"));
    }
    for h in &c.histograms {
        let name =
            if h.label.is_empty() { "histogram".to_string() } else { format!("histogram '{}'", h.label) };
        if h.counts.is_empty() || h.edges.len() != h.counts.len() + 1 {
            return Err(data_err(format!(
                "{name}: needs counts.len() + 1 edges, got {} edges for {} counts",
                h.edges.len(),
                h.counts.len()
            )));
        }
        if h.edges.iter().any(|e| !e.is_finite()) || h.edges.windows(2).any(|w| w[1] <= w[0]) {
            return Err(data_err(format!("{name}: bin edges must be finite and strictly increasing")));
        }
        if h.counts.iter().any(|c| !c.is_finite() || *c < 0.0) {
            return Err(data_err(format!("{name}: counts must be finite and non-negative")));
        }
    }
    Ok(())
}

/// Outline of a histogram as a step path from the baseline up and back down (plot coordinates).
fn step_outline(h: &Histogram, y: &Scale, base: f64, scale: f64) -> Vec<(f64, f64)> {
    let level = |c: f64| -> f64 {
        if y.log { y.map(c).map(|v| v.max(base)).unwrap_or(base) } else { base + c * scale }
    };
    let mut pts = Vec::with_capacity(2 * h.counts.len() + 2);
    pts.push((h.edges[0], base));
    for (i, &c) in h.counts.iter().enumerate() {
        let v = level(c);
        pts.push((h.edges[i], v));
        pts.push((h.edges[i + 1], v));
    }
    pts.push((h.edges[h.counts.len()], base));
    pts
}

fn x_scale(c: &HistogramChart) -> Res<Scale> {
    let edges = c.histograms.iter().flat_map(|h| h.edges.iter().copied());
    Scale::fit(edges, false, 0.02).ok_or_else(|| data_err("no usable bin edges"))
}

/// Count axis: from 0 (linear) or from just below the smallest positive count (log).
fn y_scale(c: &HistogramChart, hs: &[&Histogram]) -> Res<Scale> {
    let counts: Vec<f64> = hs.iter().flat_map(|h| h.counts.iter().copied()).collect();
    if c.log_y {
        let s = Scale::fit(counts.iter().copied(), true, 0.05)
            .ok_or_else(|| data_err("log-scaled counts need at least one positive count"))?;
        Ok(Scale { lo: s.lo.min(-0.05).min(s.hi - 1.0), ..s })
    } else {
        let max = counts.iter().copied().fold(0.0f64, f64::max);
        let max = if max > 0.0 { max } else { 1.0 };
        Ok(Scale { log: false, lo: 0.0, hi: max * 1.06 })
    }
}

pub(crate) fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &HistogramChart) -> Res<()> {
    match c.layout {
        HistogramLayout::Overlay => draw_overlay(area, c),
        HistogramLayout::SmallMultiples => draw_small_multiples(area, c),
        HistogramLayout::Ridge => draw_ridge(area, c),
    }
}

fn draw_overlay<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &HistogramChart) -> Res<()> {
    let t = Theme::for_area(area);
    let x = x_scale(c)?;
    let all: Vec<&Histogram> = c.histograms.iter().collect();
    let y = y_scale(c, &all)?;
    let spec = AxesSpec {
        title: &c.title,
        x_label: &c.x_label,
        y_label: &c.y_label,
        x,
        y,
        x_ticks: 8,
        y_ticks: 6,
        grid: true,
        right_area: 0.0,
        y_named: None,
    };
    let mut chart = build_axes(area, &spec)?;
    let single = c.histograms.len() == 1;
    let mut fracs = Vec::new();
    for (i, h) in c.histograms.iter().enumerate() {
        let color = category(i);
        let pts = step_outline(h, &y, y.lo.max(if y.log { y.lo } else { 0.0 }), 1.0);
        fracs.extend(pts.iter().map(|(px, py)| ((px - x.lo) / (x.hi - x.lo), (py - y.lo) / (y.hi - y.lo))));
        let alpha = if single { 0.45 } else { 0.18 };
        chart
            .draw_series(std::iter::once(Polygon::new(pts.clone(), color.mix(alpha).filled())))
            .map_err(de)?;
        let anno =
            chart.draw_series(std::iter::once(PathElement::new(pts, color.stroke_width(2)))).map_err(de)?;
        if !h.label.is_empty() {
            anno.label(h.label.clone()).legend(move |(lx, ly)| {
                Rectangle::new([(lx, ly - 5), (lx + 16, ly + 5)], ShapeStyle::from(color.mix(0.6)).filled())
            });
        }
    }
    draw_frame(&mut chart)?;
    if c.histograms.iter().any(|h| !h.label.is_empty()) {
        draw_legend(&mut chart, t, best_corner(&fracs))?;
    }
    Ok(())
}

fn draw_small_multiples<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &HistogramChart) -> Res<()> {
    let t = Theme::for_area(area);
    let inner = if c.title.is_empty() {
        area.clone()
    } else {
        area.titled(&c.title, t.title_font().into_font().style(FontStyle::Bold)).map_err(de)?
    };
    let x = x_scale(c)?;
    let all: Vec<&Histogram> = c.histograms.iter().collect();
    // A shared count axis keeps panels comparable.
    let y = y_scale(c, &all)?;
    let (rows, cols) = grid_shape(c.histograms.len(), 0);
    let cells = inner.split_evenly((rows, cols));
    for (i, (cell, h)) in cells.iter().zip(&c.histograms).enumerate() {
        let spec = AxesSpec {
            title: &h.label,
            x_label: &c.x_label,
            y_label: &c.y_label,
            x,
            y,
            x_ticks: 5,
            y_ticks: 4,
            grid: true,
            right_area: 0.0,
            y_named: None,
        };
        let mut chart = build_axes(cell, &spec)?;
        let color = if c.histograms.len() > 1 {
            viridis(0.15 + 0.7 * i as f64 / (c.histograms.len() - 1) as f64)
        } else {
            category(0)
        };
        let pts = step_outline(h, &y, if y.log { y.lo } else { 0.0 }, 1.0);
        chart
            .draw_series(std::iter::once(Polygon::new(pts.clone(), color.mix(0.45).filled())))
            .map_err(de)?;
        chart.draw_series(std::iter::once(PathElement::new(pts, color.stroke_width(2)))).map_err(de)?;
        draw_frame(&mut chart)?;
    }
    Ok(())
}

fn draw_ridge<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &HistogramChart) -> Res<()> {
    let n = c.histograms.len();
    let x = x_scale(c)?;
    // Heights are normalised to the tallest bin (log: to the widest log range) and overlap by half.
    let gap = 0.5;
    let max = c.histograms.iter().flat_map(|h| h.counts.iter().copied()).fold(0.0f64, f64::max).max(1e-300);
    let min_pos =
        c.histograms.iter().flat_map(|h| h.counts.iter().copied()).filter(|v| *v > 0.0).fold(max, f64::min);
    let height = |v: f64| -> f64 {
        if c.log_y {
            if v <= 0.0 || max <= min_pos {
                if v > 0.0 { 1.0 } else { 0.0 }
            } else {
                ((v / min_pos).log10() / (max / min_pos).log10() * 0.9 + 0.1).max(0.0)
            }
        } else {
            v / max
        }
    };
    let base = |k: usize| (n - 1 - k) as f64 * gap;
    let top = base(0) + 1.05;
    let y = Scale { log: false, lo: -0.05, hi: top };
    let every = n.div_ceil(12).max(1);
    let named: Vec<(f64, String)> = (0..n)
        .filter(|k| k % every == 0 || *k == n - 1)
        .map(|k| (base(k), c.histograms[k].label.clone()))
        .collect();
    let spec = AxesSpec {
        title: &c.title,
        x_label: &c.x_label,
        y_label: &c.y_label,
        x,
        y,
        x_ticks: 8,
        y_ticks: 6,
        grid: false,
        right_area: 0.0,
        y_named: Some(&named),
    };
    let mut chart = build_axes(area, &spec)?;
    for (k, h) in c.histograms.iter().enumerate() {
        let b = base(k);
        let mut pts = vec![(h.edges[0], b)];
        for (i, &v) in h.counts.iter().enumerate() {
            let top = b + height(v);
            pts.push((h.edges[i], top));
            pts.push((h.edges[i + 1], top));
        }
        pts.push((h.edges[h.counts.len()], b));
        let color = viridis(if n > 1 { 0.1 + 0.75 * k as f64 / (n - 1) as f64 } else { 0.3 });
        // Opaque white first, so nearer histograms hide the ones behind them.
        chart.draw_series(std::iter::once(Polygon::new(pts.clone(), WHITE.filled()))).map_err(de)?;
        chart
            .draw_series(std::iter::once(Polygon::new(pts.clone(), color.mix(0.55).filled())))
            .map_err(de)?;
        chart.draw_series(std::iter::once(PathElement::new(pts, color.stroke_width(1)))).map_err(de)?;
    }
    draw_frame(&mut chart)?;
    Ok(())
}
