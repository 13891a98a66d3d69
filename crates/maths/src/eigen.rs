//! Eigen-decomposition of a small symmetric matrix (the n × n Gram matrix of the trajectory) by the
//! cyclic Jacobi method: slow for large n but simple, unconditionally stable, and accurate to a few ulps
//! of the matrix norm, which is what explained-variance ratios need.

/// Eigenvalues in descending order and the matching unit eigenvectors (`vectors[k]` is the k-th).
#[derive(Clone, Debug)]
pub struct SymEigen {
    pub values: Vec<f64>,
    pub vectors: Vec<Vec<f64>>,
}

/// Decomposes the symmetric `n × n` matrix `a` (row-major). Only symmetry up to rounding is assumed:
/// the matrix is symmetrized as (A + Aᵀ)/2 first. Errors on a wrong length or non-finite entries.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<SymEigen, String> {
    if a.len() != n * n {
        return Err(format!("matrix has {} entries, expected {n}×{n}", a.len()));
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Err("matrix has a non-finite entry".into());
    }
    let mut m: Vec<f64> = (0..n * n).map(|k| 0.5 * (a[k] + a[(k % n) * n + k / n])).collect();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm2: f64 = m.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 =
            (0..n).flat_map(|p| (p + 1..n).map(move |q| (p, q))).map(|(p, q)| m[p * n + q].powi(2)).sum();
        if off == 0.0 || off <= norm2 * (f64::EPSILON * f64::EPSILON) * 1e-4 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                rotate(&mut m, n, p, q, c, s);
                m[p * n + q] = 0.0;
                m[q * n + p] = 0.0;
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[j * n + j].total_cmp(&m[i * n + i]));
    Ok(SymEigen {
        values: order.iter().map(|&i| m[i * n + i]).collect(),
        vectors: order.iter().map(|&i| (0..n).map(|k| v[k * n + i]).collect()).collect(),
    })
}

/// A ← Jᵀ A J for the Jacobi rotation J in the (p, q) plane.
fn rotate(m: &mut [f64], n: usize, p: usize, q: usize, c: f64, s: f64) {
    for k in 0..n {
        let (akp, akq) = (m[k * n + p], m[k * n + q]);
        m[k * n + p] = c * akp - s * akq;
        m[k * n + q] = s * akp + c * akq;
    }
    for k in 0..n {
        let (apk, aqk) = (m[p * n + k], m[q * n + k]);
        m[p * n + k] = c * apk - s * aqk;
        m[q * n + k] = s * apk + c * aqk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_decomposition(a: &[f64], n: usize, e: &SymEigen, tol: f64) {
        for k in 0..n {
            let v = &e.vectors[k];
            let norm: f64 = v.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-12);
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j]).sum();
                assert!((av - e.values[k] * v[i]).abs() < tol, "A v ≠ λ v for k={k}");
            }
            for l in 0..k {
                let d: f64 = v.iter().zip(&e.vectors[l]).map(|(x, y)| x * y).sum();
                assert!(d.abs() < 1e-12);
            }
        }
        assert!(e.values.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn two_by_two_known() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1, vectors (1, 1)/√2 and (1, −1)/√2.
        let a = [2.0, 1.0, 1.0, 2.0];
        let e = symmetric_eigen(&a, 2).unwrap();
        assert!((e.values[0] - 3.0).abs() < 1e-15 && (e.values[1] - 1.0).abs() < 1e-15);
        assert!((e.vectors[0][0].abs() - 0.5f64.sqrt()).abs() < 1e-15);
        assert!((e.vectors[0][0] - e.vectors[0][1]).abs() < 1e-15);
        check_decomposition(&a, 2, &e, 1e-14);
    }

    #[test]
    fn known_spectrum_from_rotation() {
        // A = Q diag(λ) Qᵀ with Q a Householder reflection: eigenvalues known exactly.
        let n = 6;
        let lam = [10.0, 5.0, 5.0, 1e-3, 0.0, -2.0];
        let w: Vec<f64> = (0..n).map(|i| (i as f64 + 1.0).sin()).collect();
        let ww: f64 = w.iter().map(|x| x * x).sum();
        let q: Vec<f64> = (0..n * n)
            .map(|k| (if k / n == k % n { 1.0 } else { 0.0 }) - 2.0 * w[k / n] * w[k % n] / ww)
            .collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| q[i * n + k] * lam[k] * q[j * n + k]).sum();
            }
        }
        let e = symmetric_eigen(&a, n).unwrap();
        for (got, want) in e.values.iter().zip(lam) {
            assert!((got - want).abs() < 1e-13, "{got} vs {want}");
        }
        check_decomposition(&a, n, &e, 1e-13);
    }

    #[test]
    fn hilbert_matrix() {
        // The 5×5 Hilbert matrix, eigenvalues from the literature (condition number ≈ 4.8e5).
        let n = 5;
        let a: Vec<f64> = (0..n * n).map(|k| 1.0 / ((k / n + k % n + 1) as f64)).collect();
        let e = symmetric_eigen(&a, n).unwrap();
        let want =
            [1.567050691098231, 0.2085342186110133, 0.01140749162341981, 3.058980401511e-4, 3.287928772e-6];
        for (got, w) in e.values.iter().zip(want) {
            assert!((got - w).abs() < 1e-12, "{got} vs {w}");
        }
        check_decomposition(&a, n, &e, 1e-13);
    }

    #[test]
    fn larger_random_gram_and_edge_cases() {
        let n = 40;
        let mut x = vec![0.0; n * 7];
        let mut s = 12345u64;
        for v in x.iter_mut() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *v = ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
        }
        // rank-7 Gram matrix: 33 zero eigenvalues
        let a: Vec<f64> =
            (0..n * n).map(|k| (0..7).map(|d| x[(k / n) * 7 + d] * x[(k % n) * 7 + d]).sum()).collect();
        let e = symmetric_eigen(&a, n).unwrap();
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
        assert!((e.values.iter().sum::<f64>() - trace).abs() < 1e-12 * trace);
        assert!(e.values[7..].iter().all(|v| v.abs() < 1e-13));
        check_decomposition(&a, n, &e, 1e-12);
        assert!(symmetric_eigen(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(symmetric_eigen(&[f64::NAN], 1).is_err());
        assert_eq!(symmetric_eigen(&[4.0], 1).unwrap().values, vec![4.0]);
        assert!(symmetric_eigen(&[], 0).unwrap().values.is_empty());
    }
}
