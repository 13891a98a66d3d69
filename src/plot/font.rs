//! Finds a TrueType font on the system and registers it with plotters (once per process) under the
//! family name [`FAMILY`]; plotters needs one to measure text (layout) and to draw it in PNGs.

use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

/// Family name every chart uses for its text.
pub const FAMILY: &str = "sans-serif";

/// Environment variable naming a .ttf/.otf file to use instead of the system search.
pub const FONT_ENV: &str = "LANDSCAPED_FONT";

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

/// Result of the one-time search: `Ok(path of the regular face)` or `Err(list of places looked at)`.
static REGISTERED: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Registers the font on first call; later calls return the cached outcome.
pub fn ensure_font() -> Result<PathBuf, String> {
    REGISTERED.get_or_init(find_and_register).clone()
}

fn load(path: &str) -> Option<&'static [u8]> {
    let bytes = std::fs::read(path).ok()?;
    Some(Box::leak(bytes.into_boxed_slice()))
}

fn find_and_register() -> Result<PathBuf, String> {
    let mut looked = Vec::new();
    let mut candidates: Vec<(String, Option<String>)> = Vec::new();
    if let Ok(p) = std::env::var(FONT_ENV) {
        candidates.push((p, None));
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
