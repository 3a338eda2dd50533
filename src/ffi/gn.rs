//! Gauss-Newton exports: diagonal accumulation (identity, linear and softmax layers, dense and
//! Kronecker bases) and the GN^p step.

use super::check::{self, buffer, check_buffers, product};
use super::{dp_status, guard};
use crate::error::{self, Error, ErrorKind, Result};
use crate::kernels::gn_diag::{
    gn_diag_linear, gn_diag_logistic, gn_diag_softmax, gn_diag_softmax_in_kronecker,
    gn_diag_weighted, gn_diag_weighted_in_basis, strided_len, GnEstimator,
};
use crate::kernels::precond::{gn_step, GnConfig, SophiaClip};
use faer::MatRef;

/// `estimator` value: the exact softmax GN diagonal, `s = p (1 - p)`.
pub const DP_GN_EXACT: u32 = 0;
/// `estimator` value: Sophia's sampled (Gauss-Newton-Bartlett) estimate, `s = (p - e_y)^2` with
/// `y` drawn from the model's softmax; unbiased for the exact diagonal.
pub const DP_GN_SAMPLED: u32 = 1;

/// GN^p step hyperparameters (see `dp_gn_config_default`):
/// `theta <- theta (1 - lr wd) - lr * m_hat * (max(h, 0) + damping)^power`, or with `sophia`
/// `theta <- theta (1 - lr wd) - lr * clip(m_hat / max(sophia_gamma h, sophia_eps), -1, 1)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_gn_config {
    /// Learning rate, finite, >= 0.
    pub lr: f64,
    /// The power p, finite; -1 and -0.5 are fast paths.
    pub power: f64,
    /// lambda, finite, >= 0; > 0 when power < 0 (so h + lambda > 0 everywhere).
    pub damping: f64,
    /// Momentum decay in [0, 1), used when exp_avg is non-NULL.
    pub beta1: f64,
    /// Divide the momentum by 1 - beta1^step.
    pub bias_correction: bool,
    /// Decoupled weight decay, finite, >= 0.
    pub weight_decay: f64,
    /// Use Sophia's clipped form (power and damping unused).
    pub sophia: bool,
    /// Sophia's gamma, finite, > 0 (read when sophia).
    pub sophia_gamma: f64,
    /// Sophia's eps, finite, > 0 and not 0 in float (read when sophia).
    pub sophia_eps: f64,
    /// Scan grad and h first; on NaN/Inf return DP_ERR_NON_FINITE and write nothing.
    pub check_finite: bool,
}

impl From<&dp_gn_config> for GnConfig {
    fn from(c: &dp_gn_config) -> Self {
        GnConfig {
            lr: c.lr,
            power: c.power,
            damping: c.damping,
            beta1: c.beta1,
            bias_correction: c.bias_correction,
            weight_decay: c.weight_decay,
            sophia: c.sophia.then_some(SophiaClip {
                gamma: c.sophia_gamma,
                eps: c.sophia_eps,
            }),
            check_finite: c.check_finite,
        }
    }
}

/// lr 1, power -1, damping 1e-4, no momentum (beta1 0), bias correction on, no weight decay,
/// Sophia off (gamma 0.01, eps 1e-15 when turned on), no finite check.
#[no_mangle]
pub extern "C" fn dp_gn_config_default() -> dp_gn_config {
    let d = GnConfig::default();
    let s = SophiaClip::default();
    dp_gn_config {
        lr: d.lr,
        power: d.power,
        damping: d.damping,
        beta1: d.beta1,
        bias_correction: d.bias_correction,
        weight_decay: d.weight_decay,
        sophia: false,
        sophia_gamma: s.gamma,
        sophia_eps: s.eps,
        check_finite: d.check_finite,
    }
}

fn estimator(value: u32) -> Result<GnEstimator> {
    match value {
        DP_GN_EXACT => Ok(GnEstimator::Exact),
        DP_GN_SAMPLED => Ok(GnEstimator::Sampled),
        other => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("estimator = {other}: expected DP_GN_EXACT (0) or DP_GN_SAMPLED (1)"),
        )),
    }
}

fn check_beta(beta: f32) -> Result<()> {
    error::check_half_open("beta", beta as f64, 0.0, 1.0)
}

fn check_samples(n_samples: usize) -> Result<()> {
    if n_samples == 0 {
        return Err(Error::length(
            "n_samples = 0: the batch average is undefined",
        ));
    }
    Ok(())
}

/// `h[j] <- beta h[j] + (1 - beta) (1/N) sum_n w[n] x[n][j]^2` (identity basis; DESIGN.md 2.2).
/// `x` holds `n_samples` rows of `dim` floats, `row_stride >= dim` apart (so it must be valid for
/// `(n_samples - 1) * row_stride + dim` floats); `weights` (`n_samples` floats) may be NULL for
/// all ones; `h` has `dim` floats. `beta` in [0, 1) (0 replaces `h` without reading it).
/// Bitwise identical results for any thread count. `h` must not overlap the inputs.
///
/// # Safety
/// Each non-NULL pointer must be valid for the lengths above for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_diag_weighted_f32(
    x: *const f32,
    n_samples: usize,
    dim: usize,
    row_stride: usize,
    weights: *const f32,
    beta: f32,
    h: *mut f32,
) -> dp_status {
    guard(|| {
        check::non_null("h", h, dim)?;
        let x_len = strided_len(n_samples, dim, row_stride)?;
        let mut buffers = vec![buffer("x", x, x_len, false), buffer("h", h, dim, true)];
        if !weights.is_null() {
            buffers.push(buffer("weights", weights, n_samples, false));
        }
        let regions = check_buffers(&buffers)?;
        check_samples(n_samples)?;
        check_beta(beta)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), sized, aligned and disjoint from the written `h`:
        // checked above; validity for these lengths is the C contract.
        let (x, h, weights) = unsafe {
            (
                check::slice(x, x_len),
                check::slice_mut(h, dim),
                (!weights.is_null()).then(|| check::slice(weights, n_samples)),
            )
        };
        gn_diag_weighted(x, n_samples, dim, row_stride, weights, beta, h)
    })
}

/// `dp_gn_diag_weighted_f32` with logistic-regression weights `w[n] = s (1 - s)`,
/// `s = sigmoid(logits[n])` (`logits`: `n_samples` floats, required).
///
/// # Safety
/// As `dp_gn_diag_weighted_f32`; `logits` valid for `n_samples` floats.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_diag_logistic_f32(
    x: *const f32,
    n_samples: usize,
    dim: usize,
    row_stride: usize,
    logits: *const f32,
    beta: f32,
    h: *mut f32,
) -> dp_status {
    guard(|| {
        let x_len = strided_len(n_samples, dim, row_stride)?;
        let buffers = [
            buffer("x", x, x_len, false),
            buffer("logits", logits, n_samples, false),
            buffer("h", h, dim, true),
        ];
        let regions = check_buffers(&buffers)?;
        check_samples(n_samples)?;
        check_beta(beta)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), sized, aligned and disjoint: checked above.
        let (x, logits, h) = unsafe {
            (
                check::slice(x, x_len),
                check::slice(logits, n_samples),
                check::slice_mut(h, dim),
            )
        };
        gn_diag_logistic(x, n_samples, dim, row_stride, logits, beta, h)
    })
}

/// Linear layer `z = W x` (W: `c_out x d_in`): `h <- beta h + (1 - beta) S^T (X o X) / N`
/// (`x`: `n_samples x d_in` row-major, `s`: `n_samples x c_out` row-major, `h`:
/// `c_out x d_in` row-major) and, when `h_bias` (`c_out` floats) is non-NULL,
/// `h_bias[c] <- beta h_bias[c] + (1 - beta) (1/N) sum_n s[n][c]`. `s = 1` gives MSE.
/// Outputs must not overlap each other or the inputs.
///
/// # Safety
/// Each non-NULL pointer must be valid for the lengths above for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_diag_linear_f32(
    x: *const f32,
    n_samples: usize,
    d_in: usize,
    s: *const f32,
    c_out: usize,
    beta: f32,
    h: *mut f32,
    h_bias: *mut f32,
) -> dp_status {
    guard(|| {
        let x_len = product("x", n_samples, d_in)?;
        let s_len = product("s", n_samples, c_out)?;
        let h_len = product("h", c_out, d_in)?;
        let mut buffers = vec![
            buffer("x", x, x_len, false),
            buffer("s", s, s_len, false),
            buffer("h", h, h_len, true),
        ];
        if !h_bias.is_null() {
            buffers.push(buffer("h_bias", h_bias, c_out, true));
        }
        let regions = check_buffers(&buffers)?;
        check_samples(n_samples)?;
        check_beta(beta)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), sized, aligned and disjoint: checked above.
        let (x, s, h, h_bias) = unsafe {
            (
                check::slice(x, x_len),
                check::slice(s, s_len),
                check::slice_mut(h, h_len),
                (!h_bias.is_null()).then(|| check::slice_mut(h_bias, c_out)),
            )
        };
        gn_diag_linear(x, n_samples, d_in, s, c_out, beta, h, h_bias)
    })
}

/// Softmax cross-entropy layer `z = W x + b` (W: `classes x d_in`): as `dp_gn_diag_linear_f32`
/// with `s` computed from `logits` (`n_samples x classes` row-major): `p (1 - p)` for
/// `DP_GN_EXACT`, or `(p - e_y)^2` with `y` drawn from `softmax(z_n)` using `seed` for
/// `DP_GN_SAMPLED` (the draws depend only on `seed` and the sample index). Any other
/// `estimator` is `DP_ERR_INVALID_ARGUMENT`. `h_bias` may be NULL.
///
/// # Safety
/// Each non-NULL pointer must be valid for its length (`x`: `n_samples * d_in`, `logits`:
/// `n_samples * classes`, `h`: `classes * d_in`, `h_bias`: `classes`) during the call.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_diag_softmax_f32(
    x: *const f32,
    logits: *const f32,
    n_samples: usize,
    d_in: usize,
    classes: usize,
    estimator: u32,
    seed: u64,
    beta: f32,
    h: *mut f32,
    h_bias: *mut f32,
) -> dp_status {
    guard(|| {
        let x_len = product("x", n_samples, d_in)?;
        let z_len = product("logits", n_samples, classes)?;
        let h_len = product("h", classes, d_in)?;
        let mut buffers = vec![
            buffer("x", x, x_len, false),
            buffer("logits", logits, z_len, false),
            buffer("h", h, h_len, true),
        ];
        if !h_bias.is_null() {
            buffers.push(buffer("h_bias", h_bias, classes, true));
        }
        let regions = check_buffers(&buffers)?;
        check_samples(n_samples)?;
        check_beta(beta)?;
        let estimator = self::estimator(estimator)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), sized, aligned and disjoint: checked above.
        let (x, logits, h, h_bias) = unsafe {
            (
                check::slice(x, x_len),
                check::slice(logits, z_len),
                check::slice_mut(h, h_len),
                (!h_bias.is_null()).then(|| check::slice_mut(h_bias, classes)),
            )
        };
        gn_diag_softmax(
            x, logits, n_samples, d_in, classes, estimator, seed, beta, h, h_bias,
        )
    })
}

/// The weighted GN diagonal in a dense basis U:
/// `h[a] <- beta h[a] + (1 - beta) (1/N) sum_n w[n] (x_n . U[:, a])^2`, the diagonal of
/// `U^T (X^T W X / N) U` without forming it. `u` is `dim x k`, row-major (`U[i, a] =
/// u[i * k + a]`, the layout of every matrix at this boundary, e.g. `dp_basis_get_matrix_f32`);
/// `h` has `k` floats; `x`, `row_stride`, `weights` (NULL: ones)
/// and `beta` as in `dp_gn_diag_weighted_f32`.
///
/// # Safety
/// Each non-NULL pointer must be valid for its length during the call (`u`: `dim * k`).
#[no_mangle]
pub unsafe extern "C" fn dp_gn_diag_weighted_in_basis_f32(
    x: *const f32,
    n_samples: usize,
    dim: usize,
    row_stride: usize,
    weights: *const f32,
    u: *const f32,
    k: usize,
    beta: f32,
    h: *mut f32,
) -> dp_status {
    guard(|| {
        check::non_null("h", h, k)?;
        let x_len = strided_len(n_samples, dim, row_stride)?;
        let u_len = product("u", dim, k)?;
        let mut buffers = vec![
            buffer("x", x, x_len, false),
            buffer("u", u, u_len, false),
            buffer("h", h, k, true),
        ];
        if !weights.is_null() {
            buffers.push(buffer("weights", weights, n_samples, false));
        }
        let regions = check_buffers(&buffers)?;
        check_samples(n_samples)?;
        check_beta(beta)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), sized, aligned and disjoint: checked above.
        let (x, u, h, weights) = unsafe {
            (
                check::slice(x, x_len),
                check::slice(u, u_len),
                check::slice_mut(h, k),
                (!weights.is_null()).then(|| check::slice(weights, n_samples)),
            )
        };
        let u = MatRef::from_row_major_slice(u, dim, k);
        gn_diag_weighted_in_basis(x, n_samples, dim, row_stride, weights, u, beta, h)
    })
}

/// The softmax layer's GN diagonal in the Kronecker basis `(Q_C, Q_X)` (DESIGN.md 2.2):
/// `h[a][b] <- beta h[a][b] + (1 - beta) (A^T B / N)[a][b]` with
/// `A_na = sum_c p_nc Q_C[c,a]^2 - (Q_C[:,a] . p_n)^2` (exact; sampled: `(Q_C[:,a] . (p_n -
/// e_y))^2`) and `B_nb = (Q_X[:,b] . x_n)^2`; `h_bias[a]` (may be NULL) gets `(1/N) sum_n A_na`.
/// `q_c` is `classes x classes` and `q_x` is `d_in x d_in`, both row-major (as
/// `dp_basis_get_matrix_f32` writes them); `h` is `classes x d_in` row-major; `x`, `logits`, `estimator`, `seed`, `beta` as in
/// `dp_gn_diag_softmax_f32`.
///
/// # Safety
/// Each non-NULL pointer must be valid for its length during the call.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_diag_softmax_in_kronecker_f32(
    x: *const f32,
    logits: *const f32,
    n_samples: usize,
    d_in: usize,
    classes: usize,
    estimator: u32,
    seed: u64,
    q_c: *const f32,
    q_x: *const f32,
    beta: f32,
    h: *mut f32,
    h_bias: *mut f32,
) -> dp_status {
    guard(|| {
        let x_len = product("x", n_samples, d_in)?;
        let z_len = product("logits", n_samples, classes)?;
        let h_len = product("h", classes, d_in)?;
        let qc_len = product("q_c", classes, classes)?;
        let qx_len = product("q_x", d_in, d_in)?;
        let mut buffers = vec![
            buffer("x", x, x_len, false),
            buffer("logits", logits, z_len, false),
            buffer("q_c", q_c, qc_len, false),
            buffer("q_x", q_x, qx_len, false),
            buffer("h", h, h_len, true),
        ];
        if !h_bias.is_null() {
            buffers.push(buffer("h_bias", h_bias, classes, true));
        }
        let regions = check_buffers(&buffers)?;
        check_samples(n_samples)?;
        check_beta(beta)?;
        let estimator = self::estimator(estimator)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), sized, aligned and disjoint: checked above.
        let (x, logits, q_c, q_x, h, h_bias) = unsafe {
            (
                check::slice(x, x_len),
                check::slice(logits, z_len),
                check::slice(q_c, qc_len),
                check::slice(q_x, qx_len),
                check::slice_mut(h, h_len),
                (!h_bias.is_null()).then(|| check::slice_mut(h_bias, classes)),
            )
        };
        gn_diag_softmax_in_kronecker(
            x,
            logits,
            n_samples,
            d_in,
            classes,
            estimator,
            seed,
            MatRef::from_row_major_slice(q_c, classes, classes),
            MatRef::from_row_major_slice(q_x, d_in, d_in),
            beta,
            h,
            h_bias,
        )
    })
}

/// One GN^p step over `len` floats (DESIGN.md 2.3; see `dp_gn_config`). `exp_avg` NULL means
/// no momentum (`m_hat = grad`); otherwise it is updated. `step` is 1-based. `h` entries below
/// 0 count as 0. Buffers must not overlap, except `grad` and `h` (both read). On any failure
/// nothing is written.
///
/// # Safety
/// Each non-NULL pointer must be valid for `len` floats during the call; `cfg` must point to a
/// `dp_gn_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_step_f32(
    cfg: *const dp_gn_config,
    step: u64,
    param: *mut f32,
    grad: *const f32,
    exp_avg: *mut f32,
    h: *const f32,
    len: usize,
) -> dp_status {
    guard(|| {
        check::required("cfg", cfg)?;
        // SAFETY: cfg is non-null (checked above) and points to a dp_gn_config (C contract).
        let config = GnConfig::from(unsafe { &*cfg });
        let mut buffers = vec![
            buffer("param", param, len, true),
            buffer("grad", grad, len, false),
            buffer("h", h, len, false),
        ];
        if !exp_avg.is_null() {
            buffers.push(buffer("exp_avg", exp_avg, len, true));
        }
        let regions = check_buffers(&buffers)?;
        config.validate()?;
        if step == 0 {
            return Err(Error::hyperparameter("step = 0: steps are counted from 1"));
        }
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), sized, aligned and disjoint: checked above.
        let (param, grad, h, exp_avg) = unsafe {
            (
                check::slice_mut(param, len),
                check::slice(grad, len),
                check::slice(h, len),
                (!exp_avg.is_null()).then(|| check::slice_mut(exp_avg, len)),
            )
        };
        gn_step(&config, step, param, grad, exp_avg, h)
    })
}
