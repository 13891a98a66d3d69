//! A `torch.save` zip archive at an (offset, length) window inside a larger file, read without
//! pytorch-reader: each item of a DCP `.distcp` file is such an archive, and DeepSpeed's optimizer
//! files are read the same way (window = the whole file) so that one slice of a flat partition can
//! be read without reading all of it.
//!
//! Order of trust: the window is checked against the file's size; the zip directory is read through
//! the window (so every offset in it is relative to the window and bounded by it); `data.pkl` is
//! scanned against the caller's allow-list, then built into a value tree
//! ([`super::pickle_value`]); a tensor's storage must be a stored (uncompressed) entry whose size
//! covers every element the tensor's shape, stride and offset reach before any byte is read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::pickle_scan::{self, ScanError};
use super::pickle_value::{self, Val};
use super::{CheckpointError, Dtype};

/// The largest `data.pkl` read from an archive.
const MAX_PICKLE: u64 = 256 * 1024 * 1024;

fn malformed(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed { path: path.to_path_buf(), why: why.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io { path: path.to_path_buf(), source }
}

/// A read-only view of `len` bytes of a file starting at `base`, seekable, via pread.
struct Window<'a> {
    file: &'a File,
    base: u64,
    len: u64,
    pos: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        let k = self.file.read_at(&mut buf[..n], self.base + self.pos)?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the window")),
        }
    }
}

/// An opened archive: its pickled object and where each storage's bytes lie in the file.
pub(crate) struct Archive {
    pub root: Val,
    /// Storage key → (absolute offset in the file, size in bytes).
    storages: HashMap<String, (u64, u64)>,
}

/// Where a tensor's elements are: its storage, dtype, offset (in elements), shape and stride.
#[derive(Clone, Debug)]
pub(crate) struct TensorRef {
    pub key: String,
    pub dtype: Dtype,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

fn storage_dtype(name: &str) -> Option<Dtype> {
    Some(match name {
        "FloatStorage" => Dtype::F32,
        "DoubleStorage" => Dtype::F64,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" => Dtype::U8,
        "BoolStorage" => Dtype::Bool,
        _ => return None,
    })
}

impl TensorRef {
    /// The tensor a value stands for: `_rebuild_tensor_v2(storage, offset, size, stride, …)`, possibly
    /// wrapped in `_rebuild_parameter` or `_rebuild_from_type_v2`. `None` if it is not a tensor.
    pub(crate) fn from_val(v: &Val) -> Option<Result<TensorRef, String>> {
        let (module, name) = v.class()?;
        let args = v.args()?;
        match (module.as_str(), name.as_str()) {
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                TensorRef::from_val(args.first()?)
            }
            ("torch._tensor", "_rebuild_from_type_v2") => {
                // (func, type, args, state): func(*args) is the tensor.
                let (m, n) = args.first()?.class()?;
                let inner = args.get(2)?.items()?;
                let obj = Val::Obj(std::rc::Rc::new(std::cell::RefCell::new(pickle_value::Obj {
                    module: m,
                    name: n,
                    args: inner,
                    state: None,
                })));
                TensorRef::from_val(&obj)
            }
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Some(Self::parse(&args)),
            _ => None,
        }
    }

    fn parse(args: &[Val]) -> Result<TensorRef, String> {
        let pid = match args.first() {
            Some(Val::Persistent(p)) => p.items().ok_or("storage id is not a tuple")?,
            _ => return Err("tensor without a persistent storage".into()),
        };
        if pid.first().and_then(Val::as_str) != Some("storage") || pid.len() < 3 {
            return Err("storage id is not ('storage', type, key, …)".into());
        }
        let (m, n) = pid[1].class().ok_or("storage type is not a global")?;
        let dtype = (m == "torch")
            .then(|| storage_dtype(&n))
            .flatten()
            .ok_or_else(|| format!("storage type {m}.{n} is not read"))?;
        let key = match &pid[2] {
            Val::Str(s) => s.to_string(),
            Val::Int(i) => i.to_string(),
            _ => return Err("storage key is not a string".into()),
        };
        let offset = args
            .get(1)
            .and_then(Val::as_int)
            .and_then(|i| usize::try_from(i).ok())
            .ok_or("storage offset is not an integer")?;
        let shape = args.get(2).and_then(Val::as_usizes).ok_or("tensor size is not a tuple of integers")?;
        let stride =
            args.get(3).and_then(Val::as_usizes).ok_or("tensor stride is not a tuple of integers")?;
        if shape.len() != stride.len() {
            return Err(format!("size {shape:?} and stride {stride:?} differ in length"));
        }
        Ok(TensorRef { key, dtype, offset, shape, stride })
    }

    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

impl Archive {
    /// Open the archive in `len` bytes of `file` at `base` (checked against the file's size), scan
    /// its `data.pkl` against `allow` and build its value.
    pub(crate) fn open(
        file: &File,
        path: &Path,
        base: u64,
        len: u64,
        allow: fn(&str, &str) -> bool,
    ) -> Result<Archive, CheckpointError> {
        let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
        if base.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(malformed(
                path,
                format!("byte range {base}+{len} reaches past the end of the file ({file_len} bytes)"),
            ));
        }
        let at = |why: String| {
            if base == 0 && len == file_len {
                why
            } else {
                format!("item at byte {base} ({len} bytes): {why}")
            }
        };
        let window = Window { file, base, len, pos: 0 };
        let mut zip = zip::ZipArchive::new(window)
            .map_err(|e| malformed(path, at(format!("not a torch.save zip archive: {e}"))))?;
        let names: Vec<String> = zip
            .file_names()
            .map(|n| n.map(|n| n.to_string()))
            .collect::<Result<_, _>>()
            .map_err(|e| malformed(path, at(format!("bad zip entry name: {e}"))))?;
        let root = names
            .iter()
            .filter_map(|n| n.strip_suffix("data.pkl"))
            .filter(|r| r.is_empty() || r.ends_with('/'))
            .min_by_key(|r| r.len())
            .map(str::to_string)
            .ok_or_else(|| malformed(path, at("zip archive has no data.pkl".into())))?;
        let mut pickle = Vec::new();
        {
            let entry = zip
                .by_name(&format!("{root}data.pkl"))
                .map_err(|e| malformed(path, at(format!("cannot open data.pkl: {e}"))))?;
            entry
                .take(MAX_PICKLE + 1)
                .read_to_end(&mut pickle)
                .map_err(|e| malformed(path, at(format!("cannot read data.pkl: {e}"))))?;
        }
        if pickle.len() as u64 > MAX_PICKLE {
            return Err(malformed(path, at(format!("data.pkl is larger than {MAX_PICKLE} bytes"))));
        }
        pickle_scan::scan_with(&pickle, allow).map_err(|e| match e {
            ScanError::Refused(why) => CheckpointError::Refused { path: path.to_path_buf(), why: at(why) },
            ScanError::Malformed(why) => malformed(path, at(format!("data.pkl: {why}"))),
        })?;
        let value =
            pickle_value::build(&pickle).map_err(|e| malformed(path, at(format!("data.pkl: {e}"))))?;
        drop(pickle);
        let data_prefix = format!("{root}data/");
        let mut storages = HashMap::new();
        for i in 0..zip.len() {
            let entry =
                zip.by_index_raw(i).map_err(|e| malformed(path, at(format!("zip entry {i}: {e}"))))?;
            let name = entry.name().map_err(|e| malformed(path, at(format!("bad zip entry name: {e}"))))?;
            let Some(key) = name.strip_prefix(&data_prefix).map(str::to_string) else { continue };
            if entry.compression() != zip::CompressionMethod::Stored {
                return Err(malformed(
                    path,
                    at(format!("storage {key} is compressed ({})", entry.compression())),
                ));
            }
            let start = entry
                .data_start()
                .ok_or_else(|| malformed(path, at(format!("storage {key}: no data offset"))))?;
            let size = entry.size();
            if start.checked_add(size).is_none_or(|e| e > len) {
                return Err(malformed(path, at(format!("storage {key} reaches past the archive's end"))));
            }
            storages.insert(key, (base + start, size));
        }
        Ok(Archive { root: value, storages })
    }

    /// The contiguous little-endian bytes of tensor `t` (any stride), after checking that every
    /// element it reaches lies in its storage.
    pub(crate) fn read(&self, file: &File, path: &Path, t: &TensorRef) -> Result<Vec<u8>, CheckpointError> {
        let (start, _) = self.range(path, t)?;
        read_tensor(file, path, start, t)
    }
}

/// The contiguous bytes of `t`, whose storage starts at absolute byte `start` of `file`; `t`'s reach
/// must have been checked with [`Archive::range`].
pub(crate) fn read_tensor(
    file: &File,
    path: &Path,
    start: u64,
    t: &TensorRef,
) -> Result<Vec<u8>, CheckpointError> {
    let es = t.dtype.size();
    let numel = t.numel().unwrap_or(0);
    if numel == 0 {
        return Ok(Vec::new());
    }
    let contiguous = is_contiguous(&t.shape, &t.stride);
    let span = if contiguous { numel } else { span_of(&t.shape, &t.stride) };
    let mut raw = vec![0u8; span * es];
    file.read_exact_at(&mut raw, start + (t.offset * es) as u64).map_err(|e| io_err(path, e))?;
    if contiguous {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(numel * es);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let off: usize = idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum();
        out.extend_from_slice(&raw[off * es..(off + 1) * es]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

impl Archive {
    /// The absolute byte offset of the storage of `t` and its size, with `t`'s reach checked.
    pub(crate) fn range(&self, path: &Path, t: &TensorRef) -> Result<(u64, u64), CheckpointError> {
        let &(start, size) = self
            .storages
            .get(&t.key)
            .ok_or_else(|| malformed(path, format!("storage {} is not in the archive", t.key)))?;
        let numel = t.numel().ok_or_else(|| malformed(path, format!("shape {:?} overflows", t.shape)))?;
        if numel > 0 {
            let reach = if is_contiguous(&t.shape, &t.stride) { numel } else { span_of(&t.shape, &t.stride) };
            let need = t
                .offset
                .checked_add(reach)
                .and_then(|n| n.checked_mul(t.dtype.size()))
                .ok_or_else(|| malformed(path, "tensor extent overflows"))?;
            if need as u64 > size {
                return Err(malformed(
                    path,
                    format!(
                        "tensor of shape {:?} needs {need} bytes of storage {} holding {size}",
                        t.shape, t.key
                    ),
                ));
            }
        }
        Ok((start, size))
    }
}

pub(crate) fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (d, s) in shape.iter().zip(stride).rev() {
        if *d != 1 && *s != expect {
            return false;
        }
        expect = expect.saturating_mul(*d);
    }
    true
}

/// 1 + the largest element index a (non-empty) strided view reaches.
fn span_of(shape: &[usize], stride: &[usize]) -> usize {
    1 + shape
        .iter()
        .zip(stride)
        .map(|(d, s)| d.saturating_sub(1).saturating_mul(*s))
        .fold(0usize, usize::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity_and_span() {
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(!is_contiguous(&[2, 3], &[1, 2]));
        assert!(is_contiguous(&[1, 3], &[99, 1]));
        assert_eq!(span_of(&[2, 3], &[1, 2]), 6);
    }
}
