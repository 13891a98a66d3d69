//! Whole safetensors files that landscaped writes itself and reads back: the one streaming writer
//! ([`SafetensorsWriter`]: PCA direction files, the checkpoints handed to a Python worker) and the
//! loader of float tensors ([`load_float_tensors`]: direction files). Checkpoints written by trainers
//! are read by [`crate::safetensors`] instead, which validates every byte.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Streams one safetensors file of tensors whose names, dtypes and shapes are known up front (f32
/// PCA direction files; the app's worker handoff writes checkpoints with it too).
pub struct SafetensorsWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    data_start: u64,
    expect: u64,
    written: u64,
    bytes: Vec<u8>,
}

impl SafetensorsWriter {
    pub fn create(
        dest: &Path,
        tensors: &[(String, Vec<usize>)],
        meta: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let typed: Vec<(String, &str, usize, Vec<usize>)> =
            tensors.iter().map(|(n, s)| (n.clone(), "F32", 4, s.clone())).collect();
        Self::create_typed(dest, &typed, meta)
    }

    /// As `create`, each tensor with its safetensors dtype name and element size in bytes; the values
    /// follow in this order, by [`SafetensorsWriter::write`] (as f32) or [`SafetensorsWriter::write_raw`].
    pub fn create_typed(
        dest: &Path,
        tensors: &[(String, &str, usize, Vec<usize>)],
        meta: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::to_value(meta)?);
        let mut off = 0u64;
        for (name, dtype, size, shape) in tensors {
            let len = shape.iter().product::<usize>() as u64 * *size as u64;
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + len]}),
            );
            off += len;
        }
        let mut h = serde_json::to_vec(&header)?;
        while h.len() % 8 != 0 {
            h.push(b' ');
        }
        let tmp = dest.with_extension(format!("safetensors.{}.tmp", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("{}", tmp.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        out.write_all(&(h.len() as u64).to_le_bytes())
            .and_then(|_| out.write_all(&h))
            .with_context(|| format!("{}", tmp.display()))?;
        Ok(SafetensorsWriter {
            tmp,
            out,
            data_start: 8 + h.len() as u64,
            expect: off,
            written: 0,
            bytes: Vec::new(),
        })
    }

    /// Appends values as f32.
    pub fn write(&mut self, v: &[f64]) -> anyhow::Result<()> {
        self.bytes.clear();
        for &x in v {
            self.bytes.extend_from_slice(&(x as f32).to_le_bytes());
        }
        self.out.write_all(&self.bytes).with_context(|| format!("{}", self.tmp.display()))?;
        self.written += self.bytes.len() as u64;
        Ok(())
    }

    /// Appends bytes as they are (a tensor of another dtype, little-endian).
    pub fn write_raw(&mut self, b: &[u8]) -> anyhow::Result<()> {
        self.out.write_all(b).with_context(|| format!("{}", self.tmp.display()))?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Flushes, negates every value in place when `negate`, and renames onto `dest`.
    pub fn finish(self, dest: &Path, negate: bool) -> anyhow::Result<()> {
        let tmp = self.tmp.clone();
        let res = (|| -> anyhow::Result<()> {
            if self.written != self.expect {
                bail!("wrote {} bytes, expected {}", self.written, self.expect);
            }
            let f = self.out.into_inner().map_err(|e| e.into_error())?;
            if negate {
                let mut buf = vec![0u8; 1 << 20];
                let mut at = self.data_start;
                let end = self.data_start + self.expect;
                while at < end {
                    let m = ((end - at) as usize).min(buf.len());
                    f.read_exact_at(&mut buf[..m], at)?;
                    for c in buf[..m].chunks_exact_mut(4) {
                        c[3] ^= 0x80;
                    }
                    f.write_all_at(&buf[..m], at)?;
                    at += m as u64;
                }
            }
            f.sync_all()?;
            std::fs::rename(&tmp, dest)?;
            Ok(())
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.with_context(|| format!("writing {}", dest.display()))
    }
}

/// A float tensor of a file: name, shape, values.
pub(crate) type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The float tensors of a safetensors file (F32, F64, F16 or BF16, widened or narrowed to f32) in the
/// file's data order, each with its name and shape: how PCA direction files are read back.
pub fn load_float_tensors(path: &Path) -> anyhow::Result<Vec<NamedTensor>> {
    use safetensors::{Dtype, SafeTensors};
    let p = path.display();
    let buf = std::fs::read(path).with_context(|| format!("{p}"))?;
    let (_, meta) =
        SafeTensors::read_metadata(&buf).map_err(|e| anyhow::anyhow!("{p}: not a safetensors file: {e}"))?;
    let st =
        SafeTensors::deserialize(&buf).map_err(|e| anyhow::anyhow!("{p}: not a safetensors file: {e}"))?;
    let mut out = Vec::new();
    for name in meta.offset_keys() {
        let t = st.tensor(&name).map_err(|e| anyhow::anyhow!("{p}: tensor {name}: {e}"))?;
        let b = t.data();
        let v: Vec<f32> = match t.dtype() {
            Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            Dtype::F16 => {
                b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            Dtype::BF16 => {
                b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            other => bail!("{p}: tensor {name} has dtype {other:?}, not a float type"),
        };
        out.push((name, t.shape().to_vec(), v));
    }
    Ok(out)
}
