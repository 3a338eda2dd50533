//! # Gauss-Newton diagonal accumulation (f32 data, f32 output)
//!
//! `H_GN = (1/N) sum_n J_n^T Lambda_n J_n`; these kernels compute `h = diag(U^T H_GN U)` without
//! forming `H_GN`, fused with the running estimate
//!
//! ```text
//! h <- beta * h + (1 - beta) * h_batch          (beta = 0: replace; the old h is not read)
//! ```
//!
//! | kernel | `h_batch` |
//! | --- | --- |
//! | [`gn_diag_weighted`] | `h_j = (1/N) sum_n w_n x_nj^2` (`w = 1` when no weights) |
//! | [`gn_diag_logistic`] | the same with `w_n = s_n (1 - s_n)`, `s_n = sigmoid(z_n)` |
//! | [`gn_diag_linear`] | `h = S^T (X o X) / N`; bias `h_c = (1/N) sum_n s_nc` |
//! | [`gn_diag_softmax`] | `S` from logits: `p (1 - p)` ([`GnEstimator::Exact`]) or `(p - e_y)^2` with `y ~ softmax(z_n)` ([`GnEstimator::Sampled`], Sophia's GNB) |
//! | [`gn_diag_weighted_in_basis`] | `h_k = (1/N) sum_n w_n (x_n . U[:, k])^2` |
//! | [`gn_diag_softmax_in_kronecker`] | `A_na = sum_c p_nc Q_C[c,a]^2 - (Q_C[:,a] . p_n)^2`, `B_nb = (Q_X[:,b] . x_n)^2`, `h = A^T B / N` |
//!
//! **Storage**: `X`, `S` and the logits are [`Samples`] views: `n_samples` rows of `dim` (or
//! `d_in`, `classes`) floats, row-major; the weighted kernels take any `row_stride >= dim`, the
//! layer kernels contiguous rows. `h` of a layer is `classes x d_in` row-major (the layout of
//! `W` in `z = W x`). Bases are faer views (any strides).
//!
//! **Blocking and determinism**: the identity-basis kernel reads `X` once. Rows are summed in f32
//! in sample order over sub-blocks of [`SUB_BLOCK_ROWS`] rows (`acc = fma(w x, x, acc)`, or
//! `fma(x, x, acc)` without weights: the same value), each sub-block is added into an f64 sum,
//! and blocks are combined along a tree fixed by the shape alone. The GEMM-shaped kernels work on
//! fixed sample blocks (row-independent products) and then form `S^T B` one fixed column block
//! of `h` at a time with sequential GEMMs (`dispatch::gemm_seq`: the `gemm` crate, faer's
//! backend, which scales the destination as it adds to it); the item that owns a column block
//! also squares its columns of `X` and sums a fixed range of the bias's classes (each class in
//! sample order). So every kernel gives bitwise identical results for any thread count. The
//! identity-basis kernel is also bitwise identical across instruction sets; the GEMM-shaped ones
//! use the GEMM's own instruction set and agree with the reference to the bound stated in
//! `tests/gn.rs`.
//!
//! **Accuracy** (see `tests/gn.rs` for the bounds): the identity-basis kernel's relative error
//! against [`crate::reference::gn_diag_weighted`] is about `SUB_BLOCK_ROWS * eps` at worst
//! (measured against `sum_n |w_n| x_nj^2`); the GEMM-shaped kernels are f32 GEMMs of length
//! `n_samples` (or `dim`).
//!
//! **Softmax factors** are computed once per sample, in f32 SIMD lanes with no libm call
//! ([`crate::kernels::math`]): `z - max` as an exact f32 pair, `e = exp(z - max)` (2 ulp), the
//! sum of all but one maximum compensated per lane and combined in f64, `p = e / S`, and
//! `1 - p` as `(S - 1) / S` at the maximum (no cancellation when `p` is near 1). `p` is within
//! 3 ulp, each factor `p (1 - p)` within 6 ulp and `(p - e_y)^2` within 7 ulp of the exact
//! value (`tests/gn.rs`; the layer's result within `n_samples + 8` ulp). The logistic weights
//! are f32 lanes too.
//!
//! **Sampled labels**: the label of sample `n` is drawn by inverting the CDF of `softmax(z_n)`
//! at [`gn_sample_uniform`]`(seed, n)`, a counter-based generator: the draw does not depend on
//! threads or blocking, and `E[(p_c - [y = c])^2] = p_c (1 - p_c)`, so the estimate is unbiased
//! for the exact diagonal. The kernels invert the CDF of their f32 exponentials (cumulative
//! sums in f64, in class order over chunks of 64 classes); [`gn_sample_label`] states the same
//! rule on f64 probabilities, and the two agree except when the uniform falls within rounding
//! (about `1e-7`) of a boundary of the CDF.

use crate::dispatch::{self, Isa, Par, Split};
use crate::error::{check_beta, check_lengths, check_samples, Error, ErrorKind, Result};
use crate::kernels::gn::samples::Samples;
use crate::kernels::map::{map_into, Lane};
use crate::kernels::math;
use faer::linalg::matmul::matmul;
use faer::reborrow::{IntoConst, ReborrowMut};
use faer::{Accum, MatMut, MatRef};
use pulp::{Simd, WithSimd};

/// Rows summed in f32 before they are added into the f64 sum.
pub const SUB_BLOCK_ROWS: usize = 32;
/// Sample rows per GEMM block of the in-basis kernels (a multiple of [`SUB_BLOCK_ROWS`]).
pub const GEMM_BLOCK_ROWS: usize = 128;
/// Columns of `h` per sequential GEMM of the layer kernels.
pub const GEMM_BLOCK_COLS: usize = 256;

/// How a softmax layer's output factors are estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GnEstimator {
    /// The exact GN diagonal: `s_nc = p_nc (1 - p_nc)` (in a basis: the full `Lambda_n`).
    Exact,
    /// Sophia's Gauss-Newton-Bartlett estimate: the squared gradient of the loss at a label drawn
    /// from the model, `s_nc = (p_nc - [c = y_n])^2`; unbiased for the exact diagonal.
    Sampled,
}

// ---------------------------------------------------------------------------------------------
// Shared checks.

fn product(name: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::length(format!("{name}: {a} x {b} overflows")))
}

/// Checks that `m` has the rows of a batch of `n_samples` samples.
fn check_rows(name: &str, m: Samples<'_>, n_samples: usize) -> Result<()> {
    if m.n_samples() != n_samples {
        return Err(Error::length(format!(
            "{name} has {} rows, expected n_samples = {n_samples}",
            m.n_samples()
        )));
    }
    Ok(())
}

/// Checks that `m` is a contiguous row-major matrix (the layer kernels' layout).
fn check_contiguous(name: &str, m: Samples<'_>) -> Result<()> {
    if !m.is_contiguous() {
        return Err(Error::length(format!(
            "{name}: row_stride = {} but the layer kernels take contiguous rows (row_stride = {})",
            m.row_stride(),
            m.dim()
        )));
    }
    Ok(())
}

/// `h <- beta h + (1 - beta) * sum / n` in f64, rounded once (beta = 0: replace).
fn finish_ema(h: &mut [f32], sum: &[f64], n_samples: usize, beta: f32) {
    let beta = beta as f64;
    let scale = (1.0 - beta) / n_samples as f64;
    for (h, &s) in h.iter_mut().zip(sum) {
        *h = if beta == 0.0 {
            (s / n_samples as f64) as f32
        } else {
            (beta * *h as f64 + scale * s) as f32
        };
    }
}

// ---------------------------------------------------------------------------------------------
// Identity basis: a streaming weighted sum of squares.

/// `n_rows` rows of a strided row-major matrix, with optional per-row weights (a piece of a
/// [`Samples`] view that can be split by rows).
#[derive(Clone, Copy)]
struct Rows<'a> {
    x: &'a [f32],
    weights: Option<&'a [f32]>,
    n_rows: usize,
    row_stride: usize,
    dim: usize,
}

impl Split for Rows<'_> {
    fn len(&self) -> usize {
        self.n_rows
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (x0, x1) = self.x.split_at((mid * self.row_stride).min(self.x.len()));
        let (w0, w1) = match self.weights {
            Some(w) => {
                let (a, b) = w.split_at(mid);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        (
            Rows {
                x: x0,
                weights: w0,
                n_rows: mid,
                ..self
            },
            Rows {
                x: x1,
                weights: w1,
                n_rows: self.n_rows - mid,
                ..self
            },
        )
    }
}

impl<'a> Rows<'a> {
    fn new(x: Samples<'a>, weights: Option<&'a [f32]>) -> Self {
        Rows {
            x: x.data(),
            weights,
            n_rows: x.n_samples(),
            row_stride: x.row_stride(),
            dim: x.dim(),
        }
    }

    fn row(&self, r: usize) -> &'a [f32] {
        &self.x[r * self.row_stride..][..self.dim]
    }

    fn weight(&self, r: usize) -> f32 {
        self.weights.map_or(1.0, |w| w[r])
    }
}

/// `acc + (w x) x`, one fused multiply-add: the lane function of the body and the tail.
/// Unweighted (`WEIGHTED = false`), `acc + x x`: the same value, since `1 * x == x` exactly.
#[inline(always)]
fn sumsq_lane<S: Simd, const WEIGHTED: bool>(
    simd: S,
    acc: S::f32s,
    x: S::f32s,
    w: S::f32s,
) -> S::f32s {
    let wx = if WEIGHTED { simd.mul_f32s(w, x) } else { x };
    simd.mul_add_f32s(wx, x, acc)
}

/// Adds `sum_r w_r x_r o x_r` over the rows, in row order, into the f32 accumulator.
struct SumSqRows<'a, const WEIGHTED: bool> {
    rows: Rows<'a>,
    acc: &'a mut [f32],
}

/// Rows `r..r + R` added into the accumulator, in row order (body and masked tail).
#[inline(always)]
fn sumsq_pass<S: Simd, const R: usize, const WEIGHTED: bool>(
    simd: S,
    rows: &Rows<'_>,
    r: usize,
    acc_body: &mut [S::f32s],
    acc_tail: &mut [f32],
) {
    let n = acc_body.len();
    let x: [(&[S::f32s], &[f32]); R] = core::array::from_fn(|k| S::as_simd_f32s(rows.row(r + k)));
    let body: [&[S::f32s]; R] = core::array::from_fn(|k| &x[k].0[..n]);
    let w: [S::f32s; R] = core::array::from_fn(|k| simd.splat_f32s(rows.weight(r + k)));
    for i in 0..n {
        let mut a = acc_body[i];
        for k in 0..R {
            a = sumsq_lane::<S, WEIGHTED>(simd, a, body[k][i], w[k]);
        }
        acc_body[i] = a;
    }
    if !acc_tail.is_empty() {
        let mut a = simd.partial_load_f32s(acc_tail);
        for k in 0..R {
            a = sumsq_lane::<S, WEIGHTED>(simd, a, simd.partial_load_f32s(x[k].1), w[k]);
        }
        simd.partial_store_f32s(acc_tail, a);
    }
}

impl<const WEIGHTED: bool> WithSimd for SumSqRows<'_, WEIGHTED> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { rows, acc } = self;
        let (acc_body, acc_tail) = S::as_mut_simd_f32s(acc);
        let mut r = 0;
        // PERF: eight rows per pass over the accumulator: one load and store of `acc` per eight
        // registers of X. The sum is still taken row by row, so grouping does not change it.
        while r + 8 <= rows.n_rows {
            sumsq_pass::<S, 8, WEIGHTED>(simd, &rows, r, acc_body, acc_tail);
            r += 8;
        }
        while r < rows.n_rows {
            sumsq_pass::<S, 1, WEIGHTED>(simd, &rows, r, acc_body, acc_tail);
            r += 1;
        }
    }
}

/// `sum_n w_n x_n o x_n` of one block of rows, in f64: f32 sums over sub-blocks of
/// [`SUB_BLOCK_ROWS`] rows, added in order.
fn sumsq_block(isa: Isa, rows: Rows<'_>) -> Vec<f64> {
    let mut sum = vec![0.0f64; rows.dim];
    let mut acc = vec![0.0f32; rows.dim];
    let mut rest = rows;
    while rest.n_rows > 0 {
        let take = rest.n_rows.min(SUB_BLOCK_ROWS);
        let (head, tail) = rest.split_at(take);
        acc.fill(0.0);
        if head.weights.is_some() {
            isa.run(SumSqRows::<true> {
                rows: head,
                acc: &mut acc,
            });
        } else {
            isa.run(SumSqRows::<false> {
                rows: head,
                acc: &mut acc,
            });
        }
        for (s, &a) in sum.iter_mut().zip(&acc) {
            *s += a as f64;
        }
        rest = tail;
    }
    sum
}

fn add_into(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    for (a, b) in a.iter_mut().zip(&b) {
        *a += b;
    }
    a
}

/// Rows per threading block of the streaming kernel: about 256 KiB of X, a multiple of
/// [`SUB_BLOCK_ROWS`]; depends on `dim` only.
fn stream_block_rows(dim: usize) -> usize {
    (65_536 / dim.max(1))
        .max(1)
        .next_multiple_of(SUB_BLOCK_ROWS)
}

fn check_weighted(
    x: Samples<'_>,
    weights: Option<&[f32]>,
    beta: f32,
    h_len: usize,
    h_expected: usize,
) -> Result<()> {
    check_samples(x.n_samples())?;
    if let Some(w) = weights {
        check_lengths(x.n_samples(), &[("weights", w.len())])?;
    }
    check_lengths(h_expected, &[("h", h_len)])?;
    check_beta(beta as f64)
}

/// `h_j <- beta h_j + (1 - beta) (1/N) sum_n w_n x_nj^2` (identity basis; `weights = None`
/// means all ones), on the best instruction set and the crate's pool. `x` holds the
/// `N = x.n_samples()` rows of `dim = x.dim()` floats; `h` has `dim` elements.
///
/// Errors ([`ErrorKind::Length`]): `n_samples == 0`, `weights` or `h` of the wrong length;
/// [`ErrorKind::InvalidHyperparameter`]: `beta` outside `[0, 1)`. Nothing is written on error.
pub fn gn_diag_weighted(
    x: Samples<'_>,
    weights: Option<&[f32]>,
    beta: f32,
    h: &mut [f32],
) -> Result<()> {
    gn_diag_weighted_with(Isa::detect(), Par::Pool, x, weights, beta, h)
}

/// [`gn_diag_weighted`] on a chosen instruction set and parallelism.
pub fn gn_diag_weighted_with(
    isa: Isa,
    par: Par,
    x: Samples<'_>,
    weights: Option<&[f32]>,
    beta: f32,
    h: &mut [f32],
) -> Result<()> {
    let (n_samples, dim) = (x.n_samples(), x.dim());
    check_weighted(x, weights, beta, h.len(), dim)?;
    if dim == 0 {
        return Ok(());
    }
    let rows = Rows::new(x, weights);
    let bytes = n_samples.saturating_mul(dim).saturating_mul(4);
    let sum = dispatch::map_reduce_blocks(
        dispatch::par_for_bytes(par, bytes),
        rows,
        stream_block_rows(dim),
        &|block| sumsq_block(isa, block),
        &add_into,
    )?;
    finish_ema(h, &sum, n_samples, beta);
    Ok(())
}

/// The logistic-regression GN weight `s (1 - s)`, `s = sigmoid(z)`, in f64 (written as
/// `e^-|z| / (1 + e^-|z|)^2`, exact for large `|z|`). [`gn_diag_logistic`] computes the same
/// formula in f32 lanes.
pub fn logistic_weight(logit: f64) -> f64 {
    let e = (-logit.abs()).exp();
    e / ((1.0 + e) * (1.0 + e))
}

/// `e / (1 + e)^2` with `e = exp(-|z|)`: the logistic weight `s (1 - s)` in f32, as a map.
#[derive(Clone, Copy)]
struct Logistic;

impl Lane for Logistic {
    #[inline(always)]
    fn lane<S: Simd>(self, simd: S, z: S::f32s) -> S::f32s {
        let e = math::exp_lane(simd, simd.neg_f32s(simd.abs_f32s(z)));
        let d = simd.add_f32s(simd.splat_f32s(1.0), e);
        simd.div_f32s(e, simd.mul_f32s(d, d))
    }
}

/// [`gn_diag_weighted`] with `w_n = s_n (1 - s_n)`, `s_n = sigmoid(logits[n])` (logistic
/// regression). The weights are computed in f32 as `e / (1 + e)^2`, `e = exp(-|z|)` with the
/// vectorised `exp` (within 6 ulp of the exact weight; the same bits on every instruction set).
pub fn gn_diag_logistic(x: Samples<'_>, logits: &[f32], beta: f32, h: &mut [f32]) -> Result<()> {
    gn_diag_logistic_with(Isa::detect(), Par::Pool, x, logits, beta, h)
}

/// [`gn_diag_logistic`] on a chosen instruction set and parallelism.
pub fn gn_diag_logistic_with(
    isa: Isa,
    par: Par,
    x: Samples<'_>,
    logits: &[f32],
    beta: f32,
    h: &mut [f32],
) -> Result<()> {
    let n_samples = x.n_samples();
    check_lengths(n_samples, &[("logits", logits.len())])?;
    check_weighted(x, Some(logits), beta, h.len(), x.dim())?;
    let mut weights = scratch("weights", n_samples)?;
    map_into(isa, logits, &mut weights, Logistic);
    gn_diag_weighted_with(isa, par, x, Some(&weights), beta, h)
}

// ---------------------------------------------------------------------------------------------
// Dense basis U: a GEMM per fixed sample block, then the weighted sum of squares.

/// `h_k <- beta h_k + (1 - beta) (1/N) sum_n w_n (x_n . U[:, k])^2`, i.e. the diagonal of
/// `U^T (X^T W X / N) U` without forming it (`= colsumsq(diag(sqrt w) X U) / N` for `w >= 0`).
/// `u` is `dim x k` (any strides; usually square and orthogonal) and `h` has `k` elements.
/// `X U` is formed one block of [`GEMM_BLOCK_ROWS`] samples at a time (faer GEMM) and summed
/// as in [`gn_diag_weighted`].
pub fn gn_diag_weighted_in_basis(
    x: Samples<'_>,
    weights: Option<&[f32]>,
    u: MatRef<'_, f32>,
    beta: f32,
    h: &mut [f32],
) -> Result<()> {
    gn_diag_weighted_in_basis_with(Isa::detect(), Par::Pool, x, weights, u, beta, h)
}

/// [`gn_diag_weighted_in_basis`] on a chosen instruction set (for the sum of squares; faer
/// picks its own for the GEMM) and parallelism.
pub fn gn_diag_weighted_in_basis_with(
    isa: Isa,
    par: Par,
    x: Samples<'_>,
    weights: Option<&[f32]>,
    u: MatRef<'_, f32>,
    beta: f32,
    h: &mut [f32],
) -> Result<()> {
    let (n_samples, dim, row_stride) = (x.n_samples(), x.dim(), x.row_stride());
    let k = u.ncols();
    if u.nrows() != dim {
        return Err(Error::length(format!(
            "u has {} rows, expected dim = {dim}",
            u.nrows()
        )));
    }
    check_weighted(x, weights, beta, h.len(), k)?;
    product("workspace", GEMM_BLOCK_ROWS, k)?;
    if k == 0 {
        return Ok(());
    }
    let rows = Rows::new(x, weights);
    let map = |block: Rows<'_>| {
        let mut y = vec![0.0f32; block.n_rows * k];
        if dim > 0 {
            let xb =
                MatRef::from_row_major_slice_with_stride(block.x, block.n_rows, dim, row_stride);
            let yb = MatMut::from_row_major_slice_mut(&mut y, block.n_rows, k);
            matmul(yb, Accum::Replace, xb, u, 1.0f32, faer::Par::Seq);
            dispatch::clean_vector_state();
        }
        sumsq_block(
            isa,
            Rows {
                x: &y,
                weights: block.weights,
                n_rows: block.n_rows,
                row_stride: k,
                dim: k,
            },
        )
    };
    let sum = dispatch::map_reduce_blocks(par, rows, GEMM_BLOCK_ROWS, &map, &add_into)?;
    finish_ema(h, &sum, n_samples, beta);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Linear layers: h = S^T B / N with B = X o X (or, in a Kronecker basis, (X Q_X)^2).

/// `x o x`, as a map.
#[derive(Clone, Copy)]
struct Square;

impl Lane for Square {
    #[inline(always)]
    fn lane<S: Simd>(self, simd: S, x: S::f32s) -> S::f32s {
        simd.mul_f32s(x, x)
    }
}

/// Elements per block of the parallel softmax rows.
const ELEMENTWISE_BLOCK: usize = 1 << 15;

/// Spare workspaces of the calling thread, kept between kernel calls: a workspace above glibc's
/// mmap threshold was mapped and unmapped on every call, and the page faults of touching it
/// again cost about a tenth of a softmax layer call (256 x 1000 x 1024, Intel Xeon).
const SPARE_WORKSPACES: usize = 8;
/// A workspace larger than this (in floats: 64 MiB) is freed, not kept.
const SPARE_MAX_LEN: usize = 16 << 20;

thread_local! {
    static SPARES: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A workspace of `len` floats, back among the thread's spares when dropped.
struct Workspace(Vec<f32>);

impl std::ops::Deref for Workspace {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Workspace {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        if buf.capacity() == 0 || buf.capacity() > SPARE_MAX_LEN {
            return;
        }
        // `try_with`: during thread teardown the spares may already be gone.
        let _ = SPARES.try_with(|spares| {
            if let Ok(mut spares) = spares.try_borrow_mut() {
                if spares.len() < SPARE_WORKSPACES {
                    spares.push(buf);
                }
            }
        });
    }
}

/// A workspace of `len` floats whose contents are unspecified (a spare's old values): for
/// callers that write every element before reading it. Failure to allocate is an error.
fn scratch(name: &str, len: usize) -> Result<Workspace> {
    // The smallest spare that holds `len`, else the largest (grown below), else a new one.
    let spare = SPARES
        .try_with(|spares| {
            let mut spares = spares.try_borrow_mut().ok()?;
            let fits = (0..spares.len())
                .filter(|&i| spares[i].capacity() >= len)
                .min_by_key(|&i| spares[i].capacity());
            let pick = fits.or_else(|| (0..spares.len()).max_by_key(|&i| spares[i].capacity()))?;
            Some(spares.swap_remove(pick))
        })
        .ok()
        .flatten();
    let mut v = spare.unwrap_or_default();
    // A spare keeps the length of its last use: shortening writes nothing, growing writes
    // only the new elements.
    v.truncate(len);
    v.try_reserve_exact(len - v.len()).map_err(|_| {
        Error::new(
            ErrorKind::Allocation,
            format!("no memory for the {name} workspace ({len} floats)"),
        )
    })?;
    v.resize(len, 0.0);
    Ok(Workspace(v))
}

/// [`scratch`] for the per-block buffers of a parallel map, which has no error path: failure
/// to allocate aborts, as `vec!` does. Every caller writes the whole buffer first.
fn workspace_or_abort(name: &str, len: usize) -> Workspace {
    scratch(name, len).unwrap_or_else(|_| {
        std::alloc::handle_alloc_error(
            std::alloc::Layout::array::<f32>(len).unwrap_or(std::alloc::Layout::new::<f32>()),
        )
    })
}

/// A zeroed workspace of `len` floats (see [`scratch`]).
fn workspace(name: &str, len: usize) -> Result<Workspace> {
    let mut v = scratch(name, len)?;
    v.fill(0.0);
    Ok(v)
}

/// `h_bias <- beta h_bias + (1 - beta) (1/N) sum_n S_n` for the classes `first..first +
/// h_bias.len()`, summed in f64 in sample order, from `S` (`n x c` row-major).
struct BiasEma<'a> {
    s: &'a [f32],
    n: usize,
    c: usize,
    first: usize,
    beta: f32,
    h_bias: &'a mut [f32],
}

impl WithSimd for BiasEma<'_> {
    type Output = ();

    // PERF: a plain loop, vectorised by LLVM for the instruction set it runs under (outside
    // `isa.run` it ran two f64 lanes wide: 40 us of 2.3 ms on one thread, AMD Zen 5).
    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let (c, first, hb) = (self.c, self.first, self.h_bias);
        let mut sum = vec![0.0f64; hb.len()];
        for row in self.s.chunks_exact(c.max(1)).take(self.n) {
            for (acc, &v) in sum.iter_mut().zip(&row[first..first + hb.len()]) {
                *acc += v as f64;
            }
        }
        finish_ema(hb, &sum, self.n, self.beta);
    }
}

/// Columns of one tile of [`to_row_major`].
const TRANSPOSE_TILE: usize = 16;

/// `out[r * k + j] = f(j * n + r)`: an `n x k` column-major source, read through `f`, written
/// row-major one tile of columns at a time (each row's run written contiguously, each column
/// read in order).
#[inline(always)]
fn to_row_major(n: usize, k: usize, out: &mut [f32], f: impl Fn(usize) -> f32) {
    for j0 in (0..k).step_by(TRANSPOSE_TILE) {
        let jn = (k - j0).min(TRANSPOSE_TILE);
        for r in 0..n {
            let dst = &mut out[r * k + j0..r * k + j0 + jn];
            for (jj, o) in dst.iter_mut().enumerate() {
                *o = f((j0 + jj) * n + r);
            }
        }
    }
}

/// The right-hand operand `B` (`n x d`, row-major, contiguous) of [`st_b_into_h`].
enum Rhs<'a> {
    /// `B` as given.
    Given(Samples<'a>),
    /// `B = X o X`, written into `out` (as long as `x`) one column block at a time by the item
    /// that multiplies by it.
    Squared { x: Samples<'a>, out: &'a mut [f32] },
}

/// `h <- beta h + (1 - beta) S^T B / N` (`h`: `c x d` row-major, `S`: `n x c`, `B`: `n x d`,
/// both contiguous) and `h_bias <- beta h_bias + (1 - beta) (1/N) sum_n S_n`: one item per
/// column block of `h` (a sequential GEMM, [`dispatch::gemm_seq`]), which also squares its
/// block of `B` first ([`Rhs::Squared`]) and sums one range of the bias's classes. Each class
/// is summed over the samples in order and each element of `B` squared alone, whichever item
/// has it, so the bits do not depend on the thread count.
///
/// PERF: `h` is scaled by `beta` inside the GEMM's own pass over it (a separate `h *= beta`
/// cost 0.4-0.6 ms of about 4.5), and `S` is read in place (as the transposed view of its
/// row-major storage): the `gemm` crate packs its operands, and a transposed copy of `S`
/// first, which faer's `matmul` needed, cost 0.1-0.2 ms of about 4 (256 x 1000 x 1024, Intel
/// Xeon). The bias summed, and `X o X` formed, before the GEMMs (each on its own, the bias on
/// one thread) cost 1.344-1.391 ms against 1.293-1.306 for the softmax layer on two threads
/// (AMD Zen 5, 256 x 1000 x 1024).
fn st_b_into_h(
    isa: Isa,
    par: Par,
    s: Samples<'_>,
    rhs: Rhs<'_>,
    beta: f32,
    h: &mut [f32],
    h_bias: Option<&mut [f32]>,
) -> Result<()> {
    let b = match &rhs {
        Rhs::Given(b) | Rhs::Squared { x: b, .. } => *b,
    };
    let (n, c, d) = (s.n_samples(), s.dim(), b.dim());
    let (s, b) = (s.data(), b.data());
    // Start the pool before anything is written: no later step can fail, so an error leaves
    // `h` and `h_bias` untouched.
    if par == Par::Pool {
        dispatch::pool()?;
    }
    let scale = ((1.0 - beta as f64) / n as f64) as f32;
    let st = MatRef::from_row_major_slice(s, n, c).transpose();
    let blocks = d.div_ceil(GEMM_BLOCK_COLS).max(1);
    let classes_per_block = c.div_ceil(blocks).next_multiple_of(16);
    let (mut rest_h, mut rest_bias) = (MatMut::from_row_major_slice_mut(h, c, d), h_bias);
    let mut rest_sq = match rhs {
        Rhs::Squared { out, .. } => Some(MatMut::from_row_major_slice_mut(out, n, d)),
        Rhs::Given(_) => None,
    };
    let mut items = Vec::with_capacity(blocks);
    for k in 0..blocks {
        let (j0, first) = (k * GEMM_BLOCK_COLS, (k * classes_per_block).min(c));
        let w = (d - j0.min(d)).min(GEMM_BLOCK_COLS);
        let (head, tail) = rest_h.split_at_col_mut(w);
        rest_h = tail;
        let bias = rest_bias.take().map(|hb| {
            let (head, tail) = hb.split_at_mut(classes_per_block.min(hb.len()));
            rest_bias = Some(tail);
            (first, head)
        });
        let sq = rest_sq.take().map(|m| {
            let (head, tail) = m.split_at_col_mut(w);
            rest_sq = Some(tail);
            head
        });
        items.push((j0, head, bias, sq));
    }
    let bm = MatRef::from_row_major_slice(b, n, d);
    dispatch::for_each_item(par, items, |(j0, hb, bias, sq)| {
        if let Some((first, h_bias)) = bias {
            isa.run(BiasEma {
                s,
                n,
                c,
                first,
                beta,
                h_bias,
            });
        }
        let w = hb.ncols();
        let rhs = match sq {
            Some(mut sq) => {
                for r in 0..n {
                    let row = sq.rb_mut().row_mut(r).try_as_row_major_mut();
                    let row = row.expect("unit column stride").as_slice_mut();
                    map_into(isa, &b[r * d + j0..r * d + j0 + w], row, Square);
                }
                sq.into_const()
            }
            None => bm.subcols(j0, w),
        };
        if w > 0 && c > 0 {
            dispatch::gemm_seq(hb, beta, st, rhs, scale);
            dispatch::clean_vector_state();
        }
    })
}

fn check_layer(
    x: Samples<'_>,
    c_out: usize,
    beta: f32,
    h: &[f32],
    h_bias: Option<&[f32]>,
) -> Result<()> {
    check_samples(x.n_samples())?;
    check_contiguous("x", x)?;
    check_lengths(product("h", c_out, x.dim())?, &[("h", h.len())])?;
    if let Some(hb) = h_bias {
        check_lengths(c_out, &[("h_bias", hb.len())])?;
    }
    check_beta(beta as f64)
}

/// Linear layer `z = W x` (`W`: `c_out x d_in`) with per-sample output factors `s_nc`:
/// `h <- beta h + (1 - beta) S^T (X o X) / N` (`h`: `c_out x d_in` row-major, `S`:
/// `n_samples x c_out`, `X`: `n_samples x d_in`, both contiguous) and, when given,
/// `h_bias_c <- beta h_bias_c + (1 - beta) (1/N) sum_n s_nc`. `s = 1` gives MSE.
pub fn gn_diag_linear(
    x: Samples<'_>,
    s: Samples<'_>,
    beta: f32,
    h: &mut [f32],
    h_bias: Option<&mut [f32]>,
) -> Result<()> {
    gn_diag_linear_with(Isa::detect(), Par::Pool, x, s, beta, h, h_bias)
}

/// [`gn_diag_linear`] on a chosen instruction set (for the elementwise passes; the GEMM picks
/// its own) and parallelism.
pub fn gn_diag_linear_with(
    isa: Isa,
    par: Par,
    x: Samples<'_>,
    s: Samples<'_>,
    beta: f32,
    h: &mut [f32],
    h_bias: Option<&mut [f32]>,
) -> Result<()> {
    check_layer(x, s.dim(), beta, h, h_bias.as_deref())?;
    check_rows("s", s, x.n_samples())?;
    check_contiguous("s", s)?;
    let mut sq = scratch("X o X", x.data().len())?;
    let rhs = Rhs::Squared { x, out: &mut sq };
    st_b_into_h(isa, par, s, rhs, beta, h, h_bias)
}

/// A counter-based uniform in `[0, 1)` for sample `index` under `seed` (SplitMix64 finalizer
/// over the pair): the label draws of [`GnEstimator::Sampled`].
pub fn gn_sample_uniform(seed: u64, index: u64) -> f64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let z =
        mix(seed.wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mix(mix(z)) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The label drawn for sample `index`: the first class whose cumulative probability exceeds
/// `gn_sample_uniform(seed, index)` (the last class with `p > 0` if rounding leaves a gap).
pub fn gn_sample_label(p: &[f64], seed: u64, index: u64) -> usize {
    let u = gn_sample_uniform(seed, index);
    let mut cumulative = 0.0;
    let mut last = 0;
    for (c, &pc) in p.iter().enumerate() {
        if pc > 0.0 {
            last = c;
        }
        cumulative += pc;
        if u < cumulative {
            return c;
        }
    }
    last
}

/// What one softmax row produces from its logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowOutput {
    /// The layer's output factors `s`: `p (1 - p)` or `(p - e_y)^2`.
    Factors(GnEstimator),
    /// `p` (exact) or `p - e_y` (sampled): the Kronecker kernel's input to `Q_C`.
    Probabilities(GnEstimator),
}

/// [`gn_sample_label`]'s rule applied to the unnormalised `e_c = exp(z_c - max)` with total
/// `total`: the first class whose cumulative sum exceeds `u * total`. Sums are f64, over
/// chunks of [`LABEL_CHUNK`] classes (four interleaved partial sums), then along the chunk.
fn draw_label(e: &[f32], total: f64, u: f64) -> usize {
    let target = u * total;
    let mut before = 0.0f64;
    let mut last = 0;
    for (k, chunk) in e.chunks(LABEL_CHUNK).enumerate() {
        let mut part = [0.0f64; 4];
        let (quads, rest) = chunk.as_chunks::<4>();
        for q in quads {
            for (p, &v) in part.iter_mut().zip(q) {
                *p += v as f64;
            }
        }
        for (p, &v) in part.iter_mut().zip(rest) {
            *p += v as f64;
        }
        let sum = (part[0] + part[1]) + (part[2] + part[3]);
        if target < before + sum {
            let mut cumulative = before;
            for (i, &v) in chunk.iter().enumerate() {
                if v > 0.0 {
                    last = k * LABEL_CHUNK + i;
                }
                cumulative += v as f64;
                if target < cumulative {
                    return k * LABEL_CHUNK + i;
                }
            }
            // The in-chunk sum fell short of the chunk sum by rounding.
            return last;
        }
        if let Some(i) = chunk.iter().rposition(|&v| v > 0.0) {
            last = k * LABEL_CHUNK + i;
        }
        before += sum;
    }
    last
}

/// Classes per chunk of the label search.
const LABEL_CHUNK: usize = 64;

/// The softmax of one row of logits and what [`RowOutput`] asks of it, in f32:
///
/// ```text
/// d_c = z_c - max (an exact f32 pair)   e_c = exp(d_c)   S' = sum of e_c over all classes but
/// one maximum (compensated, f64 across lanes)   S = 1 + S'   p_c = e_c * (1 / S)
/// 1 - p_c = S' / S at a maximum (no cancellation), 1 - p_c elsewhere (p_c <= 1/2 there)
/// ```
struct SoftmaxRow<'a> {
    logits: &'a [f32],
    out: &'a mut [f32],
    output: RowOutput,
    /// The label's uniform draw (sampled estimator only).
    u: f64,
}

/// `(s, c) + x` with `s + c` carrying the sum exactly to f32-pair precision (TwoSum).
#[inline(always)]
fn two_sum_lane<S: Simd>(simd: S, s: S::f32s, c: S::f32s, x: S::f32s) -> (S::f32s, S::f32s) {
    let t = simd.add_f32s(s, x);
    let bp = simd.sub_f32s(t, s);
    let err = simd.add_f32s(simd.sub_f32s(s, simd.sub_f32s(t, bp)), simd.sub_f32s(x, bp));
    (t, simd.add_f32s(c, err))
}

/// `e = exp(z - max)` of one register of logits, with `z - max` as an exact pair (TwoSum).
#[inline(always)]
fn softmax_exp_lane<S: Simd>(simd: S, z: S::f32s, max: S::f32s) -> S::f32s {
    let neg_max = simd.neg_f32s(max);
    let d = simd.add_f32s(z, neg_max);
    let bp = simd.sub_f32s(d, z);
    let err = simd.add_f32s(
        simd.sub_f32s(z, simd.sub_f32s(d, bp)),
        simd.sub_f32s(neg_max, bp),
    );
    math::exp_sum_lane(simd, d, err)
}

/// Adds one register of `e` into `[sum, compensation, maxima]`: `e` where `z < max` into the
/// compensated sum, and the count of lanes where `z == max`.
#[inline(always)]
fn softmax_sum_lane<S: Simd>(
    simd: S,
    [s, c, ties]: [S::f32s; 3],
    z: S::f32s,
    e: S::f32s,
    max: S::f32s,
) -> [S::f32s; 3] {
    let zero = simd.splat_f32s(0.0);
    let at_max = simd.equal_f32s(z, max);
    let (s, c) = two_sum_lane(simd, s, c, simd.select_f32s(at_max, zero, e));
    let ties = simd.add_f32s(ties, simd.select_f32s(at_max, simd.splat_f32s(1.0), zero));
    [s, c, ties]
}

/// One register's output from `e` (see [`SoftmaxRow`]); `at_max` marks the maximum classes.
#[inline(always)]
fn softmax_out_lane<S: Simd>(
    simd: S,
    output: RowOutput,
    e: S::f32s,
    at_max: S::m32s,
    inv_total: S::f32s,
    q_max: S::f32s,
) -> S::f32s {
    let p = simd.mul_f32s(e, inv_total);
    match output {
        RowOutput::Factors(GnEstimator::Exact) => {
            let q = simd.select_f32s(at_max, q_max, simd.sub_f32s(simd.splat_f32s(1.0), p));
            simd.mul_f32s(p, q)
        }
        RowOutput::Factors(GnEstimator::Sampled) => simd.mul_f32s(p, p),
        RowOutput::Probabilities(_) => p,
    }
}

impl WithSimd for SoftmaxRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            logits,
            out,
            output,
            u,
        } = self;
        let (zb, zt) = S::as_simd_f32s(logits);
        let zero = simd.splat_f32s(0.0);
        // The tail's valid lanes (lane index < tail length); the others read as -inf for the
        // max and give e = 0.
        let mut iota = [0.0f32; 64];
        for (i, v) in iota.iter_mut().enumerate() {
            *v = i as f32;
        }
        let tail_valid = simd.less_than_f32s(
            simd.partial_load_f32s(&iota[..S::F32_LANES]),
            simd.splat_f32s(zt.len() as f32),
        );
        let z_tail = simd.select_f32s(
            tail_valid,
            simd.partial_load_f32s(zt),
            simd.splat_f32s(f32::NEG_INFINITY),
        );
        // max (exact in any order).
        let mut vmax = z_tail;
        for &z in zb {
            vmax = simd.max_f32s(vmax, z);
        }
        let max_scalar = simd.reduce_max_f32s(vmax);
        let max = simd.splat_f32s(max_scalar);
        // Pass 1: e_c into `out`; the compensated sum of all but the maxima; the maxima count.
        // PERF: no closure here: closures do not reliably inline the SIMD intrinsics.
        let mut acc = [zero; 3];
        {
            let (ob, ot) = S::as_mut_simd_f32s(out);
            for (o, &z) in ob.iter_mut().zip(zb) {
                let e = softmax_exp_lane(simd, z, max);
                *o = e;
                acc = softmax_sum_lane(simd, acc, z, e, max);
            }
            if !ot.is_empty() {
                let e = simd.select_f32s(tail_valid, softmax_exp_lane(simd, z_tail, max), zero);
                simd.partial_store_f32s(ot, e);
                acc = softmax_sum_lane(simd, acc, z_tail, e, max);
            }
        }
        let mut lanes = [[0.0f32; 64]; 3];
        for (buf, v) in lanes.iter_mut().zip(acc) {
            simd.partial_store_f32s(&mut buf[..S::F32_LANES], v);
        }
        let mut others = 0.0f64;
        let mut n_max = 0.0f64;
        let [sums, compensations, maxima] = &lanes;
        for ((&s, &c), &m) in sums
            .iter()
            .zip(compensations)
            .zip(maxima)
            .take(S::F32_LANES)
        {
            others += s as f64 + c as f64;
            n_max += m as f64;
        }
        // All but one maximum: the other maxima count 1 each.
        let others = others + (n_max - 1.0).max(0.0);
        let total = 1.0 + others;
        let inv_total = (1.0 / total) as f32;
        let q_max = (others / total) as f32;
        let sampled = matches!(
            output,
            RowOutput::Factors(GnEstimator::Sampled)
                | RowOutput::Probabilities(GnEstimator::Sampled)
        );
        // The label, drawn while `out` still holds e.
        let label = if sampled {
            let y = draw_label(out, total, u);
            Some((y, out[y]))
        } else {
            None
        };
        // Pass 2: the output from e.
        let (inv_v, q_max_v) = (simd.splat_f32s(inv_total), simd.splat_f32s(q_max));
        {
            let (ob, ot) = S::as_mut_simd_f32s(out);
            for (o, &z) in ob.iter_mut().zip(zb) {
                *o = softmax_out_lane(simd, output, *o, simd.equal_f32s(z, max), inv_v, q_max_v);
            }
            if !ot.is_empty() {
                let e = simd.partial_load_f32s(ot);
                let at_max = simd.equal_f32s(z_tail, max);
                simd.partial_store_f32s(
                    ot,
                    softmax_out_lane(simd, output, e, at_max, inv_v, q_max_v),
                );
            }
        }
        if let Some((y, e_y)) = label {
            // The drawn class: p_y - 1 = -(1 - p_y), with 1 - p_y formed as in the exact lanes.
            let p_y = e_y * inv_total;
            let q_y = if logits[y] == max_scalar {
                q_max
            } else {
                1.0 - p_y
            };
            out[y] = match output {
                RowOutput::Factors(_) => q_y * q_y,
                RowOutput::Probabilities(_) => -q_y,
            };
        }
    }
}

/// Rows `first..first + n` of an input and an output matrix.
struct RowPair<'a> {
    input: &'a [f32],
    out: &'a mut [f32],
    width: usize,
    first: usize,
}

impl Split for RowPair<'_> {
    fn len(&self) -> usize {
        self.out.len() / self.width
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (i0, i1) = self.input.split_at(mid * self.width);
        let (o0, o1) = self.out.split_at_mut(mid * self.width);
        (
            RowPair {
                input: i0,
                out: o0,
                width: self.width,
                first: self.first,
            },
            RowPair {
                input: i1,
                out: o1,
                width: self.width,
                first: self.first + mid,
            },
        )
    }
}

/// The softmax output factors `S` (`n_samples x classes`, row-major) of
/// [`gn_diag_softmax`], computed in f32 per sample (see the module's accuracy notes).
/// `logits` must be contiguous, `s` as long.
pub fn gn_softmax_factors(
    logits: Samples<'_>,
    estimator: GnEstimator,
    seed: u64,
    s: &mut [f32],
) -> Result<()> {
    check_contiguous("logits", logits)?;
    check_lengths(logits.data().len(), &[("s", s.len())])?;
    softmax_rows_into(
        Isa::detect(),
        Par::Pool,
        logits,
        RowOutput::Factors(estimator),
        seed,
        s,
    )
}

/// One [`SoftmaxRow`] per row of `logits` (contiguous) into the same row of `out`.
fn softmax_rows_into(
    isa: Isa,
    par: Par,
    logits: Samples<'_>,
    output: RowOutput,
    seed: u64,
    out: &mut [f32],
) -> Result<()> {
    let classes = logits.dim();
    if classes == 0 {
        return Ok(());
    }
    let work = RowPair {
        input: logits.data(),
        out,
        width: classes,
        first: 0,
    };
    dispatch::map_reduce_blocks(
        par,
        work,
        (ELEMENTWISE_BLOCK / classes).max(1),
        &|rows: RowPair<'_>| softmax_rows(isa, rows, classes, output, seed),
        &|(), ()| (),
    )
}

fn softmax_rows(isa: Isa, rows: RowPair<'_>, classes: usize, output: RowOutput, seed: u64) {
    let sampled = matches!(
        output,
        RowOutput::Factors(GnEstimator::Sampled) | RowOutput::Probabilities(GnEstimator::Sampled)
    );
    for (r, (z, o)) in rows
        .input
        .chunks_exact(classes)
        .zip(rows.out.chunks_exact_mut(classes))
        .enumerate()
    {
        let u = if sampled {
            gn_sample_uniform(seed, (rows.first + r) as u64)
        } else {
            0.0
        };
        isa.run(SoftmaxRow {
            logits: z,
            out: o,
            output,
            u,
        });
    }
}

/// A softmax cross-entropy layer `z = W x + b` (`W`: `classes x d_in`): [`gn_diag_linear`] with
/// `s_nc` from the logits, `p (1 - p)` ([`GnEstimator::Exact`]) or `(p - e_y)^2` with
/// `y ~ softmax(z_n)` drawn from `seed` ([`GnEstimator::Sampled`]). `logits` is
/// `n_samples x classes` row-major.
pub fn gn_diag_softmax(
    x: Samples<'_>,
    logits: Samples<'_>,
    estimator: GnEstimator,
    seed: u64,
    beta: f32,
    h: &mut [f32],
    h_bias: Option<&mut [f32]>,
) -> Result<()> {
    gn_diag_softmax_with(
        Isa::detect(),
        Par::Pool,
        x,
        logits,
        estimator,
        seed,
        beta,
        h,
        h_bias,
    )
}

/// [`gn_diag_softmax`] on a chosen instruction set and parallelism.
#[allow(clippy::too_many_arguments)]
pub fn gn_diag_softmax_with(
    isa: Isa,
    par: Par,
    x: Samples<'_>,
    logits: Samples<'_>,
    estimator: GnEstimator,
    seed: u64,
    beta: f32,
    h: &mut [f32],
    h_bias: Option<&mut [f32]>,
) -> Result<()> {
    check_layer(x, logits.dim(), beta, h, h_bias.as_deref())?;
    check_rows("logits", logits, x.n_samples())?;
    check_contiguous("logits", logits)?;
    let mut s = scratch("S", logits.data().len())?;
    softmax_rows_into(
        isa,
        par,
        logits,
        RowOutput::Factors(estimator),
        seed,
        &mut s,
    )?;
    let s = Samples::new(&s, logits.n_samples(), logits.dim())?;
    let mut sq = scratch("X o X", x.data().len())?;
    let rhs = Rhs::Squared { x, out: &mut sq };
    st_b_into_h(isa, par, s, rhs, beta, h, h_bias)
}

// ---------------------------------------------------------------------------------------------
// Softmax layer in a Kronecker basis (Q_C, Q_X).

/// Sample rows of the Kronecker kernel's inputs and of its `A` and `B` workspaces.
struct KronRows<'a> {
    x: &'a [f32],
    logits: &'a [f32],
    a: &'a mut [f32],
    b: &'a mut [f32],
    first: usize,
    n: usize,
    d_in: usize,
    classes: usize,
    kc: usize,
    kx: usize,
}

impl Split for KronRows<'_> {
    fn len(&self) -> usize {
        self.n
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (x0, x1) = self.x.split_at(mid * self.d_in);
        let (l0, l1) = self.logits.split_at(mid * self.classes);
        let (a0, a1) = self.a.split_at_mut(mid * self.kc);
        let (b0, b1) = self.b.split_at_mut(mid * self.kx);
        (
            KronRows {
                x: x0,
                logits: l0,
                a: a0,
                b: b0,
                n: mid,
                ..self
            },
            KronRows {
                x: x1,
                logits: l1,
                a: a1,
                b: b1,
                first: self.first + mid,
                n: self.n - mid,
                ..self
            },
        )
    }
}

/// The softmax layer's GN diagonal in the Kronecker basis `U = Q_C (x) Q_X`, i.e.
/// `h_ab = diag(U^T H U)` at the basis vector `Q_C[:, a] Q_X[:, b]^T`:
///
/// ```text
/// Exact:   A_na = sum_c p_nc Q_C[c,a]^2 - (Q_C[:,a] . p_n)^2
/// Sampled: A_na = (Q_C[:,a] . (p_n - e_y))^2,  y ~ softmax(z_n)
/// B_nb = (Q_X[:,b] . x_n)^2,   h <- beta h + (1 - beta) A^T B / N
/// h_bias_a <- beta h_bias_a + (1 - beta) (1/N) sum_n A_na      (the bias in basis Q_C)
/// ```
///
/// `q_c` is `classes x kc`, `q_x` is `d_in x kx` (any strides; usually square orthogonal),
/// `h` is `kc x kx` row-major, `h_bias` has `kc` elements. `A` and `B` are formed with GEMMs
/// per block of [`GEMM_BLOCK_ROWS`] samples, then `A^T B` as in [`gn_diag_linear`]; `U^T H U`
/// is never formed.
#[allow(clippy::too_many_arguments)]
pub fn gn_diag_softmax_in_kronecker(
    x: Samples<'_>,
    logits: Samples<'_>,
    estimator: GnEstimator,
    seed: u64,
    q_c: MatRef<'_, f32>,
    q_x: MatRef<'_, f32>,
    beta: f32,
    h: &mut [f32],
    h_bias: Option<&mut [f32]>,
) -> Result<()> {
    gn_diag_softmax_in_kronecker_with(
        Isa::detect(),
        Par::Pool,
        x,
        logits,
        estimator,
        seed,
        q_c,
        q_x,
        beta,
        h,
        h_bias,
    )
}

/// [`gn_diag_softmax_in_kronecker`] on a chosen instruction set and parallelism.
#[allow(clippy::too_many_arguments)]
pub fn gn_diag_softmax_in_kronecker_with(
    isa: Isa,
    par: Par,
    x: Samples<'_>,
    logits: Samples<'_>,
    estimator: GnEstimator,
    seed: u64,
    q_c: MatRef<'_, f32>,
    q_x: MatRef<'_, f32>,
    beta: f32,
    h: &mut [f32],
    h_bias: Option<&mut [f32]>,
) -> Result<()> {
    let (n_samples, d_in, classes) = (x.n_samples(), x.dim(), logits.dim());
    let (kc, kx) = (q_c.ncols(), q_x.ncols());
    if q_c.nrows() != classes {
        return Err(Error::length(format!(
            "q_c has {} rows, expected classes = {classes}",
            q_c.nrows()
        )));
    }
    if q_x.nrows() != d_in {
        return Err(Error::length(format!(
            "q_x has {} rows, expected d_in = {d_in}",
            q_x.nrows()
        )));
    }
    check_samples(n_samples)?;
    check_contiguous("x", x)?;
    check_rows("logits", logits, n_samples)?;
    check_contiguous("logits", logits)?;
    check_lengths(product("h", kc, kx)?, &[("h", h.len())])?;
    if let Some(hb) = h_bias.as_deref() {
        check_lengths(kc, &[("h_bias", hb.len())])?;
    }
    check_beta(beta as f64)?;
    let (x, logits) = (x.data(), logits.data());
    // The caller may come straight from faer (see `dispatch::clean_vector_state`).
    dispatch::clean_vector_state();
    // Every element of A (B) is written below when there are classes (inputs); else it is 0.
    let ws = |name, n, full| {
        if full {
            scratch(name, n)
        } else {
            workspace(name, n)
        }
    };
    let mut a = ws("A", product("A", n_samples, kc)?, classes > 0)?;
    let mut b = ws("B", product("B", n_samples, kx)?, d_in > 0)?;
    // Q_C o Q_C for the exact estimator's first term.
    let mut qc2_buf = scratch("Q_C o Q_C", product("Q_C o Q_C", classes, kc)?)?;
    let mut qc2 = MatMut::from_column_major_slice_mut(&mut qc2_buf, classes, kc);
    for j in 0..kc {
        let col = qc2.rb_mut().col_mut(j).try_as_col_major_mut();
        let col = col
            .expect("a column of a column-major matrix")
            .as_slice_mut();
        match q_c.col(j).try_as_col_major() {
            Some(q) => {
                for (o, &q) in col.iter_mut().zip(q.as_slice()) {
                    *o = q * q;
                }
            }
            None => {
                for (o, &q) in col.iter_mut().zip(q_c.col(j).iter()) {
                    *o = q * q;
                }
            }
        }
    }
    let work = KronRows {
        x,
        logits,
        a: &mut a,
        b: &mut b,
        first: 0,
        n: n_samples,
        d_in,
        classes,
        kc,
        kx,
    };
    let map = |rows: KronRows<'_>| {
        let n = rows.n;
        // P (or P - E_y) in f32.
        let mut p = workspace_or_abort("P", n * classes);
        if classes > 0 {
            softmax_rows(
                isa,
                RowPair {
                    input: rows.logits,
                    out: &mut p,
                    width: classes,
                    first: rows.first,
                },
                classes,
                RowOutput::Probabilities(estimator),
                seed,
            );
        }
        // PERF: the products are written column-major (the gemm crate runs at about 170
        // GFLOP/s into a column-major block of 128 x 1000 from row-major P or X, 130 into a
        // row-major one, Intel Xeon); the squares are then written back row-major, as
        // `st_b_into_h` reads them.
        if kc > 0 && classes > 0 {
            let pm = MatRef::from_row_major_slice(&p, n, classes);
            let mut t = workspace_or_abort("P Q_C", n * kc);
            dispatch::gemm_seq(
                MatMut::from_column_major_slice_mut(&mut t, n, kc),
                0.0,
                pm,
                q_c,
                1.0,
            );
            let u2_rows = if estimator == GnEstimator::Exact {
                n
            } else {
                0
            };
            let mut u2 = workspace_or_abort("P (Q_C o Q_C)", u2_rows * kc);
            if estimator == GnEstimator::Exact {
                let u2m = MatMut::from_column_major_slice_mut(&mut u2, n, kc);
                dispatch::gemm_seq(u2m, 0.0, pm, qc2.as_ref(), 1.0);
            }
            dispatch::clean_vector_state();
            let (t, u2) = (&t[..], &u2[..]);
            to_row_major(n, kc, rows.a, |at| {
                let t = t[at];
                match estimator {
                    GnEstimator::Exact => u2[at] - t * t,
                    GnEstimator::Sampled => t * t,
                }
            });
        }
        if kx > 0 && d_in > 0 {
            let xm = MatRef::from_row_major_slice(rows.x, n, d_in);
            let mut y = workspace_or_abort("X Q_X", n * kx);
            dispatch::gemm_seq(
                MatMut::from_column_major_slice_mut(&mut y, n, kx),
                0.0,
                xm,
                q_x,
                1.0,
            );
            dispatch::clean_vector_state();
            let y = &y[..];
            to_row_major(n, kx, rows.b, |at| y[at] * y[at]);
        }
    };
    dispatch::map_reduce_blocks(par, work, GEMM_BLOCK_ROWS, &map, &|(), ()| ())?;
    let a = Samples::new(&a, n_samples, kc)?;
    let b = Samples::new(&b, n_samples, kx)?;
    st_b_into_h(isa, par, a, Rhs::Given(b), beta, h, h_bias)
}
