//! PCA of the optimization path, as the paper defines it (method.md §3), exact at any scale.
//!
//! Rows are θ_i − θ_c (c = the last checkpoint, or a chosen step), centred as scikit-learn's PCA centres
//! them. Pass 1 streams the n × n Gram matrix ([`super::gram`]); its centred form Gc = U Λ Uᵀ gives
//! everything but the d-dimensional directions: singular values S_k = √λ_k, explained variance
//! λ_k/(n−1) and its ratio λ_k/tr(Gc), and each checkpoint's coordinate ⟨θ_i − θ_c, v_k⟩ = (G u_k)_i/S_k.
//! Pass 2 forms v_k = Σ_i (u_ik/S_k)(θ_i − θ_c) tensor by tensor and writes one safetensors file per
//! component (tensors named as the parameters; `safetensors.torch.load_file` reads them). Signs follow
//! scikit-learn (`svd_flip(u_based_decision=False)`: the largest-magnitude entry of each v_k positive).
//!
//! For slices along PCA directions (engineer E), call [`load_directions`] on the files listed in the
//! stored record's `direction_files` (or [`direction_path`]): it returns `(parameter name, values)` in
//! parameter order. Tensors not selected for the PCA (e.g. 1-D with `exclude_1d`, BN running stats)
//! are absent: their direction is zero.

use super::archive::run_dir;
use super::eigen::symmetric_eigen;
use super::gram::{Trajectory, accumulate_gram, center_gram, dot};
use super::select::TensorFilter;
use crate::store::trajectory::{PcaConfig, PcaRecord};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where component `k` (0-based) of a run's latest PCA is written: `<run dir>/pca/pc<k+1>.safetensors`.
pub fn direction_path(data_dir: &Path, run: &str, k: usize) -> PathBuf {
    run_dir(data_dir, run).join("pca").join(format!("pc{}.safetensors", k + 1))
}

/// A progress bar over elements on stderr when it is a terminal; hidden otherwise.
fn progress_bar(total: u64, msg: &'static str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {percent}% {eta}") {
        pb.set_style(style);
    }
    pb.set_message(msg);
    pb
}

/// Runs the PCA of `run`'s archived trajectory and writes its directions. Bad input (too few
/// checkpoints, changed architecture, unknown centre, a flat trajectory) is a clear error.
pub fn compute_pca(data_dir: &Path, run: &str, cfg: &PcaConfig) -> anyhow::Result<PcaRecord> {
    let k = if cfg.components == 0 { 2 } else { cfg.components };
    let filter = TensorFilter::new(&cfg.selection)?;
    let traj = Trajectory::open(data_dir, run, &filter)?;
    let n = traj.files.len();
    let steps = traj.steps();
    if n < k + 1 {
        bail!(
            "run {run:?} has {n} archived checkpoint(s) (steps {steps:?}); {k} components need at least {}",
            k + 1
        );
    }
    let center = match cfg.center_step {
        None => n - 1,
        Some(s) => steps.iter().position(|&x| x == s).ok_or_else(|| {
            anyhow::anyhow!("run {run:?}: centre step {s} is not archived (archived: {steps:?})")
        })?,
    };
    let d = traj.n_params();

    // Pass 1: the Gram matrix.
    let pb = progress_bar(d, "pca: gram pass");
    let g = accumulate_gram(&traj, center, |x| pb.inc(x))?;
    pb.finish_and_clear();
    let gc = center_gram(&g, n);
    let eig =
        symmetric_eigen(&gc, n).map_err(|e| anyhow::anyhow!("run {run:?}: eigen-decomposition: {e}"))?;
    let trace: f64 = (0..n).map(|i| gc[i * n + i]).sum();
    if trace.is_nan() || trace <= 0.0 {
        bail!(
            "run {run:?}: the trajectory does not move (all {n} checkpoints are identical in the selected tensors)"
        );
    }
    for (j, &lam) in eig.values.iter().take(k).enumerate() {
        if lam.is_nan() || lam <= trace * 1e-13 {
            bail!(
                "run {run:?}: component {} has no variance (the {n} checkpoints span fewer than {k} dimensions)",
                j + 1
            );
        }
    }
    let lambda: Vec<f64> = eig.values[..k].to_vec();
    let sv: Vec<f64> = lambda.iter().map(|l| l.sqrt()).collect();
    // Row weights of each direction: v_k = Σ_i w_ik (θ_i − θ_c), w_ik = (J u_k)_i / S_k.
    let w: Vec<Vec<f64>> = eig.vectors[..k]
        .iter()
        .zip(&sv)
        .map(|(uk, s)| {
            let m = uk.iter().sum::<f64>() / n as f64;
            uk.iter().map(|x| (x - m) / s).collect()
        })
        .collect();

    // Pass 2: the directions, written to temp files, sign-fixed, renamed.
    let dirs: Vec<PathBuf> = (0..k).map(|j| direction_path(data_dir, run, j)).collect();
    if let Some(parent) = dirs[0].parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
    }
    let mut meta = BTreeMap::new();
    meta.insert("run".to_string(), run.to_string());
    meta.insert("center_step".to_string(), steps[center].to_string());
    meta.insert("steps".to_string(), format!("{steps:?}"));
    let mut writers = Vec::with_capacity(k);
    for (j, p) in dirs.iter().enumerate() {
        let mut m = meta.clone();
        m.insert("component".to_string(), (j + 1).to_string());
        writers.push(DirectionWriter::create(p, &traj.tensors, &m)?);
    }
    let mut vv = vec![0.0f64; k * k];
    let mut maxabs = vec![(0.0f64, 1.0f64); k];
    let mut buf: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut io_err: Option<anyhow::Error> = None;
    let pb = progress_bar(d, "pca: directions pass");
    traj.for_each_chunk(
        center,
        |_, _, rows| {
            let len = rows[0].len();
            for (j, b) in buf.iter_mut().enumerate() {
                b.clear();
                b.resize(len, 0.0);
                for (row, wij) in rows.iter().zip(w[j].iter()) {
                    for (o, x) in b.iter_mut().zip(row) {
                        *o += wij * x;
                    }
                }
                for x in b.iter() {
                    if x.abs() > maxabs[j].0 {
                        maxabs[j] = (x.abs(), x.signum());
                    }
                }
            }
            for a in 0..k {
                for c in 0..=a {
                    vv[a * k + c] += dot(&buf[a], &buf[c]);
                }
            }
            if io_err.is_none() {
                for (wr, b) in writers.iter_mut().zip(&buf) {
                    if let Err(e) = wr.write(b) {
                        io_err = Some(e);
                        break;
                    }
                }
            }
        },
        |x| pb.inc(x),
    )?;
    pb.finish_and_clear();
    if let Some(e) = io_err {
        return Err(e);
    }
    let signs: Vec<f64> = maxabs.iter().map(|m| m.1).collect();
    for ((wr, p), s) in writers.into_iter().zip(&dirs).zip(&signs) {
        wr.finish(p, *s < 0.0)?;
    }
    // Coordinates ⟨θ_i − θ_c, v_k⟩ = Σ_l G_il w_lk, residuals and cosines.
    let coords: Vec<Vec<f64>> = (0..n)
        // (+ 0.0 turns the centre's −0 into 0)
        .map(|i| {
            (0..k).map(|j| signs[j] * (0..n).map(|l| g[i * n + l] * w[j][l]).sum::<f64>() + 0.0).collect()
        })
        .collect();
    let distances: Vec<f64> = (0..n).map(|i| g[i * n + i].max(0.0).sqrt()).collect();
    let residuals: Vec<f64> = (0..n)
        .map(|i| (g[i * n + i] - coords[i].iter().map(|c| c * c).sum::<f64>()).max(0.0).sqrt())
        .collect();
    let cosines: Vec<Vec<f64>> = (0..k)
        .map(|a| {
            (0..k)
                .map(|b| {
                    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
                    let num = vv[hi * k + lo] * signs[a] * signs[b];
                    num / (vv[a * k + a] * vv[b * k + b]).sqrt()
                })
                .collect()
        })
        .collect();
    let nm1 = (n - 1) as f64;
    Ok(PcaRecord {
        run: run.to_string(),
        config: PcaConfig { components: k, ..cfg.clone() },
        computed_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        center_step: steps[center],
        steps,
        n_params: d,
        n_tensors: traj.tensors.len(),
        explained_variance: lambda.iter().map(|l| l / nm1).collect(),
        explained_variance_ratio: lambda.iter().map(|l| l / trace).collect(),
        singular_values: sv,
        total_variance: trace / nm1,
        coords,
        residuals,
        distances,
        cosines,
        direction_files: dirs
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or(p.clone()).display().to_string())
            .collect(),
    })
}

/// Streams one safetensors file of tensors whose names, dtypes and shapes are known up front (f32
/// direction files here; the worker handoff of `worker::handoff` writes checkpoints with it too).
pub(crate) struct DirectionWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    data_start: u64,
    expect: u64,
    written: u64,
    bytes: Vec<u8>,
}

impl DirectionWriter {
    fn create(
        dest: &Path,
        tensors: &[(String, Vec<usize>)],
        meta: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let typed: Vec<(String, &str, usize, Vec<usize>)> =
            tensors.iter().map(|(n, s)| (n.clone(), "F32", 4, s.clone())).collect();
        Self::create_typed(dest, &typed, meta)
    }

    /// As `create`, each tensor with its safetensors dtype name and element size in bytes; the values
    /// follow in this order, by [`DirectionWriter::write`] (as f32) or [`DirectionWriter::write_raw`].
    pub(crate) fn create_typed(
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
        Ok(DirectionWriter {
            tmp,
            out,
            data_start: 8 + h.len() as u64,
            expect: off,
            written: 0,
            bytes: Vec::new(),
        })
    }

    /// Appends values as f32.
    pub(crate) fn write(&mut self, v: &[f64]) -> anyhow::Result<()> {
        self.bytes.clear();
        for &x in v {
            self.bytes.extend_from_slice(&(x as f32).to_le_bytes());
        }
        self.out.write_all(&self.bytes).with_context(|| format!("{}", self.tmp.display()))?;
        self.written += self.bytes.len() as u64;
        Ok(())
    }

    /// Appends bytes as they are (a tensor of another dtype, little-endian).
    pub(crate) fn write_raw(&mut self, b: &[u8]) -> anyhow::Result<()> {
        self.out.write_all(b).with_context(|| format!("{}", self.tmp.display()))?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Flushes, negates every value in place when `negate`, and renames onto `dest`.
    pub(crate) fn finish(self, dest: &Path, negate: bool) -> anyhow::Result<()> {
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

/// The tensors of a direction file (safetensors; F32, F64, F16 or BF16), as `(name, values)` in the
/// file's data order (the parameter order of the checkpoint). For slices along PCA directions.
pub fn load_directions(path: &Path) -> anyhow::Result<Vec<(String, Vec<f32>)>> {
    Ok(load_directions_with_shapes(path)?.into_iter().map(|(n, _, v)| (n, v)).collect())
}

/// A tensor of a direction file: name, shape, values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Like [`load_directions`], with each tensor's shape.
pub fn load_directions_with_shapes(path: &Path) -> anyhow::Result<Vec<NamedTensor>> {
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
