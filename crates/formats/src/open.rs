//! Opening a checkpoint (file or folder: HF, DCP / Megatron / Lightning sharded, DeepSpeed) and
//! reading its tensors one at a time.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::complete::{self, FileKind};
use super::dcp::{self, DcpFolder};
use super::deepspeed::{self, DeepSpeedFolder};
use super::layout::{self, HF_WEIGHTS};
use super::safetensors::SafetensorsFile;
use super::torchzip::{self, TorchFile};
use super::values::ChunkBuf;
use super::{
    Alias, Checkpoint, CheckpointError, ChunkValues, Layout, TensorInfo, TensorSource, Values, ValuesChunk,
};

/// One open file behind a checkpoint, as opened (before it becomes a [`TensorSource`]).
#[derive(Debug)]
pub(crate) enum Part {
    Safetensors(SafetensorsFile),
    Torch(TorchFile),
    Dcp(DcpFolder),
    DeepSpeed(DeepSpeedFolder),
}

impl Part {
    fn infos(&self) -> Vec<TensorInfo> {
        self.source().tensors()
    }

    fn source(&self) -> &dyn TensorSource {
        match self {
            Part::Safetensors(f) => f,
            Part::Torch(f) => f,
            Part::Dcp(f) => f,
            Part::DeepSpeed(f) => f,
        }
    }

    fn boxed(self) -> Box<dyn TensorSource> {
        match self {
            Part::Safetensors(f) => Box::new(f),
            Part::Torch(f) => Box::new(f),
            Part::Dcp(f) => Box::new(f),
            Part::DeepSpeed(f) => Box::new(f),
        }
    }
}

/// Read tensor `i` whole through `read_bytes`, then copy the range asked for (a tensor stored as a
/// strided view in a DCP item or a DeepSpeed model-states file: not streamable).
fn copy_range(path: &Path, all: Vec<u8>, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
    let start =
        usize::try_from(offset).ok().filter(|&o| o.checked_add(buf.len()).is_some_and(|e| e <= all.len()));
    let Some(start) = start else {
        return Err(malformed(
            path,
            format!("range {offset}+{} past the tensor's {} bytes", buf.len(), all.len()),
        ));
    };
    buf.copy_from_slice(&all[start..start + buf.len()]);
    Ok(())
}

impl TensorSource for DcpFolder {
    fn tensors(&self) -> Vec<TensorInfo> {
        self.infos()
    }
    fn read_at(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        if DcpFolder::streamable(self, i) {
            return self.read_range(i, offset, buf);
        }
        copy_range(&self.dir, self.read_bytes(i)?, offset, buf)
    }
    fn streamable(&self, i: usize) -> bool {
        DcpFolder::streamable(self, i)
    }
}

impl TensorSource for DeepSpeedFolder {
    fn tensors(&self) -> Vec<TensorInfo> {
        self.infos()
    }
    fn aliases(&self) -> Vec<Alias> {
        self.aliases.clone()
    }
    fn copy(&self) -> Option<String> {
        Some(self.copy.clone())
    }
    fn read_at(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        if DeepSpeedFolder::streamable(self, i) {
            return self.read_range(i, offset, buf);
        }
        let dir = self.members().first().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
        copy_range(&dir, self.read_bytes(i)?, offset, buf)
    }
    fn streamable(&self, i: usize) -> bool {
        DeepSpeedFolder::streamable(self, i)
    }
}

impl TensorSource for SafetensorsFile {
    fn tensors(&self) -> Vec<TensorInfo> {
        self.entries.iter().map(|e| e.info.clone()).collect()
    }
    fn aliases(&self) -> Vec<Alias> {
        self.aliases.clone()
    }
    fn read_at(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        SafetensorsFile::read_at(self, i, offset, buf)
    }
}

impl TensorSource for TorchFile {
    fn tensors(&self) -> Vec<TensorInfo> {
        self.entries.iter().map(|e| e.0.clone()).collect()
    }
    fn aliases(&self) -> Vec<Alias> {
        self.aliases.clone()
    }
    fn read_at(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        TorchFile::read_at(self, i, offset, buf)
    }
    fn streamable(&self, i: usize) -> bool {
        TorchFile::streamable(self, i)
    }
    fn read_all(&self, i: usize, buf: &mut [u8]) -> Result<(), CheckpointError> {
        if self.streamable(i) {
            return self.read_at(i, 0, buf);
        }
        let all = self.read_bytes(i)?;
        if all.len() != buf.len() {
            return Err(malformed(
                &self.path,
                format!("tensor #{i}: {} bytes read, {} expected", all.len(), buf.len()),
            ));
        }
        buf.copy_from_slice(&all);
        Ok(())
    }
}

fn malformed(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed { path: path.to_path_buf(), why: why.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io { path: path.to_path_buf(), source }
}

/// How a checkpoint is judged as it is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rules {
    /// A reader's: a file shorter than its header says is broken (`Malformed`).
    Open,
    /// The completeness rules of [`super::complete`] as well (the daemon's): what can still change
    /// as a writer finishes is `Incomplete`; every verdict of [`super::check_complete`], from the
    /// same single parse of each header that opening makes.
    Complete,
}

/// Open one weights file by its content: a zip is a torch.save archive, a JSON header a safetensors
/// file; anything else is refused with the reason.
fn open_file(path: &Path, rules: Rules) -> Result<Part, CheckpointError> {
    if rules == Rules::Complete {
        return match super::complete::file_kind(path)? {
            FileKind::Zip => TorchFile::open(path).map(Part::Torch),
            FileKind::Safetensors => SafetensorsFile::open_complete(path).map(Part::Safetensors),
        };
    }
    use std::os::unix::fs::FileExt;
    if let Some(what) = layout::foreign_format(&file_name(path)) {
        return Err(CheckpointError::Unsupported { path: path.to_path_buf(), why: what.to_string() });
    }
    let file = super::regular::open_regular(path)?;
    let mut head = vec![0u8; 262];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64).map_err(|e| io_err(path, e))? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    drop(file);
    if head.is_empty() {
        return Err(malformed(path, "file is empty"));
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return TorchFile::open(path).map(Part::Torch);
    }
    if head.len() >= 9 && head[8] == b'{' {
        return SafetensorsFile::open(path).map(Part::Safetensors);
    }
    if let Some(what) = torchzip::sniff_unsupported(&head) {
        return Err(CheckpointError::Unsupported { path: path.to_path_buf(), why: what.to_string() });
    }
    Err(malformed(path, "neither a zip archive (torch.save) nor a safetensors file"))
}

fn file_name(path: &Path) -> std::borrow::Cow<'_, str> {
    layout::name_of(path)
}

/// The weights of an HF folder: an index and its shards, or one file.
enum HfWeights {
    Index { index: PathBuf, shards: Vec<(String, Vec<String>)> },
    Single(PathBuf),
}

impl Checkpoint {
    /// Open a checkpoint: a file (safetensors, torch zip `.pt`/`.pth`/`.bin`, Lightning `.ckpt`) or a
    /// folder (HF `checkpoint-N/`, DCP / Megatron `iter_N/` / Lightning sharded, DeepSpeed
    /// `global_stepN/`). Lists the tensors (name, dtype, shape) and the step (see the step rule in
    /// [`super::layout`]); reads no tensor values.
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        Self::open_judged(path, Rules::Open)
    }

    /// [`Checkpoint::open`] and [`super::check_complete`] in one pass: every header, index and
    /// metadata file is parsed once, and the verdict is the completeness check's (a checkpoint still
    /// being written is [`CheckpointError::Incomplete`], a file that is not a regular file
    /// [`CheckpointError::NotAFile`], garbage `Malformed`, ...) or else the opened checkpoint. What
    /// the daemon calls for each checkpoint it is about to ingest.
    pub fn open_complete(path: &Path) -> Result<Checkpoint, CheckpointError> {
        Self::open_judged(path, Rules::Complete)
    }

    fn open_judged(path: &Path, rules: Rules) -> Result<Checkpoint, CheckpointError> {
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        if meta.is_dir() {
            if dcp::is_dcp_like(path) {
                return Self::open_dcp(path, rules);
            }
            if deepspeed::is_deepspeed_folder(path) {
                return Self::open_deepspeed(path, rules);
            }
            return Self::open_hf(path, rules);
        }
        let part = open_file(path, rules)?;
        let name = &*file_name(path);
        let (layout, step) = match &part {
            Part::Torch(t) => {
                let lightning = t.lightning || name.ends_with(".ckpt");
                let layout = if lightning { Layout::Lightning } else { Layout::File };
                (layout, t.global_step.or_else(|| layout::step_from_name(name)))
            }
            _ => (Layout::File, layout::step_from_name(name)),
        };
        Ok(Self::assemble(path, layout, step, vec![part], vec![path.to_path_buf()]))
    }

    fn open_dcp(dir: &Path, rules: Rules) -> Result<Checkpoint, CheckpointError> {
        let folder = match rules {
            Rules::Open => DcpFolder::open(dir)?,
            Rules::Complete => DcpFolder::open_complete(dir)?,
        };
        let mut members = folder.members.clone();
        for side in layout::DCP_SIDE_FILES {
            let p = dir.join(side);
            if p.is_file() {
                members.push(p);
            }
        }
        let (layout, step) = layout::dcp_layout_and_step(dir);
        Ok(Self::assemble(dir, layout, step, vec![Part::Dcp(folder)], members))
    }

    fn open_deepspeed(dir: &Path, rules: Rules) -> Result<Checkpoint, CheckpointError> {
        let folder = match rules {
            Rules::Open => DeepSpeedFolder::open(dir)?,
            Rules::Complete => DeepSpeedFolder::open_complete(dir)?,
        };
        let members = folder.members();
        let step = folder.step.or_else(|| layout::step_from_name(&file_name(dir)));
        Ok(Self::assemble(dir, Layout::DeepSpeed, step, vec![Part::DeepSpeed(folder)], members))
    }

    fn open_hf(dir: &Path, rules: Rules) -> Result<Checkpoint, CheckpointError> {
        // The completeness rules want trainer_state.json (written last); parsed once, for the step too.
        let state = match rules {
            Rules::Complete => Some(complete::trainer_state(dir)?),
            Rules::Open => None,
        };
        let weights = Self::hf_weights(dir, rules)?;
        let mut members = Vec::new();
        let state_path = dir.join("trainer_state.json");
        if state_path.is_file() {
            members.push(state_path);
        }
        let mut parts = Vec::new();
        match weights {
            HfWeights::Index { index, shards } => {
                let index_name = file_name(&index).into_owned();
                members.push(index);
                for (shard, names) in shards {
                    let p = match rules {
                        Rules::Complete => complete::present_shard(dir, &index_name, &shard)?,
                        Rules::Open => dir.join(&shard),
                    };
                    let part = open_file(&p, rules)?;
                    let infos = part.infos();
                    if let Some(missing) = names.iter().find(|n| !infos.iter().any(|i| &i.name == *n)) {
                        return Err(malformed(
                            &p,
                            format!("index lists tensor '{missing}' in this shard but it is not there"),
                        ));
                    }
                    members.push(p);
                    parts.push(part);
                }
            }
            HfWeights::Single(weights) => {
                parts.push(open_file(&weights, rules)?);
                members.push(weights);
            }
        }
        let step = match &state {
            Some(v) => layout::hf_step_of(Some(v), dir),
            None => layout::hf_step(dir),
        };
        let ck = Self::assemble(dir, Layout::HfFolder, step, parts, members);
        let mut names: Vec<&str> = ck.tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(malformed(dir, format!("tensor '{}' appears in more than one shard", w[0])));
        }
        Ok(ck)
    }

    /// Which weights an HF folder holds (the first of [`HF_WEIGHTS`] present), with an index's shards.
    /// Under the completeness rules a weights file that is not a regular file is refused by name, a
    /// folder with none is incomplete and an index listing no shard malformed.
    fn hf_weights(dir: &Path, rules: Rules) -> Result<HfWeights, CheckpointError> {
        let mut found = None;
        for w in HF_WEIGHTS {
            let p = dir.join(w);
            let present = match rules {
                Rules::Complete => super::regular::regular_or_absent(&p)?,
                Rules::Open => p.is_file(),
            };
            if present {
                found = Some(p);
                break;
            }
        }
        let Some(weights) = found else {
            return Err(match rules {
                Rules::Complete => complete::no_hf_weights(dir),
                Rules::Open => malformed(
                    dir,
                    "folder holds no model.safetensors, pytorch_model.bin or weights index (not an HF checkpoint)",
                ),
            });
        };
        if !file_name(&weights).ends_with(".index.json") {
            return Ok(HfWeights::Single(weights));
        }
        let shards = match rules {
            Rules::Complete => complete::listed_shards(&weights)?,
            Rules::Open => layout::index_shards(&weights)?,
        };
        Ok(HfWeights::Index { index: weights, shards })
    }

    fn assemble(
        path: &Path,
        layout: Layout,
        step: Option<u64>,
        parts: Vec<Part>,
        members: Vec<PathBuf>,
    ) -> Checkpoint {
        Self::from_sources(
            path.to_path_buf(),
            layout,
            step,
            parts.into_iter().map(Part::boxed).collect(),
            members,
        )
    }

    /// A checkpoint made of `sources` (their tensors in order, one source after another): how a
    /// layout reader outside this module (DCP, Megatron, DeepSpeed, ...) becomes a `Checkpoint`.
    /// `members` are every file it consists of (stat'ed by [`Checkpoint::files`] for change detection).
    pub(crate) fn from_sources(
        path: PathBuf,
        layout: Layout,
        step: Option<u64>,
        sources: Vec<Box<dyn TensorSource>>,
        members: Vec<PathBuf>,
    ) -> Checkpoint {
        let mut tensors = Vec::new();
        let mut locs = Vec::new();
        let mut aliases = Vec::new();
        let mut copies = Vec::new();
        for (pi, part) in sources.iter().enumerate() {
            for (ti, info) in part.tensors().into_iter().enumerate() {
                tensors.push(info);
                locs.push((pi, ti));
            }
            aliases.extend(part.aliases());
            copies.extend(part.copy());
        }
        copies.dedup();
        let source = if copies.is_empty() { "state dict".to_string() } else { copies.join("; ") };
        Checkpoint { path, layout, step, tensors, aliases, source, parts: sources, locs, members }
    }

    fn info(&self, index: usize) -> Result<&TensorInfo, CheckpointError> {
        self.tensors.get(index).ok_or_else(|| {
            malformed(&self.path, format!("no tensor #{index} (the checkpoint has {})", self.tensors.len()))
        })
    }

    pub fn malformed(&self, why: impl Into<String>) -> CheckpointError {
        malformed(&self.path, why)
    }

    /// Tensor `index`, which must be a float tensor.
    pub(crate) fn float_info(&self, index: usize) -> Result<&TensorInfo, CheckpointError> {
        let info = self.info(index)?;
        if !info.dtype.is_float() {
            return Err(CheckpointError::Unsupported {
                path: self.path.clone(),
                why: format!("tensor '{}' has dtype {}, not a float", info.name, info.dtype.name()),
            });
        }
        Ok(info)
    }

    fn source(&self, index: usize) -> Result<(&dyn TensorSource, usize), CheckpointError> {
        self.info(index)?;
        let &(pi, ti) = self
            .locs
            .get(index)
            .ok_or_else(|| malformed(&self.path, "a listing only: no file to read from"))?;
        Ok((self.parts[pi].as_ref(), ti))
    }

    /// Bytes of tensor `index` in bytes: numel × element size (saturating).
    pub fn tensor_bytes(&self, index: usize) -> u64 {
        self.tensors
            .get(index)
            .map_or(0, |t| t.shape.iter().fold(t.dtype.size() as u64, |a, &d| a.saturating_mul(d as u64)))
    }

    /// Bytes `[offset, offset + buf.len())` of tensor `index`'s little-endian row-major data. Takes
    /// `&self`: ranges of one tensor may be read from several threads at once.
    pub fn read_at(&self, index: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        let (src, ti) = self.source(index)?;
        src.read_at(ti, offset, buf)
    }

    /// Whether [`Checkpoint::read_at`] reads only the range asked for (false: a torch.save tensor
    /// stored as a strided view or in a compressed entry, read whole each time; read it whole once).
    pub fn streamable(&self, index: usize) -> bool {
        self.source(index).map(|(s, ti)| s.streamable(ti)).unwrap_or(false)
    }

    /// Refuses tensors larger than `max_tensor_bytes` and files whose apparent size exceeds the size
    /// of their whole filesystem (a sparse file whose header claims what no disk holds), each with one
    /// line naming the file and the cause.
    pub fn check_limits(&self, max_tensor_bytes: u64) -> Result<(), CheckpointError> {
        for (i, t) in self.tensors.iter().enumerate() {
            let b = self.tensor_bytes(i);
            if b > max_tensor_bytes {
                return Err(CheckpointError::Refused {
                    path: self.path.clone(),
                    why: format!(
                        "tensor '{}' of shape {:?} is {} ({b} bytes), larger than the limit of {} (max_tensor_bytes)",
                        t.name,
                        t.shape,
                        human_bytes(b),
                        human_bytes(max_tensor_bytes)
                    ),
                });
            }
        }
        for m in &self.members {
            check_fits_filesystem(m)?;
        }
        Ok(())
    }

    /// The raw little-endian bytes of tensor `index` (any dtype), contiguous in row-major order.
    /// The allocation is fallible: a size no memory holds is an error, not an abort.
    pub fn read_raw(&self, index: usize) -> Result<Vec<u8>, CheckpointError> {
        let (src, ti) = self.source(index)?;
        let len = usize::try_from(self.tensor_bytes(index))
            .map_err(|_| malformed(&self.path, "tensor too large for this machine"))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|_| CheckpointError::Refused {
            path: self.path.clone(),
            why: format!(
                "tensor '{}' needs {} in memory, which could not be allocated",
                self.tensors[index].name,
                human_bytes(len as u64)
            ),
        })?;
        buf.resize(len, 0);
        src.read_all(ti, &mut buf)?;
        Ok(buf)
    }

    /// Streams float tensor `index` in order: `f` gets consecutive chunks of at most
    /// `max_chunk_bytes` file bytes (at least one element), widened (f32/f16/bf16 → f32, f64 → f64).
    /// Memory is one chunk whatever the tensor's size (a tensor that is not [`streamable`] is read
    /// whole once). `f`'s error stops the stream and is returned.
    ///
    /// [`streamable`]: Checkpoint::streamable
    pub fn read_chunks<E: From<CheckpointError>>(
        &self,
        index: usize,
        max_chunk_bytes: usize,
        mut f: impl FnMut(ValuesChunk<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let info = self.float_info(index)?;
        let es = info.dtype.size();
        let numel = usize::try_from(self.tensor_bytes(index) / es as u64)
            .map_err(|_| malformed(&self.path, "tensor too large for this machine"))?;
        let per = (max_chunk_bytes / es).max(1);
        let mut buf = ChunkBuf::new();
        if !self.streamable(index) {
            let all = self.read_raw(index)?;
            for (k, bytes) in all.chunks(per * es).enumerate() {
                let values = buf.decode(info.dtype, bytes);
                f(ValuesChunk { index, start: k * per, values })?;
            }
            return Ok(());
        }
        let mut start = 0;
        while start < numel {
            let n = per.min(numel - start);
            let values = buf.fill(self, index, start, n)?;
            f(ValuesChunk { index, start, values })?;
            start += n;
        }
        Ok(())
    }

    /// The values of float tensor `index` whole: f32/f16/bf16 widened exactly to f32, f64 as f64.
    /// An integer or bool tensor is an error (they are listed, not read as floats). Prefer
    /// [`Checkpoint::read_chunks`]; this one holds the whole tensor (allocated fallibly).
    pub fn read(&self, index: usize) -> Result<Values, CheckpointError> {
        let info = self.float_info(index)?;
        let numel = usize::try_from(self.tensor_bytes(index) / info.dtype.size() as u64)
            .map_err(|_| malformed(&self.path, "tensor too large for this machine"))?;
        let wide = if info.dtype == super::Dtype::F64 { 8 } else { 4 };
        let too_big = || CheckpointError::Refused {
            path: self.path.clone(),
            why: format!(
                "tensor '{}' needs {} in memory, which could not be allocated",
                info.name,
                human_bytes((numel as u64).saturating_mul(wide))
            ),
        };
        let mut out = match info.dtype {
            super::Dtype::F64 => {
                let mut v = Vec::new();
                v.try_reserve_exact(numel).map_err(|_| too_big())?;
                Values::F64(v)
            }
            _ => {
                let mut v = Vec::new();
                v.try_reserve_exact(numel).map_err(|_| too_big())?;
                Values::F32(v)
            }
        };
        self.read_chunks(index, 4 << 20, |c: ValuesChunk<'_>| -> Result<(), CheckpointError> {
            match (&mut out, c.values) {
                (Values::F32(v), ChunkValues::F32(x)) => v.extend_from_slice(x),
                (Values::F64(v), ChunkValues::F64(x)) => v.extend_from_slice(x),
                _ => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Checkpoint::read`] as f64 (exact for every float dtype).
    pub fn read_f64(&self, index: usize) -> Result<Vec<f64>, CheckpointError> {
        Ok(match self.read(index)? {
            Values::F64(v) => v,
            Values::F32(v) => v.into_iter().map(f64::from).collect(),
        })
    }

    /// [`Checkpoint::read`] as f32 (exact except for f64 tensors, which are rounded).
    pub fn read_f32(&self, index: usize) -> Result<Vec<f32>, CheckpointError> {
        Ok(match self.read(index)? {
            Values::F32(v) => v,
            Values::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        })
    }

    /// The index of the tensor named `name`; an alias (see [`Checkpoint::aliases`]) gives its owner's.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let owner = self.aliases.iter().find(|a| a.name == name).map_or(name, |a| a.owner.as_str());
        self.tensors.iter().position(|t| t.name == owner)
    }

    /// The dtypes of the float tensors read, most elements first: `f32`, `f32+bf16`, `bf16`.
    pub fn dtypes(&self) -> String {
        let mut by: Vec<(super::Dtype, usize)> = Vec::new();
        for (_, t) in self.float_tensors() {
            match by.iter_mut().find(|(d, _)| *d == t.dtype) {
                Some((_, n)) => *n += t.numel(),
                None => by.push((t.dtype, t.numel())),
            }
        }
        by.sort_by_key(|d| std::cmp::Reverse(d.1));
        by.iter().map(|(d, _)| d.name()).collect::<Vec<_>>().join("+")
    }

    /// The float tensors (f64, f32, f16, bf16), with their indices.
    pub fn float_tensors(&self) -> impl Iterator<Item = (usize, &TensorInfo)> {
        self.tensors.iter().enumerate().filter(|(_, t)| t.dtype.is_float())
    }

    /// The files the checkpoint consists of, each with its current length and modification time
    /// (stat'ed now, for change detection; a file that can no longer be stat'ed reports length 0 and
    /// the Unix epoch).
    pub fn files(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        self.members
            .iter()
            .map(|p| match std::fs::metadata(p) {
                Ok(m) => (p.clone(), m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
                Err(_) => (p.clone(), 0, SystemTime::UNIX_EPOCH),
            })
            .collect()
    }
}

/// `n` bytes for people: "4.0 TiB", "64 MiB", "17 bytes".
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A file whose apparent size exceeds the size of its whole filesystem cannot hold real data there:
/// a sparse file whose header claims more than any disk holds. Refused.
fn check_fits_filesystem(path: &Path) -> Result<(), CheckpointError> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if !meta.is_file() {
        return Ok(());
    }
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return Ok(()) };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(());
    }
    let fs_bytes = (st.f_blocks as u64).saturating_mul(st.f_frsize as u64);
    if fs_bytes > 0 && meta.len() > fs_bytes {
        return Err(CheckpointError::Refused {
            path: path.to_path_buf(),
            why: format!(
                "the file claims {} but its whole filesystem holds {} (a sparse file with a lying header?)",
                human_bytes(meta.len()),
                human_bytes(fs_bytes)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn checkpoint_is_send_and_sync() {
        assert_send_sync::<Checkpoint>();
    }
}
