//! Eigenvalues and eigenvectors of a small symmetric tridiagonal matrix (the Lanczos matrix `T_m`), by
//! the implicit QL algorithm with Wilkinson shifts (the classic `tqli`).

/// Eigen-decomposition of the symmetric tridiagonal matrix with diagonal `alpha` (length m) and
/// off-diagonal `beta` (length m−1). Returns eigenvalues in ascending order and, for each, the first and
/// last components of its unit eigenvector (`first[i]`, `last[i]`): the SLQ weights and the Lanczos
/// residual bounds need only these; and the whole unit eigenvector of the largest eigenvalue (`top`),
/// from which Lanczos forms the top Ritz vector (a warm start for the next checkpoint).
pub struct TridiagEigen {
    pub values: Vec<f64>,
    pub first: Vec<f64>,
    pub last: Vec<f64>,
    pub top: Vec<f64>,
}

pub(crate) fn tridiag_eigen(alpha: &[f64], beta: &[f64]) -> anyhow::Result<TridiagEigen> {
    let n = alpha.len();
    anyhow::ensure!(n > 0, "empty tridiagonal matrix");
    anyhow::ensure!(beta.len() + 1 == n, "tridiagonal: {} off-diagonal entries for size {n}", beta.len());
    let mut d = alpha.to_vec();
    let mut e = vec![0.0; n];
    e[..n - 1].copy_from_slice(beta);
    // z is n×n row major; column i ends as eigenvector i.
    let mut z = vec![0.0; n * n];
    for i in 0..n {
        z[i * n + i] = 1.0;
    }
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            anyhow::ensure!(iter <= 100, "tridiagonal eigensolver did not converge");
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut i = m;
            let mut early = false;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    early = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                for k in 0..n {
                    let fz = z[k * n + i + 1];
                    z[k * n + i + 1] = s * z[k * n + i] + c * fz;
                    z[k * n + i] = c * z[k * n + i] - s * fz;
                }
            }
            if early {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| d[a].total_cmp(&d[b]));
    Ok(TridiagEigen {
        values: order.iter().map(|&i| d[i]).collect(),
        first: order.iter().map(|&i| z[i]).collect(),
        last: order.iter().map(|&i| z[(n - 1) * n + i]).collect(),
        top: (0..n).map(|k| z[k * n + order[n - 1]]).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toeplitz_known_spectrum() {
        // tridiag(-1, 2, -1) of size n: eigenvalues 2 - 2cos(kπ/(n+1)), eigenvectors sin(jkπ/(n+1)).
        let n = 40;
        let alpha = vec![2.0; n];
        let beta = vec![-1.0; n - 1];
        let te = tridiag_eigen(&alpha, &beta).unwrap();
        let h = std::f64::consts::PI / (n as f64 + 1.0);
        for k in 1..=n {
            let want = 2.0 - 2.0 * (k as f64 * h).cos();
            assert!((te.values[k - 1] - want).abs() < 1e-12, "{k}: {} vs {want}", te.values[k - 1]);
            let norm = (2.0 / (n as f64 + 1.0)).sqrt();
            let first = norm * (k as f64 * h).sin();
            assert!((te.first[k - 1].abs() - first.abs()).abs() < 1e-10);
            let last = norm * (n as f64 * k as f64 * h).sin();
            assert!((te.last[k - 1].abs() - last.abs()).abs() < 1e-10);
        }
        // The top eigenvector whole: sin(jnπ/(n+1)) up to sign.
        let norm = (2.0 / (n as f64 + 1.0)).sqrt();
        for (j, t) in te.top.iter().enumerate() {
            let want = norm * ((j + 1) as f64 * n as f64 * h).sin();
            assert!((t.abs() - want.abs()).abs() < 1e-10, "top[{j}] {t} vs {want}");
        }
        let one = tridiag_eigen(&[3.5], &[]).unwrap();
        assert_eq!(one.values, vec![3.5]);
        assert_eq!(one.first, vec![1.0]);
    }
}
