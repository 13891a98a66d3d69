//! The checkpoint's own optimizer state in the stability job: read by formats'
//! [`OptimizerState::open`] (HF `optimizer.pt`, Lightning, plain `torch.save`, DCP, and whatever else it
//! reads), its parameters mapped to the model's names by the order the worker reports at bind time
//! (checked by shape), and laid over the job's [`OptimizerInput`]:
//!
//! - **the state is the truth**: kind, hyperparameters (momentum, dampening, Nesterov, betas, ε,
//!   amsgrad, weight decay), Adam's step t and each group's learning rate come from it; the config's or
//!   the command line's values only fill what the state lacks, and an explicit value that disagrees
//!   with the state is named in a note (an explicit value equal to the built-in default cannot be told
//!   from the default and is not noted);
//! - per-group learning rates that differ are folded per parameter (`lr_by_param`) when the names map;
//! - Adam's second moment (`exp_avg_sq`, `max_exp_avg_sq` with amsgrad) per parameter replaces the
//!   expert safetensors file; SGD's momentum buffer and Adam's moments form the real next update
//!   ([`super::direction`]);
//! - without state: the learning rate from the scheduler's `_last_lr` or `trainer_state.json`'s last
//!   logged `learning_rate` ([`LrSources::of`]), else the config's.
//!
//! Where each value came from is written to the record's `source` (`key: origin; …`).

use super::optimizer::OptimizerInput;
use landscaped_formats::optimizer::LrSources;
use landscaped_formats::{Checkpoint, Hyper, OptimizerKind, OptimizerState, ParamRef, ParamShape};
use std::collections::BTreeMap;
use std::path::Path;

/// What the checkpoint says of its optimizer, read before the workers start.
pub(crate) enum Found {
    State(Box<OptimizerState>),
    /// No optimizer state in the checkpoint: its learning-rate sources only.
    NoState(LrSources),
    /// Nothing could be read: one line naming the file and cause (the job goes on with its config).
    Unreadable(String),
}

/// Opens `checkpoint`'s optimizer state (or, without one, its learning-rate sources).
pub(crate) fn find(checkpoint: &Path) -> Found {
    let ck = match Checkpoint::open(checkpoint) {
        Ok(c) => c,
        Err(e) => return Found::Unreadable(format!("optimizer state not read: {e}")),
    };
    match OptimizerState::open(&ck) {
        Ok(Some(s)) => Found::State(Box::new(s)),
        Ok(None) => match LrSources::of(&ck) {
            Ok(l) => Found::NoState(l),
            Err(e) => Found::Unreadable(format!("learning rate sources not read: {e}")),
        },
        Err(e) => Found::Unreadable(format!("optimizer state not read: {e}")),
    }
}

/// The state with its parameters named like the model's.
pub(crate) struct MappedState {
    pub state: OptimizerState,
    /// The model's parameter name → (param group, index into `state.params` when it has state).
    pub by_name: BTreeMap<String, (usize, Option<usize>)>,
    /// The optimizer as the update rule needs it (`sgd`, `adam`, `adamw`; `None`: no real update).
    pub rule: Option<&'static str>,
    /// Each group's learning rate.
    pub lrs: Vec<f64>,
}

impl MappedState {
    /// Where tensor entry `key` (`exp_avg_sq`, `momentum_buffer`, …) of parameter `name` is, checked
    /// against the model's shape; `Ok(None)`: the parameter has no such entry.
    pub fn entry(&self, name: &str, key: &str, shape: &[usize]) -> anyhow::Result<Option<usize>> {
        let Some(&(_, Some(k))) = self.by_name.get(name) else { return Ok(None) };
        let Some(i) = self.state.params[k].tensor(key) else { return Ok(None) };
        let info = &self.state.tensors.tensors[i];
        anyhow::ensure!(
            info.shape == shape,
            "{}: {key} of '{name}' has shape {:?}, the model's parameter {shape:?}",
            self.state.source.display(),
            info.shape
        );
        Ok(Some(i))
    }

    /// That entry's values as f64.
    pub fn tensor(&self, name: &str, key: &str, shape: &[usize]) -> anyhow::Result<Option<Vec<f64>>> {
        match self.entry(name, key, shape)? {
            Some(i) => Ok(Some(self.state.tensors.read_f64(i)?)),
            None => Ok(None),
        }
    }

    /// Parameter `name`'s group hyperparameters and learning rate, and its `step` (0: no state).
    pub fn group_of(&self, name: &str) -> Option<(&Hyper, f64, f64)> {
        let &(g, k) = self.by_name.get(name)?;
        let step = k.and_then(|k| self.state.params[k].step).unwrap_or(0.0);
        Some((&self.state.groups[g].hyper, self.lrs[g], step))
    }
}

/// The input the job runs with, the notes of the overlay, and the mapped state when its per-parameter
/// entries are usable.
pub(crate) struct Applied {
    pub input: OptimizerInput,
    pub notes: Vec<String>,
    pub mapped: Option<MappedState>,
}

/// Lays what the checkpoint says over `given` (see the module docs); `order` is the model's parameter
/// order as the worker reports it.
pub(crate) fn apply(given: &OptimizerInput, found: Found, order: &[ParamShape]) -> Applied {
    let mut a = overlay(given, found, order);
    usable_rates(&mut a);
    a
}

/// A learning rate of 0 (a schedule's end, a frozen group) gives no threshold: dropped with a note
/// instead of failing the job.
fn usable_rates(a: &mut Applied) {
    let ok = |x: f64| x.is_finite() && x > 0.0;
    if let Some(lr) = a.input.lr.filter(|x| !ok(*x)) {
        a.notes.push(format!("the checkpoint's learning rate is {lr}: no threshold"));
        a.input.lr = None;
    }
    if let Some((n, lr)) = a.input.lr_by_param.iter().find(|(_, x)| !ok(**x)) {
        a.notes.push(format!("the checkpoint's learning rate of {n:?} is {lr}: no threshold"));
        a.input.lr_by_param.clear();
        a.mapped = None;
    }
}

fn overlay(given: &OptimizerInput, found: Found, order: &[ParamShape]) -> Applied {
    match found {
        Found::State(st) => with_state(given, *st, order),
        Found::NoState(lr) => without_state(given, &lr),
        Found::Unreadable(why) => {
            let mut input = given.clone();
            input.source = format!("{} (the checkpoint's optimizer state unreadable)", given.source);
            Applied { input, notes: vec![why], mapped: None }
        }
    }
}

fn origin(given: &OptimizerInput) -> &str {
    if given.source.is_empty() { "config" } else { &given.source }
}

fn without_state(given: &OptimizerInput, lr: &LrSources) -> Applied {
    let mut input = given.clone();
    let mut sources = Vec::new();
    let mut notes = Vec::new();
    match (lr.first(), given.lr) {
        (Some((x, from)), given_lr) => {
            if let Some(y) = given_lr
                && !same(x, y)
            {
                notes.push(format!(
                    "lr = {y} from {} differs from the checkpoint's {from} (η = {x}): the checkpoint's is used",
                    origin(given)
                ));
            }
            input.lr = Some(x);
            sources.push(format!("lr: {from}"));
        }
        (None, Some(_)) => sources.push(format!("lr: {}", origin(given))),
        (None, None) => {}
    }
    if given.optimizer.is_some() {
        sources.push(format!("optimizer: {}", origin(given)));
    }
    sources.push("no optimizer state in the checkpoint".into());
    input.source = sources.join("; ");
    Applied { input, notes, mapped: None }
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// Every group's value of `f`, when all groups agree (`Err(())`: they differ; `Ok(None)`: absent).
fn agreed<T: PartialEq + Copy>(groups: &[Hyper], f: impl Fn(&Hyper) -> Option<T>) -> Result<Option<T>, ()> {
    let mut it = groups.iter().map(&f);
    let first = it.next().flatten();
    if groups.iter().map(f).all(|x| x == first) { Ok(first) } else { Err(()) }
}

fn with_state(given: &OptimizerInput, mut st: OptimizerState, order: &[ParamShape]) -> Applied {
    let src = st.source.display().to_string();
    let mut notes = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    let mut input = given.clone();
    let hyper: Vec<Hyper> = st.groups.iter().map(|g| g.hyper.clone()).collect();
    let given_kind = given.optimizer.as_ref().map(|k| k.trim().to_ascii_lowercase());
    let decays = hyper.iter().any(|h| h.weight_decay.is_some_and(|w| w != 0.0));
    // The kind: the state's; the config's only where the state leaves it open.
    // DeepSpeed's Adam may run without bias correction (P = √v+ε, its kernel's rule): all groups alike,
    // or no threshold (one P for the whole model).
    let uncorrected =
        hyper.iter().filter(|h| h.bias_correction.is_some()).map(|h| h.bias_correction == Some(false));
    let (any_off, all_off) = uncorrected.fold((false, true), |(a, b), off| (a || off, b && off));
    let (kind, rule): (String, Option<&'static str>) = match &st.kind {
        k if k.is_adam() && any_off && !all_off => {
            notes.push(format!(
                "{src}: param groups differ in bias_correction (DeepSpeed's Adam): no single preconditioner, no threshold"
            ));
            (format!("{} (mixed bias_correction)", k.name()), None)
        }
        OptimizerKind::Adam => ("adam".into(), Some("adam")),
        OptimizerKind::AdamW => ("adamw".into(), Some("adamw")),
        OptimizerKind::Sgd => ("sgd".into(), Some("sgd")),
        OptimizerKind::AdamFamily => match given_kind.as_deref() {
            Some(k @ ("adam" | "adamw")) => {
                let r = if k == "adam" { "adam" } else { "adamw" };
                (k.to_string(), Some(r))
            }
            _ => {
                if decays {
                    notes.push(format!(
                        "{src}: Adam's state that does not say Adam or AdamW (no `decoupled_weight_decay`: PyTorch < 2.6, or DeepSpeed's FusedAdam/CPUAdam without the run's config) and weight decay ≠ 0, so the next update is not formed (set `optimizer` = adam or adamw)"
                    ));
                }
                ("adam".into(), if decays { None } else { Some("adam") })
            }
        },
        OptimizerKind::Unknown { group_keys, state_keys } => match given_kind.as_deref() {
            Some(k) => {
                notes.push(format!(
                    "{src}: the state's keys are not a known optimizer's (param groups: {}; state: {}): `optimizer` = {k} from {} is used",
                    group_keys.join(", "),
                    state_keys.join(", "),
                    origin(given)
                ));
                (k.to_string(), None)
            }
            None => (
                format!(
                    "unknown (param group keys: {}; state keys: {})",
                    group_keys.join(", "),
                    state_keys.join(", ")
                ),
                None,
            ),
        },
    };
    let from_state = !matches!(st.kind, OptimizerKind::Unknown { .. });
    if from_state
        && let Some(g) = &given_kind
        && *g != kind
        && !(st.kind == OptimizerKind::AdamFamily)
    {
        notes.push(format!(
            "optimizer = {g} from {} differs from the checkpoint's optimizer state ({kind}): the state's is used",
            origin(given)
        ));
    }
    sources.push(format!("optimizer: {}", if from_state { "optimizer state" } else { origin(given) }));
    input.optimizer = Some(kind.clone());
    let mut rule = rule;
    if hyper.iter().any(|h| h.maximize == Some(true)) {
        notes.push(format!("{src}: maximize = True (the optimizer ascends): no threshold"));
        input.optimizer = Some(format!("{kind} (maximize)"));
        rule = None;
    }
    // Hyperparameters: one value over the groups (ε may differ: it enters P per group).
    let d = OptimizerInput::default();
    let mut take = |name: &str,
                    agreed: Result<Option<f64>, ()>,
                    given_v: f64,
                    default_v: f64,
                    slot: &mut f64| {
        match agreed {
            Ok(Some(x)) => {
                if given_v != default_v && !same(given_v, x) {
                    notes.push(format!(
                        "{name} = {given_v} from {} differs from the checkpoint's optimizer state ({x}): the state's is used",
                        origin(given)
                    ));
                }
                *slot = x;
                sources.push(format!("{name}: optimizer state"));
            }
            Ok(None) => {}
            Err(()) => notes.push(format!(
                "{src}: param groups differ in {name}: no single threshold (the first group's is used)"
            )),
        }
    };
    let is_sgd = kind == "sgd";
    let is_adam = kind == "adam" || kind == "adamw";
    if is_sgd {
        take("momentum", agreed(&hyper, |h| h.momentum), given.momentum, d.momentum, &mut input.momentum);
        take(
            "dampening",
            agreed(&hyper, |h| h.dampening),
            given.dampening,
            d.dampening,
            &mut input.dampening,
        );
        let mut nest = f64::from(u8::from(given.nesterov));
        take(
            "nesterov",
            agreed(&hyper, |h| h.nesterov.map(|b| f64::from(u8::from(b)))),
            nest,
            0.0,
            &mut nest,
        );
        input.nesterov = nest != 0.0;
    }
    if is_adam {
        let (mut b1, mut b2) = given.betas;
        take("beta1", agreed(&hyper, |h| h.betas.map(|b| b.0)), given.betas.0, d.betas.0, &mut b1);
        take("beta2", agreed(&hyper, |h| h.betas.map(|b| b.1)), given.betas.1, d.betas.1, &mut b2);
        input.betas = (b1, b2);
        take(
            "eps",
            agreed(&hyper, |h| h.eps).or(Ok(hyper.first().and_then(|h| h.eps))),
            given.eps,
            d.eps,
            &mut input.eps,
        );
        let mut ams = f64::from(u8::from(given.amsgrad));
        take("amsgrad", agreed(&hyper, |h| h.amsgrad.map(|b| f64::from(u8::from(b)))), ams, 0.0, &mut ams);
        input.amsgrad = ams != 0.0;
        // Adam's t: the parameters' own step (equal in every state PyTorch writes).
        let steps: Vec<f64> = st.params.iter().filter_map(|p| p.step).collect();
        match steps.iter().copied().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))) {
            Some(t) => {
                if steps.iter().any(|s| *s != t) {
                    notes.push(format!(
                        "{src}: parameters differ in Adam's step (up to {t}): each parameter's own is used for P and the update, the largest is shown"
                    ));
                }
                if let Some(g) = given.adam_step
                    && g as f64 != t
                {
                    notes.push(format!(
                        "adam_step = {g} from {} differs from the checkpoint's optimizer state (t = {t}): the state's is used",
                        origin(given)
                    ));
                }
                input.adam_step = Some(t.round() as u64);
                sources.push("step: optimizer state".into());
            }
            None => notes.push(format!(
                "{src}: no parameter has Adam state yet (no step taken): P is undefined, the next update is Adam's first"
            )),
        }
    }
    // Learning rates per group (the scheduler's last value when a group lacks its own).
    let lrs: Vec<Option<f64>> = (0..st.groups.len()).map(|g| st.lr(g)).collect();
    let lr_from = if st.groups.iter().all(|g| g.hyper.lr.is_some()) {
        "optimizer state"
    } else if st.lr_sources.scheduler_last_lr.is_some() {
        "scheduler state"
    } else {
        "trainer_state.json"
    };
    // Names: index-keyed state mapped by the model's order, checked by shape.
    let map = st.map_names(order);
    if let Err(why) = &map {
        notes.push(format!(
            "{src}: its parameters cannot be matched to the model's ({why}): its per-parameter state (Adam's second moment, the next update) is not used"
        ));
    }
    let all_lr: Option<Vec<f64>> = lrs.iter().copied().collect();
    match &all_lr {
        None => notes.push(format!(
            "{src}: a param group without a learning rate (no lr, scheduler state or logged learning_rate)"
        )),
        Some(v) if v.iter().all(|x| same(*x, v[0])) => {
            if let Some(y) = given.lr
                && !same(y, v[0])
            {
                notes.push(format!(
                    "lr = {y} from {} differs from the checkpoint's {lr_from} (η = {}): the checkpoint's is used",
                    origin(given),
                    v[0]
                ));
            }
            input.lr = Some(v[0]);
            input.lr_by_param.clear();
            sources.push(format!("lr: {lr_from}"));
        }
        Some(v) if map.is_ok() => {
            input.lr = None;
            input.lr_by_param = st
                .groups
                .iter()
                .zip(v)
                .flat_map(|(g, lr)| {
                    g.params.iter().filter_map(move |r| match r {
                        ParamRef::Name(n) => Some((n.clone(), *lr)),
                        ParamRef::Index(_) => None,
                    })
                })
                .collect();
            sources.push(format!("lr: {lr_from}, per group ({} groups, folded into P)", v.len()));
        }
        Some(_) => {
            input.lr = None;
            notes.push(format!(
                "{src}: param groups differ in learning rate and the parameters cannot be named: no threshold"
            ));
        }
    }
    let mapped = map.is_ok().then(|| {
        st.groups
            .iter()
            .enumerate()
            .flat_map(|(g, gr)| gr.params.iter().map(move |r| (g, r.clone())))
            .filter_map(|(g, r)| {
                let ParamRef::Name(n) = &r else { return None };
                Some((n.clone(), (g, st.params.iter().position(|p| p.param == r))))
            })
            .collect::<BTreeMap<_, _>>()
    });
    let moments = is_adam
        && mapped.is_some()
        && st
            .params
            .iter()
            .any(|p| p.tensor(if input.amsgrad { "max_exp_avg_sq" } else { "exp_avg_sq" }).is_some());
    if moments {
        if let Some(f) = &given.exp_avg_sq {
            notes.push(format!(
                "exp_avg_sq = {} from {} not used: the checkpoint's own optimizer state is",
                f.display(),
                origin(given)
            ));
        }
        input.exp_avg_sq = None;
        input.moments_in_state = true;
        input.uncorrected = any_off;
        if any_off {
            sources.push("bias_correction: off (optimizer state)".into());
        }
        sources.push("exp_avg_sq: optimizer state".into());
    }
    input.source = format!("{} [{src}]", sources.join("; "));
    let mapped = match (mapped, all_lr) {
        (Some(by_name), Some(lrs)) => Some(MappedState { state: st, by_name, rule, lrs }),
        _ => None,
    };
    Applied { input, notes, mapped }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without state: the scheduler's rate wins over the logged one and over the config's (named in a
    /// note); the config's fills when the checkpoint has none; a rate of 0 gives no threshold.
    #[test]
    fn learning_rate_without_state() {
        let given =
            OptimizerInput { lr: Some(0.5), source: "config [run.stability]".into(), ..Default::default() };
        let both = LrSources { scheduler_last_lr: Some(vec![0.02, 0.01]), logged: Some((6, 0.03)) };
        let a = apply(&given, Found::NoState(both), &[]);
        assert_eq!(a.input.lr, Some(0.02));
        assert!(a.input.source.contains("lr: scheduler state"), "{}", a.input.source);
        assert!(a.notes[0].starts_with("lr = 0.5 from config [run.stability] differs"), "{:?}", a.notes);
        let logged = LrSources { scheduler_last_lr: None, logged: Some((6, 0.03)) };
        assert_eq!(apply(&given, Found::NoState(logged), &[]).input.lr, Some(0.03));
        let a = apply(&given, Found::NoState(LrSources::default()), &[]);
        assert_eq!(a.input.lr, Some(0.5));
        assert!(a.notes.is_empty() && a.input.source.contains("lr: config [run.stability]"));
        let zero = LrSources { scheduler_last_lr: Some(vec![0.0]), logged: None };
        let a = apply(&OptimizerInput::default(), Found::NoState(zero), &[]);
        assert_eq!(a.input.lr, None);
        assert!(a.notes.iter().any(|n| n.contains("learning rate is 0")), "{:?}", a.notes);
        let a = apply(&given, Found::Unreadable("x.pt: bad pickle".into()), &[]);
        assert_eq!((a.input.lr, a.notes.len()), (Some(0.5), 1));
    }
}
