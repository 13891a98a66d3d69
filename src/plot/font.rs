//! Finds a TrueType font on the system and registers it with plotters (once per process) under the
//! family name [`FAMILY`]; plotters needs one to measure text (layout) and to draw it in PNGs.
//!
//! Without a system font, a tiny generated "metrics-only" font is registered instead: every character
//! is 0.55 em wide and has no outline. That is enough to lay out an SVG (the viewer draws the text with
//! its own sans-serif font), but a PNG would have no text, so PNG output then fails with an error
//! naming the package to install.

use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

/// Family name every chart uses for its text.
pub(crate) const FAMILY: &str = "sans-serif";

/// Environment variable naming a .ttf/.otf file to use instead of the system search.
pub(crate) const FONT_ENV: &str = "LANDSCAPED_FONT";

/// Regular and bold faces, tried in this order; the first regular face found wins.
const CANDIDATES: &[(&str, &str)] = &[
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ),
    ("/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
    (
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans-Bold.ttf",
    ),
    (
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    ),
    (
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        "/usr/share/fonts/truetype/freefont/FreeSansBold.ttf",
    ),
    (
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf",
    ),
    ("/usr/share/fonts/noto/NotoSans-Regular.ttf", "/usr/share/fonts/noto/NotoSans-Bold.ttf"),
    ("/Library/Fonts/Arial.ttf", "/Library/Fonts/Arial Bold.ttf"),
    ("/System/Library/Fonts/Supplemental/Arial.ttf", "/System/Library/Fonts/Supplemental/Arial Bold.ttf"),
];

/// Value of [`FONT_ENV`] that skips the system search (metrics-only font: SVG works, PNG fails).
pub(crate) const NO_SYSTEM_FONT: &str = "none";

/// Result of the one-time search: `Ok(path of the regular face)` or `Err(list of places looked at)`;
/// on `Err` the metrics-only font is registered so SVG layout still works.
static REGISTERED: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Registers the font on first call; later calls return the cached outcome. `Err` lists the places
/// looked at (text can then be measured, for SVG, but not drawn).
pub(crate) fn ensure_font() -> Result<PathBuf, String> {
    REGISTERED
        .get_or_init(|| {
            let found = find_and_register();
            if found.is_err() {
                let bytes: &'static [u8] = Box::leak(metrics_only_font().into_boxed_slice());
                let _ = register_font(FAMILY, FontStyle::Normal, bytes);
            }
            found
        })
        .clone()
}

/// A minimal valid TrueType font (head, hhea, hmtx, maxp) with one outline-less glyph 0.55 em wide:
/// characters without a cmap entry map to it, so every character measures 0.55 em.
pub(crate) fn metrics_only_font() -> Vec<u8> {
    fn be16(v: &mut Vec<u8>, x: u16) {
        v.extend_from_slice(&x.to_be_bytes());
    }
    fn be32(v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&x.to_be_bytes());
    }
    let units_per_em = 1000u16;
    let advance = 550u16;
    let mut head = Vec::new();
    be32(&mut head, 0x0001_0000); // version
    be32(&mut head, 0x0001_0000); // font revision
    be32(&mut head, 0); // checksum adjustment
    be32(&mut head, 0x5F0F_3CF5); // magic
    be16(&mut head, 0); // flags
    be16(&mut head, units_per_em);
    head.extend_from_slice(&[0; 16]); // created, modified
    for v in [0i16, -200, advance as i16, 800] {
        be16(&mut head, v as u16); // xMin, yMin, xMax, yMax
    }
    be16(&mut head, 0); // mac style
    be16(&mut head, 8); // lowest rec. PPEM
    be16(&mut head, 2); // font direction hint
    be16(&mut head, 0); // index to loc format (short)
    be16(&mut head, 0); // glyph data format
    let mut hhea = Vec::new();
    be32(&mut hhea, 0x0001_0000);
    for v in [800i16, -200, 0] {
        be16(&mut hhea, v as u16); // ascender, descender, line gap
    }
    be16(&mut hhea, advance); // advance width max
    for v in [0i16, 0, advance as i16, 1, 0, 0, 0, 0, 0, 0, 0] {
        be16(&mut hhea, v as u16); // min lsb/rsb, x max extent, caret rise/run/offset, 4 reserved, format
    }
    be16(&mut hhea, 1); // number of h metrics
    let mut hmtx = Vec::new();
    be16(&mut hmtx, advance);
    be16(&mut hmtx, 0);
    let mut maxp = Vec::new();
    be32(&mut maxp, 0x0000_5000); // version 0.5
    be16(&mut maxp, 1); // one glyph
    // Table records must be sorted by tag.
    let tables: [(&[u8; 4], Vec<u8>); 4] =
        [(b"head", head), (b"hhea", hhea), (b"hmtx", hmtx), (b"maxp", maxp)];
    let mut out = Vec::new();
    be32(&mut out, 0x0001_0000); // TrueType outlines
    be16(&mut out, tables.len() as u16);
    be16(&mut out, 64); // search range
    be16(&mut out, 2); // entry selector
    be16(&mut out, 0); // range shift
    let mut offset = 12 + 16 * tables.len();
    let mut body = Vec::new();
    for (tag, data) in &tables {
        out.extend_from_slice(*tag);
        let sum = data
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_be_bytes(w)
            })
            .fold(0u32, u32::wrapping_add);
        be32(&mut out, sum);
        be32(&mut out, offset as u32);
        be32(&mut out, data.len() as u32);
        let mut padded = data.clone();
        padded.resize(data.len().div_ceil(4) * 4, 0);
        offset += padded.len();
        body.extend_from_slice(&padded);
    }
    out.extend_from_slice(&body);
    out
}

fn load(path: &str) -> Option<&'static [u8]> {
    let bytes = std::fs::read(path).ok()?;
    Some(Box::leak(bytes.into_boxed_slice()))
}

fn find_and_register() -> Result<PathBuf, String> {
    let mut looked = Vec::new();
    let mut candidates: Vec<(String, Option<String>)> = Vec::new();
    match std::env::var(FONT_ENV) {
        Ok(p) if p == NO_SYSTEM_FONT => return Err(format!("nothing ({FONT_ENV}={NO_SYSTEM_FONT})")),
        Ok(p) => candidates.push((p, None)),
        Err(_) => {}
    }
    candidates.extend(CANDIDATES.iter().map(|(r, b)| (r.to_string(), Some(b.to_string()))));
    for (regular, bold) in candidates {
        looked.push(regular.clone());
        let Some(bytes) = load(&regular) else { continue };
        if register_font(FAMILY, FontStyle::Normal, bytes).is_err() {
            continue;
        }
        let bold_bytes = bold.as_deref().and_then(load);
        match bold_bytes {
            Some(b) if register_font(FAMILY, FontStyle::Bold, b).is_ok() => {}
            _ => {
                // Bold falls back to the regular face.
                let _ = register_font(FAMILY, FontStyle::Bold, bytes);
            }
        }
        return Ok(PathBuf::from(regular));
    }
    Err(looked.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::style::{FontDesc, FontFamily};

    #[test]
    fn metrics_only_font_measures_every_character_at_055_em() {
        let bytes: &'static [u8] = Box::leak(metrics_only_font().into_boxed_slice());
        let family = "landscaped-metrics-test";
        assert!(register_font(family, FontStyle::Normal, bytes).is_ok(), "generated font does not parse");
        let font = FontDesc::new(FontFamily::Name(family), 20.0, FontStyle::Normal);
        let (w, _) = font.box_size("abcdefghij").unwrap();
        // 10 characters × 0.55 em × 20 px.
        assert!((w as i64 - 110).abs() <= 1, "width {w}");
    }
}
