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
//! `workers = N` (worker processes sharing `threads`, as `--workers`) is accepted too. In a job section
//! `threads` defaults to 1 (the trainer keeps its CPUs), on the command line to one per core.
//!
//! A job section is split in two: the [`ModelContract`]'s keys (read off the type, see
//! [`contract_keys`]) go to the contract, the rest to the job's own struct (each rejects keys it doesn't
//! know); the contract is checked by its one validator ([`ModelContract::check`]).

use crate::workers::contract::{ModelContract, contract_keys};
use anyhow::{Result, anyhow};

/// A job section's `threads` when none is given: keep the trainer's CPUs free.
pub(crate) const JOB_THREADS: usize = 1;

/// Splits a job section into its model contract (checked, errors naming the key) and the job's own keys.
pub fn split(section: &toml::Value) -> Result<(ModelContract, toml::Value)> {
    let table = section.as_table().ok_or_else(|| anyhow!("expected a table"))?;
    let keys = contract_keys();
    let (mine, rest): (toml::Table, toml::Table) =
        table.clone().into_iter().partition(|(k, _)| keys.iter().any(|m| m == k));
    let mut m: ModelContract = toml::Value::Table(mine).try_into().map_err(|e| anyhow!("{e}"))?;
    m.threads.get_or_insert(JOB_THREADS);
    m.validate()?;
    Ok((m, toml::Value::Table(rest)))
}

/// The device a job section asks for, if not the CPU (the daemon hides GPUs unless `gpu = true`).
pub(crate) fn gpu_device(section: &toml::Value) -> Option<&str> {
    let device = section.get("device").and_then(|d| d.as_str()).unwrap_or("cpu");
    (!device.trim().eq_ignore_ascii_case("cpu")).then_some(device)
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
        let a = &m;
        assert_eq!((a.threads, a.batch_size, a.device.as_str()), (Some(2), 256, "cuda:1"));
        assert_eq!(a.protocol_contract(None).unwrap().loss.as_deref(), Some("mse"));
        assert_eq!(a.bind_rules().unwrap().mapping, vec![("a.w".to_string(), "w".to_string())]);
    }

    #[test]
    fn the_accepted_keys_are_the_flags_and_threads_default_to_one() {
        // Every flag of the contract is a key (clap's long names, dashes as underscores): the config
        // can't lack one again.
        let keys = contract_keys();
        let cmd = <ModelContract as clap::Args>::augment_args(clap::Command::new("t"));
        let flags: Vec<String> =
            cmd.get_arguments().filter_map(|a| a.get_long()).map(|l| l.replace('-', "_")).collect();
        let mut k = keys.clone();
        let mut f = flags.clone();
        k.sort();
        f.sort();
        assert_eq!(k, f);
        for key in ["workers", "worker", "worker_memory_limit", "threads"] {
            assert!(keys.iter().any(|k| k == key), "{key}");
        }
        let (m, rest) = split(&section("every = 1\nmodel_dir = \"/m\"\nworkers = 2")).unwrap();
        assert_eq!(rest, section("every = 1"));
        assert_eq!((m.workers, m.threads), (Some(2), Some(1)));
        assert!(
            split(&section("model_dir = \"/m\"\nworkers = 0"))
                .err()
                .unwrap()
                .to_string()
                .starts_with("workers: ")
        );
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
        assert_eq!(m.backend().unwrap(), crate::workers::contract::Backend::Python);
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
        let a = &m;
        assert_eq!(a.worker.as_deref(), Some(std::path::Path::new("/opt/lw")));
        assert_eq!(a.worker_memory_limit.as_deref(), Some("512M"));
        assert_eq!(a.worker_call_timeout, Some(30));
        // What the worker is started with: the limit in bytes, the executable named in the error when
        // it is missing.
        let e = a.worker_options().err().unwrap().to_string();
        assert!(e.contains("/opt/lw (given)"), "{e}");
        let py = section("factory = \"m:f\"\nworker_memory_limit = \"2G\"\nworker_call_timeout = 7");
        let o = split(&py).unwrap().0.worker_options().unwrap();
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
        let a = &m;
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
