//! Sharpness measures of a minimum θ of the loss L. Every measure reports the base loss L(θ), the value,
//! how many loss (and gradient) evaluations it cost, and how the inner maximization was solved.
//!
//! * **Keskar ε-sharpness** (Keskar et al. 2017, "On large-batch training…", eq. 4):
//!   φ_ε(θ) = 100 · (max_{z ∈ C_ε} L(θ + z) − L(θ)) / (1 + L(θ)), over the box
//!   C_ε = { z : |z_i| ≤ ε (|θ_i| + 1) } (the paper's A = I case). Keskar solves the inner maximization
//!   with 10 iterations of L-BFGS-B; here it is solved approximately by **projected sign-gradient ascent**
//!   from z = 0: z ← clip(z + α·w ⊙ sign ∇L(θ+z), −w, w) with box half-widths w_i = ε(|θ_i| + 1),
//!   α = 2.5 / steps, and the largest loss seen is kept (so the value is a lower bound of the true max).
//! * **SAM sharpness** (Foret et al. 2021): max_{‖ε‖₂ ≤ ρ} L(θ + ε) − L(θ). First order: ε = ρ ∇L/‖∇L‖.
//!   With `steps > 0`, projected normalized-gradient ascent continues from there:
//!   ε ← Proj_ρ(ε + ρ/2 · ∇L(θ+ε)/‖∇L(θ+ε)‖), keeping the largest loss seen.
//! * **Adaptive sharpness, ASAM** (Kwon et al. 2021): max_{‖T_θ⁻¹ ε‖₂ ≤ ρ} L(θ + ε) − L(θ) with
//!   T_θ = diag(|θ_i| + η) for tensors whose name ends in `weight` and 1 elsewhere (as the ASAM reference
//!   code does). Solved in u = T⁻¹ε, where it is SAM on L(θ + T u): first order ε = ρ T²∇L / ‖T∇L‖,
//!   then the same ascent steps. Invariant to rescaling weights.
//! * **Filter-normalized average loss rise**: mean over `directions` random Gaussian directions d,
//!   filter-normalized (each slice along dim 0 of a tensor with ≥ 2 dims rescaled to the norm of the same
//!   slice of θ; tensors with ≤ 1 dim get 0, the paper's `filter` + `biasbn`), of L(θ + r·d) − L(θ), with
//!   its standard error. Scale invariant: rescaling a ReLU layer by α and the next by 1/α doesn't change it.

use super::operator::{dot, norm};
use super::rng::Rng;
use serde::{Deserialize, Serialize};

/// One parameter tensor's place in the flat parameter vector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParamSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamSlot {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A loss over a flat parameter vector: the TorchScript worker implements it in `landscaped_worker::model::hvp`.
pub trait Objective {
    /// The parameter tensors, in order, covering `0..dim()`.
    fn layout(&self) -> &[ParamSlot];
    fn dim(&self) -> usize;
    /// The point whose sharpness is measured (θ, the checkpoint).
    fn center(&self) -> &[f64];
    /// L(θ') (mean over the evaluation set).
    fn loss(&mut self, theta: &[f64]) -> anyhow::Result<f64>;
    /// L(θ') and ∇L(θ') into `grad`.
    fn loss_grad(&mut self, theta: &[f64], grad: &mut [f64]) -> anyhow::Result<f64>;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Measure {
    /// e.g. `keskar`, `sam`, `sam_ascent`, `asam`, `fn_loss_rise`.
    pub name: String,
    /// The radius or box size (ε, ρ or r).
    pub radius: f64,
    pub value: f64,
    /// Standard error (random-direction measures only).
    pub std_error: Option<f64>,
    pub base_loss: f64,
    /// Loss (+ gradient) evaluations spent.
    pub evaluations: usize,
    /// How the inner problem was solved, in words.
    pub method: String,
}

fn finite(x: f64, what: &str) -> anyhow::Result<f64> {
    anyhow::ensure!(x.is_finite(), "{what} is not finite ({x})");
    Ok(x)
}

/// Keskar ε-sharpness (percent, see the module docs). Keskar et al. use ε ∈ {1e-3, 5e-4}.
pub fn keskar_sharpness(obj: &mut dyn Objective, eps: f64, steps: usize) -> anyhow::Result<Measure> {
    let theta = obj.center().to_vec();
    let d = theta.len();
    let w: Vec<f64> = theta.iter().map(|t| eps * (t.abs() + 1.0)).collect();
    let mut grad = vec![0.0; d];
    let base = finite(obj.loss(&theta)?, "loss at the checkpoint")?;
    let mut z = vec![0.0; d];
    let mut best = base;
    let mut evals = 1;
    let alpha = 2.5 / steps.max(1) as f64;
    let mut x = theta.clone();
    for _ in 0..steps.max(1) {
        for i in 0..d {
            x[i] = theta[i] + z[i];
        }
        let l = finite(obj.loss_grad(&x, &mut grad)?, "loss in the ε-box")?;
        evals += 1;
        best = best.max(l);
        for i in 0..d {
            let s = if grad[i] > 0.0 {
                1.0
            } else if grad[i] < 0.0 {
                -1.0
            } else {
                0.0
            };
            z[i] = (z[i] + alpha * w[i] * s).clamp(-w[i], w[i]);
        }
    }
    for i in 0..d {
        x[i] = theta[i] + z[i];
    }
    best = best.max(finite(obj.loss(&x)?, "loss in the ε-box")?);
    evals += 1;
    Ok(Measure {
        name: "keskar".into(),
        radius: eps,
        value: 100.0 * (best - base) / (1.0 + base),
        std_error: None,
        base_loss: base,
        evaluations: evals,
        method: format!(
            "projected sign-gradient ascent, {} steps, step 2.5/steps of the box width",
            steps.max(1)
        ),
    })
}

/// SAM-style ascent on max_{‖u‖ ≤ ρ} L(θ + T u), T diagonal (`None` = identity): first-order u, then
/// `steps` projected normalized-gradient steps. Returns (max loss seen, base loss, evaluations).
fn ball_ascent(
    obj: &mut dyn Objective,
    t: Option<&[f64]>,
    rho: f64,
    steps: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    let theta = obj.center().to_vec();
    let d = theta.len();
    let mut g = vec![0.0; d];
    let base = finite(obj.loss_grad(&theta, &mut g)?, "loss at the checkpoint")?;
    let mut evals = 1;
    let scale = |g: &mut [f64]| {
        if let Some(t) = t {
            g.iter_mut().zip(t).for_each(|(gi, ti)| *gi *= ti);
        }
    };
    scale(&mut g); // gradient with respect to u
    let gn = norm(&g);
    anyhow::ensure!(gn.is_finite(), "gradient at the checkpoint is not finite");
    if gn == 0.0 {
        return Ok((base, base, evals));
    }
    let mut u: Vec<f64> = g.iter().map(|x| rho * x / gn).collect();
    let mut x = vec![0.0; d];
    let point = |u: &[f64], x: &mut [f64]| {
        for i in 0..d {
            x[i] = theta[i] + t.map_or(1.0, |t| t[i]) * u[i];
        }
    };
    let mut best = f64::NEG_INFINITY;
    for _ in 0..steps {
        point(&u, &mut x);
        let l = finite(obj.loss_grad(&x, &mut g)?, "loss in the ρ-ball")?;
        evals += 1;
        best = best.max(l);
        scale(&mut g);
        let gn = norm(&g);
        if gn == 0.0 || !gn.is_finite() {
            break;
        }
        for i in 0..d {
            u[i] += 0.5 * rho * g[i] / gn;
        }
        let un = norm(&u);
        if un > rho {
            u.iter_mut().for_each(|v| *v *= rho / un);
        }
    }
    point(&u, &mut x);
    best = best.max(finite(obj.loss(&x)?, "loss in the ρ-ball")?);
    evals += 1;
    Ok((best, base, evals))
}

/// SAM sharpness at radius ρ; `steps = 0` is the first-order (one gradient) version.
pub fn sam_sharpness(obj: &mut dyn Objective, rho: f64, steps: usize) -> anyhow::Result<Measure> {
    let (best, base, evals) = ball_ascent(obj, None, rho, steps)?;
    Ok(Measure {
        name: if steps == 0 { "sam".into() } else { "sam_ascent".into() },
        radius: rho,
        value: best - base,
        std_error: None,
        base_loss: base,
        evaluations: evals,
        method: if steps == 0 {
            "first order: ε = ρ∇L/‖∇L‖".into()
        } else {
            format!("first order, then {steps} projected normalized-gradient steps of ρ/2")
        },
    })
}

/// The ASAM scale T_θ: |θ_i| + η for tensors named `*weight`, 1 elsewhere.
pub(crate) fn asam_scale(layout: &[ParamSlot], theta: &[f64], eta: f64) -> Vec<f64> {
    let mut t = vec![1.0; theta.len()];
    for s in layout {
        if s.name.ends_with("weight") {
            for i in s.offset..s.offset + s.len() {
                t[i] = theta[i].abs() + eta;
            }
        }
    }
    t
}

/// Adaptive sharpness (ASAM) at radius ρ (ASAM's default ρ = 0.5, η = 0.01).
pub fn asam_sharpness(obj: &mut dyn Objective, rho: f64, eta: f64, steps: usize) -> anyhow::Result<Measure> {
    let t = asam_scale(obj.layout(), obj.center(), eta);
    let (best, base, evals) = ball_ascent(obj, Some(&t), rho, steps)?;
    Ok(Measure {
        name: "asam".into(),
        radius: rho,
        value: best - base,
        std_error: None,
        base_loss: base,
        evaluations: evals,
        method: format!(
            "T = |θ|+{eta} on weights; first order ε = ρT²∇L/‖T∇L‖{}",
            if steps > 0 { format!(", then {steps} ascent steps") } else { String::new() }
        ),
    })
}

/// A random Gaussian direction, filter-normalized, zero on tensors with ≤ 1 dimension.
pub(crate) fn filter_normalized_direction(layout: &[ParamSlot], theta: &[f64], rng: &mut Rng) -> Vec<f64> {
    let mut d = vec![0.0; theta.len()];
    for s in layout {
        if s.shape.len() <= 1 || s.is_empty() {
            continue;
        }
        let filters = s.shape[0];
        let per = s.len() / filters.max(1);
        for f in 0..filters {
            let r = s.offset + f * per..s.offset + (f + 1) * per;
            for v in &mut d[r.clone()] {
                *v = rng.normal();
            }
            let dn = norm(&d[r.clone()]);
            let tn = norm(&theta[r.clone()]);
            let k = tn / (dn + 1e-10);
            d[r].iter_mut().for_each(|v| *v *= k);
        }
    }
    d
}

/// Filter-normalized average loss rise at radius r over `directions` random directions.
pub fn filter_normalized_loss_rise(
    obj: &mut dyn Objective,
    r: f64,
    directions: usize,
    seed: u64,
) -> anyhow::Result<Measure> {
    anyhow::ensure!(directions >= 1, "need at least one direction");
    let theta = obj.center().to_vec();
    let base = finite(obj.loss(&theta)?, "loss at the checkpoint")?;
    let mut rng = Rng::new(seed);
    let mut rises = Vec::with_capacity(directions);
    let mut x = vec![0.0; theta.len()];
    for _ in 0..directions {
        let d = filter_normalized_direction(obj.layout(), &theta, &mut rng);
        anyhow::ensure!(dot(&d, &d) > 0.0, "no parameter tensor with ≥ 2 dimensions to perturb");
        for i in 0..x.len() {
            x[i] = theta[i] + r * d[i];
        }
        rises.push(finite(obj.loss(&x)?, "loss at a perturbed point")? - base);
    }
    let n = rises.len() as f64;
    let mean = rises.iter().sum::<f64>() / n;
    let se = if rises.len() > 1 {
        (rises.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0) / n).sqrt()
    } else {
        f64::NAN
    };
    Ok(Measure {
        name: "fn_loss_rise".into(),
        radius: r,
        value: mean,
        std_error: Some(se),
        base_loss: base,
        evaluations: directions + 1,
        method: format!(
            "mean over {directions} filter-normalized Gaussian directions (biases/BN ignored), seed {seed}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L(θ) = ½ θᵀAθ + bᵀθ (A diagonal-plus-coupling, explicit).
    struct Quadratic {
        a: Vec<Vec<f64>>,
        b: Vec<f64>,
        theta: Vec<f64>,
        layout: Vec<ParamSlot>,
    }
    impl Objective for Quadratic {
        fn layout(&self) -> &[ParamSlot] {
            &self.layout
        }
        fn dim(&self) -> usize {
            self.theta.len()
        }
        fn center(&self) -> &[f64] {
            &self.theta
        }
        fn loss(&mut self, x: &[f64]) -> anyhow::Result<f64> {
            let ax: Vec<f64> = self.a.iter().map(|r| dot(r, x)).collect();
            Ok(0.5 * dot(x, &ax) + dot(&self.b, x))
        }
        fn loss_grad(&mut self, x: &[f64], g: &mut [f64]) -> anyhow::Result<f64> {
            for (i, r) in self.a.iter().enumerate() {
                g[i] = dot(r, x) + self.b[i];
            }
            self.loss(x)
        }
    }

    fn quad(n: usize) -> Quadratic {
        let a = (0..n)
            .map(|i| {
                (0..n).map(|j| if i == j { 1.0 + i as f64 } else { 0.3 / (1.0 + (i + j) as f64) }).collect()
            })
            .collect();
        let b = (0..n).map(|i| ((i as f64) * 1.3).sin()).collect();
        let theta = (0..n).map(|i| 0.5 * ((i as f64) * 0.7).cos()).collect();
        Quadratic {
            a,
            b,
            theta,
            layout: vec![ParamSlot { name: "w.weight".into(), shape: vec![n], offset: 0 }],
        }
    }

    #[test]
    fn keskar_reaches_the_best_box_vertex() {
        // A convex quadratic attains its box maximum at a vertex: enumerate all 2^8.
        let mut q = quad(8);
        let eps = 0.05;
        let theta = q.theta.clone();
        let base = q.loss(&theta).unwrap();
        let mut best = f64::NEG_INFINITY;
        for mask in 0..(1u32 << 8) {
            let x: Vec<f64> = (0..8)
                .map(|i| {
                    theta[i] + if mask >> i & 1 == 1 { 1.0 } else { -1.0 } * eps * (theta[i].abs() + 1.0)
                })
                .collect();
            best = best.max(q.loss(&x).unwrap());
        }
        let want = 100.0 * (best - base) / (1.0 + base);
        let m = keskar_sharpness(&mut q, eps, 10).unwrap();
        assert!(m.value <= want + 1e-9, "{} > exact {want}", m.value);
        assert!(m.value >= 0.99 * want, "{} vs exact {want}", m.value);
        assert_eq!(m.evaluations, 12);
    }

    #[test]
    fn sam_first_order_and_ascent_on_a_circle() {
        let mut q = quad(2);
        let rho = 0.3;
        let theta = q.theta.clone();
        let base = q.loss(&theta).unwrap();
        let mut g = vec![0.0; 2];
        q.loss_grad(&theta, &mut g).unwrap();
        let gn = norm(&g);
        let x1: Vec<f64> = (0..2).map(|i| theta[i] + rho * g[i] / gn).collect();
        let first = q.loss(&x1).unwrap() - base;
        let m0 = sam_sharpness(&mut q, rho, 0).unwrap();
        assert!((m0.value - first).abs() < 1e-12);
        // Exact max over the disc of a convex quadratic is on the circle: sweep it.
        let exact = (0..100_000)
            .map(|k| {
                let a = k as f64 * 2.0 * std::f64::consts::PI / 100_000.0;
                q.loss(&[theta[0] + rho * a.cos(), theta[1] + rho * a.sin()]).unwrap() - base
            })
            .fold(f64::NEG_INFINITY, f64::max);
        let m5 = sam_sharpness(&mut q, rho, 10).unwrap();
        assert!(m5.value >= m0.value - 1e-12);
        assert!((m5.value - exact).abs() < 1e-3 * exact, "{} vs {exact}", m5.value);
    }

    /// A 2-layer ReLU net y = w2 · relu(W1 x) with squared loss on fixed data: layer rescaling
    /// (W1·α, w2/α) doesn't change the function.
    struct Relu {
        theta: Vec<f64>,
        layout: Vec<ParamSlot>,
        xs: Vec<[f64; 3]>,
        ys: Vec<f64>,
    }
    const H: usize = 4;
    impl Relu {
        fn new(alpha: f64) -> Relu {
            let mut rng = Rng::new(42);
            let mut theta: Vec<f64> = (0..H * 3 + H).map(|_| rng.normal()).collect();
            theta[..H * 3].iter_mut().for_each(|v| *v *= alpha);
            theta[H * 3..].iter_mut().for_each(|v| *v /= alpha);
            let xs = (0..20).map(|_| [rng.normal(), rng.normal(), rng.normal()]).collect();
            let ys = (0..20).map(|_| rng.normal()).collect();
            let layout = vec![
                ParamSlot { name: "l1.weight".into(), shape: vec![H, 3], offset: 0 },
                ParamSlot { name: "l2.weight".into(), shape: vec![1, H], offset: H * 3 },
            ];
            Relu { theta, layout, xs, ys }
        }
    }
    impl Objective for Relu {
        fn layout(&self) -> &[ParamSlot] {
            &self.layout
        }
        fn dim(&self) -> usize {
            self.theta.len()
        }
        fn center(&self) -> &[f64] {
            &self.theta
        }
        fn loss(&mut self, p: &[f64]) -> anyhow::Result<f64> {
            let mut l = 0.0;
            for (x, y) in self.xs.iter().zip(&self.ys) {
                let mut out = 0.0;
                for h in 0..H {
                    let a = dot(&p[h * 3..h * 3 + 3], x).max(0.0);
                    out += p[H * 3 + h] * a;
                }
                l += 0.5 * (out - y) * (out - y);
            }
            Ok(l / self.xs.len() as f64)
        }
        fn loss_grad(&mut self, p: &[f64], g: &mut [f64]) -> anyhow::Result<f64> {
            g.iter_mut().for_each(|v| *v = 0.0);
            let n = self.xs.len() as f64;
            for (x, y) in self.xs.iter().zip(&self.ys) {
                let pre: Vec<f64> = (0..H).map(|h| dot(&p[h * 3..h * 3 + 3], x)).collect();
                let out: f64 = (0..H).map(|h| p[H * 3 + h] * pre[h].max(0.0)).sum();
                let r = (out - y) / n;
                for h in 0..H {
                    g[H * 3 + h] += r * pre[h].max(0.0);
                    if pre[h] > 0.0 {
                        for k in 0..3 {
                            g[h * 3 + k] += r * p[H * 3 + h] * x[k];
                        }
                    }
                }
            }
            self.loss(p)
        }
    }

    #[test]
    fn filter_normalized_rise_is_scale_invariant_and_sam_is_not() {
        let mut a = Relu::new(1.0);
        let mut b = Relu::new(5.0);
        assert!((a.loss(&a.theta.clone()).unwrap() - b.loss(&b.theta.clone()).unwrap()).abs() < 1e-12);
        let ra = filter_normalized_loss_rise(&mut a, 0.2, 8, 3).unwrap();
        let rb = filter_normalized_loss_rise(&mut b, 0.2, 8, 3).unwrap();
        assert!(ra.value > 0.0);
        assert!((ra.value - rb.value).abs() < 1e-9 * ra.value.abs(), "{} vs {}", ra.value, rb.value);
        assert!(ra.std_error.unwrap() > 0.0);
        let sa = sam_sharpness(&mut a, 0.05, 0).unwrap();
        let sb = sam_sharpness(&mut b, 0.05, 0).unwrap();
        assert!(
            (sa.value - sb.value).abs() > 0.05 * sa.value.abs(),
            "SAM should change: {} {}",
            sa.value,
            sb.value
        );
    }

    #[test]
    fn asam_is_invariant_to_layer_rescaling() {
        let mut a = Relu::new(1.0);
        let mut b = Relu::new(5.0);
        let ma = asam_sharpness(&mut a, 0.5, 0.0, 3).unwrap();
        let mb = asam_sharpness(&mut b, 0.5, 0.0, 3).unwrap();
        assert!(ma.value > 0.0);
        assert!((ma.value - mb.value).abs() < 1e-9 * ma.value, "{} vs {}", ma.value, mb.value);
    }

    #[test]
    fn filter_normalization_matches_theta_filter_norms() {
        let a = Relu::new(2.0);
        let d = filter_normalized_direction(&a.layout, &a.theta, &mut Rng::new(1));
        for h in 0..H {
            let r = h * 3..h * 3 + 3;
            assert!((norm(&d[r.clone()]) - norm(&a.theta[r])).abs() < 1e-8);
        }
        // The 1×H output layer is one filter.
        assert!((norm(&d[H * 3..]) - norm(&a.theta[H * 3..])).abs() < 1e-8);
    }
}
