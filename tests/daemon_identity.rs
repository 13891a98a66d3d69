//! The CLI asks a daemon only when it serves the store asked for: it finds the daemon through
//! `<data_dir>/daemon.json`, checks `/api/v1/identity`, and otherwise says why it cannot answer.

mod support;

use std::path::Path;
use std::time::Duration;
use support::*;

fn cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    cli_query(data_dir, None, args)
}

#[test]
fn two_daemons_two_stores_the_cli_reads_the_right_one() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for t in [&a, &b] {
        std::fs::create_dir(t.path().join("ck")).unwrap();
    }
    writer(&a.path().join("ck"), &["--steps", "1,2"]);
    writer(&b.path().join("ck"), &["--steps", "7"]);
    let da = start(a.path(), &[&a.path().join("ck")], "");
    let db = start(b.path(), &[&b.path().join("ck")], "");
    wait_until(Duration::from_secs(20), "both recorded", || {
        recorded(da.port).len() == 2 && recorded(db.port).len() == 1
    });
    let (data_a, data_b) = (a.path().join("data"), b.path().join("data"));

    // daemon.json and /api/v1/identity name the store.
    let ja: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_a.join("daemon.json")).unwrap()).unwrap();
    assert_eq!(ja["listen"], format!("127.0.0.1:{}", da.port));
    assert_eq!(ja["pid"], da.pid());
    let id_a = std::fs::read_to_string(data_a.join("store_id")).unwrap().trim().to_string();
    assert_eq!(ja["store_id"], id_a.as_str());
    let ident: serde_json::Value = serde_json::from_str(&get(da.port, "/api/v1/identity").unwrap()).unwrap();
    assert_eq!(ident["store_id"], id_a.as_str());
    assert_eq!(ident["data_dir"], data_a.canonicalize().unwrap().to_str().unwrap());

    // Each store's runs come from its own daemon (neither listens on the default address).
    let (ok, out, err) = cli(&data_a, &["checkpoints", "--run", "r", "--format", "json"]);
    assert!(ok, "{err}");
    let steps: Vec<u64> = serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2]);
    let (ok, out, err) = cli(&data_b, &["checkpoints", "--run", "r", "--format", "json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"step\": 7") && !out.contains("\"step\": 1"), "{out}");

    // --endpoint of the other daemon with --data-dir: refused, saying which store it serves.
    let (ok, _, err) =
        cli(&data_a, &["--endpoint", &format!("127.0.0.1:{}", db.port), "checkpoints", "--run", "r"]);
    assert!(!ok && err.contains("serves another store"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A daemon.json pointing at the other daemon (e.g. stale, port reused): refused.
    let jb = std::fs::read_to_string(data_b.join("daemon.json")).unwrap();
    std::fs::write(data_a.join("daemon.json"), &jb).unwrap();
    let (ok, _, err) = cli(&data_a, &["checkpoints", "--run", "r"]);
    assert!(!ok && err.contains("serves another store") && err.contains(&id_a), "{err}");

    // Nothing listening where daemon.json says: said so, with the pid and the file.
    let mut dead: serde_json::Value = serde_json::from_str(&jb).unwrap();
    let nobody = refusing(); // held until the end of the test: no one else listens there meanwhile
    dead["listen"] = nobody.addr.to_string().into();
    std::fs::write(data_a.join("daemon.json"), dead.to_string()).unwrap();
    let (ok, _, err) = cli(&data_a, &["checkpoints", "--run", "r"]);
    assert!(!ok && err.contains("connection refused") && err.contains("daemon.json"), "{err}");

    // No daemon.json at all.
    std::fs::remove_file(data_a.join("daemon.json")).unwrap();
    let (ok, _, err) = cli(&data_a, &["checkpoints", "--run", "r"]);
    assert!(!ok && err.contains("locked") && err.contains("has no"), "{err}");

    // A clean stop removes daemon.json; then the CLI opens the store itself.
    assert_eq!(db.stop(), Some(0));
    assert!(!data_b.join("daemon.json").exists());
    let (ok, out, err) = cli(&data_b, &["checkpoints", "--run", "r", "--format", "json"]);
    assert!(ok && out.contains("\"step\": 7"), "{err}");
    assert_eq!(da.stop(), Some(0));
}
