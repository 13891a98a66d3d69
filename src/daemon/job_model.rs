//! The model contract in a daemon job section: the keys `[run.slice]` and `[run.sharpness]` share, with
//! the meaning of the command line's flags (`model_dir` = `--model-dir`, `map` = `--map`, ...).
//!
//! ```toml
//! [run.slice]
//! model_dir = "/scratch/job42/landscaped-model"  # written by examples/landscaped_export.py, or:
//! # model = "model.pt"; eval_data = "eval.safetensors"; loss = "cross_entropy"  (override model_dir's)
//! batch_size = 256
//! subsample = 1000            # optional: the first N evaluation samples
//! device = "cpu"              # default; "cuda:N" needs `gpu = true` at the top of the config
//! threads = 1                 # CPU threads for this job (keep the trainer's CPUs free)
//! map = ["backbone.fc.weight=fc.weight"]   # checkpoint name = module name
//! allow_unexpected = false    # accept checkpoint tensors the module lacks
//! # or the model in your own Python (docs/python-worker.md):
//! # backend = "python"; python = "/home/me/venv/bin/python"; factory = "mytrain.landscape:build"
//! # or workers on other nodes, started by the cluster's launcher (docs/scale-out.md); each run of the
//! # job listens, waits for them, and computes on those that came:
//! # workers_listen = "0.0.0.0:9470"; expect = 8; wait = 300; token_file = "/shared/landscaped.token"
//! worker_memory_limit = "8G"  # address-space limit (RLIMIT_AS) of each worker process; default none
//! worker_call_timeout = 600   # seconds any worker call gets at least before the worker counts as hung
//!                             # (stopped, the run counted outcome="timeout"); default 600
//! # worker = "/opt/landscaped/bin/landscaped-worker"   # the TorchScript worker executable
//! ```
//!
//! A job section is split in two: these keys go to [`JobModel`], the rest to the job's own struct (each
//! rejects keys it doesn't know).

use crate::workers::contract::ModelContract;
use anyhow::{Result, anyhow, bail};
use std::path::PathBuf;

/// Every key of [`JobModel`].
pub const KEYS: &[&str] = &[
    "backend",
    "python",
    "factory",
    "precision",
    "model_dir",
    "model",
    "eval_data",
    "loss",
    "batch_size",
    "subsample",
    "device",
    "threads",
    "map",
    "allow_unexpected",
    "worker",
    "worker_memory_limit",
    "worker_call_timeout",
    "workers_listen",
    "expect",
    "wait",
    "token_file",
];

#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobModel {
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub python: Option<PathBuf>,
    #[serde(default)]
    pub factory: Option<String>,
    #[serde(default)]
    pub precision: Option<String>,
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    #[serde(default)]
    pub model: Option<PathBuf>,
    #[serde(default)]
    pub eval_data: Option<PathBuf>,
    #[serde(default)]
    pub loss: Option<String>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default)]
    pub subsample: Option<usize>,
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default)]
    pub map: Vec<String>,
    #[serde(default)]
    pub allow_unexpected: bool,
    /// The `landscaped-worker` executable (backend torchscript).
    #[serde(default)]
    pub worker: Option<PathBuf>,
    /// Address-space limit of each worker process (`RLIMIT_AS`), e.g. `8G`.
    #[serde(default)]
    pub worker_memory_limit: Option<String>,
    /// Seconds any worker call is given at least (see [`crate::workers::client::CallPace`]).
    #[serde(default)]
    pub worker_call_timeout: Option<u64>,
    #[serde(default)]
    pub workers_listen: Option<String>,
    #[serde(default)]
    pub expect: Option<usize>,
    #[serde(default)]
    pub wait: Option<u64>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_batch() -> usize {
    256
}

fn default_device() -> String {
    "cpu".into()
}

fn default_threads() -> usize {
    1
}

/// Splits a job section into its model keys (checked, errors naming the key) and the job's own keys.
pub fn split(section: &toml::Value) -> Result<(JobModel, toml::Value)> {
    let table = section.as_table().ok_or_else(|| anyhow!("expected a table"))?;
    let (mine, rest): (toml::Table, toml::Table) =
        table.clone().into_iter().partition(|(k, _)| KEYS.contains(&k.as_str()));
    let m: JobModel = toml::Value::Table(mine).try_into().map_err(|e| anyhow!("{e}"))?;
    m.validate()?;
    Ok((m, toml::Value::Table(rest)))
}

/// The device a job section asks for, if not the CPU (the daemon hides GPUs unless `gpu = true`).
pub fn gpu_device(section: &toml::Value) -> Option<&str> {
    let device = section.get("device").and_then(|d| d.as_str()).unwrap_or("cpu");
    (!device.trim().eq_ignore_ascii_case("cpu")).then_some(device)
}

impl JobModel {
    fn validate(&self) -> Result<()> {
        if let Some(m) = &self.worker_memory_limit {
            crate::workers::contract::parse_bytes(m).map_err(|e| anyhow!("worker_memory_limit: {e}"))?;
        }
        if self.worker_call_timeout == Some(0) {
            bail!("worker_call_timeout: must be at least 1 (seconds)");
        }
        let args = self.args();
        if self.worker.is_some() && args.backend().ok() == Some(crate::workers::contract::Backend::Python) {
            bail!(
                "worker: the python backend runs `python -m landscaped_worker` (set python); worker is the \
                 landscaped-worker executable of backend torchscript"
            );
        }
        if args.backend().map_err(|e| anyhow!("backend: {e}"))? == crate::workers::contract::Backend::Python
            || self.factory.is_some()
            || self.precision.is_some()
        {
            return args.validate();
        }
        if self.model_dir.is_none() && (self.model.is_none() || self.eval_data.is_none()) {
            bail!("model_dir: missing (or give both model and eval_data)");
        }
        if self.batch_size == 0 {
            bail!("batch_size: must be at least 1");
        }
        if self.subsample == Some(0) {
            bail!("subsample: must be at least 1");
        }
        if self.threads == 0 {
            bail!("threads: must be at least 1");
        }
        if let Some(l) = &self.loss {
            l.parse::<landscaped_protocol::loss::Loss>().map_err(|e| anyhow!("loss: {e}"))?;
        }
        crate::workers::contract::check_device(&self.device).map_err(|e| anyhow!("device: {e}"))?;
        self.args().bind_rules().map_err(|e| anyhow!("map: {e}"))?;
        self.args().check_listen("")
    }

    /// The same contract as command-line flags.
    pub fn args(&self) -> ModelContract {
        ModelContract {
            backend: self.backend.clone(),
            python: self.python.clone(),
            factory: self.factory.clone(),
            precision: self.precision.clone(),
            model_dir: self.model_dir.clone(),
            model: self.model.clone(),
            eval_data: self.eval_data.clone(),
            loss: self.loss.clone(),
            batch_size: self.batch_size,
            subsample: self.subsample,
            device: self.device.clone(),
            threads: Some(self.threads),
            workers: None,
            map: self.map.clone(),
            allow_unexpected: self.allow_unexpected,
            worker: self.worker.clone(),
            worker_memory_limit: self.worker_memory_limit.clone(),
            worker_call_timeout: self.worker_call_timeout,
            workers_listen: self.workers_listen.clone(),
            expect: self.expect,
            wait: self.wait,
            token_file: self.token_file.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn model_keys_are_split_from_the_job_keys() {
        let job = section(
            "every = 3\nx = \"-1:1:3\"\nmodel = \"/m/model.pt\"\neval_data = \"/m/eval.safetensors\"\n\
             loss = \"mse\"\ndevice = \"cuda:1\"\nthreads = 2\nmap = [\"a.w=w\"]",
        );
        let (m, rest) = split(&job).unwrap();
        assert_eq!(rest, section("every = 3\nx = \"-1:1:3\""));
        assert_eq!(gpu_device(&job), Some("cuda:1"));
        let a = m.args();
        assert_eq!((a.threads, a.batch_size, a.device.as_str()), (Some(2), 256, "cuda:1"));
        assert_eq!(a.protocol_contract(None).unwrap().loss.as_deref(), Some("mse"));
        assert_eq!(a.bind_rules().unwrap().mapping, vec![("a.w".to_string(), "w".to_string())]);
    }

    #[test]
    fn bad_model_keys_are_named() {
        let err = |s: &str| split(&section(s)).err().unwrap().to_string();
        assert!(err("every = 1").starts_with("model_dir: missing"));
        assert!(err("model = \"/m.pt\"").starts_with("model_dir: missing"));
        assert!(err("model_dir = \"/m\"\nloss = \"hinge\"").starts_with("loss: "));
        assert!(err("model_dir = \"/m\"\ndevice = \"tpu\"").starts_with("device: "));
        assert!(err("model_dir = \"/m\"\nmap = [\"nonsense\"]").starts_with("map: "));
        assert!(err("model_dir = \"/m\"\nthreads = 0").starts_with("threads: "));
        // The python backend: a factory instead of the TorchScript files, the same keys as the flags.
        let (m, _) = split(&section("factory = \"mytrain.landscape:build\"\nloss = \"causal_lm\"")).unwrap();
        assert_eq!(m.args().backend().unwrap(), crate::workers::contract::Backend::Python);
        assert!(err("backend = \"python\"").starts_with("factory: missing"));
        assert!(err("factory = \"nocolon\"").starts_with("factory: "));
        assert!(err("factory = \"m:f\"\nloss = \"hinge\"").starts_with("loss: "));
        assert!(err("factory = \"m:f\"\nmodel_dir = \"/m\"").starts_with("model: "));
        assert!(err("backend = \"onnx\"\nmodel_dir = \"/m\"").starts_with("backend: "));
        assert_eq!(gpu_device(&section("model_dir = \"/m\"")), None);
        assert_eq!(gpu_device(&section("model_dir = \"/m\"\ndevice = \"CPU\"")), None);
    }

    #[test]
    fn worker_limits_and_executable_are_job_keys() {
        let (m, rest) = split(&section(
            "every = 2\nmodel_dir = \"/m\"\nworker = \"/opt/lw\"\nworker_memory_limit = \"512M\"\n\
             worker_call_timeout = 30",
        ))
        .unwrap();
        assert_eq!(rest, section("every = 2"));
        let a = m.args();
        assert_eq!(a.worker.as_deref(), Some(std::path::Path::new("/opt/lw")));
        assert_eq!(a.worker_memory_limit.as_deref(), Some("512M"));
        assert_eq!(a.worker_call_timeout, Some(30));
        // What the worker is started with: the limit in bytes, the executable named in the error when
        // it is missing.
        let e = a.worker_options().err().unwrap().to_string();
        assert!(e.contains("/opt/lw (given)"), "{e}");
        let py = section("factory = \"m:f\"\nworker_memory_limit = \"2G\"\nworker_call_timeout = 7");
        let o = split(&py).unwrap().0.args().worker_options().unwrap();
        assert_eq!(o.memory_limit, Some(2 << 30));
        assert_eq!(o.call_timeout, std::time::Duration::from_secs(7));
        let err = |s: &str| split(&section(s)).err().unwrap().to_string();
        assert!(
            err("model_dir = \"/m\"\nworker_memory_limit = \"lots\"").starts_with("worker_memory_limit: ")
        );
        assert!(err("factory = \"m:f\"\nworker_memory_limit = \"0\"").starts_with("worker_memory_limit: "));
        assert!(err("model_dir = \"/m\"\nworker_call_timeout = 0").starts_with("worker_call_timeout: "));
        assert!(err("factory = \"m:f\"\nworker = \"/opt/lw\"").starts_with("worker: "));
    }

    #[test]
    fn a_job_may_listen_for_workers_from_a_launcher() {
        let (m, rest) = split(&section(
            "every = 2\nmodel_dir = \"/m\"\nworkers_listen = \"0.0.0.0:9470\"\nexpect = 8\nwait = 300\n\
             token_file = \"/shared/tok\"",
        ))
        .unwrap();
        assert_eq!(rest, section("every = 2"));
        let a = m.args();
        assert_eq!(a.workers_listen.as_deref(), Some("0.0.0.0:9470"));
        assert_eq!((a.expect, a.wait), (Some(8), Some(300)));
        let err = |s: &str| split(&section(s)).err().unwrap().to_string();
        assert!(err("model_dir = \"/m\"\nworkers_listen = \"nohost\"").starts_with("workers_listen: "));
        assert!(
            err("model_dir = \"/m\"\nexpect = 2")
                .starts_with("expect: only means something with workers_listen")
        );
        assert!(err("model_dir = \"/m\"\nworkers_listen = \"h:1\"\nexpect = 0").starts_with("expect: "));
    }
}
