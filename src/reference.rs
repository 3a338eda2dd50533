//! Plain f64 implementations of every kernel, written like the math: the oracle the SIMD kernels
//! are tested against, and the place to read what a kernel computes.

use crate::kernels::adam::AdamConfig;
use crate::kernels::gn::diag::{gn_sample_label, GnEstimator};
use crate::kernels::gn::step::GnConfig;

/// One Adam/AdamW step in f64, `t = step` (1-based).
/// `max_exp_avg_sq` is used only with amsgrad.
pub fn adam_step(
    cfg: &AdamConfig,
    step: u64,
    param: &mut [f64],
    grad: &[f64],
    exp_avg: &mut [f64],
    exp_avg_sq: &mut [f64],
    mut max_exp_avg_sq: Option<&mut [f64]>,
) {
    let t = step as f64;
    let bc1 = 1.0 - cfg.beta1.powf(t);
    let bc2 = 1.0 - cfg.beta2.powf(t);
    for i in 0..param.len() {
        let mut g = grad[i] * cfg.inv_grad_scale;
        if cfg.maximize {
            g = -g;
        }
        if cfg.decoupled_weight_decay {
            param[i] *= 1.0 - cfg.lr * cfg.weight_decay;
        } else {
            g += cfg.weight_decay * param[i];
        }
        exp_avg[i] = cfg.beta1 * exp_avg[i] + (1.0 - cfg.beta1) * g;
        exp_avg_sq[i] = cfg.beta2 * exp_avg_sq[i] + (1.0 - cfg.beta2) * g * g;
        let v = match max_exp_avg_sq.as_deref_mut() {
            Some(vmax) if cfg.amsgrad => {
                vmax[i] = vmax[i].max(exp_avg_sq[i]);
                vmax[i]
            }
            _ => exp_avg_sq[i],
        };
        param[i] -= (cfg.lr / bc1) * exp_avg[i] / (v.sqrt() / bc2.sqrt() + cfg.eps);
    }
}

/// `U^T g` (`transpose = true`) or `U g` in f64; `u` is `d x d` row-major.
pub fn rotate_dense(u: &[f64], g: &[f64], transpose: bool) -> Vec<f64> {
    let d = g.len();
    (0..d)
        .map(|i| {
            (0..d)
                .map(|k| if transpose { u[k * d + i] } else { u[i * d + k] } * g[k])
                .sum()
        })
        .collect()
}

/// `Q_L^T G Q_R` (`into = true`) or `Q_L G Q_R^T` in f64; all matrices row-major, `G` is
/// `m x n`, `Q_L` `m x m`, `Q_R` `n x n`.
pub fn rotate_kronecker(
    q_left: &[f64],
    q_right: &[f64],
    g: &[f64],
    m: usize,
    n: usize,
    into: bool,
) -> Vec<f64> {
    let ql = |i: usize, k: usize| {
        if into {
            q_left[k * m + i]
        } else {
            q_left[i * m + k]
        }
    };
    let qr = |k: usize, j: usize| {
        if into {
            q_right[k * n + j]
        } else {
            q_right[j * n + k]
        }
    };
    let mut left = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            left[i * n + j] = (0..m).map(|k| ql(i, k) * g[k * n + j]).sum();
        }
    }
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|k| left[i * n + k] * qr(k, j)).sum();
        }
    }
    out
}

/// One rotated Adam step in f64: `rotate` maps a vector to
/// rotated coordinates (`U^T x`) and `rotate_back` maps back (`U x`); `m`, `v`, `vmax` are in
/// rotated coordinates. Weight decay as in [`adam_step`] (L2 added before rotating).
#[allow(clippy::too_many_arguments)]
pub fn rotated_adam_step(
    cfg: &AdamConfig,
    step: u64,
    rotate: &dyn Fn(&[f64]) -> Vec<f64>,
    rotate_back: &dyn Fn(&[f64]) -> Vec<f64>,
    param: &mut [f64],
    grad: &[f64],
    exp_avg: &mut [f64],
    exp_avg_sq: &mut [f64],
    mut max_exp_avg_sq: Option<&mut [f64]>,
) {
    let t = step as f64;
    let bc1 = 1.0 - cfg.beta1.powf(t);
    let bc2 = 1.0 - cfg.beta2.powf(t);
    let sign = if cfg.maximize { -1.0 } else { 1.0 };
    let g: Vec<f64> = grad
        .iter()
        .zip(param.iter())
        .map(|(&g, &p)| {
            let g = sign * g * cfg.inv_grad_scale;
            if cfg.decoupled_weight_decay {
                g
            } else {
                g + cfg.weight_decay * p
            }
        })
        .collect();
    let g_rot = rotate(&g);
    let mut dir = vec![0.0; g.len()];
    for i in 0..g.len() {
        exp_avg[i] = cfg.beta1 * exp_avg[i] + (1.0 - cfg.beta1) * g_rot[i];
        exp_avg_sq[i] = cfg.beta2 * exp_avg_sq[i] + (1.0 - cfg.beta2) * g_rot[i] * g_rot[i];
        let v = match max_exp_avg_sq.as_deref_mut() {
            Some(vmax) if cfg.amsgrad => {
                vmax[i] = vmax[i].max(exp_avg_sq[i]);
                vmax[i]
            }
            _ => exp_avg_sq[i],
        };
        dir[i] = -(cfg.lr / bc1) * exp_avg[i] / (v.sqrt() / bc2.sqrt() + cfg.eps);
    }
    let update = rotate_back(&dir);
    for i in 0..g.len() {
        if cfg.decoupled_weight_decay {
            param[i] *= 1.0 - cfg.lr * cfg.weight_decay;
        }
        param[i] += update[i];
    }
}

/// `h <- beta h + (1 - beta) h_batch` (beta = 0: replace).
fn ema(h: &mut [f64], batch: &[f64], beta: f64) {
    for (h, &b) in h.iter_mut().zip(batch) {
        *h = if beta == 0.0 {
            b
        } else {
            beta * *h + (1.0 - beta) * b
        };
    }
}

/// Identity-basis GN diagonal: `h_j = (1/N) sum_n w_n x_nj^2`, EMA with `beta`.
pub fn gn_diag_weighted(
    x: &[f64],
    n_samples: usize,
    dim: usize,
    row_stride: usize,
    weights: Option<&[f64]>,
    beta: f64,
    h: &mut [f64],
) {
    let mut batch = vec![0.0; dim];
    for n in 0..n_samples {
        let w = weights.map_or(1.0, |w| w[n]);
        for j in 0..dim {
            let v = x[n * row_stride + j];
            batch[j] += w * v * v;
        }
    }
    batch.iter_mut().for_each(|b| *b /= n_samples as f64);
    ema(h, &batch, beta);
}

/// `s (1 - s)` with `s = sigmoid(z)`.
pub fn logistic_weight(z: f64) -> f64 {
    let s = 1.0 / (1.0 + (-z).exp());
    s * (1.0 - s)
}

/// Linear layer: `h_cj = (1/N) sum_n s_nc x_nj^2` (`h`: `c_out x d_in` row-major), bias
/// `h_c = (1/N) sum_n s_nc`, EMA with `beta`.
#[allow(clippy::too_many_arguments)]
pub fn gn_diag_linear(
    x: &[f64],
    n_samples: usize,
    d_in: usize,
    s: &[f64],
    c_out: usize,
    beta: f64,
    h: &mut [f64],
    h_bias: Option<&mut [f64]>,
) {
    let mut batch = vec![0.0; c_out * d_in];
    let mut bias = vec![0.0; c_out];
    for n in 0..n_samples {
        for c in 0..c_out {
            let snc = s[n * c_out + c];
            bias[c] += snc / n_samples as f64;
            for j in 0..d_in {
                let v = x[n * d_in + j];
                batch[c * d_in + j] += snc * v * v / n_samples as f64;
            }
        }
    }
    ema(h, &batch, beta);
    if let Some(hb) = h_bias {
        ema(hb, &bias, beta);
    }
}

/// `softmax(z)` of one sample (max subtracted).
pub fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let e: Vec<f64> = z.iter().map(|&v| (v - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

/// The softmax layer's output factors `S` (`n x classes`): `p (1 - p)`, or `(p - e_y)^2` with
/// the label the kernels draw ([`gn_sample_label`] on this `p`).
pub fn softmax_factors(
    logits: &[f64],
    n_samples: usize,
    classes: usize,
    estimator: GnEstimator,
    seed: u64,
) -> Vec<f64> {
    let mut s = Vec::with_capacity(n_samples * classes);
    for n in 0..n_samples {
        let p = softmax(&logits[n * classes..(n + 1) * classes]);
        match estimator {
            GnEstimator::Exact => {
                // 1 - p_c = sum of the other classes' p: at the largest p (the only one that can
                // exceed 1/2) summed directly, so it does not cancel when p is near 1.
                let top = (0..classes).fold(0, |m, c| if p[c] > p[m] { c } else { m });
                let rest: f64 = (0..classes).filter(|&c| c != top).map(|c| p[c]).sum();
                s.extend(p.iter().enumerate().map(|(c, &p)| {
                    let q = if c == top { rest } else { 1.0 - p };
                    p * q
                }));
            }
            GnEstimator::Sampled => {
                let y = gn_sample_label(&p, seed, n as u64);
                s.extend(p.iter().enumerate().map(|(c, &p)| {
                    let g = p - if c == y { 1.0 } else { 0.0 };
                    g * g
                }));
            }
        }
    }
    s
}

/// `diag(U^T H U)` with the full GN matrix `H = (1/N) sum_n w_n x_n x_n^T` formed explicitly
/// (`u`: `dim x k`, `u[(i, a)]` as `u[i * k + a]`), EMA with `beta`.
#[allow(clippy::too_many_arguments)]
pub fn gn_diag_weighted_in_basis(
    x: &[f64],
    n_samples: usize,
    dim: usize,
    row_stride: usize,
    weights: Option<&[f64]>,
    u: &[f64],
    k: usize,
    beta: f64,
    h: &mut [f64],
) {
    let mut full = vec![0.0; dim * dim];
    for n in 0..n_samples {
        let w = weights.map_or(1.0, |w| w[n]);
        let row = &x[n * row_stride..n * row_stride + dim];
        for i in 0..dim {
            for j in 0..dim {
                full[i * dim + j] += w * row[i] * row[j] / n_samples as f64;
            }
        }
    }
    let batch: Vec<f64> = (0..k)
        .map(|a| {
            let mut total = 0.0;
            for i in 0..dim {
                for j in 0..dim {
                    total += u[i * k + a] * full[i * dim + j] * u[j * k + a];
                }
            }
            total
        })
        .collect();
    ema(h, &batch, beta);
}

/// The softmax layer's GN diagonal in the Kronecker basis `Q_C (x) Q_X`, from the full GN
/// matrix over `vec(W)` (`classes * d_in` square, `Lambda_n = diag(p) - p p^T`, or
/// `g g^T` with `g = p - e_y` when sampled) formed explicitly: `h_ab = u_ab^T H u_ab` with
/// `u_ab[(c, j)] = Q_C[c, a] Q_X[j, b]`; bias `h_a = Q_C[:, a]^T (mean Lambda_n) Q_C[:, a]`.
/// `q_c` is `classes x kc`, `q_x` is `d_in x kx`, both row-major.
#[allow(clippy::too_many_arguments)]
pub fn gn_diag_softmax_in_kronecker(
    x: &[f64],
    logits: &[f64],
    n_samples: usize,
    d_in: usize,
    classes: usize,
    estimator: GnEstimator,
    seed: u64,
    q_c: &[f64],
    kc: usize,
    q_x: &[f64],
    kx: usize,
    beta: f64,
    h: &mut [f64],
    h_bias: Option<&mut [f64]>,
) {
    let m = classes * d_in;
    let mut full = vec![0.0; m * m];
    let mut lambda_mean = vec![0.0; classes * classes];
    for n in 0..n_samples {
        let p = softmax(&logits[n * classes..(n + 1) * classes]);
        let lambda: Vec<f64> = match estimator {
            GnEstimator::Exact => (0..classes * classes)
                .map(|i| {
                    let (c, d) = (i / classes, i % classes);
                    (if c == d { p[c] } else { 0.0 }) - p[c] * p[d]
                })
                .collect(),
            GnEstimator::Sampled => {
                let y = gn_sample_label(&p, seed, n as u64);
                let g: Vec<f64> = (0..classes)
                    .map(|c| p[c] - if c == y { 1.0 } else { 0.0 })
                    .collect();
                (0..classes * classes)
                    .map(|i| g[i / classes] * g[i % classes])
                    .collect()
            }
        };
        let xn = &x[n * d_in..(n + 1) * d_in];
        for c in 0..classes {
            for d in 0..classes {
                let l = lambda[c * classes + d] / n_samples as f64;
                lambda_mean[c * classes + d] += l;
                for i in 0..d_in {
                    for j in 0..d_in {
                        full[(c * d_in + i) * m + d * d_in + j] += l * xn[i] * xn[j];
                    }
                }
            }
        }
    }
    let mut batch = vec![0.0; kc * kx];
    for a in 0..kc {
        for b in 0..kx {
            let u: Vec<f64> = (0..m)
                .map(|r| q_c[(r / d_in) * kc + a] * q_x[(r % d_in) * kx + b])
                .collect();
            let mut total = 0.0;
            for r in 0..m {
                for s in 0..m {
                    total += u[r] * full[r * m + s] * u[s];
                }
            }
            batch[a * kx + b] = total;
        }
    }
    ema(h, &batch, beta);
    if let Some(hb) = h_bias {
        let bias: Vec<f64> = (0..kc)
            .map(|a| {
                let mut total = 0.0;
                for c in 0..classes {
                    for d in 0..classes {
                        total += q_c[c * kc + a] * lambda_mean[c * classes + d] * q_c[d * kc + a];
                    }
                }
                total
            })
            .collect();
        ema(hb, &bias, beta);
    }
}

/// One GN^p step in f64 (see `kernels::gn::step`). `exp_avg = None`: no
/// momentum.
pub fn gn_step(
    cfg: &GnConfig,
    step: u64,
    param: &mut [f64],
    grad: &[f64],
    mut exp_avg: Option<&mut [f64]>,
    h: &[f64],
) {
    let momentum = exp_avg.is_some();
    let bc1 = if momentum && cfg.bias_correction {
        1.0 - cfg.beta1.powf(step as f64)
    } else {
        1.0
    };
    for i in 0..param.len() {
        param[i] *= 1.0 - cfg.lr * cfg.weight_decay;
        let m_hat = match exp_avg.as_deref_mut() {
            Some(m) => {
                m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * grad[i];
                m[i] / bc1
            }
            None => grad[i],
        };
        let u = match cfg.sophia {
            Some(s) => (m_hat / (s.gamma * h[i]).max(s.eps)).clamp(-1.0, 1.0),
            None => m_hat * (h[i].max(0.0) + cfg.damping).powf(cfg.power),
        };
        param[i] -= cfg.lr * u;
    }
}
