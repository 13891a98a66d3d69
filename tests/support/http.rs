//! The daemon's HTTP API from a test: GET with a bounded timeout, Prometheus samples by name.
#![allow(dead_code)]

use std::time::Duration;

/// GET http://127.0.0.1:port/path: (status, body), None if no answer came.
pub fn get_status(port: u16, path: &str) -> Option<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut r = agent.get(format!("http://127.0.0.1:{port}{path}")).call().ok()?;
    let status = r.status().as_u16();
    Some((status, r.body_mut().read_to_string().ok()?))
}

/// GET http://127.0.0.1:port/path as text (None on any failure).
pub fn get(port: u16, path: &str) -> Option<String> {
    let agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().new_agent();
    let mut r = agent.get(format!("http://127.0.0.1:{port}{path}")).call().ok()?;
    r.body_mut().read_to_string().ok()
}

/// The value of the sample whose name and labels are exactly `key` (e.g. `landscaped_last_step{run="r"}`).
pub fn metric(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(key).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

/// The sum of `landscaped_errors_total` over every kind and run in a /metrics text.
pub fn errors_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("landscaped_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
