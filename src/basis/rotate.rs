//! # Rotation into and out of an orthonormal basis (f32)
//!
//! With `U` an orthonormal basis:
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
//! **Accuracy**: f32 GEMMs (f32 accumulation, blocked; faer's matrix-vector products for the
//! dense basis, the `gemm` crate's products for the Kronecker pair, see `dispatch::gemm`): the round trip
//! `rotate_out(rotate_into(g))` is within a few `sqrt(k) * eps * |g|` (tested to 1e-5 relative).
//!
//! **Reference**: [`crate::reference::rotate_dense`] and [`crate::reference::rotate_kronecker`]
//! (`tests/basis.rs`).

use crate::dispatch::{self, Par, PAR_FLOPS};
use crate::error::{check_lengths, Error, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};

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

/// The weight of `out`'s old value in a Kronecker rotation's last product: 1 (`out += ...`) or
/// 0 (overwritten, not read).
fn keep(accumulate: bool) -> f32 {
    if accumulate {
        1.0
    } else {
        0.0
    }
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
            dispatch::enter(&pool, || {
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
    check_lengths(d, &[("out", out.len())])?;
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
    check_lengths(d, &[("out", out.len())])?;
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
    check_lengths(
        len,
        &[("the input matrix", input), ("out", out), ("work", work)],
    )?;
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
    dispatch::gemm(par, w.rb_mut(), 0.0, q_left.transpose(), g, 1.0)?;
    dispatch::gemm(par, out, keep(accumulate), w.rb(), q_right, 1.0)
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
    dispatch::gemm(par, w.rb_mut(), 0.0, q_left, g, 1.0)?;
    dispatch::gemm(par, out, keep(accumulate), w.rb(), q_right.transpose(), 1.0)
}

use faer::reborrow::{Reborrow, ReborrowMut};
