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
//! Slices along PCA directions read the files listed in the stored record's `direction_files` (or
//! [`direction_path`]) with `landscaped_formats::safetensors_file::load_float_tensors`: `(parameter
//! name, shape, values)` in parameter order. Tensors not selected for the PCA (e.g. 1-D with `exclude_1d`, BN running stats)
//! are absent: their direction is zero.

use super::archive::run_dir;
use super::gram::{Trajectory, accumulate_gram, center_gram, dot};
use super::select::TensorFilter;
use crate::store::trajectory::{PcaConfig, PcaRecord};
use anyhow::{Context, bail};
use landscaped_formats::safetensors_file::SafetensorsWriter;
use landscaped_maths::eigen::symmetric_eigen;
use std::collections::BTreeMap;

use std::path::{Path, PathBuf};

/// Where component `k` (0-based) of a run's latest PCA is written: `<run dir>/pca/pc<k+1>.safetensors`.
pub(crate) fn direction_path(data_dir: &Path, run: &str, k: usize) -> PathBuf {
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
        writers.push(SafetensorsWriter::create(p, &traj.tensors, &m)?);
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
