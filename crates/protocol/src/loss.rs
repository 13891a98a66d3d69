//! The loss named in the model contract: `cross_entropy` (default), `mse`, `nll`, or `method` (the
//! module's own `loss(inputs, targets)` TorchScript method), and which of them give an accuracy.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// `F.cross_entropy(model(x), y)`: logits and integer class targets.
    #[default]
    CrossEntropy,
    /// `F.mse_loss(model(x), y)`: mean over elements.
    Mse,
    /// `F.nll_loss(model(x), y)`: the model outputs log-probabilities.
    Nll,
    /// `model.loss(x, y)`: a scalar mean loss computed by the module itself.
    Method,
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::CrossEntropy => "cross_entropy",
            Loss::Mse => "mse",
            Loss::Nll => "nll",
            Loss::Method => "method",
        }
    }

    /// Classification losses report accuracy (argmax of the output against the integer target).
    pub fn has_accuracy(self) -> bool {
        matches!(self, Loss::CrossEntropy | Loss::Nll)
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Loss {
    type Err = String;
    fn from_str(s: &str) -> Result<Loss, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "cross_entropy" | "crossentropy" | "ce" => Ok(Loss::CrossEntropy),
            "mse" => Ok(Loss::Mse),
            "nll" => Ok(Loss::Nll),
            "method" | "module" | "loss" => Ok(Loss::Method),
            other => Err(format!(
                "unknown loss {other:?} (expected cross_entropy, mse, nll, or method for the module's own loss(inputs, targets))"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!("cross_entropy".parse::<Loss>().unwrap(), Loss::CrossEntropy);
        assert_eq!("MSE".parse::<Loss>().unwrap(), Loss::Mse);
        assert_eq!("method".parse::<Loss>().unwrap(), Loss::Method);
        assert!("hinge".parse::<Loss>().is_err());
    }
}
