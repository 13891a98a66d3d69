//! The stability thresholds of `landscaped_maths::stability::threshold` against PyTorch's own optimizers:
//! `torch.optim.SGD` (plain, heavy ball with dampening, Nesterov) run on a 1-D quadratic with curvature
//! 2 % below each threshold converges, 2 % above diverges (tests/python/stability_thresholds.py). Adam's
//! preconditioned threshold is checked on its frozen-preconditioner dynamics, `SGD(momentum=β1,
//! dampening=β1)`.

use landscaped_maths::stability::threshold::{UpdateRule, adam_preconditioned_threshold};

mod support;
use support::*;

#[test]
fn thresholds_bound_pytorchs_own_updates() {
    let mut cases = Vec::new();
    for (lr, mu, tau, nesterov) in [
        (0.1, 0.0, 0.0, false),
        (0.05, 0.9, 0.0, false),
        (0.02, 0.5, 0.3, false),
        (0.1, 0.9, 0.0, true),
        (0.3, 0.5, 0.0, true),
    ] {
        let thr = UpdateRule::Sgd { momentum: mu, dampening: tau, nesterov }.threshold(lr).unwrap().value;
        cases.push(serde_json::json!({"lr": lr, "momentum": mu, "dampening": tau, "nesterov": nesterov, "threshold": thr}));
    }
    for (lr, b1) in [(1e-3, 0.9), (0.01, 0.95)] {
        let thr = adam_preconditioned_threshold(lr, b1);
        cases.push(serde_json::json!({"lr": lr, "momentum": b1, "dampening": b1, "nesterov": false, "threshold": thr}));
    }
    let arg = serde_json::Value::Array(cases.clone()).to_string();
    let out = run_script_args("stability_thresholds.py", [arg.as_str()]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), cases.len());
    for (c, r) in cases.iter().zip(&lines) {
        let below = r["below"].as_f64().unwrap_or(f64::INFINITY);
        let above = r["above"].as_f64().unwrap_or(f64::INFINITY);
        // 2000 steps at 2 % inside the limit shrink |x| geometrically; 2 % outside it grows without bound.
        assert!(below < 1e-3, "{c}: converges below the threshold, |x| = {below}");
        assert!(above > 1e6, "{c}: diverges above the threshold, |x| = {above}");
    }
}
