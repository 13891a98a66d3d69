//! Optimizer-state telemetry at ingest: one pass over a checkpoint's optimizer state (formats'
//! [`OptimizerState`]), one bounded chunk of each state tensor at a time, into an
//! [`OptimizerRecord`]: per group the learning rate, betas, eps, weight decay and step; for Adam-family
//! states the effective step size η/(√v̂+ε) and the RMS of m̂/(√v̂+ε) (maths' `optimizer`); for SGD
//! with momentum the momentum buffer's norm; per tensor the same figures.
//!
//! Parameters are named where the layout names them; index-keyed states are mapped to names by the
//! checkpoint's own tensor order, checked by shape and taken only when unique (else they stay `#i`
//! and `names_note` says why). Unknown optimizers get their keys listed and no figures.

use crate::store::optimizer::{GroupFigures, OptimizerRecord, TensorFigures};
use landscaped_formats::{
    Checkpoint, CheckpointError, ChunkBuf, ChunkValues, OptimizerKind, OptimizerState, ParamShape,
};
use landscaped_maths::optimizer::{AdamConsts, AdamFigures, Figures, MomentumFigures};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Elements read per chunk (per tensor of a pair): 128 KiB of f32 each, so that a pair read from the
/// page cache is still in the core's L2 cache when the arithmetic reads it.
const CHUNK: usize = 1 << 15;

/// Elements of one work item: a tensor larger than this is cut into ranges of this size, handed out
/// to the threads like whole tensors and merged back in order (figures identical whatever the
/// threads: the same ranges, merged in the same order).
const RANGE: usize = 1 << 22;

/// The telemetry of `ck`'s optimizer state: `Ok(None)` when it has none.
pub fn optimizer_telemetry(
    ck: &Checkpoint,
    run: &str,
    step: u64,
) -> Result<Option<OptimizerRecord>, CheckpointError> {
    let Some(mut st) = OptimizerState::open(ck)? else { return Ok(None) };
    let order: Vec<ParamShape> = ck
        .float_tensors()
        .map(|(_, t)| ParamShape { name: t.name.clone(), shape: t.shape.clone() })
        .collect();
    let names_note = st.map_names(&order).err();
    Ok(Some(figures_of(&st, run, step, names_note)?))
}

/// One parameter's accumulated figures.
enum Acc {
    Adam(AdamFigures),
    Momentum(MomentumFigures),
    None,
}

/// The accumulators of every parameter of `st`, in order, computed on all cores: the work items
/// (each parameter's ranges of [`RANGE`] elements) are handed out in order to the threads, and each
/// parameter's ranges merged in order.
fn per_parameter(st: &OptimizerState) -> Result<Vec<Acc>, CheckpointError> {
    let items: Vec<(usize, usize, usize)> = (0..st.params.len())
        .flat_map(|k| {
            let n = adam_pair(st, k).map_or(0, |(_, mi, _, _)| st.tensors.tensors[mi].numel());
            let ranges = n.div_ceil(RANGE).max(1);
            (0..ranges).map(move |r| (k, r * RANGE, RANGE.min(n.saturating_sub(r * RANGE))))
        })
        .collect();
    let n = items.len();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(8).min(n.max(1));
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, Acc)>, CheckpointError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let (mut b1, mut b2) = (ChunkBuf::new(), ChunkBuf::new());
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(out);
                        }
                        let (k, start, len) = items[i];
                        out.push((i, accumulate(st, k, start, len, &mut b1, &mut b2)?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(st.tensors.malformed("a telemetry thread panicked"))))
            .collect()
    });
    let mut all: Vec<(usize, Acc)> = Vec::with_capacity(n);
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    // Each parameter's ranges, merged in order.
    let mut accs: Vec<Acc> = Vec::with_capacity(st.params.len());
    let mut last = usize::MAX;
    for (i, acc) in all {
        let k = items[i].0;
        if k != last {
            accs.push(acc);
            last = k;
            continue;
        }
        if let (Some(Acc::Adam(a)), Acc::Adam(b)) = (accs.last_mut(), &acc) {
            a.merge(b);
        }
    }
    Ok(accs)
}

/// Parameter `k`'s Adam constants and the indices of its `exp_avg` and `exp_avg_sq` (or
/// `max_exp_avg_sq` with amsgrad), with the second's key; None when it is not an Adam state with all
/// of them.
fn adam_pair(st: &OptimizerState, k: usize) -> Option<(AdamConsts, usize, usize, &'static str)> {
    if !st.kind.is_adam() {
        return None;
    }
    let p = &st.params[k];
    let h = &st.groups.get(p.group)?.hyper;
    let v_key = if h.amsgrad.unwrap_or(false) { "max_exp_avg_sq" } else { "exp_avg_sq" };
    let (beta1, beta2) = h.betas?;
    let c = AdamConsts {
        lr: st.lr(p.group)?,
        beta1,
        beta2,
        eps: h.eps?,
        step: p.step?,
        // DeepSpeed's Adam may run without it (its `bias_correction`).
        bias_correction: h.bias_correction.unwrap_or(true),
    };
    Some((c, p.tensor("exp_avg")?, p.tensor(v_key)?, v_key))
}

/// Parameter `k`'s accumulator over elements `from .. from + len` (Adam: its `exp_avg` and
/// `exp_avg_sq`) or whole (SGD: its momentum buffer), a bounded chunk at a time.
fn accumulate(
    st: &OptimizerState,
    k: usize,
    from: usize,
    len: usize,
    b1: &mut ChunkBuf,
    b2: &mut ChunkBuf,
) -> Result<Acc, CheckpointError> {
    let p = &st.params[k];
    if st.kind.is_adam() {
        let Some((c, mi, vi, v_key)) = adam_pair(st, k) else { return Ok(Acc::None) };
        if st.tensors.tensors[vi].numel() != st.tensors.tensors[mi].numel() {
            return Err(st
                .tensors
                .malformed(format!("state of '{}': exp_avg and {v_key} differ in size", p.param)));
        }
        let mut acc = AdamFigures::default();
        let (mut start, end) = (from, from + len);
        while start < end {
            let len = CHUNK.min(end - start);
            let m = b1.fill(&st.tensors, mi, start, len)?;
            let v = b2.fill(&st.tensors, vi, start, len)?;
            match (m, v) {
                (ChunkValues::F32(m), ChunkValues::F32(v)) => acc.push_f32(&c, m, v),
                (ChunkValues::F64(m), ChunkValues::F64(v)) => acc.push_f64(&c, m, v),
                (m, v) => acc.push(
                    &c,
                    (0..len).map(|i| m.get(i).unwrap_or(f64::NAN)),
                    (0..len).map(|i| v.get(i).unwrap_or(f64::NAN)),
                ),
            }
            start += len;
        }
        return Ok(Acc::Adam(acc));
    }
    if st.kind == OptimizerKind::Sgd
        && let Some(bi) = p.tensor("momentum_buffer")
    {
        let mut acc = MomentumFigures::default();
        st.tensors.read_chunks(bi, CHUNK * 4, |c| -> Result<(), CheckpointError> {
            acc.push((0..c.values.len()).map(|i| c.values.get(i).unwrap_or(f64::NAN)));
            Ok(())
        })?;
        return Ok(Acc::Momentum(acc));
    }
    Ok(Acc::None)
}

/// Every figure of `st`, in one pass over its tensors.
pub fn figures_of(
    st: &OptimizerState,
    run: &str,
    step: u64,
    names_note: Option<String>,
) -> Result<OptimizerRecord, CheckpointError> {
    let (group_keys, state_keys) = match &st.kind {
        OptimizerKind::Unknown { group_keys, state_keys } => (group_keys.clone(), state_keys.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    let mut groups: Vec<GroupFigures> = st
        .groups
        .iter()
        .enumerate()
        .map(|(g, gr)| GroupFigures {
            index: g,
            lr: st.lr(g),
            beta1: gr.hyper.betas.map(|b| b.0),
            beta2: gr.hyper.betas.map(|b| b.1),
            eps: gr.hyper.eps,
            weight_decay: gr.hyper.weight_decay,
            momentum: gr.hyper.momentum,
            step: None,
            params: gr.params.len() as u64,
            figures: Figures::default(),
        })
        .collect();
    let mut adam_groups: Vec<AdamFigures> = Vec::new();
    let mut mom_groups: Vec<MomentumFigures> = vec![MomentumFigures::default(); groups.len()];
    let mut adam_total = AdamFigures::default();
    let mut mom_total = MomentumFigures::default();
    let adam = st.kind.is_adam();
    if adam {
        adam_groups = vec![AdamFigures::default(); groups.len()];
    }
    // Every parameter's accumulators, on all cores (parameters handed out in order); merged below in
    // parameter order, so the figures are the same whatever the threads.
    let accs = per_parameter(st)?;
    let mut tensors = Vec::new();
    for (p, acc) in st.params.iter().zip(accs) {
        if let Some(g) = groups.get_mut(p.group) {
            g.step = match (g.step, p.step) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        let figures = match &acc {
            Acc::Adam(a) => {
                if let Some(g) = adam_groups.get_mut(p.group) {
                    g.merge(a);
                }
                adam_total.merge(a);
                a.figures()
            }
            Acc::Momentum(m) => {
                if let Some(g) = mom_groups.get_mut(p.group) {
                    g.merge(m);
                }
                mom_total.merge(m);
                m.figures()
            }
            Acc::None => Figures::default(),
        };
        tensors.push(TensorFigures { name: p.param.to_string(), group: p.group, step: p.step, figures });
    }
    for (g, gf) in groups.iter_mut().enumerate() {
        gf.figures = if adam {
            adam_groups[g].figures()
        } else if st.kind == OptimizerKind::Sgd {
            mom_groups[g].figures()
        } else {
            Figures::default()
        };
    }
    let total = if adam {
        adam_total.figures()
    } else if st.kind == OptimizerKind::Sgd {
        mom_total.figures()
    } else {
        Figures::default()
    };
    Ok(OptimizerRecord {
        run: run.to_string(),
        step,
        source: st.source.display().to_string(),
        kind: st.kind.name().to_string(),
        group_keys,
        state_keys,
        scheduler_last_lr: st.lr_sources.scheduler_last_lr.clone(),
        logged_lr: st.lr_sources.logged,
        names_note,
        groups,
        tensors,
        total,
    })
}
