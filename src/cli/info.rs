//! `landscaped info`: version, data folder, and what the model worker reports about itself (backend,
//! libtorch or PyTorch version, devices, capabilities) — `landscaped-worker`, or with `--python PATH` the
//! Python worker in that Python (a quick check of the environment a factory will run in). `landscaped` itself doesn't link libtorch: the
//! worker is started, asked `hello`, and stopped; when it can't start, the reason is printed instead.

use super::Cli;
use crate::table::Table;
use crate::workers::contract::ModelContract;
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// The worker executable to ask (default: landscaped-worker beside landscaped, or $LANDSCAPED_WORKER).
    #[arg(long)]
    pub worker: Option<std::path::PathBuf>,
    /// Ask the Python worker (python -m landscaped_worker) in this Python instead: its PyTorch, CUDA
    /// devices and capabilities.
    #[arg(long)]
    pub python: Option<std::path::PathBuf>,
}

pub fn run(cli: &Cli, a: &InfoArgs) -> anyhow::Result<()> {
    let mut t = Table::new(["key", "value"]);
    t.push(vec![json!("version"), json!(env!("CARGO_PKG_VERSION"))]);
    t.push(vec![json!("data_dir"), json!(cli.data_dir().display().to_string())]);
    let contract = ModelContract {
        worker: a.worker.clone(),
        backend: a.python.is_some().then(|| "python".to_string()),
        python: a.python.clone(),
        ..Default::default()
    };
    let started = contract.worker_options().and_then(|o| {
        let program = o.program.display().to_string();
        let w = crate::workers::Worker::start(&o)?;
        let hello = w.hello.clone();
        let _ = w.shutdown();
        Ok((program, hello))
    });
    match started {
        Ok((program, h)) => {
            t.push(vec![json!("worker"), json!(program)]);
            t.push(vec![json!("worker_protocol"), json!(h.protocol)]);
            t.push(vec![json!("backend"), json!(h.backend)]);
            t.push(vec![json!("backend_version"), json!(h.backend_version)]);
            t.push(vec![json!("devices"), json!(h.devices)]);
            t.push(vec![json!("capabilities"), json!(h.capabilities)]);
        }
        Err(e) => t.push(vec![json!("worker"), json!(format!("unavailable: {e:#}"))]),
    }
    t.print(cli.format)?;
    Ok(())
}
