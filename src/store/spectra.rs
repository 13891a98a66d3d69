//! Records of the layers' spectra (one sled tree), written by `landscaped spectra` and the daemon's
//! spectra job, read by the CLI, the API, /metrics and the plots. Every struct is `#[serde(default)]`.
//!
//! | tree | key | record |
//! |---|---|---|
//! | `spectra` | `run \0 step` | [`SpectraRecord`] |

use super::Record;
use landscaped_maths::spectra::metrics::{LayerSpectrum, Summary};
use serde::{Deserialize, Serialize};

/// A tensor that is a layer but was not measured, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefusedLayer {
    pub name: String,
    pub why: String,
}

/// Every layer's spectrum at one checkpoint. Each layer says whether its eigenvalues are exact
/// (`LayerSpectrum::exact`); layers not measured are listed in `refused` with the reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpectraRecord {
    pub run: String,
    pub step: u64,
    pub checkpoint: String,
    pub layers: Vec<LayerSpectrum>,
    pub refused: Vec<RefusedLayer>,
    pub summary: Option<Summary>,
    pub threads: usize,
    pub seconds: f64,
    pub computed_unix: u64,
}

impl Record for SpectraRecord {
    const TREE: &'static str = "spectra";
    const SCHEMA: u32 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let rec = SpectraRecord { run: "a".into(), step: 7, threads: 1, ..Default::default() };
        crate::store::run_step::assert_round_trip(&[rec.clone(), SpectraRecord { step: 2, ..rec }]);
    }
}
