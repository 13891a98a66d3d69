//! A model contract resolved once, before any worker starts: the backend, the thread plan, where the
//! workers come from, what each loads ([`WireContract`]), how checkpoints bind ([`BindRules`]), how
//! local workers are started, and a stable hashed identity of the model in use.

use super::client::WorkerOptions;
use super::contract::{Backend, ModelContract, WorkerSource};
use super::pool::{ThreadPlan, default_threads};
use anyhow::{Result, anyhow};
use landscaped_formats::Checkpoint;
use landscaped_protocol::messages::{BindRules, WireContract};
use std::path::Path;

/// How a job's work is split between workers.
#[derive(Clone, Copy, Debug)]
pub enum Sizing {
    /// Independent grid points: as many workers as [`ThreadPlan::choose`] gives for this many points
    /// and the centre checkpoint's weights.
    Grid { points: usize },
    /// Probes or runs at one point: `--workers` (default one) sharing the thread budget.
    Probes,
}

/// See the module docs. (No `Debug`: the source may hold the launcher token.)
#[derive(Clone)]
pub struct ModelPlan {
    pub contract: ModelContract,
    pub backend: Backend,
    pub threads: ThreadPlan,
    pub source: WorkerSource,
    /// What every worker loads (`threads` = the plan's intra-op threads, `checkpoint` = the centre).
    pub wire: WireContract,
    pub bind: BindRules,
    /// How local workers are started (`None` for workers from a launcher when no executable is found).
    pub options: Option<WorkerOptions>,
}

impl ModelPlan {
    /// Resolves `contract` for work about `centre` (`None`: the model's own weights).
    pub fn resolve(contract: &ModelContract, centre: Option<&Path>, sizing: Sizing) -> Result<ModelPlan> {
        let bind = contract.bind_rules().map_err(|e| anyhow!("--map: {e}"))?;
        let threads = contract.threads.unwrap_or_else(default_threads);
        let plan = match sizing {
            Sizing::Grid { points } => {
                let weights = match centre {
                    Some(c) => checkpoint_weight_bytes(c)?,
                    None => 0,
                };
                ThreadPlan::choose(threads, contract.wants_gpu(), weights, points, contract.workers)
            }
            Sizing::Probes => {
                let n = contract.workers.unwrap_or(1).max(1);
                ThreadPlan { workers: n, intra_op: (threads / n).max(1) }
            }
        };
        let mut wire = contract.protocol_contract(Some(plan.intra_op))?;
        // A factory that takes the checkpoint path gets the centre's (to read a config beside the weights).
        wire.checkpoint = centre.map(Path::to_path_buf);
        let source = contract.worker_source(&wire.id())?;
        let options = match source {
            WorkerSource::Local => Some(contract.worker_options()?),
            WorkerSource::Listen(_) => contract.worker_options().ok(),
        };
        Ok(ModelPlan {
            contract: contract.clone(),
            backend: contract.backend()?,
            threads: plan,
            source,
            wire,
            bind,
            options,
        })
    }

    /// The model in use, hashed (model and evaluation files or factory, loss, batch, subsample,
    /// device, precision; not threads or the checkpoint): the same for every run of the same model.
    pub fn identity(&self) -> String {
        self.wire.id()
    }

    /// A stored record's identity: `prefix|centre|hash`, the hash over `parts` (each a canonical
    /// JSON text) and [`ModelPlan::identity`]. Stable across builds (FNV-1a, not `Debug` text).
    pub(crate) fn record_signature(&self, prefix: &str, centre: &Path, parts: &[String]) -> String {
        let mut h = Fnv::default();
        for p in parts {
            h.write(p.as_bytes());
            h.write(&[0]);
        }
        h.write(self.identity().as_bytes());
        format!("{prefix}|{}|{:016x}", centre.display(), h.0)
    }
}

/// Bytes the checkpoint's float tensors take as f32: what each extra worker adds in weights.
pub(crate) fn checkpoint_weight_bytes(path: &Path) -> Result<usize> {
    let ck = Checkpoint::open(path)?;
    Ok(ck.float_tensors().map(|(_, t)| t.numel() * 4).sum())
}

/// FNV-1a, 64 bits: a hash that stays the same from one build to the next.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_ignores_threads_and_follows_the_model() {
        let c = ModelContract { factory: Some("m:f".into()), threads: Some(4), ..Default::default() };
        let a = ModelPlan::resolve(&c, None, Sizing::Probes).unwrap();
        let b = ModelPlan::resolve(&ModelContract { threads: Some(1), ..c.clone() }, None, Sizing::Probes)
            .unwrap();
        assert_eq!(a.identity(), b.identity());
        assert_eq!(a.threads, ThreadPlan { workers: 1, intra_op: 4 });
        let d = ModelPlan::resolve(&ModelContract { loss: Some("mse".into()), ..c }, None, Sizing::Probes)
            .unwrap();
        assert_ne!(a.identity(), d.identity());
        let s = a.record_signature("slice", Path::new("/c.pt"), &["[1.0]".into()]);
        assert!(s.starts_with("slice|/c.pt|") && s.len() == "slice|/c.pt|".len() + 16, "{s}");
        assert_ne!(s, a.record_signature("slice", Path::new("/c.pt"), &["[2.0]".into()]));
        assert_eq!(s, b.record_signature("slice", Path::new("/c.pt"), &["[1.0]".into()]));
    }
}
