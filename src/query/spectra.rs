//! The `spectra` query: every layer's spectral metrics of a run's checkpoints
//! (`landscaped spectra --run R [--step S] [--layer GLOB] [--summary]`), from the records the daemon's
//! spectra job or `landscaped spectra --compute` wrote. One row per layer and step, or with `--summary`
//! one row per step: mean α, fraction of layers with α < 2, mean α_weighted. Each row says whether its
//! eigenvalues are exact (`exact`, `method`: `svd`, or the approximation's name and k for a layer over
//! the SVD budget); layers refused are rows with `exact = false` and the reason instead of metrics.

use super::norms::tensor_matcher;
use super::runs::require_run;
use crate::store::{RunStepRecord, Store, spectra as records};
use crate::table::Table;
use landscaped_maths::spectra::metrics::{LayerSpectrum, Summary};
use serde_json::{Value, json};

#[derive(clap::Args, Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpectraArgs {
    /// The run.
    #[arg(long)]
    pub run: String,
    /// Only this checkpoint's step.
    #[arg(long)]
    pub step: Option<u64>,
    /// Only layers whose tensor name matches this glob (e.g. '*.mlp.*').
    #[arg(long)]
    pub layer: Option<String>,
    /// One row per step: mean α, fraction of layers with α < 2, mean α_weighted.
    #[arg(long)]
    pub summary: bool,
}

/// The columns of a layer row (also `landscaped spectra --checkpoint`'s).
pub const LAYER_COLUMNS: [&str; 20] = [
    "step",
    "layer",
    "N",
    "M",
    "rf",
    "num_evals",
    "alpha",
    "xmin",
    "D",
    "sigma",
    "num_pl_spikes",
    "alpha_weighted",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "log_alpha_norm",
    "entropy",
    "warning",
    "exact",
    "method",
];

pub const SUMMARY_COLUMNS: [&str; 7] =
    ["step", "layers", "mean_alpha", "frac_alpha_lt_2", "mean_alpha_weighted", "refused", "exact"];

/// A layer's row.
pub fn layer_row(step: Value, l: &LayerSpectrum) -> Vec<Value> {
    let num = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    vec![
        step,
        json!(l.name),
        json!(l.plan.n),
        json!(l.plan.m),
        json!(l.plan.rf),
        json!(l.num_evals),
        num(l.fit.alpha),
        num(l.fit.xmin),
        num(l.fit.d),
        num(l.fit.sigma),
        json!(l.fit.num_pl_spikes),
        num(l.metrics.alpha_weighted),
        num(l.metrics.log_norm),
        num(l.metrics.log_spectral_norm),
        num(l.metrics.stable_rank),
        num(l.metrics.log_alpha_norm),
        num(l.metrics.entropy),
        json!(warning(l)),
        json!(l.exact),
        json!(l.method()),
    ]
}

/// WeightWatcher's warning, and for an approximated layer whose xmin is the lowest of its top-k
/// candidates, that the exact fit may reach lower.
fn warning(l: &LayerSpectrum) -> String {
    let w = l.fit.warning();
    match &l.approx {
        Some(a) if a.xmin_at_edge => {
            let edge = format!("xmin at the edge of the top {} (exact fit may differ)", a.k);
            if w.is_empty() { edge } else { format!("{w}; {edge}") }
        }
        _ => w.to_string(),
    }
}

/// A refused layer's row: no metrics, `exact = false`, the reason in `warning`.
pub fn refused_row(step: Value, name: &str, why: &str) -> Vec<Value> {
    let mut row = vec![step, json!(name)];
    row.extend(std::iter::repeat_n(Value::Null, LAYER_COLUMNS.len() - 5));
    row.push(json!(format!("refused: {why}")));
    row.push(json!(false));
    row.push(json!("refused"));
    row
}

pub fn summary_row(step: Value, s: &Summary, refused: usize) -> Vec<Value> {
    let num = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    vec![
        step,
        json!(s.layers),
        num(s.mean_alpha),
        num(s.frac_alpha_below_2),
        num(s.mean_alpha_weighted),
        json!(refused),
        json!(s.exact && refused == 0),
    ]
}

/// The daemon's entry for the `spectra` query.
pub(crate) fn spectra_query(store: &Store, args: Value) -> anyhow::Result<Table> {
    spectra_table(store, &serde_json::from_value(args)?)
}

pub(crate) fn spectra_table(store: &Store, args: &SpectraArgs) -> anyhow::Result<Table> {
    require_run(store, &args.run)?;
    let recs: Vec<_> = records::SpectraRecord::list(store, &args.run)?
        .into_iter()
        .filter(|r| args.step.is_none_or(|s| s == r.step))
        .collect();
    if recs.is_empty() {
        anyhow::bail!(
            "no spectra recorded for run {:?}{} (enable [run.spectra] in the daemon, or run `landscaped spectra --run {} --compute`)",
            args.run,
            args.step.map(|s| format!(" at step {s}")).unwrap_or_default(),
            args.run
        );
    }
    let glob = args.layer.as_deref().map(tensor_matcher).transpose()?;
    let keep = |name: &str| glob.as_ref().is_none_or(|g| g.is_match(name));
    if args.summary {
        let mut t = Table::new(SUMMARY_COLUMNS);
        for r in &recs {
            let layers: Vec<LayerSpectrum> = r.layers.iter().filter(|l| keep(&l.name)).cloned().collect();
            let refused = r.refused.iter().filter(|x| keep(&x.name)).count();
            t.push(summary_row(json!(r.step), &landscaped_maths::spectra::summary(&layers), refused));
        }
        return Ok(t);
    }
    let mut t = Table::new(LAYER_COLUMNS);
    for r in &recs {
        for l in r.layers.iter().filter(|l| keep(&l.name)) {
            t.push(layer_row(json!(r.step), l));
        }
        for x in r.refused.iter().filter(|x| keep(&x.name)) {
            t.push(refused_row(json!(r.step), &x.name, &x.why));
        }
    }
    Ok(t)
}
