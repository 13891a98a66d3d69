//! A loss-landscape slice computed through the app's runner in a fresh store, the way the worker tests
//! drive it (no run, step or trajectory; never cancelled; progress ignored).
#![allow(dead_code)]

use landscaped::landscape::runner::{PlaneSpec, SliceRequest, SliceRun, run_slice};
use landscaped::store::Store;
use landscaped::store::slices::DirectionSource;
use landscaped::workers::ModelContract;
use std::sync::atomic::AtomicBool;

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
    };
    run_slice(&store, req, &AtomicBool::new(false), &mut |_, _| {}, &mut |_, _| {}).unwrap()
}
