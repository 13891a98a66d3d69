//! Records of the stability job (one sled tree), written by `landscaped stability` and the daemon's
//! stability job, read by the CLI, the plots and the gauges. Every struct is `#[serde(default)]`.
//!
//! | tree | key | record |
//! |---|---|---|
//! | `stability` | `run \0 step` | [`StabilityRecord`] |

use super::Record;
use landscaped_maths::curvature::lanczos::Extremes;
use landscaped_maths::stability::critical::CriticalSharpness;
use serde::{Deserialize, Serialize};

/// One measured quantity against its threshold, with the raw numbers and the convention used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Against {
    /// `lambda_max`, `preconditioned_lambda_1`, `critical_sharpness`.
    pub quantity: String,
    pub value: f64,
    pub threshold: f64,
    /// value / threshold: 1.0 is at the edge of stability.
    pub ratio: f64,
    /// The threshold's formula and where it comes from, e.g. `2/η (gradient descent on a quadratic …)`.
    pub convention: String,
}

/// Stability of one checkpoint: the optimizer's thresholds against λmax, the preconditioned λ1 and
/// critical sharpness, and how each was computed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StabilityRecord {
    pub run: String,
    pub step: u64,
    pub model: String,
    pub loss: String,
    pub samples: usize,
    pub dim: usize,
    pub base_loss: f64,
    /// The optimizer as the job understood it (`sgd`, `sgd(momentum=0.9)`, `adam(…)`, or unknown) and
    /// the learning rate used (`None`: unknown), and where each came from.
    pub optimizer: String,
    pub lr: Option<f64>,
    pub source: String,
    /// Each quantity against its threshold (absent: not computed, see `notes`).
    pub rows: Vec<Against>,
    pub hessian: Option<Extremes>,
    pub preconditioned: Option<Extremes>,
    pub critical: Option<CriticalSharpness>,
    /// The direction critical sharpness searched along (`∇L`, `P⁻¹∇L`, or the optimizer's next update
    /// formed from the checkpoint's state).
    pub direction: String,
    /// Whether each Lanczos run started from the previous checkpoint's top vector.
    pub warm_hessian: bool,
    pub warm_preconditioned: bool,
    /// What could not be computed and why (missing learning rate, unknown optimizer, …).
    pub notes: Vec<String>,
    pub hvps: usize,
    pub forward_passes: usize,
    pub seconds: f64,
    pub computed_unix: u64,
}

impl StabilityRecord {
    /// The row of `quantity`, if computed.
    pub fn row(&self, quantity: &str) -> Option<&Against> {
        self.rows.iter().find(|r| r.quantity == quantity)
    }
}

impl Record for StabilityRecord {
    const TREE: &'static str = "stability";
    const SCHEMA: u32 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let rec = StabilityRecord {
            run: "a".into(),
            step: 7,
            rows: vec![Against {
                quantity: "lambda_max".into(),
                value: 19.0,
                threshold: 20.0,
                ratio: 0.95,
                ..Default::default()
            }],
            ..Default::default()
        };
        crate::store::run_step::assert_round_trip(&[rec.clone(), StabilityRecord { step: 2, ..rec.clone() }]);
        assert_eq!(rec.row("lambda_max").unwrap().ratio, 0.95);
    }
}
