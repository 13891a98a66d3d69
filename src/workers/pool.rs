//! How many workers a job gets and starting them: a thread budget split between worker processes and
//! the intra-op threads inside each ([`ThreadPlan`]), and [`start_workers`], which starts them at once
//! and loads the model contract in each.
//!
//! A grid point is one evaluation of the whole eval set. Small models scale poorly inside one forward
//! pass (every operator synchronises its threads; 2 threads give ~1.6× on the digits CNN), while grid
//! points are independent: with T threads, T workers each evaluating its own points on one thread use
//! the cores fully. Workers cost memory (each holds its own weights and activations, and libtorch's own
//! few tens of MiB), so automatic sizing stops at [`WORKER_WEIGHT_BUDGET`] bytes of extra weights; on a
//! GPU one worker is used.

use super::client::{Worker, WorkerError, WorkerOptions};
use landscaped_protocol::messages::WireContract;

/// Most bytes of extra model weights automatic sizing may add (the sidecar stays small).
pub(crate) const WORKER_WEIGHT_BUDGET: usize = 256 << 20;

/// How many workers evaluate points at once, and libtorch threads inside each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadPlan {
    pub workers: usize,
    pub intra_op: usize,
}

impl ThreadPlan {
    /// `threads`: the whole budget; `points`: grid points left to compute; `requested`: an explicit
    /// worker count (`--workers`), otherwise chosen: one per thread on the CPU while their weights fit
    /// the budget, one on a GPU.
    pub(crate) fn choose(
        threads: usize,
        gpu: bool,
        weight_bytes: usize,
        points: usize,
        requested: Option<usize>,
    ) -> ThreadPlan {
        let threads = threads.max(1);
        let workers = match requested {
            Some(r) => r.max(1),
            None if gpu => 1,
            None => {
                let fit = 1 + WORKER_WEIGHT_BUDGET / weight_bytes.max(1);
                threads.min(fit)
            }
        };
        let workers = workers.min(points.max(1));
        ThreadPlan { workers, intra_op: (threads / workers).max(1) }
    }
}

/// The CPU threads a command may use when none are given: one per core this process may run on.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Starts `n` workers with `opts` (labelled `label i/n`) and loads `contract` in each, the handshakes
/// and loading in parallel; on any failure the others are stopped and the first error is returned.
/// The processes are started on the calling thread, which must outlive them (see [`Worker::spawn`]).
pub(crate) fn start_workers(
    opts: &WorkerOptions,
    contract: &WireContract,
    n: usize,
    label: &str,
) -> Result<Vec<Worker>, WorkerError> {
    let n = n.max(1);
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let mut o = opts.clone();
        o.label = if n > 1 { format!("{label} {}/{n}", i + 1) } else { label.to_string() };
        workers.push(Worker::spawn(&o)?);
    }
    let timeout = opts.handshake_timeout;
    let results: Vec<Result<(), WorkerError>> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .map(|w| {
                s.spawn(move || {
                    w.handshake(timeout)?;
                    w.load_model(contract).map(|_| ())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(WorkerError::Start("a worker start-up thread panicked".into())))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(workers)
}

/// How long workers get to answer `shutdown` after a job before they are stopped.
pub(crate) const SHUTDOWN_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Ends every worker after a job: `shutdown` to each at once; one that has not answered `within` (a
/// stalled worker, or one whose node went away with its connection left open) is stopped — its process
/// killed, its connection closed — so the command ends when the work is done. Returns how many were
/// stopped that way.
pub(crate) fn shutdown_all(workers: Vec<Worker>, within: std::time::Duration) -> usize {
    let aborters: Vec<_> = workers.iter().map(|w| w.aborter()).collect();
    std::thread::scope(|s| {
        let hs: Vec<_> = workers
            .into_iter()
            .map(|w| {
                s.spawn(move || {
                    let _ = w.shutdown();
                })
            })
            .collect();
        let t = std::time::Instant::now();
        while hs.iter().any(|h| !h.is_finished()) && t.elapsed() < within {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut stopped = 0;
        for (h, a) in hs.iter().zip(&aborters) {
            if !h.is_finished() {
                a.abort();
                stopped += 1;
            }
        }
        stopped
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_thread_for_small_models_on_cpu() {
        let p = ThreadPlan::choose(4, false, 1 << 20, 441, None);
        assert_eq!(p, ThreadPlan { workers: 4, intra_op: 1 });
    }

    #[test]
    fn budget_limits_workers_for_large_models() {
        // 200 MiB of weights: one extra worker fits the 256 MiB budget, two don't.
        let p = ThreadPlan::choose(8, false, 200 << 20, 441, None);
        assert_eq!(p, ThreadPlan { workers: 2, intra_op: 4 });
        let p = ThreadPlan::choose(8, false, 1 << 30, 441, None);
        assert_eq!(p, ThreadPlan { workers: 1, intra_op: 8 });
    }

    #[test]
    fn gpu_uses_one_worker_and_explicit_counts_win() {
        assert_eq!(ThreadPlan::choose(4, true, 1 << 20, 441, None).workers, 1);
        assert_eq!(
            ThreadPlan::choose(4, false, 1 << 20, 441, Some(2)),
            ThreadPlan { workers: 2, intra_op: 2 }
        );
    }

    #[test]
    fn never_more_workers_than_points_left() {
        assert_eq!(ThreadPlan::choose(8, false, 1 << 20, 3, None), ThreadPlan { workers: 3, intra_op: 2 });
        assert_eq!(ThreadPlan::choose(8, false, 1 << 20, 0, None).workers, 1);
    }

    #[test]
    fn a_worker_that_never_answers_shutdown_is_stopped_after_the_limit() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peers = Vec::new();
        let mut workers = Vec::new();
        for i in 0..2 {
            peers.push(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap());
            let (s, _) = l.accept().unwrap();
            workers.push(Worker::from_tcp(s, format!("frozen {i}")).unwrap());
        }
        // The peers keep their sockets open and never answer (a SIGSTOPped worker).
        let t = std::time::Instant::now();
        let stopped = shutdown_all(workers, std::time::Duration::from_millis(300));
        assert_eq!(stopped, 2);
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "{:?}", t.elapsed());
        // Their connections were closed: each peer reads the shutdown request, then the end.
        for mut p in peers {
            p.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut p, &mut all).unwrap();
            assert!(!all.is_empty());
        }
    }
}
