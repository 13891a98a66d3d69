//! Colour maps (viridis, perceptually uniform) and the categorical palette for series.

use plotters::style::RGBColor;

/// Viridis sampled at 1/16 steps (matplotlib's table); linear interpolation between samples.
const VIRIDIS: [(u8, u8, u8); 17] = [
    (68, 1, 84),
    (72, 26, 108),
    (71, 47, 125),
    (65, 68, 135),
    (57, 86, 140),
    (49, 104, 142),
    (42, 120, 142),
    (35, 137, 142),
    (31, 153, 138),
    (34, 168, 132),
    (53, 183, 121),
    (84, 197, 104),
    (122, 209, 81),
    (165, 219, 54),
    (210, 226, 27),
    (236, 229, 27),
    (253, 231, 37),
];

/// Viridis colour at `t` in [0, 1] (clamped; NaN gives the low end).
pub fn viridis(t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Matplotlib's "tab10" palette, for series and paths.
const TAB10: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// The i-th categorical colour (cycles).
pub(crate) fn category(i: usize) -> RGBColor {
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_clamps() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
        // Luminance grows monotonically (perceptual ordering).
        let lum = |c: RGBColor| 0.2126 * c.0 as f64 + 0.7152 * c.1 as f64 + 0.0722 * c.2 as f64;
        let mut prev = -1.0;
        for k in 0..=50 {
            let l = lum(viridis(k as f64 / 50.0));
            assert!(l > prev, "viridis luminance not increasing at {k}");
            prev = l;
        }
    }
}
