//! Gaussian draws from libtorch's CPU generator, so that a seed gives the same numbers here as
//! `torch.manual_seed(seed); torch.randn(shape)` gives in Python (same generator, same draw order).

use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// libtorch's default CPU generator is process-global: draws for one direction set must not interleave.
static GENERATOR: Mutex<()> = Mutex::new(());

/// After `manual_seed(seed)`, one `randn(shape)` (f32, CPU) per shape of every group in turn (the x
/// direction's shapes, then the y direction's), returned flat.
pub fn normal_draws(seed: u64, groups: &[&[Vec<usize>]]) -> Vec<Vec<Vec<f32>>> {
    let _lock = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(seed as i64);
    groups
        .iter()
        .map(|shapes| {
            shapes
                .iter()
                .map(|s| {
                    let shape: Vec<i64> = s.iter().map(|&d| d as i64).collect();
                    let t = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).flatten(0, -1);
                    Vec::<f32>::try_from(&t).unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

/// Runs `f` right after `manual_seed(seed)` on libtorch's CPU generator, holding it so that no other
/// draw interleaves (e.g. Gaussian or Rademacher start vectors drawn by a worker).
pub fn with_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let _lock = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(seed as i64);
    f()
}
