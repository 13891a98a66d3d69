//! The workers of one job: started here (pipes) or admitted as they dial in from a cluster's launcher,
//! prepared in parallel, lost ones left out (with a line), and shut down together. Their tasks go out
//! through the [task scheduler](super::scheduler).

use super::client::{Worker, WorkerError};
use super::contract::WorkerSource;
use super::listen::workers_from_launcher;
use super::plan::ModelPlan;
use super::pool::{SHUTDOWN_WITHIN, shutdown_all, start_workers};
use crate::cancel::Cancel;
use anyhow::{Result, anyhow};
use landscaped_protocol::messages::WireContract;

/// See the module docs.
pub struct WorkerSet {
    pub workers: Vec<Worker>,
    label: String,
}

/// The devices of extra local workers for a bare `--device cuda` on a node with several GPUs: one
/// worker per GPU the first worker's `hello` listed (`cuda:1`, `cuda:2`, …; the first has `cuda`,
/// i.e. `cuda:0`). Empty when the device names one GPU, or the count of workers was given.
pub(crate) fn extra_gpu_devices(device: &str, workers_given: bool, hello_devices: &[String]) -> Vec<String> {
    if workers_given || !device.trim().eq_ignore_ascii_case("cuda") {
        return Vec::new();
    }
    let gpus = hello_devices.iter().filter(|d| d.starts_with("cuda:")).count();
    (1..gpus).map(|i| format!("cuda:{i}")).collect()
}

impl WorkerSet {
    /// The first of a grid job's workers: one started here (its model's parameter list may show there
    /// is nothing to compute, see [`WorkerSet::start_rest`]), or every worker from a launcher.
    pub(crate) fn start_first(plan: &ModelPlan, label: &str, cancel: &Cancel) -> Result<WorkerSet> {
        Self::start(plan, 1, label, cancel)
    }

    /// All of a job's workers at once: the plan's count started here, or those that dial in.
    pub(crate) fn start_all(plan: &ModelPlan, label: &str, cancel: &Cancel) -> Result<WorkerSet> {
        Self::start(plan, plan.threads.workers, label, cancel)
    }

    fn start(plan: &ModelPlan, n: usize, label: &str, cancel: &Cancel) -> Result<WorkerSet> {
        let workers = match &plan.source {
            WorkerSource::Local => {
                let opts = plan.options.as_ref().ok_or_else(|| anyhow!("{label}: no worker executable"))?;
                start_workers(opts, &plan.wire, n, label)?
            }
            WorkerSource::Listen(l) => {
                let timeout = plan
                    .options
                    .as_ref()
                    .map_or(std::time::Duration::from_secs(120), |o| o.handshake_timeout);
                let mut ws =
                    workers_from_launcher(l, &plan.wire, plan.contract.threads, timeout, label, cancel)?;
                if let Some(secs) = plan.contract.worker_call_timeout {
                    for w in &mut ws {
                        w.set_call_timeout(std::time::Duration::from_secs(secs));
                    }
                }
                ws
            }
        };
        if workers.is_empty() {
            return Err(anyhow!("{label}: no worker started"));
        }
        Ok(WorkerSet { workers, label: label.to_string() })
    }

    /// Starts the rest of a local job's workers (nothing for workers from a launcher): one per further
    /// GPU for a bare `--device cuda`, else up to the plan's count. The plan's count becomes the set's.
    pub(crate) fn start_rest(&mut self, plan: &mut ModelPlan) -> Result<()> {
        let label = &self.label;
        if let (WorkerSource::Local, Some(opts)) = (&plan.source, &plan.options) {
            let devices = self.workers.first().map(|w| w.hello.devices.clone()).unwrap_or_default();
            let gpus = extra_gpu_devices(&plan.contract.device, plan.contract.workers.is_some(), &devices);
            if !gpus.is_empty() {
                for (i, d) in gpus.iter().enumerate() {
                    let c = WireContract { device: d.clone(), ..plan.wire.clone() };
                    let more = format!("{label} (GPU {}/{})", i + 2, gpus.len() + 1);
                    self.workers.extend(start_workers(opts, &c, 1, &more)?);
                }
            } else if plan.threads.workers > self.workers.len() {
                let n = plan.threads.workers - self.workers.len();
                self.workers.extend(start_workers(opts, &plan.wire, n, &format!("{label} (more)"))?);
                return Ok(());
            } else {
                return Ok(());
            }
        }
        plan.threads.workers = self.workers.len();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs `f` in every worker at once (one thread each); the results in the workers' order.
    pub fn each<T: Send>(
        &mut self,
        f: impl Fn(&mut Worker) -> Result<T, WorkerError> + Sync,
    ) -> Vec<Result<T, WorkerError>> {
        std::thread::scope(|s| {
            let f = &f;
            let hs: Vec<_> = self.workers.iter_mut().map(|w| s.spawn(move || f(w))).collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Err(WorkerError::Start("a worker thread panicked".into())))
                })
                .collect()
        })
    }

    /// Runs `f` in every worker at once and keeps the workers it succeeded in: a worker lost meanwhile
    /// is left out (with a line naming `what`), a model error is returned. Errors when every worker was
    /// lost.
    pub(crate) fn prepare<T: Send>(
        &mut self,
        what: &str,
        f: impl Fn(&mut Worker) -> Result<T, WorkerError> + Sync,
    ) -> Result<Vec<T>> {
        let results = self.each(f);
        let mut kept = Vec::with_capacity(self.workers.len());
        let mut out = Vec::with_capacity(self.workers.len());
        let mut first_err = None;
        for (w, r) in std::mem::take(&mut self.workers).into_iter().zip(results) {
            match r {
                Ok(t) => {
                    out.push(t);
                    kept.push(w);
                }
                Err(e) if e.is_worker_failure() => {
                    tracing::warn!("{}: worker {} was lost while {what}: {e}", self.label, w.what());
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.workers = kept;
        if self.workers.is_empty() {
            return Err(first_err.map_or_else(|| anyhow!("no worker"), |e| e.into()));
        }
        Ok(out)
    }

    /// Leaves out worker `i` (lost), with a line saying while doing `what`.
    pub(crate) fn lose(&mut self, i: usize, what: &str, e: &WorkerError) {
        if i < self.workers.len() {
            let w = self.workers.remove(i);
            tracing::warn!("{}: worker {} was lost {what}: {e}", self.label, w.what());
        }
    }

    /// Ends every worker (see [`shutdown_all`]), with a line for those that had to be stopped.
    pub fn shutdown(self) {
        let stopped = shutdown_all(self.workers, SHUTDOWN_WITHIN);
        if stopped > 0 {
            tracing::warn!("{}: {stopped} worker(s) did not answer shutdown; stopped", self.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_cuda_device_gets_one_local_worker_per_gpu() {
        let hello: Vec<String> =
            ["cpu", "cuda:0", "cuda:1", "cuda:2"].iter().map(|s| s.to_string()).collect();
        assert_eq!(extra_gpu_devices("cuda", false, &hello), vec!["cuda:1", "cuda:2"]);
        assert_eq!(extra_gpu_devices(" CUDA ", false, &hello), vec!["cuda:1", "cuda:2"]);
        // A named GPU, an explicit worker count, the CPU, or one GPU: no extra workers.
        assert!(extra_gpu_devices("cuda:1", false, &hello).is_empty());
        assert!(extra_gpu_devices("cuda", true, &hello).is_empty());
        assert!(extra_gpu_devices("cpu", false, &hello).is_empty());
        assert!(extra_gpu_devices("cuda", false, &["cpu".into(), "cuda:0".into()]).is_empty());
    }
}
