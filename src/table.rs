//! Tables: what queries return, printed in the CLI's output formats — an aligned table for people, JSON
//! or CSV for machines — and carried as JSON between the daemon and the CLI.

use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Rows with named columns, printed in any [`Format`]. Cells are JSON values so JSON output keeps
/// numbers as numbers.
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table { headers: headers.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<serde_json::Value>) {
        self.rows.push(row);
    }

    pub fn print(&self, format: Format) -> std::io::Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        self.write(format, &mut out)
    }

    pub fn write(&self, format: Format, out: &mut dyn Write) -> std::io::Result<()> {
        match format {
            Format::Json => {
                let rows: Vec<serde_json::Map<String, serde_json::Value>> = self
                    .rows
                    .iter()
                    .map(|r| self.headers.iter().cloned().zip(r.iter().cloned()).collect())
                    .collect();
                serde_json::to_writer_pretty(&mut *out, &rows)?;
                writeln!(out)
            }
            Format::Csv => {
                writeln!(out, "{}", self.headers.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(","))?;
                for r in &self.rows {
                    writeln!(out, "{}", r.iter().map(|c| csv_field(&cell(c))).collect::<Vec<_>>().join(","))?;
                }
                Ok(())
            }
            Format::Table => {
                let cells: Vec<Vec<String>> =
                    self.rows.iter().map(|r| r.iter().map(cell).collect()).collect();
                let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
                for r in &cells {
                    for (i, c) in r.iter().enumerate() {
                        if i < widths.len() {
                            widths[i] = widths[i].max(c.chars().count());
                        }
                    }
                }
                let line = |vals: &[String]| {
                    vals.iter()
                        .enumerate()
                        .map(|(i, v)| format!("{:<w$}", v, w = widths.get(i).copied().unwrap_or(0)))
                        .collect::<Vec<_>>()
                        .join("  ")
                        .trim_end()
                        .to_string()
                };
                writeln!(out, "{}", line(&self.headers))?;
                for r in &cells {
                    writeln!(out, "{}", line(r))?;
                }
                Ok(())
            }
        }
    }
}

/// A cell as text: strings bare, floats with 6 significant digits, null as empty.
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => format_float(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A float with 6 significant digits, in scientific notation when very large or small.
pub(crate) fn format_float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return f.to_string();
    }
    let a = f.abs();
    if (1e-4..1e6).contains(&a) {
        format!("{}", (f * 1e6).round() / 1e6).chars().take(12).collect()
    } else {
        format!("{f:.5e}")
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The table as JSON (`{headers, rows}`): how the daemon answers a query.
pub(crate) fn table_to_json(t: &Table) -> serde_json::Value {
    serde_json::json!({ "headers": t.headers, "rows": t.rows })
}

/// The inverse of [`table_to_json`].
pub(crate) fn table_from_json(v: &serde_json::Value) -> anyhow::Result<Table> {
    let headers: Vec<String> =
        serde_json::from_value(v.get("headers").cloned().unwrap_or(serde_json::Value::Null))?;
    let rows: Vec<Vec<serde_json::Value>> =
        serde_json::from_value(v.get("rows").cloned().unwrap_or(serde_json::Value::Null))?;
    let mut t = Table::new(headers);
    for r in rows {
        t.push(r);
    }
    Ok(t)
}
