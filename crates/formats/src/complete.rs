//! The cheap completeness check the daemon runs before reading a checkpoint (no tensor data read).
//!
//! - torch zip: the end-of-central-directory record (and its zip64 record, if any) is present at the
//!   end of the file and consistent: the central directory it points to ends right where the end
//!   records begin and starts with a central-directory signature.
//! - safetensors: the header parses and validates, and the file size is exactly
//!   8 + header length + the largest end offset.
//! - HF folder: `trainer_state.json` is present and parses, and every shard its index lists (or the
//!   single weights file) is present and passes the file checks above.
//! - DCP folder (also Megatron, Lightning sharded): `.metadata` is present (DCP writes it last) and
//!   valid, and every file and byte range it references is present ([`super::dcp`]).
//! - DeepSpeed folder: every model/optimizer state file passes the zip check, at least one optimizer
//!   file exists (written after the model states), and under ZeRO-3 there are as many optimizer
//!   files as model-state files ([`super::deepspeed`]).
//! - A file of a format landscaped does not read (`.gguf`, `.h5`, …): `Unsupported`.
//!
//! Everything that can still change as a writer finishes is reported as
//! [`CheckpointError::Incomplete`]; garbage that no amount of waiting fixes as `Malformed`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::CheckpointError;
use super::layout;

fn incomplete(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::Incomplete { path: path.to_path_buf(), why: why.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Is the checkpoint at `path` (a file or an HF folder) completely written? See the module doc.
pub fn check_complete(path: &Path) -> Result<(), CheckpointError> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.is_dir() {
        if super::dcp::is_dcp_like(path) {
            return super::dcp::check_complete(path);
        }
        if super::deepspeed::is_deepspeed_folder(path) {
            return super::deepspeed::check_complete(path);
        }
        return check_hf_folder(path);
    }
    check_file(path)
}

/// Completeness of one file, by its content (zip or safetensors).
pub(crate) fn check_file(path: &Path) -> Result<(), CheckpointError> {
    match file_kind(path)? {
        FileKind::Zip => Ok(()),
        FileKind::Safetensors => super::safetensors::check_complete(path),
    }
}

/// What a weights file is, by its first bytes, once the completeness rules that need no header
/// parse have passed (a zip's end records checked; a safetensors header is left to its reader,
/// which parses it once: [`check_file`] or [`super::Checkpoint::open_complete`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Zip,
    Safetensors,
}

/// The completeness rules of one file up to its header; see [`FileKind`].
pub(crate) fn file_kind(path: &Path) -> Result<FileKind, CheckpointError> {
    if let Some(what) = path.file_name().and_then(|n| n.to_str()).and_then(layout::foreign_format) {
        return Err(CheckpointError::Unsupported { path: path.to_path_buf(), why: what });
    }
    let file = super::regular::open_regular(path)?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut head = [0u8; 9];
    let n = read_prefix(&file, &mut head).map_err(|e| io_err(path, e))?;
    if n == 0 {
        return Err(incomplete(path, "file is empty"));
    }
    if head[..n.min(4)] == b"PK\x03\x04"[..n.min(4)] {
        if n < 4 {
            return Err(incomplete(path, "file is shorter than a zip header"));
        }
        check_zip(path, &file, len)?;
        return Ok(FileKind::Zip);
    }
    if n < 9 {
        return Err(incomplete(path, format!("file is only {n} bytes")));
    }
    if head[8] == b'{' {
        return Ok(FileKind::Safetensors);
    }
    if let Some(what) = super::torchzip::sniff_unsupported(&head) {
        return Err(CheckpointError::Unsupported { path: path.to_path_buf(), why: what.to_string() });
    }
    Err(CheckpointError::Malformed {
        path: path.to_path_buf(),
        why: "neither a zip archive (torch.save) nor a safetensors file".into(),
    })
}

fn read_prefix(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn le16(b: &[u8]) -> u64 {
    u16::from_le_bytes([b[0], b[1]]) as u64
}
fn le32(b: &[u8]) -> u64 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64
}
fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The zip end records: present at the very end and consistent with the central directory.
fn check_zip(path: &Path, file: &File, len: u64) -> Result<(), CheckpointError> {
    super::parse_log::record("zip end records", path);
    const EOCD: usize = 22;
    if len < EOCD as u64 {
        return Err(incomplete(path, "zip archive has no end-of-central-directory record yet"));
    }
    let tail_len = len.min(EOCD as u64 + 65535) as usize;
    let tail_start = len - tail_len as u64;
    let mut tail = vec![0u8; tail_len];
    file.read_exact_at(&mut tail, tail_start).map_err(|e| io_err(path, e))?;
    // The last EOCD signature whose comment length reaches exactly to the end of the file.
    let pos = (0..=tail_len - EOCD)
        .rev()
        .find(|&p| &tail[p..p + 4] == b"PK\x05\x06" && p + EOCD + le16(&tail[p + 20..]) as usize == tail_len)
        .ok_or_else(|| {
            incomplete(
                path,
                "zip archive has no end-of-central-directory record (still being written or truncated)",
            )
        })?;
    let eocd_at = tail_start + pos as u64;
    let r = &tail[pos..];
    let (mut entries, mut cd_size, mut cd_offset) = (le16(&r[10..]), le32(&r[12..]), le32(&r[16..]));
    let mut cd_end = eocd_at;
    // zip64: a locator sits right before the EOCD.
    if eocd_at >= 20 {
        let mut loc = [0u8; 20];
        file.read_exact_at(&mut loc, eocd_at - 20).map_err(|e| io_err(path, e))?;
        if &loc[..4] == b"PK\x06\x07" {
            let rec_at = le64(&loc[8..]);
            if rec_at.checked_add(56).is_none_or(|e| e > eocd_at - 20) {
                return Err(incomplete(path, format!("zip64 end record offset {rec_at} is out of range")));
            }
            let mut rec = [0u8; 56];
            file.read_exact_at(&mut rec, rec_at).map_err(|e| io_err(path, e))?;
            if &rec[..4] != b"PK\x06\x06" {
                return Err(incomplete(path, "zip64 end record signature missing"));
            }
            entries = le64(&rec[32..]);
            cd_size = le64(&rec[40..]);
            cd_offset = le64(&rec[48..]);
            cd_end = rec_at;
        }
    }
    if cd_offset.checked_add(cd_size) != Some(cd_end) {
        return Err(incomplete(
            path,
            format!(
                "zip central directory ({cd_size} bytes at {cd_offset}) does not end where the end record begins ({cd_end})"
            ),
        ));
    }
    if entries == 0 {
        return Err(incomplete(path, "zip archive lists no entries"));
    }
    let mut sig = [0u8; 4];
    file.read_exact_at(&mut sig, cd_offset).map_err(|e| io_err(path, e))?;
    if &sig != b"PK\x01\x02" {
        return Err(incomplete(path, format!("no central directory entry at offset {cd_offset}")));
    }
    Ok(())
}

/// An HF folder: trainer_state.json written, every listed shard present and complete.
fn check_hf_folder(dir: &Path) -> Result<(), CheckpointError> {
    trainer_state(dir)?;
    for index in ["model.safetensors.index.json", "pytorch_model.bin.index.json"] {
        let index_path = dir.join(index);
        if super::regular::regular_or_absent(&index_path)? {
            for (shard, _) in listed_shards(&index_path)? {
                check_file(&present_shard(dir, index, &shard)?)?;
            }
            return Ok(());
        }
    }
    for single in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(single);
        if super::regular::regular_or_absent(&p)? {
            return check_file(&p);
        }
    }
    Err(no_hf_weights(dir))
}

/// An HF folder's `trainer_state.json`, parsed: the Trainer writes it after the weights, so a folder
/// without it (or with it half written) is incomplete.
pub(crate) fn trainer_state(dir: &Path) -> Result<serde_json::Value, CheckpointError> {
    let state = dir.join("trainer_state.json");
    if !super::regular::regular_or_absent(&state)? {
        return Err(incomplete(dir, "trainer_state.json not written yet"));
    }
    layout::read_json(&state).map_err(|e| incomplete(dir, format!("trainer_state.json: {e}")))
}

/// The shards a weights index lists; an index listing none is malformed.
pub(crate) fn listed_shards(index_path: &Path) -> Result<Vec<(String, Vec<String>)>, CheckpointError> {
    let shards = layout::index_shards(index_path)?;
    if shards.is_empty() {
        return Err(CheckpointError::Malformed {
            path: index_path.to_path_buf(),
            why: "weight_map is empty".into(),
        });
    }
    Ok(shards)
}

/// A shard `index` lists, which must be there (else the folder is incomplete).
pub(crate) fn present_shard(
    dir: &Path,
    index: &str,
    shard: &str,
) -> Result<std::path::PathBuf, CheckpointError> {
    let p = dir.join(shard);
    if !super::regular::regular_or_absent(&p)? {
        return Err(incomplete(dir, format!("shard {shard} listed in {index} is missing")));
    }
    Ok(p)
}

/// An HF folder with no weights file (yet).
pub(crate) fn no_hf_weights(dir: &Path) -> CheckpointError {
    incomplete(dir, "no model.safetensors, pytorch_model.bin or weights index in the folder")
}
