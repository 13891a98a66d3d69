//! Spectral health of every layer of a checkpoint, from the weights alone: WeightWatcher's ESD,
//! power-law α and norm metrics (the maths in `landscaped_maths::spectra`), one layer at a time.
//!
//! [`checkpoint_spectra`] reads each layer's tensor once (one tensor, its f64 slice and the SVD's
//! workspace in memory at a time). A layer whose exact SVD is above the size budget (`max_flops`) is
//! approximated (`landscaped_maths::spectra::approx`: exact top-k by Lanczos + SLQ for the rest; its
//! record says `exact = false` and names the method and k), or, with `approximate = false`, refused by
//! name with the reason in the record: nothing is approximated silently. Used by `landscaped spectra`,
//! the daemon's spectra job and `landscaped plot spectra`.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use globset::GlobMatcher;
use landscaped_formats::Checkpoint;
use landscaped_maths::spectra::layers::{Filter, LayerPlan, plan};
use landscaped_maths::spectra::metrics::{LayerSpectrum, Summary, layer_spectrum, summary};
use landscaped_maths::spectra::{ApproxOptions, Esd, approximate_layer, esd};
use serde::{Deserialize, Serialize};

use crate::store::spectra::{RefusedLayer, SpectraRecord};

/// A layer whose exact SVD costs more than this (rf · N · M², see [`LayerPlan::flops`]) is approximated
/// (or refused): 2e11 admits one 4096 × 11008 matrix (1.8e11, an LLaMA-7B MLP projection).
pub const DEFAULT_MAX_FLOPS: f64 = 2.0e11;

/// How to measure.
#[derive(Clone, Debug)]
pub struct Options {
    pub filter: Filter,
    /// Threads for each SVD.
    pub threads: usize,
    /// Layers whose SVD costs more (see [`LayerPlan::flops`]) are approximated (or refused).
    pub max_flops: f64,
    /// Approximate layers over `max_flops` (false: refuse them by name).
    pub approximate: bool,
    /// How (k, SLQ probes and steps).
    pub approx: ApproxOptions,
    /// Only tensors whose name matches.
    pub layer: Option<GlobMatcher>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            filter: Filter::default(),
            threads: 1,
            max_flops: DEFAULT_MAX_FLOPS,
            approximate: true,
            approx: ApproxOptions::default(),
            layer: None,
        }
    }
}

/// A tensor that is a layer by its shape but was not measured, and why (one line a user can act on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub name: String,
    pub why: String,
}

/// The spectra of one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointSpectra {
    pub layers: Vec<LayerSpectrum>,
    /// Layers over the size budget or whose values could not be used (non-finite, unreadable).
    pub refused: Vec<Refused>,
    pub summary: Summary,
    pub seconds: f64,
    /// `stop` cut it short: some layers were not measured.
    pub stopped: bool,
}

/// The layers of `ck` WeightWatcher's filter keeps (and the `layer` glob, if any), with their plans.
///
/// A tied weight (an alias of a listed tensor, see `Checkpoint::aliases`) is a layer of its own, as
/// WeightWatcher, which walks the model's modules, measures it: `lm_head.weight` tied to `wte.weight` is
/// measured under both names (the same values, read from the owner).
pub fn layer_plans(ck: &Checkpoint, opts: &Options) -> Vec<(usize, String, LayerPlan)> {
    let listed = ck.float_tensors().map(|(i, t)| (i, t.name.clone()));
    let aliases = ck.aliases.iter().filter_map(|a| {
        let i = ck.index_of(&a.owner)?;
        ck.tensors[i].dtype.is_float().then(|| (i, a.name.clone()))
    });
    listed
        .chain(aliases.collect::<Vec<_>>())
        .filter(|(_, name)| opts.layer.as_ref().is_none_or(|g| g.is_match(name)))
        .filter_map(|(i, name)| plan(&name, &ck.tensors[i].shape, &opts.filter).ok().map(|p| (i, name, p)))
        .collect()
}

/// Every layer's ESD, fit and metrics; `each` sees every layer's ESD (the plot keeps one). `stop` is
/// asked before each layer: once it says true the remaining layers are refused as "stopped" and
/// [`CheckpointSpectra::stopped`] is set (the daemon's shutdown; such a result is not stored).
pub fn checkpoint_spectra_with(
    ck: &Checkpoint,
    opts: &Options,
    stop: &dyn Fn() -> bool,
    mut each: impl FnMut(&str, &Esd),
) -> CheckpointSpectra {
    let start = Instant::now();
    let (mut layers, mut refused, mut stopped) = (Vec::new(), Vec::new(), false);
    for (index, name, p) in layer_plans(ck, opts) {
        stopped = stopped || stop();
        if stopped {
            refused.push(Refused { name, why: "stopped before it was measured".into() });
            continue;
        }
        let over = p.flops() > opts.max_flops;
        if over && !opts.approximate {
            refused.push(Refused {
                name,
                why: format!(
                    "exact SVD of {} slice(s) of {:?} costs {:.1e} flops, above the budget {:.1e} (raise max_flops, or allow the approximation)",
                    p.rf,
                    p.slice_shape(),
                    p.flops(),
                    opts.max_flops
                ),
            });
            continue;
        }
        let values = match ck.read(index) {
            Ok(v) => v,
            Err(e) => {
                refused.push(Refused { name, why: format!("could not read it: {e}") });
                continue;
            }
        };
        let measured = if over {
            approximate_layer(&name, &p, &values, opts.threads, opts.max_flops, &opts.approx)
        } else {
            esd(&p, &values, opts.threads).map(|e| (layer_spectrum(&name, &p, &e), e))
        };
        drop(values);
        match measured {
            Ok((l, e)) => {
                each(&name, &e);
                layers.push(l);
            }
            Err(why) => refused.push(Refused { name, why }),
        }
    }
    let summary = summary(&layers);
    CheckpointSpectra { layers, refused, summary, seconds: start.elapsed().as_secs_f64(), stopped }
}

/// [`checkpoint_spectra_with`] to the end, without looking at the ESDs.
pub fn checkpoint_spectra(ck: &Checkpoint, opts: &Options) -> CheckpointSpectra {
    checkpoint_spectra_with(ck, opts, &|| false, |_, _| {})
}

/// The store record of `spectra` measured on the checkpoint at `path` (run, step).
pub fn record(run: &str, step: u64, path: &str, spectra: CheckpointSpectra, threads: usize) -> SpectraRecord {
    SpectraRecord {
        run: run.to_string(),
        step,
        checkpoint: path.to_string(),
        layers: spectra.layers,
        refused: spectra.refused.into_iter().map(|r| RefusedLayer { name: r.name, why: r.why }).collect(),
        summary: Some(spectra.summary),
        threads,
        seconds: spectra.seconds,
        computed_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// Opens the checkpoint at `path`, measures it and returns its record; None when `stop` cut it short.
pub fn measure_until(
    run: &str,
    step: u64,
    path: &Path,
    opts: &Options,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<Option<SpectraRecord>> {
    let ck = Checkpoint::open(path).with_context(|| format!("opening checkpoint {}", path.display()))?;
    let s = checkpoint_spectra_with(&ck, opts, stop, |_, _| {});
    if s.stopped {
        return Ok(None);
    }
    Ok(Some(record(run, step, &path.display().to_string(), s, opts.threads)))
}

/// [`measure_until`] to the end.
pub fn measure(run: &str, step: u64, path: &Path, opts: &Options) -> anyhow::Result<SpectraRecord> {
    let ck = Checkpoint::open(path).with_context(|| format!("opening checkpoint {}", path.display()))?;
    let s = checkpoint_spectra(&ck, opts);
    Ok(record(run, step, &path.display().to_string(), s, opts.threads))
}
