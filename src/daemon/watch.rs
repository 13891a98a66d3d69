//! Watching the configured folders and turning what happens there into queue items.
//!
//! - Each distinct watch root gets an inotify watch (notify + the full debouncer, recursive, so new
//!   subfolders and renames into place are seen), or is polled: on NFS, Lustre, GPFS, CIFS/SMB and
//!   FUSE (statfs, see [`crate::daemon::fstype`]) with `watch_mode = "auto"`, always with `"poll"`.
//! - An event is mapped to checkpoints cheaply: a new folder is scanned (files created in it before
//!   its watch existed are found), a file inside a checkpoint folder (HF, DCP / Megatron / Lightning
//!   sharded, DeepSpeed) means the folder, a checkpoint-named file means itself. Paths are canonicalized, so a symlink like `last.ckpt` and its target are one.
//! - Rescans: at start, every `rescan_interval` (reconciliation), when inotify reports a queue
//!   overflow or an error, when our event channel or the work queue overflowed, and when a root
//!   appears, disappears or is replaced (deleted and recreated: its watch is re-established).
//! - Deletions (rotation) are ignored: what was recorded stays recorded.
//! - Policy: a symlink is followed only when it resolves inside a watched folder (of any run), unless
//!   `follow_symlinks = true`; a path with a checkpoint's name that is no regular file (FIFO, socket,
//!   device, a folder that is not an HF checkpoint) is never opened. Both are reported once per path
//!   (warning + `landscaped_skipped_paths_total{reason="outside_root"|"not_a_file"}`, and
//!   `landscaped_not_a_file_total{kind=...}` as before); so are symlink loops, folders that cannot be
//!   listed, and checkpoint folders still without weights (or DCP `.metadata`) after
//!   `incomplete_timeout` ([`crate::daemon::skipped`]). Names that are not UTF-8 are read like any
//!   other. A watch folder missing at start is warned about and picked up when it is created.
//!
//! Scans and event mapping do file I/O, so they run on blocking threads, never on the HTTP runtime.

use crate::daemon::config::{RunConfig, WatchMode};
use crate::daemon::metrics::Metrics;
use crate::daemon::queue::{Item, Pushed, WorkQueue};
use crate::daemon::seen;
use crate::daemon::shutdown::Shutdown;
use crate::daemon::skipped::Skipped;
use crate::daemon::{fstype, systemd};
use crate::store::Store;
use landscaped_formats::{
    find_checkpoints, in_model_export, is_checkpoint_file_name, is_checkpoint_folder, name_of,
    scan_checkpoints, step_from_name,
};
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Finds checkpoints for the runs and queues the ones not yet recorded.
pub struct Scanner {
    pub runs: Vec<RunConfig>,
    pub queue: Arc<WorkQueue>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub follow_symlinks: bool,
    /// Reports skipped paths once each.
    pub skipped: Arc<Skipped>,
    /// A checkpoint folder still without weights after this long is reported (`no_weights`).
    pub incomplete_timeout: Duration,
}

impl Scanner {
    /// Scans `root` (or every root if None) for every run watching it.
    pub fn scan(&self, root: Option<&Path>, reason: &str) -> usize {
        self.metrics.scans.with_label_values(&[reason]).inc();
        let mut queued = 0;
        for run in &self.runs {
            for spec in &run.watch {
                if root.is_some_and(|r| r != spec.root) || !spec.root.is_dir() {
                    continue;
                }
                for odd in odd_entries(&spec.root) {
                    if spec.matches(&odd) {
                        self.report(&run.name, &odd, "not_a_file");
                    }
                }
                match scan_checkpoints(&spec.root) {
                    Ok(scan) => {
                        for skip in scan.skipped.iter().filter(|s| spec.matches(&s.path)) {
                            self.skipped.report(&run.name, &skip.path, skip.reason, &skip.detail);
                        }
                        for dir in scan.pending.iter().filter(|p| spec.matches(p)) {
                            self.check_pending(&run.name, dir);
                        }
                        for p in scan.found.into_iter().filter(|p| spec.matches(p)) {
                            queued += self.offer(&run.name, &p) as usize;
                        }
                    }
                    Err(e) => tracing::warn!("scanning {}: {e}", spec.root.display()),
                }
            }
        }
        tracing::debug!(reason, queued, "scan");
        queued
    }

    /// Maps changed paths to checkpoints and queues them.
    pub(crate) fn on_paths(&self, paths: &[PathBuf]) {
        let mut done = std::collections::HashSet::new();
        for p in paths {
            if !done.insert(p.clone()) {
                continue;
            }
            let candidates = candidates_for(p);
            if candidates.is_empty() {
                if is_odd(p) {
                    for run in &self.runs {
                        if run.watch.iter().any(|spec| spec.matches(p)) {
                            self.report(&run.name, p, "not_a_file");
                        }
                    }
                }
                continue;
            }
            for run in &self.runs {
                for spec in &run.watch {
                    for c in candidates.iter().filter(|c| spec.matches(c)) {
                        self.offer(&run.name, c);
                    }
                }
            }
        }
    }

    /// Queues one checkpoint unless it is already recorded with the same files. True if queued.
    pub(crate) fn offer(&self, run: &str, path: &Path) -> bool {
        let Ok(canon) = path.canonicalize() else { return false };
        if !self.follow_symlinks && canon != path && !self.inside_watched(&canon) {
            self.report(run, path, "outside_root");
            return false;
        }
        match std::fs::metadata(&canon) {
            Ok(m) if m.is_file() || (m.is_dir() && is_checkpoint_folder(&canon)) => {}
            Ok(_) => {
                self.report(run, path, "not_a_file");
                return false;
            }
            Err(_) => return false,
        }
        // The checkpoint's one stamp: carried with the item, so the processor does not stat it again.
        // One that cannot be stamped (gone meanwhile, a folder that cannot be listed) is not queued.
        let Ok(stamp) = crate::stamp::stamp(&canon) else { return false };
        if let Ok(Some(rec)) = seen::get(&self.store, run, &canon)
            && rec.files == stamp
        {
            return false;
        }
        let step = step_from_name(&name_of(&canon));
        let item = Item {
            run: run.to_string(),
            path: canon,
            step,
            not_before: Instant::now(),
            attempts: 0,
            incomplete_since: None,
            stamp,
        };
        let pushed = self.queue.push(item);
        self.metrics.queue_len.set(self.queue.len() as i64);
        pushed == Pushed::Added
    }
}

impl Scanner {
    /// The watch roots of every run.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.runs.iter().flat_map(|r| r.watch.iter()).map(|spec| spec.root.clone()).collect()
    }

    /// Whether a canonical path lies inside one of the watched folders (of any run).
    fn inside_watched(&self, canon: &Path) -> bool {
        crate::daemon::skipped::inside_roots(&self.roots(), canon)
    }

    /// Reports a skipped path once ([`Skipped::report`]).
    fn report(&self, run: &str, path: &Path, kind: &'static str) {
        let detail = match kind {
            "outside_root" => format!(
                "a symlink to {} outside the watched folders (set follow_symlinks = true to follow it)",
                path.canonicalize().map(|p| p.display().to_string()).unwrap_or_default()
            ),
            _ => describe_odd(path).to_string(),
        };
        self.skipped.report(run, path, kind, &detail);
    }

    /// A folder becoming a checkpoint (HF without weights, DCP without `.metadata`): reported once it
    /// has stayed so for longer than `incomplete_timeout` (nothing in it changed meanwhile).
    fn check_pending(&self, run: &str, dir: &Path) {
        let newest = std::iter::once(dir.to_path_buf())
            .chain(std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()))
            .filter_map(|p| std::fs::symlink_metadata(p).and_then(|m| m.modified()).ok())
            .max();
        let Some(age) = newest.and_then(|t| t.elapsed().ok()) else { return };
        if age <= self.incomplete_timeout {
            return;
        }
        let secs = self.incomplete_timeout.as_secs_f64();
        if landscaped_formats::dcp::is_dcp_like(dir) {
            let detail = format!(
                "a DCP folder with data files but no .metadata after {secs} s (incomplete_timeout): not a checkpoint yet"
            );
            self.skipped.report(run, dir, "no_metadata", &detail);
        } else {
            let detail = format!(
                "a checkpoint folder with no weights (model.safetensors, pytorch_model.bin or a weights index) after {secs} s (incomplete_timeout)"
            );
            self.skipped.report(run, dir, "no_weights", &detail);
        }
    }
}

/// What a path with a checkpoint's name is, when it is not a checkpoint.
fn describe_odd(p: &Path) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(p).map(|m| m.file_type()) {
        Ok(t) if t.is_fifo() => "a FIFO, not a regular file",
        Ok(t) if t.is_socket() => "a socket, not a regular file",
        Ok(t) if t.is_block_device() || t.is_char_device() => "a device, not a regular file",
        Ok(t) if t.is_dir() => "a folder with a checkpoint's name that is not an HF checkpoint",
        _ => "not a regular file",
    }
}

/// A path with a checkpoint file's name that is not a regular file (or a symlink to one).
fn is_odd(p: &Path) -> bool {
    if !is_checkpoint_file_name(&name_of(p)) {
        return false;
    }
    match std::fs::metadata(p) {
        // A DCP folder being written (`.distcp` files, `.metadata` not yet) is not odd either.
        Ok(m) => {
            !(m.is_file()
                || (m.is_dir() && (is_checkpoint_folder(p) || landscaped_formats::dcp::is_dcp_like(p))))
        }
        Err(_) => false,
    }
}

/// The odd entries ([`is_odd`]) under `root`, not following symlinked folders, at most 8 deep.
fn odd_entries(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() {
                if is_odd(&p) {
                    out.push(p);
                } else if depth < 8 && !is_checkpoint_folder(&p) {
                    walk(&p, depth + 1, out);
                }
            } else if !ft.is_file() && is_odd(&p) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, 0, &mut out);
    out
}

/// The checkpoints a changed path may belong to.
fn candidates_for(p: &Path) -> Vec<PathBuf> {
    let Ok(meta) = std::fs::metadata(p) else { return Vec::new() }; // deleted: nothing to do
    if meta.is_dir() {
        return find_checkpoints(p).unwrap_or_default();
    }
    let Some(parent) = p.parent() else { return Vec::new() };
    if in_model_export(p) {
        return Vec::new();
    }
    if is_checkpoint_folder(parent) {
        return vec![parent.to_path_buf()]; // a file of an HF, DCP or DeepSpeed folder means the folder
    }
    if is_checkpoint_file_name(&name_of(p)) { vec![p.to_path_buf()] } else { Vec::new() }
}

/// How one root is being watched.
struct Root {
    path: PathBuf,
    runs: Vec<String>,
    /// (dev, inode) of the folder when last looked at; None when absent.
    id: Option<(u64, u64)>,
    poll: bool,
    debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    last_poll: Instant,
}

enum Msg {
    Paths(Vec<PathBuf>),
    Rescan(PathBuf),
}

fn folder_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()))
}

pub struct WatchSettings {
    pub mode: WatchMode,
    pub poll_interval: Duration,
    pub rescan_interval: Duration,
}

/// Runs until shutdown: sets up watches, does the initial scan (then READY=1), handles events and
/// periodic scans, pings the systemd watchdog.
pub async fn run(scanner: Arc<Scanner>, settings: WatchSettings, shutdown: Shutdown, ready: Arc<AtomicBool>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(1024);
    let overflow = Arc::new(AtomicBool::new(false));
    let mut roots: Vec<Root> = Vec::new();
    for run in &scanner.runs {
        for spec in &run.watch {
            match roots.iter_mut().find(|r| r.path == spec.root) {
                Some(r) => r.runs.push(run.name.clone()),
                None => roots.push(Root {
                    path: spec.root.clone(),
                    runs: vec![run.name.clone()],
                    id: None,
                    poll: false,
                    debouncer: None,
                    last_poll: Instant::now(),
                }),
            }
        }
    }
    for root in &mut roots {
        setup_root(root, &settings, &tx, &overflow);
        if root.id.is_none() {
            tracing::warn!(
                "watch folder {} (run {}) does not exist: it is watched once it is created",
                root.path.display(),
                root.runs.join(", ")
            );
        }
    }
    update_watched(&roots, &scanner.metrics);
    let s = scanner.clone();
    let Some(queued) = blocking(&shutdown, move || s.scan(None, "start")).await else { return };
    ready.store(true, Ordering::SeqCst);
    let msg = format!("watching {} folder(s); {queued} checkpoint(s) queued at start", roots.len());
    tracing::info!("{msg}");
    systemd::ready(&msg);

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog = systemd::watchdog_interval();
    let mut last_ping = Instant::now();
    let mut last_reconcile = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let s = scanner.clone();
                match msg {
                    Msg::Paths(paths) => {
                        blocking(&shutdown, move || s.on_paths(&paths)).await;
                    }
                    Msg::Rescan(root) => {
                        blocking(&shutdown, move || s.scan(Some(&root), "overflow")).await;
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if watchdog.is_some_and(|w| now - last_ping >= w) {
                    systemd::watchdog_ping();
                    last_ping = now;
                }
                let mut to_scan: Vec<(PathBuf, &'static str)> = Vec::new();
                let mut changed_roots = false;
                for root in &mut roots {
                    let id = folder_id(&root.path);
                    if id != root.id {
                        tracing::info!("{}: {}", root.path.display(), if id.is_some() { "appeared or was recreated: watching it again" } else { "is gone: waiting for it to come back" });
                        setup_root(root, &settings, &tx, &overflow);
                        if id.is_some() {
                            to_scan.push((root.path.clone(), "root_changed"));
                        }
                        changed_roots = true;
                    } else if root.poll && id.is_some() && now - root.last_poll >= settings.poll_interval {
                        root.last_poll = now;
                        to_scan.push((root.path.clone(), "poll"));
                    }
                }
                if changed_roots {
                    update_watched(&roots, &scanner.metrics);
                }
                let overflowed = overflow.swap(false, Ordering::SeqCst) | scanner.queue.take_overflow();
                let reconcile = now - last_reconcile >= settings.rescan_interval;
                if overflowed || reconcile {
                    last_reconcile = now;
                    let s = scanner.clone();
                    let reason = if overflowed { "overflow" } else { "reconcile" };
                    blocking(&shutdown, move || s.scan(None, reason)).await;
                } else {
                    for (root, reason) in to_scan {
                        let s = scanner.clone();
                        blocking(&shutdown, move || s.scan(Some(&root), reason)).await;
                    }
                }
                scanner.metrics.queue_len.set(scanner.queue.len() as i64);
            }
        }
    }
    for root in &mut roots {
        root.debouncer = None;
    }
}

/// Runs `f` on a blocking thread; None if it panicked or shutdown came first (a scan stuck in the
/// kernel, a hung filesystem, must not keep the daemon from exiting).
async fn blocking<T: Send + 'static>(
    shutdown: &Shutdown,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let task = tokio::task::spawn_blocking(f);
    tokio::select! {
        r = task => r.ok(),
        _ = shutdown.wait() => None,
    }
}

/// (Re)establishes the watch of one root according to its filesystem and the configured mode.
fn setup_root(
    root: &mut Root,
    settings: &WatchSettings,
    tx: &tokio::sync::mpsc::Sender<Msg>,
    overflow: &Arc<AtomicBool>,
) {
    root.debouncer = None;
    root.id = folder_id(&root.path);
    let remote = fstype::remote_fs(&root.path);
    root.poll = match settings.mode {
        WatchMode::Poll => true,
        WatchMode::Inotify => false,
        WatchMode::Auto => remote.is_some(),
    };
    if let (Some(fs), false) = (remote, root.poll) {
        tracing::warn!(
            "{} is on {fs}: inotify will miss writes from other nodes (watch_mode = \"auto\" would poll)",
            root.path.display()
        );
    }
    if root.id.is_none() {
        return;
    }
    if !root.poll {
        let tx = tx.clone();
        let overflow = overflow.clone();
        let root_path = root.path.clone();
        let handler = move |res: DebounceEventResult| match res {
            Ok(events) => {
                let mut paths = Vec::new();
                for ev in events {
                    if ev.event.need_rescan() {
                        let _ = tx
                            .try_send(Msg::Rescan(root_path.clone()))
                            .map_err(|_| overflow.store(true, Ordering::SeqCst));
                    }
                    if matches!(ev.event.kind, notify::EventKind::Remove(_) | notify::EventKind::Access(_)) {
                        continue;
                    }
                    paths.extend(ev.event.paths.iter().cloned());
                }
                if !paths.is_empty() && tx.try_send(Msg::Paths(paths)).is_err() {
                    overflow.store(true, Ordering::SeqCst);
                }
            }
            Err(errors) => {
                let mut rescan = false;
                for e in errors {
                    // A folder that went before its watch was added (a trainer's rotation removing
                    // `checkpoint-N/` just written): nothing to watch, nothing to say.
                    if vanished(&e) {
                        tracing::debug!("watching {}: {e} (gone meanwhile)", root_path.display());
                    } else {
                        tracing::warn!("watching {}: {e}", root_path.display());
                        rescan = true;
                    }
                }
                if rescan {
                    overflow.store(true, Ordering::SeqCst);
                }
            }
        };
        match new_debouncer(Duration::from_millis(50), None, handler) {
            Ok(mut d) => match d.watch(&root.path, RecursiveMode::Recursive) {
                Ok(()) => root.debouncer = Some(d),
                Err(e) => {
                    tracing::warn!("cannot watch {} ({e}); polling it instead", root.path.display());
                    root.poll = true;
                }
            },
            Err(e) => {
                tracing::warn!("cannot create a watcher ({e}); polling {} instead", root.path.display());
                root.poll = true;
            }
        }
    }
}

/// Whether a watcher error is about a path that no longer exists.
fn vanished(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound | notify::ErrorKind::WatchNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Sets `landscaped_watched_folders{run,mode}` from the roots' current state.
fn update_watched(roots: &[Root], metrics: &Metrics) {
    let mut counts: HashMap<(String, &'static str), i64> = HashMap::new();
    for root in roots {
        for run in &root.runs {
            for m in ["inotify", "poll"] {
                counts.entry((run.clone(), m)).or_insert(0);
            }
            if root.id.is_some() {
                *counts.entry((run.clone(), if root.poll { "poll" } else { "inotify" })).or_insert(0) += 1;
            }
        }
    }
    for ((run, mode), n) in counts {
        metrics.watched.with_label_values(&[&run, mode]).set(n);
    }
}
