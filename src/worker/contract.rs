//! The model contract as a user states it — on the command line (`--model-dir`, `--loss`, …) or in the
//! daemon's `[run.model]` section (the same names, `map` for `--map`) — and what it becomes: the
//! protocol's [`Contract`] for each worker, the [`BindRules`] for checkpoints, and how to start workers.
//! One type for both front ends, so the flags and the config keys can't drift apart.

use super::client::{WorkerOptions, locate_worker};
use super::protocol::{BindRules, Contract};
use anyhow::{Result, anyhow, bail};
use std::path::PathBuf;

/// The model contract and how to run it. `clap` reads it from flags, `serde` from `[run.model]`.
#[derive(clap::Args, serde::Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelContract {
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
    /// cross_entropy (default), mse, nll, or method (the module's own loss(inputs, targets)).
    #[arg(long)]
    #[serde(default)]
    pub loss: Option<String>,
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
}

fn default_batch() -> usize {
    256
}

fn default_device() -> String {
    "cpu".into()
}

impl Default for ModelContract {
    fn default() -> Self {
        ModelContract {
            model_dir: None,
            model: None,
            eval_data: None,
            loss: None,
            batch_size: default_batch(),
            subsample: None,
            device: default_device(),
            threads: None,
            workers: None,
            map: Vec::new(),
            allow_unexpected: false,
            worker: None,
            worker_memory_limit: None,
        }
    }
}

/// Parses `4G`, `512M`, `100k`, `1GiB` or plain bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
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
pub fn check_device(s: &str) -> Result<(), String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("cpu") || s == "cuda" {
        return Ok(());
    }
    match s.strip_prefix("cuda:").map(|n| n.parse::<usize>()) {
        Some(Ok(_)) => Ok(()),
        _ => Err(format!("device {s:?}: expected cpu, cuda or cuda:N")),
    }
}

impl ModelContract {
    /// Checks every value, naming the key (`--flag` on the command line, the key in `[run.model]`).
    pub fn validate(&self) -> Result<()> {
        if self.model_dir.is_none() && (self.model.is_none() || self.eval_data.is_none()) {
            bail!("model_dir: missing (give model_dir, or both model and eval_data)");
        }
        if self.batch_size == 0 {
            bail!("batch_size: must be at least 1");
        }
        if self.subsample == Some(0) {
            bail!("subsample: must be at least 1");
        }
        if self.threads == Some(0) {
            bail!("threads: must be at least 1");
        }
        if self.workers == Some(0) {
            bail!("workers: must be at least 1");
        }
        if let Some(l) = &self.loss {
            l.parse::<crate::model::Loss>().map_err(|e| anyhow!("loss: {e}"))?;
        }
        check_device(&self.device).map_err(|e| anyhow!("device: {e}"))?;
        self.bind_rules().map_err(|e| anyhow!("map: {e}"))?;
        if let Some(m) = &self.worker_memory_limit {
            parse_bytes(m).map_err(|e| anyhow!("worker_memory_limit: {e}"))?;
        }
        Ok(())
    }

    /// The checks of [`ModelContract::validate`] that the command line can get wrong without a model
    /// folder, named by flag.
    pub fn validate_flags(&self) -> Result<()> {
        if self.threads == Some(0) {
            bail!("--threads: must be at least 1");
        }
        if self.workers == Some(0) {
            bail!("--workers: must be at least 1");
        }
        if let Some(m) = &self.worker_memory_limit {
            parse_bytes(m).map_err(|e| anyhow!("--worker-memory-limit: {e}"))?;
        }
        Ok(())
    }

    /// Whether this asks for a GPU.
    pub fn wants_gpu(&self) -> bool {
        !self.device.trim().eq_ignore_ascii_case("cpu")
    }

    /// The contract each worker loads (files resolved from `model_dir`), with `threads` intra-op threads.
    pub fn protocol_contract(&self, threads: Option<usize>) -> Result<Contract> {
        let mut loss = self.loss.clone();
        let (mut model, mut eval) = (self.model.clone(), self.eval_data.clone());
        if let Some(dir) = &self.model_dir {
            let export = crate::model::read_export_dir(dir)?;
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
        Ok(Contract {
            model: Some(model),
            eval_data: Some(eval),
            factory: None,
            loss,
            batch_size: self.batch_size,
            subsample: self.subsample,
            device: self.device.trim().to_string(),
            threads,
        })
    }

    /// How checkpoint keys map to the module's names (`--map`, `--allow-unexpected`).
    pub fn bind_rules(&self) -> Result<BindRules, String> {
        let mut b = BindRules { allow_unexpected: self.allow_unexpected, ..BindRules::default() };
        for p in &self.map {
            let Some((from, to)) = p.split_once('=') else {
                return Err(format!("mapping {p:?} is not of the form checkpoint_name=module_name"));
            };
            b.mapping.push((from.trim().to_string(), to.trim().to_string()));
        }
        Ok(b)
    }

    /// How to start this contract's workers: the executable found, low priority, the memory limit.
    pub fn worker_options(&self) -> Result<WorkerOptions> {
        let program = locate_worker(self.worker.as_deref())?;
        let mut o = WorkerOptions::new(program);
        if let Some(m) = &self.worker_memory_limit {
            o.memory_limit = Some(parse_bytes(m).map_err(|e| anyhow!("--worker-memory-limit: {e}"))?);
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
