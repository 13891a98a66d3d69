//! Per-checkpoint statistics: the global norm ‖θ‖₂ (the paper's Fig. 2 b/e), the distance from the run's
//! first checkpoint, the size of the update since the previous checkpoint and the cosine between
//! consecutive updates, assembled from per-tensor sums.

use super::kernels::CompensatedSum;

/// ‖θ‖₂ from the tensors' Σx² (compensated sum).
pub fn global_norm(tensor_sum_sq: impl IntoIterator<Item = f64>) -> f64 {
    let mut s = CompensatedSum::default();
    for x in tensor_sum_sq {
        s.add(x);
    }
    s.value().sqrt()
}

/// The cosine between consecutive updates u_k = θ_k − θ_{k−1} and u_{k−1} = θ_{k−1} − θ_{k−2}, from three
/// squared distances: `a` = ‖θ_k − θ_{k−1}‖², `b` = ‖θ_{k−1} − θ_{k−2}‖², `c` = ‖θ_k − θ_{k−2}‖².
/// Since u_k + u_{k−1} = θ_k − θ_{k−2}, ⟨u_k, u_{k−1}⟩ = (c − a − b) / 2. Only differences of checkpoints
/// enter (never ‖θ‖² itself), so nothing large cancels. None when an update is zero or a value not finite.
pub fn update_cosine(a: f64, b: f64, c: f64) -> Option<f64> {
    if !(a > 0.0 && b > 0.0 && c.is_finite() && a.is_finite() && b.is_finite()) {
        return None;
    }
    Some(((c - a - b) / (2.0 * (a * b).sqrt())).clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(u: &[f64], v: &[f64]) -> f64 {
        u.iter().zip(v).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn cosine_from_distances_equals_direct_cosine() {
        let t0 = [1.0, 2.0, 3.0, -1.0];
        let t1 = [1.5, 1.0, 3.0, 0.0];
        let t2 = [1.0, 0.5, 4.0, 2.0];
        let d = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
        let u2: Vec<f64> = t2.iter().zip(&t1).map(|(a, b)| a - b).collect();
        let u1: Vec<f64> = t1.iter().zip(&t0).map(|(a, b)| a - b).collect();
        let direct = dot(&u2, &u1) / (dot(&u2, &u2).sqrt() * dot(&u1, &u1).sqrt());
        let got = update_cosine(d(&t2, &t1), d(&t1, &t0), d(&t2, &t0)).unwrap();
        assert!((got - direct).abs() < 1e-15, "{got} {direct}");
        assert_eq!(update_cosine(0.0, 1.0, 1.0), None);
    }

    #[test]
    fn global_norm_sums_squares() {
        assert_eq!(global_norm([9.0, 16.0]), 5.0);
    }
}
