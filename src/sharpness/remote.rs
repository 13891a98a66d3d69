//! A [`HessianSpace`] whose vectors live in a model worker (see `docs/worker-protocol.md`): every
//! operation is one protocol request (`new_vector`, `dots`, `combine`, `multiply`, `free`, `hvp`, `loss`,
//! `gradient`, `read_vector`), so Lanczos, Hutchinson and SLQ drive any backend — the TorchScript worker,
//! the Python worker — without d numbers crossing the pipe per step.
//!
//! [`WorkerSpace::open`] sends `hessian_open` at the worker's current parameters (a bound checkpoint, or
//! a grid point after `set_point`); [`WorkerSpace::close`] sends `hessian_close`, which frees every
//! vector and puts the module back at the centre. A space [`WorkerSpace::stop_on`] a [`Cancel`] token
//! checks it before each HVP, loss and gradient: a cancelled run stops there with [`Cancelled`].

use crate::cancel::{Cancel, Cancelled};
use crate::workers::Worker;
use landscaped_maths::curvature::measures::ParamSlot;
use landscaped_maths::curvature::space::{HessianSpace, Init, ParamSubset, Vector};
use landscaped_protocol::messages::{BindRules, VectorInit, f64_bytes};

/// The Hessian of the worker's loss at its current parameters, over `subset`.
pub(crate) struct WorkerSpace<'w> {
    w: &'w mut Worker,
    dim: usize,
    layout: Vec<ParamSlot>,
    centre: Vector,
    hvps: usize,
    cancel: Option<Cancel>,
}

impl<'w> WorkerSpace<'w> {
    /// Opens Hessian work in the worker (`hessian_open`).
    pub fn open(w: &'w mut Worker, subset: ParamSubset) -> anyhow::Result<WorkerSpace<'w>> {
        let (dim, layout, centre) = w.hessian_open(subset.name())?;
        let layout: Vec<ParamSlot> = layout
            .into_iter()
            .map(|s| ParamSlot { name: s.name, shape: s.shape, offset: s.offset })
            .collect();
        let covered: usize = layout.iter().map(ParamSlot::len).sum();
        anyhow::ensure!(
            covered == dim,
            "{}: the Hessian layout covers {covered} values, its dimension is {dim}",
            w.what()
        );
        Ok(WorkerSpace { w, dim, layout, centre, hvps: 0, cancel: None })
    }

    /// The space stopping with [`Cancelled`] at its next HVP, loss or gradient once `cancel` is.
    pub fn stop_on(mut self, cancel: &Cancel) -> WorkerSpace<'w> {
        self.cancel = Some(cancel.clone());
        self
    }

    /// The safe point before each model evaluation.
    fn check(&self) -> Result<(), Cancelled> {
        self.cancel.as_ref().map_or(Ok(()), Cancel::check)
    }

    /// A vector from per-parameter tensors of a safetensors file (`new_vector {kind: tensors}`), bound
    /// by `bind` (e.g. a preconditioner's scaling, a stored Lanczos vector): read by the worker.
    pub fn load_tensors(&mut self, path: &std::path::Path, bind: &BindRules) -> anyhow::Result<Vector> {
        Ok(self.w.new_vector(VectorInit::Tensors { path: path.to_path_buf(), bind: bind.clone() })?)
    }

    /// Ends the Hessian work (`hessian_close`): the worker frees every vector.
    pub fn close(self) -> anyhow::Result<()> {
        Ok(self.w.hessian_close()?)
    }
}

impl HessianSpace for WorkerSpace<'_> {
    fn dim(&self) -> usize {
        self.dim
    }
    fn layout(&self) -> &[ParamSlot] {
        &self.layout
    }
    fn centre(&self) -> Vector {
        self.centre
    }
    fn new_vector(&mut self, init: Init) -> anyhow::Result<Vector> {
        let init = match init {
            Init::Zeros => VectorInit::Zeros,
            Init::Gaussian { seed } => VectorInit::Gaussian { seed },
            Init::Rademacher { seed } => VectorInit::Rademacher { seed },
            Init::Copy(of) => VectorInit::Copy { of },
            Init::Values(v) => {
                anyhow::ensure!(
                    v.len() == self.dim,
                    "values: {} numbers, the space has {}",
                    v.len(),
                    self.dim
                );
                VectorInit::Values { data: f64_bytes(&v) }
            }
        };
        Ok(self.w.new_vector(init)?)
    }
    fn dots(&mut self, x: Vector, ys: &[Vector]) -> anyhow::Result<Vec<f64>> {
        Ok(self.w.dots(x, ys)?)
    }
    fn combine(&mut self, y: Vector, scale: f64, terms: &[(f64, Vector)]) -> anyhow::Result<()> {
        Ok(self.w.combine(y, scale, terms)?)
    }
    fn free(&mut self, vs: &[Vector]) -> anyhow::Result<()> {
        Ok(self.w.free(vs)?)
    }
    fn multiply(&mut self, y: Vector, x: Vector) -> anyhow::Result<()> {
        Ok(self.w.multiply(y, x)?)
    }
    fn hvp(&mut self, v: Vector, out: Vector) -> anyhow::Result<()> {
        self.check()?;
        self.w.hvp(v, out)?;
        self.hvps += 1;
        Ok(())
    }
    fn loss(&mut self, at: Option<Vector>) -> anyhow::Result<f64> {
        self.check()?;
        Ok(self.w.loss_at(at)?)
    }
    fn gradient(&mut self, at: Option<Vector>, out: Vector) -> anyhow::Result<f64> {
        self.check()?;
        Ok(self.w.gradient(at, out)?)
    }
    fn read(&mut self, v: Vector) -> anyhow::Result<Vec<f64>> {
        let data = self.w.read_vector(v)?;
        anyhow::ensure!(
            data.len() == self.dim,
            "{}: vector {v} has {} values, the space {}",
            self.w.what(),
            data.len(),
            self.dim
        );
        Ok(data)
    }
    fn applications(&self) -> usize {
        self.hvps
    }
}
