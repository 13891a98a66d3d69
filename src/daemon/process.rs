//! Processing one queued checkpoint, on a blocking thread, in one pass: skip it if already recorded
//! unchanged (its [`crate::stamp`], computed by the watcher and carried with the item, compared once
//! with what was seen), wait for a single file's quiet period (a stat, nothing parsed), check
//! completeness and open it in one call ([`landscaped_formats::Checkpoint::open_complete`]: every
//! header parsed once) and hand the opened checkpoint with the stamp to ingest (which stamps the
//! files once more after reading and refuses to commit if they changed meanwhile; we then retry once
//! quiet), then record the outcome and update the metrics.
//!
//! Errors follow [`crate::daemon::taxonomy`]: a content error is recorded against the file's stamp
//! (once per version of the file); an environment error (permission, descriptors, disk, I/O, store
//! writes) is never recorded: the item is retried with backoff. A checkpoint counts as done only once
//! ingest has committed its records.
//!
//! Skipped, not failed (reported once by [`crate::daemon::skipped`], recorded against the files'
//! stamp so it is looked at again only when they change): a checkpoint folder holding a symlink that
//! resolves outside the watched folders (`outside_root`, unless `follow_symlinks`), and a checkpoint
//! one of whose files is a FIFO, socket, device or folder (`not_a_file`: readers open every file
//! non-blocking and refuse what is not a regular file, so nothing can block on it).
//!
//! A checkpoint whose trajectory archive needs more than the whole filesystem holds is failed at
//! once (`does_not_fit`, recorded: retrying cannot help, so it no longer makes `/healthz` flap). One
//! needing more than is free now is an environment error like any full disk: the archive is marked
//! unwritable (`/healthz` 503 naming the bytes needed and free) and the checkpoint is retried with
//! backoff until space is freed, never recorded: nothing is lost on a full disk.
//! Progress is measured ([`crate::daemon::progress`]): every phase and every chunk read counts.

use crate::daemon::metrics::Metrics;
use crate::daemon::progress::{Progress, ProgressSink, Ticket};
use crate::daemon::queue::Item;
use crate::daemon::seen::{self, SeenRecord};
use crate::daemon::taxonomy::{self, Class, EnvKind};
use crate::ingest::{ErrorKind, IngestStatus};
use crate::stamp::{self, Stamp};
use crate::store::{RunStepRecord, Store};
use crate::trajectory::archive::{ArchiveConfig, ArchiveSink};
use landscaped_formats as checkpoint;
use landscaped_formats::CheckpointError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What happened to an item.
#[derive(Debug)]
pub enum Outcome {
    /// Ingested (step recorded); `new` unless ingest found it already stored, unchanged.
    Done { step: u64, new: bool },
    /// Already recorded with the same files.
    Unchanged,
    /// The path no longer exists (rotated away before we got to it).
    Gone,
    /// Not ready: try again after `after`; `stamp`: the files' newer stamp when it was taken.
    Retry { after: Duration, reason: &'static str, stamp: Option<Stamp> },
    /// Counted as an error of this kind and recorded, so it isn't retried until it changes.
    Failed { kind: ErrorKind },
    /// The environment failed: not recorded; try again after `after`.
    EnvRetry { after: Duration, kind: EnvKind },
    /// Skipped for `reason` (reported once) and recorded, so it isn't looked at until it changes.
    Skipped { reason: &'static str },
}

pub struct Processor {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub quiet: Duration,
    pub incomplete_timeout: Duration,
    /// Where the trajectory archive lives (`<data_dir>/trajectory/<run>/`): the store's data dir.
    pub data_dir: PathBuf,
    /// How each run's checkpoints are archived for trajectory PCA (its `[run.archive]` section; runs
    /// not listed: the defaults, native precision, keep all, no budget).
    pub archive: BTreeMap<String, ArchiveConfig>,
    /// Whether the last archive write succeeded (`/healthz` reports it).
    pub archive_health: Arc<crate::daemon::health::ArchiveHealth>,
    /// Skipped paths, reported once.
    pub skipped: Arc<crate::daemon::skipped::Skipped>,
    /// Every watch root (symlinks inside checkpoint folders must stay inside them).
    pub roots: Vec<PathBuf>,
    pub follow_symlinks: bool,
    /// The ingests in flight and when each last moved.
    pub progress: Arc<Progress>,
    /// Runs whose records also go to TensorBoard.
    pub tensorboard: Arc<crate::daemon::tensorboard::TensorBoardLogs>,
}

impl Processor {
    pub fn process(&self, item: &Item) -> Outcome {
        let started = Instant::now();
        let ticket = self.progress.begin(&item.run, &item.path);
        let out = self.process_inner(item, &ticket);
        drop(ticket);
        let run = item.run.as_str();
        match &out {
            Outcome::Done { step, new } => {
                if *new {
                    self.metrics.processed.with_label_values(&[run]).inc();
                }
                self.metrics.duration.with_label_values(&[run]).observe(started.elapsed().as_secs_f64());
                // `new`: counted in landscaped_checkpoints_processed_total (the crash test sums these lines
                // over a daemon's SIGKILLed lives).
                // A copy of a recorded checkpoint (Lightning's `last.ckpt`) is not recorded again.
                if *new {
                    tracing::info!(run, step, new, path = %item.path.display(), "checkpoint recorded");
                } else {
                    tracing::debug!(
                        run,
                        step,
                        path = %item.path.display(),
                        "checkpoint already recorded (the same content at this step)"
                    );
                }
                self.tensorboard.checkpoint(&self.store, run, *step);
            }
            Outcome::Retry { reason, .. } => {
                self.metrics.retries.with_label_values(&[run, reason]).inc();
            }
            Outcome::Failed { kind } => self.metrics.error(run, kind.label()),
            Outcome::EnvRetry { kind, .. } => {
                self.metrics.env_errors.with_label_values(&[run, kind.label()]).inc();
                self.metrics.retries.with_label_values(&[run, "environment"]).inc();
            }
            Outcome::Unchanged | Outcome::Gone | Outcome::Skipped { .. } => {}
        }
        out
    }

    /// Skips the item for `reason`: one line naming `path` (the item or a file of it), a count, and a
    /// record against the item's files.
    fn skip(&self, item: &Item, files: Stamp, reason: &'static str, path: &Path, detail: &str) -> Outcome {
        self.skipped.report(&item.run, path, reason, detail);
        self.record(&item.run, &item.path, files, None, reason);
        Outcome::Skipped { reason }
    }

    fn process_inner(&self, item: &Item, ticket: &Ticket<'_>) -> Outcome {
        let path = item.path.as_path();
        let run = item.run.as_str();
        // The one "unchanged?": the watcher's stamp against what was seen.
        let before = item.stamp.clone();
        match seen::get(&self.store, run, path) {
            Ok(Some(rec)) if rec.files == before => return Outcome::Unchanged,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("{}: reading what was seen: {e}", path.display());
            }
        }
        if !self.follow_symlinks
            && path.is_dir()
            && let Some((link, target)) = crate::daemon::skipped::link_leaving(path, &self.roots)
        {
            let detail = format!(
                "a symlink inside checkpoint {} to {} outside the watched folders (set follow_symlinks = true to follow it)",
                path.display(),
                target.display()
            );
            return self.skip(item, before, "outside_root", &link, &detail);
        }
        ticket.tick();
        let newest = stamp::newest_unix(&before);
        let age = Duration::from_secs_f64((unix_now_f64() - newest).max(0.0));
        if let Some(hang) = crate::faults::stall(path) {
            std::thread::sleep(hang);
        }
        // The quiet period first (a stat, no parse): a file written moments ago is opened once quiet.
        if path.is_file() && age < self.quiet {
            return Outcome::Retry {
                after: self.quiet - age + Duration::from_millis(20),
                reason: "quiet",
                stamp: None,
            };
        }
        // The export helper writes its marker last, so a model export may have been queued before the
        // marker existed; once quiet it is there.
        if checkpoint::in_model_export(path) {
            tracing::debug!(run, path = %path.display(), "skipped: part of a model export, not a checkpoint");
            self.record(run, path, before, None, "model-export");
            return Outcome::Unchanged;
        }
        // Completeness and opening in one pass: every header parsed once.
        let opened = match crate::faults::injected("checkpoint_read") {
            Some(source) => Err(CheckpointError::Io { path: path.to_path_buf(), source }),
            None => checkpoint::Checkpoint::open_complete(path),
        };
        ticket.tick();
        let ck = match opened {
            Ok(ck) => ck,
            Err(e) => return self.not_opened(item, before, age, e),
        };
        let archive = self.archive.get(run).cloned().unwrap_or_default();
        match ingest_one(&self.store, run, &ck, &before, &self.data_dir, &archive, ticket) {
            Ok(outcome) => self.ingested(item, before, newest, outcome),
            Err(e) => self.not_ingested(item, before, e),
        }
    }

    /// Ingested: recorded as seen with the stamp it was read with (ingest stamped the files after
    /// reading them and committed only if they were `before`), the metrics set from what ingest returns
    /// (no read-back from the store).
    fn ingested(
        &self,
        item: &Item,
        before: Stamp,
        newest: f64,
        outcome: crate::ingest::IngestOutcome,
    ) -> Outcome {
        let (path, run) = (item.path.as_path(), item.run.as_str());
        let (step, status) = (outcome.step, outcome.status);
        self.record(run, path, before, Some(step), "ok");
        self.metrics.record_checkpoint(&outcome.record, &outcome.tensors, newest);
        self.metrics.record_optimizer(run, step, outcome.optimizer.as_ref());
        if let Some(note) = &outcome.optimizer_note {
            tracing::warn!(run, step, "{}: {note}", path.display());
        }
        self.archive_health.ok();
        Outcome::Done { step, new: status != IngestStatus::Unchanged }
    }

    /// Ingest failed (`e`): retried once quiet if the files changed while read, skipped if one is not
    /// a regular file, retried with backoff for an environment error, else failed and recorded.
    fn not_ingested(&self, item: &Item, before: Stamp, e: IngestFail) -> Outcome {
        let (path, run) = (item.path.as_path(), item.run.as_str());
        // Written again while we read it (ingest saw it: `incomplete`; or the failure came from a
        // half-written state): read it again once quiet (ingest is idempotent per run and step,
        // so the redo replaces it), with the files' stamp as they are now.
        let now = stamp::stamp(path).ok();
        if e.kind == Class::Content(ErrorKind::Incomplete) || now.as_ref() != Some(&before) {
            return Outcome::Retry {
                after: self.quiet.max(Duration::from_millis(100)),
                reason: "changed",
                stamp: now,
            };
        }
        if let Some(CheckpointError::NotAFile { path: file, what }) = e.not_a_file() {
            let detail =
                format!("{what}, not a regular file, in checkpoint {} (never opened)", path.display());
            return self.skip(item, before, "not_a_file", &file, &detail);
        }
        let msg = taxonomy::with_path(path, &e.to_string());
        match e.kind {
            Class::Environment(kind) => {
                if kind.is_archive() {
                    self.archive_health.failed(format!("{:#}", e.error));
                }
                tracing::warn!(run, "{msg} (will retry)");
                Outcome::EnvRetry { after: taxonomy::backoff(item.attempts), kind }
            }
            Class::Content(kind) => {
                tracing::warn!(run, "{msg}");
                self.fail(item, before, kind)
            }
        }
    }

    /// A checkpoint [`checkpoint::Checkpoint::open_complete`] refused (`e`), its files stamped `before`
    /// and last written `age` ago: skipped (not a regular file), retried (environment, still being
    /// written, or changed since the watcher stamped it), gone, or failed and recorded.
    fn not_opened(&self, item: &Item, before: Stamp, age: Duration, e: CheckpointError) -> Outcome {
        let (path, run) = (item.path.as_path(), item.run.as_str());
        if let CheckpointError::NotAFile { path: file, what } = &e {
            let detail =
                format!("{what}, not a regular file, in checkpoint {} (never opened)", path.display());
            return self.skip(item, before, "not_a_file", file, &detail);
        }
        if let Class::Environment(kind) = taxonomy::classify_checkpoint(&e) {
            tracing::warn!(run, "{e} (will retry)");
            return Outcome::EnvRetry { after: taxonomy::backoff(item.attempts), kind };
        }
        let incomplete = matches!(e, CheckpointError::Incomplete { .. });
        if incomplete && age < self.incomplete_timeout {
            return Outcome::Retry {
                after: backoff(item.attempts, self.quiet),
                reason: "incomplete",
                stamp: None,
            };
        }
        let now = stamp::stamp(path);
        if matches!(e, CheckpointError::Io { .. }) && now.is_err() {
            return Outcome::Gone;
        }
        // Written again since the watcher stamped it: judged again once quiet, as it is now.
        if !incomplete
            && let Ok(now) = now
            && now != before
        {
            return Outcome::Retry {
                after: self.quiet.max(Duration::from_millis(100)),
                reason: "changed",
                stamp: Some(now),
            };
        }
        tracing::warn!(run, "{e}");
        self.fail(item, before, ErrorKind::of_checkpoint(&e))
    }

    fn fail(&self, item: &Item, files: Stamp, kind: ErrorKind) -> Outcome {
        self.record(&item.run, &item.path, files, None, kind.label());
        Outcome::Failed { kind }
    }

    fn record(&self, run: &str, path: &Path, files: Stamp, step: Option<u64>, outcome: &str) {
        let rec = SeenRecord {
            run: run.into(),
            path: path.to_string_lossy().into_owned(),
            files,
            step,
            outcome: outcome.into(),
            unix: crate::store::unix_now(),
        };
        if let Err(e) = seen::put(&self.store, path, &rec) {
            tracing::warn!("{}: recording it as seen: {e}", path.display());
        }
    }

    /// Sets the run's gauges from what the store now holds for `step`.
    pub(crate) fn update_gauges(&self, run: &str, step: u64, mtime_unix: f64) {
        use crate::store::checkpoints as ck;
        match (ck::checkpoint(&self.store, run, step), ck::tensors(&self.store, run, step)) {
            (Ok(Some(rec)), Ok(tensors)) => {
                self.metrics.record_checkpoint(&rec, &tensors, mtime_unix);
                let opt =
                    crate::store::optimizer::OptimizerRecord::get(&self.store, run, step).ok().flatten();
                self.metrics.record_optimizer(run, step, opt.as_ref());
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!("reading back {run} step {step}: {e}"),
            (Ok(None), _) => tracing::warn!("{run} step {step}: no record after ingest"),
        }
    }

    /// After a restart: show the newest recorded checkpoint of each run on /metrics.
    pub(crate) fn restore_gauges(&self, run: &str) {
        use crate::store::checkpoints as ck;
        if let Ok(Some(last)) = ck::latest(&self.store, run) {
            let t = stamp::newest_unix(&last.files);
            self.update_gauges(run, last.step, t);
        }
    }
}

fn unix_now_f64() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Retry delay for an incomplete checkpoint: from the quiet period (at least 200 ms) doubling up to 30 s.
fn backoff(attempts: u32, quiet: Duration) -> Duration {
    let base = quiet.max(Duration::from_millis(200)).min(Duration::from_secs(30));
    (base * 2u32.saturating_pow(attempts.min(8))).min(Duration::from_secs(30))
}

/// A failed ingest: what kind of failure (content: recorded; environment: retried), and the error.
pub(crate) struct IngestFail {
    pub kind: Class,
    pub error: anyhow::Error,
}

impl IngestFail {
    /// The checkpoint error saying a file is not a regular file, if that is what this is.
    fn not_a_file(&self) -> Option<CheckpointError> {
        match self.error.downcast_ref::<crate::ingest::IngestError>() {
            Some(crate::ingest::IngestError::Checkpoint(CheckpointError::NotAFile { path, what })) => {
                Some(CheckpointError::NotAFile { path: path.clone(), what: what.clone() })
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for IngestFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

/// The one call into ingest (kept here so the daemon adapts to ingest's signature in one place): hands
/// the checkpoint the processor opened (once, with its completeness rules) with the watcher's stamp
/// `before` to [`crate::ingest::ingest_opened`], which neither opens nor stamps it again before reading; after
/// reading it stamps the files and refuses to commit if they changed (an `incomplete` error). Ingest
/// is idempotent per (run, step).
/// Every checkpoint is also written to the trajectory archive ([`ArchiveSink`]), which the `pca` job
/// reads: training frameworks delete old checkpoints, so the archive keeps what a later PCA needs. The
/// sink aborts when dropped, so a failed ingest leaves no partial archive file.
fn ingest_one(
    store: &Store,
    run: &str,
    ck: &checkpoint::Checkpoint,
    before: &Stamp,
    data_dir: &Path,
    archive: &ArchiveConfig,
    ticket: &Ticket<'_>,
) -> Result<crate::ingest::IngestOutcome, IngestFail> {
    let fail = |e: crate::ingest::IngestError| IngestFail {
        kind: taxonomy::classify_ingest(&e),
        error: anyhow::Error::new(e),
    };
    let opts = crate::ingest::IngestOptions::default();
    let mut sink = ArchiveSink::new(data_dir, archive)
        .map_err(|error| IngestFail { kind: Class::Environment(EnvKind::Archive), error })?;
    let mut progress = ProgressSink(ticket);
    let outcome = crate::ingest::ingest_opened(
        store,
        run,
        ck,
        before,
        &opts,
        &mut [&mut sink, &mut progress],
        &mut |_, _| {},
    )
    .map_err(fail)?;
    if let Some(rep) = sink.last_report() {
        tracing::debug!(run, step = rep.step, bytes = rep.bytes_written, "archived for trajectory PCA");
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file (the format's spec: u64 LE header length, JSON header, data) of one f32 tensor.
    fn safetensors(path: &Path, values: &[f32]) {
        let header = format!(
            r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{}]}}}}"#,
            values.len(),
            values.len() * 4
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(path, bytes).unwrap();
    }

    fn item(path: &Path, stamp: Stamp) -> Item {
        Item {
            run: "r".into(),
            path: path.to_path_buf(),
            step: None,
            not_before: Instant::now(),
            attempts: 0,
            incomplete_since: None,
            stamp,
        }
    }

    /// A processor over a fresh store in `tmp/data`, watching `tmp`.
    fn processor(tmp: &Path, quiet: Duration) -> Processor {
        let data = tmp.join("data");
        let store = Store::open(&data).unwrap();
        let metrics = Arc::new(Metrics::new(&Default::default()).unwrap());
        Processor {
            store,
            metrics: metrics.clone(),
            quiet,
            incomplete_timeout: Duration::from_secs(600),
            data_dir: data,
            archive: Default::default(),
            archive_health: Default::default(),
            skipped: Arc::new(crate::daemon::skipped::Skipped::new(metrics)),
            roots: vec![tmp.to_path_buf()],
            follow_symlinks: false,
            tensorboard: Arc::new(crate::daemon::tensorboard::TensorBoardLogs::none()),
            progress: Default::default(),
        }
    }

    /// Processes `path` with the header-parse log on: the outcome and the parses made.
    fn process_logged(p: &Processor, path: &Path) -> (Outcome, Vec<landscaped_formats::parse_log::Parse>) {
        let s = stamp::stamp(path).unwrap();
        landscaped_formats::parse_log::during(|| p.process(&item(path, s)))
    }

    /// The daemon's one pass: completeness and opening share one parse of each header, index and
    /// state file (checked then opened, each would be parsed twice), and a file inside its quiet
    /// period is not parsed at all.
    #[test]
    fn each_header_is_parsed_once_per_checkpoint() {
        use landscaped_formats::parse_log::count;
        let tmp = tempfile::tempdir().unwrap();
        let p = processor(tmp.path(), Duration::ZERO);
        let file = tmp.path().join("step-5.safetensors");
        safetensors(&file, &[1.0, 2.0]);
        let (out, parses) = process_logged(&p, &file);
        assert!(matches!(out, Outcome::Done { step: 5, new: true }), "{out:?}");
        assert_eq!(count(&parses, &file), 1, "{parses:?}");

        // An HF folder: trainer_state.json, the index and both shards, each parsed once.
        let hf = tmp.path().join("checkpoint-7");
        std::fs::create_dir(&hf).unwrap();
        let header =
            |name: &str| format!(r#"{{"{name}":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#);
        for (f, name) in [("a.safetensors", "w"), ("b.safetensors", "v")] {
            let h = header(name);
            let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(h.as_bytes());
            bytes.extend(1f32.to_le_bytes());
            std::fs::write(hf.join(f), bytes).unwrap();
        }
        std::fs::write(
            hf.join("model.safetensors.index.json"),
            r#"{"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}}"#,
        )
        .unwrap();
        std::fs::write(hf.join("trainer_state.json"), r#"{"global_step": 7}"#).unwrap();
        let (out, parses) = process_logged(&p, &hf);
        assert!(matches!(out, Outcome::Done { step: 7, new: true }), "{out:?}");
        for f in ["trainer_state.json", "model.safetensors.index.json", "a.safetensors", "b.safetensors"] {
            assert_eq!(count(&parses, &hf.join(f)), 1, "{f}: {parses:?}");
        }

        // Cut short: incomplete (retried), from one parse too.
        let cut = tmp.path().join("step-9.safetensors");
        safetensors(&cut, &[1.0, 2.0, 3.0]);
        let len = std::fs::metadata(&cut).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&cut).unwrap().set_len(len - 4).unwrap();
        let (out, parses) = process_logged(&p, &cut);
        assert!(matches!(out, Outcome::Retry { reason: "incomplete", .. }), "{out:?}");
        assert_eq!(count(&parses, &cut), 1, "{parses:?}");

        // Written moments ago: waits for its quiet period, nothing parsed.
        let p = processor(&tmp.path().join("quiet"), Duration::from_secs(3600));
        let young = tmp.path().join("step-11.safetensors");
        safetensors(&young, &[1.0]);
        let (out, parses) = process_logged(&p, &young);
        assert!(matches!(out, Outcome::Retry { reason: "quiet", .. }), "{out:?}");
        assert!(parses.is_empty(), "{parses:?}");
    }

    #[test]
    fn the_carried_stamp_is_the_identity_and_a_change_while_read_is_retried_with_the_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let p = processor(tmp.path(), Duration::ZERO);
        let store = p.store.clone();
        let a = tmp.path().join("step-5.safetensors");
        safetensors(&a, &[1.0, 2.0]);
        let sa = stamp::stamp(&a).unwrap();
        assert!(matches!(p.process(&item(&a, sa.clone())), Outcome::Done { step: 5, new: true }));
        // Seen with this stamp: unchanged, by the carried stamp alone (the file is not looked at again,
        // so even a file gone meanwhile is not stat'ed).
        assert!(matches!(p.process(&item(&a, sa.clone())), Outcome::Unchanged));
        std::fs::remove_file(&a).unwrap();
        assert!(matches!(p.process(&item(&a, sa)), Outcome::Unchanged));

        // Rewritten after the watcher stamped it: ingest's stamp after reading differs, nothing is
        // recorded, and the retry carries the files' new stamp, with which it is recorded.
        let b = tmp.path().join("step-6.safetensors");
        safetensors(&b, &[1.0]);
        let old = stamp::stamp(&b).unwrap();
        safetensors(&b, &[3.0, 4.0, 5.0]);
        let new = stamp::stamp(&b).unwrap();
        assert_ne!(old, new);
        match p.process(&item(&b, old)) {
            Outcome::Retry { reason: "changed", stamp: Some(s), .. } => assert_eq!(s, new),
            o => panic!("{o:?}"),
        }
        assert!(crate::store::checkpoints::checkpoint(&store, "r", 6).unwrap().is_none());
        assert!(matches!(p.process(&item(&b, new.clone())), Outcome::Done { step: 6, new: true }));
        let rec = crate::store::checkpoints::checkpoint(&store, "r", 6).unwrap().unwrap();
        assert_eq!((rec.files, rec.numel), (new, 3));
        assert_eq!(crate::store::checkpoints::latest(&store, "r").unwrap().map(|c| c.step), Some(6));
    }
}
