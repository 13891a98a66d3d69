//! One event file of landscaped's in a TensorBoard run folder, named as TensorBoard's own writers name
//! theirs (`events.out.tfevents.<secs>.<host>.<pid>.0`) with the suffix `.landscaped`, so TensorBoard
//! reads it as part of the same run as the trainer's files beside it.
//!
//! Opening a folder that already holds such a file reopens that file: its records are read back (a
//! cut-short or corrupt tail, left by a writer killed mid-write, is cut off with one log line) and
//! the newest step of every tag noted. Per tag, steps only go up: a value at a step not above the
//! tag's newest is not written again. TensorBoard's data server (the default loader) treats a step at
//! or below one already seen as a restart and drops every point of that tag from that step on (its
//! "preemption"); the Python loader keeps both points. Never rewriting a step keeps both views whole.
//!
//! Events are collected in memory and appended by [`EventFile::flush`] in one write.

use super::proto::{self, Event, Kind, Value, What};
use super::record;
use prost::Message;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The suffix that marks landscaped's file among a run's event files.
pub const SUFFIX: &str = ".landscaped";
/// The first record of every event file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// What opening found in an existing file.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reopened {
    /// Whole events read back.
    pub events: usize,
    /// Bytes cut off the end (a damaged last record), and why.
    pub cut: Option<(u64, String)>,
}

pub struct EventFile {
    path: PathBuf,
    file: File,
    /// The newest step written for each tag.
    newest: HashMap<String, i64>,
    /// Framed events not yet appended.
    pending: Vec<u8>,
}

impl EventFile {
    /// Opens landscaped's event file in `dir` (created with its folder if missing), repairing a
    /// damaged tail. The error names the folder or file and the cause.
    pub fn open(dir: &Path) -> anyhow::Result<(EventFile, Reopened)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("TensorBoard folder {}: cannot create it: {e}", dir.display()))?;
        match existing(dir)? {
            Some(path) => Self::reopen(path),
            None => {
                let path = dir.join(file_name());
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| anyhow::anyhow!("{}: cannot create event file: {e}", path.display()))?;
                let mut f = EventFile { path, file, newest: HashMap::new(), pending: Vec::new() };
                f.push_event(&Event {
                    wall_time: now(),
                    step: 0,
                    what: Some(What::FileVersion(FILE_VERSION.into())),
                });
                f.flush()?;
                Ok((f, Reopened::default()))
            }
        }
    }

    fn reopen(path: PathBuf) -> anyhow::Result<(EventFile, Reopened)> {
        let bytes =
            std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
        let recs = record::read_records(&bytes);
        let mut newest: HashMap<String, i64> = HashMap::new();
        let mut report = Reopened { events: recs.payloads.len(), cut: None };
        let mut has_version = false;
        for p in &recs.payloads {
            let Ok(ev) = Event::decode(*p) else { continue };
            match ev.what {
                Some(What::FileVersion(_)) => has_version = true,
                Some(What::Summary(s)) => {
                    for v in s.value {
                        let n = newest.entry(v.tag).or_insert(ev.step);
                        *n = (*n).max(ev.step);
                    }
                }
                None => {}
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: cannot open for appending: {e}", path.display()))?;
        if let Some(d) = &recs.damage {
            let cut = (bytes.len() - recs.good_len) as u64;
            file.set_len(recs.good_len as u64)
                .map_err(|e| anyhow::anyhow!("{}: cannot cut off a damaged tail: {e}", path.display()))?;
            tracing::warn!(
                "{}: {d}; cut the last {cut} bytes off (a writer stopped mid-record), appending after record {}",
                path.display(),
                recs.payloads.len()
            );
            report.cut = Some((cut, d.to_string()));
        }
        let mut f = EventFile { path, file, newest, pending: Vec::new() };
        if !has_version && recs.payloads.is_empty() {
            f.push_event(&Event {
                wall_time: now(),
                step: 0,
                what: Some(What::FileVersion(FILE_VERSION.into())),
            });
            f.flush()?;
        }
        Ok((f, report))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest step written for `tag`, if any.
    pub fn newest(&self, tag: &str) -> Option<i64> {
        self.newest.get(tag).copied()
    }

    /// Whether a value of `tag` at `step` would be written (steps go up per tag).
    pub fn wants(&self, tag: &str, step: u64) -> bool {
        match i64::try_from(step) {
            Ok(s) => self.newest(tag).is_none_or(|n| s > n),
            Err(_) => false,
        }
    }

    /// A scalar (float32 on the wire, as every TensorBoard writer's). Returns whether it was taken.
    pub fn scalar(&mut self, tag: &str, step: u64, wall_time: f64, value: f64) -> bool {
        self.value(tag, step, wall_time, None, Kind::SimpleValue(value as f32))
    }

    pub fn histogram(&mut self, tag: &str, step: u64, wall_time: f64, h: proto::HistogramProto) -> bool {
        self.value(tag, step, wall_time, None, Kind::Histo(h))
    }

    /// A PNG of `width` × `height` pixels.
    pub fn image(
        &mut self,
        tag: &str,
        step: u64,
        wall_time: f64,
        png: Vec<u8>,
        width: u32,
        height: u32,
    ) -> bool {
        let img = proto::Image {
            height: height as i32,
            width: width as i32,
            colorspace: 3,
            encoded_image_string: png,
        };
        self.value(tag, step, wall_time, None, Kind::Image(img))
    }

    /// Markdown text, shown by TensorBoard's text dashboard.
    pub fn text(&mut self, tag: &str, step: u64, wall_time: f64, text: &str) -> bool {
        let meta = proto::SummaryMetadata {
            plugin_data: Some(proto::PluginData { plugin_name: "text".into(), content: Vec::new() }),
            ..Default::default()
        };
        let tensor = proto::TensorProto {
            dtype: proto::DT_STRING,
            tensor_shape: Some(proto::TensorShapeProto::default()),
            string_val: vec![text.as_bytes().to_vec()],
        };
        self.value(tag, step, wall_time, Some(meta), Kind::Tensor(tensor))
    }

    fn value(
        &mut self,
        tag: &str,
        step: u64,
        wall_time: f64,
        metadata: Option<proto::SummaryMetadata>,
        kind: Kind,
    ) -> bool {
        if !self.wants(tag, step) {
            return false;
        }
        let step = step as i64;
        let value = Value { tag: tag.to_string(), metadata, kind: Some(kind) };
        self.push_event(&Event {
            wall_time,
            step,
            what: Some(What::Summary(proto::Summary { value: vec![value] })),
        });
        self.newest.insert(tag.to_string(), step);
        true
    }

    fn push_event(&mut self, ev: &Event) {
        record::frame(&mut self.pending, &ev.encode_to_vec());
    }

    /// Bytes collected and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Appends everything collected in one write. On an error the events stay collected (a later
    /// flush tries again) and the error names the file.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.pending)
            .map_err(|e| anyhow::anyhow!("{}: cannot append events: {e}", self.path.display()))?;
        self.pending.clear();
        Ok(())
    }
}

/// landscaped's event file in `dir`, if there is one (the last by name if there are several).
fn existing(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("TensorBoard folder {}: cannot list it: {e}", dir.display()))?;
    let mut ours: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents.") && n.ends_with(SUFFIX))
        })
        .filter(|p| p.is_file())
        .collect();
    ours.sort();
    Ok(ours.pop())
}

/// `events.out.tfevents.<secs, 10 digits>.<host>.<pid>.0.landscaped`, as PyTorch's SummaryWriter
/// names its files (with `filename_suffix=".landscaped"`).
fn file_name() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("events.out.tfevents.{secs:010}.{}.{}.0{SUFFIX}", hostname(), std::process::id())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    // A file name: no path separators.
    let name: String = name.chars().map(|c| if c == '/' { '_' } else { c }).collect();
    if name.is_empty() { "localhost".into() } else { name }
}

/// Seconds since 1970 with fractions (an event's wall time).
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(path: &Path) -> Vec<Event> {
        let bytes = std::fs::read(path).unwrap();
        record::read_records(&bytes).payloads.iter().map(|p| Event::decode(*p).unwrap()).collect()
    }

    #[test]
    fn a_reopened_file_keeps_its_steps_and_never_rewrites_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, rep) = EventFile::open(dir.path()).unwrap();
        assert_eq!(rep, Reopened::default());
        assert!(f.path().file_name().unwrap().to_str().unwrap().ends_with(".0.landscaped"));
        assert!(f.scalar("a", 1, 1.0, 0.5));
        assert!(f.scalar("a", 2, 1.0, 0.6));
        assert!(!f.scalar("a", 2, 1.0, 9.0), "a step already written");
        assert!(f.text("t", 0, 1.0, "hello"));
        f.flush().unwrap();
        let path = f.path().to_path_buf();
        drop(f);
        let (mut g, rep) = EventFile::open(dir.path()).unwrap();
        assert_eq!((g.path(), rep.events, rep.cut), (path.as_path(), 4, None));
        assert_eq!(g.newest("a"), Some(2));
        assert!(!g.scalar("a", 1, 1.0, 0.0) && !g.text("t", 0, 1.0, "again"));
        assert!(g.scalar("a", 3, 1.0, 0.7));
        g.flush().unwrap();
        let evs = events(&path);
        assert_eq!(evs[0].what, Some(What::FileVersion(FILE_VERSION.into())));
        assert_eq!(evs.iter().map(|e| e.step).collect::<Vec<_>>(), vec![0, 1, 2, 0, 3]);
    }

    #[test]
    fn a_cut_short_tail_is_cut_off_and_appended_after() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = EventFile::open(dir.path()).unwrap();
        f.scalar("a", 1, 1.0, 1.0);
        f.flush().unwrap();
        let whole = std::fs::metadata(f.path()).unwrap().len();
        f.scalar("a", 2, 1.0, 2.0);
        f.flush().unwrap();
        let path = f.path().to_path_buf();
        drop(f);
        let full = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(full - 5).unwrap();
        let (mut g, rep) = EventFile::open(dir.path()).unwrap();
        assert_eq!(rep.cut.map(|c| c.0), Some(full - 5 - whole));
        assert_eq!(g.newest("a"), Some(1));
        assert!(g.scalar("a", 2, 1.0, 2.0));
        g.flush().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full);
        assert_eq!(events(&path).len(), 3);
    }
}
