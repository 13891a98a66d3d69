//! Opening a checkpoint (file or HF folder) and reading its tensors one at a time.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::layout::{self, HF_WEIGHTS};
use super::safetensors::SafetensorsFile;
use super::torchzip::{self, TorchFile};
use super::{Checkpoint, CheckpointError, Layout, TensorInfo, Values};

/// One open file behind a checkpoint.
#[derive(Debug)]
pub(crate) enum Part {
    Safetensors(SafetensorsFile),
    Torch(TorchFile),
}

impl Part {
    fn infos(&self) -> Vec<TensorInfo> {
        match self {
            Part::Safetensors(f) => f.entries.iter().map(|e| e.info.clone()).collect(),
            Part::Torch(f) => f.entries.iter().map(|e| e.0.clone()).collect(),
        }
    }

    fn read_bytes(&self, i: usize) -> Result<Vec<u8>, CheckpointError> {
        match self {
            Part::Safetensors(f) => f.read_bytes(i),
            Part::Torch(f) => f.read_bytes(i),
        }
    }
}

fn malformed(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed { path: path.to_path_buf(), why: why.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Open one weights file by its content: a zip is a torch.save archive, a JSON header a safetensors
/// file; anything else is refused with the reason.
fn open_file(path: &Path) -> Result<Part, CheckpointError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
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

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

impl Checkpoint {
    /// Open a checkpoint: a file (safetensors, torch zip `.pt`/`.pth`/`.bin`, Lightning `.ckpt`) or an
    /// HF `checkpoint-N/` folder. Lists the tensors (name, dtype, shape) and the step (see the step
    /// rule in [`super::layout`]); reads no tensor values.
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        if meta.is_dir() {
            return Self::open_hf(path);
        }
        let part = open_file(path)?;
        let name = file_name(path);
        let (layout, step) = match &part {
            Part::Torch(t) => {
                let lightning = t.lightning || name.ends_with(".ckpt");
                let layout = if lightning { Layout::Lightning } else { Layout::File };
                (layout, t.global_step.or_else(|| layout::step_from_name(name)))
            }
            Part::Safetensors(_) => (Layout::File, layout::step_from_name(name)),
        };
        Ok(Self::assemble(path, layout, step, vec![part], vec![path.to_path_buf()]))
    }

    fn open_hf(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let weights = HF_WEIGHTS.iter().map(|w| dir.join(w)).find(|p| p.is_file()).ok_or_else(|| {
            malformed(dir, "folder holds no model.safetensors, pytorch_model.bin or weights index (not an HF checkpoint)")
        })?;
        let mut members = Vec::new();
        let state = dir.join("trainer_state.json");
        if state.is_file() {
            members.push(state);
        }
        let mut parts = Vec::new();
        if file_name(&weights).ends_with(".index.json") {
            let shards = layout::index_shards(&weights)?;
            members.push(weights.clone());
            for (shard, names) in shards {
                let p = dir.join(&shard);
                let part = open_file(&p)?;
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
        } else {
            parts.push(open_file(&weights)?);
            members.push(weights);
        }
        let step = layout::hf_step(dir);
        let ck = Self::assemble(dir, Layout::HfFolder, step, parts, members);
        let mut names: Vec<&str> = ck.tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(malformed(dir, format!("tensor '{}' appears in more than one shard", w[0])));
        }
        Ok(ck)
    }

    fn assemble(
        path: &Path,
        layout: Layout,
        step: Option<u64>,
        parts: Vec<Part>,
        members: Vec<PathBuf>,
    ) -> Checkpoint {
        let mut tensors = Vec::new();
        let mut locs = Vec::new();
        for (pi, part) in parts.iter().enumerate() {
            for (ti, info) in part.infos().into_iter().enumerate() {
                tensors.push(info);
                locs.push((pi, ti));
            }
        }
        Checkpoint { path: path.to_path_buf(), layout, step, tensors, parts, locs, members }
    }

    /// A checkpoint that is only a listing (no files behind it): for tools and tests that feed
    /// in-memory tensors to code taking a `&Checkpoint`. Reading its tensors is an error.
    pub fn from_listing(
        path: PathBuf,
        layout: Layout,
        step: Option<u64>,
        tensors: Vec<TensorInfo>,
    ) -> Checkpoint {
        Checkpoint { path, layout, step, tensors, parts: Vec::new(), locs: Vec::new(), members: Vec::new() }
    }

    fn info(&self, index: usize) -> Result<&TensorInfo, CheckpointError> {
        self.tensors.get(index).ok_or_else(|| {
            malformed(&self.path, format!("no tensor #{index} (the checkpoint has {})", self.tensors.len()))
        })
    }

    /// The raw little-endian bytes of tensor `index` (any dtype), contiguous in row-major order.
    pub fn read_raw(&self, index: usize) -> Result<Vec<u8>, CheckpointError> {
        self.info(index)?;
        let &(pi, ti) = self
            .locs
            .get(index)
            .ok_or_else(|| malformed(&self.path, "a listing only: no file to read from"))?;
        self.parts[pi].read_bytes(ti)
    }

    /// The values of float tensor `index`: f32/f16/bf16 widened exactly to f32, f64 as f64. An
    /// integer or bool tensor is an error (they are listed, not read as floats).
    pub fn read(&self, index: usize) -> Result<Values, CheckpointError> {
        let info = self.info(index)?;
        if !info.dtype.is_float() {
            return Err(CheckpointError::Unsupported {
                path: self.path.clone(),
                why: format!("tensor '{}' has dtype {}, not a float", info.name, info.dtype.name()),
            });
        }
        if let Some(&(pi, ti)) = self.locs.get(index)
            && let Part::Safetensors(f) = &self.parts[pi]
            && let Some(v) = f.read_values(ti)?
        {
            return Ok(v);
        }
        let bytes = self.read_raw(index)?;
        super::values::decode(info.dtype, &bytes).ok_or_else(|| {
            malformed(
                &self.path,
                format!("tensor '{}': {} bytes is not a whole number of elements", info.name, bytes.len()),
            )
        })
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

    /// The index of the tensor named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn checkpoint_is_send_and_sync() {
        assert_send_sync::<Checkpoint>();
    }
}
