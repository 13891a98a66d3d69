//! Optimizer-state telemetry of a checkpoint (one sled tree), written by ingest in the checkpoint's
//! own batch and read by the CLI, the API and /metrics. Every struct is `#[serde(default)]`.
//!
//! | tree | key | record |
//! |---|---|---|
//! | `optimizer_telemetry` | `run \0 step` | [`OptimizerRecord`] |

use super::Record;
pub use landscaped_maths::optimizer::Figures;
use serde::{Deserialize, Serialize};

/// The optimizer state of one checkpoint, as figures: per group, per tensor and over all of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizerRecord {
    pub run: String,
    pub step: u64,
    /// The file or folder the state was read from.
    pub source: String,
    /// `adam`, `adamw`, `adam_family`, `sgd` or `unknown`.
    pub kind: String,
    /// For an unknown kind: its param-group keys and state keys, listed (no figures are invented).
    pub group_keys: Vec<String>,
    pub state_keys: Vec<String>,
    /// The scheduler's `_last_lr` and the last logged learning rate (step, lr), where present.
    pub scheduler_last_lr: Option<Vec<f64>>,
    pub logged_lr: Option<(u64, f64)>,
    /// Why parameters are numbered (`#i`) rather than named, when they are.
    pub names_note: Option<String>,
    pub groups: Vec<GroupFigures>,
    pub tensors: Vec<TensorFigures>,
    pub total: Figures,
}

impl Record for OptimizerRecord {
    const TREE: &'static str = "optimizer_telemetry";
    const SCHEMA: u32 = 1;
}

/// One param group's hyperparameters and figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupFigures {
    pub index: usize,
    /// The group's effective learning rate (its `lr`, else the scheduler's, else the logged one).
    pub lr: Option<f64>,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub eps: Option<f64>,
    pub weight_decay: Option<f64>,
    pub momentum: Option<f64>,
    /// The largest `step` of its parameters.
    pub step: Option<f64>,
    pub params: u64,
    pub figures: Figures,
}

/// One parameter's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TensorFigures {
    /// Its name, or `#i` (PyTorch's index) where the names could not be mapped.
    pub name: String,
    pub group: usize,
    pub step: Option<f64>,
    pub figures: Figures,
}
