//! Moving the module across a slice: θ = θ* + a·δ + b·η written into the bound tensors in place, with
//! centre and directions held on the device once (never re-read per grid point).

use super::net::{Model, shape_i64, short_err};
use anyhow::{Result, anyhow, bail};
use tch::Tensor;

/// A centre and one or two directions, as device tensors in slot order. All-zero directions are skipped.
pub struct Plane {
    center: Vec<Tensor>,
    dx: Vec<Option<Tensor>>,
    dy: Vec<Option<Tensor>>,
}

impl Model {
    /// Holds `center` and the directions (one f32 vector per slot) on the model's device.
    pub fn plane(&self, center: &[Vec<f32>], dx: &[Vec<f32>], dy: Option<&[Vec<f32>]>) -> Result<Plane> {
        let slots = self.slots();
        let check = |what: &str, v: &[Vec<f32>]| -> Result<()> {
            if v.len() != slots.len() {
                bail!("{what} has {} tensors, the model {} slots", v.len(), slots.len());
            }
            for (s, t) in slots.iter().zip(v) {
                if s.numel() != t.len() {
                    bail!("{what}: {} has {} values, the module's tensor {}", s.name, t.len(), s.numel());
                }
            }
            Ok(())
        };
        check("centre", center)?;
        check("x direction", dx)?;
        if let Some(dy) = dy {
            check("y direction", dy)?;
        }
        let dev = self.device;
        let to = |i: usize, v: &[f32]| {
            Tensor::from_slice(v).view(shape_i64(&slots[i].shape).as_slice()).to_device(dev)
        };
        let dir = |v: &[Vec<f32>]| -> Vec<Option<Tensor>> {
            v.iter().enumerate().map(|(i, t)| (t.iter().any(|&x| x != 0.0)).then(|| to(i, t))).collect()
        };
        Ok(Plane {
            center: center.iter().enumerate().map(|(i, t)| to(i, t)).collect(),
            dx: dir(dx),
            dy: match dy {
                Some(dy) => dir(dy),
                None => (0..slots.len()).map(|_| None).collect(),
            },
        })
    }

    /// Writes θ* + a·δ + b·η into the module (f32, in that order of operations).
    pub fn set_point(&mut self, plane: &Plane, a: f64, b: f64) -> Result<()> {
        let _g = tch::no_grad_guard();
        let tensors: Vec<Tensor> =
            self.params.iter().chain(self.buffers.iter()).map(|t| t.shallow_clone()).collect();
        for (i, mut t) in tensors.into_iter().enumerate() {
            t.f_copy_(&plane.center[i]).map_err(|e| anyhow!("moving the model: {}", short_err(e)))?;
            if let Some(d) = &plane.dx[i] {
                let _ = t.f_add_(&(d * a)).map_err(|e| anyhow!("moving the model: {}", short_err(e)))?;
            }
            if let Some(d) = &plane.dy[i] {
                let _ = t.f_add_(&(d * b)).map_err(|e| anyhow!("moving the model: {}", short_err(e)))?;
            }
        }
        Ok(())
    }
}
