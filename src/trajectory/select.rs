//! Which tensors take part in the trajectory: all float parameters by default; optionally without 1-D
//! tensors (biases and batch-norm γ/β, the reference code's `biasbn`), and by include/exclude globs.
//! Batch-norm running statistics are buffers, not parameters, and are left out unless asked for.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// Name suffixes of float buffers that a state dict holds beside the parameters.
pub(crate) const BUFFER_SUFFIXES: [&str; 2] = ["running_mean", "running_var"];

/// The user's choice of tensors, as configured (plain data, serializable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Selection {
    /// Leave out tensors with at most one dimension (biases, batch-norm weights).
    pub exclude_1d: bool,
    /// Globs a tensor name must match (any of them); empty = every tensor.
    pub include: Vec<String>,
    /// Globs that remove a tensor even when included.
    pub exclude: Vec<String>,
    /// Keep batch-norm running statistics (`*running_mean`, `*running_var`), which are buffers.
    pub include_buffers: bool,
}

/// A compiled [`Selection`].
#[derive(Clone, Debug)]
pub struct TensorFilter {
    exclude_1d: bool,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    include_buffers: bool,
}

fn compile(globs: &[String], what: &str) -> anyhow::Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob = Glob::new(g).map_err(|e| anyhow::anyhow!("bad {what} glob {g:?}: {e}"))?;
        b.add(glob);
    }
    Ok(Some(b.build().map_err(|e| anyhow::anyhow!("bad {what} globs: {e}"))?))
}

impl TensorFilter {
    pub fn new(sel: &Selection) -> anyhow::Result<TensorFilter> {
        Ok(TensorFilter {
            exclude_1d: sel.exclude_1d,
            include: compile(&sel.include, "include")?,
            exclude: compile(&sel.exclude, "exclude")?,
            include_buffers: sel.include_buffers,
        })
    }

    /// Whether the float tensor `name` with `shape` takes part.
    pub(crate) fn selects(&self, name: &str, shape: &[usize]) -> bool {
        if self.exclude_1d && shape.len() <= 1 {
            return false;
        }
        if !self.include_buffers && BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            return false;
        }
        if let Some(inc) = &self.include
            && !inc.is_match(name)
        {
            return false;
        }
        if let Some(exc) = &self.exclude
            && exc.is_match(name)
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_parameters_and_drops_running_stats() {
        let f = TensorFilter::new(&Selection::default()).unwrap();
        assert!(f.selects("fc.weight", &[3, 4]));
        assert!(f.selects("fc.bias", &[3]));
        assert!(!f.selects("bn.running_mean", &[3]));
        assert!(!f.selects("bn.running_var", &[3]));
    }

    #[test]
    fn exclude_1d_and_globs() {
        let sel = Selection {
            exclude_1d: true,
            include: vec!["layer1.*".into(), "fc*".into()],
            exclude: vec!["*.conv2.*".into()],
            include_buffers: false,
        };
        let f = TensorFilter::new(&sel).unwrap();
        assert!(f.selects("layer1.0.conv1.weight", &[8, 3, 3, 3]));
        assert!(!f.selects("layer1.0.conv2.weight", &[8, 8, 3, 3]));
        assert!(!f.selects("layer1.0.conv1.bias", &[8]));
        assert!(!f.selects("layer2.0.conv1.weight", &[8, 3, 3, 3]));
        assert!(f.selects("fc.weight", &[10, 8]));
        assert!(!f.selects("scalar", &[]));
    }

    #[test]
    fn bad_glob_is_an_error() {
        let sel = Selection { include: vec!["a[".into()], ..Default::default() };
        let e = TensorFilter::new(&sel).unwrap_err().to_string();
        assert!(e.contains("include glob"), "{e}");
    }
}
