//! A real Prometheus (Debian's `prometheus` package; scripts/ci-deps.sh installs it) started on
//! loopback scrapes the daemon every second; `promtool query instant` must return the values the
//! writer produced (step exactly, norm to 1e-9 relative).

mod support;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn promtool(port: u16, q: &str) -> String {
    let out = Command::new("promtool")
        .args(["query", "instant", &format!("http://127.0.0.1:{port}"), q])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the first sample in promtool's `... => VALUE @[time]` output.
fn value(out: &str) -> Option<f64> {
    out.lines().find_map(|l| l.split(" => ").nth(1)?.split(" @").next()?.trim().parse().ok())
}

#[test]
fn prometheus_scrapes_the_daemon() {
    for tool in ["prometheus", "promtool"] {
        let found =
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().status.success();
        assert!(found, "{tool} is not installed: run scripts/ci-deps.sh (Debian package `prometheus`)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "");
    let written = writer(&ck, &["--steps", "10,20,30"]);
    wait_until(Duration::from_secs(30), "3 checkpoints", || recorded(d.port).len() == 3);

    let cfg = tmp.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: landscaped\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            d.port
        ),
    )
    .unwrap();
    // Prometheus binds a free port itself and logs it: `msg="Listening on" address=127.0.0.1:PORT`.
    let plog = tmp.path().join("prometheus.log");
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", tmp.path().join("tsdb").display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&plog).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut pport = None;
    wait_until(Duration::from_secs(40), "prometheus listening", || {
        let log = std::fs::read_to_string(&plog).unwrap_or_default();
        pport = log.lines().filter(|l| l.contains("msg=\"Listening on\"")).find_map(|l| {
            l.split_once(" address=127.0.0.1:").and_then(|(_, p)| p.split_whitespace().next()?.parse().ok())
        });
        pport.is_some()
    });
    let pport: u16 = pport.unwrap();
    wait_until(Duration::from_secs(40), "prometheus has scraped the daemon", || {
        value(&promtool(pport, "landscaped_last_step{run=\"r\"}")) == Some(30.0)
    });
    let norm = value(&promtool(pport, "landscaped_weight_norm{run=\"r\"}")).unwrap();
    assert!(close(norm, written[2].1), "weight norm via Prometheus {norm} vs numpy {}", written[2].1);
    assert_eq!(value(&promtool(pport, "landscaped_checkpoints_processed_total{run=\"r\"}")), Some(3.0));
    assert_eq!(value(&promtool(pport, "up{job=\"landscaped\"}")), Some(1.0));
    assert_eq!(value(&promtool(pport, "sum(landscaped_errors_total)")), Some(0.0));
    assert_eq!(d.stop(), Some(0));
}
