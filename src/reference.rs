//! Plain f64 implementations of every kernel, written like the math: the oracle the SIMD kernels
//! are tested against, and the place to read what a kernel computes. Where a kernel's result is
//! specified to the bit (16-bit rounding, the stochastic-rounding bits, the 8-bit codec) the
//! reference is that bit-level specification.
//!
//! | family | references | tests |
//! | --- | --- | --- |
//! | adam | [`adam_step`], [`rotate_dense`], [`rotate_kronecker`], [`rotated_adam_step`] | `tests/adam.rs`, `tests/basis.rs` |
//! | adam_mixed | [`f32_to_half`], [`half_to_f32`], [`round_to_half`], [`stochastic_bits`], [`adam_step_master`], [`adam_step_bf16_state`], [`quant_code`], [`quant_code_value`], [`quantize_state`], [`dequantize_state`] | `tests/adam_mixed.rs` |
//! | grad_norm | [`grad_norm`] | `tests/adam.rs` |
//! | gn | [`gn_diag_weighted`], [`logistic_weight`], [`gn_diag_linear`], [`softmax`], [`softmax_factors`], [`gn_diag_weighted_in_basis`], [`gn_diag_softmax_in_kronecker`], [`gn_step`] | `tests/gn.rs` |
//! | basis | [`eigh_descending`], [`match_columns`], [`refresh_eigh`], [`refresh_power_qr`], [`geodesic_match`], [`log_orthogonal`], [`expm`], [`geodesic_at`] | `tests/basis.rs` |
//! | math | [`exp`], [`pow`] | `tests/math.rs` |

use crate::kernels::adam::AdamConfig;
use crate::kernels::adam_mixed::master::{HalfFormat, Rounding};
use crate::kernels::adam_mixed::state_8bit::{Moment, QUANT_BLOCK};
use crate::kernels::gn::diag::{gn_sample_label, GnEstimator};
use crate::kernels::gn::step::GnConfig;
use crate::kernels::grad_norm::GradNorm;

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

// ---------------------------------------------------------------------------------------------
// Stochastic-rounding bits, 16-bit formats (`kernels::convert`, `kernels::adam_mixed::master`)

/// SplitMix64's finalizer, applied twice to `seed ^ step * phi ^ stream * c` (the per-call key).
fn splitmix_key(seed: u64, step: u64, stream: u64) -> u64 {
    let mut z = seed
        ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
    for _ in 0..2 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

/// The 32 random bits stochastic rounding uses for element `index` of the stream
/// `(seed, step, stream)` (streams: 0 the bf16 state's `m` (low 16 bits) and `v` (high 16
/// bits), 2 the master step's `theta16` and [`crate::round_to_half`]):
///
/// ```text
/// key   = splitmix(splitmix(seed ^ step * 0x9e3779b97f4a7c15 ^ stream * 0xd1b54a32d192ed03))
/// k     = splitmix(splitmix(key ^ (index >> 32) * 0x9e3779b97f4a7c15 ^ 0x5eed * 0xd1b5...))
/// k32   = low 32 bits of k ^ (k >> 32)
/// bits  = lowbias32((index mod 2^32) * 0x9e3779b1 ^ k32)     (Wellons' hash, 32-bit wrapping)
/// ```
///
/// A function of the element only, so any split of the work over threads draws the same bits.
pub fn stochastic_bits(seed: u64, step: u64, stream: u64, index: u64) -> u32 {
    let key = splitmix_key(seed, step, stream);
    let k = splitmix_key(key, index >> 32, 0x5eed);
    let k32 = (k ^ (k >> 32)) as u32;
    let mut x = (index as u32).wrapping_mul(0x9e37_79b1) ^ k32;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// A binary floating-point format with gradual underflow: `mant` fraction bits, smallest normal
/// exponent `emin`, largest exponent `emax`; codes `e << mant | f` (sign above), `e = 0`
/// subnormal, `e` all ones infinity (`f = 0`) or NaN.
#[derive(Clone, Copy)]
struct Minifloat {
    mant: i32,
    emin: i32,
    emax: i32,
}

impl Minifloat {
    fn of(format: HalfFormat) -> Self {
        match format {
            HalfFormat::Bf16 => Minifloat {
                mant: 7,
                emin: -126,
                emax: 127,
            },
            HalfFormat::F16 => Minifloat {
                mant: 10,
                emin: -14,
                emax: 15,
            },
        }
    }

    /// The largest finite value, `(2 - 2^-mant) 2^emax`.
    fn max(self) -> f64 {
        (2.0 - 2f64.powi(-self.mant)) * 2f64.powi(self.emax)
    }

    /// The biased exponent field of infinity and NaN.
    fn special_exponent(self) -> u32 {
        (self.emax - self.emin + 2) as u32
    }

    /// The value of the magnitude code `q` (no sign bit); infinity for the special exponent.
    fn value(self, q: u32) -> f64 {
        let (e, f) = ((q >> self.mant) as i32, (q & ((1 << self.mant) - 1)) as f64);
        let scale = 2f64.powi(self.mant);
        if e as u32 == self.special_exponent() {
            if f == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        } else if e == 0 {
            f / scale * 2f64.powi(self.emin)
        } else {
            (1.0 + f / scale) * 2f64.powi(e - 1 + self.emin)
        }
    }

    /// The magnitude code of a value representable in the format (or above [`Self::max`]:
    /// infinity).
    fn code(self, value: f64) -> u32 {
        if value > self.max() {
            return self.special_exponent() << self.mant;
        }
        if value == 0.0 {
            return 0;
        }
        let e = exponent(value);
        if e < self.emin {
            (value / 2f64.powi(self.emin - self.mant)) as u32
        } else {
            let f = value / 2f64.powi(e - self.mant) - 2f64.powi(self.mant);
            (((e - self.emin + 1) as u32) << self.mant) | f as u32
        }
    }
}

/// `floor(log2 a)` of a positive finite f64 that is normal (every f32 is).
fn exponent(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// The f32 value of 16-bit bits of `format` (exact: every bf16 and f16 value is an f32):
/// `(-1)^s (1 + f / 2^mant) 2^(e - bias)`, subnormals `(-1)^s f 2^(emin - mant)`, infinities,
/// and NaN with the sign kept (the payload is not specified).
pub fn half_to_f32(format: HalfFormat, h: u16) -> f32 {
    let fmt = Minifloat::of(format);
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let magnitude = fmt.value((h & 0x7fff) as u32);
    (sign * magnitude) as f32
}

/// `x` rounded to 16-bit bits of `format`. `random = None`: IEEE round-to-nearest, ties to
/// even. `random = Some(r)`: stochastic, `|x|` rounds up with probability equal to the discarded
/// fraction of an ulp, decided by the low `k` bits of `r`:
///
/// ```text
/// ulp  = 2^(max(e, emin) - mant)                 e = floor(log2 |x|)
/// k    = log2(ulp / ulp_f32(|x|))                the bits of |x|'s significand dropped
/// |y|  = floor(|x| / ulp + (r mod 2^k) / 2^k) ulp
/// ```
///
/// (when more than 31 bits would be dropped, f16 below 2^-32, the result is zero). A magnitude
/// above the largest finite value after rounding gives infinity; the sign is kept (`-0.0`
/// included); NaN gives a quiet NaN with the sign kept (bf16: the top of the payload kept, as
/// `(x >> 16) | 0x40`; f16: `0x7e00`, the payload is not specified).
pub fn f32_to_half(format: HalfFormat, x: f32, random: Option<u32>) -> u16 {
    let fmt = Minifloat::of(format);
    let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
    if x.is_nan() {
        return match format {
            HalfFormat::Bf16 => (x.to_bits() >> 16) as u16 | 0x40,
            HalfFormat::F16 => sign | 0x7e00,
        };
    }
    let a = x.abs() as f64;
    if a == 0.0 || a.is_infinite() {
        return sign | fmt.code(a) as u16;
    }
    let e = exponent(a);
    let ulp = 2f64.powi(e.max(fmt.emin) - fmt.mant);
    let q = a / ulp; // exact: a power-of-two scaling
    let rounded = match random {
        None => q.round_ties_even(),
        Some(r) => {
            let ulp_f32 = 2f64.powi(e.max(-126) - 23);
            let k = exponent(ulp / ulp_f32);
            if k > 31 {
                0.0
            } else {
                // Exact in f64: q has at most 24 significant bits and k <= 31 fraction bits.
                let u = (r as u64 % (1u64 << k)) as f64 / 2f64.powi(k);
                (q + u).floor()
            }
        }
    };
    sign | fmt.code(rounded * ulp) as u16
}

/// [`crate::round_to_half`] element by element: element `i` rounded by [`f32_to_half`] with
/// [`stochastic_bits`]`(seed, step, 2, i)` for stochastic rounding.
pub fn round_to_half(
    format: HalfFormat,
    values: &[f32],
    rounding: Rounding,
    step: u64,
) -> Vec<u16> {
    values
        .iter()
        .enumerate()
        .map(|(i, &x)| f32_to_half(format, x, random_for(rounding, step, 2, i)))
        .collect()
}

/// The stochastic-rounding bits of element `i` of `stream` (`None` for nearest-even).
fn random_for(rounding: Rounding, step: u64, stream: u64, i: usize) -> Option<u32> {
    match rounding {
        Rounding::NearestEven => None,
        Rounding::Stochastic { seed } => Some(stochastic_bits(seed, step, stream, i as u64)),
    }
}

// ---------------------------------------------------------------------------------------------
// Mixed-precision and bf16-state Adam (`kernels::adam_mixed::{master, bf16_state}`)

/// One master-weight step: `g = widen(g16)` (exact), the Adam step of [`adam_step`] on the f64
/// master `theta` and f64 `m`, `v`, then `theta16 = round(f32(theta))` by [`f32_to_half`]
/// (stochastic bits: [`stochastic_bits`]`(seed, step, 2, i)`). The kernel rounds its own f32
/// `theta`, so its `theta16` is this rounding of the kernel's `theta`, not of this one's.
#[allow(clippy::too_many_arguments)]
pub fn adam_step_master(
    cfg: &AdamConfig,
    step: u64,
    format: HalfFormat,
    rounding: Rounding,
    master: &mut [f64],
    param: &mut [u16],
    grad: &[u16],
    exp_avg: &mut [f64],
    exp_avg_sq: &mut [f64],
) {
    let g: Vec<f64> = grad
        .iter()
        .map(|&h| half_to_f32(format, h) as f64)
        .collect();
    adam_step(cfg, step, master, &g, exp_avg, exp_avg_sq, None);
    for (i, (p16, &theta)) in param.iter_mut().zip(master.iter()).enumerate() {
        *p16 = f32_to_half(format, theta as f32, random_for(rounding, step, 2, i));
    }
}

/// One bf16-state step: `m`, `v` widened from bf16 (exact), the Adam step of [`adam_step`] in
/// f64, then `m`, `v` rounded to bf16 stochastically by [`f32_to_half`] from f32 (bits:
/// `r = `[`stochastic_bits`]`(seed, step, 0, i)`: `r` for `m`, `r >> 16` for `v`; the rounding
/// reads the low 16 bits). The kernel rounds its
/// own f32 `m`, `v` (those of the f32 step), so its codes are this rounding of those.
#[allow(clippy::too_many_arguments)]
pub fn adam_step_bf16_state(
    cfg: &AdamConfig,
    step: u64,
    seed: u64,
    param: &mut [f64],
    grad: &[f64],
    exp_avg: &mut [u16],
    exp_avg_sq: &mut [u16],
) {
    let widen = |h: &[u16]| -> Vec<f64> {
        h.iter()
            .map(|&h| half_to_f32(HalfFormat::Bf16, h) as f64)
            .collect()
    };
    let (mut m, mut v) = (widen(exp_avg), widen(exp_avg_sq));
    adam_step(cfg, step, param, grad, &mut m, &mut v, None);
    let rounding = Rounding::Stochastic { seed };
    for i in 0..param.len() {
        exp_avg[i] = f32_to_half(
            HalfFormat::Bf16,
            m[i] as f32,
            random_for(rounding, step, 0, i),
        );
        exp_avg_sq[i] = f32_to_half(
            HalfFormat::Bf16,
            v[i] as f32,
            random_for(rounding, step, 0, i).map(|r| r >> 16),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8-bit block-quantized state (`kernels::adam_mixed::state_8bit`)

/// The minifloat of a moment's codes: `(sign bit, smallest normal exponent)`; 3 fraction bits.
fn quant_format(moment: Moment) -> (bool, i32) {
    match moment {
        Moment::ExpAvg => (true, -14),
        Moment::ExpAvgSq => (false, -30),
    }
}

/// The value of an 8-bit state code before scaling, exactly:
///
/// ```text
/// exp_avg:    code = s << 7 | q, value = (-1)^s val(q)
/// exp_avg_sq: code = q,          value = val(q)
/// val(e << 3 | f) = f / 8 * 2^emin               e = 0 (subnormal, never written)
///                 = (1 + f / 8) * 2^(e - 1 + emin)  otherwise;   emin = -14 (m), -30 (v)
/// ```
pub fn quant_code_value(moment: Moment, code: u8) -> f64 {
    let (signed, emin) = quant_format(moment);
    let (sign, q) = if signed {
        (if code & 0x80 != 0 { -1.0 } else { 1.0 }, code & 0x7f)
    } else {
        (1.0, code)
    };
    let (e, f) = ((q >> 3) as i32, (q & 7) as f64);
    let magnitude = if e == 0 {
        f / 8.0 * 2f64.powi(emin)
    } else {
        (1.0 + f / 8.0) * 2f64.powi(e - 1 + emin)
    };
    sign * magnitude
}

/// The code of a scaled value `y = x / scale` (`|y| <= 1` up to one f32 rounding): `|y|`
/// rounded half up to 3 fraction bits in its own binade (f32 subnormals count as zero), then
/// the code of that value; below the smallest normal code (`2^emin`) a signed zero for `m`
/// (`0x80` for a negative `y`, `-0.0` included) and, for a positive `v`, the smallest normal
/// code (8), so no subnormal code is ever written.
pub fn quant_code(moment: Moment, y: f32) -> u8 {
    let (signed, emin) = quant_format(moment);
    let sign = if signed && y.is_sign_negative() {
        0x80
    } else {
        0
    };
    let a = y.abs();
    let rounded = if a < f32::MIN_POSITIVE {
        0.0
    } else {
        let ulp = 2f64.powi(exponent(a as f64) - 3);
        (a as f64 / ulp + 0.5).floor() * ulp
    };
    if rounded < 2f64.powi(emin) {
        return if !signed && a > 0.0 { 8 } else { sign };
    }
    let magnitudes = if signed { 8u8..=127 } else { 8u8..=255 };
    let q = magnitudes
        .into_iter()
        .find(|&q| quant_code_value(moment, q) == rounded)
        .expect("|y| <= 1.875 has a code");
    q | sign
}

/// The 8-bit encoding of one moment: per block of [`QUANT_BLOCK`] elements,
/// `scale = max |x|` (f32), `inv = 1 / scale` rounded to f32 (at most `f32::MAX`; 0 for an
/// all-zero block), `y = x * inv` rounded to f32, `code = `[`quant_code`]`(y)`. Returns
/// `(codes, scales)`; `values` finite (and `>= 0` for `ExpAvgSq`).
pub fn quantize_state(moment: Moment, values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::new();
    for block in values.chunks(QUANT_BLOCK) {
        let scale = block.iter().fold(0f32, |s, &x| s.max(x.abs()));
        let inv = if scale > 0.0 {
            (1.0 / scale).min(f32::MAX)
        } else {
            0.0
        };
        scales.push(scale);
        codes.extend(block.iter().map(|&x| quant_code(moment, x * inv)));
    }
    (codes, scales)
}

/// The 8-bit decoding: element `i` is [`quant_code_value`]`(code_i) * scales[i / 256]`, the
/// exact product rounded once to f32.
pub fn dequantize_state(moment: Moment, codes: &[u8], scales: &[f32]) -> Vec<f32> {
    codes
        .iter()
        .enumerate()
        .map(|(i, &c)| (quant_code_value(moment, c) * scales[i / QUANT_BLOCK] as f64) as f32)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Global gradient norm (`kernels::grad_norm`)

/// The global L2 norm of the unscaled gradients in f64: with `s = inv_grad_scale` rounded to
/// f32 and `x_i = g_i s` rounded to f32 (the kernel's inputs),
/// `norm = sqrt(sum_tensors sum_i x_i^2)` summed in f64, `found_inf` = some `x_i` is NaN or
/// infinite (the norm is then not finite either).
pub fn grad_norm(grads: &[&[f32]], inv_grad_scale: f64) -> GradNorm {
    let s = inv_grad_scale as f32;
    let mut sum = 0.0f64;
    let mut found_inf = false;
    for &g in grads {
        for &g in g {
            let x = g * s;
            found_inf |= !x.is_finite();
            sum += x as f64 * x as f64;
        }
    }
    GradNorm {
        norm: sum.sqrt(),
        found_inf,
    }
}

// ---------------------------------------------------------------------------------------------
// Basis refresh and geodesics (`basis::refresh`, `basis::geodesic`). Matrices are `d x d`,
// row-major f64 (`a[i * d + j]`).

/// `A B` of `d x d` row-major matrices.
pub fn mat_mul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    // (A B)_ij = row i of A . column j of B (row j of B^T).
    let bt = transpose(b, d);
    (0..d * d)
        .map(|k| {
            let (row, col) = (&a[k / d * d..][..d], &bt[k % d * d..][..d]);
            row.iter().zip(col).map(|(x, y)| x * y).sum()
        })
        .collect()
}

/// `A^T`.
pub fn transpose(a: &[f64], d: usize) -> Vec<f64> {
    (0..d * d).map(|k| a[(k % d) * d + k / d]).collect()
}

fn identity(d: usize) -> Vec<f64> {
    (0..d * d)
        .map(|k| if k / d == k % d { 1.0 } else { 0.0 })
        .collect()
}

/// Frobenius norm of `A - B`.
fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Eigendecomposition of a symmetric matrix by cyclic Jacobi rotations, in f64: `(U, lambda)`
/// with `A = U diag(lambda) U^T`, `lambda` descending and `U`'s column `j` its eigenvector.
/// Each rotation zeroes one off-diagonal entry; sweeps repeat until the off-diagonal part is
/// below `1e-15 ||A||`.
pub fn eigh_descending(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = identity(d);
    let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..d * d)
            .filter(|k| k / d != k % d)
            .map(|k| a[k] * a[k])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * norm {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                if a[p * d + q] == 0.0 {
                    continue;
                }
                // The rotation (c, s) with tan(2 phi) = 2 a_pq / (a_qq - a_pp).
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * a[p * d + q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    // A <- J^T A J, V <- V J, J the rotation in the (p, q) plane.
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| a[j * d + j].total_cmp(&a[i * d + i]));
    let u = (0..d * d).map(|k| v[(k / d) * d + order[k % d]]).collect();
    (u, order.iter().map(|&i| a[i * d + i]).collect())
}

/// The refresh's column matching: `P = Q_old^T Q_new`; for each new column `j` in order, the
/// unused old column `i` with the largest `|P_ij|` (`permutation[j] = i`), and new column `j`
/// negated when `P_ij < 0`.
pub fn match_columns(old: &[f64], new: &mut [f64], d: usize) -> Vec<usize> {
    let p = mat_mul(&transpose(old, d), new, d);
    let mut used = vec![false; d];
    let mut permutation = Vec::with_capacity(d);
    for j in 0..d {
        let i = (0..d)
            .filter(|&i| !used[i])
            .fold(None, |best: Option<usize>, i| match best {
                Some(b) if p[b * d + j].abs() >= p[i * d + j].abs() => Some(b),
                _ => Some(i),
            })
            .expect("an unused column");
        used[i] = true;
        permutation.push(i);
        if p[i * d + j] < 0.0 {
            (0..d).for_each(|k| new[k * d + j] = -new[k * d + j]);
        }
    }
    permutation
}

/// The `Eigh` refresh of basis `old` from the symmetric statistic `a`: the eigenvectors of `a`
/// (eigenvalues descending), matched to `old` by [`match_columns`]. Returns
/// `(Q_new, eigenvalues, permutation)`.
pub fn refresh_eigh(old: &[f64], a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let (mut q, lambda) = eigh_descending(a, d);
    let permutation = match_columns(old, &mut q, d);
    (q, lambda, permutation)
}

/// The `PowerQr` refresh (SOAP's): `est_j = q_j^T A q_j` for the old columns, the columns
/// ordered by `est` descending (`permutation`), one power step `Y = A Q_sorted`, and
/// `Q_new = qr(Y).Q` with `R`'s diagonal non-negative, here by Gram-Schmidt (twice, for
/// orthogonality in f64): `q_j = normalize(y_j - sum_{k<j} (q_k . y_j) q_k)`. Returns
/// `(Q_new, est sorted, permutation)`.
pub fn refresh_power_qr(old: &[f64], a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let col = |m: &[f64], j: usize| -> Vec<f64> { (0..d).map(|k| m[k * d + j]).collect() };
    let dot = |x: &[f64], y: &[f64]| -> f64 { x.iter().zip(y).map(|(a, b)| a * b).sum() };
    let aq = mat_mul(a, old, d);
    let est: Vec<f64> = (0..d).map(|j| dot(&col(old, j), &col(&aq, j))).collect();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| est[j].total_cmp(&est[i]));
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(d);
    for &o in &order {
        let mut y = col(&aq, o);
        for _ in 0..2 {
            for qk in &q {
                let r = dot(qk, &y);
                y.iter_mut().zip(qk).for_each(|(y, &qk)| *y -= r * qk);
            }
        }
        let norm = dot(&y, &y).sqrt();
        q.push(y.iter().map(|y| y / norm).collect());
    }
    let q_new = (0..d * d).map(|k| q[k % d][k / d]).collect();
    (q_new, order.iter().map(|&i| est[i]).collect(), order)
}

/// `A^-1` by Gauss-Jordan elimination with partial pivoting.
fn inverse(a: &[f64], d: usize) -> Vec<f64> {
    let mut a = a.to_vec();
    let mut inv = identity(d);
    for c in 0..d {
        let p = (c..d)
            .max_by(|&i, &j| a[i * d + c].abs().total_cmp(&a[j * d + c].abs()))
            .unwrap_or(c);
        for k in 0..d {
            a.swap(c * d + k, p * d + k);
            inv.swap(c * d + k, p * d + k);
        }
        let pivot = a[c * d + c];
        for k in 0..d {
            a[c * d + k] /= pivot;
            inv[c * d + k] /= pivot;
        }
        for i in (0..d).filter(|&i| i != c) {
            let f = a[i * d + c];
            for k in 0..d {
                a[i * d + k] -= f * a[c * d + k];
                inv[i * d + k] -= f * inv[c * d + k];
            }
        }
    }
    inv
}

/// The orthogonal square root of an orthogonal `R` without eigenvalue -1: the orthogonal
/// polar factor of `I + R` (`I + R = exp(L/2) 2 cosh(L/2)` for `R = exp(L)`).
fn orthogonal_sqrt(r: &[f64], d: usize) -> Vec<f64> {
    let sum: Vec<f64> = r.iter().zip(identity(d)).map(|(r, i)| r + i).collect();
    orthogonal_polar(&sum, d)
}

/// The orthogonal polar factor of a nonsingular `A` (the nearest orthogonal matrix), by
/// Newton's iteration `Y <- (Y + Y^-T) / 2` from `Y = A`.
fn orthogonal_polar(a: &[f64], d: usize) -> Vec<f64> {
    let mut y = a.to_vec();
    for _ in 0..100 {
        let inv_t = transpose(&inverse(&y, d), d);
        let next: Vec<f64> = y.iter().zip(&inv_t).map(|(a, b)| (a + b) / 2.0).collect();
        let change = distance(&next, &y);
        y = next;
        if change <= 1e-14 * (d as f64).sqrt() {
            break;
        }
    }
    y
}

/// The principal logarithm of an orthogonal `R` (`det R = 1`, no eigenvalue -1), a skew
/// matrix, by inverse scaling and squaring: square roots (`sqrt(R)` is the orthogonal polar
/// factor of `I + R`) until `R^(1/2^k)` is within 0.25 of `I` (Frobenius norm), then
/// `log(I + E) = sum_n (-1)^(n+1) E^n / n` (40 terms: the rest is below
/// `0.25^41 / 41 < 1e-25`), times `2^k`.
pub fn log_orthogonal(r: &[f64], d: usize) -> Vec<f64> {
    let mut x = r.to_vec();
    let mut k = 0;
    while distance(&x, &identity(d)) > 0.25 {
        x = orthogonal_sqrt(&x, d);
        k += 1;
    }
    let e: Vec<f64> = x.iter().zip(identity(d)).map(|(x, i)| x - i).collect();
    let mut power = e.clone();
    let mut log = vec![0.0; d * d];
    for n in 1..=40 {
        let sign = if n % 2 == 1 { 1.0 } else { -1.0 };
        log.iter_mut()
            .zip(&power)
            .for_each(|(l, p)| *l += sign * p / n as f64);
        power = mat_mul(&power, &e, d);
    }
    let scale = 2f64.powi(k);
    // Skew to rounding; made exactly skew.
    (0..d * d)
        .map(|i| scale * (log[i] - log[(i % d) * d + i / d]) / 2.0)
        .collect()
}

/// `exp(A)` by scaling and squaring: `exp(A / 2^s)` by its Taylor series (30 terms), squared
/// `s` times, with `||A||_F / 2^s <= 0.5`.
pub fn expm(a: &[f64], d: usize) -> Vec<f64> {
    let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut s = 0;
    while norm / 2f64.powi(s) > 0.5 {
        s += 1;
    }
    let m: Vec<f64> = a.iter().map(|x| x / 2f64.powi(s)).collect();
    let mut term = identity(d);
    let mut sum = identity(d);
    for n in 1..=30 {
        term = mat_mul(&term, &m, d)
            .into_iter()
            .map(|x| x / n as f64)
            .collect();
        sum.iter_mut().zip(&term).for_each(|(s, t)| *s += t);
    }
    for _ in 0..s {
        sum = mat_mul(&sum, &sum, d);
    }
    sum
}

/// The geodesic's column matching of `U1` to `U0`, `R = U0^T U1`: the pairs `(i, j)` taken
/// greedily by decreasing `|R_ij|` (column `i` of the matched end is `U1`'s column
/// `permutation[i] = j`), signs making the matched `R_ii >= 0`, and, if the matched `R` has
/// `det < 0`, the sign of the column with the smallest `R_ii` flipped. Returns
/// `(matched U1, permutation, signs)`.
pub fn geodesic_match(u0: &[f64], u1: &[f64], d: usize) -> (Vec<f64>, Vec<usize>, Vec<f64>) {
    let r = mat_mul(&transpose(u0, d), u1, d);
    let mut pairs: Vec<(usize, usize)> = (0..d).flat_map(|i| (0..d).map(move |j| (i, j))).collect();
    pairs.sort_by(|&(a, b), &(c, e)| r[c * d + e].abs().total_cmp(&r[a * d + b].abs()));
    let mut permutation = vec![usize::MAX; d];
    let mut taken = vec![false; d];
    for (i, j) in pairs {
        if permutation[i] == usize::MAX && !taken[j] {
            permutation[i] = j;
            taken[j] = true;
        }
    }
    let mut signs: Vec<f64> = (0..d)
        .map(|i| {
            if r[i * d + permutation[i]] < 0.0 {
                -1.0
            } else {
                1.0
            }
        })
        .collect();
    let matched_r = |signs: &[f64]| -> Vec<f64> {
        (0..d * d)
            .map(|k| r[(k / d) * d + permutation[k % d]] * signs[k % d])
            .collect()
    };
    if d > 0 && determinant(&matched_r(&signs), d) < 0.0 {
        let rm = matched_r(&signs);
        let worst = (0..d)
            .min_by(|&x, &y| rm[x * d + x].total_cmp(&rm[y * d + y]))
            .unwrap_or(0);
        signs[worst] = -signs[worst];
    }
    let matched = (0..d * d)
        .map(|k| u1[(k / d) * d + permutation[k % d]] * signs[k % d])
        .collect();
    (matched, permutation, signs)
}

/// `det A` by Gaussian elimination with partial pivoting.
fn determinant(a: &[f64], d: usize) -> f64 {
    let mut a = a.to_vec();
    let mut det = 1.0;
    for c in 0..d {
        let p = (c..d)
            .max_by(|&i, &j| a[i * d + c].abs().total_cmp(&a[j * d + c].abs()))
            .unwrap_or(c);
        if p != c {
            for k in 0..d {
                a.swap(c * d + k, p * d + k);
            }
            det = -det;
        }
        let pivot = a[c * d + c];
        det *= pivot;
        if pivot == 0.0 {
            return 0.0;
        }
        for i in c + 1..d {
            let f = a[i * d + c] / pivot;
            for k in c..d {
                a[i * d + k] -= f * a[c * d + k];
            }
        }
    }
    det
}

/// The geodesic `U(t) = U0 expm(t logm(U0^T U1))` on the orthogonal group, for `U1` already
/// matched to `U0` ([`geodesic_match`]) so that `U0^T U1` has `det = 1` and (generically) no
/// eigenvalue -1. Both endpoints are first replaced by their orthogonal polar factors (the
/// nearest orthogonal matrices: inputs rounded from f32 are orthonormal only to ~1e-7).
/// `U(0) = U0`, `U(1) = U1`. One matrix per entry of `ts`.
pub fn geodesic_at(u0: &[f64], u1: &[f64], d: usize, ts: &[f64]) -> Vec<Vec<f64>> {
    let (u0, u1) = (orthogonal_polar(u0, d), orthogonal_polar(u1, d));
    let l = log_orthogonal(&mat_mul(&transpose(&u0, d), &u1, d), d);
    ts.iter()
        .map(|&t| {
            let tl: Vec<f64> = l.iter().map(|x| t * x).collect();
            mat_mul(&u0, &expm(&tl, d), d)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Vector exp and power (`kernels::math`)

/// `e^x` in f64 (`kernels::math::exp_with` is within 2 f32 ulp of it).
pub fn exp(x: f64) -> f64 {
    x.exp()
}

/// `x^p` in f64 as the GN step uses it: `-0` taken as `+0` (`0^p` is `+inf` for `p < 0`, 1 for
/// `p = 0`), NaN for NaN and for negative `x`.
pub fn pow(x: f64, p: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        f64::NAN
    } else {
        x.abs().powf(p)
    }
}
