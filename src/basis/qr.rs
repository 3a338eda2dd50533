//! # Householder QR of a square f32 matrix, returning `Q` with `R`'s diagonal non-negative
//!
//! **Method** (LAPACK's `sgeqrf` then `sorgqr`, blocked right-looking, compact WY):
//!
//! ```text
//! for each panel of QR_BLOCK columns starting at s (rows s..n):
//!     factor the panel column by column: x = the column from its diagonal down,
//!         beta = -sign(x_0) ||x||, v = x / (x_0 - beta) (v_0 = 1), tau = (beta - x_0) / beta,
//!         H = I - tau v v^T applied to the panel's later columns; beta is R's diagonal entry
//!     T (upper triangular) with H_s ... H_{s+b-1} = I - V T V^T, from G = V^T V:
//!         T_jj = tau_j,  T_{0..j, j} = -tau_j T_{0..j, 0..j} G_{0..j, j}
//!     trailing columns: C <- C - (V T^T) (V^T C)                          (GEMMs)
//! Q = I; for each block from the last: Q[s.., s..] <- Q[s.., s..] - (V T) (V^T Q[s.., s..])
//! column j of Q negated where R_jj < 0
//! ```
//!
//! Block `s` of `Q`'s formation touches rows and columns `s..` only: outside that square `Q`
//! still equals the identity there (LAPACK's `sorgqr`), `4/3 n^3` flops, as the factorisation.
//!
//! **Storage**: every matrix column-major, the input overwritten; `V` of each block is kept
//! explicitly (`(n - s) x b`, unit diagonal, zeros above) so that the GEMMs (faer's `matmul`)
//! see plain dense operands.
//!
//! **Accuracy**: Householder QR is backward stable for any input, rank-deficient included
//! (a zero column gives `tau = 0`, `H = I`): `Q` is orthonormal to a few `n u`. `||x||` is
//! summed in f64, so it neither overflows nor underflows for finite f32 entries. The panel's
//! dot products and updates are vectorised (pulp), the trailing updates are faer GEMMs, which
//! split their work by output blocks: the result does not depend on the thread count.
//!
//! **Reference**: [`crate::reference::refresh_power_qr`] (Gram-Schmidt twice in f64, the same
//! `Q`), through the `PowerQr` refresh (`tests/basis.rs`).

use crate::dispatch::Isa;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use pulp::{Simd, WithSimd};

/// Columns per Householder block.
pub(crate) const QR_BLOCK: usize = 32;

/// `sum x_i y_i` (vector lanes, then the lanes summed).
#[inline(always)]
fn dot<S: Simd>(simd: S, x: &[f32], y: &[f32]) -> f32 {
    let (xb, xt) = S::as_simd_f32s(x);
    let (yb, yt) = S::as_simd_f32s(y);
    let n = xb.len();
    let yb = &yb[..n];
    let mut acc = [simd.splat_f32s(0.0); 4];
    let quads = n / 4;
    for q in 0..quads {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = simd.mul_add_f32s(xb[4 * q + l], yb[4 * q + l], *a);
        }
    }
    for i in 4 * quads..n {
        acc[0] = simd.mul_add_f32s(xb[i], yb[i], acc[0]);
    }
    if !xt.is_empty() {
        acc[1] = simd.mul_add_f32s(
            simd.partial_load_f32s(xt),
            simd.partial_load_f32s(yt),
            acc[1],
        );
    }
    let sum = simd.add_f32s(
        simd.add_f32s(acc[0], acc[1]),
        simd.add_f32s(acc[2], acc[3]),
    );
    simd.reduce_sum_f32s(sum)
}

/// `y <- y + alpha x`.
#[inline(always)]
fn axpy<S: Simd>(simd: S, alpha: f32, x: &[f32], y: &mut [f32]) {
    let a = simd.splat_f32s(alpha);
    let (xb, xt) = S::as_simd_f32s(x);
    let (yb, yt) = S::as_mut_simd_f32s(y);
    let n = yb.len();
    for (y, &x) in yb.iter_mut().zip(&xb[..n]) {
        *y = simd.mul_add_f32s(a, x, *y);
    }
    if !yt.is_empty() {
        let y = simd.mul_add_f32s(
            a,
            simd.partial_load_f32s(xt),
            simd.partial_load_f32s(yt),
        );
        simd.partial_store_f32s(yt, y);
    }
}

/// `x <- alpha x`.
#[inline(always)]
fn scale<S: Simd>(simd: S, alpha: f32, x: &mut [f32]) {
    let a = simd.splat_f32s(alpha);
    let (xb, xt) = S::as_mut_simd_f32s(x);
    for x in xb.iter_mut() {
        *x = simd.mul_f32s(a, *x);
    }
    if !xt.is_empty() {
        let x = simd.mul_f32s(a, simd.partial_load_f32s(xt));
        simd.partial_store_f32s(xt, x);
    }
}

/// `sum x_i^2` in f64 (eight independent accumulators, added pairwise at the end).
#[inline(always)]
fn sum_squares_f64(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v as f64 * v as f64;
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a += v as f64 * v as f64;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Unblocked Householder QR of one `rows x cols` panel (column-major, stride `rows`), in place:
/// on return the panel holds `V` (unit diagonal, zeros above), `tau` the reflectors' factors
/// and `rdiag` `R`'s diagonal.
struct PanelQr<'a> {
    panel: &'a mut [f32],
    rows: usize,
    tau: &'a mut [f32],
    rdiag: &'a mut [f32],
}

impl WithSimd for PanelQr<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let m = self.rows;
        let cols = self.tau.len();
        for j in 0..cols.min(m) {
            let (left, right) = self.panel.split_at_mut((j + 1) * m);
            let col = &mut left[j * m..];
            let alpha = col[j];
            let sigma = sum_squares_f64(&col[j + 1..]);
            let (beta, tau) = if sigma == 0.0 {
                (alpha, 0.0f32)
            } else {
                let a = alpha as f64;
                let norm = (a * a + sigma).sqrt();
                let beta = if a >= 0.0 { -norm } else { norm };
                scale(simd, (1.0 / (a - beta)) as f32, &mut col[j + 1..]);
                (beta as f32, ((beta - a) / beta) as f32)
            };
            col[..j].fill(0.0);
            col[j] = 1.0;
            self.tau[j] = tau;
            self.rdiag[j] = beta;
            if tau != 0.0 {
                let v = &col[j..];
                for k in 0..cols - j - 1 {
                    let c = &mut right[k * m + j..(k + 1) * m];
                    let d = tau * dot(simd, v, c);
                    axpy(simd, -d, v, c);
                }
            }
        }
        // A panel wider than tall (only when rows < cols, which a square matrix never gives).
        for j in m..cols {
            self.tau[j] = 0.0;
            self.rdiag[j] = 0.0;
        }
    }
}

/// The upper triangular `T` (`b x b`, column-major) of `I - V T V^T = H_0 ... H_{b-1}` from
/// `G = V^T V` and the `tau`s: column `j` is `-tau_j T_{0..j, 0..j} G_{0..j, j}`, accumulated
/// as a sum of `T`'s columns (no dependent chain of additions).
fn block_factor(g: &[f32], tau: &[f32], t: &mut [f32]) {
    let b = tau.len();
    t.fill(0.0);
    for j in 0..b {
        let (done, rest) = t.split_at_mut(j * b);
        let col = &mut rest[..b];
        for k in 0..j {
            let coef = g[k + j * b];
            for (c, &x) in col[..=k].iter_mut().zip(&done[k * b..k * b + k + 1]) {
                *c += x * coef;
            }
        }
        col[..j].iter_mut().for_each(|c| *c *= -tau[j]);
        col[j] = tau[j];
    }
}

/// `C <- C - U (V^T C)` (`U = V op(T)` formed by the caller); `w` holds `ncols(C) x b`.
fn apply_block(
    v: MatRef<'_, f32>,
    u: MatRef<'_, f32>,
    mut c: MatMut<'_, f32>,
    w: &mut [f32],
    fp: faer::Par,
) {
    let (b, n) = (v.ncols(), c.ncols());
    if n == 0 {
        return;
    }
    // (V^T C)^T = C^T V, stored n x b: faer's tall output kernels serve both products.
    let mut wt = MatMut::from_column_major_slice_mut(&mut w[..b * n], n, b);
    matmul(wt.as_mut(), Accum::Replace, c.as_ref().transpose(), v, 1.0, fp);
    matmul(c.as_mut(), Accum::Add, u, wt.as_ref().transpose(), -1.0, fp);
}

/// Factorises the square `y` (column-major, stride `n`, overwritten) and writes its `Q`, with
/// `R`'s diagonal made non-negative, into `q` (`n x n`, any content on entry). `v_store`
/// (at least `n * n` long, any content) holds the reflectors. Returns `R`'s diagonal before the
/// sign change (non-finite when the factorisation overflowed).
pub(crate) fn householder_q(
    isa: Isa,
    y: &mut [f32],
    n: usize,
    v_store: &mut [f32],
    mut q: MatMut<'_, f32>,
    fp: faer::Par,
) -> Vec<f32> {
    let nb = QR_BLOCK.min(n.max(1));
    let starts: Vec<usize> = (0..n).step_by(nb).collect();
    let mut rdiag = vec![0.0f32; n];
    let mut tau = vec![0.0f32; n];
    // V of block k at v_store[offsets[k]..], (n - s) x b, column-major.
    let offsets: Vec<usize> = starts
        .iter()
        .scan(0usize, |acc, &s| {
            let at = *acc;
            *acc += (n - s) * nb.min(n - s);
            Some(at)
        })
        .collect();
    // U = V T^T (factorisation) and V T (formation) of the block in use.
    let mut u_qr = vec![0.0f32; n * nb];
    let mut u_q = vec![0.0f32; n * nb];
    let mut t_blocks = vec![0.0f32; starts.len() * nb * nb];
    let mut g = vec![0.0f32; nb * nb];
    let mut w = vec![0.0f32; nb * n];

    for (k, &s) in starts.iter().enumerate() {
        let (m, b) = (n - s, nb.min(n - s));
        let panel = &mut v_store[offsets[k]..offsets[k] + m * b];
        for j in 0..b {
            panel[j * m..(j + 1) * m].copy_from_slice(&y[(s + j) * n + s..(s + j + 1) * n]);
        }
        isa.run(PanelQr {
            panel,
            rows: m,
            tau: &mut tau[s..s + b],
            rdiag: &mut rdiag[s..s + b],
        });
        let v = MatRef::from_column_major_slice(&v_store[offsets[k]..offsets[k] + m * b], m, b);
        let mut gm = MatMut::from_column_major_slice_mut(&mut g[..b * b], b, b);
        matmul(gm.as_mut(), Accum::Replace, v.transpose(), v, 1.0, faer::Par::Seq);
        let t = &mut t_blocks[k * nb * nb..k * nb * nb + b * b];
        block_factor(&g[..b * b], &tau[s..s + b], t);
        if s + b < n {
            let t = MatRef::from_column_major_slice(t, b, b);
            let mut u = MatMut::from_column_major_slice_mut(&mut u_qr[..m * b], m, b);
            matmul(u.as_mut(), Accum::Replace, v, t.transpose(), 1.0, faer::Par::Seq);
            let ym = MatMut::from_column_major_slice_mut(y, n, n);
            apply_block(
                v,
                u.as_ref(),
                ym.submatrix_mut(s, s + b, m, n - s - b),
                &mut w,
                fp,
            );
        }
    }

    q.fill(0.0);
    q.rb_mut().diagonal_mut().fill(1.0);
    for (k, &s) in starts.iter().enumerate().rev() {
        let (m, b) = (n - s, nb.min(n - s));
        let v = MatRef::from_column_major_slice(&v_store[offsets[k]..offsets[k] + m * b], m, b);
        let t = MatRef::from_column_major_slice(&t_blocks[k * nb * nb..k * nb * nb + b * b], b, b);
        let mut u = MatMut::from_column_major_slice_mut(&mut u_q[..m * b], m, b);
        matmul(u.as_mut(), Accum::Replace, v, t, 1.0, faer::Par::Seq);
        apply_block(
            v,
            u.as_ref(),
            q.rb_mut().submatrix_mut(s, s, m, m),
            &mut w,
            fp,
        );
    }
    for (j, &r) in rdiag.iter().enumerate() {
        if r < 0.0 {
            q.rb_mut().col_mut(j).iter_mut().for_each(|x| *x = -*x);
        }
    }
    rdiag
}

use faer::reborrow::ReborrowMut;

/// `out_j = x_j . y_j` for the columns `x_j` and those of `y` (column-major, stride `rows`).
struct ColumnDots<'a> {
    x: &'a [&'a [f32]],
    y: &'a [f32],
    rows: usize,
    out: &'a mut [f32],
}

impl WithSimd for ColumnDots<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let m = self.rows;
        for (j, o) in self.out.iter_mut().enumerate() {
            *o = dot(simd, self.x[j], &self.y[j * m..(j + 1) * m]);
        }
    }
}

/// `x_j . y_j` for the columns `x_j` (each `rows` long) and those of `y` (column-major, stride
/// `rows`).
pub(crate) fn column_dots(isa: Isa, x: &[&[f32]], y: &[f32], rows: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    isa.run(ColumnDots {
        x,
        y,
        rows,
        out: &mut out,
    });
    out
}
