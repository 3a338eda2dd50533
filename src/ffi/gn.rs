//! Gauss-Newton exports: the full GN matrix, the GN diagonal of dense inputs and of linear /
//! softmax layers (identity, dense and Kronecker bases), and the GN^p step (plain and in a
//! basis).

use super::basis::{dp_basis, invalid, try_zeros, with_basis};
use super::check::{self, buffer, check_buffers, exact_len, flag, min_len, Versioned};
use super::{dp_status, guard};
use crate::basis::refresh::accumulate_gn_matrix;
use crate::dispatch::{Isa, Par};
use crate::error::{self, Error, Result};
use crate::kernels::adam::rotated::rotated_workspace_len;
use crate::kernels::gn::diag::{
    gn_diag_linear, gn_diag_logistic, gn_diag_softmax, gn_diag_softmax_in_kronecker,
    gn_diag_weighted, gn_diag_weighted_in_basis, logistic_weight, GnEstimator,
};
use crate::kernels::gn::samples::{strided_len, Samples};
use crate::kernels::gn::step::{gn_step, GnConfig, SophiaClip};
use faer::{MatMut, MatRef};

/// `dp_gn_diag_dense_f32` `weighting`: `weights[n]` given (NULL with `weights_len` 0: all
/// ones).
pub const DP_GN_WEIGHTS_GIVEN: u32 = 0;
/// `dp_gn_diag_dense_f32` `weighting`: `weights` holds logits `z_n`; `w_n = s (1 - s)`,
/// `s = sigmoid(z_n)` (logistic regression).
pub const DP_GN_WEIGHTS_LOGISTIC: u32 = 1;

/// `dp_gn_diag_linear_f32` `output`: `s` holds the output factors `s_nc` (1 for MSE).
pub const DP_GN_OUTPUT_FACTORS: u32 = 0;
/// `dp_gn_diag_linear_f32` `output`: `s` holds softmax logits; the exact diagonal
/// `s_nc = p (1 - p)` (in a Kronecker basis the full softmax Hessian).
pub const DP_GN_SOFTMAX_EXACT: u32 = 1;
/// `dp_gn_diag_linear_f32` `output`: `s` holds softmax logits; Sophia's sampled estimate
/// `(p - e_y)^2` with `y` drawn from the model's softmax using `seed` (unbiased for the exact
/// diagonal).
pub const DP_GN_SOFTMAX_SAMPLED: u32 = 2;

/// GN^p step hyperparameters (fill with `dp_gn_config_default`, then change fields):
/// `theta <- theta (1 - lr wd) - lr * m_hat * (max(h, 0) + damping)^power`, or with `sophia`
/// `theta <- theta (1 - lr wd) - lr * clip(m_hat / max(sophia_gamma h, sophia_eps), -1, 1)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_gn_config {
    /// `sizeof(dp_gn_config)`; set by `dp_gn_config_default()`.
    pub struct_size: usize,
    /// Learning rate, finite, >= 0.
    pub lr: f64,
    /// The power p, in [-4, 4]; -1 and -0.5 are fast paths.
    pub power: f64,
    /// lambda, finite, >= 0; > 0 when power < 0, and `damping^power` finite in float.
    pub damping: f64,
    /// Momentum decay in [0, 1), used when exp_avg is non-NULL.
    pub beta1: f64,
    /// Decoupled weight decay, finite, >= 0.
    pub weight_decay: f64,
    /// Sophia's gamma, finite, > 0 (read when sophia).
    pub sophia_gamma: f64,
    /// Sophia's eps, finite, > 0 and not 0 in float (read when sophia).
    pub sophia_eps: f64,
    /// 1: divide the momentum by 1 - beta1^step; 0: do not.
    pub bias_correction: u32,
    /// 1: Sophia's clipped form (power and damping unused); 0: the power.
    pub sophia: u32,
    /// 1: scan grad and h first; on NaN/Inf return DP_ERR_NON_FINITE and write nothing.
    pub check_finite: u32,
    /// Must be 0.
    pub reserved: u32,
}

impl dp_gn_config {
    /// The library's configuration, with the flags checked (0 or 1) and `reserved` 0.
    fn to_config(self) -> Result<GnConfig> {
        if self.reserved != 0 {
            return Err(invalid(format!(
                "cfg->reserved = {}: must be 0",
                self.reserved
            )));
        }
        Ok(GnConfig {
            lr: self.lr,
            power: self.power,
            damping: self.damping,
            beta1: self.beta1,
            bias_correction: flag("cfg->bias_correction", self.bias_correction)?,
            weight_decay: self.weight_decay,
            sophia: flag("cfg->sophia", self.sophia)?.then_some(SophiaClip {
                gamma: self.sophia_gamma,
                eps: self.sophia_eps,
            }),
            check_finite: flag("cfg->check_finite", self.check_finite)?,
        })
    }
}

impl Versioned for dp_gn_config {
    const NAME: &'static str = "dp_gn_config";
    const DEFAULT_FN: &'static str = "dp_gn_config_default";
    fn struct_size(&self) -> usize {
        self.struct_size
    }
}

/// lr 1, power -1, damping 1e-4, no momentum (beta1 0), bias correction on, no weight decay,
/// Sophia off (gamma 0.01, eps 1e-15 when turned on), no finite check; `struct_size` set.
///
/// Thread safety: may run concurrently with any call.
#[no_mangle]
pub extern "C" fn dp_gn_config_default() -> dp_gn_config {
    let d = GnConfig::default();
    let s = SophiaClip::default();
    dp_gn_config {
        struct_size: size_of::<dp_gn_config>(),
        lr: d.lr,
        power: d.power,
        damping: d.damping,
        beta1: d.beta1,
        weight_decay: d.weight_decay,
        sophia_gamma: s.gamma,
        sophia_eps: s.eps,
        bias_correction: d.bias_correction.into(),
        sophia: 0,
        check_finite: d.check_finite.into(),
        reserved: 0,
    }
}

/// `beta` in [0, 1) in double and in the float the kernels use.
fn beta_f32(beta: f64) -> Result<f32> {
    error::check_beta(beta)?;
    let b = beta as f32;
    if b >= 1.0 {
        return Err(Error::hyperparameter(format!(
            "beta = {beta} rounds to 1 in float"
        )));
    }
    Ok(b)
}

/// `H <- beta H + (1 - beta) X^T diag(w) X / N` on the caller's symmetric row-major
/// `dim x dim` matrix `h` (both triangles written).
///
/// Parameters: `h`, `h_len == dim * dim` floats (read and written); `x`, `x_len` floats
/// holding `n_samples >= 1` rows of `dim` floats, `row_stride >= dim` apart
/// (`x_len >= (n_samples - 1) * row_stride + dim`); `weights`, `weights_len == n_samples`
/// finite floats, or NULL with `weights_len` 0 for all ones; `beta` in [0, 1).
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_LENGTH` (a count that does not match,
/// `n_samples` 0, `row_stride < dim`, a size that overflows or wraps);
/// `DP_ERR_INVALID_ARGUMENT` (misaligned); `DP_ERR_INVALID_HYPERPARAMETER` (`beta`);
/// `DP_ERR_ALIASING` (`h` overlapping an input); `DP_ERR_NON_FINITE` (`weights` hold NaN or
/// Inf); `DP_ERR_ALLOCATION`; `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not use `h` or write `x` or
/// `weights`.
///
/// # Safety
/// Each pointer must be valid for its count of floats (`h` for reads and writes).
#[no_mangle]
pub unsafe extern "C" fn dp_gn_matrix_accumulate_f32(
    h: *mut f32,
    h_len: usize,
    dim: usize,
    x: *const f32,
    x_len: usize,
    n_samples: usize,
    row_stride: usize,
    weights: *const f32,
    weights_len: usize,
    beta: f64,
) -> dp_status {
    guard(|| {
        let regions = check_buffers(&[
            buffer("h", h, h_len, true),
            buffer("x", x, x_len, false),
            buffer("weights", weights, weights_len, false),
        ])?;
        exact_len("h", h_len, check::product("h", dim, dim)?)?;
        error::check_samples(n_samples)?;
        let x_need = strided_len(n_samples, dim, row_stride)?;
        min_len("x", x_len, x_need)?;
        let given = !(weights.is_null() && weights_len == 0);
        if given {
            exact_len("weights", weights_len, n_samples)?;
        }
        error::check_beta(beta)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
        let (hs, xs, ws) = unsafe {
            (
                check::slice_mut(h, h_len),
                check::slice(x, x_need),
                given.then(|| check::slice(weights, n_samples)),
            )
        };
        if dim == 0 {
            // Nothing to write: return before a loop over `n_samples` empty rows.
            return Ok(());
        }
        let mut scratch = Vec::new();
        accumulate_gn_matrix(
            MatMut::from_row_major_slice_mut(hs, dim, dim),
            xs,
            n_samples,
            row_stride,
            ws,
            beta,
            Par::Pool,
            &mut scratch,
        )
    })
}

/// The GN diagonal of dense inputs in the identity or a dense basis `U` (`dim x k`):
/// `h[a] <- beta h[a] + (1 - beta) (1/N) sum_n w_n (x_n . U[:, a])^2` (`U = I`, `k = dim`:
/// `h[j] <- beta h[j] + (1 - beta) (1/N) sum_n w_n x_nj^2`), the diagonal of
/// `U^T (X^T W X / N) U` without forming it. Bitwise identical results for any thread count.
///
/// Parameters: `x`, `x_len` floats holding `n_samples >= 1` rows of `dim` floats,
/// `row_stride >= dim` apart (`x_len >= (n_samples - 1) * row_stride + dim`); `weighting`,
/// `DP_GN_WEIGHTS_GIVEN` (`weights`: `weights_len == n_samples` floats, or NULL with 0 for all
/// ones) or `DP_GN_WEIGHTS_LOGISTIC` (`weights`: `n_samples` logits, required); `u`,
/// `u_len == dim * k` floats row-major (`U[i, a] = u[i * k + a]`, as
/// `dp_basis_get_matrix_f32` writes it), or NULL with `u_len` 0 and `k == dim` for the
/// identity; `beta` in [0, 1) (0 replaces `h` without reading it); `h`, `h_len == k` floats.
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_LENGTH` (a count that does not match,
/// `n_samples` 0, `row_stride < dim`, overflow or wrap); `DP_ERR_INVALID_ARGUMENT`
/// (`weighting` not a `DP_GN_WEIGHTS_*` value, misaligned); `DP_ERR_INVALID_HYPERPARAMETER`
/// (`beta`); `DP_ERR_ALIASING` (`h` overlapping an input); `DP_ERR_ALLOCATION`;
/// `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not use `h` or write the
/// inputs.
///
/// # Safety
/// Each pointer must be valid for its count of floats during the call.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_diag_dense_f32(
    x: *const f32,
    x_len: usize,
    n_samples: usize,
    dim: usize,
    row_stride: usize,
    weighting: u32,
    weights: *const f32,
    weights_len: usize,
    u: *const f32,
    u_len: usize,
    k: usize,
    beta: f64,
    h: *mut f32,
    h_len: usize,
) -> dp_status {
    guard(|| {
        let regions = check_buffers(&[
            buffer("x", x, x_len, false),
            buffer("weights", weights, weights_len, false),
            buffer("u", u, u_len, false),
            buffer("h", h, h_len, true),
        ])?;
        error::check_samples(n_samples)?;
        let x_need = strided_len(n_samples, dim, row_stride)?;
        min_len("x", x_len, x_need)?;
        let ones = weighting != DP_GN_WEIGHTS_LOGISTIC && weights.is_null() && weights_len == 0;
        if !ones {
            exact_len("weights", weights_len, n_samples)?;
        }
        let identity = u.is_null() && u_len == 0;
        if identity {
            exact_len("k (the identity basis)", k, dim)?;
        } else {
            exact_len("u", u_len, check::product("u", dim, k)?)?;
        }
        exact_len("h", h_len, k)?;
        let logistic = match weighting {
            DP_GN_WEIGHTS_GIVEN => false,
            DP_GN_WEIGHTS_LOGISTIC => true,
            other => {
                return Err(invalid(format!(
                    "weighting = {other} is not a DP_GN_WEIGHTS_* value"
                )))
            }
        };
        let beta = beta_f32(beta)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
        let (xs, ws, hs) = unsafe {
            (
                check::slice(x, x_need),
                (!ones).then(|| check::slice(weights, n_samples)),
                check::slice_mut(h, k),
            )
        };
        if k == 0 {
            // Nothing to write: return before a loop over `n_samples` empty rows.
            return Ok(());
        }
        let xs = Samples::strided(xs, n_samples, dim, row_stride)?;
        if identity {
            return match (logistic, ws) {
                (true, Some(z)) => gn_diag_logistic(xs, z, beta, hs),
                (_, w) => gn_diag_weighted(xs, w, beta, hs),
            };
        }
        // SAFETY: as above.
        let us = unsafe { check::slice(u, u_len) };
        let um = MatRef::from_row_major_slice(us, dim, k);
        let logistic_weights;
        let w = match (logistic, ws) {
            (true, Some(z)) => {
                let mut v: Vec<f32> = try_zeros(n_samples, "the logistic weights")?;
                for (w, &z) in v.iter_mut().zip(z) {
                    *w = logistic_weight(z as f64) as f32;
                }
                logistic_weights = v;
                Some(logistic_weights.as_slice())
            }
            (_, w) => w,
        };
        gn_diag_weighted_in_basis(xs, w, um, beta, hs)
    })
}

/// The GN diagonal of a linear layer `z = W x` (`W`: `c_out x d_in`), in the identity basis
/// or, for the softmax outputs, in the Kronecker basis `(Q_C, Q_X)`:
/// identity: `h <- beta h + (1 - beta) S^T (X o X) / N` (`h[c][j]`, row-major) and
/// `h_bias[c] <- beta h_bias[c] + (1 - beta) (1/N) sum_n s_nc`, with `S` given
/// (`DP_GN_OUTPUT_FACTORS`; all ones is MSE) or computed from logits (`DP_GN_SOFTMAX_EXACT`:
/// `p (1 - p)`; `DP_GN_SOFTMAX_SAMPLED`: `(p - e_y)^2`, `y` drawn from `softmax(z_n)` with
/// `seed`; the draws depend only on `seed` and the sample index). Kronecker:
/// `h[a][b] <- beta h[a][b] + (1 - beta) (A^T B / N)[a][b]`, `A_na = sum_c p_nc Q_C[c,a]^2 -
/// (Q_C[:,a] . p_n)^2` (sampled: `(Q_C[:,a] . (p_n - e_y))^2`), `B_nb = (Q_X[:,b] . x_n)^2`,
/// `h_bias[a]` gets `(1/N) sum_n A_na`. Bitwise identical results for any thread count.
///
/// Parameters: `x`, `x_len == n_samples * d_in` floats (row-major, `n_samples >= 1`);
/// `output`, a `DP_GN_OUTPUT_FACTORS` / `DP_GN_SOFTMAX_*` value; `s`,
/// `s_len == n_samples * c_out` floats (factors or logits); `seed` (read by
/// `DP_GN_SOFTMAX_SAMPLED`); `q_c`, `q_c_len == c_out * c_out` and `q_x`,
/// `q_x_len == d_in * d_in` floats, row-major, both NULL (with 0) for the identity basis or
/// both given (softmax outputs only); `beta` in [0, 1); `h`, `h_len == c_out * d_in` floats;
/// `h_bias`, `h_bias_len == c_out` floats, or NULL with 0.
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_LENGTH` (a count that does not match,
/// `n_samples` 0, overflow or wrap); `DP_ERR_INVALID_ARGUMENT` (`output` not a defined value,
/// one of `q_c`/`q_x` given without the other, `DP_GN_OUTPUT_FACTORS` in a Kronecker basis,
/// misaligned); `DP_ERR_INVALID_HYPERPARAMETER` (`beta`); `DP_ERR_ALIASING` (an output
/// overlapping another buffer); `DP_ERR_ALLOCATION`; `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not use `h` or `h_bias` or
/// write the inputs.
///
/// # Safety
/// Each pointer must be valid for its count of floats during the call.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_diag_linear_f32(
    x: *const f32,
    x_len: usize,
    n_samples: usize,
    d_in: usize,
    output: u32,
    s: *const f32,
    s_len: usize,
    c_out: usize,
    seed: u64,
    q_c: *const f32,
    q_c_len: usize,
    q_x: *const f32,
    q_x_len: usize,
    beta: f64,
    h: *mut f32,
    h_len: usize,
    h_bias: *mut f32,
    h_bias_len: usize,
) -> dp_status {
    guard(|| {
        let regions = check_buffers(&[
            buffer("x", x, x_len, false),
            buffer("s", s, s_len, false),
            buffer("q_c", q_c, q_c_len, false),
            buffer("q_x", q_x, q_x_len, false),
            buffer("h", h, h_len, true),
            buffer("h_bias", h_bias, h_bias_len, true),
        ])?;
        error::check_samples(n_samples)?;
        exact_len("x", x_len, check::product("x", n_samples, d_in)?)?;
        exact_len("s", s_len, check::product("s", n_samples, c_out)?)?;
        // Both given: a Kronecker basis; neither: the identity; one alone is refused below.
        let kronecker = !q_c.is_null() && !q_x.is_null();
        let half = q_c.is_null() != q_x.is_null();
        if kronecker {
            exact_len("q_c", q_c_len, check::product("q_c", c_out, c_out)?)?;
            exact_len("q_x", q_x_len, check::product("q_x", d_in, d_in)?)?;
        } else if !half {
            exact_len("q_c", q_c_len, 0)?;
            exact_len("q_x", q_x_len, 0)?;
        }
        let h_need = check::product("h", c_out, d_in)?;
        exact_len("h", h_len, h_need)?;
        let bias = !h_bias.is_null();
        if bias {
            exact_len("h_bias", h_bias_len, c_out)?;
        }
        let estimator = match output {
            DP_GN_OUTPUT_FACTORS => None,
            DP_GN_SOFTMAX_EXACT => Some(GnEstimator::Exact),
            DP_GN_SOFTMAX_SAMPLED => Some(GnEstimator::Sampled),
            other => {
                return Err(invalid(format!(
                    "output = {other} is not a DP_GN_OUTPUT_* / DP_GN_SOFTMAX_* value"
                )))
            }
        };
        if half {
            return Err(invalid(
                "q_c and q_x: give both (a Kronecker basis) or neither (the identity)",
            ));
        }
        if kronecker && estimator.is_none() {
            return Err(invalid(
                "DP_GN_OUTPUT_FACTORS has no Kronecker-basis form: give the softmax logits",
            ));
        }
        let beta = beta_f32(beta)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
        let (xs, ss, hs, hb) = unsafe {
            (
                check::slice(x, x_len),
                check::slice(s, s_len),
                check::slice_mut(h, h_len),
                bias.then(|| check::slice_mut(h_bias, c_out)),
            )
        };
        if hs.is_empty() && hb.as_ref().is_none_or(|b| b.is_empty()) {
            // Nothing to write: return before a loop over `n_samples` empty rows.
            return Ok(());
        }
        let xs = Samples::new(xs, n_samples, d_in)?;
        let ss = Samples::new(ss, n_samples, c_out)?;
        match (estimator, kronecker) {
            (None, _) => gn_diag_linear(xs, ss, beta, hs, hb),
            (Some(e), false) => gn_diag_softmax(xs, ss, e, seed, beta, hs, hb),
            (Some(e), true) => {
                // SAFETY: as above.
                let (qc, qx) = unsafe { (check::slice(q_c, q_c_len), check::slice(q_x, q_x_len)) };
                gn_diag_softmax_in_kronecker(
                    xs,
                    ss,
                    e,
                    seed,
                    MatRef::from_row_major_slice(qc, c_out, c_out),
                    MatRef::from_row_major_slice(qx, d_in, d_in),
                    beta,
                    hs,
                    hb,
                )
            }
        }
    })
}

/// One GN^p step over `len` floats (see `dp_gn_config`). `exp_avg` NULL means no momentum
/// (`m_hat = grad`); otherwise it is updated. `h` entries below 0 count as 0. On any failure
/// nothing is written.
///
/// Parameters: `cfg`, a `dp_gn_config` (read unaligned); `step`, 1-based; `param`, `grad`,
/// `h`, each `len` floats; `exp_avg`, `len` floats or NULL.
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_LENGTH` (a range that wraps);
/// `DP_ERR_INVALID_ARGUMENT` (`cfg->struct_size`, a flag not 0/1, `reserved`, a misaligned
/// buffer); `DP_ERR_INVALID_HYPERPARAMETER` (the config, e.g. a damping whose power is not a
/// finite float; `step == 0`); `DP_ERR_ALIASING` (a written buffer overlapping another;
/// `grad` and `h` may share memory); `DP_ERR_NON_FINITE` (`check_finite` and NaN/Inf in
/// `grad` or `h`); `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not use these buffers.
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
        // SAFETY: points to a dp_gn_config (C contract); integer and float fields only.
        let raw = unsafe { check::config("cfg", cfg) }?;
        let mut buffers = vec![
            buffer("param", param, len, true),
            buffer("grad", grad, len, false),
            buffer("h", h, len, false),
        ];
        if !exp_avg.is_null() {
            buffers.push(buffer("exp_avg", exp_avg, len, true));
        }
        let regions = check_buffers(&buffers)?;
        let config = raw.to_config()?;
        config.validate()?;
        error::check_step(step)?;
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

/// One GN^p step in `basis` (the Rust docs of `diagprec::rotated_gn_step_with`): `h` is
/// `diag(U^T H U)` in rotated coordinates (e.g. from `dp_gn_diag_dense_f32` with `U`);
/// `exp_avg` (momentum, rotated coordinates) may be NULL. For the identity this is
/// `dp_gn_step_f32` bit for bit. No allocation. On failure nothing is written.
///
/// Parameters: `cfg`, a `dp_gn_config`; `step`, 1-based; `basis`, a live handle; `param`,
/// `grad`, `h`, each `len` floats and `exp_avg` `len` floats or NULL, `len` the basis length;
/// `workspace`, `workspace_len >= dp_basis_info.step_workspace_len` floats (NULL with 0 for the
/// identity).
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_INVALID_ARGUMENT` (`basis` not a live
/// handle, a config field, misaligned); `DP_ERR_LENGTH` (`len` not the basis length,
/// `workspace_len` too small, a range that wraps); `DP_ERR_INVALID_HYPERPARAMETER`;
/// `DP_ERR_ALIASING`; `DP_ERR_NON_FINITE` (`check_finite`: nothing written); `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not use these buffers, other
/// steps and rotations on `basis` included; it waits for a refresh of `basis`.
///
/// # Safety
/// `cfg` must point to a `dp_gn_config`; `param`, `grad`, `h` and (if not NULL) `exp_avg`
/// valid for `len` floats, `workspace` for `workspace_len`.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_rotated_step_f32(
    cfg: *const dp_gn_config,
    step: u64,
    basis: *const dp_basis,
    param: *mut f32,
    grad: *const f32,
    exp_avg: *mut f32,
    h: *const f32,
    len: usize,
    workspace: *mut f32,
    workspace_len: usize,
) -> dp_status {
    guard(|| {
        check::required("cfg", cfg)?;
        check::required("basis", basis)?;
        // SAFETY: points to a dp_gn_config (C contract); integer and float fields only.
        let raw = unsafe { check::config("cfg", cfg) }?;
        let m_len = if exp_avg.is_null() { 0 } else { len };
        let regions = check_buffers(&[
            buffer("param", param, len, true),
            buffer("grad", grad, len, false),
            buffer("exp_avg", exp_avg, m_len, true),
            buffer("h", h, len, false),
            buffer("workspace", workspace, workspace_len, true),
        ])?;
        with_basis("basis", basis, |b| {
            exact_len("len", len, b.len())?;
            let need = rotated_workspace_len(b);
            min_len("workspace", workspace_len, need)?;
            let config = raw.to_config()?;
            config.validate()?;
            error::check_step(step)?;
            check::disjoint(regions)?;
            // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
            let (p, g, m, hh, ws) = unsafe {
                (
                    check::slice_mut(param, len),
                    check::slice(grad, len),
                    (!exp_avg.is_null()).then(|| check::slice_mut(exp_avg, len)),
                    check::slice(h, len),
                    check::slice_mut(workspace, need),
                )
            };
            crate::kernels::gn::rotated::rotated_gn_step_with(
                Isa::detect(),
                Par::Pool,
                &config,
                step,
                b,
                p,
                g,
                m,
                hh,
                ws,
            )
        })
    })
}
