//! The PyTorch zip reader (`torch.save` since 1.6: `.pt`, `.pth`, `.bin`, Lightning `.ckpt`).
//!
//! Order of trust: the zip's central directory is read first (TorchScript archives, which carry
//! `constants.pkl` / `code/`, are refused as unsupported); `data.pkl` is then scanned opcode by opcode
//! ([`super::pickle_scan`]) and any global outside the state-dict allow-list is refused by name; only
//! then does the `pytorch-reader` crate parse the pickle (it never executes it, never mmaps, and
//! reads each storage lazily with `pread`). The state dict is taken from the top level or from under
//! `state_dict` / `model` / `module` / `model_state_dict`; every other entry (optimizer state, loops,
//! callbacks) is skipped, and its tensors are never read.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use pytorch_reader::{DType, PickleValue, PytorchReader};

use super::pickle_scan::{self, ScanError};
use super::{Alias, CheckpointError, Dtype, TensorInfo};

/// Keys under which a checkpoint dict nests its state dict, in order of preference.
pub(crate) const NESTING_KEYS: [&str; 4] = ["state_dict", "model", "module", "model_state_dict"];

/// The largest `data.pkl` read (the same bound as pytorch-reader).
const MAX_PICKLE: u64 = 100 * 1024 * 1024;

/// An open torch zip checkpoint.
pub(crate) struct TorchFile {
    pub path: PathBuf,
    /// Tensor descriptions (names relative to the state dict) with their lazy read handles.
    pub entries: Vec<(TensorInfo, pytorch_reader::Tensor)>,
    /// Per entry: the absolute file offset of its row-major bytes when they lie contiguous in a
    /// stored entry (read by range); None: read whole through `pytorch-reader`.
    spans: Vec<Option<u64>>,
    file: File,
    /// `global_step` from the top-level dict, if it holds a non-negative integer.
    pub global_step: Option<u64>,
    /// Names whose tensor is the same view of the same storage as an earlier entry's (tied weights),
    /// left out of `entries`.
    pub aliases: Vec<Alias>,
    /// The dict looks like Lightning's (`state_dict` plus `pytorch-lightning_version`,
    /// `global_step` or `optimizer_states`).
    pub lightning: bool,
}

impl std::fmt::Debug for TorchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchFile")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .field("global_step", &self.global_step)
            .finish()
    }
}

fn malformed(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed { path: path.to_path_buf(), why: why.into() }
}

fn unsupported(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Unsupported { path: path.to_path_buf(), why: why.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io { path: path.to_path_buf(), source }
}

/// The magic number a pre-1.6 `torch.save` file starts with (inside a pickled LONG1).
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// If the first bytes of a file say it is a torch format we don't read, say which.
pub(crate) fn sniff_unsupported(head: &[u8]) -> Option<&'static str> {
    let window = &head[..head.len().min(64)];
    if window.windows(LEGACY_MAGIC.len()).any(|w| w == LEGACY_MAGIC)
        || window.windows(24).any(|w| w == b"119547037146038801333356")
    {
        return Some("legacy (pre-1.6) torch.save format; re-save it with torch >= 1.6 (zip format)");
    }
    if head.get(257..262) == Some(b"ustar") {
        return Some("tar-based torch.save format (before PyTorch 0.1.10)");
    }
    if matches!(head.first(), Some(0x80)) {
        return Some("a bare pickle, not a torch.save zip archive");
    }
    None
}

/// A stored (uncompressed) storage entry: where its bytes start in the file, and how many there are.
#[derive(Clone, Copy, Debug)]
struct StoredEntry {
    data_start: u64,
    size: u64,
}

/// What the zip directory says: `data.pkl` and where each stored storage entry lies (by key).
struct Archive {
    pickle: Vec<u8>,
    storages: HashMap<String, StoredEntry>,
}

/// Read `data.pkl` (and check the archive is not TorchScript) using the zip crate's directory.
fn read_data_pkl(path: &Path) -> Result<Archive, CheckpointError> {
    let file = super::regular::open_regular(path)?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| malformed(path, format!("not a readable zip archive: {e}")))?;
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| malformed(path, format!("bad zip entry name: {e}")))?;
    let root = names
        .iter()
        .filter_map(|n| n.strip_suffix("data.pkl"))
        .filter(|r| r.is_empty() || r.ends_with('/'))
        .min_by_key(|r| r.len())
        .map(str::to_string)
        .ok_or_else(|| malformed(path, "zip archive has no data.pkl (not a torch.save file)"))?;
    let torchscript = names.iter().any(|n| {
        n.strip_prefix(root.as_str()).is_some_and(|rest| rest == "constants.pkl" || rest.starts_with("code/"))
    });
    if torchscript {
        return Err(unsupported(
            path,
            "TorchScript archive (torch.jit.save); save model.state_dict() with torch.save for weight statistics",
        ));
    }
    let mut entry = archive
        .by_name(&format!("{root}data.pkl"))
        .map_err(|e| malformed(path, format!("cannot open data.pkl: {e}")))?;
    let limit = MAX_PICKLE.min(file_len.max(1) * 8);
    let mut buf = Vec::with_capacity(entry.size().min(limit) as usize);
    (&mut entry)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| malformed(path, format!("cannot read data.pkl: {e}")))?;
    if buf.len() as u64 > limit {
        return Err(malformed(path, format!("data.pkl is larger than {limit} bytes")));
    }
    drop(entry);
    // Stored storages, for reading byte ranges directly (torch.save writes every entry stored).
    let data_prefix = format!("{root}data/");
    let mut storages = HashMap::new();
    for name in &names {
        let Some(key) = name.strip_prefix(data_prefix.as_str()) else { continue };
        if key.is_empty() || key.contains('/') {
            continue;
        }
        let Some(i) = archive.index_for_name(name) else { continue };
        let Ok(e) = archive.by_index_raw(i) else { continue };
        if e.compression() != zip::CompressionMethod::Stored || e.compressed_size() != e.size() {
            continue;
        }
        let (size, start) = (e.size(), e.data_start());
        if let Some(data_start) = start
            && data_start.checked_add(size).is_some_and(|end| end <= file_len)
        {
            storages.insert(key.to_string(), StoredEntry { data_start, size });
        }
    }
    Ok(Archive { pickle: buf, storages })
}

fn map_dtype(path: &Path, name: &str, d: DType) -> Result<Dtype, CheckpointError> {
    Ok(match d {
        DType::F64 => Dtype::F64,
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I16 => Dtype::I16,
        DType::I8 => Dtype::I8,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::Bool,
        DType::U16 | DType::U32 | DType::U64 => {
            return Err(unsupported(
                path,
                format!("tensor '{name}' has dtype {d:?}, which landscaped does not read"),
            ));
        }
    })
}

fn reader_error(path: &Path, e: pytorch_reader::PytorchError) -> CheckpointError {
    match e {
        pytorch_reader::PytorchError::Io(source) => io_err(path, source),
        other => malformed(path, other.to_string()),
    }
}

impl TorchFile {
    pub(crate) fn open(path: &Path) -> Result<Self, CheckpointError> {
        super::parse_log::record("torch pickle", path);
        let archive = read_data_pkl(path)?;
        let scan = pickle_scan::scan(&archive.pickle).map_err(|e| match e {
            ScanError::Refused(why) => CheckpointError::Refused { path: path.to_path_buf(), why },
            ScanError::Malformed(why) => malformed(path, format!("data.pkl: {why}")),
        })?;
        let located = super::torch_locate::locate(&archive.pickle);
        let storages = archive.storages;
        let file = super::regular::open_regular(path)?;

        // The structure of the top-level object, with tensors as opaque leaves.
        let root = PytorchReader::read_pickle_data(path, None).map_err(|e| reader_error(path, e))?;
        let PickleValue::Dict(root) = root else {
            return Err(malformed(
                path,
                "the saved object is not a dict (not a state dict or checkpoint dict)",
            ));
        };
        let prefix = NESTING_KEYS
            .iter()
            .find(|k| matches!(root.get(**k), Some(PickleValue::Dict(_))))
            .map(|k| format!("{k}."));
        let global_step = match root.get("global_step") {
            Some(PickleValue::Int(s)) => u64::try_from(*s).ok(),
            _ => None,
        };
        let lightning = prefix.as_deref() == Some("state_dict.")
            && (root.contains_key("pytorch-lightning_version")
                || root.contains_key("global_step")
                || root.contains_key("optimizer_states"));
        drop(root);

        let reader = PytorchReader::new(path).map_err(|e| reader_error(path, e))?;
        let file_len = std::fs::metadata(path).map_err(|e| io_err(path, e))?.len();
        let mut entries = Vec::new();
        let mut spans = HashMap::new();
        let mut views = HashMap::new();
        for (full, tensor) in reader.into_tensors() {
            let full_name = full.clone();
            let span = located.get(&full).filter(|l| l.contiguous()).and_then(|l| {
                let st = storages.get(&l.key)?;
                let es = tensor.dtype().size() as u64;
                let numel = l.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
                let begin = l.offset.checked_mul(es)?;
                let end = begin.checked_add(numel.checked_mul(es)?)?;
                let same_shape = l.shape.iter().map(|&d| d as usize).eq(tensor.shape().iter().copied());
                (same_shape && end <= st.size).then(|| st.data_start + begin)
            });
            let name = match &prefix {
                Some(p) => match full.strip_prefix(p.as_str()) {
                    Some(rest) => rest.to_string(),
                    None => continue, // optimizer state and other entries: skipped, never read
                },
                None => full,
            };
            let dtype = map_dtype(path, &name, tensor.dtype())?;
            let shape = tensor.shape().to_vec();
            // A strided view can declare far more elements than its storage holds (stride 0); a
            // state dict never needs that, and reading it would allocate beyond the file's size.
            if tensor.byte_len() as u64 > file_len {
                return Err(malformed(
                    path,
                    format!(
                        "tensor '{name}' of shape {shape:?} needs {} bytes, more than the whole file ({file_len})",
                        tensor.byte_len()
                    ),
                ));
            }
            spans.insert(name.clone(), span);
            if let Some(l) = located.get(&full_name) {
                views.insert(
                    name.clone(),
                    (l.key.clone(), l.offset, l.shape.clone(), l.stride.clone(), dtype),
                );
            }
            entries.push((TensorInfo { name, dtype, shape }, tensor));
        }
        sort_in_file_order(&mut entries, &scan.string_order);
        let aliases = drop_aliases(&mut entries, &views);
        let spans = entries.iter().map(|e| spans.get(&e.0.name).copied().flatten()).collect();
        Ok(TorchFile { path: path.to_path_buf(), entries, spans, file, global_step, lightning, aliases })
    }

    /// Whether entry `i` is read by byte range (else each read goes through the whole tensor).
    pub(crate) fn streamable(&self, i: usize) -> bool {
        matches!(self.spans.get(i), Some(Some(_)))
    }

    /// Bytes `[offset, offset + buf.len())` of entry `i`'s row-major little-endian data.
    pub(crate) fn read_at(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        use std::os::unix::fs::FileExt;
        let (info, _) = &self.entries[i];
        let total = (info.numel() as u64).saturating_mul(info.dtype.size() as u64);
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > total) {
            return Err(malformed(
                &self.path,
                format!(
                    "tensor '{}': read of {} bytes at {offset} is past its {total} bytes",
                    info.name,
                    buf.len()
                ),
            ));
        }
        match self.spans[i] {
            Some(start) => self.file.read_exact_at(buf, start + offset).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    malformed(
                        &self.path,
                        format!("tensor '{}': file ended early (changed since it was opened?)", info.name),
                    )
                } else {
                    io_err(&self.path, e)
                }
            }),
            None => {
                let all = self.read_bytes(i)?;
                buf.copy_from_slice(&all[offset as usize..offset as usize + buf.len()]);
                Ok(())
            }
        }
    }

    /// The tensor's bytes, contiguous and little-endian.
    pub(crate) fn read_bytes(&self, i: usize) -> Result<Vec<u8>, CheckpointError> {
        let (info, tensor) = &self.entries[i];
        let bytes = tensor.read().map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                malformed(&self.path, e.to_string())
            }
            _ => io_err(&self.path, e),
        })?;
        let want = info.numel().checked_mul(info.dtype.size());
        if want != Some(bytes.len()) {
            return Err(malformed(
                &self.path,
                format!("tensor '{}': read {} bytes, expected {:?}", info.name, bytes.len(), want),
            ));
        }
        Ok(bytes)
    }
}

/// A tensor's view of its storage: (storage key, offset, shape, stride, dtype).
type View = (String, u64, Vec<u64>, Vec<u64>, Dtype);

/// Removes every entry whose view (storage, offset, shape, stride, dtype) equals an earlier entry's,
/// returning them as aliases of that entry: `torch.save(model.state_dict())` of tied weights stores
/// one storage under two names. Views that merely overlap (a slice of another tensor) stay listed.
fn drop_aliases(
    entries: &mut Vec<(TensorInfo, pytorch_reader::Tensor)>,
    views: &HashMap<String, View>,
) -> Vec<Alias> {
    let mut owners: HashMap<&View, String> = HashMap::new();
    let mut aliases = Vec::new();
    let mut keep = vec![true; entries.len()];
    for (i, (info, _)) in entries.iter().enumerate() {
        let Some(view) = views.get(&info.name) else { continue };
        match owners.get(view) {
            Some(owner) => {
                aliases.push(Alias { name: info.name.clone(), owner: owner.clone() });
                keep[i] = false;
            }
            None => {
                owners.insert(view, info.name.clone());
            }
        }
    }
    let mut k = keep.into_iter();
    entries.retain(|_| k.next().unwrap_or(true));
    aliases
}

/// Order tensors as their names first appear in the pickle (the state dict's order); names the
/// pickle doesn't spell out whole (nested containers) go last, by name.
fn sort_in_file_order(entries: &mut [(TensorInfo, pytorch_reader::Tensor)], order: &HashMap<String, usize>) {
    entries.sort_by(|a, b| {
        let ra = order.get(&a.0.name).copied().unwrap_or(usize::MAX);
        let rb = order.get(&b.0.name).copied().unwrap_or(usize::MAX);
        ra.cmp(&rb).then_with(|| a.0.name.cmp(&b.0.name))
    });
}
