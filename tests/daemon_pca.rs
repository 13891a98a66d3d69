//! The daemon archives every ingested checkpoint for trajectory PCA (engineer D's `ArchiveSink`), runs
//! the `[run.pca]` job, serves the latest PCA at `GET /api/v1/runs/{run}/trajectory` and publishes the
//! PC1 explained-variance ratio on /metrics. (PCA values themselves are checked against scikit-learn in
//! tests/trajectory_pca.rs; here the wiring: archive files, one coordinate row per step, the gauge equals
//! the served ratio.)

mod support;
use std::time::Duration;
use support::*;

#[test]
fn daemon_archives_checkpoints_and_serves_trajectory_pca() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let config = write_config(dir.path(), &[&ck], "", "[run.pca]\nevery = 5\ncomponents = 2\n");
    let d = restart(config, dir.path());
    let port = d.port;
    let written = writer(&ck, &["--steps", "1-5"]);
    assert_eq!(written.len(), 5);

    wait_until(Duration::from_secs(60), "trajectory PCA served", || {
        get(port, "/api/v1/runs/r/trajectory").is_some_and(|t| t.contains("\"coords\""))
    });

    // One archive file per ingested checkpoint, named by step.
    let arch = dir.path().join("data/trajectory/r");
    let mut files: Vec<String> = std::fs::read_dir(&arch)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bin") && !n.starts_with('.'))
        .collect();
    files.sort();
    let want: Vec<String> = (1..=5u64).map(|s| format!("{s:020}.bin")).collect();
    assert_eq!(files, want, "archive files in {}", arch.display());

    let rec: serde_json::Value =
        serde_json::from_str(&get(port, "/api/v1/runs/r/trajectory").unwrap()).unwrap();
    let steps: Vec<u64> = rec["steps"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5]);
    let coords = rec["coords"].as_array().unwrap();
    assert_eq!(coords.len(), 5, "a coordinate row for every step");
    for row in coords {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 2);
        assert!(row.iter().all(|v| v.as_f64().unwrap().is_finite()));
    }
    // Steps differ (random weights per step), so the points are not all at the origin.
    assert!(coords.iter().any(|r| r[0].as_f64().unwrap().abs() > 1e-6));
    let ratio1 = rec["explained_variance_ratio"][0].as_f64().unwrap();
    assert!(ratio1 > 0.0 && ratio1 <= 1.0, "PC1 ratio {ratio1}");

    let m = d.metrics();
    for name in landscaped::daemon::jobs::JOB_METRIC_NAMES.iter().filter(|n| n.starts_with("landscaped_pca_"))
    {
        assert!(m.contains(&format!("# TYPE {name} gauge")), "{name} missing");
    }
    let gauge = metric(&m, "landscaped_pca_explained_variance_ratio{component=\"1\",run=\"r\"}")
        .expect("PC1 ratio gauge on /metrics");
    assert!(close(gauge, ratio1), "gauge {gauge} vs served {ratio1}");

    // An unknown run has no trajectory: 404.
    assert_eq!(get_status(port, "/api/v1/runs/nope/trajectory").map(|s| s.0), Some(404));
    assert_eq!(d.stop(), Some(0));
}

/// A run's `[run.archive]` section (the options of `ingest`) is obeyed by the daemon: retention max:2
/// keeps the first and the newest checkpoint; each is archived in its own precision (f32 here).
#[test]
fn daemon_obeys_the_runs_archive_retention() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let config =
        write_config(dir.path(), &[&ck], "", "[run.archive]\nretention = \"max:2\"\nbudget_mib = 64\n");
    let d = restart(config, dir.path());
    assert_eq!(writer(&ck, &["--steps", "1-4"]).len(), 4);
    wait_until(Duration::from_secs(60), "4 checkpoints recorded", || recorded(d.port).len() == 4);
    let data = dir.path().join("data");
    let kept = landscaped::trajectory::archive::list_run(&data, "r").unwrap();
    assert_eq!(kept.iter().map(|e| e.step).collect::<Vec<_>>(), vec![1, 4]);
    for e in &kept {
        let a = landscaped::trajectory::archive::ArchiveFile::open(&e.path).unwrap();
        assert_eq!(a.stored_types(), "f32");
    }
    assert_eq!(d.stop(), Some(0));
}
