//! # Rotated Adam: Adam with its moments in the coordinates of an orthonormal basis
//!
//! **Rotated Adam** in basis `U`, one step:
//!
//! ```text
//! g'  = g * inv_grad_scale (negated if maximize) (+ wd * theta for Adam's L2 decay)
//! g~  = U^T g'                                   rotate in (GEMM)
//! m~, v~ updated from g~ as Adam does; d~ = -(lr / bc1) m~ / (sqrt(v~) / sqrt(bc2) + eps)
//! theta <- theta * (1 - lr * wd)                 AdamW only
//! theta <- theta + U d~                          rotate out, accumulated into theta by the GEMM
//! ```
//!
//! **Where the moments live**: both `m~` and `v~` (and `vmax~`) live in rotated coordinates.
//! `m` is linear, so this equals SOAP's choice (keep `m` in the original coordinates and rotate
//! it every step) in exact arithmetic, at two GEMMs less per step; on a basis change `m~` is
//! re-projected exactly (`m~' = U'^T U m~`) and `v~` carried by a [`crate::StateTransfer`] rule.
//!
//! **Cost per step**: the two rotations (dense: two matrix-vector products; Kronecker: four
//! GEMMs) plus one element-wise pass over `g~, m~, v~` (and `theta`, scaled there by AdamW's
//! decay), plus one pass over `g, theta` for Adam's L2 term when it is non-zero. With the
//! crate's pool the whole step runs inside one entry into it. The identity basis calls the
//! plain Adam kernel on the caller's buffers: nothing extra.
//!
//! **Reference**: [`crate::reference::rotated_adam_step`] (`tests/basis.rs`).

use crate::basis::{Basis, KroneckerBasis};
use crate::dispatch::{self, Isa, Par, Split};
use crate::error::{check_step, non_finite_error, Error, ErrorKind, Result};
use crate::kernels::adam::{
    adam_moments, adam_step_with, adam_theta, grad_is_finite, AdamCoefficients, AdamConfig,
    AdamTensor, Splat, BLOCK,
};
use pulp::{Simd, WithSimd};

/// Floats of workspace [`rotated_adam_step_with`] needs: 0 for the identity, `2 * len`
/// otherwise (the rotated gradient, then the GEMM workspace).
pub fn rotated_workspace_len(basis: &Basis) -> usize {
    match basis {
        Basis::Identity(_) => 0,
        b => 2 * b.len(),
    }
}

/// One Adam step in `basis` on caller-owned buffers (the module docs give the math): `exp_avg`,
/// `exp_avg_sq`, `max_exp_avg_sq` are in rotated coordinates (original ones for the identity,
/// where this is exactly [`adam_step_with`]); `workspace` holds at least
/// [`rotated_workspace_len`] floats. Everything is checked (and `grad` scanned with
/// `check_finite`) before anything is written.
pub fn rotated_adam_step_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    basis: &Basis,
    tensor: AdamTensor<'_>,
    workspace: &mut [f32],
) -> Result<()> {
    let AdamTensor {
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        max_exp_avg_sq,
    } = tensor;
    let n = basis.len();
    crate::error::check_lengths(n, &[("param", param.len())])?;
    if let Basis::Identity(_) = basis {
        return adam_step_with(
            isa,
            par,
            cfg,
            step,
            AdamTensor {
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq,
            },
        );
    }
    cfg.validate()?;
    check_step(step)?;
    crate::error::check_lengths(
        n,
        &[
            ("grad", grad.len()),
            ("exp_avg", exp_avg.len()),
            ("exp_avg_sq", exp_avg_sq.len()),
        ],
    )?;
    let vmax: &mut [f32] = match (cfg.amsgrad, max_exp_avg_sq) {
        (true, Some(x)) => {
            crate::error::check_lengths(n, &[("max_exp_avg_sq", x.len())])?;
            x
        }
        (true, None) => {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "amsgrad needs max_exp_avg_sq",
            ))
        }
        (false, _) => &mut [],
    };
    if workspace.len() < 2 * n {
        return Err(Error::length(format!(
            "the workspace has {} floats, the rotated step needs {}",
            workspace.len(),
            2 * n
        )));
    }
    let (rot, rest) = workspace.split_at_mut(n);
    let work = &mut rest[..n];
    let k = AdamCoefficients::new(cfg, step);
    if cfg.check_finite && !grad_is_finite(isa, par, grad, k.grad_factor)? {
        return Err(non_finite_error());
    }
    let flops = match basis {
        Basis::Kronecker(b) => 4.0 * n as f64 * (b.rows() + b.cols()) as f64,
        _ => 4.0 * n as f64 * n as f64,
    };
    // One entry into the pool for the whole step: the four products and the element-wise pass
    // then run on its threads without a hand-off between them.
    if par == Par::Pool && flops >= dispatch::PAR_FLOPS {
        if let Some(pool) = dispatch::pool()? {
            return dispatch::enter(&pool, || {
                rotated_body(
                    isa, par, k, basis, param, grad, exp_avg, exp_avg_sq, vmax, rot, work,
                )
            });
        }
    }
    rotated_body(
        isa, par, k, basis, param, grad, exp_avg, exp_avg_sq, vmax, rot, work,
    )
}

#[allow(clippy::too_many_arguments)]
fn rotated_body(
    isa: Isa,
    par: Par,
    mut k: AdamCoefficients,
    basis: &Basis,
    param: &mut [f32],
    grad: &[f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    vmax: &mut [f32],
    rot: &mut [f32],
    work: &mut [f32],
) -> Result<()> {
    let l2 = k.l2 != 0.0;
    match basis {
        Basis::Identity(_) => unreachable!("handled above"),
        Basis::Dense(b) => {
            if l2 {
                l2_gradient(isa, grad, param, work, k.grad_factor, k.l2);
                k.grad_factor = 1.0;
                b.rotate_into_with(par, work, rot, false)?;
            } else {
                b.rotate_into_with(par, grad, rot, false)?;
            }
        }
        Basis::Kronecker(b) => {
            if l2 {
                l2_gradient(isa, grad, param, rot, k.grad_factor, k.l2);
                k.grad_factor = 1.0;
                // work = Q_L^T G', rot = work Q_R: the in-place form of rotate_into.
                kron_in_place(par, b, rot, work)?;
            } else {
                b.rotate_into_with(par, grad, rot, work, false)?;
            }
        }
    }
    adam_direction(
        isa,
        par,
        &k,
        DirectionBlock {
            grad: rot,
            param: if k.decay != 1.0 {
                &mut param[..]
            } else {
                &mut []
            },
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq: vmax,
        },
    )?;
    match basis {
        Basis::Identity(_) => unreachable!("handled above"),
        Basis::Dense(b) => b.rotate_out_with(par, rot, param, true),
        Basis::Kronecker(b) => b.rotate_out_with(par, rot, param, work, true),
    }
}

/// `g <- Q_L^T g Q_R` in place (through `work`).
fn kron_in_place(par: Par, b: &KroneckerBasis, g: &mut [f32], work: &mut [f32]) -> Result<()> {
    use faer::{MatMut, MatRef};
    let (m, n) = (b.rows(), b.cols());
    let (ql, qr) = (b.left().matrix(), b.right_row_major());
    let (g_in, w_out) = (
        MatRef::from_row_major_slice(&g[..], m, n),
        MatMut::from_row_major_slice_mut(&mut work[..], m, n),
    );
    dispatch::gemm(par, w_out, 0.0, ql.transpose(), g_in, 1.0)?;
    let (w_in, g_out) = (
        MatRef::from_row_major_slice(&work[..], m, n),
        MatMut::from_row_major_slice_mut(&mut g[..], m, n),
    );
    dispatch::gemm(par, g_out, 0.0, w_in, qr, 1.0)
}

// ---------------------------------------------------------------------------------------------
// Element-wise kernels of the rotated optimizers.

/// The buffers of the rotated Adam direction: `grad` holds `g~` on entry and the direction
/// `-(lr / bc1) m~ / (sqrt(v~) / sqrt(bc2) + eps)` on exit. `vmax` is empty unless amsgrad.
pub(crate) struct DirectionBlock<'a> {
    pub grad: &'a mut [f32],
    /// `theta`, scaled by `k.decay` in the same pass (empty: no decay).
    pub param: &'a mut [f32],
    pub exp_avg: &'a mut [f32],
    pub exp_avg_sq: &'a mut [f32],
    pub max_exp_avg_sq: &'a mut [f32],
}

dispatch::split_fields!(DirectionBlock {
    grad,
    param: upto,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq: upto,
});

/// The Adam lane of [`crate::kernels::adam`] with `theta = 0`: returns `(d~, m~, v~, vmax~)`,
/// `d~` the update itself (`0 * decay = 0`).
#[inline(always)]
fn direction_lane<S: Simd, const AMSGRAD: bool>(
    simd: S,
    c: &Splat<S>,
    [g, m, v, vmax]: [S::f32s; 4],
) -> [S::f32s; 4] {
    let zero = simd.splat_f32s(0.0);
    let [theta, m, v, vmax] = adam_moments::<S, AMSGRAD, false>(simd, c, [zero, g, m, v, vmax]);
    let v_hat = if AMSGRAD { vmax } else { v };
    [adam_theta(simd, c, theta, m, v_hat), m, v, vmax]
}

struct AdamDirection<'a, const AMSGRAD: bool, const DECAY: bool> {
    k: &'a AdamCoefficients,
    block: DirectionBlock<'a>,
}

impl<const AMSGRAD: bool, const DECAY: bool> WithSimd for AdamDirection<'_, AMSGRAD, DECAY> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = Splat::new(simd, self.k);
        let DirectionBlock {
            grad,
            param,
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
        } = self.block;
        let (g_body, g_tail) = S::as_mut_simd_f32s(grad);
        let (p_body, p_tail) = S::as_mut_simd_f32s(param);
        let (m_body, m_tail) = S::as_mut_simd_f32s(exp_avg);
        let (v_body, v_tail) = S::as_mut_simd_f32s(exp_avg_sq);
        let (x_body, x_tail) = S::as_mut_simd_f32s(max_exp_avg_sq);
        let n = g_body.len();
        let (m_body, v_body) = (&mut m_body[..n], &mut v_body[..n]);
        let x_body = if AMSGRAD { &mut x_body[..n] } else { x_body };
        let p_body = if DECAY { &mut p_body[..n] } else { p_body };
        let decay = simd.splat_f32s(self.k.decay);
        let zero = simd.splat_f32s(0.0);
        for i in 0..n {
            let vmax = if AMSGRAD { x_body[i] } else { zero };
            let [d, m, v, x] =
                direction_lane::<S, AMSGRAD>(simd, &c, [g_body[i], m_body[i], v_body[i], vmax]);
            g_body[i] = d;
            m_body[i] = m;
            v_body[i] = v;
            if AMSGRAD {
                x_body[i] = x;
            }
            if DECAY {
                p_body[i] = simd.mul_f32s(p_body[i], decay);
            }
        }
        if !g_tail.is_empty() {
            let vmax = if AMSGRAD {
                simd.partial_load_f32s(x_tail)
            } else {
                zero
            };
            let [d, m, v, x] = direction_lane::<S, AMSGRAD>(
                simd,
                &c,
                [
                    simd.partial_load_f32s(g_tail),
                    simd.partial_load_f32s(m_tail),
                    simd.partial_load_f32s(v_tail),
                    vmax,
                ],
            );
            simd.partial_store_f32s(g_tail, d);
            simd.partial_store_f32s(m_tail, m);
            simd.partial_store_f32s(v_tail, v);
            if AMSGRAD {
                simd.partial_store_f32s(x_tail, x);
            }
            if DECAY {
                let p = simd.partial_load_f32s(p_tail);
                simd.partial_store_f32s(p_tail, simd.mul_f32s(p, decay));
            }
        }
    }
}

/// The Adam direction in rotated coordinates over a whole buffer set (in place in `grad`).
/// `k.l2` is ignored: the L2 term is added before rotating ([`l2_gradient`]).
pub(crate) fn adam_direction(
    isa: Isa,
    par: Par,
    k: &AdamCoefficients,
    block: DirectionBlock<'_>,
) -> Result<()> {
    dispatch::map_reduce_blocks(
        par,
        block,
        BLOCK,
        &|b| match (k.amsgrad, !b.param.is_empty()) {
            (true, true) => isa.run(AdamDirection::<true, true> { k, block: b }),
            (true, false) => isa.run(AdamDirection::<true, false> { k, block: b }),
            (false, true) => isa.run(AdamDirection::<false, true> { k, block: b }),
            (false, false) => isa.run(AdamDirection::<false, false> { k, block: b }),
        },
        &|(), ()| (),
    )
}

/// `out = fma(theta, wd, g * grad_factor)`: the gradient with Adam's L2 term, formed before
/// rotating (the same operations as the plain Adam lane).
struct L2Gradient<'a> {
    grad: &'a [f32],
    param: &'a [f32],
    out: &'a mut [f32],
    grad_factor: f32,
    weight_decay: f32,
}

#[inline(always)]
fn l2_lane<S: Simd>(simd: S, g: S::f32s, theta: S::f32s, factor: S::f32s, wd: S::f32s) -> S::f32s {
    simd.mul_add_f32s(theta, wd, simd.mul_f32s(g, factor))
}

impl WithSimd for L2Gradient<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let factor = simd.splat_f32s(self.grad_factor);
        let wd = simd.splat_f32s(self.weight_decay);
        let (g_body, g_tail) = S::as_simd_f32s(self.grad);
        let (p_body, p_tail) = S::as_simd_f32s(self.param);
        let (o_body, o_tail) = S::as_mut_simd_f32s(self.out);
        let n = o_body.len();
        let (g_body, p_body) = (&g_body[..n], &p_body[..n]);
        for i in 0..n {
            o_body[i] = l2_lane(simd, g_body[i], p_body[i], factor, wd);
        }
        if !o_tail.is_empty() {
            let o = l2_lane(
                simd,
                simd.partial_load_f32s(g_tail),
                simd.partial_load_f32s(p_tail),
                factor,
                wd,
            );
            simd.partial_store_f32s(o_tail, o);
        }
    }
}

/// `out = g * grad_factor + weight_decay * theta` (fused as the plain Adam lane does).
pub(crate) fn l2_gradient(
    isa: Isa,
    grad: &[f32],
    param: &[f32],
    out: &mut [f32],
    grad_factor: f32,
    weight_decay: f32,
) {
    isa.run(L2Gradient {
        grad,
        param,
        out,
        grad_factor,
        weight_decay,
    })
}
