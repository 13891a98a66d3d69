//! Axis scales (linear or log10), "nice" tick positions and compact tick-label formatting.

/// A linear or log10 axis: data values are mapped to plot coordinates (log10 for a log axis), so every
/// chart can use plain f64 coordinates with its own ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scale {
    pub log: bool,
    /// Range in plot coordinates.
    pub lo: f64,
    pub hi: f64,
}

impl Scale {
    /// A scale covering the given finite data values (padded by `pad` of the span on each side).
    /// Log scales ignore non-positive values. `None` when nothing usable remains.
    pub fn fit(values: impl IntoIterator<Item = f64>, log: bool, pad: f64) -> Option<Scale> {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for v in values {
            let Some(t) = to_plot(v, log) else { continue };
            lo = lo.min(t);
            hi = hi.max(t);
        }
        if !lo.is_finite() || !hi.is_finite() {
            return None;
        }
        if hi - lo < 1e-12 * (1.0 + lo.abs().max(hi.abs())) {
            let half = if log {
                0.5
            } else if lo == 0.0 {
                1.0
            } else {
                0.1 * lo.abs()
            };
            lo -= half;
            hi += half;
        } else {
            let span = hi - lo;
            lo -= pad * span;
            hi += pad * span;
        }
        Some(Scale { log, lo, hi })
    }

    /// Data value → plot coordinate (`None` if not representable: NaN, or ≤ 0 on a log axis).
    pub fn map(&self, v: f64) -> Option<f64> {
        to_plot(v, self.log)
    }

    /// Tick positions (plot coordinates) inside the range, about `target` of them.
    pub(crate) fn ticks(&self, target: usize) -> Vec<f64> {
        if self.log { log_ticks(self.lo, self.hi, target) } else { nice_ticks(self.lo, self.hi, target) }
    }

    /// Tick label for a plot coordinate.
    pub fn label(&self, t: f64) -> String {
        if self.log { format_number(10f64.powf(t)) } else { format_number(t) }
    }

    pub fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn to_plot(v: f64, log: bool) -> Option<f64> {
    if !v.is_finite() {
        return None;
    }
    if log { if v > 0.0 { Some(v.log10()) } else { None } } else { Some(v) }
}

/// The "nice" step (1, 2 or 5 × 10^k) giving about `target` intervals over `span`.
pub(crate) fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    if raw.is_nan() || raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Multiples of a nice step inside `[lo, hi]`.
pub(crate) fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let step = nice_step(hi - lo, target);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // Round to the step's decimals so 3 × 0.2 is 0.6, not 0.6000000000000001.
    let decimals = (-(step.log10().floor()) as i32 + 1).clamp(0, 15);
    let p = 10f64.powi(decimals);
    (first..=last)
        .map(|k| {
            let v = ((k as f64 * step) * p).round() / p;
            if v == 0.0 { 0.0 } else { v }
        })
        .collect()
}

/// Ticks on a log10 axis (plot coordinates): whole decades, thinned or enriched with 2 and 5.
fn log_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let first = lo.ceil() as i64;
    let last = hi.floor() as i64;
    let decades = (last - first + 1).max(0) as usize;
    if decades >= 2 {
        let every = decades.div_ceil(target.max(1)).max(1) as i64;
        return (first..=last).filter(|k| (k - first) % every == 0).map(|k| k as f64).collect();
    }
    // Less than two whole decades inside: use 1, 2, 5 × 10^k, then fall back to linear ticks.
    let mut out = Vec::new();
    for k in (lo.floor() as i64)..=(hi.ceil() as i64) {
        for m in [1.0f64, 2.0, 5.0] {
            let t = (m * 10f64.powi(k as i32)).log10();
            if t >= lo - 1e-12 && t <= hi + 1e-12 {
                out.push(t);
            }
        }
    }
    if out.len() >= 3 {
        return out;
    }
    nice_ticks(10f64.powf(lo), 10f64.powf(hi), target)
        .into_iter()
        .filter(|v| *v > 0.0)
        .map(f64::log10)
        .collect()
}

/// Compact number for ticks and labels: up to 4 significant digits, no trailing zeros, exponent form for
/// very small or very large magnitudes.
pub(crate) fn format_number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "∞".into() } else { "-∞".into() };
    }
    let a = v.abs();
    if a < 1e-12 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{:.2e}", v);
        // "1.50e-4" → "1.5e-4", "1.00e6" → "1e6"
        if let Some((mant, exp)) = s.split_once('e') {
            let mant = trim_zeros(mant);
            return format!("{mant}e{exp}");
        }
        return s;
    }
    let digits = (4 - 1 - a.log10().floor() as i32).clamp(0, 8) as usize;
    trim_zeros(&format!("{:.*}", digits, v)).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_inside() {
        let t = nice_ticks(-1.03, 1.03, 5);
        assert_eq!(t, vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        let t = nice_ticks(0.0, 97.0, 6);
        assert_eq!(t, vec![0.0, 20.0, 40.0, 60.0, 80.0]);
    }

    #[test]
    fn log_ticks_use_decades_or_125() {
        let s = Scale { log: true, lo: -3.2, hi: 1.1 };
        assert_eq!(s.ticks(6), vec![-3.0, -2.0, -1.0, 0.0, 1.0]);
        let s = Scale { log: true, lo: 0.1, hi: 0.9 };
        let labels: Vec<String> = s.ticks(6).iter().map(|t| s.label(*t)).collect();
        assert_eq!(labels, vec!["2", "4", "6"]);
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(format_number(0.30000000000000004), "0.3");
        assert_eq!(format_number(1250.0), "1250");
        assert_eq!(format_number(0.000151), "1.51e-4");
        assert_eq!(format_number(-2.0), "-2");
        assert_eq!(format_number(1e-15), "0");
        assert_eq!(format_number(2_000_000.0), "2e6");
    }
}
