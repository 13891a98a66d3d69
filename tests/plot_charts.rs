//! Chart output: every chart type writes well-formed SVG holding its title, axis labels and legend
//! entries, and a PNG of the requested size; NaN grid points stay blank; non-square grids keep
//! `z[iy][ix]`; a bad extension or bad data is a clear error and writes nothing.
//!
//! `cargo test --test plot_charts -- --ignored gallery` writes every sample chart to
//! target/plot-gallery/ for a look.

use std::collections::HashMap;
use std::path::Path;

use landscaped::plot::*;

mod support;
use support::*;

// ---------- sample data ----------

/// Deterministic standard normal samples (LCG + Box–Muller).
fn normals(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n).map(|_| (-2.0 * next().ln()).sqrt() * (2.0 * std::f64::consts::PI * next()).cos()).collect()
}

fn histogram_of(values: &[f64], lo: f64, hi: f64, bins: usize, label: &str) -> Histogram {
    let edges: Vec<f64> = (0..=bins).map(|i| lo + (hi - lo) * i as f64 / bins as f64).collect();
    let mut counts = vec![0.0; bins];
    for v in values {
        let k = ((v - lo) / (hi - lo) * bins as f64).floor();
        if k >= 0.0 && (k as usize) < bins {
            counts[k as usize] += 1.0;
        }
    }
    Histogram { label: label.into(), edges, counts }
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
}

/// A loss-landscape-like surface: a tilted bowl with a ripple, on a non-square grid.
fn landscape(nx: usize, ny: usize) -> Grid {
    let xs = linspace(-1.0, 1.0, nx);
    let ys = linspace(-0.8, 0.8, ny);
    let z = ys
        .iter()
        .map(|&y| {
            xs.iter()
                .map(|&x| {
                    let r2 = (x - 0.15) * (x - 0.15) + 1.8 * (y + 0.1) * (y + 0.1);
                    0.05 + 2.5 * r2 + 0.25 * (3.0 * x).sin() * (4.0 * y).cos().powi(2) + 0.3 * r2 * r2
                })
                .collect()
        })
        .collect();
    Grid { xs, ys, z }
}

fn trajectory() -> LabeledPath {
    let steps = [0, 100, 200, 400, 800, 1600, 3200];
    let points = steps
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let f = i as f64 / 6.0;
            (-0.85 + 1.0 * f.powf(0.7), 0.6 - 0.7 * f + 0.1 * (f * 6.0).sin())
        })
        .collect();
    LabeledPath {
        label: "SGD trajectory".into(),
        points,
        point_labels: steps.iter().map(|s| format!("{s}")).collect(),
        ..Default::default()
    }
}

fn sample_line() -> LineChart {
    let steps: Vec<f64> = (0..=40).map(|i| i as f64 * 50.0).collect();
    let series = ["conv1.weight", "conv2.weight", "fc.weight"]
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let pts = steps
                .iter()
                .map(|&s| (s, (3.0 + k as f64 * 2.5) * (1.0 + 0.6 * (1.0 - (-s / 600.0).exp()))))
                .collect();
            Series::new(*name, pts)
        })
        .collect();
    LineChart {
        title: "Weight norm over training".into(),
        x_label: "step".into(),
        y_label: "‖θ‖₂".into(),
        series,
        ..Default::default()
    }
}

fn sample_slice_1d() -> LineChart {
    let alphas = linspace(-1.0, 1.0, 41);
    let loss: Vec<(f64, f64)> =
        alphas.iter().map(|&a| (a, 0.02 + 3.0 * a * a + 0.5 * a.powi(4) * 10.0)).collect();
    let acc: Vec<(f64, f64)> =
        alphas.iter().map(|&a| (a, 100.0 * (1.0 - 0.9 * (a * a * 4.0).tanh()))).collect();
    LineChart {
        title: "1D slice, filter-normalized direction".into(),
        x_label: "α (step along δ)".into(),
        y_label: "loss".into(),
        y2_label: Some("accuracy (%)".into()),
        log_y: true,
        series: vec![Series::new("train loss", loss), Series::new("train accuracy", acc).on_right().dashed()],
        ..Default::default()
    }
}

fn sample_histograms(layout: HistogramLayout) -> HistogramChart {
    let hs = [0u64, 500, 1000, 2000, 4000]
        .iter()
        .enumerate()
        .map(|(k, step)| {
            let v: Vec<f64> = normals(4000, *step + 7).iter().map(|z| z * (0.05 + 0.03 * k as f64)).collect();
            histogram_of(&v, -0.5, 0.5, 60, &format!("step {step}"))
        })
        .collect();
    HistogramChart {
        title: "fc.weight distribution".into(),
        x_label: "weight value".into(),
        y_label: "count".into(),
        histograms: hs,
        layout,
        ..Default::default()
    }
}

fn sample_contour(filled: bool) -> ContourChart {
    ContourChart {
        title: if filled { "Loss surface (filled)".into() } else { "Loss surface".into() },
        x_label: "1st PC: 45.2 %".into(),
        y_label: "2nd PC: 21.7 %".into(),
        grid: landscape(51, 37),
        levels: Levels::Log(10),
        filled,
        label_lines: true,
        z_label: "loss".into(),
        paths: vec![trajectory()],
        ..Default::default()
    }
}

fn sample_heatmap() -> HeatmapChart {
    let xs = linspace(-1.0, 1.0, 25);
    let ys = linspace(-1.0, 1.0, 19);
    let z = ys
        .iter()
        .map(|&y| {
            xs.iter()
                .map(|&x| (0.02 + 0.6 * (x * x + y * y) * (1.0 + 0.3 * (5.0 * x).sin())).min(1.0))
                .collect()
        })
        .collect();
    HeatmapChart {
        title: "|λmin/λmax| (Fig. 7)".into(),
        x_label: "δ".into(),
        y_label: "η".into(),
        grid: Grid { xs, ys, z },
        z_label: "|λmin/λmax|".into(),
        ..Default::default()
    }
}

fn sample_path() -> PathChart {
    PathChart {
        title: "Optimizer trajectory".into(),
        x_label: "1st PC: 45.2 %".into(),
        y_label: "2nd PC: 21.7 %".into(),
        paths: vec![trajectory()],
        equal_aspect: false,
        ..Default::default()
    }
}

fn sample_panels() -> PanelsChart {
    let mut small = sample_contour(false);
    small.title = "batch size 128".into();
    small.paths.clear();
    let mut large = sample_contour(false);
    large.title = "batch size 8192".into();
    large.paths.clear();
    for row in large.grid.z.iter_mut() {
        for v in row.iter_mut() {
            *v *= 4.0;
        }
    }
    PanelsChart {
        title: "Small vs large batch".into(),
        panels: vec![Panel::Contour(small), Panel::Contour(large)],
        columns: 0,
        size: None,
    }
}

/// Every sample chart under a file stem.
type Writer = Box<dyn Fn(&Path) -> Result<(), PlotError>>;

fn all_samples() -> Vec<(&'static str, Writer)> {
    vec![
        ("line", Box::new(|p: &Path| line_chart(p, &sample_line()))),
        ("slice1d", Box::new(|p: &Path| line_chart(p, &sample_slice_1d()))),
        (
            "hist_overlay",
            Box::new(|p: &Path| histogram_chart(p, &sample_histograms(HistogramLayout::Overlay))),
        ),
        (
            "hist_multiples",
            Box::new(|p: &Path| histogram_chart(p, &sample_histograms(HistogramLayout::SmallMultiples))),
        ),
        ("hist_ridge", Box::new(|p: &Path| histogram_chart(p, &sample_histograms(HistogramLayout::Ridge)))),
        ("contour", Box::new(|p: &Path| contour_chart(p, &sample_contour(false)))),
        ("contour_filled", Box::new(|p: &Path| contour_chart(p, &sample_contour(true)))),
        ("heatmap", Box::new(|p: &Path| heatmap_chart(p, &sample_heatmap()))),
        ("path", Box::new(|p: &Path| path_chart(p, &sample_path()))),
        ("panels", Box::new(|p: &Path| panels_chart(p, &sample_panels()))),
    ]
}

#[test]
#[ignore = "writes sample charts to target/plot-gallery for a visual check"]
fn gallery() {
    let dir = root().join("target/plot-gallery");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, f) in all_samples() {
        for ext in ["png", "svg"] {
            let p = dir.join(format!("{name}.{ext}"));
            f(&p).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

// ---------- checking the output ----------

/// A parsed SVG: every element (name and attributes) and the text of every `<text>` element.
struct Svg {
    elements: Vec<(String, HashMap<String, String>)>,
    texts: Vec<String>,
    /// `x` attribute of each text's element, parallel to `texts`.
    text_x: Vec<f64>,
}

impl Svg {
    fn has_text(&self, s: &str) -> bool {
        self.texts.iter().any(|t| t == s)
    }
    fn x_of(&self, s: &str) -> f64 {
        self.texts.iter().position(|t| t == s).map(|i| self.text_x[i]).unwrap_or(f64::NAN)
    }
    fn count(&self, name: &str) -> usize {
        self.elements.iter().filter(|e| e.0 == name).count()
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A strict little XML reader: panics unless tags nest and close properly under one `<svg>` root.
fn parse_svg(src: &str) -> Svg {
    let mut elements = Vec::new();
    let mut texts = Vec::new();
    let mut text_x = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = src.trim_start();
    let mut roots = 0;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("<?") {
            rest = &r[r.find("?>").expect("unclosed <? ?>") + 2..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->").expect("unclosed comment") + 3..];
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').expect("unclosed end tag");
            let name = r[..end].trim();
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            rest = &r[end + 1..];
        } else if let Some(r) = rest.strip_prefix('<') {
            let name_end = r.find(|c: char| c.is_whitespace() || c == '>' || c == '/').expect("bad tag");
            let name = r[..name_end].to_string();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '-')
            );
            let mut attrs = HashMap::new();
            let mut a = r[name_end..].trim_start();
            let self_closing;
            loop {
                if let Some(x) = a.strip_prefix("/>") {
                    self_closing = true;
                    a = x;
                    break;
                }
                if let Some(x) = a.strip_prefix('>') {
                    self_closing = false;
                    a = x;
                    break;
                }
                let eq = a.find('=').expect("attribute without value");
                let key = a[..eq].trim().to_string();
                let v = a[eq + 1..].trim_start();
                let q = v.chars().next().expect("attribute value");
                assert!(q == '"' || q == '\'', "unquoted attribute {key}");
                let close = v[1..].find(q).expect("unclosed attribute value");
                assert!(attrs.insert(key.clone(), unescape(&v[1..1 + close])).is_none(), "duplicate {key}");
                a = v[close + 2..].trim_start();
            }
            if stack.is_empty() {
                assert_eq!(name, "svg", "root element must be <svg>");
                roots += 1;
            }
            elements.push((name.clone(), attrs));
            if !self_closing {
                stack.push(name);
            }
            rest = a;
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = rest[..end].trim();
            if !text.is_empty() {
                assert!(!text.contains('&') || text.contains(';'), "bad entity in {text}");
                assert!(!stack.is_empty(), "text outside the root: {text}");
                if stack.last().map(String::as_str) == Some("text") {
                    texts.push(unescape(text));
                    let el =
                        elements.iter().rev().find(|e: &&(String, HashMap<String, String>)| e.0 == "text");
                    text_x
                        .push(el.and_then(|e| e.1.get("x")).and_then(|x| x.parse().ok()).unwrap_or(f64::NAN));
                }
            }
            rest = &rest[end..];
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert_eq!(roots, 1);
    Svg { elements, texts, text_x }
}

fn svg_of(f: impl Fn(&Path) -> Result<(), PlotError>) -> Svg {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("chart.svg");
    f(&p).unwrap_or_else(|e| panic!("{e}"));
    parse_svg(&std::fs::read_to_string(&p).unwrap())
}

fn png_of(f: impl Fn(&Path) -> Result<(), PlotError>) -> image::RgbImage {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("chart.PNG");
    f(&p).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}

fn assert_texts(svg: &Svg, expected: &[&str]) {
    for e in expected {
        assert!(svg.has_text(e), "missing text {e:?}; texts: {:?}", svg.texts);
    }
}

fn hex(c: plotters::style::RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

// ---------- tests ----------

#[test]
fn every_chart_type_writes_wellformed_svg_with_title_labels_and_legend() {
    let svg = svg_of(|p| line_chart(p, &sample_line()));
    assert_texts(
        &svg,
        &["Weight norm over training", "step", "‖θ‖₂", "conv1.weight", "conv2.weight", "fc.weight"],
    );
    assert_texts(&svg, &["0", "500", "1000", "1500", "2000"]);

    let svg = svg_of(|p| line_chart(p, &sample_slice_1d()));
    assert_texts(
        &svg,
        &["α (step along δ)", "loss", "accuracy (%)", "train loss", "train accuracy (right axis)"],
    );
    // Log axis ticks are whole decades; the right axis has its own ticks.
    assert_texts(&svg, &["0.1", "1", "10", "20", "100"]);

    for layout in [HistogramLayout::Overlay, HistogramLayout::SmallMultiples, HistogramLayout::Ridge] {
        let svg = svg_of(|p| histogram_chart(p, &sample_histograms(layout)));
        assert_texts(&svg, &["fc.weight distribution", "weight value", "step 0", "step 500", "step 4000"]);
    }

    let svg = svg_of(|p| contour_chart(p, &sample_contour(true)));
    assert_texts(
        &svg,
        &["Loss surface (filled)", "1st PC: 45.2 %", "2nd PC: 21.7 %", "loss", "SGD trajectory"],
    );
    // Path points are labelled by step (first and last always).
    assert_texts(&svg, &["0", "3200"]);

    let svg = svg_of(|p| heatmap_chart(p, &sample_heatmap()));
    assert_texts(&svg, &["|λmin/λmax| (Fig. 7)", "δ", "η", "|λmin/λmax|"]);

    let svg = svg_of(|p| path_chart(p, &sample_path()));
    assert_texts(&svg, &["Optimizer trajectory", "1st PC: 45.2 %", "SGD trajectory", "0", "100", "3200"]);

    let svg = svg_of(|p| panels_chart(p, &sample_panels()));
    assert_texts(&svg, &["Small vs large batch", "batch size 128", "batch size 8192"]);
}

#[test]
fn every_chart_type_writes_a_png_of_the_expected_size() {
    let expected = [
        ("line", (900, 560)),
        ("slice1d", (900, 560)),
        ("hist_overlay", (900, 560)),
        ("hist_multiples", (340 * 3 + 40, 270 * 2 + 110)),
        ("hist_ridge", (900, 420 + 40 * 5)),
        ("contour", (760, 700)),
        ("contour_filled", (860, 700)),
        ("heatmap", (860, 700)),
        ("path", (760, 680)),
        ("panels", (760 * 2, 700 + 50)),
    ];
    let samples = all_samples();
    assert_eq!(samples.len(), expected.len());
    for ((name, f), (ename, (w, h))) in samples.iter().zip(expected) {
        assert_eq!(*name, ename);
        let img = png_of(f);
        assert_eq!(img.dimensions(), (w, h), "{name}");
        // Not blank: the chart drew dark text/axes and some colour.
        assert!(img.pixels().any(|p| p.0.iter().all(|&c| c < 80)), "{name}: nothing dark drawn");
    }
    let mut c = sample_line();
    c.size = Some((640, 400));
    assert_eq!(png_of(|p| line_chart(p, &c)).dimensions(), (640, 400));
}

#[test]
fn contour_chart_draws_labelled_isolines_at_the_requested_levels() {
    let c = sample_contour(false);
    let svg = svg_of(|p| contour_chart(p, &c));
    let (lo, hi) = c
        .grid
        .z
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    let levels = level_values(&c.levels, lo, hi);
    assert!(levels.len() >= 8, "{levels:?}");
    // Every level draws at least one line (plotters writes paths as <polyline>).
    assert!(svg.count("polyline") >= levels.len(), "{} polylines", svg.count("polyline"));
    // Most levels carry a readable label (some short pieces are too small to label).
    let labelled = levels.iter().filter(|v| svg.has_text(&format!("{v}"))).count();
    assert!(
        labelled * 2 >= levels.len(),
        "only {labelled} of {} levels labelled: {:?}",
        levels.len(),
        svg.texts
    );
    let unlabelled = ContourChart { label_lines: false, ..c.clone() };
    let svg2 = svg_of(|p| contour_chart(p, &unlabelled));
    let labelled2 = levels.iter().filter(|v| svg2.has_text(&format!("{v}"))).count();
    assert!(labelled2 < labelled, "labels drawn although label_lines is off");
}

/// Cell rectangles of a heat map: `fill` colour → list of (x, y) corners.
fn cells_by_colour(svg: &Svg) -> HashMap<String, Vec<(f64, f64)>> {
    let mut m: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for (name, a) in &svg.elements {
        if name == "rect" && a.get("stroke").map(String::as_str) == Some("none") {
            let x: f64 = a["x"].parse().unwrap();
            let y: f64 = a["y"].parse().unwrap();
            m.entry(a["fill"].to_ascii_uppercase()).or_default().push((x, y));
        }
    }
    m
}

#[test]
fn heatmap_on_a_non_square_grid_keeps_z_iy_ix() {
    // 5 columns, 3 rows; the value depends on the column only, so each colour forms one column.
    let xs = vec![0.0, 1.0, 2.0, 3.0, 4.0];
    let ys = vec![10.0, 20.0, 30.0];
    let z = ys.iter().map(|_| xs.to_vec()).collect();
    let chart = HeatmapChart {
        grid: Grid { xs, ys, z },
        range: Some((0.0, 4.0)),
        title: "cols".into(),
        ..Default::default()
    };
    let svg = svg_of(|p| heatmap_chart(p, &chart));
    let cells = cells_by_colour(&svg);
    let mut column_x = Vec::new();
    for ix in 0..5 {
        let colour = hex(viridis(ix as f64 / 4.0));
        let pos = cells.get(&colour).unwrap_or_else(|| panic!("no cell coloured {colour} for column {ix}"));
        assert_eq!(pos.len(), 3, "column {ix} should have one cell per row");
        assert!(pos.iter().all(|p| p.0 == pos[0].0), "column {ix} cells not aligned: {pos:?}");
        let mut ys: Vec<f64> = pos.iter().map(|p| p.1).collect();
        ys.dedup();
        assert_eq!(ys.len(), 3);
        column_x.push(pos[0].0);
    }
    assert!(column_x.windows(2).all(|w| w[1] > w[0]), "columns out of order: {column_x:?}");
}

#[test]
fn heatmap_leaves_nan_cells_blank() {
    let full = sample_heatmap();
    let mut holed = full.clone();
    let nan_cells = [(0, 0), (3, 7), (10, 10), (18, 24), (5, 5), (5, 6), (6, 5)];
    for &(iy, ix) in &nan_cells {
        holed.grid.z[iy][ix] = f64::NAN;
    }
    // Fixed colour range so the two charts colour every other cell identically.
    let full = HeatmapChart { range: Some((0.0, 1.0)), ..full };
    let holed = HeatmapChart { range: Some((0.0, 1.0)), ..holed };
    let n = |c: &HeatmapChart| {
        cells_by_colour(&svg_of(|p| heatmap_chart(p, c))).values().map(Vec::len).sum::<usize>()
    };
    assert_eq!(n(&full) - n(&holed), nan_cells.len());
}

/// Saturated (colour-mapped) pixels in the left `frac` of the image.
fn coloured_pixels_left(img: &image::RgbImage, frac: f64) -> usize {
    let w = (img.width() as f64 * frac) as u32;
    img.enumerate_pixels()
        .filter(|(x, _, p)| {
            let (mx, mn) = (p.0.iter().max().unwrap(), p.0.iter().min().unwrap());
            *x < w && mx - mn > 40
        })
        .count()
}

#[test]
fn png_heatmap_and_filled_contour_leave_not_computed_points_blank() {
    // Left half of the grid not computed: the left part of the plot stays white in both chart types.
    let mut c = sample_contour(true);
    c.paths.clear();
    let nx = c.grid.xs.len();
    let mut holed = c.clone();
    for row in holed.grid.z.iter_mut() {
        for v in row.iter_mut().take(nx / 2) {
            *v = f64::NAN;
        }
    }
    assert!(coloured_pixels_left(&png_of(|p| contour_chart(p, &c)), 0.35) > 10_000);
    assert_eq!(coloured_pixels_left(&png_of(|p| contour_chart(p, &holed)), 0.35), 0);

    let h = HeatmapChart { grid: c.grid.clone(), ..sample_heatmap() };
    let hh = HeatmapChart { grid: holed.grid.clone(), ..sample_heatmap() };
    assert!(coloured_pixels_left(&png_of(|p| heatmap_chart(p, &h)), 0.35) > 10_000);
    assert_eq!(coloured_pixels_left(&png_of(|p| heatmap_chart(p, &hh)), 0.35), 0);
}

#[test]
fn unsupported_extension_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["chart.pdf", "chart", "chart.svg.txt"] {
        let p = dir.path().join(name);
        let err = line_chart(&p, &sample_line()).unwrap_err();
        assert!(matches!(err, PlotError::UnsupportedFormat { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains(".svg") && msg.contains(".png"), "{msg}");
        assert!(!p.exists());
    }
    assert_eq!(OutputFormat::from_path(Path::new("a/B.SVG")).unwrap(), OutputFormat::Svg);
    assert_eq!(OutputFormat::from_path(Path::new("b.Png")).unwrap(), OutputFormat::Png);
}

#[test]
fn bad_data_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.svg");
    let msg = |e: PlotError| {
        assert!(matches!(e, PlotError::InvalidData { .. }), "{e}");
        assert!(e.to_string().contains("bad.svg"), "{e}");
        e.to_string()
    };
    // z transposed (3 rows for 4 ys).
    let g = Grid { xs: vec![0.0, 1.0, 2.0], ys: vec![0.0, 1.0, 2.0, 3.0], z: vec![vec![1.0; 4]; 3] };
    let m = msg(heatmap_chart(&p, &HeatmapChart { grid: g.clone(), ..Default::default() }).unwrap_err());
    assert!(m.contains("z[iy][ix]"), "{m}");
    let m = msg(contour_chart(&p, &ContourChart { grid: g, ..Default::default() }).unwrap_err());
    assert!(m.contains("3 rows"), "{m}");
    let g = Grid { xs: vec![0.0, 2.0, 1.0], ys: vec![0.0, 1.0], z: vec![vec![1.0; 3]; 2] };
    assert!(
        msg(heatmap_chart(&p, &HeatmapChart { grid: g, ..Default::default() }).unwrap_err())
            .contains("increasing")
    );
    let g = Grid { xs: vec![0.0, 1.0], ys: vec![0.0, 1.0], z: vec![vec![f64::NAN; 2]; 2] };
    assert!(
        msg(heatmap_chart(&p, &HeatmapChart { grid: g, ..Default::default() }).unwrap_err()).contains("NaN")
    );
    let h = Histogram { label: "w".into(), edges: vec![0.0, 1.0], counts: vec![1.0, 2.0] };
    let m =
        msg(histogram_chart(&p, &HistogramChart { histograms: vec![h], ..Default::default() }).unwrap_err());
    assert!(m.contains("'w'") && m.contains("edges"), "{m}");
    assert!(msg(line_chart(&p, &LineChart::default()).unwrap_err()).contains("no series"));
    let s = Series::new("x", vec![(1.0, -1.0), (2.0, 0.0)]);
    let m =
        msg(line_chart(&p, &LineChart { series: vec![s], log_y: true, ..Default::default() }).unwrap_err());
    assert!(m.contains("positive"), "{m}");
    assert!(!p.exists());
    // A missing folder is named.
    let q = dir.path().join("no/such/dir/c.png");
    let e = line_chart(&q, &sample_line()).unwrap_err();
    assert!(matches!(e, PlotError::Write { .. }) && e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn side_by_side_puts_panels_in_one_row() {
    let panels = sample_panels().panels;
    let img = png_of(|p| side_by_side(p, "two", panels.clone()));
    assert_eq!(img.dimensions(), (760 * 2, 700 + 50));
    let svg = svg_of(|p| side_by_side(p, "two", panels.clone()));
    assert_texts(&svg, &["two", "batch size 128", "batch size 8192"]);
    // Each panel's title sits over its own half, the overall title in the middle.
    let (a, b, t) = (svg.x_of("batch size 128"), svg.x_of("batch size 8192"), svg.x_of("two"));
    assert!(a < 760.0 && b > 760.0 && (t - 760.0).abs() < 5.0, "{a} {b} {t}");
}
