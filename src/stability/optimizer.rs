//! What the stability job knows of the optimizer at a checkpoint: [`OptimizerInput`], from the job's
//! config or the command line (`optimizer`, `lr`, `momentum`, `betas`, …, and for Adam an expert
//! safetensors file of per-parameter second moments) with the checkpoint's own optimizer state laid over
//! it ([`super::state`]: the state is the truth, the config fills what it lacks); resolved to PyTorch's
//! update rule and learning rate, or to notes that say what is missing (no threshold is ever invented).

use landscaped_maths::stability::threshold::UpdateRule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The optimizer's kind and hyperparameters as the stability job takes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerInput {
    /// `sgd`, `adam`, `adamw` (PyTorch's); any other name (e.g. `adafactor`, `muon`) is listed as
    /// unknown and gets no threshold; `None`: not known.
    pub optimizer: Option<String>,
    /// The learning rate η at this checkpoint (the scheduler's current value; `None`: not known).
    pub lr: Option<f64>,
    /// SGD: momentum μ, dampening τ, Nesterov.
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// Adam/AdamW: (β1, β2), ε, amsgrad, and the optimizer's step count t (`None`: the checkpoint's step).
    pub betas: (f64, f64),
    pub eps: f64,
    pub amsgrad: bool,
    pub adam_step: Option<u64>,
    /// Adam/AdamW: the per-parameter second moment v (`exp_avg_sq`, `max_exp_avg_sq` with amsgrad) as a
    /// safetensors file of tensors named like the model's parameters; `{step}` is replaced by the
    /// checkpoint's step. An expert and testing option for checkpoints saved without their optimizer (the
    /// checkpoint's own state wins).
    pub exp_avg_sq: Option<PathBuf>,
    /// Per-parameter learning rates when parameter groups differ (name as in `exp_avg_sq` → η): η is
    /// then folded into P and the threshold is dimensionless.
    pub lr_by_param: BTreeMap<String, f64>,
    /// Adam's second moment is the checkpoint's own optimizer state (set by [`super::state`]).
    #[serde(skip)]
    pub moments_in_state: bool,
    /// The state is DeepSpeed's Adam with `bias_correction` off (set by [`super::state`]): P = √v+ε and
    /// the update uncorrected.
    #[serde(skip)]
    pub uncorrected: bool,
    /// Where these values came from, for the record (`config`, `command line`, …).
    pub source: String,
}

impl Default for OptimizerInput {
    fn default() -> Self {
        OptimizerInput {
            optimizer: None,
            lr: None,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            betas: (0.9, 0.999),
            eps: 1e-8,
            amsgrad: false,
            adam_step: None,
            exp_avg_sq: None,
            lr_by_param: BTreeMap::new(),
            moments_in_state: false,
            uncorrected: false,
            source: String::new(),
        }
    }
}

/// The input resolved at one checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// PyTorch's update rule (`None`: unknown or not given: no threshold).
    pub rule: Option<UpdateRule>,
    /// The learning rate the thresholds use: η, or 1.0 when per-group rates are folded into P.
    pub lr: Option<f64>,
    pub folded: bool,
    /// The second moment's file (Adam only), `{step}` replaced.
    pub exp_avg_sq: Option<PathBuf>,
    /// The second moment is the checkpoint's optimizer state (Adam only).
    pub moments_in_state: bool,
    /// Adam without bias correction (DeepSpeed's `bias_correction` off).
    pub uncorrected: bool,
    /// No optimizer kind was given or found (λmax is then held against gradient descent's 2/η).
    pub kind_unknown: bool,
    /// A one-line description, e.g. `adam(β1=0.9, β2=0.999, ε=1e-08, t=120), η=0.001`.
    pub describe: String,
    /// What is missing, in words a user can act on.
    pub notes: Vec<String>,
}

impl OptimizerInput {
    /// Rejects values outside the optimizer's own domain, naming the key.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(lr) = self.lr {
            anyhow::ensure!(lr.is_finite() && lr > 0.0, "lr: must be positive, not {lr}");
        }
        for (n, lr) in &self.lr_by_param {
            anyhow::ensure!(lr.is_finite() && *lr > 0.0, "lr_by_param: {n}: must be positive, not {lr}");
        }
        if let Some(rule) = self.rule(0) {
            rule.validate()?;
        }
        Ok(())
    }

    fn kind(&self) -> Option<String> {
        self.optimizer.as_ref().map(|s| s.trim().to_ascii_lowercase())
    }

    fn rule(&self, step: u64) -> Option<UpdateRule> {
        match self.kind()?.as_str() {
            "sgd" => Some(UpdateRule::Sgd {
                momentum: self.momentum,
                dampening: self.dampening,
                nesterov: self.nesterov,
            }),
            "adam" | "adamw" => Some(UpdateRule::Adam {
                beta1: self.betas.0,
                beta2: self.betas.1,
                eps: self.eps,
                step: self.adam_step.unwrap_or(step),
                amsgrad: self.amsgrad,
            }),
            _ => None,
        }
    }

    /// The rule, learning rate and notes at the checkpoint of `step`.
    pub fn resolve(&self, step: u64) -> Resolved {
        let mut notes = Vec::new();
        let rule = self.rule(step);
        match (&self.kind(), &rule) {
            (None, _) => notes.push(
                "optimizer not known (no optimizer state in the checkpoint and no `optimizer` in [run.stability] or --optimizer): λmax is held against gradient descent's 2/η only"
                    .to_string(),
            ),
            (Some(k), None) => notes.push(format!(
                "optimizer {k:?} is not one whose stability threshold is known (sgd, adam, adamw): its state is listed, no threshold is invented"
            )),
            _ => {}
        }
        let folded = !self.lr_by_param.is_empty() && {
            let mut v = self.lr_by_param.values();
            let first = v.next().copied();
            v.any(|x| Some(*x) != first)
        };
        let lr =
            if folded { Some(1.0) } else { self.lr.or_else(|| self.lr_by_param.values().next().copied()) };
        if lr.is_none() && (rule.is_some() || self.kind().is_none()) {
            notes.push(
                "learning rate unknown: no threshold (the checkpoint has no optimizer state, scheduler state or trainer_state.json learning rate; set `lr` in [run.stability] or --lr)"
                    .to_string(),
            );
        }
        let exp_avg_sq = self
            .exp_avg_sq
            .as_ref()
            .map(|p| PathBuf::from(p.to_string_lossy().replace("{step}", &step.to_string())));
        let moments_in_state = self.moments_in_state && rule.as_ref().is_some_and(UpdateRule::adaptive);
        if rule.as_ref().is_some_and(UpdateRule::adaptive) && exp_avg_sq.is_none() && !moments_in_state {
            notes.push(
                "Adam's second moment (exp_avg_sq) not in the checkpoint's optimizer state nor given: no preconditioned sharpness (save the optimizer with the checkpoint, or set `exp_avg_sq` to a safetensors file of per-parameter tensors)"
                    .to_string(),
            );
        }
        let uncorrected = self.uncorrected && rule.as_ref().is_some_and(UpdateRule::adaptive);
        let mut describe = describe(rule.as_ref(), self.kind().as_deref(), lr, folded);
        if uncorrected {
            describe = describe.replacen(')', ", no bias correction)", 1);
        }
        let kind_unknown = self.kind().is_none();
        Resolved {
            rule,
            lr,
            folded,
            exp_avg_sq,
            moments_in_state,
            uncorrected,
            kind_unknown,
            describe,
            notes,
        }
    }
}

fn describe(rule: Option<&UpdateRule>, kind: Option<&str>, lr: Option<f64>, folded: bool) -> String {
    let r = match rule {
        Some(UpdateRule::Sgd { momentum, dampening, nesterov }) => {
            if *momentum == 0.0 {
                "sgd".to_string()
            } else {
                format!("sgd(μ={momentum}, τ={dampening}{})", if *nesterov { ", nesterov" } else { "" })
            }
        }
        Some(UpdateRule::Adam { beta1, beta2, eps, step, amsgrad }) => format!(
            "{}(β1={beta1}, β2={beta2}, ε={eps:e}, t={step}{})",
            kind.unwrap_or("adam"),
            if *amsgrad { ", amsgrad" } else { "" }
        ),
        None => kind.map_or("unknown".to_string(), |k| format!("{k} (unknown)")),
    };
    match (lr, folded) {
        (_, true) => format!("{r}, per-group η folded into P"),
        (Some(lr), false) => format!("{r}, η={lr}"),
        (None, false) => format!("{r}, η unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_lr_and_unknown_optimizers_say_what_is_needed() {
        let r = OptimizerInput { optimizer: Some("sgd".into()), ..Default::default() }.resolve(3);
        assert!(r.rule.is_some() && r.lr.is_none());
        assert!(r.notes[0].contains("learning rate unknown"), "{:?}", r.notes);
        let r = OptimizerInput { optimizer: Some("Adafactor".into()), lr: Some(0.1), ..Default::default() }
            .resolve(3);
        assert!(r.rule.is_none() && r.notes[0].contains("no threshold is invented"), "{:?}", r.notes);
        let r = OptimizerInput {
            optimizer: Some("adam".into()),
            lr: Some(1e-3),
            exp_avg_sq: Some("/x/v-{step}.safetensors".into()),
            ..Default::default()
        }
        .resolve(40);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        assert_eq!(r.exp_avg_sq.unwrap(), PathBuf::from("/x/v-40.safetensors"));
        assert!(matches!(r.rule, Some(UpdateRule::Adam { step: 40, .. })));
        let folded = OptimizerInput {
            optimizer: Some("sgd".into()),
            lr_by_param: [("a".to_string(), 0.1), ("b".to_string(), 0.2)].into(),
            ..Default::default()
        }
        .resolve(1);
        assert!(folded.folded && folded.lr == Some(1.0));
        assert!(OptimizerInput { lr: Some(-1.0), ..Default::default() }.check().is_err());
        let nest = OptimizerInput {
            optimizer: Some("sgd".into()),
            momentum: 0.9,
            dampening: 0.1,
            nesterov: true,
            ..Default::default()
        };
        assert!(nest.check().unwrap_err().to_string().contains("Nesterov"));
    }
}
