//! `landscaped info`: version, where libtorch was linked from, and the devices it can use.

use super::Cli;
use super::output::Table;
use serde_json::json;

pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let rt = crate::model::device::runtime_info();
    let mut t = Table::new(["key", "value"]);
    t.push(vec![json!("version"), json!(env!("CARGO_PKG_VERSION"))]);
    t.push(vec![json!("libtorch"), json!(option_env!("LANDSCAPED_LIBTORCH_LIB").unwrap_or("unknown"))]);
    t.push(vec![json!("data_dir"), json!(cli.data_dir().display().to_string())]);
    t.push(vec![json!("torch_cuda_linked"), json!(rt.torch_cuda_linked)]);
    t.push(vec![json!("cuda_available"), json!(rt.cuda_available)]);
    t.push(vec![json!("cuda_devices"), json!(rt.cuda_devices)]);
    t.push(vec![json!("cudnn_available"), json!(rt.cudnn_available)]);
    t.push(vec![json!("cpu_threads"), json!(rt.cpu_threads)]);
    t.print(cli.format)?;
    Ok(())
}
