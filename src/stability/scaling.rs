//! Adam's preconditioner scaling D = (P/η_fold)^{-1/2} per parameter tensor, from a safetensors file of
//! per-parameter second moments v (named like the model's parameters), written with the same names to a
//! private safetensors file the worker loads as a vector (`new_vector {kind: tensors}`): the app reads v
//! one tensor at a time and the d values never cross the worker's pipe.

use crate::workers::handoff::{Handoff, private_file};
use anyhow::{Context, Result};
use landscaped_formats::safetensors_file::{SafetensorsWriter, load_float_tensors};
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
