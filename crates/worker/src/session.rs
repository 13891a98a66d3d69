//! One worker's state and the answer to every operation of the worker protocol: the loaded model,
//! states and Hessian-space vectors addressed by handles, the plane being evaluated.
//!
//! Errors are classified into the protocol's kinds where the operation says what went wrong (a contract
//! that doesn't load, a checkpoint that doesn't fit, a non-finite loss, out of memory); the message is
//! the model code's own one-line description.

use crate::model::directions::{parameter_list, pca_direction, random_directions};
use crate::model::hvp::{ModelHessian, ParamSubset};
use crate::model::{
    BindOptions, Loss, Model, ModelSpec, Plane, SlotKind, State, checkpoint_state, set_threads,
};
use landscaped_formats::Checkpoint;
use landscaped_maths::curvature::measures::Objective;
use landscaped_maths::curvature::operator::LinearOperator;
use landscaped_maths::directions::{
    Ignore, Normalization, RandomDirections, cosine, interpolation_direction,
};
use landscaped_protocol::messages::{
    BindRules, ErrorKind, GridPoint, Handle, LayoutSlot, ModelInfo, Op, PROTOCOL_VERSION, Reply, SlotInfo,
    StateSource, VectorInit, WireContract, bytes_f64, capability, f64_bytes,
};
use std::collections::HashMap;

/// Hessian work opened by `hessian_open`: the subset, its dimension and the centre vector.
struct Hessian {
    subset: ParamSubset,
    dim: usize,
    centre: Handle,
    layout: Vec<LayoutSlot>,
}

#[derive(Default)]
pub struct Session {
    model: Option<Model>,
    states: HashMap<Handle, State>,
    vectors: HashMap<Handle, Vec<f64>>,
    plane: Option<Plane>,
    hessian: Option<Hessian>,
    next: Handle,
    /// Set by `shutdown`.
    pub done: bool,
}

/// An error with its protocol kind.
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

fn fail(kind: ErrorKind, e: impl std::fmt::Display) -> Failure {
    Failure { kind, message: e.to_string() }
}

/// Classifies an error from model code by what its message says (the model code's messages are ours).
fn classify(default: ErrorKind, e: anyhow::Error) -> Failure {
    let m = format!("{e:#}");
    let lower = m.to_ascii_lowercase();
    let kind = if lower.contains("out of memory")
        || lower.contains("can't allocate")
        || lower.contains("cannot allocate")
    {
        ErrorKind::OutOfMemory
    } else if lower.contains("not finite") || lower.contains("non-finite") || lower.contains(" nan") {
        ErrorKind::NonFinite
    } else if lower.contains("shape mismatch") {
        ErrorKind::ShapeMismatch
    } else {
        default
    };
    Failure { kind, message: m }
}

fn bad(e: impl std::fmt::Display) -> Failure {
    fail(ErrorKind::BadRequest, e)
}

fn subset_of(s: &str) -> Result<ParamSubset, Failure> {
    match s {
        "all" => Ok(ParamSubset::All),
        "matrices" => Ok(ParamSubset::Matrices),
        other => Err(bad(format!("unknown parameter subset {other:?} (expected all or matrices)"))),
    }
}

fn bind_options(b: &BindRules) -> BindOptions {
    BindOptions {
        strip_prefixes: b.strip_prefixes.clone(),
        mapping: b.mapping.clone(),
        allow_unexpected: b.allow_unexpected,
    }
}

/// The devices this worker can use.
pub fn devices() -> Vec<String> {
    let mut d = vec!["cpu".to_string()];
    if tch::Cuda::is_available() {
        d.extend((0..tch::Cuda::device_count()).map(|i| format!("cuda:{i}")));
    }
    d
}

impl Session {
    fn handle(&mut self) -> Handle {
        self.next += 1;
        self.next
    }

    fn model(&mut self) -> Result<&mut Model, Failure> {
        self.model.as_mut().ok_or_else(|| bad("no model loaded: send load_model first"))
    }

    fn state(&self, h: Handle) -> Result<&State, Failure> {
        self.states.get(&h).ok_or_else(|| {
            if self.vectors.contains_key(&h) {
                bad(format!("handle {h} is a Hessian-space vector, not a model state"))
            } else {
                bad(format!("unknown state handle {h}"))
            }
        })
    }

    fn vector(&self, h: Handle) -> Result<&Vec<f64>, Failure> {
        self.vectors.get(&h).ok_or_else(|| {
            if self.states.contains_key(&h) {
                bad(format!("handle {h} is a model state, not a Hessian-space vector"))
            } else {
                bad(format!("unknown vector handle {h}"))
            }
        })
    }

    fn hessian(&self) -> Result<&Hessian, Failure> {
        self.hessian.as_ref().ok_or_else(|| bad("no Hessian work open: send hessian_open first"))
    }

    /// Answers one operation.
    pub fn handle_op(&mut self, op: Op) -> Result<Reply, Failure> {
        match op {
            Op::Hello { .. } => Ok(hello()),
            Op::LoadModel { contract } => self.load_model(&contract),
            Op::LoadState { source, bind } => self.load_state(&source, &bind),
            Op::ReadState { state } => {
                let flat: Vec<f64> = self.state(state)?.iter().flatten().map(|&x| x as f64).collect();
                Ok(Reply::Values { data: f64_bytes(&flat) })
            }
            Op::SetState { state } => {
                let s = self.state(state)?.clone();
                self.model()?.set_state(&s).map_err(|e| classify(ErrorKind::Internal, e))?;
                Ok(Reply::Ok)
            }
            Op::Evaluate => {
                let e = self.model()?.evaluate().map_err(|e| classify(ErrorKind::Internal, e))?;
                Ok(Reply::Evaluation { loss: e.loss, accuracy: e.accuracy, samples: e.samples })
            }
            Op::RandomDirections { about, seed, norm, ignore, count, orthogonalize } => {
                let norm: Normalization = norm.parse().map_err(|e: String| bad(e))?;
                let ignore: Ignore = ignore.parse().map_err(|e: String| bad(e))?;
                if !(1..=2).contains(&count) {
                    return Err(bad(format!("random_directions: count must be 1 or 2, not {count}")));
                }
                let centre = self.state(about)?.clone();
                let model = self.model()?;
                let spec =
                    RandomDirections { seed, norm, ignore, params: parameter_list(model), orthogonalize };
                let (dx, dy) = random_directions(model, &centre, &spec, count == 2)
                    .map_err(|e| classify(ErrorKind::Internal, e))?;
                let cos = dy.as_ref().map(|dy| cosine(&dx, dy));
                let mut handles = vec![self.handle()];
                self.states.insert(handles[0], dx);
                if let Some(dy) = dy {
                    let h = self.handle();
                    self.states.insert(h, dy);
                    handles.push(h);
                }
                Ok(Reply::Directions { handles, cosine: cos })
            }
            Op::Difference { from, to } => {
                let d = interpolation_direction(self.state(from)?, self.state(to)?);
                let h = self.handle();
                self.states.insert(h, d);
                Ok(Reply::Handle { handle: h })
            }
            Op::SetPlane { centre, dx, dy } => {
                let c = self.state(centre)?.clone();
                let x = self.state(dx)?.clone();
                let y = match dy {
                    Some(h) => Some(self.state(h)?.clone()),
                    None => None,
                };
                let plane = self
                    .model()?
                    .plane(&c, &x, y.as_deref())
                    .map_err(|e| classify(ErrorKind::BadRequest, e))?;
                self.plane = Some(plane);
                Ok(Reply::Ok)
            }
            Op::SetPoint { a, b } => {
                let plane = self.plane.take().ok_or_else(|| bad("no plane: send set_plane first"))?;
                let r = self.model()?.set_point(&plane, a, b);
                self.plane = Some(plane);
                r.map_err(|e| classify(ErrorKind::Internal, e))?;
                Ok(Reply::Ok)
            }
            Op::EvaluatePoints { .. } => Err(bad("evaluate_points is answered by the streaming loop")),
            Op::HessianOpen { subset } => self.hessian_open(&subset),
            Op::HessianClose => {
                // Every operation puts the parameters back when it ends (loss and gradient move them to
                // θ' only for the evaluation), so the module is at the centre: only the vectors go.
                self.hessian.take().ok_or_else(|| bad("no Hessian work open"))?;
                self.vectors.clear();
                Ok(Reply::Ok)
            }
            Op::NewVector { init } => self.new_vector(init),
            Op::ReadVector { v } => Ok(Reply::Values { data: f64_bytes(self.vector(v)?) }),
            Op::Dots { x, ys } => {
                let xv = self.vector(x)?;
                let mut out = Vec::with_capacity(ys.len());
                for y in &ys {
                    let yv = self.vector(*y)?;
                    out.push(xv.iter().zip(yv).map(|(a, b)| a * b).sum());
                }
                Ok(Reply::Numbers { values: out })
            }
            Op::Combine { y, scale, terms } => {
                let mut yv =
                    self.vectors.remove(&y).ok_or_else(|| bad(format!("unknown vector handle {y}")))?;
                let r = (|| {
                    if scale != 1.0 {
                        yv.iter_mut().for_each(|v| *v *= scale);
                    }
                    for (c, x) in &terms {
                        let xv = if *x == y {
                            return Err(bad("combine: y may not appear among the terms"));
                        } else {
                            self.vector(*x)?
                        };
                        for (a, b) in yv.iter_mut().zip(xv) {
                            *a += c * b;
                        }
                    }
                    Ok(())
                })();
                self.vectors.insert(y, yv);
                r.map(|_| Reply::Ok)
            }
            Op::Multiply { y, x } => {
                if x == y {
                    return Err(bad("multiply: y and x must be distinct vectors"));
                }
                let xv = self.vector(x)?.clone();
                let yv = self.vectors.get_mut(&y).ok_or_else(|| bad(format!("unknown vector handle {y}")))?;
                if xv.len() != yv.len() {
                    return Err(bad(format!("multiply: {} values by {}", yv.len(), xv.len())));
                }
                yv.iter_mut().zip(&xv).for_each(|(a, b)| *a *= b);
                Ok(Reply::Ok)
            }
            Op::Free { handles } => {
                for h in handles {
                    self.states.remove(&h);
                    self.vectors.remove(&h);
                }
                Ok(Reply::Ok)
            }
            Op::Hvp { v, out } => {
                let subset = self.hessian()?.subset;
                let vv = self.vector(v)?.clone();
                self.vector(out)?;
                let model = self.model.as_mut().ok_or_else(|| bad("no model loaded"))?;
                let mut mh =
                    ModelHessian::new(model, subset).map_err(|e| classify(ErrorKind::Internal, e))?;
                let mut res = vec![0.0; vv.len()];
                mh.hvp(&vv, &mut res).map_err(|e| classify(ErrorKind::Internal, e))?;
                drop(mh);
                self.vectors.insert(out, res);
                Ok(Reply::Ok)
            }
            Op::Loss { at } => {
                let theta = self.point(at)?;
                let subset = self.hessian()?.subset;
                let model = self.model.as_mut().ok_or_else(|| bad("no model loaded"))?;
                let mut mh =
                    ModelHessian::new(model, subset).map_err(|e| classify(ErrorKind::Internal, e))?;
                let l = mh.loss(&theta).map_err(|e| classify(ErrorKind::Internal, e))?;
                Ok(Reply::Number { value: l })
            }
            Op::Gradient { at, out } => {
                let theta = self.point(at)?;
                let subset = self.hessian()?.subset;
                self.vector(out)?;
                let model = self.model.as_mut().ok_or_else(|| bad("no model loaded"))?;
                let mut mh =
                    ModelHessian::new(model, subset).map_err(|e| classify(ErrorKind::Internal, e))?;
                let mut g = vec![0.0; theta.len()];
                let l = mh.loss_grad(&theta, &mut g).map_err(|e| classify(ErrorKind::Internal, e))?;
                drop(mh);
                self.vectors.insert(out, g);
                Ok(Reply::Number { value: l })
            }
            Op::Shutdown => {
                self.done = true;
                Ok(Reply::Ok)
            }
        }
    }

    /// θ' for `loss`/`gradient`: a vector, or the centre.
    fn point(&self, at: Option<Handle>) -> Result<Vec<f64>, Failure> {
        let h = self.hessian()?;
        let v = self.vector(at.unwrap_or(h.centre))?;
        if v.len() != h.dim {
            return Err(bad(format!("vector has {} values, the Hessian's space {}", v.len(), h.dim)));
        }
        Ok(v.clone())
    }

    fn load_model(&mut self, c: &WireContract) -> Result<Reply, Failure> {
        if self.model.is_some() {
            return Err(bad("a model is already loaded in this worker"));
        }
        let model = c.model.as_ref().ok_or_else(|| {
            fail(
                ErrorKind::BadContract,
                "the TorchScript worker needs `model` (a TorchScript file) in the contract",
            )
        })?;
        let eval = c.eval_data.as_ref().ok_or_else(|| {
            fail(
                ErrorKind::BadContract,
                "the TorchScript worker needs `eval_data` (safetensors with inputs and targets)",
            )
        })?;
        if c.factory.is_some() {
            return Err(fail(
                ErrorKind::BadContract,
                "a factory contract needs the Python worker (--backend python); this is the TorchScript worker",
            ));
        }
        let mut spec = ModelSpec::new(model, eval);
        if let Some(l) = &c.loss {
            spec.loss = l.parse::<Loss>().map_err(|e| fail(ErrorKind::BadContract, e))?;
        }
        spec.batch_size = c.batch_size;
        spec.subsample = c.subsample;
        spec.device = c.device.clone();
        if let Some(n) = c.threads {
            set_threads(n);
        }
        let m = Model::load(&spec).map_err(|e| classify(ErrorKind::BadContract, e))?;
        let info = model_info(&m);
        self.model = Some(m);
        Ok(Reply::Model { info })
    }

    fn load_state(&mut self, source: &StateSource, bind: &BindRules) -> Result<Reply, Failure> {
        let opts = bind_options(bind);
        let path = match source {
            StateSource::Checkpoint { path } | StateSource::Safetensors { path } => path.clone(),
        };
        let model = self.model.as_ref().ok_or_else(|| bad("no model loaded: send load_model first"))?;
        let state = if bind.missing_zero {
            pca_direction(model, &path, &opts).map_err(|e| classify(ErrorKind::BadCheckpoint, e))?
        } else {
            let ck = Checkpoint::open(&path).map_err(|e| fail(ErrorKind::BadCheckpoint, e))?;
            checkpoint_state(model, &ck, &opts).map_err(|e| classify(ErrorKind::BadCheckpoint, e))?
        };
        let h = self.handle();
        self.states.insert(h, state);
        Ok(Reply::Handle { handle: h })
    }

    fn hessian_open(&mut self, subset: &str) -> Result<Reply, Failure> {
        if self.hessian.is_some() {
            return Err(bad("Hessian work is already open: send hessian_close first"));
        }
        let subset = subset_of(subset)?;
        let model = self.model()?;
        let mh = ModelHessian::new(model, subset).map_err(|e| classify(ErrorKind::Internal, e))?;
        let layout: Vec<LayoutSlot> = mh
            .layout()
            .iter()
            .map(|s| LayoutSlot { name: s.name.clone(), shape: s.shape.clone(), offset: s.offset })
            .collect();
        let centre_v = mh.center().to_vec();
        let dim = LinearOperator::dim(&mh);
        drop(mh);
        let centre = self.handle();
        self.vectors.insert(centre, centre_v);
        self.hessian = Some(Hessian { subset, dim, centre, layout: layout.clone() });
        Ok(Reply::Hessian { dim, layout, centre })
    }

    fn new_vector(&mut self, init: VectorInit) -> Result<Reply, Failure> {
        let dim = self.hessian()?.dim;
        let v = match init {
            VectorInit::Zeros => vec![0.0; dim],
            VectorInit::Gaussian { seed } => torch_draws(seed, dim, false),
            VectorInit::Rademacher { seed } => torch_draws(seed, dim, true),
            VectorInit::Copy { of } => self.vector(of)?.clone(),
            VectorInit::Values { data } => {
                let v = bytes_f64(&data).ok_or_else(|| bad("values: not a whole number of f64"))?;
                if v.len() != dim {
                    return Err(bad(format!("values: {} numbers, the Hessian's space has {dim}", v.len())));
                }
                v
            }
            VectorInit::Tensors { path, bind } => self.tensors_vector(&path, &bind)?,
        };
        let h = self.handle();
        self.vectors.insert(h, v);
        Ok(Reply::Handle { handle: h })
    }

    /// A Hessian-space vector from per-parameter tensors of a safetensors file (`new_vector {kind:
    /// tensors}`; docs/worker-protocol.md).
    fn tensors_vector(&self, path: &std::path::Path, bind: &BindRules) -> Result<Vec<f64>, Failure> {
        let h = self.hessian()?;
        let model = self.model.as_ref().ok_or_else(|| bad("no model loaded"))?;
        let opts = bind_options(bind);
        let p = path.display();
        let bad_file = |m: String| fail(ErrorKind::BadCheckpoint, format!("{p}: {m}"));
        let tensors = landscaped_formats::safetensors_file::load_float_tensors(path)
            .map_err(|e| fail(ErrorKind::BadCheckpoint, format!("{e:#}")))?;
        let mut v = vec![0.0; h.dim];
        let mut seen = vec![false; h.layout.len()];
        for (name, shape, values) in tensors {
            let target = opts.module_name(&name);
            if let Some(i) = h.layout.iter().position(|s| s.name == target) {
                let slot = &h.layout[i];
                if slot.shape != shape {
                    return Err(bad_file(format!(
                        "tensor {name:?} has shape {shape:?}, the parameter {target:?} {:?}",
                        slot.shape
                    )));
                }
                for (o, x) in v[slot.offset..slot.offset + values.len()].iter_mut().zip(&values) {
                    *o = f64::from(*x);
                }
                seen[i] = true;
            } else if !bind.allow_unexpected
                && !model.slots().iter().any(|s| s.name == target)
                && !model.ignored_buffers().contains(&target)
            {
                return Err(bad_file(format!("tensor {name:?} is not in the model")));
            }
        }
        if !bind.missing_zero
            && let Some(i) = seen.iter().position(|s| !s)
        {
            return Err(bad_file(format!("no tensor for the parameter {:?}", h.layout[i].name)));
        }
        Ok(v)
    }

    /// Streams `point` answers for `evaluate_points` through `send`; stops at the first error.
    pub fn evaluate_points(
        &mut self,
        points: &[GridPoint],
        mut send: impl FnMut(Reply) -> std::io::Result<()>,
    ) -> Result<std::io::Result<()>, Failure> {
        let plane = self.plane.take().ok_or_else(|| bad("no plane: send set_plane first"))?;
        let r = (|| {
            let model = self.model()?;
            for p in points {
                model.set_point(&plane, p.a, p.b).map_err(|e| classify(ErrorKind::Internal, e))?;
                let e = model.evaluate().map_err(|e| classify(ErrorKind::Internal, e))?;
                if let Err(io) = send(Reply::Point { index: p.index, loss: e.loss, accuracy: e.accuracy }) {
                    return Ok(Err(io));
                }
            }
            Ok(Ok(()))
        })();
        self.plane = Some(plane);
        r
    }
}

/// `dim` draws from libtorch's CPU generator after `manual_seed(seed)`: N(0, 1) (`randn`), or ±1
/// (`randint(0, 2)` mapped 0 → −1), as f64.
fn torch_draws(seed: u64, dim: usize, rademacher: bool) -> Vec<f64> {
    use tch::{Device, Kind, Tensor};
    crate::model::rng::with_seed(seed, || {
        let t = if rademacher {
            Tensor::randint(2, [dim as i64], (Kind::Int64, Device::Cpu)).to_kind(Kind::Double) * 2.0 - 1.0
        } else {
            Tensor::randn([dim as i64], (Kind::Float, Device::Cpu)).to_kind(Kind::Double)
        };
        Vec::<f64>::try_from(&t).unwrap_or_default()
    })
}

fn model_info(m: &Model) -> ModelInfo {
    let spec = m.spec();
    ModelInfo {
        slots: m
            .slots()
            .iter()
            .map(|s| SlotInfo {
                name: s.name.clone(),
                shape: s.shape.clone(),
                parameter: s.kind == SlotKind::Parameter,
            })
            .collect(),
        ignored_buffers: m.ignored_buffers().to_vec(),
        samples: m.samples(),
        batches: m.batch_count(),
        loss: m.loss_kind().name().to_string(),
        has_accuracy: m.loss_kind().has_accuracy(),
        device: format!("{:?}", m.device()).to_lowercase().replace("cuda(", "cuda:").replace(')', ""),
        source: format!("{} (TorchScript) on {}", spec.model.display(), spec.eval_data.display()),
    }
}

/// The handshake's answer.
pub fn hello() -> Reply {
    let mut capabilities = vec![
        capability::READ_CHECKPOINTS.to_string(),
        capability::HVP.to_string(),
        capability::TORCH_RNG.to_string(),
    ];
    if tch::Cuda::is_available() {
        capabilities.push(capability::CUDA.to_string());
    }
    Reply::Hello {
        protocol: PROTOCOL_VERSION,
        backend: "torchscript".into(),
        backend_version: format!(
            "libtorch 2.13 via tch 0.26 (torch_cuda linked: {})",
            crate::model::device::torch_cuda_linked()
        ),
        devices: devices(),
        capabilities,
        pid: std::process::id(),
    }
}
