//! The streaming Gram matrix of a trajectory: G_ij = ⟨θ_i − θ_c, θ_j − θ_c⟩ over the selected tensors,
//! accumulated in f64 in one pass over the archive. The centre θ_c is subtracted element by element
//! before any product, so the huge ‖θ‖² terms never have to cancel.
//!
//! Memory is `n × CHUNK` f64 whatever the parameter count: the pass reads the same chunk of one tensor
//! from every checkpoint (pread), forms the differences and adds their inner products.

use super::archive::{ArchiveFile, list_run};
use super::select::TensorFilter;
use anyhow::bail;
use std::path::Path;

/// Elements of one tensor read from each checkpoint at a time.
pub const CHUNK: usize = 1 << 15;
/// Elements per cache block of the inner-product kernel.
const BLOCK: usize = 1024;

/// The archived checkpoints of a run restricted to the selected tensors, checked to share one
/// architecture (same tensor names and shapes at every step).
pub struct Trajectory {
    pub run: String,
    pub files: Vec<ArchiveFile>,
    /// Selected tensors: name, shape, and its index in each file's tensor list.
    pub tensors: Vec<(String, Vec<usize>)>,
    index: Vec<Vec<usize>>,
}

impl Trajectory {
    /// Opens every archived checkpoint of `run` (ascending step) and selects tensors with `filter`.
    /// Errors name the step and the tensor when the architecture changed, and when nothing is selected.
    pub fn open(data_dir: &Path, run: &str, filter: &TensorFilter) -> anyhow::Result<Trajectory> {
        let entries = list_run(data_dir, run)?;
        if entries.is_empty() {
            bail!("run {run:?} has no archived checkpoints under {}", data_dir.join("trajectory").display());
        }
        let files = entries.iter().map(|e| ArchiveFile::open(&e.path)).collect::<anyhow::Result<Vec<_>>>()?;
        let first = &files[0];
        let tensors: Vec<(String, Vec<usize>)> = first
            .tensors
            .iter()
            .filter(|t| filter.selects(&t.name, &t.shape))
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        if tensors.is_empty() {
            bail!(
                "run {run:?}: no archived tensor is selected (step {} has {} tensors)",
                first.step,
                first.tensors.len()
            );
        }
        let mut index = Vec::with_capacity(files.len());
        for f in &files {
            let mut ix = Vec::with_capacity(tensors.len());
            for (name, shape) in &tensors {
                match f.tensors.iter().position(|t| &t.name == name) {
                    None => bail!(
                        "run {run:?}: the architecture changed: step {} has no tensor {name} (step {} has it, shape {shape:?})",
                        f.step,
                        first.step
                    ),
                    Some(i) if &f.tensors[i].shape != shape => bail!(
                        "run {run:?}: the architecture changed: tensor {name} has shape {:?} at step {} but {shape:?} at step {}",
                        f.tensors[i].shape,
                        f.step,
                        first.step
                    ),
                    Some(i) => ix.push(i),
                }
            }
            if let Some(extra) = f
                .tensors
                .iter()
                .find(|t| filter.selects(&t.name, &t.shape) && !tensors.iter().any(|(n, _)| n == &t.name))
            {
                bail!(
                    "run {run:?}: the architecture changed: step {} has tensor {} {:?} that step {} lacks",
                    f.step,
                    extra.name,
                    extra.shape,
                    first.step
                );
            }
            index.push(ix);
        }
        Ok(Trajectory { run: run.to_string(), files, tensors, index })
    }

    pub fn steps(&self) -> Vec<u64> {
        self.files.iter().map(|f| f.step).collect()
    }

    /// Number of selected parameters d.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum()
    }

    /// Streams the differences θ_i − θ_c chunk by chunk: `f(tensor, start, rows)` gets, for every
    /// checkpoint i, `rows[i]` = elements `start..start+len` of the tensor minus the centre's.
    /// `progress` is called with the number of elements done after each chunk.
    pub(crate) fn for_each_chunk(
        &self,
        center: usize,
        mut f: impl FnMut(usize, usize, &[Vec<f64>]),
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let n = self.files.len();
        let mut rows: Vec<Vec<f64>> = vec![Vec::with_capacity(CHUNK); n];
        let mut c = Vec::with_capacity(CHUNK);
        let mut scratch = Vec::new();
        for (t, (_, shape)) in self.tensors.iter().enumerate() {
            let numel: usize = shape.iter().product();
            let mut start = 0;
            while start < numel {
                let len = CHUNK.min(numel - start);
                c.resize(len, 0.0);
                self.files[center].read_f64(self.index[center][t], start, &mut c, &mut scratch)?;
                for (i, row) in rows.iter_mut().enumerate() {
                    row.resize(len, 0.0);
                    if i == center {
                        row.fill(0.0);
                        continue;
                    }
                    self.files[i].read_f64(self.index[i][t], start, row, &mut scratch)?;
                    for (x, y) in row.iter_mut().zip(&c) {
                        *x -= y;
                    }
                }
                f(t, start, &rows);
                start += len;
                progress(len as u64);
            }
        }
        Ok(())
    }
}

/// Adds the inner products of `rows` to the lower triangle of `g` (n × n, row-major).
pub(crate) fn gram_update(rows: &[Vec<f64>], g: &mut [f64]) {
    let n = rows.len();
    let len = rows.first().map_or(0, |r| r.len());
    let mut b = 0;
    while b < len {
        let e = (b + BLOCK).min(len);
        for i in 0..n {
            let xi = &rows[i][b..e];
            for j in 0..=i {
                g[i * n + j] += dot(xi, &rows[j][b..e]);
            }
        }
        b = e;
    }
}

/// f64 dot product with independent partial sums (vectorizes, and sums more accurately than one chain).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0.0f64; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            s[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + tail
}

/// The full Gram matrix G_ij = ⟨θ_i − θ_c, θ_j − θ_c⟩ (symmetric, row-major), in one pass.
pub(crate) fn accumulate_gram(
    traj: &Trajectory,
    center: usize,
    progress: impl FnMut(u64),
) -> anyhow::Result<Vec<f64>> {
    let n = traj.files.len();
    let mut g = vec![0.0; n * n];
    traj.for_each_chunk(center, |_, _, rows| gram_update(rows, &mut g), progress)?;
    for i in 0..n {
        for j in 0..i {
            g[j * n + i] = g[i * n + j];
        }
    }
    Ok(g)
}

/// The Gram matrix centred as scikit-learn centres rows: Gc = J G J with J = I − 11ᵀ/n, i.e. the inner
/// products of the rows after subtracting their mean.
pub(crate) fn center_gram(g: &[f64], n: usize) -> Vec<f64> {
    let nf = n as f64;
    let row_mean: Vec<f64> = (0..n).map(|i| g[i * n..(i + 1) * n].iter().sum::<f64>() / nf).collect();
    let all_mean = row_mean.iter().sum::<f64>() / nf;
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            c[i * n + j] = g[i * n + j] - row_mean[i] - row_mean[j] + all_mean;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_update_matches_naive() {
        let rows: Vec<Vec<f64>> =
            (0..5).map(|i| (0..3001).map(|k| ((i * 7 + k * 13) % 17) as f64 - 8.0).collect()).collect();
        let mut g = vec![0.0; 25];
        gram_update(&rows, &mut g);
        for i in 0..5 {
            for j in 0..=i {
                let want: f64 = rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum();
                assert_eq!(g[i * 5 + j], want);
            }
        }
    }

    #[test]
    fn centering_equals_mean_removal() {
        let x = [[1.0, 2.0], [3.0, -1.0], [0.5, 4.0]];
        let g: Vec<f64> = (0..9).map(|k| x[k / 3][0] * x[k % 3][0] + x[k / 3][1] * x[k % 3][1]).collect();
        let m = [(1.0 + 3.0 + 0.5) / 3.0, (2.0 - 1.0 + 4.0) / 3.0];
        let c = center_gram(&g, 3);
        for (k, ck) in c.iter().enumerate() {
            let (i, j) = (k / 3, k % 3);
            let want = (x[i][0] - m[0]) * (x[j][0] - m[0]) + (x[i][1] - m[1]) * (x[j][1] - m[1]);
            assert!((ck - want).abs() < 1e-14);
        }
    }
}
