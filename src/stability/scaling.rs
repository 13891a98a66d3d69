//! Adam's preconditioner scaling D = (P/η_fold)^{-1/2} per parameter tensor, from the checkpoint's own
//! optimizer state ([`write_scaling_from_state`]) or an expert safetensors file of per-parameter second
//! moments v named like the model's parameters ([`write_scaling`]), written with the same names to a
//! private safetensors file the worker loads as a vector (`new_vector {kind: tensors}`): the app reads v
//! one tensor at a time and the d values never cross the worker's pipe.

use super::state::MappedState;
use crate::workers::handoff::{Handoff, private_file};
use anyhow::{Context, Result};
use landscaped_formats::safetensors_file::{SafetensorsWriter, load_float_tensors};
use landscaped_maths::curvature::measures::ParamSlot;
use landscaped_maths::stability::preconditioner::AdamMoments;
use std::collections::BTreeMap;
use std::path::Path;

/// Writes D for every tensor of `exp_avg_sq`; with `lr_by_param` (per-group rates folded) each tensor's η
/// divides P (a tensor without an entry is an error naming it). Returns the file (removed on drop).
pub(crate) fn write_scaling(
    exp_avg_sq: &Path,
    adam: &AdamMoments,
    lr_by_param: Option<&BTreeMap<String, f64>>,
) -> Result<Handoff> {
    let tensors = load_float_tensors(exp_avg_sq).with_context(|| {
        format!("reading Adam's second moments (exp_avg_sq) from {}", exp_avg_sq.display())
    })?;
    anyhow::ensure!(!tensors.is_empty(), "{}: no float tensors (exp_avg_sq)", exp_avg_sq.display());
    let out = private_file("preconditioner.safetensors")?;
    let names: Vec<(String, Vec<usize>)> = tensors.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
    let mut meta = BTreeMap::new();
    meta.insert("what".to_string(), "Adam preconditioner scaling (P/eta)^(-1/2)".to_string());
    meta.insert("source".to_string(), exp_avg_sq.display().to_string());
    let mut w = SafetensorsWriter::create(&out.path, &names, &meta)?;
    let mut d = Vec::new();
    for (name, _, v) in &tensors {
        let fold = match lr_by_param {
            Some(m) => *m.get(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no learning rate for {name:?} (per-group rates are folded)",
                    exp_avg_sq.display()
                )
            })?,
            None => 1.0,
        };
        let wide: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
        d.resize(wide.len(), 0.0);
        adam.inverse_sqrt_scaling(&wide, fold, &mut d)
            .with_context(|| format!("{}: tensor {name:?}", exp_avg_sq.display()))?;
        w.write(&d)?;
    }
    w.finish(&out.path, false)?;
    Ok(out)
}

/// Writes D from the checkpoint's own optimizer state for every parameter of `layout` (the worker's
/// Hessian layout, named like the model) that has Adam state: v = `exp_avg_sq` (`max_exp_avg_sq` with
/// `amsgrad`), its group's β1, β2, ε, its own step t, and its group's η folded into P when `folded`.
/// Returns the file and the names of the parameters without state (the caller loads D with them at 0).
pub(crate) fn write_scaling_from_state(
    layout: &[ParamSlot],
    ms: &MappedState,
    defaults: &AdamMoments,
    amsgrad: bool,
    folded: bool,
) -> Result<(Handoff, Vec<String>)> {
    let key = if amsgrad { "max_exp_avg_sq" } else { "exp_avg_sq" };
    let src = ms.state.source.display().to_string();
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for s in layout {
        match ms.entry(&s.name, key, &s.shape)? {
            Some(_) => present.push((s.name.clone(), s.shape.clone())),
            None => missing.push(s.name.clone()),
        }
    }
    anyhow::ensure!(!present.is_empty(), "{src}: no parameter of the model has Adam's {key}");
    let out = private_file("preconditioner.safetensors")?;
    let mut meta = BTreeMap::new();
    meta.insert("what".to_string(), "Adam preconditioner scaling (P/eta)^(-1/2)".to_string());
    meta.insert("source".to_string(), src.clone());
    let mut w = SafetensorsWriter::create(&out.path, &present, &meta)?;
    let mut d = Vec::new();
    for (name, shape) in &present {
        let v = ms
            .tensor(name, key, shape)?
            .ok_or_else(|| anyhow::anyhow!("{src}: {key} of {name:?} vanished"))?;
        let (h, lr, step) =
            ms.group_of(name).ok_or_else(|| anyhow::anyhow!("{src}: {name:?} in no group"))?;
        let (beta1, beta2) = h.betas.unwrap_or((defaults.beta1, defaults.beta2));
        let adam = AdamMoments {
            beta1,
            beta2,
            eps: h.eps.unwrap_or(defaults.eps),
            step: step.round() as u64,
            bias_correction: h.bias_correction.unwrap_or(true),
        };
        d.resize(v.len(), 0.0);
        adam.inverse_sqrt_scaling(&v, if folded { lr } else { 1.0 }, &mut d)
            .with_context(|| format!("{src}: {key} of {name:?}"))?;
        w.write(&d)?;
    }
    w.finish(&out.path, false)?;
    Ok((out, missing))
}
