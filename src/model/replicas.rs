//! Splitting a thread budget between model replicas and libtorch's intra-op threads.
//!
//! A grid point is one evaluation of the whole eval set. Small models scale poorly inside one forward
//! pass (every operator synchronises its threads; 2 threads give ~1.6× on the digits CNN), while grid
//! points are independent: with T threads, T copies of the model each evaluating its own points on one
//! thread use the cores fully. Copies cost memory (each holds its own parameters and activations), so
//! automatic replication stops at [`REPLICA_BUDGET`] bytes of extra weights; on a GPU one copy is used.

use super::net::Model;
use anyhow::Result;
use tch::Device;

/// Most bytes of extra model weights automatic replication may add (the sidecar stays small).
pub const REPLICA_BUDGET: usize = 256 << 20;

/// How many copies of the model evaluate points at once, and libtorch threads inside each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadPlan {
    pub replicas: usize,
    pub intra_op: usize,
}

impl ThreadPlan {
    /// `threads`: the whole budget; `points`: grid points left to compute; `requested`: an explicit
    /// replica count (`--replicas`), otherwise chosen: one per thread on the CPU while the copies fit the
    /// budget, one on a GPU.
    pub fn choose(
        threads: usize,
        device: Device,
        slot_bytes: usize,
        points: usize,
        requested: Option<usize>,
    ) -> ThreadPlan {
        let threads = threads.max(1);
        let replicas = match requested {
            Some(r) => r.max(1),
            None if device != Device::Cpu => 1,
            None => {
                let fit = 1 + REPLICA_BUDGET / slot_bytes.max(1);
                threads.min(fit)
            }
        };
        let replicas = replicas.min(points.max(1));
        ThreadPlan { replicas, intra_op: (threads / replicas).max(1) }
    }
}

/// The copies beyond the caller's own model, and the intra-op threads each worker uses.
pub struct Replicas {
    pub(crate) models: Vec<Model>,
    pub(crate) intra_op: usize,
}

impl Replicas {
    /// No copies: points are evaluated one by one on the calling thread, with its thread settings.
    pub fn none() -> Replicas {
        Replicas { models: Vec::new(), intra_op: 0 }
    }

    /// The copies [`ThreadPlan::choose`] picks for `model` to fill `points` grid points with `threads`.
    pub fn for_grid(
        model: &Model,
        threads: usize,
        points: usize,
        requested: Option<usize>,
    ) -> Result<Replicas> {
        let plan = ThreadPlan::choose(threads, model.device(), model.slot_bytes(), points, requested);
        Replicas::new(model, plan)
    }

    /// `plan.replicas - 1` copies of `model` (the caller's model is the first worker; with one, points
    /// are evaluated on the calling thread).
    pub fn new(model: &Model, plan: ThreadPlan) -> Result<Replicas> {
        let models = (1..plan.replicas).map(|_| model.replicate()).collect::<Result<Vec<_>>>()?;
        Ok(Replicas { models, intra_op: plan.intra_op })
    }

    /// libtorch threads inside each worker's forward passes.
    pub fn intra_op(&self) -> usize {
        self.intra_op
    }

    /// Workers in all, counting the caller's model.
    pub fn workers(&self) -> usize {
        1 + self.models.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_replica_per_thread_for_small_models_on_cpu() {
        let p = ThreadPlan::choose(4, Device::Cpu, 1 << 20, 441, None);
        assert_eq!(p, ThreadPlan { replicas: 4, intra_op: 1 });
    }

    #[test]
    fn budget_limits_copies_of_large_models() {
        // 200 MiB of weights: one extra copy fits the 256 MiB budget, two don't.
        let p = ThreadPlan::choose(8, Device::Cpu, 200 << 20, 441, None);
        assert_eq!(p, ThreadPlan { replicas: 2, intra_op: 4 });
        let p = ThreadPlan::choose(8, Device::Cpu, 1 << 30, 441, None);
        assert_eq!(p, ThreadPlan { replicas: 1, intra_op: 8 });
    }

    #[test]
    fn gpu_uses_one_copy_and_explicit_counts_win() {
        assert_eq!(ThreadPlan::choose(4, Device::Cuda(0), 1 << 20, 441, None).replicas, 1);
        assert_eq!(
            ThreadPlan::choose(4, Device::Cpu, 1 << 20, 441, Some(2)),
            ThreadPlan { replicas: 2, intra_op: 2 }
        );
    }

    #[test]
    fn never_more_copies_than_points_left() {
        assert_eq!(
            ThreadPlan::choose(8, Device::Cpu, 1 << 20, 3, None),
            ThreadPlan { replicas: 3, intra_op: 2 }
        );
        assert_eq!(ThreadPlan::choose(8, Device::Cpu, 1 << 20, 0, None).replicas, 1);
    }
}
