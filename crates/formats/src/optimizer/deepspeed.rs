//! A DeepSpeed ZeRO-1/2/3 folder's optimizer state as an [`OptimizerState`].
//!
//! DeepSpeed wraps the user's optimizer (the "base" optimizer) around flat fp32 partitions: each rank's
//! `*_optim_states.pt` holds the base optimizer's `state_dict()` over that rank's flat groups
//! (`optimizer_state_dict.base_optimizer_state` under ZeRO-1/2, `optimizer_state_dict.
//! optimizer_state_dict` under ZeRO-3). Read here:
//! - the param groups: rank 0's `param_groups` (every rank saves the same hyperparameters), their
//!   `params` being indices of flat groups (ZeRO-1/2: one per group; ZeRO-3: the group's sub-groups);
//! - each group's parameters: the names DeepSpeed records for those flat groups in the model states'
//!   `param_shapes` (one ordered dict per flat group), in order; a tied parameter once, under its
//!   owner's name (`shared_params` aliases have no state of their own); frozen parameters have none;
//! - each parameter's `step`: its flat group's (0-d tensor or number);
//! - each per-element state entry (Adam's `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` with amsgrad,
//!   SGD's `momentum_buffer`: every 1-D tensor entry but `step`) cut out of every rank's partitions by
//!   `param_shapes`, padding removed, ranks concatenated, exactly as the fp32 master weights are
//!   ([`crate::deepspeed`]), streamed by range;
//! - the learning-rate scheduler's `_last_lr` when the model states hold a PyTorch scheduler's state;
//! - for DeepSpeed's own Adam (FusedAdam, DeepSpeedCPUAdam: groups with `bias_correction`), Adam or
//!   AdamW from the saved config (`ds_config.optimizer`), which the state does not say.
//!
//! A folder without optimizer files has no optimizer state (`Ok(None)`); optimizer files without a
//! base optimizer state (ZeRO-0 fp16) or ZeRO-0's state inside the model states: `Unsupported`, one
//! line.

use std::collections::BTreeMap;
use std::path::Path;

use super::super::deepspeed::{self as ds, DeepSpeedFolder};
use super::super::pickle_scan;
use super::super::pickle_value::Val;
use super::super::torch_item::TensorRef;
use super::super::{Checkpoint, CheckpointError, Layout, TensorSource};
use super::{
    Hyper, LrSources, Opened, OptimizerKind, OptimizerState, ParamGroup, ParamRef, ParamState, infer_kind,
    last_lr, malformed, str_entries,
};

fn unsupported(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Unsupported { path: path.to_path_buf(), why: why.into() }
}

/// The optimizer state of DeepSpeed folder `dir` (see the module docs).
pub(super) fn open_deepspeed(dir: &Path) -> Result<Option<OptimizerState>, CheckpointError> {
    let (models, optims) = ds::state_files(dir)?;
    let main = models
        .first()
        .map(|(_, p)| p.clone())
        .ok_or_else(|| malformed(dir, "no *_model_states.pt in the folder (not a DeepSpeed checkpoint)"))?;
    let m = Opened::open(&main)?;
    let Some((_, first)) = optims.first() else {
        if m.archive.root.get("optimizer").is_some_and(|o| !matches!(o, Val::None)) {
            return Err(unsupported(
                &main,
                "a ZeRO-0 optimizer state inside the model states, which landscaped does not read yet",
            ));
        }
        return Ok(None);
    };
    let zero3 = models.iter().any(|(dp, _)| dp.is_some());
    let o = Opened::open_with(first, pickle_scan::allowed_deepspeed)?;
    let osd = o
        .archive
        .root
        .get("optimizer_state_dict")
        .ok_or_else(|| malformed(first, "no optimizer_state_dict"))?;
    let base_key = if zero3 { "optimizer_state_dict" } else { "base_optimizer_state" };
    let base = osd.get(base_key).ok_or_else(|| {
        unsupported(first, format!("no optimizer_state_dict.{base_key} (no base optimizer state to read)"))
    })?;
    let groups_val = base
        .get("param_groups")
        .and_then(|g| g.items())
        .ok_or_else(|| malformed(first, format!("{base_key} has no param_groups list")))?;
    let state: Vec<(i64, Val)> = base
        .get("state")
        .and_then(|s| s.entries())
        .ok_or_else(|| malformed(first, format!("{base_key} has no state dict")))?
        .into_iter()
        .filter_map(|(k, v)| Some((k.as_int()?, v)))
        .collect();
    let state_of = |i: usize| state.iter().find(|(k, _)| *k == i as i64).map(|(_, v)| v.clone());
    let shapes = ds::param_shapes(&main, &m.archive.root)?;

    let mut groups = Vec::new();
    // Per group: its parameters' names and the step of its state.
    let mut members: Vec<(Vec<String>, Option<f64>)> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let mut flats_seen = 0usize;
    for (g, gv) in groups_val.iter().enumerate() {
        let mut raw = BTreeMap::new();
        for (k, v) in str_entries(gv) {
            if k == "params" || k == "param_names" {
                continue;
            }
            if let Some(s) = o.scalar(&v)? {
                raw.insert(k, s);
            }
        }
        let flats: Vec<usize> = gv
            .get("params")
            .and_then(|p| p.items())
            .ok_or_else(|| malformed(first, format!("param group {g} has no params list")))?
            .iter()
            .map(|p| p.as_int().and_then(|i| usize::try_from(i).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                malformed(first, format!("param group {g}: a flat group id that is not an index"))
            })?;
        let mut names = Vec::new();
        let mut step = None;
        for &i in &flats {
            let fs = shapes.get(i).ok_or_else(|| {
                malformed(
                    &main,
                    format!("param group {g} holds flat group {i}, but param_shapes lists {}", shapes.len()),
                )
            })?;
            names.extend(fs.iter().map(|(n, _)| n.clone()));
            let Some(sv) = state_of(i) else { continue };
            for (k, v) in str_entries(&sv) {
                if k == "step" {
                    if step.is_none() {
                        step = o.scalar(&v)?.and_then(|s| s.as_f64());
                    }
                    continue;
                }
                let is_flat =
                    TensorRef::from_val(&v).and_then(Result::ok).is_some_and(|t| t.shape.len() == 1);
                if is_flat && !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        flats_seen += flats.len();
        let params = names.iter().map(|n| ParamRef::Name(n.clone())).collect();
        groups.push(ParamGroup { hyper: Hyper::from_raw(&raw), raw, params });
        members.push((names, step));
    }
    if flats_seen != shapes.len() {
        return Err(malformed(
            dir,
            format!(
                "the base optimizer's param groups hold {flats_seen} flat groups, param_shapes lists {}",
                shapes.len()
            ),
        ));
    }
    keys.sort();

    // Every per-element entry, cut per parameter from every rank's partitions.
    let mut sources: Vec<Box<dyn TensorSource>> = Vec::new();
    let mut files = Vec::new();
    for key in &keys {
        let f = DeepSpeedFolder::open_state(dir, key)?;
        files = f.members();
        sources.push(Box::new(f));
    }
    let step =
        m.archive.root.get("global_steps").and_then(|s| s.as_int()).and_then(|s| u64::try_from(s).ok());
    let tensors = Checkpoint::from_sources(dir.to_path_buf(), Layout::DeepSpeed, step, sources, files);
    let mut params = Vec::new();
    for (g, (names, step)) in members.into_iter().enumerate() {
        for name in names {
            let entries: BTreeMap<String, usize> = keys
                .iter()
                .filter_map(|k| Some((k.clone(), tensors.index_of(&format!("state.{name}.{k}"))?)))
                .collect();
            if entries.len() != keys.len() {
                return Err(malformed(dir, format!("'{name}' lacks some of the state entries {keys:?}")));
            }
            params.push(ParamState {
                param: ParamRef::Name(name),
                group: g,
                step,
                tensors: entries,
                scalars: BTreeMap::new(),
            });
        }
    }
    let lr_sources = LrSources {
        scheduler_last_lr: m.archive.root.get("lr_scheduler").as_ref().and_then(last_lr),
        logged: None,
    };
    let mut kind = infer_kind(&groups, &params);
    if kind == OptimizerKind::AdamFamily
        && groups.iter().all(|g| g.raw.contains_key("bias_correction"))
        && let Some(k) = configured_adam(&m.archive.root)
    {
        kind = k;
    }
    Ok(Some(OptimizerState { source: dir.to_path_buf(), kind, groups, params, tensors, lr_sources }))
}

/// Adam or AdamW for DeepSpeed's own Adam (FusedAdam, DeepSpeedCPUAdam), whose `adam_w_mode` is not in
/// the optimizer state, from the config the run saved in its model states (`ds_config.optimizer`):
/// DeepSpeed builds AdamW's update for type "AdamW", and for type "Adam" too unless `params.adam_w_mode`
/// is false (`DeepSpeedEngine._configure_basic_optimizer`). None when the config built no Adam (the
/// user's own optimizer object was passed) or was not saved as a dict.
fn configured_adam(root: &Val) -> Option<OptimizerKind> {
    let opt = root.get("ds_config")?.get("optimizer")?;
    let ty = opt.get("type")?.as_str()?.to_ascii_lowercase();
    let w_mode =
        opt.get("params").and_then(|p| p.get("adam_w_mode")).and_then(|v| v.as_int()).map(|i| i != 0);
    match ty.as_str() {
        "adamw" => Some(OptimizerKind::AdamW),
        "adam" if w_mode.unwrap_or(true) => Some(OptimizerKind::AdamW),
        "adam" => Some(OptimizerKind::Adam),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn dict(entries: Vec<(&str, Val)>) -> Val {
        Val::Dict(Rc::new(RefCell::new(entries.into_iter().map(|(k, v)| (Val::Str(k.into()), v)).collect())))
    }

    /// The model states' root with `ds_config.optimizer` = {type, params}.
    fn root(ty: &str, params: Vec<(&str, Val)>) -> Val {
        let opt = dict(vec![("type", Val::Str(ty.into())), ("params", dict(params))]);
        dict(vec![("ds_config", dict(vec![("optimizer", opt)]))])
    }

    /// DeepSpeed's rule (`_configure_basic_optimizer`): "AdamW" is AdamW; "Adam" is AdamW too unless
    /// `adam_w_mode` is false; any other type, or no optimizer in the config, says nothing.
    #[test]
    fn adam_or_adamw_as_deepspeed_builds_it_from_its_config() {
        let lr = || ("lr", Val::Float(0.1));
        assert_eq!(configured_adam(&root("AdamW", vec![lr()])), Some(OptimizerKind::AdamW));
        assert_eq!(configured_adam(&root("Adam", vec![lr()])), Some(OptimizerKind::AdamW));
        assert_eq!(
            configured_adam(&root("Adam", vec![lr(), ("adam_w_mode", Val::Bool(true))])),
            Some(OptimizerKind::AdamW)
        );
        assert_eq!(
            configured_adam(&root("adam", vec![lr(), ("adam_w_mode", Val::Bool(false))])),
            Some(OptimizerKind::Adam)
        );
        // "AdamW" ignores adam_w_mode = False (DeepSpeed forces AdamW's update).
        assert_eq!(
            configured_adam(&root("AdamW", vec![("adam_w_mode", Val::Bool(false))])),
            Some(OptimizerKind::AdamW)
        );
        assert_eq!(configured_adam(&root("Lamb", vec![lr()])), None);
        assert_eq!(configured_adam(&dict(vec![("ds_config", dict(vec![]))])), None);
        assert_eq!(configured_adam(&dict(vec![("ds_config", Val::Str("ds.json".into()))])), None);
    }
}
