//! Plain f64 implementations of every kernel, written like the math: the oracle the SIMD kernels
//! are tested against, and the place to read what a kernel computes.

use crate::kernels::adam::AdamConfig;

/// One Adam/AdamW step in f64 (DESIGN.md 2.1), `t = step` (1-based).
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

/// One rotated Adam step in f64 (DESIGN.md 2.1, "Rotated Adam"): `rotate` maps a vector to
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
