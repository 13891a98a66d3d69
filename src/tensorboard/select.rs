//! Which tensors get their own norm series and histograms: the ones whose names match the globs,
//! then the `top_k` largest (by element count, ties by name) — the rule the daemon's `[metrics]`
//! section uses for `landscaped_tensor_norm`, so TensorBoard and Prometheus show the same tensors.

use crate::store::checkpoints::TensorRecord;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
pub struct TensorChoice {
    globs: GlobSet,
    top_k: usize,
}

impl Default for TensorChoice {
    /// No globs, the 8 largest tensors (the daemon's `metrics.top_k` default).
    fn default() -> Self {
        TensorChoice { globs: GlobSet::empty(), top_k: 8 }
    }
}

impl TensorChoice {
    /// The error names the glob that does not parse.
    pub fn new(globs: &[String], top_k: usize) -> anyhow::Result<TensorChoice> {
        let mut b = GlobSetBuilder::new();
        for g in globs {
            b.add(Glob::new(g).map_err(|e| anyhow::anyhow!("tensor glob {g:?}: {e}"))?);
        }
        Ok(TensorChoice { globs: b.build()?, top_k })
    }

    /// The chosen float tensors (with statistics) of one checkpoint: glob matches in checkpoint order,
    /// then the largest.
    pub fn choose<'a>(&self, tensors: &'a [TensorRecord]) -> Vec<&'a TensorRecord> {
        let with_stats: Vec<&TensorRecord> = tensors.iter().filter(|t| t.stats.is_some()).collect();
        let mut taken = BTreeSet::new();
        let mut out = Vec::new();
        for t in &with_stats {
            if self.globs.is_match(&t.name) && taken.insert(t.name.as_str()) {
                out.push(*t);
            }
        }
        let numel = |t: &TensorRecord| t.stats.as_ref().map_or(0, |s| s.numel);
        let mut by_size = with_stats.clone();
        by_size.sort_by(|a, b| numel(b).cmp(&numel(a)).then_with(|| a.name.cmp(&b.name)));
        for t in by_size.into_iter().take(self.top_k) {
            if taken.insert(t.name.as_str()) {
                out.push(t);
            }
        }
        out
    }
}
