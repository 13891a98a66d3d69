//! `landscaped-worker bench MODEL_DIR CHECKPOINT SUBSAMPLE BATCH_SIZE TIMED THREADS`: the baseline the
//! benchmarks compare the protocol against — the same model work inside one process, no protocol:
//! median seconds per Hessian-vector product (double backward over every parameter, as `hvp`), and
//! median seconds per grid point (`set_point` + evaluation along a filter-normalized random direction,
//! as `evaluate_points`). Prints one line of JSON. Used by scripts/bench_sharpness.sh and bench_slice.sh.

use crate::model::directions::{parameter_list, random_directions};
use crate::model::hvp::{ModelHessian, ParamSubset};
use crate::model::{BindOptions, Model, ModelSpec, checkpoint_state, set_threads};
use anyhow::{Context, Result, anyhow};
use landscaped_formats::Checkpoint;
use landscaped_maths::directions::{Ignore, Normalization, RandomDirections};
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark with the positional arguments (after `bench`); returns the JSON line.
pub fn run(args: &[String]) -> Result<String> {
    let [model_dir, checkpoint, subsample, batch, timed, threads] = args else {
        return Err(anyhow!(
            "usage: landscaped-worker bench MODEL_DIR CHECKPOINT SUBSAMPLE BATCH_SIZE TIMED THREADS"
        ));
    };
    let num =
        |s: &str, what: &str| s.parse::<usize>().with_context(|| format!("{what}: {s:?} is not a count"));
    let (subsample, batch, timed, threads) = (
        num(subsample, "SUBSAMPLE")?,
        num(batch, "BATCH_SIZE")?,
        num(timed, "TIMED")?.max(1),
        num(threads, "THREADS")?,
    );
    set_threads(threads.max(1));
    let export = landscaped_protocol::export_dir::read_export_dir(Path::new(model_dir))?;
    let mut spec = ModelSpec::new(&export.model, &export.eval_data);
    if let Some(l) = export.loss {
        spec.loss = l;
    }
    spec.batch_size = batch.max(1);
    spec.subsample = (subsample > 0).then_some(subsample);
    let mut model = Model::load(&spec)?;
    let ck = Checkpoint::open(Path::new(checkpoint)).map_err(|e| anyhow!("checkpoint {checkpoint}: {e}"))?;
    let centre = checkpoint_state(&model, &ck, &BindOptions::default())?;
    model.set_state(&centre)?;

    // Grid points along x, as a 1D slice does them.
    let dirs = RandomDirections {
        seed: 3,
        norm: Normalization::Filter,
        ignore: Ignore::Biasbn,
        params: parameter_list(&model),
        orthogonalize: false,
    };
    let (dx, _) = random_directions(&model, &centre, &dirs, false)?;
    let plane = model.plane(&centre, &dx, None)?;
    let mut point = Vec::with_capacity(timed);
    for i in 0..=timed {
        let a = -1.0 + 2.0 * i as f64 / timed as f64;
        let t0 = Instant::now();
        model.set_point(&plane, a, 0.0)?;
        model.evaluate()?;
        if i > 0 {
            point.push(t0.elapsed().as_secs_f64()); // the first is a warm-up
        }
    }
    model.set_state(&centre)?;

    let mut h = ModelHessian::new(&mut model, ParamSubset::All)?;
    let dim = h.layout().iter().map(|s| s.len()).sum::<usize>();
    let v: Vec<f64> = (0..dim).map(|i| ((i as f64) * 0.618).sin()).collect();
    let mut out = vec![0.0; dim];
    h.hvp(&v, &mut out)?;
    let mut hvp = Vec::with_capacity(timed);
    for _ in 0..timed {
        let t0 = Instant::now();
        h.hvp(&v, &mut out)?;
        hvp.push(t0.elapsed().as_secs_f64());
    }
    h.restore()?;
    Ok(format!(
        "{{\"dim\": {dim}, \"seconds_per_hvp\": {}, \"seconds_per_point\": {}, \"timed\": {timed}, \"threads\": {threads}}}",
        median(hvp),
        median(point)
    ))
}
