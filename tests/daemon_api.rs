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
