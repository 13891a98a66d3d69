//! Without a system font (forced with LANDSCAPED_FONT=none, in its own test process): SVG charts are
//! still written, with their text; PNG output is a clear error naming the package to install.

use landscaped::plot::*;

#[test]
fn svg_works_and_png_names_the_font_package_without_a_system_font() {
    // SAFETY: the only test in this binary, so no other thread reads the environment concurrently.
    unsafe { std::env::set_var("LANDSCAPED_FONT", "none") };
    let dir = tempfile::tempdir().unwrap();
    let chart = LineChart {
        title: "No font here".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: vec![Series::new("train", vec![(0.0, 2.0), (1.0, 1.0), (2.0, 0.5)])],
        ..Default::default()
    };
    let svg = dir.path().join("a.svg");
    line_chart(&svg, &chart).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    let texts: Vec<&str> = text
        .split("<text")
        .skip(1)
        .filter_map(|t| {
            t.split_once('>').and_then(|(_, rest)| rest.split_once("</text>")).map(|(s, _)| s.trim())
        })
        .collect();
    for s in ["No font here", "step", "loss", "train"] {
        assert!(texts.contains(&s), "{s} missing from the SVG texts {texts:?}");
    }
    let png = dir.path().join("a.png");
    let err = line_chart(&png, &chart).unwrap_err();
    assert!(matches!(err, PlotError::NoFont { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("a.png") && msg.contains("fonts-dejavu-core") && msg.contains("LANDSCAPED_FONT"),
        "{msg}"
    );
    assert!(!png.exists());
}
