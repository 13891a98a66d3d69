//! The model contract as a user states it — on the command line (`--model-dir`, `--loss`, …) or in the
//! daemon's `[run.model]` section (the same names, `map` for `--map`) — and what it becomes: the
//! protocol's [`WireContract`] for each worker, the [`BindRules`] for checkpoints, and how to start workers.
//! One type for both front ends — its fields are the flags and the config keys, [`contract_keys`]
//! reads the keys off it, [`ModelContract::check`] is its one validator — so they can't drift apart.
//!
//! Two backends: `torchscript` (`landscaped-worker`, a TorchScript file and an evaluation set) and
//! `python` (`python -m landscaped_worker` in the user's own Python, a factory `module:function`; see
//! docs/python-worker.md). The Python package is found without installing it: `PYTHONPATH` gets the
//! folder holding `landscaped_worker/` — `<prefix>/share/landscaped/python` beside an installed
//! `landscaped`, else the checkout's `python/` (see [`python_package_dir`]).

use super::client::{WorkerOptions, locate_worker};
use anyhow::{Result, anyhow, bail};
use landscaped_protocol::messages::{BindRules, WireContract};
use std::path::{Path, PathBuf};

/// The model contract and how to run it. `clap` reads it from flags, `serde` from `[run.model]`.
#[derive(clap::Args, serde::Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelContract {
    /// Model backend: torchscript (landscaped-worker: --model-dir, or --model and --eval-data) or python
    /// (your own Python runs --factory). Default: python when --factory is given, else torchscript.
    #[arg(long)]
    #[serde(default)]
    pub backend: Option<String>,
    /// The Python that runs the model for --backend python: the one you train with (default: python3).
    #[arg(long)]
    #[serde(default)]
    pub python: Option<PathBuf>,
    /// --backend python: module:function returning (model, data, loss), e.g. mytrain.landscape:build
    /// (see docs/python-worker.md); imported from the working directory or the Python's path.
    #[arg(long)]
    #[serde(default)]
    pub factory: Option<String>,
    /// Folder written by examples/landscaped_export.py (model.pt, eval.safetensors, landscaped.toml).
    #[arg(long)]
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// TorchScript model file (scripted or traced).
    #[arg(long)]
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Evaluation set: safetensors with `inputs` and `targets`.
    #[arg(long)]
    #[serde(default)]
    pub eval_data: Option<PathBuf>,
    /// cross_entropy (default), mse, nll, or method (the module's own loss(inputs, targets)); with
    /// --backend python also causal_lm and hf (or a callable returned by the factory).
    #[arg(long)]
    #[serde(default)]
    pub loss: Option<String>,
    /// --backend python: evaluate under autocast, bf16 or fp16 (the loss accumulated in f32; HVPs and
    /// gradients stay f32). Default f32.
    #[arg(long)]
    #[serde(default)]
    pub precision: Option<String>,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 256)]
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Evaluate on the first N samples only (bounds the cost per grid point).
    #[arg(long)]
    #[serde(default)]
    pub subsample: Option<usize>,
    /// cpu (default: never takes GPU memory from the trainer), cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    #[serde(default = "default_device")]
    pub device: String,
    /// CPU threads in all (default: one per core on the command line, 1 in the daemon). A slice splits
    /// them between worker processes (see --workers); each worker uses the rest inside its forward passes.
    #[arg(long)]
    #[serde(default)]
    pub threads: Option<usize>,
    /// Worker processes evaluating grid points at once. Default: one per thread on the CPU while their
    /// weights stay under 256 MiB, one per GPU.
    #[arg(long, alias = "replicas")]
    #[serde(default)]
    pub workers: Option<usize>,
    /// Rename a checkpoint key: CHECKPOINT_NAME=MODULE_NAME (repeatable).
    #[arg(long = "map")]
    #[serde(default)]
    pub map: Vec<String>,
    /// Accept checkpoint tensors the module does not have (otherwise an error naming them).
    #[arg(long)]
    #[serde(default)]
    pub allow_unexpected: bool,
    /// The worker executable (default: landscaped-worker beside landscaped, or $LANDSCAPED_WORKER).
    #[arg(long)]
    #[serde(default)]
    pub worker: Option<PathBuf>,
    /// Address-space limit of each worker process, e.g. 4G or 512M (default: none).
    #[arg(long)]
    #[serde(default)]
    pub worker_memory_limit: Option<String>,
    /// Seconds any call to a worker is given at least before the worker counts as hung and is stopped
    /// (default 600); a call may also take up to 10x the slowest earlier call of the same operation.
    #[arg(long, value_name = "SECS")]
    #[serde(default)]
    pub worker_call_timeout: Option<u64>,
    /// Use workers started by a cluster launcher (srun, mpirun, torchrun): listen on ADDR, e.g.
    /// 0.0.0.0:9470, for workers dialling in with `--connect HOST:PORT` (docs/scale-out.md). Needs a
    /// shared token: LANDSCAPED_TOKEN, or --token-file.
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    pub workers_listen: Option<String>,
    /// With --workers-listen: how many workers to wait for (default 1).
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub expect: Option<usize>,
    /// With --workers-listen: seconds to wait for them; then the job starts with those that came
    /// (default 120).
    #[arg(long = "wait", value_name = "SECS")]
    #[serde(default)]
    pub wait: Option<u64>,
    /// With --workers-listen: the file holding the shared token (made, mode 0600, when missing); the
    /// workers read the same file. LANDSCAPED_TOKEN, when set, is used instead.
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_batch() -> usize {
    256
}

fn default_device() -> String {
    "cpu".into()
}

impl Default for ModelContract {
    /// The defaults of the `#[serde(default)]`s above (the same as the flags' when none is given).
    fn default() -> Self {
        use serde::Deserialize;
        let none = serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(std::iter::empty::<(
            &str,
            &str,
        )>());
        ModelContract::deserialize(none).expect("every key of ModelContract has a default")
    }
}

/// Every key of [`ModelContract`] (its config spelling), read off the type itself: what the daemon's
/// job sections take as the model's ([`crate::daemon::job_model::split`]).
pub(crate) fn contract_keys() -> Vec<String> {
    match serde_json::to_value(ModelContract::default()) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

/// How [`ModelContract::check`] names a key: `--model-dir` on the command line, `model_dir` in a
/// config section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    Flags,
    Config,
}

impl Naming {
    fn key(self, k: &str) -> String {
        match self {
            Naming::Config => k.to_string(),
            Naming::Flags => format!("--{}", k.replace('_', "-")),
        }
    }
}

/// Where a job's workers come from.
#[derive(Clone, Debug)]
pub enum WorkerSource {
    /// Started by this process (pipes), as many as the thread plan says.
    Local,
    /// Started by a cluster launcher, dialling in.
    Listen(super::listen::ListenOptions),
}

/// Parses `4G`, `512M`, `100k`, `1GiB` or plain bytes.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 4G, 512M, 1073741824)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    if n.is_nan() || n <= 0.0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok((n * mult as f64) as u64)
}

/// Parses `cpu`, `cuda`, `cuda:N` (without asking whether the device exists).
pub(crate) fn check_device(s: &str) -> Result<(), String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("cpu") || s == "cuda" {
        return Ok(());
    }
    match s.strip_prefix("cuda:").map(|n| n.parse::<usize>()) {
        Some(Ok(_)) => Ok(()),
        _ => Err(format!("device {s:?}: expected cpu, cuda or cuda:N")),
    }
}

/// Which worker runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `landscaped-worker`: a TorchScript file and an evaluation set.
    TorchScript,
    /// `python -m landscaped_worker`: a factory in the user's own Python.
    Python,
}

/// Loss names the Python worker knows (besides a callable the factory returns).
pub(crate) const PYTHON_LOSSES: &[&str] = &["cross_entropy", "mse", "nll", "causal_lm", "hf"];

/// Checks a loss name for the Python backend (the worker accepts the same spellings).
pub(crate) fn check_python_loss(l: &str) -> Result<(), String> {
    let n = l.trim().to_ascii_lowercase().replace('-', "_");
    let n = match n.as_str() {
        "ce" | "crossentropy" => "cross_entropy",
        "lm" => "causal_lm",
        "huggingface" => "hf",
        other => other,
    };
    if PYTHON_LOSSES.contains(&n) {
        Ok(())
    } else {
        Err(format!(
            "unknown loss {l:?} for the python backend (expected {}, or return a callable (model, batch) -> \
             loss from the factory)",
            PYTHON_LOSSES.join(", ")
        ))
    }
}

/// Checks an evaluation precision: `f32`, `bf16` or `fp16`.
pub(crate) fn check_precision(p: &str) -> Result<(), String> {
    match p.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "bf16" | "bfloat16" | "fp16" | "f16" | "float16" => Ok(()),
        _ => Err(format!("unknown precision {p:?} (expected f32, bf16 or fp16)")),
    }
}

/// Whether a precision asks for autocast (anything but f32).
fn is_reduced(p: Option<&str>) -> bool {
    p.is_some_and(|p| !matches!(p.trim().to_ascii_lowercase().as_str(), "f32" | "float32"))
}

/// Checks the form `module:function` (module a dotted name).
pub(crate) fn check_factory(f: &str) -> Result<(), String> {
    let ok = f.split_once(':').is_some_and(|(m, func)| {
        let ident = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|p| {
                    p.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
                        && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                })
        };
        ident(m) && ident(func)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("{f:?} is not of the form module:function (e.g. mytrain.landscape:build)"))
    }
}

/// The folder to put on `PYTHONPATH` so that `python -m landscaped_worker` finds the package without
/// installing it: `$LANDSCAPED_PYTHONPATH`, else `<prefix>/share/landscaped/python` for a `landscaped`
/// installed in `<prefix>/bin` (`make install`), else the checkout's `python/` this binary was built
/// from. `None` when none holds the package (then it must be pip-installed into that Python).
pub(crate) fn python_package_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("landscaped_worker").join("__main__.py").is_file();
    if let Some(p) = std::env::var_os("LANDSCAPED_PYTHONPATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(bin) = exe.parent()
        && let Some(prefix) = bin.parent()
    {
        candidates.push(prefix.join("share/landscaped/python"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("python"));
    candidates.into_iter().find(|d| has(d))
}

/// Finds `program` on `PATH` when it has no `/`; errors say what was looked for and how to point at it.
fn find_python(program: &Path) -> Result<PathBuf> {
    let how = "point --python (or python = \"...\" in the config) at the Python you train with";
    if program.components().count() > 1 || program.is_absolute() {
        if program.is_file() {
            return Ok(program.to_path_buf());
        }
        bail!("python {}: no such file; {how}", program.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(program);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("python {}: not found on PATH; {how}", program.display())
}

impl ModelContract {
    /// The backend in use: `backend` if given, else python when a factory is given.
    pub fn backend(&self) -> Result<Backend> {
        match self.backend.as_deref().map(|b| b.trim().to_ascii_lowercase()) {
            None => Ok(if self.factory.is_some() { Backend::Python } else { Backend::TorchScript }),
            Some(b) if b == "torchscript" => Ok(Backend::TorchScript),
            Some(b) if b == "python" => Ok(Backend::Python),
            Some(b) => bail!("unknown backend {b:?} (expected torchscript or python)"),
        }
    }

    /// Checks every value of a config section, naming the key; see [`ModelContract::check`].
    pub fn validate(&self) -> Result<()> {
        self.check(Naming::Config)
    }

    /// Checks the flags, naming them; see [`ModelContract::check`].
    pub(crate) fn validate_flags(&self) -> Result<()> {
        self.check(Naming::Flags)
    }

    /// The one validator of the contract, for flags and config sections alike: each error starts with
    /// the key it is about (`--model-dir` or `model_dir`). A config section must name its model
    /// (`model_dir`, or `model` and `eval_data`); on the command line a missing model is reported when
    /// the contract is resolved ([`ModelContract::protocol_contract`]), and the config-only mix-ups
    /// (model files or `worker` with the python backend) are ignored there as before.
    pub fn check(&self, how: Naming) -> Result<()> {
        let key = |k: &str| how.key(k);
        let config = how == Naming::Config;
        let python = if config { "backend = \"python\"" } else { "--backend python" };
        if let Some(m) = &self.worker_memory_limit {
            parse_bytes(m).map_err(|e| anyhow!("{}: {e}", key("worker_memory_limit")))?;
        }
        if self.worker_call_timeout == Some(0) {
            bail!("{}: must be at least 1 (seconds)", key("worker_call_timeout"));
        }
        let backend = self.backend().map_err(|e| anyhow!("{}: {e}", key("backend")))?;
        if let Some(p) = &self.precision {
            check_precision(p).map_err(|e| anyhow!("{}: {e}", key("precision")))?;
        }
        if backend == Backend::Python {
            if config && self.worker.is_some() {
                bail!(
                    "worker: the python backend runs `python -m landscaped_worker` (set python); worker is \
                     the landscaped-worker executable of backend torchscript"
                );
            }
            let Some(f) = &self.factory else {
                bail!(
                    "{}: missing ({python} needs {} module:function, see docs/python-worker.md)",
                    key("factory"),
                    if config { "factory =" } else { "--factory" }
                );
            };
            check_factory(f).map_err(|e| anyhow!("{}: {e}", key("factory")))?;
            if config && (self.model_dir.is_some() || self.model.is_some() || self.eval_data.is_some()) {
                bail!(
                    "model: the python backend builds the model with factory; model_dir, model and eval_data \
                     are for backend torchscript"
                );
            }
            if let Some(l) = &self.loss {
                check_python_loss(l).map_err(|e| anyhow!("{}: {e}", key("loss")))?;
            }
        } else {
            if self.factory.is_some() {
                bail!(
                    "{}: needs {python} (the TorchScript backend takes a model folder or model)",
                    key("factory")
                );
            }
            if let Some(p) = self.precision.as_deref().filter(|p| is_reduced(Some(p))) {
                bail!("{}: {p} needs {python} (the TorchScript worker evaluates in f32)", key("precision"));
            }
            if config && self.model_dir.is_none() && (self.model.is_none() || self.eval_data.is_none()) {
                bail!("model_dir: missing (give model_dir, or both model and eval_data)");
            }
            if let Some(l) = &self.loss {
                l.parse::<landscaped_protocol::loss::Loss>().map_err(|e| anyhow!("{}: {e}", key("loss")))?;
            }
        }
        for (k, zero) in [
            ("batch_size", self.batch_size == 0),
            ("subsample", self.subsample == Some(0)),
            ("threads", self.threads == Some(0)),
            ("workers", self.workers == Some(0)),
        ] {
            if zero {
                bail!("{}: must be at least 1", key(k));
            }
        }
        check_device(&self.device).map_err(|e| anyhow!("{}: {e}", key("device")))?;
        self.bind_rules().map_err(|e| anyhow!("{}: {e}", key("map")))?;
        self.check_listen(how)
    }

    /// The remote-worker settings: `expect`, `wait` and `token_file` need `workers_listen`, whose
    /// address must parse.
    fn check_listen(&self, how: Naming) -> Result<()> {
        let name = |k: &str| how.key(k);
        match &self.workers_listen {
            Some(a) => {
                let ok = a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !ok {
                    bail!("{}: {a:?} is not HOST:PORT (e.g. 0.0.0.0:9470)", name("workers_listen"));
                }
                if self.expect == Some(0) {
                    bail!("{}: must be at least 1", name("expect"));
                }
            }
            None => {
                let set = [
                    (self.expect.is_some(), "expect"),
                    (self.wait.is_some(), "wait"),
                    (self.token_file.is_some(), "token_file"),
                ];
                if let Some((_, k)) = set.iter().find(|(on, _)| *on) {
                    bail!("{}: only means something with {}", name(k), name("workers_listen"));
                }
            }
        }
        Ok(())
    }

    /// Where the job's workers come from: started here, or dialling in ([`WorkerSource::Listen`]).
    pub(crate) fn worker_source(&self, contract_id: &str) -> Result<WorkerSource> {
        let Some(addr) = &self.workers_listen else { return Ok(WorkerSource::Local) };
        let token = super::listen::coordinator_token(self.token_file.as_deref())?;
        Ok(WorkerSource::Listen(super::listen::ListenOptions {
            addr: addr.trim().to_string(),
            expect: self.expect.unwrap_or(1).max(1),
            wait: std::time::Duration::from_secs(self.wait.unwrap_or(120)),
            token,
            contract_id: contract_id.to_string(),
        }))
    }

    /// Whether this asks for a GPU.
    pub(crate) fn wants_gpu(&self) -> bool {
        !self.device.trim().eq_ignore_ascii_case("cpu")
    }

    /// The contract each worker loads (files resolved from `model_dir`), with `threads` intra-op threads.
    pub fn protocol_contract(&self, threads: Option<usize>) -> Result<WireContract> {
        if self.backend()? == Backend::Python {
            let factory = self
                .factory
                .clone()
                .ok_or_else(|| anyhow!("no factory: --backend python needs --factory module:function"))?;
            check_factory(&factory).map_err(|e| anyhow!("--factory: {e}"))?;
            if self.batch_size == 0 {
                bail!("--batch-size: must be at least 1");
            }
            check_device(&self.device).map_err(|e| anyhow!(e))?;
            return Ok(WireContract {
                factory: Some(factory),
                loss: self.loss.clone(),
                batch_size: self.batch_size,
                subsample: self.subsample,
                device: self.device.trim().to_string(),
                threads,
                precision: self.precision.clone().filter(|p| is_reduced(Some(p))),
                ..Default::default()
            });
        }
        let mut loss = self.loss.clone();
        let (mut model, mut eval) = (self.model.clone(), self.eval_data.clone());
        if let Some(dir) = &self.model_dir {
            let export = landscaped_protocol::export_dir::read_export_dir(dir)?;
            model = model.or(Some(export.model));
            eval = eval.or(Some(export.eval_data));
            loss = loss.or(export.loss.map(|l| l.name().to_string()));
        }
        let model = model
            .ok_or_else(|| anyhow!("no model: pass --model-dir DIR, or --model FILE and --eval-data FILE"))?;
        let eval =
            eval.ok_or_else(|| anyhow!("no evaluation set: pass --eval-data FILE (or --model-dir DIR)"))?;
        if self.batch_size == 0 {
            bail!("--batch-size: must be at least 1");
        }
        check_device(&self.device).map_err(|e| anyhow!(e))?;
        Ok(WireContract {
            model: Some(model),
            eval_data: Some(eval),
            factory: None,
            loss,
            batch_size: self.batch_size,
            subsample: self.subsample,
            device: self.device.trim().to_string(),
            threads,
            checkpoint: None,
            precision: None,
        })
    }

    /// How checkpoint keys map to the module's names (`--map`, `--allow-unexpected`).
    pub(crate) fn bind_rules(&self) -> Result<BindRules, String> {
        let mut b = BindRules { allow_unexpected: self.allow_unexpected, ..BindRules::default() };
        for p in &self.map {
            let Some((from, to)) = p.split_once('=') else {
                return Err(format!("mapping {p:?} is not of the form checkpoint_name=module_name"));
            };
            b.mapping.push((from.trim().to_string(), to.trim().to_string()));
        }
        Ok(b)
    }

    /// How to start this contract's workers: the executable found (`landscaped-worker`, or the Python
    /// with `-m landscaped_worker` and the package on `PYTHONPATH`), low priority, the memory limit.
    pub fn worker_options(&self) -> Result<WorkerOptions> {
        let mut o = if self.backend()? == Backend::Python {
            let python = find_python(self.python.as_deref().unwrap_or(Path::new("python3")))?;
            let mut o = WorkerOptions::new(python);
            o.args = vec!["-m".into(), "landscaped_worker".into()];
            if let Some(dir) = python_package_dir() {
                let mut paths = vec![dir];
                if let Some(old) = std::env::var_os("PYTHONPATH") {
                    paths.extend(std::env::split_paths(&old));
                }
                let joined = std::env::join_paths(paths).map_err(|e| anyhow!("PYTHONPATH: {e}"))?;
                o.env.push(("PYTHONPATH".into(), joined.to_string_lossy().into_owned()));
            }
            o
        } else {
            WorkerOptions::new(locate_worker(self.worker.as_deref())?)
        };
        if let Some(m) = &self.worker_memory_limit {
            o.memory_limit = Some(parse_bytes(m).map_err(|e| anyhow!("--worker-memory-limit: {e}"))?);
        }
        if let Some(s) = self.worker_call_timeout {
            o.call_timeout = std::time::Duration::from_secs(s.max(1));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("4G").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert!(parse_bytes("4X").is_err());
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("big").is_err());
    }

    #[test]
    fn config_section_and_flags_mean_the_same() {
        let c: ModelContract = toml::from_str(
            "model = \"m.pt\"\neval_data = \"e.safetensors\"\nloss = \"mse\"\nmap = [\"a=b\"]\nthreads = 2",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.batch_size, 256);
        assert_eq!(c.device, "cpu");
        assert_eq!(c.bind_rules().unwrap().mapping, vec![("a".to_string(), "b".to_string())]);
        let p = c.protocol_contract(Some(2)).unwrap();
        assert_eq!(p.loss.as_deref(), Some("mse"));
        assert_eq!(p.threads, Some(2));
        let e = toml::from_str::<ModelContract>("modle = \"x\"").unwrap_err().to_string();
        assert!(e.contains("modle"), "{e}");
    }

    #[test]
    fn the_python_backend_takes_a_factory_and_starts_the_users_python() {
        let c: ModelContract =
            toml::from_str("factory = \"mytrain.landscape:build\"\nloss = \"causal_lm\"\nbatch_size = 8")
                .unwrap();
        c.validate().unwrap();
        assert_eq!(c.backend().unwrap(), Backend::Python);
        let p = c.protocol_contract(Some(1)).unwrap();
        assert_eq!(p.factory.as_deref(), Some("mytrain.landscape:build"));
        assert!(p.model.is_none() && p.eval_data.is_none());
        // The user's Python with -m landscaped_worker, the in-repo package on PYTHONPATH.
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        let c = ModelContract { python: Some(venv.clone()), ..c };
        let o = c.worker_options().unwrap();
        assert_eq!(o.program, venv);
        assert_eq!(o.args, vec!["-m".to_string(), "landscaped_worker".to_string()]);
        let pp = &o.env.iter().find(|(k, _)| k == "PYTHONPATH").unwrap().1;
        assert!(pp.split(':').next().unwrap().ends_with("python"), "{pp}");
        // A Python that isn't there: one line naming it and how to point at another.
        let c = ModelContract { python: Some("/nonexistent/bin/python".into()), ..c };
        let e = c.worker_options().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/bin/python") && e.contains("--python") && !e.contains('\n'), "{e}");
        let c = ModelContract { python: Some("no-such-python-here".into()), ..c };
        assert!(c.worker_options().unwrap_err().to_string().contains("not found on PATH"));
    }

    #[test]
    fn python_backend_mistakes_name_their_key() {
        let bad = |s: &str| toml::from_str::<ModelContract>(s).unwrap().validate().unwrap_err().to_string();
        assert!(bad("backend = \"python\"").starts_with("factory: missing"));
        assert!(bad("factory = \"a.b\"").starts_with("factory: "));
        assert!(bad("factory = \"m:f\"\nloss = \"method\"").starts_with("loss: "));
        assert!(bad("backend = \"torchscript\"\nfactory = \"m:f\"").starts_with("factory: needs"));
        assert!(bad("backend = \"jax\"").starts_with("backend: "));
        check_factory("pkg.mod:build").unwrap();
        assert!(check_factory("pkg mod:build").is_err() && check_factory(":f").is_err());
        check_python_loss("hf").unwrap();
        assert!(bad("model_dir = \"/m\"\nprecision = \"bf16\"").starts_with("precision: bf16 needs"));
        assert!(bad("factory = \"m:f\"\nprecision = \"int8\"").starts_with("precision: "));
        check_python_loss("CE").unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = ModelContract { model_dir: Some("d".into()), ..Default::default() };
        c.validate().unwrap();
        c.device = "gpu".into();
        assert!(c.validate().unwrap_err().to_string().starts_with("device:"));
        c.device = "cuda:1".into();
        c.map = vec!["nope".into()];
        assert!(c.validate().unwrap_err().to_string().starts_with("map:"));
        c.map.clear();
        c.worker_memory_limit = Some("lots".into());
        assert!(c.validate().unwrap_err().to_string().starts_with("worker_memory_limit:"));
        let none = ModelContract::default();
        assert!(none.validate().unwrap_err().to_string().starts_with("model_dir:"));
    }
}
