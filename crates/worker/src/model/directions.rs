//! Turning a direction description into direction vectors for a loaded model: random (seeded draws from
//! libtorch's generator, normalized), PCA (the trajectory's direction files, matched to the model's
//! slots by name), interpolation (towards a second checkpoint's state).

use super::{BindOptions, Model, SlotKind, State, rng};
use anyhow::{Result, anyhow, bail};
use landscaped_maths::directions::{RandomDirections, create_random_direction, orthogonalize};
use std::path::Path;

/// The parameters (not buffers) of a model, in module order, with shapes: what random directions cover.
pub fn parameter_list(model: &Model) -> Vec<(String, Vec<usize>)> {
    model
        .slots()
        .iter()
        .filter(|s| s.kind == SlotKind::Parameter)
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect()
}

/// Rebuilds the x direction and, if `two_d`, the y direction described by `spec`, about `centre`.
/// Buffer slots get zero. Errors if the model's parameters are not the ones `spec` lists.
pub fn random_directions(
    model: &Model,
    centre: &State,
    spec: &RandomDirections,
    two_d: bool,
) -> Result<(State, Option<State>)> {
    let params = parameter_list(model);
    if params != spec.params {
        bail!("the model's parameters differ from those the stored directions were drawn for");
    }
    let shapes: Vec<Vec<usize>> = params.iter().map(|(_, s)| s.clone()).collect();
    let groups: Vec<&[Vec<usize>]> = if two_d { vec![&shapes, &shapes] } else { vec![&shapes] };
    let mut draws = rng::normal_draws(spec.seed, &groups).into_iter();
    let weights: Vec<&[f32]> = centre[..shapes.len()].iter().map(Vec::as_slice).collect();
    let make = |d: Vec<Vec<f32>>| -> State {
        let mut d = create_random_direction(d, &weights, &shapes, spec.norm, spec.ignore);
        for s in &model.slots()[shapes.len()..] {
            d.push(vec![0.0; s.numel()]);
        }
        d
    };
    let dx = make(draws.next().ok_or_else(|| anyhow!("no draws"))?);
    let mut dy = if two_d { Some(make(draws.next().ok_or_else(|| anyhow!("no draws"))?)) } else { None };
    if let Some(dy) = dy.as_mut()
        && spec.orthogonalize
    {
        orthogonalize(dy, &dx);
    }
    Ok((dx, dy))
}

/// A PCA direction file (safetensors written by the trajectory PCA) as a direction over the model's
/// slots: tensors matched by name (prefixes stripped as for checkpoints); slots it lacks get zero.
pub fn pca_direction(model: &Model, file: &Path, opts: &BindOptions) -> Result<State> {
    let tensors = landscaped_formats::safetensors_file::load_float_tensors(file)?;
    let mut out: State = model.slots().iter().map(|s| vec![0.0; s.numel()]).collect();
    let mut matched = 0;
    for (name, shape, values) in tensors {
        let target = opts.module_name(&name);
        let Some(i) = model.slots().iter().position(|s| s.name == target) else {
            bail!("PCA direction {}: tensor {name:?} is not in the model", file.display());
        };
        if model.slots()[i].shape != shape {
            bail!(
                "PCA direction {}: {name:?} has shape {shape:?}, the model's {target:?} {:?}",
                file.display(),
                model.slots()[i].shape
            );
        }
        out[i] = values;
        matched += 1;
    }
    if matched == 0 {
        bail!("PCA direction {}: no tensors", file.display());
    }
    Ok(out)
}
