//! # Householder QR of a square f32 matrix, returning `Q` with `R`'s diagonal non-negative
//!
//! **Method** (LAPACK's `sgeqrf` then `sorgqr`, blocked right-looking, compact WY):
//!
//! ```text
//! for each panel of nb = 32 columns starting at s (rows s..n), as two sub-panels of 16:
//!     factor sub-panel 1 column by column: x = the column from its diagonal down,
//!         beta = -sign(x_0) ||x||, v = x / (x_0 - beta) (v_0 = 1), tau = (beta - x_0) / beta,
//!         H = I - tau v v^T applied to the sub-panel's later columns (four at a time);
//!         beta is R's diagonal entry
//!     T_1 from G = V_1^T V_1 (below); sub-panel 2 <- (I - V_1 T_1 V_1^T)^T sub-panel 2 (GEMMs);
//!     factor sub-panel 2 (its rows from s + 16) column by column
//!     T (upper triangular) with H_s ... H_{s+b-1} = I - V T V^T, from G = V^T V:
//!         T_jj = tau_j,  T_{0..j, j} = -tau_j T_{0..j, 0..j} G_{0..j, j}   (each sub-panel)
//!         T = [T_1, -T_1 G_12 T_2; 0, T_2]
//!     trailing columns: W = C^T V, C <- C - V (W T)^T                (2 GEMMs + c x b x b)
//! Q = I; for each block from the last, with V = [V_1; V_2] (V_1 the b x b top):
//!     W = Q[s + b.., s + b..]^T V_2, Q[s.., s + b..] <- Q[s.., s + b..] - V (W T^T)^T
//!     Q[s.., s..s + b] <- [I; 0] - V (T V_1^T)
//! column j of Q negated where R_jj < 0
//! ```
//!
//! Block `s` of `Q`'s formation touches rows and columns `s..` only, and rows `s..s + b` of
//! the later columns are still zero (LAPACK's `sorgqr`): `4/3 n^3` flops, as the
//! factorisation. `T` multiplies the narrow `c x b` product `W`, so no `m x b` `V T` is
//! formed before the columns can be split.
//!
//! **Schedule**: a sequence of phases of two units each ([`phase_pairs`]): panel 0, factorised
//! straight from the input's columns (in the caller's order) while the other unit copies the
//! rest in that order; then each trailing update cut in two column ranges fixed by the shape
//! alone ([`split_columns`], the first of which also factorises the next panel: lookahead);
//! then each block of the formation cut at the middle of its later columns (the first range
//! also forms the block's own columns). On a pool of two or more threads the two units of a
//! phase run at once, on threads that spin between phases; on one thread one after the other,
//! with the same operands, so the results do not depend on the thread count.
//!
//! **Storage**: every matrix column-major; the sorted matrix in the caller's workspace, `V` of
//! block 0 in its first columns (panel 0 is read straight from the input) and of the later
//! blocks in the input's memory (which only the first phase reads), each kept explicitly
//! (`(n - s) x b`, unit diagonal, zeros above) so that the GEMMs (faer's `matmul`) see plain
//! dense operands.
//!
//! **Accuracy**: Householder QR is backward stable for any input, rank-deficient included
//! (a zero column gives `tau = 0`, `H = I`): `Q` is orthonormal to a few `n u`. `||x||` is
//! summed in f64, so it neither overflows nor underflows for finite f32 entries. The panel's
//! dot products and updates are vectorised (pulp), the trailing updates are faer GEMMs on
//! one thread each.
//!
//! **Reference**: [`crate::reference::refresh_power_qr`] (Gram-Schmidt twice in f64, the same
//! `Q`), through the `PowerQr` refresh (`tests/basis.rs`).

use crate::dispatch::{phase_pairs, Isa, Shared, SharedCols};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use pulp::{Simd, WithSimd};

/// Columns per Householder block (the trailing updates' and the formation's inner dimension),
/// for every `n`: fixed, like every cut of the work, so the bits do not depend on the threads.
/// Each block's panel is factorised as two sub-panels of [`SUB_PANEL`] columns.
// PERF: AMD Zen 5, the power refresh, best of 1000-1500 calls, alternating builds, against 16
// columns factorised column by column (which had beaten 8-64 such columns at 256): 0.510-0.526
// against 0.556-0.564 ms at 256 on one thread, 0.365-0.373 against 0.369-0.383 on two; the
// same within the noise at 128 (0.105 against 0.104 on one thread) and 1024 (30.7-33.9 against
// 32.4-38.0 ms on one thread, 17.7-21.2 against 20.0-20.8 on two). The trailing GEMMs with an
// inner dimension of 32 run at 190-196 GFLOP/s against 160-166 with 16 (faer, 256 rows, alone);
// the sub-panels keep the level-2 work of 16-column panels.
const QR_BLOCK: usize = 32;

/// Columns factorised column by column (level 2) within a panel.
const SUB_PANEL: usize = 16;

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
    let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
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
        let y = simd.mul_add_f32s(a, simd.partial_load_f32s(xt), simd.partial_load_f32s(yt));
        simd.partial_store_f32s(yt, y);
    }
}

/// `v . c_i` for four columns `c_i` as long as `v` (one pass over `v`).
#[inline(always)]
fn dots4<S: Simd>(simd: S, v: &[f32], cs: &[&mut [f32]; 4]) -> [f32; 4] {
    let (vb, vt) = S::as_simd_f32s(v);
    let n = vb.len();
    let bodies = [
        &S::as_simd_f32s(&cs[0][..]).0[..n],
        &S::as_simd_f32s(&cs[1][..]).0[..n],
        &S::as_simd_f32s(&cs[2][..]).0[..n],
        &S::as_simd_f32s(&cs[3][..]).0[..n],
    ];
    let mut acc = [simd.splat_f32s(0.0); 4];
    for i in 0..n {
        for c in 0..4 {
            acc[c] = simd.mul_add_f32s(vb[i], bodies[c][i], acc[c]);
        }
    }
    if !vt.is_empty() {
        let t = simd.partial_load_f32s(vt);
        for c in 0..4 {
            let x = simd.partial_load_f32s(S::as_simd_f32s(&cs[c][..]).1);
            acc[c] = simd.mul_add_f32s(t, x, acc[c]);
        }
    }
    // Written out: array `map` is not inlined into the SIMD context.
    [
        simd.reduce_sum_f32s(acc[0]),
        simd.reduce_sum_f32s(acc[1]),
        simd.reduce_sum_f32s(acc[2]),
        simd.reduce_sum_f32s(acc[3]),
    ]
}

/// `c_i <- c_i + alpha_i v` for four columns `c_i` as long as `v` (one pass over `v`).
#[inline(always)]
fn axpys4<S: Simd>(simd: S, alpha: [f32; 4], v: &[f32], cs: &mut [&mut [f32]; 4]) {
    let a = [
        simd.splat_f32s(alpha[0]),
        simd.splat_f32s(alpha[1]),
        simd.splat_f32s(alpha[2]),
        simd.splat_f32s(alpha[3]),
    ];
    let (vb, vt) = S::as_simd_f32s(v);
    let n = vb.len();
    let [c0, c1, c2, c3] = cs;
    let (b0, t0) = S::as_mut_simd_f32s(c0);
    let (b1, t1) = S::as_mut_simd_f32s(c1);
    let (b2, t2) = S::as_mut_simd_f32s(c2);
    let (b3, t3) = S::as_mut_simd_f32s(c3);
    let (b0, b1, b2, b3) = (&mut b0[..n], &mut b1[..n], &mut b2[..n], &mut b3[..n]);
    for i in 0..n {
        let x = vb[i];
        b0[i] = simd.mul_add_f32s(a[0], x, b0[i]);
        b1[i] = simd.mul_add_f32s(a[1], x, b1[i]);
        b2[i] = simd.mul_add_f32s(a[2], x, b2[i]);
        b3[i] = simd.mul_add_f32s(a[3], x, b3[i]);
    }
    if !vt.is_empty() {
        let x = simd.partial_load_f32s(vt);
        for (c, t) in [t0, t1, t2, t3].into_iter().enumerate() {
            let y = simd.mul_add_f32s(a[c], x, simd.partial_load_f32s(t));
            simd.partial_store_f32s(t, y);
        }
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
    /// Distance between the panel's columns (at least `rows`).
    stride: usize,
    tau: &'a mut [f32],
    rdiag: &'a mut [f32],
}

impl WithSimd for PanelQr<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (m, ld) = (self.rows, self.stride);
        let cols = self.tau.len();
        for j in 0..cols.min(m) {
            let (left, right) = self.panel.split_at_mut(j * ld + m);
            let col = &mut left[j * ld..];
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
                let rest = cols - j - 1;
                // Four columns per pass over v, then one at a time.
                // Column `j + 1 + i` starts at `ld - m + i ld` in `right`.
                let right = if rest > 0 {
                    &mut right[ld - m..]
                } else {
                    right
                };
                let mut it = right.chunks_mut(ld).take(rest).map(|c| &mut c[j..m]);
                loop {
                    match (it.next(), it.next(), it.next(), it.next()) {
                        (Some(c0), Some(c1), Some(c2), Some(c3)) => {
                            let mut cs = [c0, c1, c2, c3];
                            let d = dots4(simd, v, &cs);
                            let alpha = [-tau * d[0], -tau * d[1], -tau * d[2], -tau * d[3]];
                            axpys4(simd, alpha, v, &mut cs);
                        }
                        (c0, c1, c2, _) => {
                            for c in [c0, c1, c2].into_iter().flatten() {
                                let d = tau * dot(simd, v, c);
                                axpy(simd, -d, v, c);
                            }
                            break;
                        }
                    }
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
/// as a sum of `T`'s whole columns (vectors; the rows under each column's diagonal add zeros).
#[inline(always)]
fn block_factor<S: Simd>(simd: S, g: &[f32], tau: &[f32], t: &mut [f32]) {
    let b = tau.len();
    t.fill(0.0);
    for j in 0..b {
        let (done, rest) = t.split_at_mut(j * b);
        let col = &mut rest[..b];
        for k in 0..j {
            axpy(simd, g[k + j * b], &done[k * b..(k + 1) * b], col);
        }
        scale(simd, -tau[j], &mut col[..j]);
        col[j] = tau[j];
    }
}

/// `C <- C - V op(T) (V_2^T C_2)` for `C` (`m x c`) whose first `m - rows(V_2)` rows are zero,
/// `C_2` the others (all of `C` when `V_2` is `V`), `op(T) = T^T` when `transpose` (applying
/// `Q^T`, the factorisation) and `T` otherwise (applying `Q`, the formation). As
/// `W = C_2^T V_2` (`c x b`), `W_2 = W op(T)^T`, `C <- C - V W_2^T`: `T` is applied on the
/// narrow side, by whichever unit owns these columns. `w` holds `2 c b`.
fn apply_block(
    v: MatRef<'_, f32>,
    v2: MatRef<'_, f32>,
    t: MatRef<'_, f32>,
    transpose: bool,
    mut c: MatMut<'_, f32>,
    w: &mut [f32],
) {
    let (b, n, top) = (v2.ncols(), c.ncols(), c.nrows() - v2.nrows());
    if n == 0 {
        return;
    }
    let seq = faer::Par::Seq;
    let (w, w2) = w[..2 * b * n].split_at_mut(b * n);
    let mut w = MatMut::from_column_major_slice_mut(w, n, b);
    let mut w2 = MatMut::from_column_major_slice_mut(w2, n, b);
    matmul(
        w.as_mut(),
        Accum::Replace,
        c.as_ref().subrows(top, v2.nrows()).transpose(),
        v2,
        1.0,
        seq,
    );
    let t = if transpose { t } else { t.transpose() };
    matmul(w2.as_mut(), Accum::Replace, w.as_ref(), t, 1.0, seq);
    matmul(
        c.as_mut(),
        Accum::Add,
        v,
        w2.as_ref().transpose(),
        -1.0,
        seq,
    );
}

/// Where the columns handed to the first of two units end: `columns` split so that the
/// first, which also factorises the next panel (`next` columns, which it must own), gets
/// about twice the block size `nb` fewer columns than the second (the trailing update that
/// one panel factorisation costs about as much as). Fixed by the shape alone, so the GEMMs'
/// operands, and with them the results, do not depend on the thread count.
fn split_columns(columns: usize, next: usize, nb: usize) -> usize {
    (columns.saturating_sub(2 * nb) / 2)
        .next_multiple_of(16)
        .clamp(next, columns)
}

/// One block's reflectors: `V` (`m x b`) and `T`, with `tau` and `R`'s diagonal.
struct Block<'a> {
    v: &'a mut [f32],
    t: &'a mut [f32],
    tau: &'a mut [f32],
    rdiag: &'a mut [f32],
}

/// Copies the panel, whose column `j` (from the panel's first row down, `m` long) is
/// `column(j)`, into `block.v` and factorises it there, as two sub-panels when it is wider
/// than [`SUB_PANEL`] (see the module docs); forms `T`.
fn factor_panel<'y>(isa: Isa, column: impl Fn(usize) -> &'y [f32], m: usize, block: Block<'_>) {
    let b = block.tau.len();
    for j in 0..b {
        block.v[j * m..(j + 1) * m].copy_from_slice(&column(j)[..m]);
    }
    let h = b.min(SUB_PANEL);
    let (first, second) = block.v[..m * b].split_at_mut(m * h);
    isa.run(PanelQr {
        panel: first,
        rows: m,
        stride: m,
        tau: &mut block.tau[..h],
        rdiag: &mut block.rdiag[..h],
    });
    let v1 = MatRef::from_column_major_slice(first, m, h);
    // `G = V^T V_2`, `V_2` the columns from `h` on (all of them for one sub-panel), `b x r`.
    let r = if b > h { b - h } else { b };
    let mut g = [0.0f32; QR_BLOCK * QR_BLOCK];
    let mut t1 = [0.0f32; SUB_PANEL * SUB_PANEL];
    if b > h {
        // The first sub-panel's `T_1` applied to the second, whose rows from `h` are then
        // factorised; its first `h` rows (`R`'s entries, which nobody reads) become `V`'s zeros.
        gram(v1, v1, &mut g[..h * h]);
        isa.run(BlockFactor {
            g: &g[..h * h],
            t1: &[],
            tau: &block.tau[..h],
            t: &mut t1,
        });
        let mut w = [0.0f32; 2 * SUB_PANEL * SUB_PANEL];
        let c = MatMut::from_column_major_slice_mut(&mut *second, m, r);
        apply_block(
            v1,
            v1,
            MatRef::from_column_major_slice(&t1, h, h),
            true,
            c,
            &mut w,
        );
        isa.run(PanelQr {
            panel: &mut second[h..],
            rows: m - h,
            stride: m,
            tau: &mut block.tau[h..],
            rdiag: &mut block.rdiag[h..],
        });
        for col in second.chunks_exact_mut(m) {
            col[..h].fill(0.0);
        }
    }
    let v = MatRef::from_column_major_slice(&block.v[..m * b], m, b);
    gram(v, v.subcols(b - r, r), &mut g[..b * r]);
    isa.run(BlockFactor {
        g: &g[..b * r],
        t1: &t1,
        tau: block.tau,
        t: &mut block.t[..b * b],
    });
}

/// `g <- x^T y` (column-major, `x.ncols() x y.ncols()`).
fn gram(x: MatRef<'_, f32>, y: MatRef<'_, f32>, g: &mut [f32]) {
    matmul(
        MatMut::from_column_major_slice_mut(g, x.ncols(), y.ncols()),
        Accum::Replace,
        x.transpose(),
        y,
        1.0,
        faer::Par::Seq,
    );
}

/// `T` of a whole panel ([`block_factor`] or [`merged_block_factor`]), its columns summed as
/// vectors of the instruction set.
// PERF: as plain loops (which LLVM left scalar below 64 elements) these took 3-6% of the
// refresh's samples at 256 (AMD Zen 5), as pulp vectors 1.7%.
struct BlockFactor<'a> {
    /// `V^T V_2` (see [`factor_panel`]).
    g: &'a [f32],
    /// The first sub-panel's `T_1` (unused for one sub-panel).
    t1: &'a [f32],
    tau: &'a [f32],
    t: &'a mut [f32],
}

impl WithSimd for BlockFactor<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        if self.tau.len() <= SUB_PANEL {
            block_factor(simd, self.g, self.tau, self.t);
        } else {
            merged_block_factor(simd, self.g, self.t1, &self.tau[SUB_PANEL..], self.t);
        }
    }
}

/// `T` of a panel of two sub-panels (`SUB_PANEL` and `r` columns) from `G = V^T V_2`
/// (`b x r`: `G_12` over `G_22`), the first's `T_1` and the second's `tau`s:
/// `T = [T_1, -T_1 G_12 T_2; 0, T_2]`, `T_2` from `G_22` by [`block_factor`].
#[inline(always)]
fn merged_block_factor<S: Simd>(simd: S, g: &[f32], t1: &[f32], tau2: &[f32], t: &mut [f32]) {
    let (h, r) = (SUB_PANEL, tau2.len());
    let b = h + r;
    let mut g22 = [0.0f32; SUB_PANEL * SUB_PANEL];
    for j in 0..r {
        g22[j * r..(j + 1) * r].copy_from_slice(&g[h + j * b..][..r]);
    }
    let mut t2 = [0.0f32; SUB_PANEL * SUB_PANEL];
    block_factor(simd, &g22[..r * r], tau2, &mut t2[..r * r]);
    // X = G_12 T_2 (h x r), T_12 = -T_1 X, a sum of whole columns each.
    let mut x = [0.0f32; SUB_PANEL * SUB_PANEL];
    for j in 0..r {
        for k in 0..=j {
            axpy(
                simd,
                t2[k + j * r],
                &g[k * b..][..h],
                &mut x[j * h..(j + 1) * h],
            );
        }
    }
    t.fill(0.0);
    for j in 0..h {
        t[j * b..j * b + h].copy_from_slice(&t1[j * h..(j + 1) * h]);
    }
    for j in 0..r {
        let col = &mut t[(h + j) * b..(h + j + 1) * b];
        for k in 0..h {
            axpy(simd, -x[k + j * h], &t1[k * h..(k + 1) * h], &mut col[..h]);
        }
        col[h..].copy_from_slice(&t2[j * r..(j + 1) * r]);
    }
}

/// Factorises the square matrix whose column `j` is column `order[j]` of `product`
/// (column-major, `n x n`), and writes its `Q`, with `R`'s diagonal made non-negative, into
/// `q` (`n x n`, unit row stride, zero on entry: the formation writes every entry, and of
/// those it has not written reads only the zeros above the diagonal blocks). `y` (`n * n`,
/// any content) holds the sorted matrix, and `product`, once read, the reflectors. Returns
/// `R`'s diagonal before the sign change (non-finite when the factorisation overflowed).
///
/// The work is a sequence of phases of two units each ([`phase_pairs`]): in the first, unit 0
/// factorises panel 0 from the product's columns while unit 1 copies the others in order into
/// `y`; each trailing update is cut in two column ranges fixed by the shape
/// ([`split_columns`]), the first unit also factorising the next panel (lookahead); each block
/// of the formation of `Q` is cut at the middle of its later columns, the first unit also
/// forming the block's own columns. On two or more threads the two units of a phase run at
/// once; on one, one after the other with the same operands, so the results do not depend on
/// the thread count.
pub(crate) fn householder_q(
    isa: Isa,
    order: &[usize],
    product: &mut [f32],
    y: &mut [f32],
    n: usize,
    mut q: MatMut<'_, f32>,
    fp: faer::Par,
) -> Vec<f32> {
    assert!(y.len() == n * n && q.nrows() == n && q.ncols() == n && product.len() == n * n);
    assert!(order.len() == n);
    let nb = QR_BLOCK.min(n.max(1));
    let starts: Vec<usize> = (0..n).step_by(nb).collect();
    let blocks = starts.len();
    let bsize = |k: usize| nb.min(n - starts[k]);
    // V of block k at offsets[k]..offsets[k + 1], (n - s) x b, column-major.
    let mut offsets = vec![0usize];
    for &s in &starts {
        let last = offsets[offsets.len() - 1];
        offsets.push(last + (n - s) * nb.min(n - s));
    }
    let tb = nb * nb;
    let (mut rdiag, mut tau) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut t_store = vec![0.0f32; blocks * tb];
    // Each unit's `W` and `W_2` (`2 nb n`).
    let mut work = vec![0.0f32; 4 * nb * n];
    let ws = 2 * nb * n;
    // Phase 0 factorises panel 0, phases 1..blocks apply block p - 1 to the trailing columns,
    // phases blocks..2 blocks form Q from the last block back to the first.
    let phases = 2 * blocks;
    // Block 0's V (`offsets[1]` floats, the size of y's first b columns) goes where y's
    // first columns would be, which nothing else uses: the sorted matrix's panel 0 is read
    // straight from the product, and the trailing updates start after it. The product's
    // memory, which the first phase still reads, holds the other blocks' V.
    let (ys, vs, ts) = (
        Shared::new(y),
        Shared::new(product),
        Shared::new(&mut t_store),
    );
    let (taus, rs, qs, wsh) = (
        Shared::new(&mut tau),
        Shared::new(&mut rdiag),
        SharedCols::new(q.rb_mut()),
        Shared::new(&mut work),
    );
    let unit = |p: usize, h: usize| {
        // SAFETY (every `get` and `get_mut` below): the buffers outlive `phase_pairs` and are
        // not used directly while it runs. Within a phase the two units write disjoint ranges:
        // the columns of `y` or `q` at or after `first` for unit 1 and before it for unit 0,
        // the workspace half `h`, and (unit 0 only) the next block's `V`, `T`, `tau` and `R`
        // diagonal, which nothing reads in that phase. What both read (this block's `V` and
        // `T`) nothing writes in that phase. In phase 0 both read the whole product, which
        // nothing writes until phase 1 (block 0's `V` is in `y`'s first `b` columns, which
        // unit 0 writes), and unit 1 writes `y`'s columns from `b` on, which nothing reads in
        // that phase. Phases are ordered by `phase_pairs`.
        if p == 0 {
            let b = bsize(0);
            let src = unsafe { vs.get(0..n * n) };
            if h == 1 {
                let y = unsafe { ys.get_mut(b * n..n * n) };
                for (dst, &o) in y.chunks_exact_mut(n).zip(&order[b..]) {
                    dst.copy_from_slice(&src[o * n..(o + 1) * n]);
                }
            } else if n > 0 {
                let block = unsafe {
                    Block {
                        v: ys.get_mut(0..offsets[1]),
                        t: ts.get_mut(0..tb),
                        tau: taus.get_mut(0..b),
                        rdiag: rs.get_mut(0..b),
                    }
                };
                factor_panel(isa, |j| &src[order[j] * n..(order[j] + 1) * n], n, block);
            }
            return;
        }
        let (factor, k) = if p < blocks {
            (true, p - 1)
        } else {
            (false, phases - 1 - p)
        };
        let (s, b) = (starts[k], bsize(k));
        let (m, later) = (n - s, n - s - b);
        let v = MatRef::from_column_major_slice(
            unsafe {
                if k == 0 {
                    ys.get(0..offsets[1])
                } else {
                    vs.get(offsets[k]..offsets[k + 1])
                }
            },
            m,
            b,
        );
        let t = MatRef::from_column_major_slice(
            unsafe { &ts.get(k * tb..(k + 1) * tb)[..b * b] },
            b,
            b,
        );
        let w = unsafe { wsh.get_mut(h * ws..(h + 1) * ws) };
        if factor {
            let next = bsize(k + 1);
            let first = s + b + split_columns(later, next, nb);
            let (c0, c1) = if h == 0 { (s + b, first) } else { (first, n) };
            let cols = unsafe { ys.get_mut(c0 * n..c1 * n) };
            let c = MatMut::from_column_major_slice_mut(cols, n, c1 - c0);
            apply_block(v, v, t, true, c.submatrix_mut(s, 0, m, c1 - c0), w);
            if h == 0 {
                let (s1, o) = (s + b, k + 1);
                let block = unsafe {
                    Block {
                        v: vs.get_mut(offsets[o]..offsets[o + 1]),
                        t: ts.get_mut(o * tb..(o + 1) * tb),
                        tau: taus.get_mut(s1..s1 + next),
                        rdiag: rs.get_mut(s1..s1 + next),
                    }
                };
                let cols: &[f32] = cols;
                factor_panel(isa, |j| &cols[j * n + s1..(j + 1) * n], n - s1, block);
            }
        } else {
            // Q[s.., s..] = [[I, 0], [0, Q']] before this block: its own columns become
            // [I; 0] - V T V_1^T, the later ones Q[s.., s + b..] - V T (V_2^T Q').
            let first = s
                + b
                + (later.saturating_sub(b) / 2)
                    .next_multiple_of(16)
                    .min(later);
            let (c0, c1) = if h == 0 { (s, first) } else { (first, n) };
            let c = unsafe { qs.cols_mut(c0, c1) }.subrows_mut(s, m);
            let v2 = v.subrows(b, later);
            if h == 0 {
                let (own, rest) = c.split_at_col_mut(b);
                // T V_1^T (b x b) in the workspace's second half, then V times it.
                let (_, x) = w.split_at_mut(ws / 2);
                let mut x = MatMut::from_column_major_slice_mut(&mut x[..b * b], b, b);
                matmul(
                    x.as_mut(),
                    Accum::Replace,
                    t,
                    v.subrows(0, b).transpose(),
                    1.0,
                    faer::Par::Seq,
                );
                let mut own = own;
                matmul(
                    own.rb_mut(),
                    Accum::Replace,
                    v,
                    x.as_ref(),
                    -1.0,
                    faer::Par::Seq,
                );
                for j in 0..b {
                    own[(j, j)] += 1.0;
                }
                apply_block(v, v2, t, false, rest, w);
            } else {
                apply_block(v, v2, t, false, c, w);
            }
        }
    };
    phase_pairs(fp.degree() > 1, phases, &unit);
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
