//! The direction critical sharpness searches along when the checkpoint carries its optimizer's state:
//! the optimizer's real next update, PyTorch's own step rule (maths' `stability::update`) applied to the
//! state and one gradient of the job's loss at the checkpoint, per parameter with its group's
//! hyperparameters and learning rate. The values are u·η_g/η_ref in the Hessian layout's order
//! (θ_next = θ − η_ref·u; η_ref = 1 when per-group rates are folded, so the real step is then 1).
//! A parameter in no param group is not moved by the optimizer (0).

use super::state::MappedState;
use anyhow::{Result, anyhow};
use landscaped_maths::curvature::measures::ParamSlot;
use landscaped_maths::stability::update::{AdamHyper, AdamState, SgdHyper, adam_direction, sgd_direction};

/// The next update over the whole layout, and the parameters the optimizer does not move.
pub(crate) struct NextUpdate {
    pub values: Vec<f64>,
    pub unmoved: Vec<String>,
}

/// Whether forming the update needs θ (a group with weight decay).
pub(crate) fn needs_parameters(ms: &MappedState) -> bool {
    ms.state.groups.iter().any(|g| g.hyper.weight_decay.is_some_and(|w| w != 0.0))
}

/// PyTorch's next update from `ms` and the gradient `g` (and θ where weight decay needs it), both in
/// `layout`'s order; `rule` is `sgd`, `adam` or `adamw`.
pub(crate) fn next_update(
    layout: &[ParamSlot],
    g: &[f64],
    theta: Option<&[f64]>,
    ms: &MappedState,
    rule: &str,
    lr_ref: f64,
) -> Result<NextUpdate> {
    let src = ms.state.source.display().to_string();
    let mut values = vec![0.0; g.len()];
    let mut unmoved = Vec::new();
    for s in layout {
        let range = s.offset..s.offset + s.len();
        let Some((h, lr, step)) = ms.group_of(&s.name) else {
            unmoved.push(s.name.clone());
            continue;
        };
        let gi = &g[range.clone()];
        let th = theta.map_or(&[][..], |t| &t[range.clone()]);
        let out = &mut values[range];
        let wd = h.weight_decay.unwrap_or(0.0);
        let maximize = h.maximize.unwrap_or(false);
        let ctx = |e: anyhow::Error| anyhow!("{src}: the next update of {:?}: {e:#}", s.name);
        match rule {
            "sgd" => {
                let hy = SgdHyper {
                    momentum: h.momentum.unwrap_or(0.0),
                    dampening: h.dampening.unwrap_or(0.0),
                    nesterov: h.nesterov.unwrap_or(false),
                    weight_decay: wd,
                    maximize,
                };
                let buf = ms.tensor(&s.name, "momentum_buffer", &s.shape)?;
                sgd_direction(&hy, gi, th, buf.as_deref(), out).map_err(ctx)?;
            }
            "adam" | "adamw" => {
                let (beta1, beta2) = h.betas.ok_or_else(|| anyhow!("{src}: a param group without betas"))?;
                let hy = AdamHyper {
                    beta1,
                    beta2,
                    eps: h.eps.ok_or_else(|| anyhow!("{src}: a param group without eps"))?,
                    weight_decay: wd,
                    decoupled: rule == "adamw",
                    amsgrad: h.amsgrad.unwrap_or(false),
                    maximize,
                    bias_correction: h.bias_correction.unwrap_or(true),
                };
                let m = ms.tensor(&s.name, "exp_avg", &s.shape)?;
                let v = ms.tensor(&s.name, "exp_avg_sq", &s.shape)?;
                let vmax = ms.tensor(&s.name, "max_exp_avg_sq", &s.shape)?;
                let st = AdamState {
                    exp_avg: m.as_deref(),
                    exp_avg_sq: v.as_deref(),
                    max_exp_avg_sq: vmax.as_deref(),
                    step,
                };
                adam_direction(&hy, gi, th, &st, out).map_err(ctx)?;
            }
            other => anyhow::bail!("no update rule for {other:?}"),
        }
        let scale = lr / lr_ref;
        if scale != 1.0 {
            out.iter_mut().for_each(|x| *x *= scale);
        }
    }
    Ok(NextUpdate { values, unmoved })
}
