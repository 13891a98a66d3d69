//! The shipped files: systemd units pass `systemd-analyze verify` (with no warnings), the Grafana
//! dashboard only queries metrics the daemon exports and uses a datasource variable, and the example
//! config is accepted by the daemon's own `--check`.

use landscaped::daemon::jobs::JOB_METRIC_NAMES;
use landscaped::daemon::metrics::METRIC_NAMES;
use landscaped::daemon::tensorboard::TENSORBOARD_METRIC_NAMES;
use std::path::Path;
use std::process::Command;

mod support;
use support::*;

#[test]
fn systemd_units_verify_cleanly() {
    let analyze =
        ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].into_iter().find(|p| Path::new(p).exists());
    let Some(analyze) = analyze else {
        panic!("systemd-analyze is missing: run scripts/ci-deps.sh (installs systemd)");
    };
    let tmp = tempfile::tempdir().unwrap();
    for (unit, name) in
        [("landscaped.service", "landscaped.service"), ("landscaped@.service", "landscaped@job42.service")]
    {
        let text = std::fs::read_to_string(root().join("systemd").join(unit)).unwrap();
        for needed in [
            "Type=notify",
            "WatchdogSec=",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "Nice=",
            "CPUWeight=",
            "IOSchedulingClass=idle",
            "OOMScoreAdjust=",
        ] {
            assert!(text.contains(needed), "{unit} lacks {needed}");
        }
        // verify checks that ExecStart's binary exists: point it at the one just built.
        let text = text.replace("/usr/local/bin/landscaped", BIN);
        std::fs::write(tmp.path().join(name), text).unwrap();
        let out = Command::new(analyze).arg("verify").arg(tmp.path().join(name)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("landscaped")).collect();
        assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify {unit}:\n{stderr}");
    }
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let promql = (k == "expr" || k == "definition")
                    || (k == "query" && x.as_str().is_some_and(|q| q.contains("landscaped_")));
                if promql && x.is_string() {
                    out.push(x.as_str().unwrap().to_string());
                } else {
                    exprs(x, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(root().join("examples/grafana/dashboards/landscaped.json")).unwrap();
    assert!(!text.contains("${DS_"), "import placeholders break file provisioning");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vars = v["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|t| t["type"] == "datasource" && t["name"] == "datasource"));
    let mut all = Vec::new();
    exprs(&v, &mut all);
    assert!(all.len() >= 15, "found only {} expressions", all.len());
    let mut used = std::collections::BTreeSet::new();
    for e in &all {
        let mut names = Vec::new();
        let bytes = e.as_bytes();
        let mut i = 0;
        while let Some(at) = e[i..].find("landscaped_") {
            let start = i + at;
            let end = start
                + e[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(e.len() - start);
            if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                names.push(&e[start..end]);
            }
            i = end;
        }
        assert!(!names.is_empty(), "expression names no landscaped metric: {e}");
        for n in names {
            let exported = |b: &str| {
                METRIC_NAMES.contains(&b)
                    || JOB_METRIC_NAMES.contains(&b)
                    || TENSORBOARD_METRIC_NAMES.contains(&b)
            };
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|b| exported(b)))
                .unwrap_or(n);
            assert!(exported(base), "{n} in `{e}` is not a metric the daemon exports");
            used.insert(base.to_string());
        }
    }
    for must in [
        "landscaped_weight_norm",
        "landscaped_update_norm",
        "landscaped_update_cosine",
        "landscaped_distance_from_first",
        "landscaped_processing_duration_seconds",
        "landscaped_errors_total",
        "landscaped_slice_curvature",
        "landscaped_hessian_lambda_max",
        "landscaped_pca_explained_variance_ratio",
    ] {
        assert!(used.contains(must), "dashboard lacks {must}");
    }
    for yaml in ["provisioning/datasources/landscaped.yaml", "provisioning/dashboards/landscaped.yaml"] {
        let y = std::fs::read_to_string(root().join("examples/grafana").join(yaml)).unwrap();
        assert!(y.contains("apiVersion: 1"), "{yaml}");
    }
}

#[test]
fn example_config_passes_check_and_bad_key_is_named() {
    let out = Command::new(BIN)
        .args(["daemon", "--check", "--config"])
        .arg(root().join("config/landscaped.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "data_dir = \"/tmp/x\"\nworkerz = 2\n[[run]]\nname = \"a\"\nwatch = [\"/tmp\"]\n")
        .unwrap();
    let out = Command::new(BIN).args(["daemon", "--config"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("workerz") && err.lines().count() == 1, "{err}");
}
