//! Hessian-vector products of the evaluation loss by double backward through the TorchScript module:
//! Hv = ∇_θ(∇_θL · v), with L the mean loss over the evaluation set — each batch's mean loss weighted by
//! its size / N (an average, not the reference code's sum over batches, so eigenvalues don't scale with
//! the batch count). Also the loss and its gradient at any parameter vector, for the sharpness measures.
//!
//! [`ModelHessian`] binds a [`Model`] at its current state: it implements
//! [`LinearOperator`](landscaped_maths::curvature::operator::LinearOperator) (the Hessian) and
//! [`Objective`](landscaped_maths::curvature::measures::Objective) (loss and gradient at θ'), over all trainable
//! parameters or only those with ≥ 2 dimensions ([`ParamSubset`]). Parameters outside the subset stay
//! fixed. Whatever θ' an evaluation writes into the module, the starting parameters are written back when
//! the `ModelHessian` is dropped (or by [`ModelHessian::restore`]).
//!
//! The TorchScript graph optimizer is switched off ([`prepare_thread`]) before every product: it has
//! produced wrong second derivatives. Errors: no trainable parameter reachable from the loss, a
//! non-finite loss or product — never a silent number.

use crate::model::net::{Model, prepare_thread, short_err};
use anyhow::{Result, anyhow, bail};
use landscaped_maths::curvature::measures::{Objective, ParamSlot};
use landscaped_maths::curvature::operator::LinearOperator;
use tch::{Kind, Tensor};

pub use landscaped_maths::curvature::space::ParamSubset;

/// The Hessian of the evaluation loss (and the loss itself) over a subset of a model's parameters.
pub struct ModelHessian<'a> {
    model: &'a mut Model,
    /// Indices into `model.params`.
    selected: Vec<usize>,
    layout: Vec<ParamSlot>,
    center: Vec<f64>,
    dim: usize,
    count: usize,
    /// Whether the module currently holds `center`.
    at_center: bool,
}

fn terr(what: &str) -> impl Fn(tch::TchError) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {}", short_err(e))
}

impl<'a> ModelHessian<'a> {
    /// Binds the model at its current parameters.
    pub fn new(model: &'a mut Model, subset: ParamSubset) -> Result<ModelHessian<'a>> {
        prepare_thread();
        let n_params = model.params.len();
        if n_params == 0 {
            bail!("the model has no trainable parameters");
        }
        let mut selected = Vec::new();
        let mut layout = Vec::new();
        let mut offset = 0;
        for i in 0..n_params {
            let slot = &model.slots()[i];
            if subset == ParamSubset::Matrices && slot.shape.len() < 2 {
                continue;
            }
            if !model.params[i].requires_grad() {
                continue;
            }
            layout.push(ParamSlot { name: slot.name.clone(), shape: slot.shape.clone(), offset });
            offset += slot.numel();
            selected.push(i);
        }
        if selected.is_empty() {
            bail!("no trainable parameter in the subset {subset:?} (all: {n_params} tensors)");
        }
        let mut center = Vec::with_capacity(offset);
        for &i in &selected {
            let flat =
                model.params[i].detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).flatten(0, -1);
            let v = Vec::<f64>::try_from(&flat).map_err(terr("reading a parameter"))?;
            center.extend(v);
        }
        let h = ModelHessian { model, selected, layout, center, dim: offset, count: 0, at_center: true };
        Ok(h)
    }

    /// Parameter tensors in the subset, in module order.
    pub fn layout(&self) -> &[ParamSlot] {
        &self.layout
    }

    fn params(&self) -> Vec<Tensor> {
        self.selected.iter().map(|&i| self.model.params[i].shallow_clone()).collect()
    }

    /// Splits a flat vector into tensors shaped like the selected parameters, on the model's device.
    fn split(&self, v: &[f64]) -> Vec<Tensor> {
        self.layout
            .iter()
            .map(|s| {
                let part: Vec<f32> = v[s.offset..s.offset + s.len()].iter().map(|&x| x as f32).collect();
                let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
                Tensor::from_slice(&part).view(shape.as_slice()).to_device(self.model.device)
            })
            .collect()
    }

    /// Writes a flat parameter vector into the selected parameters.
    fn write(&mut self, theta: &[f64]) -> Result<()> {
        if theta.len() != self.dim {
            bail!("parameter vector has {} values, the subset {}", theta.len(), self.dim);
        }
        let vals = self.split(theta);
        let _g = tch::no_grad_guard();
        for (p, v) in self.params().into_iter().zip(&vals) {
            let mut p = p;
            p.f_copy_(v).map_err(terr("writing parameters"))?;
        }
        self.at_center = theta == self.center.as_slice();
        Ok(())
    }

    /// Writes the starting parameters back into the module.
    pub fn restore(&mut self) -> Result<()> {
        if !self.at_center {
            let c = std::mem::take(&mut self.center);
            let r = self.write(&c);
            self.center = c;
            r?;
            self.at_center = true;
        }
        Ok(())
    }

    /// Concatenates per-parameter tensors (undefined = zeros) into `out`.
    fn gather(&self, ts: &[Tensor], out: &mut [f64]) -> Result<()> {
        for (s, t) in self.layout.iter().zip(ts) {
            let dst = &mut out[s.offset..s.offset + s.len()];
            if !t.defined() {
                dst.iter_mut().for_each(|x| *x = 0.0);
                continue;
            }
            let flat = t.to_device(tch::Device::Cpu).to_kind(Kind::Double).flatten(0, -1).contiguous();
            let v = Vec::<f64>::try_from(&flat).map_err(terr("reading a gradient"))?;
            dst.copy_from_slice(&v);
        }
        Ok(())
    }

    /// The mean loss of batch `b` with grad, checked finite, and its weight n_b / N.
    fn batch(&self, b: usize) -> Result<(Tensor, f64)> {
        let loss = self.model.batch_loss(b)?;
        let l = loss.double_value(&[]);
        if !l.is_finite() {
            bail!(
                "the loss is {l} on evaluation batch {b} (non-finite loss: the Hessian is undefined there)"
            );
        }
        if !loss.requires_grad() {
            bail!("no trainable parameter is reachable from the loss (it does not depend on the parameters)");
        }
        let n = self.model.batches[b].0.size()[0] as f64;
        Ok((loss, n / self.model.samples() as f64))
    }

    /// First-order gradients of one batch's loss; error if none of the parameters is reached.
    fn grads(&self, loss: &Tensor, params: &[Tensor], create_graph: bool) -> Result<Vec<Tensor>> {
        let g = Tensor::f_run_backward(&[loss], params, create_graph, create_graph)
            .map_err(terr("backward pass"))?;
        if g.iter().all(|t| !t.defined()) {
            bail!("no trainable parameter in the subset is reachable from the loss");
        }
        Ok(g)
    }

    /// Hv, averaged over the evaluation set (batch means weighted by batch size).
    pub fn hvp(&mut self, v: &[f64], out: &mut [f64]) -> Result<()> {
        prepare_thread();
        if v.len() != self.dim || out.len() != self.dim {
            bail!("HVP: vector has {} values, the parameter subset {}", v.len(), self.dim);
        }
        let vs = self.split(v);
        let params = self.params();
        let mut acc: Vec<Option<Tensor>> = (0..params.len()).map(|_| None).collect();
        for b in 0..self.model.batches.len() {
            let (loss, w) = self.batch(b)?;
            let g = self.grads(&loss, &params, true)?;
            let mut dot: Option<Tensor> = None;
            for (gi, vi) in g.iter().zip(&vs) {
                if gi.defined() {
                    let term = (gi * vi).sum(Kind::Float);
                    dot = Some(match dot {
                        None => term,
                        Some(d) => d + term,
                    });
                }
            }
            let Some(dot) = dot else { continue };
            if !dot.requires_grad() {
                continue; // the gradient does not depend on the parameters: this batch's H is 0
            }
            let hv =
                Tensor::f_run_backward(&[&dot], &params, false, false).map_err(terr("double backward"))?;
            for (a, h) in acc.iter_mut().zip(hv) {
                if h.defined() {
                    let h = h.to_kind(Kind::Double) * w;
                    *a = Some(match a.take() {
                        None => h,
                        Some(x) => x + h,
                    });
                }
            }
        }
        let acc: Vec<Tensor> = acc.into_iter().map(|a| a.unwrap_or_else(Tensor::new)).collect();
        self.gather(&acc, out)?;
        self.count += 1;
        if let Some(i) = out.iter().position(|x| !x.is_finite()) {
            bail!("the Hessian-vector product has a non-finite entry (index {i})");
        }
        Ok(())
    }

    /// L(θ') with grad ∇L(θ') (averaged like [`ModelHessian::hvp`]).
    pub fn gradient(&mut self, theta: &[f64], grad: &mut [f64]) -> Result<f64> {
        prepare_thread();
        self.write(theta)?;
        let params = self.params();
        let mut acc: Vec<Option<Tensor>> = (0..params.len()).map(|_| None).collect();
        let mut loss_sum = 0.0;
        for b in 0..self.model.batches.len() {
            let (loss, w) = self.batch(b)?;
            loss_sum += w * loss.double_value(&[]);
            let g = self.grads(&loss, &params, false)?;
            for (a, h) in acc.iter_mut().zip(g) {
                if h.defined() {
                    let h = h.to_kind(Kind::Double) * w;
                    *a = Some(match a.take() {
                        None => h,
                        Some(x) => x + h,
                    });
                }
            }
        }
        let acc: Vec<Tensor> = acc.into_iter().map(|a| a.unwrap_or_else(Tensor::new)).collect();
        self.gather(&acc, grad)?;
        if grad.iter().any(|x| !x.is_finite()) {
            bail!("the gradient has a non-finite entry");
        }
        Ok(loss_sum)
    }

    /// L(θ') without grad.
    pub fn loss_at(&mut self, theta: &[f64]) -> Result<f64> {
        self.write(theta)?;
        let l = self.model.evaluate()?.loss;
        if !l.is_finite() {
            bail!("the loss is {l} at a perturbed point");
        }
        Ok(l)
    }
}

impl Drop for ModelHessian<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            tracing::error!("could not restore the model's parameters: {e}");
        }
    }
}

impl LinearOperator for ModelHessian<'_> {
    fn dim(&self) -> usize {
        self.dim
    }
    fn apply(&mut self, v: &[f64], out: &mut [f64]) -> Result<()> {
        if !self.at_center {
            self.restore()?;
        }
        self.hvp(v, out)
    }
    fn applications(&self) -> usize {
        self.count
    }
}

impl Objective for ModelHessian<'_> {
    fn layout(&self) -> &[ParamSlot] {
        &self.layout
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn center(&self) -> &[f64] {
        &self.center
    }
    fn loss(&mut self, theta: &[f64]) -> Result<f64> {
        self.loss_at(theta)
    }
    fn loss_grad(&mut self, theta: &[f64], grad: &mut [f64]) -> Result<f64> {
        self.gradient(theta, grad)
    }
}
