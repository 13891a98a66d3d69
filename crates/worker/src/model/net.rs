//! The loaded model: a TorchScript module in eval mode, its slots (parameters then float buffers) bound as
//! tensors, the evaluation set cut into batches on the device, and the loss. Evaluation is without grad,
//! the loss averaged over samples (each batch weighted by its size), accuracy for classification losses.

use super::Loss;
use super::binding::{Slot, SlotKind};
use super::shim;
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

/// What to load: the three things of the model contract plus evaluation settings.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// TorchScript file (scripted or traced), e.g. `model.pt` written by examples/landscaped_export.py.
    pub model: PathBuf,
    /// safetensors file with `inputs` and `targets`.
    pub eval_data: PathBuf,
    pub loss: Loss,
    /// Samples per forward pass.
    pub batch_size: usize,
    /// Use only the first N samples of the evaluation set (the export helper saves them shuffled).
    pub subsample: Option<usize>,
    /// `cpu` (default) or `cuda`, `cuda:N`.
    pub device: String,
}

impl ModelSpec {
    pub fn new(model: &Path, eval_data: &Path) -> ModelSpec {
        ModelSpec {
            model: model.to_path_buf(),
            eval_data: eval_data.to_path_buf(),
            loss: Loss::CrossEntropy,
            batch_size: 256,
            subsample: None,
            device: "cpu".into(),
        }
    }
}

/// Loss and accuracy on the evaluation set.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub loss: f64,
    /// Fraction correct, for classification losses.
    pub accuracy: Option<f64>,
    pub samples: usize,
}

/// Parses `cpu`, `cuda`, `cuda:N` without asking whether the device exists (config validation).
pub fn device_from_name(s: &str) -> Result<Device> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    match s.strip_prefix("cuda") {
        Some("") => Ok(Device::Cuda(0)),
        Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Ok(Device::Cuda(n)),
            None => bail!("device {s:?}: expected cpu, cuda or cuda:N"),
        },
        None => bail!("device {s:?}: expected cpu, cuda or cuda:N"),
    }
}

/// Parses `cpu`, `cuda`, `cuda:N`; a CUDA device must exist in this build and on this machine.
pub fn parse_device(s: &str) -> Result<Device> {
    let device = device_from_name(s)?;
    let Device::Cuda(index) = device else { return Ok(device) };
    let s = s.trim();
    if !tch::Cuda::is_available() {
        if !super::device::torch_cuda_linked() {
            bail!(
                "device {s:?}: this build's libtorch has no CUDA (torch_cuda is not linked); use --device cpu"
            );
        }
        bail!(
            "device {s:?}: no CUDA GPU is visible to this process (torch_cuda is linked); use --device cpu"
        );
    }
    let count = tch::Cuda::device_count();
    if index as i64 >= count {
        bail!("device {s:?}: only {count} CUDA device(s) present");
    }
    Ok(device)
}

/// Turns libtorch's multi-line error text into its first meaningful line.
pub(crate) fn short_err(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").chars().take(400).collect()
}

/// Disables TorchScript's graph optimizer in the calling thread: it has produced wrong second
/// derivatives. Thread-local, and read at every call of the module: call it before anything that
/// differentiates through the model (`batch_loss` and the HVP code do).
pub fn prepare_thread() {
    tch::jit::set_graph_executor_optimize(false);
}

/// Switches TorchScript's graph optimizer on in the calling thread, for forward passes without grad
/// (PyTorch's default; about 10 % faster on small CNNs). Its known bugs are wrong second derivatives, so
/// everything that differentiates goes through [`prepare_thread`] first (`batch_loss` does).
pub fn prepare_inference_thread() {
    tch::jit::set_graph_executor_optimize(true);
}

pub struct Model {
    pub(crate) module: CModule,
    /// Trainable parameters in module order (`named_parameters`), aliasing the module's own tensors.
    pub(crate) params: Vec<Tensor>,
    /// Float buffers in module order, aliasing the module's own tensors.
    pub(crate) buffers: Vec<Tensor>,
    /// The evaluation set, cut into (inputs, targets) batches on the device.
    pub(crate) batches: Vec<(Tensor, Tensor)>,
    pub(crate) loss: Loss,
    pub(crate) device: Device,
    slots: Vec<Slot>,
    ignored_buffers: Vec<String>,
    samples: usize,
    spec: ModelSpec,
}

impl Model {
    /// Loads the module onto the device, in eval mode, and the evaluation set. Errors name the file.
    pub fn load(spec: &ModelSpec) -> Result<Model> {
        prepare_thread();
        let device = parse_device(&spec.device)?;
        if spec.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        let path = &spec.model;
        if !path.is_file() {
            bail!("model {}: no such file", path.display());
        }
        let (module, bound) = open_module(path, device)?;
        let (batches, samples) = load_eval_set(&spec.eval_data, spec, device)?;
        let model = Model {
            module,
            params: bound.params,
            buffers: bound.buffers,
            batches,
            loss: spec.loss,
            device,
            slots: bound.slots,
            ignored_buffers: bound.ignored_buffers,
            samples,
            spec: spec.clone(),
        };
        // Fail now, naming the files, if the module and the data don't fit together.
        model
            .evaluate()
            .with_context(|| format!("model {} on {}", path.display(), spec.eval_data.display()))?;
        Ok(model)
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Parameters (module order) then float buffers (module order): what a checkpoint must supply.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Non-float buffers (`num_batches_tracked`): accepted in checkpoints, never bound or moved.
    pub fn ignored_buffers(&self) -> &[String] {
        &self.ignored_buffers
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    pub fn loss_kind(&self) -> Loss {
        self.loss
    }

    fn slot_tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.params.iter().chain(self.buffers.iter())
    }

    /// Copies a state (one f32 vector per slot, in slot order) into the module.
    pub fn set_state(&mut self, state: &[Vec<f32>]) -> Result<()> {
        if state.len() != self.slots.len() {
            bail!("state has {} tensors but the model has {} slots", state.len(), self.slots.len());
        }
        for (s, v) in self.slots.iter().zip(state) {
            if s.numel() != v.len() {
                bail!("state for {} has {} values, the module's tensor {}", s.name, v.len(), s.numel());
            }
        }
        let _g = tch::no_grad_guard();
        let device = self.device;
        for ((slot, t), v) in self.slots.iter().zip(self.slot_tensors()).zip(state) {
            let src = Tensor::from_slice(v).view(shape_i64(&slot.shape).as_slice()).to_device(device);
            let mut t = t.shallow_clone();
            t.copy_(&src);
        }
        Ok(())
    }

    /// The module's current state, one f32 vector per slot.
    pub fn state(&self) -> Result<Vec<Vec<f32>>> {
        self.slot_tensors()
            .map(|t| {
                let flat = t.detach().to_device(Device::Cpu).flatten(0, -1).contiguous();
                Vec::<f32>::try_from(&flat).map_err(|e| anyhow!("reading a module tensor: {}", short_err(e)))
            })
            .collect()
    }

    /// Loss and accuracy on the evaluation set: eval mode, no grad, batch means weighted by batch size.
    /// Runs with the graph optimizer on, as PyTorch does by default (see [`prepare_inference_thread`]).
    pub fn evaluate(&self) -> Result<Evaluation> {
        prepare_inference_thread();
        let _g = tch::no_grad_guard();
        let mut loss_sum = 0f64;
        let mut correct = 0i64;
        let mut predicted = 0i64;
        for (x, y) in &self.batches {
            let n = x.size()[0] as f64;
            let (l, out) = self.loss_and_output(x, y)?;
            loss_sum += l.double_value(&[]) * n;
            if let Some(out) = out
                && self.loss.has_accuracy()
            {
                let (c, k) = correct_predictions(&out, y)?;
                correct += c;
                predicted += k;
            }
        }
        let n = self.samples as f64;
        Ok(Evaluation {
            loss: loss_sum / n,
            accuracy: self.loss.has_accuracy().then(|| correct as f64 / predicted.max(1) as f64),
            samples: self.samples,
        })
    }

    /// The mean loss of batch `i` as a scalar tensor, with grad enabled (for Hessian-vector products).
    /// Callers own the grad mode: this does not enter no_grad.
    #[allow(dead_code)] // used by hvp.rs (engineer F)
    pub(crate) fn batch_loss(&self, i: usize) -> Result<Tensor> {
        prepare_thread();
        let (x, y) = self.batches.get(i).ok_or_else(|| anyhow!("batch {i} out of range"))?;
        Ok(self.loss_and_output(x, y)?.0)
    }

    fn loss_and_output(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let run =
            |r: Result<Tensor, tch::TchError>| r.map_err(|e| anyhow!("running the model: {}", short_err(e)));
        Ok(match self.loss {
            Loss::Method => (run(self.module.method_ts("loss", &[x, y]))?, None),
            Loss::CrossEntropy => {
                let out = run(self.module.forward_ts(&[x]))?;
                check_shapes(self.loss, &out, y)?;
                let l = out.f_cross_entropy_loss::<&Tensor>(y, None, tch::Reduction::Mean, -100, 0.0);
                (run(l)?, Some(out))
            }
            Loss::Nll => {
                let out = run(self.module.forward_ts(&[x]))?;
                check_shapes(self.loss, &out, y)?;
                let l = out.f_nll_loss::<&Tensor>(y, None, tch::Reduction::Mean, -100);
                (run(l)?, Some(out))
            }
            Loss::Mse => {
                let out = run(self.module.forward_ts(&[x]))?;
                check_shapes(self.loss, &out, y)?;
                let l = out.f_mse_loss(y, tch::Reduction::Mean);
                (run(l)?, None)
            }
        })
    }
}

/// The model's output must fit the targets before the loss sees them: classification losses take
/// [N, C] (or [N, C, d1, …]) against [N] (or [N, d1, …]); mse takes equal shapes (no silent
/// broadcasting). Otherwise an error naming both shapes.
fn check_shapes(loss: Loss, out: &Tensor, y: &Tensor) -> Result<()> {
    let (o, t) = (out.size(), y.size());
    let fits = match loss {
        Loss::CrossEntropy | Loss::Nll => {
            o.len() >= 2 && o.len() == t.len() + 1 && o[0] == t[0] && o[2..] == t[1..]
        }
        Loss::Mse => o == t,
        Loss::Method => true,
    };
    if fits {
        return Ok(());
    }
    let want = match loss {
        Loss::Mse => "the same shape as the targets".to_string(),
        _ => "[N, C] logits for [N] targets, or [N, C, d...] for [N, d...]".to_string(),
    };
    bail!(
        "shape mismatch: the model's output has shape {o:?} but the targets {t:?}; loss {loss} expects {want}"
    )
}

/// How many predictions are right: argmax over the class dimension (dim 1, as cross_entropy and nll
/// read their input: [N, C] or [N, C, d1, …]) equal to the targets ([N] or [N, d1, …]). An output that
/// doesn't fit the targets is an error naming both shapes, never a panic.
fn correct_predictions(out: &Tensor, y: &Tensor) -> Result<(i64, i64)> {
    let mismatch = || {
        anyhow!(
            "the model's output has shape {:?} but the targets {:?}: expected [N, C] logits for [N] \
             targets (or [N, C, d...] for [N, d...])",
            out.size(),
            y.size()
        )
    };
    if out.dim() < 2 {
        return Err(mismatch());
    }
    let pred = out.f_argmax(1, false).map_err(|_| mismatch())?;
    if pred.size() != y.size() {
        return Err(mismatch());
    }
    let eq = pred.f_eq_tensor(y).map_err(|_| mismatch())?;
    let n = eq.f_sum(Kind::Int64).map_err(|e| anyhow!("counting correct predictions: {}", short_err(e)))?;
    Ok((n.int64_value(&[]), y.numel() as i64))
}

/// A module's slots (parameters then float buffers, module order) and the tensors aliasing them.
struct Bound {
    slots: Vec<Slot>,
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
    ignored_buffers: Vec<String>,
}

/// Loads the TorchScript file onto the device in eval mode and binds its slots. Errors name the file.
fn open_module(path: &Path, device: Device) -> Result<(CModule, Bound)> {
    let mut module = CModule::load_on_device(path, device).map_err(|e| {
        anyhow!("model {}: not a loadable TorchScript module: {}", path.display(), short_err(e))
    })?;
    module.set_eval();
    if shim::is_training(&module) != Some(false) {
        bail!("model {}: could not switch the module to eval mode", path.display());
    }
    let bound = bind_module(&module, path)?;
    Ok((module, bound))
}

fn bind_module(module: &CModule, path: &Path) -> Result<Bound> {
    let named = module
        .named_parameters()
        .map_err(|e| anyhow!("model {}: listing parameters: {}", path.display(), short_err(e)))?;
    let bufs = shim::named_buffers(module)
        .map_err(|e| anyhow!("model {}: listing buffers: {}", path.display(), short_err(e)))?;
    let mut slots = Vec::new();
    let mut params = Vec::new();
    for (name, t) in named {
        if t.kind() != Kind::Float {
            bail!(
                "model {}: parameter {name} is {:?}; only float32 models are supported",
                path.display(),
                t.kind()
            );
        }
        slots.push(Slot { name, kind: SlotKind::Parameter, shape: shape_of(&t) });
        params.push(t);
    }
    let mut buffers = Vec::new();
    let mut ignored_buffers = Vec::new();
    for (name, t) in bufs {
        if t.kind() == Kind::Float {
            slots.push(Slot { name, kind: SlotKind::Buffer, shape: shape_of(&t) });
            buffers.push(t);
        } else {
            ignored_buffers.push(name);
        }
    }
    Ok(Bound { slots, params, buffers, ignored_buffers })
}

fn shape_of(t: &Tensor) -> Vec<usize> {
    t.size().into_iter().map(|d| d as usize).collect()
}

pub(crate) fn shape_i64(s: &[usize]) -> Vec<i64> {
    s.iter().map(|&d| d as i64).collect()
}

/// Reads `inputs` and `targets` from a safetensors file, subsamples, casts and batches them.
fn load_eval_set(path: &Path, spec: &ModelSpec, device: Device) -> Result<(Vec<(Tensor, Tensor)>, usize)> {
    if !path.is_file() {
        bail!("eval data {}: no such file", path.display());
    }
    let named = Tensor::read_safetensors(path).map_err(|e| {
        anyhow!("eval data {}: not a readable safetensors file: {}", path.display(), short_err(e))
    })?;
    let get = |key: &str| {
        named.iter().find(|(n, _)| n == key).map(|(_, t)| t.shallow_clone()).ok_or_else(|| {
            anyhow!("eval data {}: no tensor named {key:?} (expected inputs and targets)", path.display())
        })
    };
    let mut x = get("inputs")?;
    let mut y = get("targets")?;
    let n = *x.size().first().ok_or_else(|| anyhow!("eval data {}: inputs is a scalar", path.display()))?;
    if y.size().first() != Some(&n) {
        bail!("eval data {}: inputs has {n} samples but targets has shape {:?}", path.display(), y.size());
    }
    if n == 0 {
        bail!("eval data {}: no samples", path.display());
    }
    let mut n = n;
    if let Some(m) = spec.subsample
        && (m as i64) < n
    {
        if m == 0 {
            bail!("subsample must be at least 1");
        }
        x = x.narrow(0, 0, m as i64);
        y = y.narrow(0, 0, m as i64);
        n = m as i64;
    }
    if matches!(x.kind(), Kind::Double | Kind::Half | Kind::BFloat16) {
        x = x.to_kind(Kind::Float);
    }
    y = match spec.loss {
        Loss::CrossEntropy | Loss::Nll => {
            if y.is_floating_point() {
                bail!(
                    "eval data {}: targets are floats, but loss {} needs integer classes",
                    path.display(),
                    spec.loss
                );
            }
            y.to_kind(Kind::Int64)
        }
        Loss::Mse => y.to_kind(Kind::Float),
        Loss::Method => y,
    };
    let x = x.to_device(device);
    let y = y.to_device(device);
    let bs = spec.batch_size as i64;
    let mut batches = Vec::new();
    let mut start = 0;
    while start < n {
        let len = bs.min(n - start);
        batches.push((x.narrow(0, start, len), y.narrow(0, start, len)));
        start += len;
    }
    Ok((batches, n as usize))
}

/// libtorch's intra-op CPU threads in the calling thread.
pub fn threads() -> usize {
    tch::get_num_threads().max(1) as usize
}

/// Sets libtorch's intra-op CPU threads for the calling thread (OpenMP's thread count is per thread: a
/// thread that never calls this uses libtorch's default, one per physical core).
pub fn set_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}
