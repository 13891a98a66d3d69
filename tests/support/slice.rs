//! The model contracts of the worker tests (the digits CNN on either backend) and a loss-landscape slice
//! computed through the app's runner in a fresh store (no run, step or trajectory; never cancelled).
#![allow(dead_code)]

use super::paths::venv_python;
use landscaped::cancel::Cancel;
use landscaped::landscape::runner::{PlaneSpec, SliceRequest, SliceRun, run_slice};
use landscaped::store::Store;
use landscaped::store::slices::DirectionSource;
use landscaped::workers::ModelContract;
use std::path::Path;

/// The TorchScript contract for tests/python/slice_reference.py's digits CNN in `dir` (its export in
/// `model/`), batches of 64, `workers` worker processes and `workers` intra-op threads.
pub fn torchscript_contract(dir: &Path, workers: usize) -> ModelContract {
    ModelContract {
        model: Some(dir.join("model/model.pt")),
        eval_data: Some(dir.join("model/eval.safetensors")),
        batch_size: 64,
        threads: Some(workers),
        workers: Some(workers),
        ..Default::default()
    }
}

/// The Python-backend contract for the factory `factory` (a module on the worker's PYTHONPATH) in the
/// venv's Python, batches of 64, `workers` worker processes and `workers` intra-op threads.
pub fn python_contract(factory: &str, workers: usize) -> ModelContract {
    ModelContract {
        factory: Some(factory.into()),
        python: Some(venv_python()),
        batch_size: 64,
        threads: Some(workers),
        workers: Some(workers),
        ..Default::default()
    }
}

/// Computes the slice of `contract` over `plane` at `xs` × `ys` (the stored direction description
/// follows the plane; `prefix` distinguishes its signature) in a store in a temporary folder.
pub fn slice_in_fresh_store(
    contract: &ModelContract,
    plane: PlaneSpec,
    xs: Vec<f64>,
    ys: Vec<f64>,
    prefix: &str,
) -> SliceRun {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let directions = match &plane {
        PlaneSpec::Random { dirs, .. } => DirectionSource::Random(dirs.clone()),
        PlaneSpec::Interpolation { to, .. } => {
            DirectionSource::Interpolation { to: to.display().to_string() }
        }
        PlaneSpec::Files { .. } => unreachable!("the tests' slices are random or interpolation planes"),
    };
    let req = SliceRequest {
        contract,
        plane,
        xs,
        ys,
        run: None,
        step: None,
        directions,
        trajectory: vec![],
        signature_prefix: prefix.into(),
        skip_if_complete: false,
        persist_every: 4,
        label: "test".into(),
        recorded_as: None,
    };
    run_slice(&store, req, &Cancel::new(), &mut |_, _| {}, &mut |_, _| {}).unwrap()
}
