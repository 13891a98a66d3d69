//! The safetensors reader: an 8-byte little-endian header length, a JSON header, then the tensor bytes.
//!
//! The header is validated by hand the way huggingface/safetensors does before anything is trusted:
//! a bounded header length, JSON that parses to an object, known dtypes, `shape × dtype size` equal to
//! each byte range, ranges in bounds, sorted, non-overlapping and contiguous from 0, and a data
//! section exactly as long as the file holds. Values are read by range with `pread` (`read_at`);
//! the caller's buffer bounds the memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Alias, CheckpointError, Dtype, TensorInfo};

/// The largest JSON header accepted (the same bound as huggingface/safetensors).
pub(crate) const MAX_HEADER: u64 = 100_000_000;

/// One tensor of a safetensors file: its description and where its bytes lie.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub info: TensorInfo,
    /// Absolute offset of the first byte in the file.
    pub start: u64,
    /// Byte length (= numel × dtype size).
    pub len: u64,
}

/// An open safetensors file.
#[derive(Debug)]
pub(crate) struct SafetensorsFile {
    pub path: PathBuf,
    file: File,
    /// Tensors in the order of their bytes in the file.
    pub entries: Vec<Entry>,
    /// Names `safetensors.torch.save_model` dropped as sharing a kept tensor's storage (its
    /// `__metadata__` maps each to the name kept).
    pub aliases: Vec<Alias>,
}

/// What a parsed header says: where the data starts and how many bytes it needs.
pub(crate) struct Header {
    pub entries: Vec<Entry>,
    /// The `__metadata__` strings.
    pub metadata: Vec<(String, String)>,
    /// 8 + header length + the largest end offset: the size a complete file has.
    pub expected_len: u64,
}

fn malformed(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed { path: path.to_path_buf(), why: why.into() }
}

fn incomplete(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Incomplete { path: path.to_path_buf(), why: why.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Map a safetensors dtype string to ours.
fn parse_dtype(path: &Path, name: &str, s: &str) -> Result<Dtype, CheckpointError> {
    Ok(match s {
        "F64" => Dtype::F64,
        "F32" => Dtype::F32,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "I64" => Dtype::I64,
        "I32" => Dtype::I32,
        "I16" => Dtype::I16,
        "I8" => Dtype::I8,
        "U8" => Dtype::U8,
        "BOOL" => Dtype::Bool,
        "U16" | "U32" | "U64" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" | "F6_E2M3" | "F6_E3M2" | "F4" | "C64"
        | "E4M3" | "E5M2" => {
            return Err(CheckpointError::Unsupported {
                path: path.to_path_buf(),
                why: format!("tensor '{name}' has safetensors dtype {s}, which landscaped does not read"),
            });
        }
        other => {
            return Err(malformed(path, format!("tensor '{name}' has unknown safetensors dtype {other:?}")));
        }
    })
}

/// Read and validate the header of `file` (length `file_len`). Checks everything except that the
/// file is as long as the header says (see [`Header::expected_len`]); a header that is itself cut
/// short is reported as [`CheckpointError::Incomplete`].
pub(crate) fn read_header(path: &Path, file: &File, file_len: u64) -> Result<Header, CheckpointError> {
    super::parse_log::record("safetensors header", path);
    if file_len < 8 {
        return Err(incomplete(
            path,
            format!("safetensors file is {file_len} bytes, shorter than its 8-byte header length"),
        ));
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact_at(&mut len_bytes, 0).map_err(|e| io_err(path, e))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER {
        return Err(malformed(
            path,
            format!("safetensors header length {header_len} exceeds the {MAX_HEADER}-byte limit"),
        ));
    }
    if header_len < 2 {
        return Err(malformed(
            path,
            format!("safetensors header length {header_len} is too small for a JSON object"),
        ));
    }
    if 8 + header_len > file_len {
        return Err(incomplete(
            path,
            format!(
                "safetensors header claims {header_len} bytes but the file has only {} after the length",
                file_len - 8
            ),
        ));
    }
    let mut buf = vec![0u8; header_len as usize];
    file.read_exact_at(&mut buf, 8).map_err(|e| io_err(path, e))?;
    let text = std::str::from_utf8(&buf)
        .map_err(|e| malformed(path, format!("safetensors header is not UTF-8: {e}")))?;
    // Trailing spaces are the format's padding.
    let text = text.trim_end_matches(' ');
    if !text.starts_with('{') {
        return Err(malformed(path, "safetensors header does not start with '{'"));
    }
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| malformed(path, format!("safetensors header is not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = json else {
        return Err(malformed(path, "safetensors header is not a JSON object"));
    };
    let data_start = 8 + header_len;
    let mut entries = Vec::with_capacity(map.len());
    let mut metadata = Vec::new();
    // (begin, end) in data-relative offsets, kept with the entry index for sorting.
    let mut ranges: Vec<(u64, u64, usize)> = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            let ok = value.as_object().is_some_and(|m| m.values().all(|v| v.is_string()));
            if !ok {
                return Err(malformed(path, "safetensors __metadata__ must map strings to strings"));
            }
            for (k, v) in value.as_object().into_iter().flatten() {
                metadata.push((k.clone(), v.as_str().unwrap_or_default().to_string()));
            }
            continue;
        }
        let obj = value
            .as_object()
            .ok_or_else(|| malformed(path, format!("tensor '{name}': entry is not an object")))?;
        let dtype_str = obj
            .get("dtype")
            .and_then(|v| v.as_str())
            .ok_or_else(|| malformed(path, format!("tensor '{name}': missing or non-string dtype")))?;
        let dtype = parse_dtype(path, &name, dtype_str)?;
        let shape_json = obj
            .get("shape")
            .and_then(|v| v.as_array())
            .ok_or_else(|| malformed(path, format!("tensor '{name}': missing or non-array shape")))?;
        if shape_json.len() > 64 {
            return Err(malformed(path, format!("tensor '{name}': rank {} is absurd", shape_json.len())));
        }
        let mut shape = Vec::with_capacity(shape_json.len());
        let mut numel: u64 = 1;
        for d in shape_json {
            let d = d.as_u64().ok_or_else(|| {
                malformed(path, format!("tensor '{name}': shape entry {d} is not a non-negative integer"))
            })?;
            numel = numel
                .checked_mul(d)
                .ok_or_else(|| malformed(path, format!("tensor '{name}': shape {shape_json:?} overflows")))?;
            let d = usize::try_from(d)
                .map_err(|_| malformed(path, format!("tensor '{name}': dimension {d} too large")))?;
            shape.push(d);
        }
        let nbytes = numel.checked_mul(dtype.size() as u64).ok_or_else(|| {
            malformed(path, format!("tensor '{name}': byte size of shape {shape:?} overflows"))
        })?;
        let offsets =
            obj.get("data_offsets").and_then(|v| v.as_array()).filter(|a| a.len() == 2).ok_or_else(|| {
                malformed(path, format!("tensor '{name}': data_offsets must be [begin, end]"))
            })?;
        let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
            return Err(malformed(
                path,
                format!("tensor '{name}': data_offsets must be non-negative integers"),
            ));
        };
        if end < begin {
            return Err(malformed(
                path,
                format!("tensor '{name}': data_offsets [{begin}, {end}] end before they begin"),
            ));
        }
        if end - begin != nbytes {
            return Err(malformed(
                path,
                format!(
                    "tensor '{name}': shape {shape:?} of {} needs {nbytes} bytes but data_offsets [{begin}, {end}] span {}",
                    dtype.name(),
                    end - begin
                ),
            ));
        }
        // A range past the end of the file is caught below, after sorting, as truncation or a lie.
        ranges.push((begin, end, entries.len()));
        entries.push(Entry { info: TensorInfo { name, dtype, shape }, start: begin, len: nbytes });
    }
    ranges.sort_unstable();
    let mut expected = 0u64;
    for &(begin, end, i) in &ranges {
        if begin != expected {
            let name = &entries[i].info.name;
            return Err(if begin < expected {
                malformed(
                    path,
                    format!(
                        "tensor '{name}': data_offsets [{begin}, {end}] overlap the previous tensor (ending at {expected})"
                    ),
                )
            } else {
                malformed(
                    path,
                    format!(
                        "tensor '{name}': data_offsets [{begin}, {end}] leave a gap after offset {expected}"
                    ),
                )
            });
        }
        expected = end;
    }
    let max_end = expected;
    if max_end > (u64::MAX - data_start) {
        return Err(malformed(path, "safetensors data offsets overflow"));
    }
    let order: Vec<usize> = ranges.iter().map(|r| r.2).collect();
    let mut slots: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
    let entries = order
        .into_iter()
        .filter_map(|i| slots[i].take())
        .map(|mut e| {
            e.start += data_start;
            e
        })
        .collect();
    Ok(Header { entries, metadata, expected_len: data_start + max_end })
}

/// The cheap completeness check: the header parses and the file is exactly as long as it says.
pub(crate) fn check_complete(path: &Path) -> Result<(), CheckpointError> {
    let file = super::regular::open_regular(path)?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let header = read_header(path, &file, file_len)?;
    check_length(path, &header, file_len, true)
}

fn check_length(
    path: &Path,
    header: &Header,
    file_len: u64,
    for_completeness: bool,
) -> Result<(), CheckpointError> {
    if file_len < header.expected_len {
        let why = format!(
            "safetensors header needs {} bytes but the file has {file_len} (truncated or still being written)",
            header.expected_len
        );
        return Err(if for_completeness { incomplete(path, why) } else { malformed(path, why) });
    }
    if file_len > header.expected_len {
        return Err(malformed(
            path,
            format!(
                "safetensors header accounts for {} bytes but the file has {file_len}",
                header.expected_len
            ),
        ));
    }
    Ok(())
}

/// The aliases `safetensors.torch.save_model` records: a `__metadata__` key that is not a tensor of
/// the file, mapped to one that is (the name kept of a shared storage). HF's `save_pretrained` drops
/// tied names without a record; those are simply absent.
fn metadata_aliases(header: &Header) -> Vec<Alias> {
    let is_tensor = |n: &str| header.entries.iter().any(|e| e.info.name == n);
    header
        .metadata
        .iter()
        .filter(|(k, v)| !is_tensor(k) && is_tensor(v))
        .map(|(k, v)| Alias { name: k.clone(), owner: v.clone() })
        .collect()
}

impl SafetensorsFile {
    /// Open and validate a safetensors file; reads only the header. Opening is not a completeness
    /// check: a short file is a broken file here (`Malformed`).
    pub(crate) fn open(path: &Path) -> Result<Self, CheckpointError> {
        Self::open_judged(path, false)
    }

    /// [`SafetensorsFile::open`] under the completeness rules ([`check_complete`]'s verdicts from the
    /// same single header parse): a file shorter than its header says is `Incomplete`.
    pub(crate) fn open_complete(path: &Path) -> Result<Self, CheckpointError> {
        Self::open_judged(path, true)
    }

    fn open_judged(path: &Path, for_completeness: bool) -> Result<Self, CheckpointError> {
        let file = super::regular::open_regular(path)?;
        let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
        let header = read_header(path, &file, file_len).map_err(|e| match e {
            CheckpointError::Incomplete { path, why } if !for_completeness => {
                CheckpointError::Malformed { path, why }
            }
            e => e,
        })?;
        check_length(path, &header, file_len, for_completeness)?;
        let aliases = metadata_aliases(&header);
        Ok(SafetensorsFile { path: path.to_path_buf(), file, entries: header.entries, aliases })
    }

    /// Bytes `[offset, offset + buf.len())` of entry `i`.
    pub(crate) fn read_at(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<(), CheckpointError> {
        let e = &self.entries[i];
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > e.len) {
            return Err(malformed(
                &self.path,
                format!(
                    "tensor '{}': read of {} bytes at {offset} is past its {} bytes",
                    e.info.name,
                    buf.len(),
                    e.len
                ),
            ));
        }
        self.file.read_exact_at(buf, e.start + offset).map_err(|err| self.read_error(&e.info.name, err))
    }

    fn read_error(&self, name: &str, err: std::io::Error) -> CheckpointError {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            malformed(&self.path, format!("tensor '{name}': file ended early (changed since it was opened?)"))
        } else {
            io_err(&self.path, err)
        }
    }
}
