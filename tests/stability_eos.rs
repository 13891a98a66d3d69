//! Cohen et al. 2021, Fig. 1, reproduced through the daemon: full-batch gradient descent on a tanh MLP
//! (1000 digits, square loss; tests/python/eos_make.py) at two learning rates, a checkpoint every 75
//! steps, each dropped into a folder the daemon watches with `[run.stability]` (the trainer's own loss as
//! the model's `loss` method, the training set as the evaluation set: full batch). The recorded λmax
//! rises (progressive sharpening: below 0.9 of 2/η at first) and then hovers at 2/η: the ratio on
//! /metrics stays within ±15 % over the last 300 steps, for both rates; critical sharpness is measured at
//! each checkpoint too.

use std::path::Path;
use std::time::Duration;

mod support;
use support::*;

const STEPS: u64 = 700;
/// The trainer writes a checkpoint every 25 steps; the test drops every third into the watched folders
/// (25, 100, …, 700): ten stability jobs per rate keep the test near a minute and a half.
const EVERY: u64 = 25;
const DROP_EVERY: u64 = 75;

fn section(fx: &Path, lr: f64) -> String {
    format!(
        "[run.stability]\nevery = 1\nmodel = {:?}\neval_data = {:?}\nloss = \"method\"\nbatch_size = 1000\nthreads = 1\noptimizer = \"sgd\"\nlr = {lr}\ntol = 1e-3\nmax_hvps = 60\n",
        fx.join("model.pt").to_str().unwrap(),
        fx.join("eval.safetensors").to_str().unwrap(),
    )
}

#[test]
fn gradient_descent_sharpens_to_two_over_eta_and_hovers_there() {
    let dir = tempfile::tempdir().unwrap();
    let rates = [("r", 0.2), ("r2", 0.15)];
    let mut fixtures = Vec::new();
    for (name, lr) in rates {
        let fx = dir.path().join(format!("fx-{name}"));
        run_script_args(
            "eos_make.py",
            [fx.to_str().unwrap(), &lr.to_string(), &STEPS.to_string(), &EVERY.to_string()],
        );
        let watched = dir.path().join(format!("watch-{name}"));
        std::fs::create_dir_all(&watched).unwrap();
        fixtures.push((name, lr, fx, watched));
    }
    let (_, lr0, fx0, w0) = &fixtures[0];
    let (_, lr1, fx1, w1) = &fixtures[1];
    let run_text = format!(
        "{}\n[[run]]\nname = \"r2\"\nwatch = [{:?}]\n{}",
        section(fx0, *lr0),
        w1.to_str().unwrap(),
        section(fx1, *lr1)
    );
    let config = write_config(dir.path(), &[w0], "", &run_text);
    let d = restart(config, dir.path());
    let mut ratios: Vec<Vec<(u64, f64, f64)>> = vec![Vec::new(), Vec::new()];
    let done = |d: &Daemon, run: &str| {
        d.metric(&format!("landscaped_job_runs_total{{job=\"stability\",outcome=\"ok\",run=\"{run}\"}}"))
            .unwrap_or(0.0)
    };
    for step in (EVERY..=STEPS).step_by(DROP_EVERY as usize) {
        for (k, (name, _, fx, watched)) in fixtures.iter().enumerate() {
            let before = done(&d, name);
            let src = fx.join("ck").join(format!("step-{step}.safetensors"));
            std::fs::copy(&src, watched.join("tmp.part")).unwrap();
            std::fs::rename(watched.join("tmp.part"), watched.join(format!("step-{step}.safetensors")))
                .unwrap();
            wait_until(Duration::from_secs(60), "the stability job at the new checkpoint", || {
                done(&d, name) > before
                    || d.metric(&format!(
                        "landscaped_job_runs_total{{job=\"stability\",outcome=\"error\",run=\"{name}\"}}"
                    ))
                    .is_some()
            });
            let m = d.metrics();
            let g = |q: &str, what: &str| {
                metric(&m, &format!("landscaped_stability_{what}{{quantity=\"{q}\",run=\"{name}\"}}"))
                    .unwrap_or_else(|| panic!("{what} of {q} for {name} missing:\n{}", d.log()))
            };
            ratios[k].push((step, g("lambda_max", "ratio"), g("critical_sharpness", "ratio")));
        }
    }
    for (k, (name, lr, _, _)) in fixtures.iter().enumerate() {
        let r = &ratios[k];
        eprintln!("{name} (η = {lr}, 2/η = {}): step, λmax/(2/η), λc/(2/η): {r:?}", 2.0 / lr);
        // Progressive sharpening: the first checkpoint is well below the edge.
        assert!(r[0].1 < 0.9, "{name}: λmax starts at {} of 2/η", r[0].1);
        // The edge of stability: every ratio of the last 300 steps within ±15 % of 1.
        for &(step, ratio, _) in r.iter().filter(|(s, _, _)| *s > STEPS - 300) {
            assert!((ratio - 1.0).abs() < 0.15, "{name} at step {step}: λmax/(2/η) = {ratio}");
        }
        // Critical sharpness is measured at each checkpoint (≤ λmax on a quadratic; here a positive number).
        assert!(r.iter().all(|&(_, _, c)| c.is_finite() && c > 0.0), "{name}: {r:?}");
    }
    assert_eq!(d.stop(), Some(0));
}
