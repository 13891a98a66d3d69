//! The trajectory archive: the parameter vectors a later PCA needs, kept by landscaped itself when a
//! checkpoint is ingested (training frameworks delete old checkpoints).
//!
//! One file per checkpoint, `<data_dir>/trajectory/<run>/<step, 20 digits>.bin`:
//! ```text
//! magic "LSTRAJ01" | tensor data, in checkpoint order, LE in each tensor's stored type | index (JSON) |
//! index offset u64 LE | index length u64 LE | index crc32 u32 LE | magic "LSTRAJ01"
//! ```
//! The index lists run, step, ordinal (the n-th checkpoint of the run seen), precision and each tensor's
//! name, shape, byte offset and (precision `native`) stored type. By default (`native`) every tensor is
//! kept in the checkpoint's own type (bf16 stays bf16, f16 f16, f32 f32, f64 f64): exact, and no larger
//! than the checkpoint; readers widen it ([`ArchiveFile::read_f64`]). A file is written to a hidden temp file and renamed into place by
//! `finish`, so readers never see a partial file. Retention (all / every k-th / at most N, thinned
//! evenly) and a disk budget are applied after each new file; the newest step is always kept.
//! Reading is by `pread`, a chunk of one tensor at a time.

use super::select::{Selection, TensorFilter};
use crate::sink::{DoesNotFit, TensorSink};
use anyhow::{Context, bail};
use landscaped_formats::{Checkpoint, ChunkValues, Dtype, TensorInfo, Values};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes free for an unprivileged writer on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Size of the whole filesystem holding `dir`.
fn total_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_blocks as u64).saturating_mul(st.f_frsize as u64)).filter(|&t| t > 0)
}

const MAGIC: &[u8; 8] = b"LSTRAJ01";
const TRAILER: usize = 8 + 8 + 4 + 8;

/// How archived values are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Each tensor in the checkpoint's own type (bf16, f16, f32 or f64): exact, as many bytes as the
    /// checkpoint's tensors.
    #[default]
    Native,
    /// 4 bytes per parameter; exact for f32/f16/bf16 checkpoints.
    F32,
    /// 2 bytes per parameter, rounded to nearest even (as `tensor.to(torch.bfloat16)`).
    Bf16,
}

impl Precision {
    /// How a tensor stored as `dtype` in the checkpoint is kept.
    pub fn stored(self, dtype: Dtype) -> Stored {
        match (self, dtype) {
            (Precision::F32, _) => Stored::F32,
            (Precision::Bf16, _) => Stored::Bf16,
            (Precision::Native, Dtype::BF16) => Stored::Bf16,
            (Precision::Native, Dtype::F16) => Stored::F16,
            (Precision::Native, Dtype::F64) => Stored::F64,
            (Precision::Native, _) => Stored::F32,
        }
    }

    /// Whether values read back are the checkpoint's own, exactly (for f32/f16/bf16 checkpoints).
    pub fn exact(self) -> bool {
        self != Precision::Bf16
    }
}

/// The type one archived tensor is stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stored {
    F32,
    Bf16,
    F16,
    F64,
}

impl Stored {
    pub fn bytes(self) -> usize {
        match self {
            Stored::F32 => 4,
            Stored::Bf16 | Stored::F16 => 2,
            Stored::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stored::F32 => "f32",
            Stored::Bf16 => "bf16",
            Stored::F16 => "f16",
            Stored::F64 => "f64",
        }
    }
}

/// Which checkpoints of a run are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    /// Every checkpoint.
    #[default]
    All,
    /// Every k-th checkpoint seen (the 0th, k-th, 2k-th, ...), plus the newest.
    EveryK(u64),
    /// At most N, thinned evenly by step (the first and the newest are kept).
    AtMost(usize),
}

impl std::str::FromStr for Retention {
    type Err = String;
    /// `all`, `every:K` or `max:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad retention {s:?}: expected all, every:K or max:N (K, N ≥ 1)");
        if s == "all" {
            return Ok(Retention::All);
        }
        let (kind, num) = s.split_once(':').ok_or_else(bad)?;
        let n: u64 = num.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        match kind {
            "every" => Ok(Retention::EveryK(n)),
            "max" => Ok(Retention::AtMost(n as usize)),
            _ => Err(bad()),
        }
    }
}

/// Configuration of the archive (what B's ingest and C's daemon pass in).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArchiveConfig {
    pub precision: Precision,
    pub retention: Retention,
    /// Bytes the run's archive may use; the oldest-spaced files are thinned to stay under it.
    pub budget_bytes: Option<u64>,
    /// Which tensors are archived.
    #[serde(flatten)]
    pub selection: Selection,
}

/// How a run's archive is kept, as the user gives it: the flags of `ingest` and `trajectory --import`
/// and the `[run.archive]` section of the daemon's config are this one type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveOptions {
    /// Archive precision: native (each tensor in the checkpoint's own type: bf16 stays bf16; exact),
    /// f32 (exact for f32/f16/bf16 checkpoints, twice the bytes of a bf16 one) or bf16 (rounded).
    #[arg(long = "archive-precision", visible_alias = "precision", value_enum, default_value_t = Precision::Native)]
    pub precision: Precision,
    /// Which of the run's archived checkpoints are kept: all, every:K (every K-th seen, plus the newest)
    /// or max:N (at most N, thinned evenly; the first and the newest kept).
    #[arg(long = "archive-retention", visible_alias = "retention", default_value = "all")]
    #[serde(deserialize_with = "retention_from_str")]
    pub retention: Retention,
    /// Disk budget of the run's archive, in MiB: the most evenly spaced checkpoints are thinned to stay
    /// under it (the newest is always kept; a checkpoint alone larger than it is not archived).
    #[arg(long = "archive-budget-mib", visible_alias = "budget-mib", value_parser = clap::value_parser!(u64).range(1..))]
    pub budget_mib: Option<u64>,
    /// Leave tensors with at most one dimension (biases, norms) out of the archive.
    #[arg(long = "archive-exclude-1d", visible_alias = "exclude-1d")]
    pub exclude_1d: bool,
}

fn retention_from_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Retention, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

impl ArchiveOptions {
    /// The archive's configuration; a budget of 0 MiB is refused (clap refuses it on the command line).
    pub fn config(&self) -> anyhow::Result<ArchiveConfig> {
        if self.budget_mib == Some(0) {
            bail!("the archive's budget must be at least 1 MiB");
        }
        Ok(ArchiveConfig {
            precision: self.precision,
            retention: self.retention.clone(),
            budget_bytes: self.budget_mib.map(|m| m.saturating_mul(1 << 20)),
            selection: Selection { exclude_1d: self.exclude_1d, ..Default::default() },
        })
    }
}

/// What one `finish` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveReport {
    pub run: String,
    pub step: u64,
    /// Whether this checkpoint was written (false when it alone exceeds the budget).
    pub written: bool,
    pub bytes_written: u64,
    /// Steps removed by retention or by the budget.
    pub removed_steps: Vec<u64>,
    pub files_kept: usize,
    pub bytes_used: u64,
    pub budget_bytes: Option<u64>,
}

/// One tensor in an archive file's index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// Byte offset of the first element in the file.
    pub offset: u64,
    /// The type it is stored in (files of precision `native`; otherwise the file's precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Stored>,
}

impl ArchivedTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Its stored type in a file of precision `p`.
    pub fn stored(&self, p: Precision) -> Stored {
        self.dtype.unwrap_or(match p {
            Precision::Bf16 => Stored::Bf16,
            _ => Stored::F32,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Index {
    run: String,
    step: u64,
    ordinal: u64,
    precision: Precision,
    tensors: Vec<ArchivedTensor>,
}

/// The folder holding a run's archive. Run names are percent-encoded into one safe path component.
pub fn run_dir(data_dir: &Path, run: &str) -> PathBuf {
    let mut enc = String::new();
    for (i, b) in run.bytes().enumerate() {
        let safe = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if safe {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    data_dir.join("trajectory").join(enc)
}

fn file_name(step: u64) -> String {
    format!("{step:020}.bin")
}

/// One archived checkpoint on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub step: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

/// The archived checkpoints of a run, in ascending step order (empty if none).
pub fn list_run(data_dir: &Path, run: &str) -> anyhow::Result<Vec<ArchiveEntry>> {
    let dir = run_dir(data_dir, run);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}", dir.display())),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.with_context(|| format!("{}", dir.display()))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".bin") else { continue };
        if stem.len() != 20 {
            continue;
        }
        let Ok(step) = stem.parse::<u64>() else { continue };
        let bytes = ent.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(ArchiveEntry { step, path: ent.path(), bytes });
    }
    out.sort_by_key(|e| e.step);
    Ok(out)
}

/// Disk use of a run's archive: (files, bytes).
pub fn usage(data_dir: &Path, run: &str) -> anyhow::Result<(usize, u64)> {
    let l = list_run(data_dir, run)?;
    Ok((l.len(), l.iter().map(|e| e.bytes).sum()))
}

/// An archived checkpoint opened for reading.
#[derive(Debug)]
pub struct ArchiveFile {
    pub path: PathBuf,
    pub step: u64,
    pub ordinal: u64,
    pub precision: Precision,
    pub tensors: Vec<ArchivedTensor>,
    file: File,
}

impl ArchiveFile {
    /// Opens a file and validates its trailer and index against the file size.
    pub fn open(path: &Path) -> anyhow::Result<ArchiveFile> {
        let p = path.display();
        let file = File::open(path).with_context(|| format!("{p}"))?;
        let size = file.metadata().with_context(|| format!("{p}"))?.len();
        if size < (MAGIC.len() + TRAILER) as u64 {
            bail!("{p}: not a trajectory archive file (too short: {size} bytes)");
        }
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0).with_context(|| format!("{p}"))?;
        let mut tr = [0u8; TRAILER];
        file.read_exact_at(&mut tr, size - TRAILER as u64).with_context(|| format!("{p}"))?;
        if &head != MAGIC || &tr[20..28] != MAGIC {
            bail!("{p}: not a trajectory archive file (bad magic)");
        }
        let u64_at = |i: usize| u64::from_le_bytes(tr[i..i + 8].try_into().unwrap_or([0; 8]));
        let (ioff, ilen) = (u64_at(0), u64_at(8));
        let crc = u32::from_le_bytes(tr[16..20].try_into().unwrap_or([0; 4]));
        let data_end = size - TRAILER as u64;
        if ioff < 8 || ioff.checked_add(ilen) != Some(data_end) || ilen > 64 << 20 {
            bail!("{p}: corrupt trajectory archive file (index at {ioff}+{ilen}, file {size} bytes)");
        }
        let mut ib = vec![0u8; ilen as usize];
        file.read_exact_at(&mut ib, ioff).with_context(|| format!("{p}"))?;
        if crc32fast::hash(&ib) != crc {
            bail!("{p}: corrupt trajectory archive file (index checksum mismatch)");
        }
        let idx: Index = serde_json::from_slice(&ib)
            .map_err(|e| anyhow::anyhow!("{p}: corrupt trajectory archive index: {e}"))?;
        for t in &idx.tensors {
            let eb = t.stored(idx.precision).bytes() as u64;
            let n = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
            let end = n.and_then(|n| n.checked_mul(eb)).and_then(|b| b.checked_add(t.offset));
            match end {
                Some(end) if t.offset >= 8 && end <= ioff => {}
                _ => bail!("{p}: corrupt trajectory archive: tensor {} lies outside the data", t.name),
            }
        }
        Ok(ArchiveFile {
            path: path.to_path_buf(),
            step: idx.step,
            ordinal: idx.ordinal,
            precision: idx.precision,
            tensors: idx.tensors,
            file,
        })
    }

    /// Reads elements `start..start + out.len()` of tensor `t` (an index into `tensors`) as f64.
    /// `scratch` is a reusable byte buffer.
    pub fn read_f64(
        &self,
        t: usize,
        start: usize,
        out: &mut [f64],
        scratch: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        let Some(info) = self.tensors.get(t) else {
            bail!("{}: no tensor #{t}", self.path.display());
        };
        if start + out.len() > info.numel() {
            bail!("{}: read past the end of tensor {}", self.path.display(), info.name);
        }
        let stored = info.stored(self.precision);
        let eb = stored.bytes();
        scratch.resize(out.len() * eb, 0);
        let at = info.offset + (start * eb) as u64;
        self.file
            .read_exact_at(scratch, at)
            .with_context(|| format!("{}: tensor {}", self.path.display(), info.name))?;
        match stored {
            Stored::F32 => {
                for (o, b) in out.iter_mut().zip(scratch.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64;
                }
            }
            Stored::Bf16 => {
                for (o, b) in out.iter_mut().zip(scratch.chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16) as f64;
                }
            }
            Stored::F16 => {
                for (o, b) in out.iter_mut().zip(scratch.chunks_exact(2)) {
                    *o = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64();
                }
            }
            Stored::F64 => {
                for (o, b) in out.iter_mut().zip(scratch.chunks_exact(8)) {
                    *o = f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                }
            }
        }
        Ok(())
    }

    /// The stored types of its tensors, distinct, in order of first appearance ("bf16", "bf16+f32").
    pub fn stored_types(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for t in &self.tensors {
            let n = t.stored(self.precision).name();
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        seen.join("+")
    }
}

struct Pending {
    run: String,
    step: u64,
    ordinal: u64,
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    /// End of the tensor data (where the index goes).
    data_end: u64,
    tensors: Vec<ArchivedTensor>,
    /// By checkpoint tensor index: the position in `tensors` of an archived tensor.
    slot: Vec<Option<usize>>,
    /// Bytes written per archived tensor (each must end up exactly its size).
    written: Vec<AtomicU64>,
    /// Held around each `pwrite`: the kernel serializes writes to one file anyway (the inode lock),
    /// and a thread waiting for it there spins on the CPU; here it sleeps.
    write_lock: std::sync::Mutex<()>,
}

/// The archive as an ingest [`TensorSink`]: writes one file per checkpoint. Every tensor's place in
/// the file is fixed at `begin`, so chunks are written where they belong (`pwrite`) from any thread,
/// in any order, and nothing is buffered beyond one converted chunk.
pub struct ArchiveSink {
    data_dir: PathBuf,
    cfg: ArchiveConfig,
    filter: TensorFilter,
    pending: Option<Pending>,
    skipped: Option<(String, u64)>,
    last: Option<ArchiveReport>,
}

impl ArchiveSink {
    /// A sink writing under `<data_dir>/trajectory/`. Fails only on a bad glob or a bad config.
    pub fn new(data_dir: &Path, cfg: &ArchiveConfig) -> anyhow::Result<ArchiveSink> {
        if matches!(cfg.retention, Retention::EveryK(0) | Retention::AtMost(0)) {
            bail!("trajectory retention: k and N must be at least 1");
        }
        Ok(ArchiveSink {
            data_dir: data_dir.to_path_buf(),
            cfg: cfg.clone(),
            filter: TensorFilter::new(&cfg.selection)?,
            pending: None,
            skipped: None,
            last: None,
        })
    }

    /// What the last `finish` did, handed over once (None until the next `finish`).
    pub fn take_report(&mut self) -> Option<ArchiveReport> {
        self.last.take()
    }

    /// What the last `finish` did.
    pub(crate) fn last_report(&self) -> Option<&ArchiveReport> {
        self.last.as_ref()
    }

    /// `TensorSink::chunk`: elements `start ..` of checkpoint tensor `index`.
    pub(crate) fn write_chunk(
        &self,
        index: usize,
        start: usize,
        values: ChunkValues<'_>,
    ) -> anyhow::Result<()> {
        let Some(p) = self.pending.as_ref() else { return Ok(()) };
        let Some(slot) = p.slot.get(index).copied().flatten() else { return Ok(()) };
        let t = &p.tensors[slot];
        let stored = t.stored(self.cfg.precision);
        let eb = stored.bytes() as u64;
        if start.checked_add(values.len()).is_none_or(|end| end > t.numel()) {
            bail!(
                "trajectory archive: tensor {} has {} values but shape {:?}",
                t.name,
                start.saturating_add(values.len()),
                t.shape
            );
        }
        let at = t.offset + start as u64 * eb;
        let write = |b: &[u8]| {
            let _serial = p.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            p.file.write_all_at(b, at)
        };
        // `native` keeps each tensor's own type, so narrowing the widened values back is exact.
        let exact = self.cfg.precision == Precision::Native;
        let res = match (stored, values) {
            (Stored::F32, ChunkValues::F32(_)) | (Stored::F64, ChunkValues::F64(_)) => {
                write(&values.le_bytes())
            }
            (Stored::F32, ChunkValues::F64(v)) => {
                let b: Vec<u8> = v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect();
                write(&b)
            }
            (Stored::F64, ChunkValues::F32(v)) => {
                let b: Vec<u8> = v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect();
                write(&b)
            }
            (Stored::Bf16, ChunkValues::F32(v)) if exact => write(&bf16_bits_le(v)),
            (Stored::F16, ChunkValues::F32(v)) => write(&f16_le(v)),
            (Stored::F16, ChunkValues::F64(v)) => {
                let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                write(&f16_le(&v))
            }
            (Stored::Bf16, v) => {
                let mut b = Vec::with_capacity(v.len() * 2);
                match v {
                    ChunkValues::F32(v) => {
                        b.extend(v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()))
                    }
                    ChunkValues::F64(v) => {
                        b.extend(v.iter().flat_map(|&x| half::bf16::from_f32(x as f32).to_le_bytes()))
                    }
                }
                write(&b)
            }
        };
        res.with_context(|| format!("trajectory archive: writing {}", p.tmp.display()))?;
        p.written[slot].fetch_add(values.len() as u64 * eb, Ordering::Relaxed);
        Ok(())
    }
}

/// bf16 values (widened exactly from bf16) back to their bf16 bits, little endian: the top half of
/// each f32, in a loop the compiler vectorizes.
fn bf16_bits_le(v: &[f32]) -> Vec<u8> {
    let bits: Vec<u16> = v.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
    bits.iter().flat_map(|h| h.to_le_bytes()).collect()
}

/// f32 values as f16 (rounded to nearest even; exact for values widened from f16), little endian,
/// through `half`'s slice conversion.
fn f16_le(v: &[f32]) -> Vec<u8> {
    use half::slice::HalfFloatSliceExt;
    let mut h = vec![half::f16::ZERO; v.len()];
    h.convert_from_f32_slice(v);
    h.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Files of a run with their ordinals (opening each index).
fn ordinals(entries: &[ArchiveEntry]) -> Vec<(u64, u64, u64)> {
    entries
        .iter()
        .filter_map(|e| ArchiveFile::open(&e.path).ok().map(|f| (e.step, f.ordinal, e.bytes)))
        .collect()
}

/// The interior file whose removal leaves the most even spacing: the one with the smallest gap between
/// its neighbours. With fewer than three files, the first (oldest) one.
pub(crate) fn thinning_victim(steps: &[u64]) -> Option<usize> {
    match steps.len() {
        0 | 1 => None,
        2 => Some(0),
        n => (1..n - 1).min_by_key(|&i| steps[i + 1] - steps[i - 1]),
    }
}

/// Applies retention and the budget to a run's files; never removes `keep` (the newest step).
/// Returns the removed steps.
fn apply_retention(dir_entries: &[ArchiveEntry], cfg: &ArchiveConfig) -> anyhow::Result<Vec<u64>> {
    let mut files: Vec<(u64, u64, u64)> = ordinals(dir_entries); // (step, ordinal, bytes), by step
    let mut removed = Vec::new();
    let newest = files.last().map(|f| f.0);
    let mut remove = |files: &mut Vec<(u64, u64, u64)>, i: usize| -> anyhow::Result<()> {
        let (step, _, _) = files.remove(i);
        if let Some(e) = dir_entries.iter().find(|e| e.step == step) {
            match std::fs::remove_file(&e.path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).with_context(|| format!("{}", e.path.display())),
            }
        }
        removed.push(step);
        Ok(())
    };
    match cfg.retention {
        Retention::All => {}
        Retention::EveryK(k) => {
            let mut i = 0;
            while i < files.len() {
                if Some(files[i].0) != newest && !files[i].1.is_multiple_of(k) {
                    remove(&mut files, i)?;
                } else {
                    i += 1;
                }
            }
        }
        Retention::AtMost(n) => {
            while files.len() > n.max(1) {
                let steps: Vec<u64> = files.iter().map(|f| f.0).collect();
                let i = if n <= 1 { 0 } else { thinning_victim(&steps).unwrap_or(0) };
                remove(&mut files, i)?;
            }
        }
    }
    if let Some(budget) = cfg.budget_bytes {
        while files.len() > 1 && files.iter().map(|f| f.2).sum::<u64>() > budget {
            let steps: Vec<u64> = files.iter().map(|f| f.0).collect();
            let i = thinning_victim(&steps).unwrap_or(0);
            remove(&mut files, i)?;
        }
    }
    removed.sort_unstable();
    Ok(removed)
}

impl TensorSink for ArchiveSink {
    fn begin(&mut self, run: &str, step: u64, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        self.begin_tensors(run, step, &checkpoint.tensors)
    }

    fn chunk(&self, index: usize, start: usize, values: ChunkValues<'_>) -> anyhow::Result<()> {
        self.write_chunk(index, start, values)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.finish_file()
    }

    fn abort(&mut self) {
        self.abort_file()
    }
}

impl ArchiveSink {
    /// `TensorSink::begin` given the checkpoint's tensor list (which sizes the budget check and fixes
    /// every tensor's place in the file).
    pub(crate) fn begin_tensors(
        &mut self,
        run: &str,
        step: u64,
        tensors: &[TensorInfo],
    ) -> anyhow::Result<()> {
        self.abort_file();
        self.last = None;
        crate::store::keys::validate_run_name(run).map_err(|e| anyhow::anyhow!("trajectory archive: {e}"))?;
        let dir = run_dir(&self.data_dir, run);
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        // Layout: the selected float tensors in checkpoint order, after the magic.
        let mut layout = Vec::new();
        let mut slot = vec![None; tensors.len()];
        let mut offset = MAGIC.len() as u64;
        let mut seen = std::collections::HashSet::new();
        for (i, t) in tensors.iter().enumerate() {
            if !t.dtype.is_float() || !self.filter.selects(&t.name, &t.shape) {
                continue;
            }
            if !seen.insert(t.name.as_str()) {
                bail!("trajectory archive: tensor {} given twice", t.name);
            }
            let stored = self.cfg.precision.stored(t.dtype);
            let bytes = t.shape.iter().fold(stored.bytes() as u64, |a, &d| a.saturating_mul(d as u64));
            slot[i] = Some(layout.len());
            let dtype = (self.cfg.precision == Precision::Native).then_some(stored);
            layout.push(ArchivedTensor { name: t.name.clone(), shape: t.shape.clone(), offset, dtype });
            offset = offset.saturating_add(bytes);
        }
        let need = offset - MAGIC.len() as u64;
        // A checkpoint that alone exceeds the budget is not archived (the rest of ingest goes on).
        if let Some(budget) = self.cfg.budget_bytes
            && need > budget
        {
            tracing::warn!(
                "trajectory archive: run {run} step {step} needs {need} bytes, more than the budget of {budget}; not archived"
            );
            self.skipped = Some((run.to_string(), step));
            return Ok(());
        }
        if let Some(total) = total_bytes(&dir)
            && need > total
        {
            return Err(anyhow::Error::new(DoesNotFit {
                why: format!(
                    "trajectory archive: {}: run {run} step {step} needs {need} bytes, more than the whole filesystem holds ({total} bytes): it can never be archived there",
                    dir.display()
                ),
                ever: true,
            }));
        }
        if let Some(free) = free_bytes(&dir)
            && need > free
        {
            return Err(anyhow::Error::new(DoesNotFit {
                why: format!(
                    "trajectory archive: {}: run {run} step {step} needs {need} bytes but only {free} are free there",
                    dir.display()
                ),
                ever: false,
            }));
        }
        let entries = list_run(&self.data_dir, run)?;
        let ords = ordinals(&entries);
        let ordinal = match ords.iter().find(|o| o.0 == step) {
            Some(o) => o.1,
            None => ords.iter().map(|o| o.1 + 1).max().unwrap_or(0),
        };
        let dest = dir.join(file_name(step));
        let tmp = dir.join(format!(".{}.{}.tmp", file_name(step), std::process::id()));
        let file = File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
        file.write_all_at(MAGIC, 0).with_context(|| format!("{}", tmp.display()))?;
        let written = layout.iter().map(|_| AtomicU64::new(0)).collect();
        self.pending = Some(Pending {
            run: run.to_string(),
            step,
            ordinal,
            tmp,
            dest,
            file,
            data_end: offset,
            tensors: layout,
            slot,
            written,
            write_lock: std::sync::Mutex::new(()),
        });
        Ok(())
    }

    /// A whole tensor at once (tools and tests): `info` must be one of the tensors given to `begin`.
    pub fn put_tensor(&mut self, info: &TensorInfo, values: &Values) -> anyhow::Result<()> {
        let Some(p) = self.pending.as_ref() else { return Ok(()) };
        let Some(index) = p
            .slot
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.filter(|&s| p.tensors[s].name == info.name).map(|_| i))
        else {
            return Ok(());
        };
        if values.len() != info.numel() {
            bail!(
                "trajectory archive: tensor {} has {} values but shape {:?}",
                info.name,
                values.len(),
                info.shape
            );
        }
        self.write_chunk(index, 0, values.into())
    }

    /// `TensorSink::finish`.
    pub(crate) fn finish_file(&mut self) -> anyhow::Result<()> {
        if let Some((run, step)) = self.skipped.take() {
            let (files_kept, bytes_used) = usage(&self.data_dir, &run)?;
            self.last = Some(ArchiveReport {
                run,
                step,
                written: false,
                files_kept,
                bytes_used,
                budget_bytes: self.cfg.budget_bytes,
                ..Default::default()
            });
            return Ok(());
        }
        let Some(mut p) = self.pending.take() else { return Ok(()) };
        for (t, w) in p.tensors.iter().zip(&p.written) {
            let want = (t.numel() as u64) * t.stored(self.cfg.precision).bytes() as u64;
            let got = w.load(Ordering::Relaxed);
            if got != want {
                let _ = std::fs::remove_file(&p.tmp);
                bail!("trajectory archive: tensor {} got {got} of its {want} bytes", t.name);
            }
        }
        let res = (|| -> anyhow::Result<u64> {
            let idx = Index {
                run: p.run.clone(),
                step: p.step,
                ordinal: p.ordinal,
                precision: self.cfg.precision,
                tensors: std::mem::take(&mut p.tensors),
            };
            let ib = serde_json::to_vec(&idx)?;
            let mut tail = ib.clone();
            tail.extend_from_slice(&p.data_end.to_le_bytes());
            tail.extend_from_slice(&(ib.len() as u64).to_le_bytes());
            tail.extend_from_slice(&crc32fast::hash(&ib).to_le_bytes());
            tail.extend_from_slice(MAGIC);
            p.file.write_all_at(&tail, p.data_end)?;
            p.file.sync_all()?;
            std::fs::rename(&p.tmp, &p.dest)?;
            if let Some(dir) = p.dest.parent()
                && let Ok(d) = File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(p.data_end + ib.len() as u64 + TRAILER as u64)
        })();
        let written = match res {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&p.tmp);
                return Err(e.context(format!("trajectory archive: writing {}", p.dest.display())));
            }
        };
        let entries = list_run(&self.data_dir, &p.run)?;
        let removed = apply_retention(&entries, &self.cfg)?;
        let (files_kept, bytes_used) = usage(&self.data_dir, &p.run)?;
        let rep = ArchiveReport {
            run: p.run.clone(),
            step: p.step,
            written: true,
            bytes_written: written,
            removed_steps: removed,
            files_kept,
            bytes_used,
            budget_bytes: self.cfg.budget_bytes,
        };
        // Debug: `ingest` says what the archive did in one line at its end, the daemon in its metrics.
        tracing::debug!(
            run = %rep.run,
            step = rep.step,
            bytes = rep.bytes_written,
            kept = rep.files_kept,
            used = rep.bytes_used,
            budget = ?rep.budget_bytes,
            removed = ?rep.removed_steps,
            "trajectory archived"
        );
        self.last = Some(rep);
        Ok(())
    }

    /// `TensorSink::abort`.
    pub(crate) fn abort_file(&mut self) {
        self.skipped = None;
        if let Some(p) = self.pending.take() {
            drop(p.file);
            let _ = std::fs::remove_file(&p.tmp);
        }
    }
}

/// A sink dropped between `begin` and `finish` (an ingest that failed, returned early or panicked)
/// aborts: its temporary file is removed, so a half-written ingest leaves nothing behind whether or
/// not anyone called `abort`.
impl Drop for ArchiveSink {
    fn drop(&mut self) {
        self.abort_file();
    }
}

/// Writes one archive file directly from in-memory tensors (tests and tools): the same format and
/// atomic rename as the sink.
pub fn write_checkpoint(
    data_dir: &Path,
    run: &str,
    step: u64,
    cfg: &ArchiveConfig,
    tensors: &[(TensorInfo, Values)],
) -> anyhow::Result<ArchiveReport> {
    let mut sink = ArchiveSink::new(data_dir, cfg)?;
    let infos: Vec<TensorInfo> = tensors.iter().map(|t| t.0.clone()).collect();
    sink.begin_tensors(run, step, &infos)?;
    for (info, v) in tensors {
        if let Err(e) = sink.put_tensor(info, v) {
            sink.abort_file();
            return Err(e);
        }
    }
    sink.finish_file()?;
    sink.last.take().ok_or_else(|| anyhow::anyhow!("trajectory archive: nothing written"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[usize], vals: Vec<f32>) -> (TensorInfo, Values) {
        (TensorInfo { name: name.into(), dtype: Dtype::F32, shape: shape.to_vec() }, Values::F32(vals))
    }

    fn ck(step: u64) -> Vec<(TensorInfo, Values)> {
        let s = step as f32;
        vec![t("w", &[2, 3], (0..6).map(|i| i as f32 + s * 0.5).collect()), t("b", &[2], vec![s, -s])]
    }

    #[test]
    fn roundtrip_f32_and_bf16() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ArchiveConfig::default();
        write_checkpoint(d.path(), "r-1", 7, &cfg, &ck(7)).unwrap();
        let l = list_run(d.path(), "r-1").unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].step, 7);
        let f = ArchiveFile::open(&l[0].path).unwrap();
        assert_eq!(f.tensors.len(), 2);
        let mut out = vec![0.0; 3];
        let mut s = Vec::new();
        f.read_f64(0, 2, &mut out, &mut s).unwrap();
        assert_eq!(out, vec![5.5, 6.5, 7.5]);

        let cfg = ArchiveConfig { precision: Precision::Bf16, ..Default::default() };
        let vals = vec![1.0f32 + 1.0 / 256.0 + 1.0 / 512.0, 2.7182817];
        write_checkpoint(d.path(), "b", 1, &cfg, &[t("x", &[2], vals.clone())]).unwrap();
        let f = ArchiveFile::open(&list_run(d.path(), "b").unwrap()[0].path).unwrap();
        let mut out = vec![0.0; 2];
        f.read_f64(0, 0, &mut out, &mut s).unwrap();
        for (o, v) in out.iter().zip(&vals) {
            assert_eq!(*o, half::bf16::from_f32(*v).to_f64());
        }
        assert!(f.read_f64(0, 1, &mut out, &mut s).is_err());
    }

    #[test]
    fn abort_leaves_nothing_and_corruption_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ArchiveConfig::default();
        let bad = vec![t("w", &[2, 3], vec![0.0; 5])];
        assert!(write_checkpoint(d.path(), "r", 1, &cfg, &bad).is_err());
        let dir = run_dir(d.path(), "r");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

        write_checkpoint(d.path(), "r", 2, &cfg, &ck(2)).unwrap();
        let p = list_run(d.path(), "r").unwrap()[0].path.clone();
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 0xff; // inside the index
        std::fs::write(&p, &bytes).unwrap();
        let e = ArchiveFile::open(&p).unwrap_err().to_string();
        assert!(e.contains("checksum") || e.contains("corrupt"), "{e}");
        std::fs::write(&p, &bytes[..10]).unwrap();
        assert!(ArchiveFile::open(&p).unwrap_err().to_string().contains("too short"));
    }

    #[test]
    fn a_sink_dropped_mid_checkpoint_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let tensors = ck(3);
        let infos: Vec<TensorInfo> = tensors.iter().map(|t| t.0.clone()).collect();
        let dir = run_dir(d.path(), "r");
        {
            let mut sink = ArchiveSink::new(d.path(), &ArchiveConfig::default()).unwrap();
            sink.begin_tensors("r", 3, &infos).unwrap();
            sink.write_chunk(0, 0, ChunkValues::F32(&[1.0])).unwrap();
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "the temporary file is being written");
            // Dropped without finish or abort.
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing left behind");
        assert!(list_run(d.path(), "r").unwrap().is_empty());
        // A finished sink keeps its file when dropped.
        write_checkpoint(d.path(), "r", 4, &ArchiveConfig::default(), &tensors).unwrap();
        assert_eq!(list_run(d.path(), "r").unwrap().iter().map(|e| e.step).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn selection_excludes_1d() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ArchiveConfig {
            selection: Selection { exclude_1d: true, ..Default::default() },
            ..Default::default()
        };
        write_checkpoint(d.path(), "r", 1, &cfg, &ck(1)).unwrap();
        let f = ArchiveFile::open(&list_run(d.path(), "r").unwrap()[0].path).unwrap();
        assert_eq!(f.tensors.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["w"]);
    }

    fn steps(d: &Path) -> Vec<u64> {
        list_run(d, "r").unwrap().iter().map(|e| e.step).collect()
    }

    #[test]
    fn retention_every_k_keeps_newest() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ArchiveConfig { retention: Retention::EveryK(3), ..Default::default() };
        for s in 0..8 {
            write_checkpoint(d.path(), "r", s * 10, &cfg, &ck(s)).unwrap();
        }
        // ordinals 0..7: keep 0, 3, 6 and the newest (7).
        assert_eq!(steps(d.path()), vec![0, 30, 60, 70]);
    }

    #[test]
    fn retention_at_most_thins_evenly() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ArchiveConfig { retention: Retention::AtMost(5), ..Default::default() };
        for s in 0..17 {
            write_checkpoint(d.path(), "r", s, &cfg, &ck(s)).unwrap();
        }
        let st = steps(d.path());
        assert_eq!(st.len(), 5);
        assert_eq!((st[0], st[4]), (0, 16));
        let gaps: Vec<u64> = st.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().max().unwrap() - gaps.iter().min().unwrap() <= 4, "{st:?}");
    }

    #[test]
    fn budget_is_enforced_and_reported() {
        let d = tempfile::tempdir().unwrap();
        write_checkpoint(d.path(), "r", 0, &ArchiveConfig::default(), &ck(0)).unwrap();
        let one = usage(d.path(), "r").unwrap().1;
        let cfg = ArchiveConfig { budget_bytes: Some(3 * one + one / 2), ..Default::default() };
        let mut last = None;
        for s in 1..10 {
            last = Some(write_checkpoint(d.path(), "r", s, &cfg, &ck(s)).unwrap());
        }
        let rep = last.unwrap();
        assert_eq!(rep.files_kept, 3);
        assert!(rep.bytes_used <= 3 * one + one / 2);
        assert_eq!(steps(d.path()).last(), Some(&9));
        assert_eq!(steps(d.path())[0], 0);
        // a checkpoint larger than the whole budget is skipped, and said so
        let tiny = ArchiveConfig { budget_bytes: Some(8), ..Default::default() };
        let rep = write_checkpoint(d.path(), "r", 20, &tiny, &ck(20)).unwrap();
        assert!(!rep.written);
        assert!(!steps(d.path()).contains(&20));
    }

    #[test]
    fn a_checkpoint_larger_than_the_filesystem_never_fits() {
        let d = tempfile::tempdir().unwrap();
        let mut sink = ArchiveSink::new(d.path(), &ArchiveConfig::default()).unwrap();
        // 2^62 f32 values: a header no disk holds.
        let huge = TensorInfo { name: "w".into(), dtype: Dtype::F32, shape: vec![1 << 31, 1 << 31] };
        let e = sink.begin_tensors("r", 1, &[huge]).unwrap_err();
        let fit = e.downcast_ref::<DoesNotFit>().expect("a DoesNotFit");
        assert!(fit.ever && fit.why.contains("more than the whole filesystem"), "{}", fit.why);
        assert!(list_run(d.path(), "r").unwrap().is_empty());
    }

    #[test]
    fn retention_parses() {
        assert_eq!("all".parse::<Retention>().unwrap(), Retention::All);
        assert_eq!("every:4".parse::<Retention>().unwrap(), Retention::EveryK(4));
        assert_eq!("max:10".parse::<Retention>().unwrap(), Retention::AtMost(10));
        assert!("max:0".parse::<Retention>().is_err());
        assert!("often".parse::<Retention>().is_err());
    }

    #[test]
    fn run_names_are_encoded() {
        let p = run_dir(Path::new("/d"), "../a b/c");
        assert_eq!(p, Path::new("/d/trajectory/%2E.%2Fa%20b%2Fc"));
    }
}
