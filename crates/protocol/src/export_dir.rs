//! The folder `examples/landscaped_export.py` writes: `model.pt`, `eval.safetensors` and
//! `landscaped.toml` (the loss, and optionally other file names under `model` / `eval_data`). Read in
//! one place so the CLI and the daemon's jobs agree on what a `--model-dir` / `model_dir` means.

use super::loss::Loss;
use anyhow::{Context, Result, anyhow};
use std::path::{Path, PathBuf};

/// What an export folder names.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportDir {
    pub model: PathBuf,
    pub eval_data: PathBuf,
    /// The loss its landscaped.toml names, if any.
    pub loss: Option<Loss>,
}

/// Reads `dir/landscaped.toml` if present; without it the folder holds `model.pt` and `eval.safetensors`.
pub fn read_export_dir(dir: &Path) -> Result<ExportDir> {
    let (mut model, mut eval, mut loss) = ("model.pt".to_string(), "eval.safetensors".to_string(), None);
    let meta_path = dir.join("landscaped.toml");
    if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path).with_context(|| format!("{}", meta_path.display()))?;
        let meta: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow!("{}: not valid TOML: {e}", meta_path.display()))?;
        if let Some(l) = meta.get("loss").and_then(|v| v.as_str()) {
            loss = Some(l.parse::<Loss>().map_err(|e| anyhow!("{}: {e}", meta_path.display()))?);
        }
        if let Some(m) = meta.get("model").and_then(|v| v.as_str()) {
            model = m.to_string();
        }
        if let Some(m) = meta.get("eval_data").and_then(|v| v.as_str()) {
            eval = m.to_string();
        }
    }
    Ok(ExportDir { model: dir.join(model), eval_data: dir.join(eval), loss })
}
