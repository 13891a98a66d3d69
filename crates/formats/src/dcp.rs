//! torch.distributed.checkpoint (DCP) folders: FSDP/FSDP2, torchtitan, Lightning's `"sharded"`
//! checkpoints and Megatron-LM's `torch_dist` format.
//!
//! A DCP folder holds `.metadata` (a plain pickle of the `Metadata` dataclass, written last) and
//! data files (`__{rank}_{i}.distcp`). `.metadata` is scanned against [`pickle_scan::allowed_dcp`]
//! (the state-dict allow-list plus exactly the classes DCP writes) and built into a value tree; it
//! lists each tensor's dtype, full size and chunks (offsets, sizes), and where each chunk's bytes are
//! (`_StorageInfo`: file, offset, length). A data file is either a sequence of `torch.save` archives,
//! one per chunk at its offset ([`super::torch_item`]), or, with `SerializationFormat.SAFETENSORS`,
//! one safetensors file keyed by tensor name. A tensor is presented as one tensor of its full shape:
//! a range of it is read straight from the chunks that hold it ([`chunk_runs`]), so a sharded tensor
//! streams like any other (a chunk stored as a strided view is the exception: read whole).
//!
//! Checked before anything is read: every chunk lies inside its tensor, no two overlap and together
//! they cover it; every referenced file is a plain name inside the folder, exists, and holds the byte
//! range; `transform_descriptors` (compression or other stream transforms) are refused by name.
//!
//! Keys are presented as written (`model.layer.weight`). When any key starts with `model.`, only
//! those tensors are weights (the `optim.` / `optimizer_0.` parts and other entries are skipped);
//! otherwise every tensor is listed except the ones under `optim.`/`optimizer.`. Non-tensor items
//! (`BytesStorageMetadata`) are never read.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::pickle_scan::{self, ScanError};
use super::pickle_value::{self, Val};
use super::safetensors::SafetensorsFile;
use super::torch_item::{self, Archive, TensorRef};
use super::{CheckpointError, Dtype, TensorInfo};

/// The metadata file of a DCP folder.
pub(crate) const METADATA: &str = ".metadata";

/// The largest `.metadata` read.
const MAX_METADATA: u64 = 512 * 1024 * 1024;

fn malformed(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed { path: path.to_path_buf(), why: why.into() }
}

fn incomplete(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Incomplete { path: path.to_path_buf(), why: why.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Whether `dir` holds a DCP `.metadata` file.
pub(crate) fn is_dcp_folder(dir: &Path) -> bool {
    dir.join(METADATA).is_file()
}

/// Whether `dir` is a DCP folder or one being written (`.distcp` files, no `.metadata` yet).
pub fn is_dcp_like(dir: &Path) -> bool {
    is_dcp_folder(dir)
        || std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten().any(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".distcp")))
        })
}

/// One chunk of a tensor and where its bytes are.
#[derive(Clone, Debug)]
struct Chunk {
    offsets: Vec<usize>,
    sizes: Vec<usize>,
    file: String,
    offset: u64,
    length: u64,
}

#[derive(Debug)]
struct Item {
    info: TensorInfo,
    chunks: Vec<Chunk>,
}

/// How a data file stores its chunks.
#[derive(Debug)]
enum DataFile {
    /// `torch.save` archives at offsets (the file, open).
    TorchSave(File),
    /// One safetensors file keyed by tensor name.
    Safetensors(SafetensorsFile),
}

/// Where a chunk's values lie, contiguous and row-major over the chunk's sizes.
#[derive(Clone, Copy, Debug)]
enum ChunkData {
    /// At this absolute byte offset of a `torch.save` data file.
    At(u64),
    /// Entry `i` of a safetensors data file.
    Entry(usize),
}

/// An opened DCP folder.
#[derive(Debug)]
pub(crate) struct DcpFolder {
    pub dir: PathBuf,
    items: Vec<Item>,
    files: HashMap<String, DataFile>,
    /// Per tensor, found on its first range read: where each chunk's values are, or None when a
    /// chunk cannot be read by range (a strided item), so the tensor is read whole.
    located: Vec<OnceLock<Option<Vec<ChunkData>>>>,
    /// `.metadata` and every data file, for change detection.
    pub members: Vec<PathBuf>,
}

fn dtype_of(module: &str, name: &str) -> Option<Dtype> {
    if module != "torch" {
        return None;
    }
    Some(match name {
        "float32" | "float" => Dtype::F32,
        "float64" | "double" => Dtype::F64,
        "float16" | "half" => Dtype::F16,
        "bfloat16" => Dtype::BF16,
        "int64" | "long" => Dtype::I64,
        "int32" | "int" => Dtype::I32,
        "int16" | "short" => Dtype::I16,
        "int8" => Dtype::I8,
        "uint8" => Dtype::U8,
        "bool" => Dtype::Bool,
        _ => return None,
    })
}

/// The dtype in a `TensorProperties` (its state is a dict, or the tuple its `__getstate__` returns).
fn properties_dtype(props: &Val) -> Option<(String, String)> {
    if let Some(d) = props.get("dtype") {
        return d.class();
    }
    let Val::Obj(o) = props else { return None };
    let o = o.borrow();
    match o.state.as_ref()? {
        Val::Tuple(t) => t.first()?.class(),
        _ => None,
    }
}

/// Whether a tensor key is listed (see the module doc).
fn is_weight_key(key: &str, has_model: bool) -> bool {
    if has_model {
        key.starts_with("model.")
    } else {
        !(key.starts_with("optim.") || key.starts_with("optimizer.") || key.starts_with("optimizer_"))
    }
}

/// `.metadata` scanned and built into its value tree (the `Metadata` object).
fn metadata_root(dir: &Path) -> Result<Val, CheckpointError> {
    let path = dir.join(METADATA);
    let file = super::regular::open_regular(&path).map_err(|e| match e {
        CheckpointError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            incomplete(dir, ".metadata not written yet (DCP writes it last)")
        }
        other => other,
    })?;
    let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
    if len > MAX_METADATA {
        return Err(malformed(&path, format!("larger than {MAX_METADATA} bytes")));
    }
    let mut data = vec![0u8; len as usize];
    file.read_exact_at(&mut data, 0).map_err(|e| io_err(&path, e))?;
    pickle_scan::scan_with(&data, pickle_scan::allowed_dcp).map_err(|e| match e {
        ScanError::Refused(why) => CheckpointError::Refused { path: path.clone(), why },
        ScanError::Malformed(why) => malformed(&path, format!("not a DCP metadata pickle: {why}")),
    })?;
    let root = pickle_value::build(&data).map_err(|e| malformed(&path, e))?;
    drop(data);
    if root.class().map(|c| c.1) != Some("Metadata".into()) {
        return Err(malformed(&path, "the pickle is not a DCP Metadata object"));
    }
    Ok(root)
}

/// A pickled dict's entries.
type Entries = Vec<(Val, Val)>;

/// `.metadata`'s two tables: `state_dict_metadata` (each key's tensor or bytes metadata) and
/// `storage_data` (where each stored item is: file and byte range).
fn metadata_tables(dir: &Path) -> Result<(Entries, Entries), CheckpointError> {
    let path = dir.join(METADATA);
    let root = metadata_root(dir)?;
    let sd = root
        .get("state_dict_metadata")
        .and_then(|v| v.entries())
        .ok_or_else(|| malformed(&path, "Metadata has no state_dict_metadata dict"))?;
    let storage = root.get("storage_data").and_then(|v| v.entries()).ok_or_else(|| {
        malformed(&path, "Metadata has no storage_data dict (not written by FileSystemWriter)")
    })?;
    Ok((sd, storage))
}

/// Read and parse `.metadata`: the weight tensors (filtered by [`is_weight_key`]) with their chunks.
fn read_metadata(dir: &Path) -> Result<Vec<Item>, CheckpointError> {
    read_metadata_selected(dir, is_weight_key)
}

/// Which tensors of a folder are taken: `select(key, any key starts with "model.")`.
pub(crate) type Select = fn(&str, bool) -> bool;

/// Read and parse `.metadata`: the tensors `select` takes, with their chunks.
fn read_metadata_selected(dir: &Path, select: Select) -> Result<Vec<Item>, CheckpointError> {
    let path = dir.join(METADATA);
    let (sd, storage) = metadata_tables(dir)?;

    // (fqn, chunk offsets) -> storage record.
    let mut where_: HashMap<(String, Vec<usize>), Val> = HashMap::new();
    for (k, v) in &storage {
        let fqn = k.get("fqn").and_then(|f| f.as_str().map(str::to_string));
        let Some(fqn) = fqn else { return Err(malformed(&path, "a storage_data key has no fqn")) };
        let offs = match k.get("offset") {
            Some(Val::None) | None => continue, // a bytes item
            Some(o) => o.as_usizes().ok_or_else(|| malformed(&path, format!("'{fqn}': bad chunk offset")))?,
        };
        where_.insert((fqn, offs), v.clone());
    }

    let has_model = sd.iter().any(|(k, _)| k.as_str().is_some_and(|k| k.starts_with("model.")));
    let mut items = Vec::new();
    for (k, md) in &sd {
        let Some(key) = k.as_str() else {
            return Err(malformed(&path, "a state_dict_metadata key is not a string"));
        };
        match md.class() {
            Some((_, n)) if n == "BytesStorageMetadata" => continue,
            Some((_, n)) if n == "TensorStorageMetadata" => {}
            _ => return Err(malformed(&path, format!("'{key}': unknown storage metadata"))),
        }
        if !select(key, has_model) {
            continue;
        }
        let props =
            md.get("properties").ok_or_else(|| malformed(&path, format!("'{key}': no properties")))?;
        let (dm, dn) = properties_dtype(&props)
            .ok_or_else(|| malformed(&path, format!("'{key}': no dtype in its properties")))?;
        let dtype = dtype_of(&dm, &dn).ok_or_else(|| CheckpointError::Unsupported {
            path: path.clone(),
            why: format!("tensor '{key}' has dtype {dm}.{dn}, which landscaped does not read"),
        })?;
        let shape = md
            .get("size")
            .and_then(|s| s.as_usizes())
            .ok_or_else(|| malformed(&path, format!("'{key}': size is not a torch.Size")))?;
        // A size whose byte count does not fit in 62 bits is no checkpoint (and would overflow).
        let bytes = shape.iter().try_fold(dtype.size() as u128, |a, &d| a.checked_mul(d as u128));
        if bytes.is_none_or(|b| b > 1 << 62) {
            return Err(malformed(&path, format!("'{key}': size {shape:?} is too large to be a tensor")));
        }
        let chunk_vals = md
            .get("chunks")
            .and_then(|c| c.items())
            .ok_or_else(|| malformed(&path, format!("'{key}': no chunks list")))?;
        let mut chunks = Vec::new();
        for c in &chunk_vals {
            let offsets = c.get("offsets").and_then(|o| o.as_usizes());
            let sizes = c.get("sizes").and_then(|o| o.as_usizes());
            let (Some(offsets), Some(sizes)) = (offsets, sizes) else {
                return Err(malformed(&path, format!("'{key}': a chunk without offsets and sizes")));
            };
            let info = where_.get(&(key.to_string(), offsets.clone())).ok_or_else(|| {
                malformed(&path, format!("'{key}': chunk at {offsets:?} has no entry in storage_data"))
            })?;
            if let Some(t) = info.get("transform_descriptors")
                && !matches!(t, Val::None)
                && t.items().is_none_or(|i| !i.is_empty())
            {
                let names: Vec<String> = t
                    .items()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
                return Err(CheckpointError::Unsupported {
                    path: path.clone(),
                    why: format!(
                        "tensor '{key}' is stored through transforms {names:?} (compressed DCP), which landscaped does not read"
                    ),
                });
            }
            let file = info.get("relative_path").and_then(|p| p.as_str().map(str::to_string));
            let offset = info.get("offset").and_then(|o| o.as_int()).and_then(|o| u64::try_from(o).ok());
            let length = info.get("length").and_then(|o| o.as_int()).and_then(|o| u64::try_from(o).ok());
            let (Some(file), Some(offset), Some(length)) = (file, offset, length) else {
                return Err(malformed(&path, format!("'{key}': bad storage record for chunk {offsets:?}")));
            };
            if file.is_empty() || file.contains('/') || file.contains('\\') || file == "." || file == ".." {
                return Err(malformed(
                    &path,
                    format!("'{key}': data file {file:?} is not a file in the folder"),
                ));
            }
            chunks.push(Chunk { offsets, sizes, file, offset, length });
        }
        check_cover(&path, key, &shape, &chunks)?;
        items.push(Item { info: TensorInfo { name: key.to_string(), dtype, shape }, chunks });
    }
    Ok(items)
}

/// The chunks lie inside the tensor, do not overlap, and cover it.
fn check_cover(path: &Path, key: &str, shape: &[usize], chunks: &[Chunk]) -> Result<(), CheckpointError> {
    let numel: u128 = shape.iter().map(|&d| d as u128).product();
    let mut total: u128 = 0;
    for c in chunks {
        if c.offsets.len() != shape.len() || c.sizes.len() != shape.len() {
            return Err(malformed(
                path,
                format!("'{key}': chunk {:?} has the wrong rank for shape {shape:?}", c.offsets),
            ));
        }
        if c.offsets
            .iter()
            .zip(&c.sizes)
            .zip(shape)
            .any(|((o, s), d)| o.checked_add(*s).is_none_or(|e| e > *d))
        {
            return Err(malformed(
                path,
                format!(
                    "'{key}': chunk at {:?} of size {:?} lies outside the tensor's shape {shape:?}",
                    c.offsets, c.sizes
                ),
            ));
        }
        total += c.sizes.iter().map(|&d| d as u128).product::<u128>();
    }
    for (i, a) in chunks.iter().enumerate() {
        for b in &chunks[i + 1..] {
            let empty = a.sizes.contains(&0) || b.sizes.contains(&0);
            let overlap = (0..shape.len()).all(|d| {
                a.offsets[d] < b.offsets[d] + b.sizes[d] && b.offsets[d] < a.offsets[d] + a.sizes[d]
            });
            if overlap && !empty {
                return Err(malformed(
                    path,
                    format!("'{key}': chunks at {:?} and {:?} overlap", a.offsets, b.offsets),
                ));
            }
        }
    }
    if total != numel {
        return Err(malformed(
            path,
            format!("'{key}': chunks cover {total} of the tensor's {numel} elements (missing chunks)"),
        ));
    }
    Ok(())
}

/// Check every referenced data file: present, holding every byte range. Returns the files' lengths.
fn check_files(dir: &Path, items: &[Item]) -> Result<HashMap<String, u64>, CheckpointError> {
    let mut lens: HashMap<String, u64> = HashMap::new();
    for it in items {
        for c in &it.chunks {
            let len = match lens.get(&c.file) {
                Some(&l) => l,
                None => {
                    let p = dir.join(&c.file);
                    let l = match std::fs::metadata(&p) {
                        Ok(m) if m.is_file() => m.len(),
                        Ok(_) => {
                            super::regular::regular_or_absent(&p)?;
                            return Err(malformed(&p, "referenced by .metadata but not a file"));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Err(incomplete(
                                &p,
                                format!("missing: .metadata lists it for tensor '{}'", it.info.name),
                            ));
                        }
                        Err(e) => return Err(io_err(&p, e)),
                    };
                    lens.insert(c.file.clone(), l);
                    l
                }
            };
            if c.offset.checked_add(c.length).is_none_or(|e| e > len) {
                return Err(incomplete(
                    &dir.join(&c.file),
                    format!(
                        "byte range {}+{} of tensor '{}' reaches past the end of the file ({len} bytes)",
                        c.offset, c.length, it.info.name
                    ),
                ));
            }
        }
    }
    Ok(lens)
}

/// Completeness of a DCP folder: `.metadata` present and valid, every file and byte range present.
pub(crate) fn check_complete(dir: &Path) -> Result<(), CheckpointError> {
    let items = read_metadata(dir)?;
    check_files(dir, &items)?;
    // Side files (`meta.pt`, ...) are read for the step: a FIFO or device there is refused, not opened.
    for side in super::layout::DCP_SIDE_FILES {
        super::regular::regular_or_absent(&dir.join(side))?;
    }
    Ok(())
}

/// The non-tensor items (`BytesStorageMetadata`) whose keys `select` takes, each as the value its
/// `torch.save` payload pickles (scanned against the state-dict allow-list, never executed), in
/// `.metadata`'s order. Optimizer hyperparameters (`optim.param_groups.…`) are stored this way.
pub(crate) fn bytes_items(
    dir: &Path,
    select: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Val)>, CheckpointError> {
    let path = dir.join(METADATA);
    let (sd, storage) = metadata_tables(dir)?;
    let mut where_: HashMap<String, Val> = HashMap::new();
    for (k, v) in &storage {
        if let (Some(fqn), Some(Val::None) | None) = (k.get("fqn"), k.get("offset"))
            && let Some(fqn) = fqn.as_str()
        {
            where_.insert(fqn.to_string(), v.clone());
        }
    }
    let mut out = Vec::new();
    let mut files: HashMap<String, File> = HashMap::new();
    for (k, md) in &sd {
        let Some(key) = k.as_str() else { continue };
        if md.class().map(|c| c.1).as_deref() != Some("BytesStorageMetadata") || !select(key) {
            continue;
        }
        let info =
            where_.get(key).ok_or_else(|| malformed(&path, format!("'{key}': no entry in storage_data")))?;
        let file = info.get("relative_path").and_then(|p| p.as_str().map(str::to_string));
        let offset = info.get("offset").and_then(|o| o.as_int()).and_then(|o| u64::try_from(o).ok());
        let length = info.get("length").and_then(|o| o.as_int()).and_then(|o| u64::try_from(o).ok());
        let (Some(file), Some(offset), Some(length)) = (file, offset, length) else {
            return Err(malformed(&path, format!("'{key}': bad storage record")));
        };
        if file.is_empty() || file.contains('/') || file.contains('\\') || file == "." || file == ".." {
            return Err(malformed(&path, format!("'{key}': data file {file:?} is not a file in the folder")));
        }
        let p = dir.join(&file);
        if !files.contains_key(&file) {
            files.insert(file.clone(), super::regular::open_regular(&p)?);
        }
        let f = &files[&file];
        let archive = Archive::open(f, &p, offset, length, pickle_scan::allowed)?;
        out.push((key.to_string(), archive.root));
    }
    Ok(out)
}

impl DcpFolder {
    pub(crate) fn open(dir: &Path) -> Result<DcpFolder, CheckpointError> {
        Self::open_selected(dir, is_weight_key)
    }

    /// The folder with the tensors `select` takes (the optimizer reader takes `optim.` keys).
    pub(crate) fn open_selected(dir: &Path, select: Select) -> Result<DcpFolder, CheckpointError> {
        let items = read_metadata_selected(dir, select)?;
        let lens = check_files(dir, &items)?;
        let mut files = HashMap::new();
        let mut names: Vec<&String> = lens.keys().collect();
        names.sort();
        let mut members = vec![dir.join(METADATA)];
        for name in names {
            let p = dir.join(name);
            let f = super::regular::open_regular(&p)?;
            let mut head = [0u8; 9];
            let n = f.read_at(&mut head, 0).map_err(|e| io_err(&p, e))?;
            let kind = if n == 9 && head[8] == b'{' {
                DataFile::Safetensors(SafetensorsFile::open(&p)?)
            } else {
                DataFile::TorchSave(f)
            };
            files.insert(name.clone(), kind);
            members.push(p);
        }
        // The safetensors variant: each chunk must be a tensor of the file under the chunk's key.
        for it in &items {
            for c in &it.chunks {
                if let Some(DataFile::Safetensors(f)) = files.get(&c.file)
                    && !f.entries.iter().any(|e| e.info.name == it.info.name && e.info.shape == c.sizes)
                {
                    return Err(malformed(
                        &dir.join(&c.file),
                        format!(
                            "holds no tensor '{}' of shape {:?} (listed in .metadata)",
                            it.info.name, c.sizes
                        ),
                    ));
                }
            }
        }
        let located = items.iter().map(|_| OnceLock::new()).collect();
        Ok(DcpFolder { dir: dir.to_path_buf(), items, files, located, members })
    }

    pub(crate) fn infos(&self) -> Vec<TensorInfo> {
        self.items.iter().map(|i| i.info.clone()).collect()
    }

    /// The safetensors entry holding chunk `c` of `it` in data file `f`.
    fn entry_of(&self, f: &SafetensorsFile, it: &Item, c: &Chunk) -> Result<usize, CheckpointError> {
        let path = self.dir.join(&c.file);
        let i = f
            .entries
            .iter()
            .position(|e| e.info.name == it.info.name)
            .ok_or_else(|| malformed(&path, format!("no tensor '{}'", it.info.name)))?;
        if f.entries[i].info.dtype != it.info.dtype {
            return Err(malformed(
                &path,
                format!("tensor '{}' has another dtype than in .metadata", it.info.name),
            ));
        }
        Ok(i)
    }

    /// The `torch.save` item holding chunk `c` of `it`: the archive and its tensor, checked
    /// against `.metadata`.
    fn item_of(&self, file: &File, it: &Item, c: &Chunk) -> Result<(Archive, TensorRef), CheckpointError> {
        let path = self.dir.join(&c.file);
        let archive = Archive::open(file, &path, c.offset, c.length, pickle_scan::allowed)?;
        let t = match TensorRef::from_val(&archive.root) {
            Some(Ok(t)) => t,
            Some(Err(why)) => {
                return Err(malformed(&path, format!("item of '{}': {why}", it.info.name)));
            }
            None => {
                return Err(malformed(
                    &path,
                    format!("item at byte {} of '{}' is not a tensor", c.offset, it.info.name),
                ));
            }
        };
        if t.dtype != it.info.dtype || t.shape != c.sizes {
            return Err(malformed(
                &path,
                format!(
                    "item at byte {} of '{}' is {} {:?}, .metadata says {} {:?}",
                    c.offset,
                    it.info.name,
                    t.dtype.name(),
                    t.shape,
                    it.info.dtype.name(),
                    c.sizes
                ),
            ));
        }
        Ok((archive, t))
    }

    /// The bytes of one chunk, contiguous (row-major over the chunk's sizes).
    fn read_chunk(&self, it: &Item, c: &Chunk) -> Result<Vec<u8>, CheckpointError> {
        let path = self.dir.join(&c.file);
        let es = it.info.dtype.size();
        let want = c.sizes.iter().product::<usize>() * es;
        let bytes = match self.files.get(&c.file) {
            Some(DataFile::Safetensors(f)) => {
                let i = self.entry_of(f, it, c)?;
                let mut buf = vec![0u8; usize::try_from(f.entries[i].len).unwrap_or(usize::MAX).min(want)];
                f.read_at(i, 0, &mut buf)?;
                buf
            }
            Some(DataFile::TorchSave(file)) => {
                let (archive, t) = self.item_of(file, it, c)?;
                archive.read(file, &path, &t)?
            }
            None => return Err(malformed(&path, "data file not opened")),
        };
        if bytes.len() != want {
            return Err(malformed(
                &path,
                format!("chunk of '{}': {} bytes, expected {want}", it.info.name, bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Where chunk `c` of `it` lies, if it can be read by range.
    fn locate_chunk(&self, it: &Item, c: &Chunk) -> Result<Option<ChunkData>, CheckpointError> {
        let path = self.dir.join(&c.file);
        let want = c.sizes.iter().product::<usize>() as u64 * it.info.dtype.size() as u64;
        match self.files.get(&c.file) {
            Some(DataFile::Safetensors(f)) => {
                let i = self.entry_of(f, it, c)?;
                if f.entries[i].len != want {
                    return Err(malformed(
                        &path,
                        format!("chunk of '{}': {} bytes, expected {want}", it.info.name, f.entries[i].len),
                    ));
                }
                Ok(Some(ChunkData::Entry(i)))
            }
            Some(DataFile::TorchSave(file)) => {
                let (archive, t) = self.item_of(file, it, c)?;
                let (start, _) = archive.range(&path, &t)?;
                Ok(torch_item::is_contiguous(&t.shape, &t.stride)
                    .then(|| ChunkData::At(start + (t.offset * it.info.dtype.size()) as u64)))
            }
            None => Err(malformed(&path, "data file not opened")),
        }
    }

    /// Where every chunk of tensor `i` lies; None when one of them cannot be read by range or
    /// could not be located (reading the tensor whole then reports why).
    fn located(&self, i: usize) -> Option<&[ChunkData]> {
        self.located[i]
            .get_or_init(|| {
                let it = &self.items[i];
                it.chunks.iter().map(|c| self.locate_chunk(it, c).ok().flatten()).collect()
            })
            .as_deref()
    }

    /// Whether tensor `i` can be read by range (every chunk contiguous in its item).
    pub(crate) fn streamable(&self, i: usize) -> bool {
        self.located(i).is_some()
    }

    /// Bytes `offset .. offset + buf.len()` of tensor `i`'s full row-major data, gathered from the
    /// chunks that hold them (one read per contiguous run of a chunk). Needs [`Self::streamable`].
    pub(crate) fn read_range(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        let it = &self.items[i];
        let es = it.info.dtype.size();
        let path = |c: &Chunk| self.dir.join(&c.file);
        let Some(locs) = self.located(i) else {
            return Err(malformed(&self.dir, format!("tensor '{}' cannot be read by range", it.info.name)));
        };
        let end = offset.checked_add(buf.len() as u64);
        if !offset.is_multiple_of(es as u64)
            || !buf.len().is_multiple_of(es)
            || end.is_none_or(|e| e > it.info.numel() as u64 * es as u64)
        {
            return Err(malformed(
                &self.dir,
                format!("range {offset}+{} does not fit tensor '{}'", buf.len(), it.info.name),
            ));
        }
        let a = (offset / es as u64) as usize;
        let b = a + buf.len() / es;
        let shape = &it.info.shape;
        let mut filled = 0usize;
        for (c, loc) in it.chunks.iter().zip(locs) {
            if c.sizes.contains(&0) {
                continue;
            }
            let mut res = Ok(());
            chunk_runs(shape, &c.offsets, &c.sizes, a, b, &mut |full, inner, len| {
                if res.is_err() {
                    return;
                }
                let dst = &mut buf[(full - a) * es..(full - a + len) * es];
                filled += len;
                res = match (self.files.get(&c.file), loc) {
                    (Some(DataFile::TorchSave(file)), ChunkData::At(start)) => {
                        file.read_exact_at(dst, start + (inner * es) as u64).map_err(|e| io_err(&path(c), e))
                    }
                    (Some(DataFile::Safetensors(f)), &ChunkData::Entry(e)) => {
                        f.read_at(e, (inner * es) as u64, dst)
                    }
                    _ => Err(malformed(&path(c), "data file changed kind")),
                };
            });
            res?;
        }
        if filled != b - a {
            return Err(malformed(
                &self.dir,
                format!("tensor '{}': chunks hold {filled} of {} elements asked for", it.info.name, b - a),
            ));
        }
        Ok(())
    }

    /// Tensor `i` assembled from its chunks: contiguous little-endian bytes of its full shape.
    pub(crate) fn read_bytes(&self, i: usize) -> Result<Vec<u8>, CheckpointError> {
        let it = &self.items[i];
        let es = it.info.dtype.size();
        let shape = &it.info.shape;
        if let [c] = it.chunks.as_slice() {
            return self.read_chunk(it, c); // one chunk covering the tensor
        }
        let numel = it.info.numel();
        let mut out = vec![0u8; numel * es];
        for c in &it.chunks {
            if c.sizes.contains(&0) {
                continue;
            }
            let bytes = self.read_chunk(it, c)?;
            chunk_runs(shape, &c.offsets, &c.sizes, 0, numel, &mut |full, inner, len| {
                out[full * es..(full + len) * es].copy_from_slice(&bytes[inner * es..(inner + len) * es]);
            });
        }
        Ok(out)
    }
}

/// The parts of a chunk (at `offsets`, of `sizes`, in a row-major tensor of `shape`) that fall in
/// elements `a .. b` of the tensor's flat order: `f(flat start, start in the chunk's own row-major
/// order, length)`, in increasing flat order. A chunk is a set of runs contiguous in both orders:
/// dimensions after the last one the chunk does not span whole are contiguous, so a chunk sharded on
/// dim 0 is one run, one sharded on dim 1 one run per row. Runs wholly outside `a .. b` are skipped
/// without visiting them (a run's prefix index bounds where it can lie).
fn chunk_runs(
    shape: &[usize],
    offsets: &[usize],
    sizes: &[usize],
    a: usize,
    b: usize,
    f: &mut dyn FnMut(usize, usize, usize),
) {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    // k: the last dimension the chunk does not span whole (None: the chunk is the whole tensor).
    let Some(k) = (0..rank).rev().find(|&d| sizes[d] != shape[d]) else {
        let (s, e) = (a, b.min(shape.iter().product()));
        if s < e {
            f(s, s, e - s);
        }
        return;
    };
    let run = sizes[k] * strides[k];
    // The chunk's own strides for dims before k (row-major over its sizes).
    let mut cstrides = vec![0usize; k];
    let mut acc = run;
    for d in (0..k).rev() {
        cstrides[d] = acc;
        acc *= sizes[d];
    }
    struct Walk<'a> {
        offsets: &'a [usize],
        sizes: &'a [usize],
        strides: &'a [usize],
        cstrides: &'a [usize],
        k: usize,
        run: usize,
        a: usize,
        b: usize,
    }
    fn walk(w: &Walk<'_>, d: usize, full: usize, inner: usize, f: &mut dyn FnMut(usize, usize, usize)) {
        if d == w.k {
            let s = full + w.offsets[w.k] * w.strides[w.k];
            let (lo, hi) = (s.max(w.a), (s + w.run).min(w.b));
            if lo < hi {
                f(lo, inner + (lo - s), hi - lo);
            }
            return;
        }
        // Everything with index i at dim d lies in [full + i·stride, full + (i + 1)·stride).
        let skip = w.a.saturating_sub(full) / w.strides[d];
        for i in w.offsets[d].max(skip)..w.offsets[d] + w.sizes[d] {
            let at = full + i * w.strides[d];
            if at >= w.b {
                break;
            }
            walk(w, d + 1, at, inner + (i - w.offsets[d]) * w.cstrides[d], f);
        }
    }
    let w = Walk { offsets, sizes, strides: &strides, cstrides: &cstrides, k, run, a, b };
    walk(&w, 0, 0, 0, f);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offsets: &[usize], sizes: &[usize]) -> Chunk {
        Chunk { offsets: offsets.to_vec(), sizes: sizes.to_vec(), file: "f".into(), offset: 0, length: 0 }
    }

    #[test]
    fn cover_rules() {
        let p = Path::new(".metadata");
        assert!(check_cover(p, "w", &[4, 2], &[chunk(&[0, 0], &[2, 2]), chunk(&[2, 0], &[2, 2])]).is_ok());
        let e =
            check_cover(p, "w", &[4, 2], &[chunk(&[0, 0], &[3, 2]), chunk(&[2, 0], &[2, 2])]).unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let e = check_cover(p, "w", &[4, 2], &[chunk(&[0, 0], &[2, 2])]).unwrap_err();
        assert!(e.to_string().contains("missing chunks"), "{e}");
        let e = check_cover(p, "w", &[4, 2], &[chunk(&[3, 0], &[2, 2])]).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        assert!(check_cover(p, "s", &[], &[chunk(&[], &[])]).is_ok());
    }

    #[test]
    fn weight_keys() {
        assert!(is_weight_key("model.a", true) && !is_weight_key("optim.state.a", true));
        assert!(!is_weight_key("step", true));
        assert!(is_weight_key("decoder.w", false) && !is_weight_key("optimizer.state.w", false));
    }

    /// Every way of cutting small tensors into chunks (along one dimension, two, or none): the
    /// runs of each chunk inside every range [a, b) name exactly the elements of the chunk in that
    /// range, each with its position in the chunk's own row-major order.
    #[test]
    fn chunk_runs_match_the_brute_force_mapping() {
        /// A tensor's shape and its chunks' (offsets, sizes).
        type Case = (Vec<usize>, Vec<(Vec<usize>, Vec<usize>)>);
        let cases: Vec<Case> = vec![
            (vec![6], vec![(vec![0], vec![4]), (vec![4], vec![2])]),
            (vec![4, 3], vec![(vec![0, 0], vec![2, 3]), (vec![2, 0], vec![2, 3])]),
            (vec![4, 6], vec![(vec![0, 0], vec![4, 2]), (vec![0, 2], vec![4, 4])]),
            (
                vec![3, 4, 5],
                vec![
                    (vec![0, 0, 0], vec![3, 2, 5]),
                    (vec![0, 2, 0], vec![2, 2, 5]),
                    (vec![2, 2, 0], vec![1, 2, 3]),
                    (vec![2, 2, 3], vec![1, 2, 2]),
                ],
            ),
            (vec![2, 3], vec![(vec![0, 0], vec![2, 3])]),
            (vec![], vec![(vec![], vec![])]),
        ];
        for (shape, chunks) in cases {
            let numel: usize = shape.iter().product();
            let flat = |idx: &[usize]| idx.iter().zip(&shape).fold(0, |acc, (i, d)| acc * d + i);
            // Brute force: chunk position of every flat index.
            let mut owner = vec![None; numel];
            for (ci, (off, sz)) in chunks.iter().enumerate() {
                let n: usize = sz.iter().product();
                for inner in 0..n {
                    let mut rest = inner;
                    let mut idx = vec![0; sz.len()];
                    for d in (0..sz.len()).rev() {
                        idx[d] = off[d] + rest % sz[d];
                        rest /= sz[d];
                    }
                    owner[flat(&idx)] = Some((ci, inner));
                }
            }
            assert!(owner.iter().all(Option::is_some), "{shape:?}: the chunks cover the tensor");
            for a in 0..numel {
                for b in a + 1..=numel {
                    let mut seen = vec![None; numel];
                    for (ci, (off, sz)) in chunks.iter().enumerate() {
                        let mut last = None;
                        chunk_runs(&shape, off, sz, a, b, &mut |full, inner, len| {
                            assert!(len > 0 && full >= a && full + len <= b);
                            assert!(last.is_none_or(|l| full >= l), "runs in flat order");
                            last = Some(full + len);
                            for t in 0..len {
                                assert!(seen[full + t].is_none(), "element {} visited twice", full + t);
                                seen[full + t] = Some((ci, inner + t));
                            }
                        });
                    }
                    assert_eq!(&seen[a..b], &owner[a..b], "{shape:?} {chunks:?} [{a}, {b})");
                    assert!(seen[..a].iter().chain(&seen[b..]).all(Option::is_none));
                }
            }
        }
    }
}
