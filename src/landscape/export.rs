//! Writing slice values for other tools: JSON, CSV (one row per point), NumPy `.npz` (xs, ys, loss,
//! accuracy, done) and VTK legacy ASCII structured grids (ParaView, as the paper used).
//!
//! A point not computed and a point whose computed loss is NaN or ±∞ (e.g. batch-norm variances driven
//! negative past the end of an interpolation) are told apart everywhere text can: in JSON a missing
//! point is `null` and a computed non-finite value the string `"nan"`, `"inf"` or `"-inf"` ([`cell`]); in
//! CSV the field is empty for a missing point and `nan`/`inf`/`-inf` for a computed one (with the `done`
//! column beside it). Binary formats (npz, VTK) hold NaN for both, with `done` (npz) to tell them apart.

use super::slice::SliceValues;
use std::io::{self, Write};

/// A value of a computed point as JSON: a number, or `"nan"`, `"inf"`, `"-inf"`; `null` for a point
/// not computed.
pub(crate) fn cell(value: f64, done: bool) -> serde_json::Value {
    match nonfinite_name(value) {
        _ if !done => serde_json::Value::Null,
        Some(name) => serde_json::Value::from(name),
        None => serde_json::Value::from(value),
    }
}

/// An accuracy as JSON: NaN also means "not a classification loss", so it is `null` like a missing
/// point; ±∞ cannot be an accuracy.
pub(crate) fn accuracy_cell(value: f64, done: bool) -> serde_json::Value {
    if done && value.is_finite() { serde_json::Value::from(value) } else { serde_json::Value::Null }
}

/// `"nan"`, `"inf"` or `"-inf"` for a non-finite value.
pub(crate) fn nonfinite_name(value: f64) -> Option<&'static str> {
    if value.is_nan() {
        Some("nan")
    } else if value == f64::INFINITY {
        Some("inf")
    } else if value == f64::NEG_INFINITY {
        Some("-inf")
    } else {
        None
    }
}

/// A value as a CSV or table field: empty for a point not computed, `nan`/`inf`/`-inf` for a computed
/// non-finite value.
pub(crate) fn text_cell(value: f64, done: bool) -> String {
    match nonfinite_name(value) {
        _ if !done => String::new(),
        Some(name) => name.to_string(),
        None => value.to_string(),
    }
}

/// The values as JSON arrays (`loss`, `accuracy`: [`cell`], [`accuracy_cell`]), flat and row-major.
pub(crate) fn loss_cells(v: &SliceValues) -> Vec<serde_json::Value> {
    v.loss.iter().zip(&v.done).map(|(&l, &d)| cell(l, d)).collect()
}

pub(crate) fn accuracy_cells(v: &SliceValues) -> Vec<serde_json::Value> {
    v.accuracy.iter().zip(&v.done).map(|(&a, &d)| accuracy_cell(a, d)).collect()
}

/// CSV: `ix,iy,x,y,loss,accuracy,done`.
pub(crate) fn write_csv(v: &SliceValues, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "ix,iy,x,y,loss,accuracy,done")?;
    for i in 0..v.loss.len() {
        let (x, y) = v.coords(i);
        let d = v.done[i];
        let acc = if d && v.accuracy[i].is_finite() { v.accuracy[i].to_string() } else { String::new() };
        writeln!(out, "{},{},{x},{y},{},{acc},{d}", i % v.nx(), i / v.nx(), text_cell(v.loss[i], d))?;
    }
    Ok(())
}

/// VTK legacy ASCII structured grid: points (x, y, loss) so the surface has relief, with `loss` and
/// `accuracy` as point scalars. A 1D slice is an nx × 1 grid.
pub(crate) fn write_vtk(v: &SliceValues, title: &str, out: &mut dyn Write) -> io::Result<()> {
    let (nx, ny) = (v.nx(), v.ny());
    writeln!(out, "# vtk DataFile Version 3.0")?;
    writeln!(out, "{}", title.replace(['\n', '\r'], " ").chars().take(250).collect::<String>())?;
    writeln!(out, "ASCII")?;
    writeln!(out, "DATASET STRUCTURED_GRID")?;
    writeln!(out, "DIMENSIONS {nx} {ny} 1")?;
    writeln!(out, "POINTS {} double", nx * ny)?;
    for i in 0..nx * ny {
        let (x, y) = v.coords(i);
        writeln!(out, "{x} {y} {}", v.loss[i])?;
    }
    writeln!(out, "POINT_DATA {}", nx * ny)?;
    for (name, vals) in [("loss", &v.loss), ("accuracy", &v.accuracy)] {
        writeln!(out, "SCALARS {name} double 1")?;
        writeln!(out, "LOOKUP_TABLE default")?;
        for x in vals.iter() {
            writeln!(out, "{x}")?;
        }
    }
    Ok(())
}

fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_s = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in \n.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// NumPy `.npz`: `xs` (nx), `ys` (ny; empty for 1D), `loss`, `accuracy` (ny × nx, f8), `done` (ny × nx, bool).
pub(crate) fn write_npz<W: Write + io::Seek>(v: &SliceValues, out: W) -> io::Result<()> {
    let mut zip = zip::ZipWriter::new(out);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let grid = [v.ny(), v.nx()];
    let done: Vec<u8> = v.done.iter().map(|&d| d as u8).collect();
    let arrays: [(&str, Vec<u8>); 5] = [
        ("xs.npy", npy("<f8", &[v.nx()], &f64_bytes(&v.xs))),
        ("ys.npy", npy("<f8", &[v.ys.len()], &f64_bytes(&v.ys))),
        ("loss.npy", npy("<f8", &grid, &f64_bytes(&v.loss))),
        ("accuracy.npy", npy("<f8", &grid, &f64_bytes(&v.accuracy))),
        ("done.npy", npy("|b1", &grid, &done)),
    ];
    for (name, bytes) in arrays {
        zip.start_file(name, opts).map_err(io::Error::other)?;
        zip.write_all(&bytes)?;
    }
    zip.finish().map_err(io::Error::other)?;
    Ok(())
}
