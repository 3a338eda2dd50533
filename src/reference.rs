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
