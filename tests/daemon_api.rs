//! The CLI's query commands while the daemon holds the store: they ask its API (automatically, on
//! the lock, found through daemon.json or $LANDSCAPED_CONFIG, or with --endpoint) and print exactly what
//! they print from the store directly once the daemon is stopped.

mod support;
use std::time::Duration;
use support::*;

#[test]
fn queries_go_through_the_daemon_and_match_the_local_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "");
    writer(&ck, &["--steps", "1,2,3"]);
    wait_until(Duration::from_secs(30), "3 checkpoints", || recorded(d.port).len() == 3);
    let data = tmp.path().join("data");
    let endpoint = format!("http://127.0.0.1:{}", d.port);
    let queries: Vec<Vec<&str>> = vec![
        vec!["--format", "json", "runs"],
        vec!["--format", "json", "checkpoints", "--run", "r"],
        vec!["--format", "csv", "norms", "--run", "r"],
        vec!["--format", "csv", "norms", "--run", "r", "--tensor", "fc*.weight"],
        vec!["--format", "json", "hist", "--run", "r", "--tensor", "fc1.weight"],
    ];
    let mut remote = Vec::new();
    for q in &queries {
        // The store is locked; the endpoint comes from the daemon's config.
        let (ok, out, err) = cli_query(&data, Some(&d.config), q);
        assert!(ok, "{q:?} via the daemon: {err}");
        assert!(out.len() > 10, "{q:?}: {out}");
        // And with an explicit --endpoint.
        let mut with = vec!["--endpoint", endpoint.as_str()];
        with.extend(q.iter());
        let (ok2, out2, err2) = cli_query(&data, None, &with);
        assert!(ok2, "{with:?}: {err2}");
        assert_eq!(out, out2);
        remote.push(out);
    }
    // Without a config the daemon is found through <data_dir>/daemon.json.
    let (ok, out, err) = cli_query(&data, None, &["--format", "json", "runs"]);
    assert!(ok && out == remote[0], "{err}");
    // Without daemon.json either, the endpoint the config names (here an address nothing listens on,
    // rather than the default port 9464, which something on the machine may use) is unreachable: one
    // clear line.
    let nobody = refusing();
    let dead = tmp.path().join("dead.toml");
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&dead, text.replace(LISTEN_ANY, &nobody.addr.to_string())).unwrap();
    let json = std::fs::read(data.join("daemon.json")).unwrap();
    std::fs::remove_file(data.join("daemon.json")).unwrap();
    let (ok, _, err) = cli_query(&data, Some(&dead), &["runs"]);
    assert!(!ok && err.trim().lines().count() == 1 && err.contains("daemon"), "{err}");
    std::fs::write(data.join("daemon.json"), json).unwrap();
    // A bad query argument comes back as the daemon's error.
    let (ok, _, err) = cli_query(&data, Some(&d.config), &["checkpoints", "--run", "nope"]);
    assert!(!ok && err.contains("nope"), "{err}");
    assert_eq!(d.stop(), Some(0));
    for (q, r) in queries.iter().zip(&remote) {
        let (ok, local, err) = cli_query(&data, None, q);
        assert!(ok, "{q:?} locally: {err}");
        assert_eq!(&local, r, "{q:?}: same output from the store and from the daemon");
    }
}

/// Slices, PCA, sharpness and the trajectory archive, through the daemon (on the lock, and with
/// --endpoint) and from the store once it is stopped: the same output, NaN and ±∞ included.
#[test]
fn record_commands_go_through_the_daemon_and_match_the_local_answers() {
    use landscaped::landscape::slice::SliceValues;
    use landscaped::store::slices::{DirectionSource, SliceRecord};
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let data = tmp.path().join("data");
    {
        // Records the commands render, written before the daemon takes the store: a 1D slice with a
        // computed NaN, a computed +∞ and a point not computed; a 2D one; a sharpness record.
        let store = landscaped::store::Store::open(&data).unwrap();
        let mut v = SliceValues::new(vec![-1.0, 0.0, 1.0, 2.0], vec![]);
        v.loss = vec![0.5, 0.25, f64::NAN, f64::INFINITY];
        v.accuracy = vec![0.9, 0.95, 0.1, f64::NAN];
        v.done = vec![true, true, true, true];
        let mut w = SliceValues::new(vec![-1.0, 0.0, 1.0], vec![0.0, 1.0]);
        w.loss = vec![1.0, 2.0, 3.0, 4.0, f64::NAN, f64::NAN];
        w.done = vec![true, true, true, true, true, false];
        for (id, values, directions) in [
            (1, v, DirectionSource::Interpolation { to: "b.pt".into() }),
            (2, w, DirectionSource::Interpolation { to: "c.pt".into() }),
        ] {
            let rec = SliceRecord {
                id,
                run: Some("r".into()),
                step: Some(3),
                checkpoint: "a.pt".into(),
                directions,
                cosine: None,
                model: Default::default(),
                centre_loss: 0.25,
                centre_accuracy: Some(0.95),
                values,
                trajectory: Vec::new(),
                created: 1,
                updated: 2,
                signature: format!("test {id}"),
            };
            landscaped::store::slices::put(&store, &rec).unwrap();
        }
        let sharp = landscaped::store::sharpness::SharpnessRecord {
            run: "r".into(),
            step: 2,
            base_loss: f64::NAN,
            dim: 10,
            ..Default::default()
        };
        landscaped::store::RunStepRecord::put(&store, &sharp).unwrap();
        // A stability record with a ratio (the daemon's [run.stability] job writes these).
        use landscaped::store::stability::{Against, StabilityRecord};
        let stab = StabilityRecord {
            run: "r".into(),
            step: 2,
            optimizer: "sgd".into(),
            lr: Some(0.1),
            rows: vec![Against {
                quantity: "lambda_max".into(),
                value: 12.5,
                threshold: 20.0,
                ratio: 0.625,
                convention: "2/η".into(),
            }],
            hessian: Some(landscaped_maths::curvature::lanczos::Extremes {
                lambda_max: 12.5,
                converged: true,
                hvps: 30,
                ..Default::default()
            }),
            notes: vec!["a note".into()],
            ..Default::default()
        };
        landscaped::store::RunStepRecord::put(&store, &stab).unwrap();
    }
    // The daemon measures each checkpoint's layer spectra too (the records `plot spectra` reads).
    let config = write_config(tmp.path(), &[&ck], "", "[run.spectra]\nevery = 1\n");
    let d = restart(config, tmp.path());
    writer(&ck, &["--steps", "1,2,3"]);
    wait_until(Duration::from_secs(30), "3 checkpoints", || recorded(d.port).len() == 3);
    wait_until(Duration::from_secs(60), "3 spectra", || {
        let (ok, out, _) =
            cli_query(&data, None, &["--format", "json", "spectra", "--run", "r", "--summary"]);
        ok && serde_json::from_str::<Vec<serde_json::Value>>(&out).is_ok_and(|v| v.len() == 3)
    });
    let endpoint = format!("http://127.0.0.1:{}", d.port);
    let plot = tmp.path().join("slice.svg");
    let plot_s = plot.to_str().unwrap();
    let queries: Vec<Vec<&str>> = vec![
        vec!["slices", "list"],
        vec!["--format", "json", "slices", "list"],
        vec!["slices", "show", "1"],
        vec!["--format", "json", "slices", "show", "1"],
        vec!["--format", "csv", "slices", "show", "2"],
        vec!["slices", "export", "2"],
        vec!["sharpness", "--run", "r", "--list"],
        vec!["--format", "json", "sharpness", "--run", "r", "--list"],
        vec!["pca", "--run", "r"],
        vec!["--format", "csv", "trajectory", "--run", "r"],
        vec!["--format", "json", "trajectory", "--run", "r", "--archive"],
        vec!["plot", "slice", "1", "2", "-o", plot_s],
        vec!["stability", "--run", "r", "--list"],
        vec!["--format", "json", "stability", "--run", "r", "--list"],
        vec!["plot", "stability", "--run", "r", "-o", plot_s],
        vec!["plot", "spectra", "--run", "r", "-o", plot_s],
        vec!["plot", "spectra", "--run", "r", "--esd", "fc1.weight", "-o", plot_s],
    ];
    let run = |config: Option<&std::path::Path>, q: &[&str]| -> String {
        let (ok, out, err) = cli_query(&data, config, q);
        assert!(ok, "{q:?}: {err}");
        if q.contains(&"plot") { std::fs::read_to_string(&plot).unwrap() } else { out }
    };
    let mut remote = Vec::new();
    for q in &queries {
        // The store is locked; the daemon is found through daemon.json.
        let out = run(None, q);
        assert!(out.len() > 10, "{q:?}: {out}");
        let mut with = vec!["--endpoint", endpoint.as_str()];
        with.extend(q.iter());
        assert_eq!(run(None, &with), out, "{with:?}");
        remote.push(out);
    }
    // Computed NaN and ∞ are not missing points.
    let show: serde_json::Value = serde_json::from_str(&remote[3]).unwrap();
    assert_eq!(show["loss"], serde_json::json!([[0.5, 0.25, "nan", "inf"]]), "{show}");
    assert_eq!((show["nan_points"].as_u64(), show["inf_points"].as_u64()), (Some(1), Some(1)));
    let list: Vec<serde_json::Value> = serde_json::from_str(&remote[1]).unwrap();
    assert_eq!((list[1]["nan"].as_u64(), list[1]["inf"].as_u64()), (Some(1), Some(0)), "{list:?}");
    assert!(
        remote[4].contains("1,1,0,1,nan,,true\n") && remote[4].ends_with("2,1,1,1,,,false\n"),
        "{}",
        remote[4]
    );
    assert!(remote[11].contains("loss NaN: 1 point(s)"), "the plot's legend counts the NaN point");
    let stab: Vec<serde_json::Value> = serde_json::from_str(&remote[13]).unwrap();
    assert!(stab.iter().any(|r| r["quantity"] == "lambda_max" && r["ratio"] == 0.625), "{stab:?}");
    assert!(remote[14].contains("edge of stability"), "the stability plot");
    assert!(remote[15].contains("fc1.weight") && remote[16].contains("fc1.weight"), "the spectra plots");
    // The HTTP API serves the records by id: a slice (NaN as "nan"), a PCA, a sharpness record.
    let api: serde_json::Value = serde_json::from_str(&get(d.port, "/api/v1/slices/1").unwrap()).unwrap();
    assert_eq!(api["values"]["loss"], serde_json::json!([0.5, 0.25, "nan", "inf"]));
    let pca: serde_json::Value =
        serde_json::from_str(&get(d.port, "/api/v1/runs/r/trajectory/3").unwrap()).unwrap();
    assert_eq!(pca["steps"], serde_json::json!([1, 2, 3]));
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&get(d.port, "/api/v1/runs/r/trajectory?all=true").unwrap()).unwrap();
    assert_eq!(all.len(), 1);
    let s: serde_json::Value =
        serde_json::from_str(&get(d.port, "/api/v1/runs/r/sharpness/2").unwrap()).unwrap();
    assert_eq!(s["dim"], 10);
    assert_eq!(get_status(d.port, "/api/v1/runs/r/sharpness/7").map(|s| s.0), Some(404));
    // And the stability and spectra records: by step, the latest, all.
    let st: serde_json::Value =
        serde_json::from_str(&get(d.port, "/api/v1/runs/r/stability/2").unwrap()).unwrap();
    assert_eq!((st["rows"][0]["ratio"].as_f64(), st["lr"].as_f64()), (Some(0.625), Some(0.1)), "{st}");
    assert_eq!(get_status(d.port, "/api/v1/runs/r/stability/3").map(|s| s.0), Some(404));
    let sp: serde_json::Value =
        serde_json::from_str(&get(d.port, "/api/v1/runs/r/spectra").unwrap()).unwrap();
    assert_eq!(sp["step"], 3, "the latest");
    assert!(sp["layers"].as_array().unwrap().iter().any(|l| l["name"] == "fc1.weight"), "{sp}");
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&get(d.port, "/api/v1/runs/r/spectra?all=true").unwrap()).unwrap();
    assert_eq!(all.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(d.stop(), Some(0));
    for (q, r) in queries.iter().zip(&remote) {
        assert_eq!(&run(None, q), r, "{q:?}: same output from the store and from the daemon");
    }
}

/// `--endpoint` names a daemon to ask: nothing listening there is one clear line, and no store is
/// opened or created in $HOME, for queries and for commands that write alike.
#[test]
fn an_unreachable_endpoint_fails_clearly_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let nobody = refusing();
    let at = nobody.addr.to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["runs"],
        vec!["slices", "list"],
        vec!["slices", "show", "1"],
        vec!["sharpness", "--run", "r", "--list"],
        vec!["pca", "--run", "r"],
        vec!["trajectory", "--run", "r"],
        vec!["trajectory", "--run", "r", "--archive"],
        vec!["ingest", "/nonexistent", "--run", "r"],
        vec!["plot", "trajectory", "--run", "r", "-o", "x.svg"],
        vec!["stability", "--run", "r", "--list"],
        vec!["stability", "--checkpoint", "x.pt", "--run", "r"],
        vec!["sharpness", "--checkpoint", "x.pt", "--run", "r"],
        vec!["plot", "stability", "--run", "r", "-o", "x.svg"],
        vec!["plot", "spectra", "--run", "r", "-o", "x.svg"],
        vec!["spectra", "--run", "r", "--compute"],
    ];
    for c in &commands {
        let out = std::process::Command::new(BIN)
            .args(["--endpoint", &at])
            .args(c)
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME")
            .env_remove("LANDSCAPED_DATA_DIR")
            .env_remove("LANDSCAPED_ENDPOINT")
            .env("LANDSCAPED_CONFIG", "/nonexistent/landscaped.toml")
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let (ok, _, err) = outcome(out);
        assert!(!ok, "{c:?} succeeded against nothing");
        assert_eq!(err.trim().lines().count(), 1, "{c:?}: {err}");
        assert!(err.contains(&at), "{c:?}: {err}");
        assert_eq!(std::fs::read_dir(&home).unwrap().count(), 0, "{c:?} created something in $HOME");
    }
}
