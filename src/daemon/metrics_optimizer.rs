//! The optimizer-state gauges on /metrics: bounded per-run summaries of the newest checkpoint's
//! optimizer telemetry (learning rate per group, at most [`MAX_GROUPS`] groups; step; the effective
//! step size's quantiles and harmonic mean; the update RMS; the momentum norm), and per tensor only
//! for the tensors the `[metrics] tensors` allow-list names (on request, as the norms).

use crate::store::optimizer::OptimizerRecord;
use globset::GlobSet;
use prometheus::{GaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::Mutex;

/// The most param groups given an `lr` series per run.
pub const MAX_GROUPS: usize = 16;

/// The metric names (listed in `metrics::METRIC_NAMES`).
pub const NAMES: [&str; 6] = [
    "landscaped_optimizer_lr",
    "landscaped_optimizer_step",
    "landscaped_optimizer_step_size",
    "landscaped_optimizer_update_rms",
    "landscaped_optimizer_momentum_norm",
    "landscaped_optimizer_tensor_update_rms",
];

pub struct OptimizerGauges {
    lr: GaugeVec,
    step: GaugeVec,
    step_size: GaugeVec,
    update_rms: GaugeVec,
    momentum_norm: GaugeVec,
    tensor_update_rms: GaugeVec,
    /// Per run: the second label of every two-label series shown (gauge, label), to remove them.
    shown: Mutex<HashMap<String, Vec<(usize, String)>>>,
}

fn reg(r: &Registry, name: &str, help: &str, labels: &[&str]) -> anyhow::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl OptimizerGauges {
    pub fn new(r: &Registry) -> anyhow::Result<OptimizerGauges> {
        Ok(OptimizerGauges {
            lr: reg(
                r,
                NAMES[0],
                "Learning rate of each param group (newest checkpoint's optimizer state).",
                &["run", "group"],
            )?,
            step: reg(r, NAMES[1], "The optimizer's step (largest over its parameters).", &["run"])?,
            step_size: reg(
                r,
                NAMES[2],
                "Adam's effective step size lr/(sqrt(v_hat)+eps) over every element: quantiles and harmonic mean.",
                &["run", "stat"],
            )?,
            update_rms: reg(
                r,
                NAMES[3],
                "RMS of Adam's implied update m_hat/(sqrt(v_hat)+eps) over every element.",
                &["run"],
            )?,
            momentum_norm: reg(r, NAMES[4], "L2 norm of SGD's momentum buffers.", &["run"])?,
            tensor_update_rms: reg(
                r,
                NAMES[5],
                "Per tensor (allow-listed only): Adam's update RMS, or SGD's momentum norm.",
                &["run", "tensor"],
            )?,
            shown: Mutex::new(HashMap::new()),
        })
    }

    /// Shows `rec` (the run's newest checkpoint's telemetry); `None` clears the run's series.
    pub fn record(&self, run: &str, rec: Option<&OptimizerRecord>, allow: &GlobSet) {
        let pairs = [&self.lr, &self.step_size, &self.tensor_update_rms];
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        let mine = shown.entry(run.to_string()).or_default();
        for (g, label) in mine.drain(..) {
            let _ = pairs[g].remove_label_values(&[run, &label]);
        }
        for g in [&self.step, &self.update_rms, &self.momentum_norm] {
            let _ = g.remove_label_values(&[run]);
        }
        let Some(rec) = rec else { return };
        for gr in rec.groups.iter().take(MAX_GROUPS) {
            if let Some(lr) = gr.lr {
                self.lr.with_label_values(&[run, &gr.index.to_string()]).set(lr);
                mine.push((0, gr.index.to_string()));
            }
        }
        if let Some(s) = rec.groups.iter().filter_map(|g| g.step).reduce(f64::max) {
            self.step.with_label_values(&[run]).set(s);
        }
        if let Some(s) = &rec.total.step_size {
            self.step_size.with_label_values(&[run, "harmonic_mean"]).set(s.harmonic_mean);
            mine.push((1, "harmonic_mean".into()));
            for (q, v) in landscaped_maths::optimizer::QUANTILES.iter().zip(&s.quantiles) {
                let label = format!("q{q}");
                self.step_size.with_label_values(&[run, &label]).set(*v);
                mine.push((1, label));
            }
        }
        if let Some(u) = rec.total.update_rms {
            self.update_rms.with_label_values(&[run]).set(u);
        }
        if let Some(m) = rec.total.momentum_norm {
            self.momentum_norm.with_label_values(&[run]).set(m);
        }
        for t in rec.tensors.iter().filter(|t| allow.is_match(&t.name)) {
            if let Some(v) = t.figures.update_rms.or(t.figures.momentum_norm) {
                self.tensor_update_rms.with_label_values(&[run, &t.name]).set(v);
                mine.push((2, t.name.clone()));
            }
        }
    }
}
