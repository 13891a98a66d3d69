//! CLI output edge cases: a reader that stops early (`| head`), relative checkpoint paths, and the
//! archive listing's summary line.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

mod support;
use support::*;

fn write_checkpoints(dir: &Path, steps: &str) {
    writer(dir, &["--steps", steps]);
}

#[test]
fn slices_show_into_a_closed_pipe_ends_quietly() {
    use landscaped::landscape::slice::SliceValues;
    use landscaped::store::slices::{DirectionSource, SliceRecord};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    {
        let store = landscaped::store::Store::open(&data).unwrap();
        let xs: Vec<f64> = (0..200).map(|i| i as f64 / 100.0 - 1.0).collect();
        let mut values = SliceValues::new(xs.clone(), xs);
        values.loss.iter_mut().for_each(|l| *l = 1.0);
        values.done.iter_mut().for_each(|d| *d = true);
        let rec = SliceRecord {
            id: 1,
            run: Some("r".into()),
            step: Some(1),
            checkpoint: "/c/step-1.pt".into(),
            directions: DirectionSource::Interpolation { to: "/c/step-2.pt".into() },
            cosine: None,
            model: Default::default(),
            centre_loss: 1.0,
            centre_accuracy: None,
            values,
            trajectory: Vec::new(),
            created: 0,
            updated: 0,
            signature: "s".into(),
        };
        landscaped::store::slices::put(&store, &rec).unwrap();
        store.flush().unwrap();
    }
    for format in ["table", "json", "csv"] {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(&data)
            .args(["--format", format, "slices", "show", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one line, then close the pipe like `head -1`.
        let mut stdout = child.stdout.take().unwrap();
        let mut buf = [0u8; 64];
        let _ = stdout.read(&mut buf).unwrap();
        drop(stdout);
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        child.wait().unwrap();
        assert!(!err.contains("Broken pipe") && !err.contains("panicked"), "{format}: {err}");
    }
}

#[test]
fn relative_paths_keep_the_distance_and_update_columns() {
    let tmp = tempfile::tempdir().unwrap();
    write_checkpoints(&tmp.path().join("ck"), "1,2,3");
    let data = tmp.path().join("data");
    let ingest = |path: &str| {
        let out = Command::new(BIN)
            .current_dir(tmp.path())
            .arg("--data-dir")
            .arg(&data)
            .args(["--format", "json", "ingest", path, "--run", "r"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    ingest("ck/step-1.safetensors");
    ingest("./ck/step-2.safetensors");
    ingest("ck/../ck/step-3.safetensors");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["--format", "json", "checkpoints", "--run", "r"])
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows[1..] {
        for col in ["dist_first", "update_norm"] {
            assert!(r[col].as_f64().is_some_and(|v| v > 0.0), "{col} missing: {r}");
        }
    }
}

#[test]
fn archive_summary_is_a_line_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    write_checkpoints(&tmp.path().join("ck"), "1,2");
    let data = tmp.path().join("data");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["ingest"])
        .arg(tmp.path().join("ck"))
        .args(["--run", "r"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // stdout and stderr into one pipe, as `2>&1 | less` does.
    let (r, w) = std::io::pipe().unwrap();
    let w2 = w.try_clone().unwrap();
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["trajectory", "--run", "r", "--archive"])
        .stdout(w)
        .stderr(w2)
        .spawn()
        .unwrap();
    let mut text = String::new();
    let mut r = r;
    child.wait().unwrap();
    r.read_to_string(&mut text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("step") && lines[1].starts_with('1') && lines[2].starts_with('2'), "{text}");
    assert!(lines[3].starts_with("2 checkpoints"), "{text}");
}
