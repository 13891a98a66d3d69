//! The learning rate of a checkpoint that carries no optimizer state (or whose state is not read): the
//! scheduler's `_last_lr` (HF `scheduler.pt`, Lightning `lr_schedulers[0]`, a plain dict's `scheduler`)
//! and HF `trainer_state.json`'s last logged `learning_rate` — the same sources
//! [`OptimizerState::lr`](super::OptimizerState::lr) falls back to.

use super::{LrSources, Opened, last_lr, logged_lr};
use crate::{Checkpoint, CheckpointError, Layout};

impl LrSources {
    /// What checkpoint `ck` says of its learning rate without its optimizer state; an unreadable
    /// scheduler file is an error naming it, absent sources are `None`.
    pub fn of(ck: &Checkpoint) -> Result<LrSources, CheckpointError> {
        let mut out = LrSources::default();
        match ck.layout {
            Layout::HfFolder => {
                let sched = ck.path.join("scheduler.pt");
                if sched.is_file() {
                    out.scheduler_last_lr = last_lr(&Opened::open(&sched)?.archive.root);
                }
                out.logged = logged_lr(&ck.path.join("trainer_state.json"));
            }
            Layout::Lightning | Layout::File if ck.path.is_file() && !is_safetensors(&ck.path) => {
                let root = Opened::open(&ck.path)?.archive.root;
                let sched = if ck.layout == Layout::Lightning {
                    root.get("lr_schedulers").and_then(|v| v.items()).and_then(|l| l.first().cloned())
                } else {
                    ["scheduler", "lr_scheduler", "scheduler_state_dict"].iter().find_map(|k| root.get(k))
                };
                out.scheduler_last_lr = sched.as_ref().and_then(last_lr);
            }
            _ => {}
        }
        Ok(out)
    }

    /// The learning rate of group 0 these sources give: the scheduler's, else the logged one, with
    /// where it came from.
    pub fn first(&self) -> Option<(f64, &'static str)> {
        let s =
            self.scheduler_last_lr.as_ref().and_then(|v| v.first().copied()).map(|x| (x, "scheduler state"));
        s.or(self.logged.map(|(_, x)| (x, "trainer_state.json")))
    }
}

fn is_safetensors(p: &std::path::Path) -> bool {
    p.extension().is_some_and(|e| e == "safetensors")
}
