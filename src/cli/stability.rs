//! `landscaped stability`: is the run at the edge of stability? One checkpoint's λmax, preconditioned λ1
//! (Adam) and critical sharpness against the optimizer's thresholds, stored and printed (`--list`: what is
//! stored); `landscaped plot stability` draws the ratios over steps with the 1.0 line.

use super::Cli;
use super::checkpoint_flags::CheckpointFlags;
use super::client::records_or_open;
use crate::plot;
use crate::query::records::ByRun;
use crate::stability::optimizer::OptimizerInput;
use crate::stability::runner::{StabilityOptions, StabilityRequest, stability_at, warm_dir};
use crate::store::RunStepRecord;
use crate::store::stability::StabilityRecord;
use crate::table::Table;
use anyhow::bail;
use landscaped_maths::curvature::lanczos::LanczosOptions;
use landscaped_maths::stability::critical::LineSearchOptions;
use serde_json::json;
use std::path::PathBuf;

pub use super::slice::ModelArgs;

/// The optimizer on the command line: fills only what the checkpoint's own optimizer state lacks (the
/// state wins; a disagreeing value is named in a note).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OptimizerArgs {
    /// The optimizer: sgd, adam, adamw (any other name: listed, no threshold).
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Learning rate η at the checkpoint.
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum μ, dampening τ, Nesterov.
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    #[arg(long, default_value_t = 0.0)]
    pub dampening: f64,
    #[arg(long)]
    pub nesterov: bool,
    /// Adam/AdamW β1,β2.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [0.9, 0.999])]
    pub betas: Vec<f64>,
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f64,
    #[arg(long)]
    pub amsgrad: bool,
    /// Adam's step count t (default: the checkpoint's step).
    #[arg(long)]
    pub adam_step: Option<u64>,
    /// Expert/testing: Adam's second moment v (exp_avg_sq) as a safetensors file of per-parameter
    /// tensors named like the model's parameters.
    #[arg(long)]
    pub exp_avg_sq: Option<PathBuf>,
}

impl OptimizerArgs {
    pub fn input(&self) -> anyhow::Result<OptimizerInput> {
        let &[b1, b2] = self.betas.as_slice() else { bail!("--betas: give two values, e.g. 0.9,0.999") };
        Ok(OptimizerInput {
            optimizer: self.optimizer.clone(),
            lr: self.lr,
            momentum: self.momentum,
            dampening: self.dampening,
            nesterov: self.nesterov,
            betas: (b1, b2),
            eps: self.eps,
            amsgrad: self.amsgrad,
            adam_step: self.adam_step,
            exp_avg_sq: self.exp_avg_sq.clone(),
            source: "command line".into(),
            ..Default::default()
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct StabilityArgs {
    #[command(flatten)]
    pub at: CheckpointFlags,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optimizer: OptimizerArgs,
    /// Lanczos: relative residual tolerance and step budget (one HVP per step).
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
    #[arg(long, default_value_t = 100)]
    pub max_steps: usize,
    /// Start cold (no warm start from the previous checkpoint's top vector).
    #[arg(long)]
    pub no_warm_start: bool,
    /// Skip the critical-sharpness line search.
    #[arg(long)]
    pub no_critical: bool,
    /// Line search: most forward passes.
    #[arg(long, default_value_t = 12)]
    pub max_forward: usize,
    /// Don't store the result.
    #[arg(long)]
    pub no_store: bool,
}

pub fn run(cli: &Cli, a: &StabilityArgs) -> anyhow::Result<()> {
    a.at.validate()?;
    if a.at.list {
        let by = a.at.list_run()?;
        let recs =
            records_or_open(cli, "stability", &by, |s| crate::query::records::run_step_records(s, &by))?;
        if recs.is_empty() {
            bail!(
                "no stability results stored for run {:?} (compute them with `landscaped stability --run ...`)",
                by.run
            );
        }
        table(&recs).print(cli.format)?;
        return Ok(());
    }
    a.model.validate_flags()?;
    let input = a.optimizer.input()?;
    input.check()?;
    let opts = StabilityOptions {
        lanczos: LanczosOptions { max_steps: a.max_steps, tol: a.tol, top_k: 1, seed: 0 },
        warm_start: !a.no_warm_start,
        critical: !a.no_critical,
        line_search: LineSearchOptions { max_forward: a.max_forward, ..Default::default() },
    };
    let at = a.at.choose(cli, "stability", a.no_store)?;
    // The warm start is the run's (its previous checkpoint's top vectors): none for a file alone.
    let warm = (!a.no_warm_start && !at.run.is_empty()).then(|| warm_dir(&cli.data_dir(), &at.run));
    let req = StabilityRequest {
        run: &at.run,
        step: at.step,
        checkpoint: &at.path,
        input: &input,
        opts: &opts,
        warm,
    };
    let rec = stability_at(&a.model, &req, "stability", &crate::cancel::Cancel::new())?;
    if let Some(store) = at.store_for_result() {
        StabilityRecord::put(store, &rec)?;
        store.flush()?;
    }
    table(std::slice::from_ref(&rec)).print(cli.format)?;
    for n in &rec.notes {
        eprintln!("note: {n}");
    }
    Ok(())
}

/// One row per quantity: run, step, quantity, value, threshold, ratio, cost, convention.
pub fn table(recs: &[StabilityRecord]) -> Table {
    let mut t = Table::new(["run", "step", "quantity", "value", "threshold", "ratio", "cost", "note"]);
    for r in recs {
        let mut row = |q: &str, v: f64, thr: Option<f64>, ratio: Option<f64>, cost: String, note: String| {
            t.push(vec![
                json!(r.run),
                json!(r.step),
                json!(q),
                json!(v),
                json!(thr),
                json!(ratio),
                json!(cost),
                json!(note),
            ]);
        };
        let total = format!("{:.3} s, {} HVPs, {} forward passes", r.seconds, r.hvps, r.forward_passes);
        row("loss", r.base_loss, None, None, total, format!("{} params, {}", r.dim, r.optimizer));
        let conv = |e: &landscaped_maths::curvature::lanczos::Extremes, warm: bool| {
            format!(
                "{} HVPs{}{}",
                e.hvps,
                if warm { ", warm start" } else { "" },
                if e.converged { String::new() } else { format!(", NOT CONVERGED (tol {})", e.tol) }
            )
        };
        let quantities: [(&str, Option<f64>, String); 3] = [
            (
                "lambda_max",
                r.hessian.as_ref().map(|e| e.lambda_max),
                r.hessian.as_ref().map_or(String::new(), |e| conv(e, r.warm_hessian)),
            ),
            (
                "preconditioned_lambda_1",
                r.preconditioned.as_ref().map(|e| e.lambda_max),
                r.preconditioned.as_ref().map_or(String::new(), |e| conv(e, r.warm_preconditioned)),
            ),
            (
                "critical_sharpness",
                r.critical.as_ref().map(|c| c.lambda_c),
                r.critical.as_ref().map_or(String::new(), |c| format!("{} forward passes", c.forward_passes)),
            ),
        ];
        for (q, v, cost) in quantities {
            let Some(v) = v else { continue };
            match r.row(q) {
                Some(a) => row(q, v, Some(a.threshold), Some(a.ratio), cost, a.convention.clone()),
                None => row(q, v, None, None, cost, "no threshold (see notes)".into()),
            }
        }
    }
    t
}

#[derive(clap::Args, Debug)]
pub struct PlotStabilityArgs {
    /// Run.
    #[arg(long)]
    pub run: String,
    /// Output file: .svg or .png.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
}

/// `landscaped plot stability`: each stored ratio over steps, with the 1.0 line (the edge of stability).
pub(crate) fn plot_stability(cli: &Cli, a: &PlotStabilityArgs) -> anyhow::Result<()> {
    let by = ByRun { run: a.run.clone() };
    let recs: Vec<StabilityRecord> =
        records_or_open(cli, "stability", &by, |s| crate::query::records::run_step_records(s, &by))?;
    if recs.iter().all(|r| r.rows.is_empty()) {
        bail!(
            "run {:?}: no stability ratios stored (compute them with `landscaped stability --run ...`)",
            a.run
        );
    }
    let mut series = Vec::new();
    for (q, label) in [
        ("lambda_max", "λmax / threshold"),
        ("preconditioned_lambda_1", "λ1(P⁻¹H) / threshold"),
        ("critical_sharpness", "λc / (2/η)"),
    ] {
        let pts: Vec<(f64, f64)> =
            recs.iter().filter_map(|r| r.row(q).map(|a| (r.step as f64, a.ratio))).collect();
        if !pts.is_empty() {
            series.push(plot::Series::new(label, pts));
        }
    }
    let (first, last) = (recs[0].step as f64, recs[recs.len() - 1].step as f64);
    series.push(
        plot::Series::new("edge of stability (1.0)", vec![(first, 1.0), (last.max(first + 1.0), 1.0)])
            .dashed(),
    );
    let chart = plot::LineChart {
        title: format!("{}: stability ratio (measured / threshold)", a.run),
        x_label: "step".into(),
        y_label: "ratio".into(),
        series,
        ..Default::default()
    };
    plot::line_chart(&a.out, &chart)?;
    Ok(())
}
