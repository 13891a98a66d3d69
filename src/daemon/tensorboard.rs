//! The daemon's TensorBoard output: for each run with `tensorboard = "DIR"`, landscaped's event file
//! in DIR ([`crate::tensorboard::RunLog`]), written as records land: each checkpoint after its ingest
//! (scalars, histograms), each job's records after it ran (scalars, charts), and at start whatever the
//! store holds that the file lacks (a daemon stopped between a commit and its events, or the file
//! removed). The file is reopened after a restart, its damaged tail (a daemon killed mid-write) cut
//! off, and steps already written are not written again.
//!
//! A failure (folder not writable, disk full) is one log line naming the file and the cause and
//! `landscaped_tensorboard_errors_total{run}`; ingest and jobs go on, and the next record tries again
//! (reopening the file). `landscaped_tensorboard_events_total{run, kind}` counts what was written.

use crate::daemon::config::{Config, RunConfig};
use crate::store::Store;
use crate::tensorboard::{RunLog, TensorChoice, Written};
use prometheus::{IntCounterVec, Opts, Registry};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// The metrics registered here (beside [`crate::daemon::metrics::METRIC_NAMES`]), when a run writes to
/// TensorBoard.
pub const TENSORBOARD_METRIC_NAMES: &[&str] =
    &["landscaped_tensorboard_errors_total", "landscaped_tensorboard_events_total"];

struct Target {
    dir: PathBuf,
    settings: String,
    /// None until opened (or after a failure: reopened on the next record).
    log: Mutex<Option<RunLog>>,
}

pub struct TensorBoardLogs {
    runs: HashMap<String, Target>,
    choice: TensorChoice,
    errors: Option<IntCounterVec>,
    events: Option<IntCounterVec>,
}

impl TensorBoardLogs {
    /// The runs of `config` that write to TensorBoard; counters registered in `registry`.
    pub fn new(config: &Config, registry: &Registry) -> TensorBoardLogs {
        let runs: HashMap<String, Target> = config
            .runs
            .iter()
            .filter_map(|r| {
                let dir = r.tensorboard.clone()?;
                Some((
                    r.name.clone(),
                    Target { dir, settings: settings_of(config, r), log: Mutex::new(None) },
                ))
            })
            .collect();
        let choice = TensorChoice::new(&config.metrics.tensors, config.metrics.top_k).unwrap_or_default();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
            registry.register(Box::new(c.clone())).ok()?;
            Some(c)
        };
        let (errors, events) = if runs.is_empty() {
            (None, None)
        } else {
            (
                counter(
                    "landscaped_tensorboard_errors_total",
                    "Failed writes of a run's TensorBoard events (retried with the next record).",
                    &["run"],
                ),
                counter(
                    "landscaped_tensorboard_events_total",
                    "TensorBoard events written, by kind (scalar, histogram, image, text).",
                    &["run", "kind"],
                ),
            )
        };
        TensorBoardLogs { runs, choice, errors, events }
    }

    /// No run writes to TensorBoard (tests).
    pub fn none() -> TensorBoardLogs {
        TensorBoardLogs { runs: HashMap::new(), choice: TensorChoice::default(), errors: None, events: None }
    }

    /// After `step` of `run` was recorded.
    pub fn checkpoint(&self, store: &Store, run: &str, step: u64) {
        self.with(run, |log| log.checkpoint(store, step));
    }

    /// After a job of `run` ran.
    pub fn jobs(&self, store: &Store, run: &str) {
        self.with(run, |log| log.jobs(store));
    }

    /// At start: everything the store holds for `run` that the file lacks.
    pub fn catch_up(&self, store: &Store, run: &str) {
        self.with(run, |log| log.all(store));
    }

    fn with(&self, run: &str, f: impl FnOnce(&mut RunLog) -> anyhow::Result<Written>) {
        let Some(t) = self.runs.get(run) else { return };
        let mut guard = t.log.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            match RunLog::open(&t.dir, run, self.choice.clone(), t.settings.clone()) {
                Ok((log, _)) => *guard = Some(log),
                Err(e) => return self.failed(run, &e),
            }
        }
        let Some(log) = guard.as_mut() else { return };
        match f(log) {
            Ok(w) => self.count(run, w),
            Err(e) => {
                self.failed(run, &e);
                // Reopened (and its tail checked) before the next write.
                *guard = None;
            }
        }
    }

    fn failed(&self, run: &str, e: &anyhow::Error) {
        tracing::warn!(run, "TensorBoard events not written: {e:#}");
        if let Some(c) = &self.errors {
            c.with_label_values(&[run]).inc();
        }
    }

    fn count(&self, run: &str, w: Written) {
        let Some(c) = &self.events else { return };
        for (kind, n) in
            [("scalar", w.scalars), ("histogram", w.histograms), ("image", w.images), ("text", w.texts)]
        {
            if n > 0 {
                c.with_label_values(&[run, kind]).inc_by(n as u64);
            }
        }
    }
}

/// The run's settings as markdown: its `[[run]]` section as configured, and the tensor selection.
fn settings_of(config: &Config, r: &RunConfig) -> String {
    let mut table = toml::Table::new();
    table.insert("name".into(), r.name.clone().into());
    table.insert(
        "watch".into(),
        toml::Value::Array(r.watch.iter().map(|w| w.pattern.clone().into()).collect()),
    );
    if let Some(tb) = &r.tensorboard {
        table.insert("tensorboard".into(), tb.display().to_string().into());
    }
    for (k, v) in &r.jobs {
        table.insert(k.clone(), v.clone());
    }
    let mut doc = toml::Table::new();
    doc.insert("run".into(), toml::Value::Array(vec![toml::Value::Table(table)]));
    let toml_text = toml::to_string(&doc).unwrap_or_default();
    format!(
        "Written by the landscaped daemon (config `{}`, store `{}`).\n\n```toml\n{toml_text}```\n\n\
         Per-tensor series: tensors matching {:?}, then the {} largest.",
        config.path.display(),
        config.data_dir.display(),
        config.metrics.tensors,
        config.metrics.top_k
    )
}
