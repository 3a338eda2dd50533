//! # Rotation into and out of an orthonormal basis (f32)
//!
//! With `U` an orthonormal basis (DESIGN.md 2.4):
//!
//! ```text
//! dense U (d x d), vector g (d):            g~ = U^T g            g = U g~
//! Kronecker (Q_L m x m, Q_R n x n),
//! matrix G (m x n, row-major):              G~ = Q_L^T G Q_R      G = Q_L G~ Q_R^T
//! ```
//!
//! The Kronecker pair is the dense basis `U = Q_L (x) Q_R` acting on the row-major `vec(G)`:
//! `U^T vec(G) = vec(Q_L^T G Q_R)`.
//!
//! **Storage**: vectors are contiguous f32 slices; a matrix parameter or gradient is an `m x n`
//! row-major (C order, PyTorch's) contiguous slice of `m * n` floats. Bases are faer matrices
//! (any strides). The Kronecker rotation needs one `m x n` workspace (caller-owned,
//! [`kron_workspace_len`]): `Q_L^T G` goes there, then the second product goes to the output.
//!
//! **Cost**: exactly the GEMMs (two for Kronecker, one matrix-vector product for dense); no
//! copies, no allocation. `rotate_out` can accumulate into its output (`out += U g~`), so an
//! optimizer adds its update into the parameter inside the last GEMM instead of a separate pass.
//!
//! **Accuracy**: faer's f32 GEMM (f32 accumulation, blocked): the round trip
//! `rotate_out(rotate_into(g))` is within a few `sqrt(k) * eps * |g|` (tested to 1e-5 relative).
//!
//! The module also holds the element-wise kernels of the rotated optimizers: the Adam direction
//! in rotated coordinates (the lane of [`crate::kernels::adam`] with `theta = 0`), the L2 term
//! added before rotating, and a scaling pass for decoupled weight decay.

use crate::dispatch::{self, Isa, Par, Split};
use crate::error::{Error, Result};
use crate::kernels::adam::{adam_moments, adam_theta, AdamCoefficients, Splat, BLOCK};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use pulp::{Simd, WithSimd};

/// Below this many flops a GEMM runs on the calling thread (spawning costs more than it saves).
const PAR_FLOPS: f64 = (1u64 << 21) as f64;

/// Runs `f` with a faer parallelism matching `par`: on the crate's pool with all its threads, or
/// sequentially for `Par::Seq`, a one-thread pool, or work under [`PAR_FLOPS`].
pub(crate) fn with_faer_par<R: Send>(
    par: Par,
    flops: f64,
    f: impl FnOnce(faer::Par) -> R + Send,
) -> Result<R> {
    if par == Par::Pool && flops >= PAR_FLOPS {
        if let Some(pool) = dispatch::pool()? {
            let n = pool.current_num_threads();
            return Ok(pool.install(|| f(faer::Par::rayon(n))));
        }
    }
    Ok(f(faer::Par::Seq))
}

fn check_square(name: &str, m: MatRef<'_, f32>, dim: usize) -> Result<()> {
    if m.nrows() != dim || m.ncols() != dim {
        return Err(Error::length(format!(
            "{name} is {} x {}, expected {dim} x {dim}",
            m.nrows(),
            m.ncols()
        )));
    }
    Ok(())
}

fn check_len(name: &str, len: usize, expected: usize) -> Result<()> {
    if len != expected {
        return Err(Error::length(format!(
            "{name} has {len} elements, expected {expected}"
        )));
    }
    Ok(())
}

/// Whether `out` accumulates (`out += ...`) or is overwritten.
fn accum(accumulate: bool) -> Accum {
    if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    }
}

/// Output elements per block of the dense (matrix-vector) rotations: the unit of threading.
/// Each block is one sequential faer product over the whole inner dimension, so results do not
/// depend on the thread count (faer's own parallel matrix-vector product splits the sum).
pub(crate) const DENSE_BLOCK: usize = 128;

/// Runs `f(first_row, out_block)` on `DENSE_BLOCK`-sized blocks of `out`, on the crate's pool
/// when `par` allows and the work (`flops`) is large enough.
fn dense_blocks(
    par: Par,
    flops: f64,
    out: &mut [f32],
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Result<()> {
    use rayon::prelude::*;
    if par == Par::Pool && flops >= PAR_FLOPS && out.len() > DENSE_BLOCK {
        if let Some(pool) = dispatch::pool()? {
            pool.install(|| {
                out.par_chunks_mut(DENSE_BLOCK)
                    .enumerate()
                    .for_each(|(b, chunk)| f(b * DENSE_BLOCK, chunk))
            });
            return Ok(());
        }
    }
    for (b, chunk) in out.chunks_mut(DENSE_BLOCK).enumerate() {
        f(b * DENSE_BLOCK, chunk);
    }
    Ok(())
}

/// `out = U^T g` (`accumulate = false`) or `out += U^T g`, with `U` square of size `g.len()`.
/// Bitwise identical for any thread count (fixed blocks of 128 outputs).
pub fn dense_rotate_into_with(
    par: Par,
    u: MatRef<'_, f32>,
    g: &[f32],
    out: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let d = g.len();
    check_square("U", u, d)?;
    check_len("out", out.len(), d)?;
    let g = faer::ColRef::from_slice(g);
    dense_blocks(par, 2.0 * (d * d) as f64, out, |first, chunk| {
        let cols = u.subcols(first, chunk.len());
        let dst = faer::ColMut::from_slice_mut(chunk);
        matmul(
            dst.as_mat_mut(),
            accum(accumulate),
            cols.transpose(),
            g.as_mat(),
            1.0,
            faer::Par::Seq,
        )
    })
}

/// `out = U g~` (`accumulate = false`) or `out += U g~`. Bitwise identical for any thread count.
pub fn dense_rotate_out_with(
    par: Par,
    u: MatRef<'_, f32>,
    g_rot: &[f32],
    out: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let d = g_rot.len();
    check_square("U", u, d)?;
    check_len("out", out.len(), d)?;
    let g = faer::ColRef::from_slice(g_rot);
    dense_blocks(par, 2.0 * (d * d) as f64, out, |first, chunk| {
        let rows = u.subrows(first, chunk.len());
        let dst = faer::ColMut::from_slice_mut(chunk);
        matmul(
            dst.as_mat_mut(),
            accum(accumulate),
            rows,
            g.as_mat(),
            1.0,
            faer::Par::Seq,
        )
    })
}

/// Floats of workspace the Kronecker rotation of an `m x n` matrix needs: `m * n`.
pub fn kron_workspace_len(m: usize, n: usize) -> usize {
    m * n
}

fn kron_checks(
    q_left: MatRef<'_, f32>,
    q_right: MatRef<'_, f32>,
    input: usize,
    out: usize,
    work: usize,
) -> Result<(usize, usize)> {
    let (m, n) = (q_left.nrows(), q_right.nrows());
    check_square("Q_L", q_left, m)?;
    check_square("Q_R", q_right, n)?;
    let len = m
        .checked_mul(n)
        .ok_or_else(|| Error::length("m * n overflows"))?;
    check_len("the input matrix", input, len)?;
    check_len("out", out, len)?;
    check_len("work", work, len)?;
    Ok((m, n))
}

/// `out = Q_L^T G Q_R` (or `out += ...`) for a row-major `m x n` matrix `G`, with `Q_L` `m x m`
/// and `Q_R` `n x n`; `work` holds `m * n` floats (overwritten).
pub fn kron_rotate_into_with(
    par: Par,
    q_left: MatRef<'_, f32>,
    q_right: MatRef<'_, f32>,
    g: &[f32],
    out: &mut [f32],
    work: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let (m, n) = kron_checks(q_left, q_right, g.len(), out.len(), work.len())?;
    let g = MatRef::from_row_major_slice(g, m, n);
    let mut w = MatMut::from_row_major_slice_mut(work, m, n);
    let out = MatMut::from_row_major_slice_mut(out, m, n);
    with_faer_par(par, 2.0 * (m * n) as f64 * (m + n) as f64, |fp| {
        matmul(w.rb_mut(), Accum::Replace, q_left.transpose(), g, 1.0, fp);
        matmul(out, accum(accumulate), w.rb(), q_right, 1.0, fp);
    })
}

/// `out = Q_L G~ Q_R^T` (or `out += ...`): the inverse of [`kron_rotate_into_with`].
pub fn kron_rotate_out_with(
    par: Par,
    q_left: MatRef<'_, f32>,
    q_right: MatRef<'_, f32>,
    g_rot: &[f32],
    out: &mut [f32],
    work: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let (m, n) = kron_checks(q_left, q_right, g_rot.len(), out.len(), work.len())?;
    let g = MatRef::from_row_major_slice(g_rot, m, n);
    let mut w = MatMut::from_row_major_slice_mut(work, m, n);
    let out = MatMut::from_row_major_slice_mut(out, m, n);
    with_faer_par(par, 2.0 * (m * n) as f64 * (m + n) as f64, |fp| {
        matmul(w.rb_mut(), Accum::Replace, q_left, g, 1.0, fp);
        matmul(out, accum(accumulate), w.rb(), q_right.transpose(), 1.0, fp);
    })
}

use faer::reborrow::{Reborrow, ReborrowMut};

// ---------------------------------------------------------------------------------------------
// Element-wise kernels of the rotated optimizers.

/// The buffers of the rotated Adam direction: `grad` holds `g~` on entry and the direction
/// `-(lr / bc1) m~ / (sqrt(v~) / sqrt(bc2) + eps)` on exit. `vmax` is empty unless amsgrad.
pub(crate) struct DirectionBlock<'a> {
    pub grad: &'a mut [f32],
    pub exp_avg: &'a mut [f32],
    pub exp_avg_sq: &'a mut [f32],
    pub max_exp_avg_sq: &'a mut [f32],
}

impl Split for DirectionBlock<'_> {
    fn len(&self) -> usize {
        self.grad.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (g0, g1) = self.grad.split_at_mut(mid);
        let (m0, m1) = self.exp_avg.split_at_mut(mid);
        let (v0, v1) = self.exp_avg_sq.split_at_mut(mid);
        let xmid = mid.min(self.max_exp_avg_sq.len());
        let (x0, x1) = self.max_exp_avg_sq.split_at_mut(xmid);
        (
            DirectionBlock {
                grad: g0,
                exp_avg: m0,
                exp_avg_sq: v0,
                max_exp_avg_sq: x0,
            },
            DirectionBlock {
                grad: g1,
                exp_avg: m1,
                exp_avg_sq: v1,
                max_exp_avg_sq: x1,
            },
        )
    }
}

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

struct AdamDirection<'a, const AMSGRAD: bool> {
    k: &'a AdamCoefficients,
    block: DirectionBlock<'a>,
}

impl<const AMSGRAD: bool> WithSimd for AdamDirection<'_, AMSGRAD> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = Splat::new(simd, self.k);
        let DirectionBlock {
            grad,
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
        } = self.block;
        let (g_body, g_tail) = S::as_mut_simd_f32s(grad);
        let (m_body, m_tail) = S::as_mut_simd_f32s(exp_avg);
        let (v_body, v_tail) = S::as_mut_simd_f32s(exp_avg_sq);
        let (x_body, x_tail) = S::as_mut_simd_f32s(max_exp_avg_sq);
        let n = g_body.len();
        let (m_body, v_body) = (&mut m_body[..n], &mut v_body[..n]);
        let x_body = if AMSGRAD { &mut x_body[..n] } else { x_body };
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
        &|b| {
            if k.amsgrad {
                isa.run(AdamDirection::<true> { k, block: b })
            } else {
                isa.run(AdamDirection::<false> { k, block: b })
            }
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

/// `x *= factor` (decoupled weight decay before the update is added).
struct Scale<'a> {
    x: &'a mut [f32],
    factor: f32,
}

impl WithSimd for Scale<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let f = simd.splat_f32s(self.factor);
        let (body, tail) = S::as_mut_simd_f32s(self.x);
        for x in body {
            *x = simd.mul_f32s(*x, f);
        }
        if !tail.is_empty() {
            let x = simd.mul_f32s(simd.partial_load_f32s(tail), f);
            simd.partial_store_f32s(tail, x);
        }
    }
}

/// `x *= factor`.
pub(crate) fn scale(isa: Isa, x: &mut [f32], factor: f32) {
    isa.run(Scale { x, factor })
}
