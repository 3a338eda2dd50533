//! # Statistics, basis refresh, and carrying rotated state to a new basis
//!
//! **Statistics**, f32, accumulated with faer GEMMs into caller-visible matrices:
//!
//! ```text
//! full GN:    H <- beta H + (1 - beta) X^T W X / N      (GnMatrix; X is N x d, W = diag(w))
//! Kronecker:  L <- beta L + (1 - beta) G G^T            (KroneckerStatistics; G is m x n)
//!             R <- beta R + (1 - beta) G^T G
//! ```
//!
//! The products are SYRK-shaped: only the lower triangle is computed (faer's triangular matmul),
//! then mirrored. The EMA is fused into the same call (the old matrix is scaled, then the product
//! is accumulated with weight `1 - beta`); `beta = 0` gives the batch statistic alone.
//!
//! **Refresh** of a basis `Q` from a symmetric statistic `A` ([`RefreshMethod`]):
//! * `Eigh`: faer's self-adjoint eigendecomposition, eigenvalues sorted descending. Each new
//!   eigenvector is then matched to an old column (greedily, in order of eigenvalue, the unused
//!   old column with the largest `|q_old . q_new|`) and its sign flipped so that product is
//!   `>= 0`: `permutation[j]` is the old column new column `j` follows.
//! * `PowerQr` (SOAP): `est_i = q_i^T A q_i`; old columns sorted by `est` descending (that order
//!   is `permutation`); `Q_new = qr(A Q_sorted).Q` with the signs of `R`'s diagonal made
//!   non-negative, so a converged basis maps to itself.
//!
//! **Carrying rotated state** ([`StateTransfer`]) from basis `U` to `U'` with `P = U^T U'`:
//! * the first moment `m~` (linear) is always re-projected exactly: `m~' = U'^T (U m~)`;
//! * `v~` (and amsgrad's `vmax~`): `Permute`: `v~'_j = v~_{permutation[j]}` (SOAP's rule: the
//!   second moment follows its eigenvector); `Reproject`: `v~' = (P o P)^T v~`, the diagonal of
//!   `diag(v~)` seen in the new basis (`v~'_j = sum_i P_ij^2 v~_i`; it keeps `sum v~`).
//!   For a Kronecker basis both act per side: `V' = V[perm_L, perm_R]`, or
//!   `V' = (P_L o P_L)^T V (P_R o P_R)`.
//!
//! [`refresh_with_state`] does both for any basis ([`Basis::refreshed`] then [`carry_state`]):
//! every check and the whole computation run into new memory before the caller's state is
//! written, so on error the state is unchanged. [`crate::RotatedAdam::refresh`],
//! [`crate::Soap`] and the C export `dp_basis_refresh_f32` call it.
//!
//! **Reference**: [`crate::reference::refresh_eigh`], [`crate::reference::refresh_power_qr`] and
//! [`crate::reference::match_columns`] (`tests/basis.rs`).

use super::{Basis, DenseBasis, KroneckerBasis};
use crate::dispatch::{self, with_faer_par, Par};
use crate::error::{self, Error, ErrorKind, Result};
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::traits::RealField;
use faer::{Accum, Mat, MatMut, MatRef};

/// How a basis is refreshed from its statistic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefreshMethod {
    /// Full self-adjoint eigendecomposition (eigenvalues descending), matched to the old basis.
    Eigh,
    /// One power-iteration step and a QR factorisation, as SOAP does.
    #[default]
    PowerQr,
}

/// How rotated second moments follow a refresh (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateTransfer {
    /// `v~` follows its matched eigenvector (SOAP).
    #[default]
    Permute,
    /// `v~' = (P o P)^T v~` with `P = U_old^T U_new`.
    Reproject,
}

/// What a refresh found, besides the new basis.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshInfo {
    /// Eigenvalues (`Eigh`) or Rayleigh-quotient estimates (`PowerQr`), descending.
    pub eigenvalues: Vec<f32>,
    /// New column `j` follows old column `permutation[j]`.
    pub permutation: Vec<usize>,
}

fn alloc_error(what: &str) -> Error {
    Error::new(ErrorKind::Allocation, format!("no memory for {what}"))
}

fn mem_buffer(req: StackReq, what: &str) -> Result<MemBuffer> {
    MemBuffer::try_new(req).map_err(|_| alloc_error(what))
}

fn check_symmetric_input<T: RealField + Copy>(name: &str, a: MatRef<'_, T>) -> Result<()> {
    let d = a.nrows();
    if a.ncols() != d {
        return Err(Error::length(format!(
            "{name} must be square; got {} x {}",
            a.nrows(),
            a.ncols()
        )));
    }
    for j in 0..d {
        for i in j..d {
            if !T::is_finite_impl(&a[(i, j)]) {
                return Err(Error::new(
                    ErrorKind::NonFinite,
                    format!("{name} entry ({i}, {j}) is not finite"),
                ));
            }
        }
    }
    Ok(())
}

/// Eigendecomposition of a symmetric matrix (lower triangle read): `(U, s)` with `s` descending
/// and `U`'s columns the matching eigenvectors.
pub fn eigh_descending<T: RealField + Copy>(
    a: MatRef<'_, T>,
    par: Par,
) -> Result<(Mat<T>, Vec<T>)> {
    check_symmetric_input("the symmetric matrix", a)?;
    let d = a.nrows();
    let mut u = Mat::<T>::zeros(d, d);
    let mut s = faer::diag::Diag::<T>::zeros(d);
    with_faer_par(par, (d * d * d) as f64 * 4.0, |fp| -> Result<()> {
        let req = faer::linalg::evd::self_adjoint_evd_scratch::<T>(
            d,
            faer::linalg::evd::ComputeEigenvectors::Yes,
            fp,
            Default::default(),
        );
        let mut buf = mem_buffer(req, "the eigendecomposition")?;
        faer::linalg::evd::self_adjoint_evd(
            a,
            s.as_mut(),
            Some(u.as_mut()),
            fp,
            MemStack::new(&mut buf),
            Default::default(),
        )
        .map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                "the eigendecomposition did not converge",
            )
        })
    })??;
    dispatch::clean_vector_state();
    let values: Vec<T> = (0..d).map(|i| s[i]).collect();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| {
        values[j]
            .partial_cmp(&values[i])
            .unwrap_or(core::cmp::Ordering::Equal)
    });
    let sorted = Mat::from_fn(d, d, |i, j| u[(i, order[j])]);
    Ok((sorted, order.iter().map(|&i| values[i]).collect()))
}

/// `A B` into a new matrix.
fn product<T: RealField + Copy>(par: Par, a: MatRef<'_, T>, b: MatRef<'_, T>) -> Result<Mat<T>> {
    let mut out = Mat::<T>::zeros(a.nrows(), b.ncols());
    let flops = 2.0 * (a.nrows() * a.ncols() * b.ncols()) as f64;
    with_faer_par(par, flops, |fp| {
        matmul(out.as_mut(), Accum::Replace, a, b, T::one_impl(), fp)
    })?;
    dispatch::clean_vector_state();
    Ok(out)
}

/// Greedy matching of new columns to old ones by `|P_ij|`, `P = Q_old^T Q_new`, in order of new
/// column; flips new columns so the matched product is non-negative.
fn match_columns(par: Par, old: MatRef<'_, f32>, new: &mut Mat<f32>) -> Result<Vec<usize>> {
    let d = old.nrows();
    let p = product(par, old.transpose(), new.as_ref())?;
    let mut used = vec![false; d];
    let mut permutation = Vec::with_capacity(d);
    for j in 0..d {
        let mut best = usize::MAX;
        let mut best_value = -1.0f32;
        for i in 0..d {
            if !used[i] && p[(i, j)].abs() > best_value {
                best = i;
                best_value = p[(i, j)].abs();
            }
        }
        if best == usize::MAX {
            // Only NaN was left to compare: the factorisation overflowed (finite statistic
            // entries too large for f32 products). Refuse rather than install NaN vectors.
            return Err(Error::new(
                ErrorKind::NonFinite,
                "the refresh produced non-finite basis vectors: the statistic's entries are too \
                 large for f32 arithmetic",
            ));
        }
        used[best] = true;
        permutation.push(best);
        if p[(best, j)] < 0.0 {
            new.col_mut(j).iter_mut().for_each(|x| *x = -*x);
        }
    }
    Ok(permutation)
}

/// `A` (square, lower triangle read) with both triangles into `full`, column-major with stride
/// `d`: the lower triangle copied column by column (each column checked finite, the first
/// non-finite entry in that order reported, as [`check_symmetric_input`] does), the upper one
/// transposed tile by tile (`TILE x TILE` tiles, so reads and writes both stay within a few
/// cache lines).
fn symmetric_from_lower(a: MatRef<'_, f32>, full: &mut [f32]) -> Result<()> {
    const TILE: usize = 16;
    let d = a.nrows();
    for j in 0..d {
        let dst = &mut full[j * d + j..(j + 1) * d];
        match a.col(j).subrows(j, d - j).try_as_col_major() {
            Some(col) => dst.copy_from_slice(col.as_slice()),
            None => dst
                .iter_mut()
                .zip(a.col(j).subrows(j, d - j).iter())
                .for_each(|(o, &x)| *o = x),
        }
        // Branch-free (it vectorises); the position only on failure.
        let exponent = 0x7f80_0000u32;
        if dst
            .iter()
            .fold(false, |bad, x| bad | (x.to_bits() & exponent == exponent))
        {
            let k = dst.iter().position(|x| !x.is_finite()).unwrap_or(0);
            return Err(Error::new(
                ErrorKind::NonFinite,
                format!("the statistic entry ({}, {j}) is not finite", j + k),
            ));
        }
    }
    let mut tile = [[0.0f32; TILE]; TILE];
    for j0 in (0..d).step_by(TILE) {
        let jn = (d - j0).min(TILE);
        for i0 in (0..j0 + 1).step_by(TILE) {
            let in_ = (d - i0).min(TILE);
            // Upper tile rows i0.., columns j0.. from the lower tile rows j0.., columns i0..:
            // read as runs of the lower tile's columns, written as runs of the upper's.
            for (i, row) in tile.iter_mut().enumerate().take(in_) {
                let src = (i0 + i) * d + j0;
                row[..jn].copy_from_slice(&full[src..src + jn]);
            }
            for j in 0..jn {
                // Only above the diagonal: rows i0 + i < j0 + j.
                let rows = (j0 + j).saturating_sub(i0).min(in_);
                let dst = &mut full[(j0 + j) * d + i0..(j0 + j) * d + i0 + rows];
                for (i, o) in dst.iter_mut().enumerate() {
                    *o = tile[i][j];
                }
            }
        }
    }
    Ok(())
}

/// One power-iteration step plus QR: `(Q_new, est sorted, permutation)`. One GEMM (`A Q`), the
/// Rayleigh quotients `est_j = q_j . (A q_j)` from that product's columns, and `Q` of the
/// sorted product by the blocked Householder QR of [`super::qr`].
fn power_qr(par: Par, old: MatRef<'_, f32>, a: MatRef<'_, f32>) -> Result<(Mat<f32>, RefreshInfo)> {
    let d = old.nrows();
    debug_assert!(a.nrows() == d && a.ncols() == d, "checked by the caller");
    let isa = dispatch::Isa::detect();
    // The old basis with unit row stride (copied only when it is not), its columns as slices.
    let old_copy;
    let old = if old.row_stride() == 1 {
        old
    } else {
        old_copy = old.to_owned();
        old_copy.as_ref()
    };
    let old_cols: Vec<&[f32]> = (0..d)
        .map(|j| {
            old.col(j)
                .try_as_col_major()
                .expect("unit row stride")
                .as_slice()
        })
        .collect();
    let flops = 2.0 * (d * d * d) as f64;
    let (mut a_full, mut aq) = (vec![0.0f32; d * d], vec![0.0f32; d * d]);
    let mut est = vec![0.0f32; d];
    // The product A Q in two column halves, fixed by the shape so that the bits do not depend
    // on the thread count; each half's Rayleigh quotients right after it, while it is in cache.
    let half = (d / 2).next_multiple_of(16).min(d);
    let mirrored = std::sync::Mutex::new(None);
    // One entry into the pool for the whole refresh: the product's phases, the sort and the
    // QR's phases then run on its threads without a hand-off to and from the caller between
    // them.
    let done = with_faer_par(par, flops, |fp| {
        {
            let (full, prod) = (
                dispatch::Shared::new(&mut a_full),
                dispatch::Shared::new(&mut aq),
            );
            let quotients = dispatch::Shared::new(&mut est);
            // SAFETY (every `get` and `get_mut`): the buffers outlive `phase_pairs` and are not
            // used directly while it runs; phase 0 writes `full` (unit 0 only), phase 1 reads
            // it and writes the disjoint column ranges `cols` of `prod` and `quotients`.
            let product = |h: usize, threads: faer::Par| {
                let cols = if h == 0 { 0..half } else { half..d };
                let a_full = MatRef::from_column_major_slice(unsafe { full.get(0..d * d) }, d, d);
                let out = unsafe { prod.get_mut(cols.start * d..cols.end * d) };
                let out = MatMut::from_column_major_slice_mut(out, d, cols.len());
                let q = old.subcols(cols.start, cols.len());
                dispatch::gemm_on(threads, out, 0.0, a_full, q, 1.0);
                let out = unsafe { prod.get(cols.start * d..cols.end * d) };
                let dots = super::qr::column_dots(isa, &old_cols[cols.clone()], out, d);
                unsafe { quotients.get_mut(cols) }.copy_from_slice(&dots);
            };
            let mirror = || {
                let full = unsafe { full.get_mut(0..d * d) };
                *mirrored.lock().unwrap() = Some(symmetric_from_lower(a, full));
            };
            let ok = || matches!(*mirrored.lock().unwrap(), Some(Ok(())));
            if fp.degree() == 2 {
                // The mirror on this thread while the other one wakes, then a half of the
                // product each.
                dispatch::phase_pairs(true, 2, &|p, h| match (p, h) {
                    (0, 0) => mirror(),
                    (0, _) => {}
                    _ if ok() => product(h, faer::Par::Seq),
                    _ => {}
                });
            } else {
                mirror();
                if ok() {
                    product(0, fp);
                    product(1, fp);
                }
            }
            if !ok() {
                return None;
            }
        }
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&i, &j| {
            est[j]
                .partial_cmp(&est[i])
                .unwrap_or(core::cmp::Ordering::Equal)
        });
        // PERF: zeros, not the identity, which the formation never reads (AMD Zen 5, 256: 1.3
        // against 9.8 us; faer builds the identity element by element).
        let mut q = Mat::<f32>::zeros(d, d);
        // The QR sorts the product's columns into the symmetric copy's memory, then keeps its
        // reflectors in the product's.
        let rdiag = super::qr::householder_q(isa, &order, &mut aq, &mut a_full, d, q.as_mut(), fp);
        Some((q, order, rdiag))
    })?;
    mirrored.into_inner().unwrap().expect("the mirror ran")?;
    let (q, order, rdiag) = done.expect("the mirror succeeded");
    dispatch::clean_vector_state();
    if rdiag.iter().any(|r| !r.is_finite()) {
        return Err(Error::new(
            ErrorKind::NonFinite,
            "the refresh produced non-finite basis vectors: the statistic's entries are too \
             large for f32 arithmetic",
        ));
    }
    Ok((
        q,
        RefreshInfo {
            eigenvalues: order.iter().map(|&i| est[i]).collect(),
            permutation: order,
        },
    ))
}

impl DenseBasis {
    /// A new basis from the symmetric statistic `a` (lower triangle read) by `method`, starting
    /// from this one (see the module docs for the matching and the permutation).
    pub fn refreshed(
        &self,
        a: MatRef<'_, f32>,
        method: RefreshMethod,
        par: Par,
    ) -> Result<(DenseBasis, RefreshInfo)> {
        let d = self.dim();
        if a.nrows() != d || a.ncols() != d {
            return Err(Error::length(format!(
                "the statistic is {} x {}, the basis {d} x {d}",
                a.nrows(),
                a.ncols()
            )));
        }
        match method {
            RefreshMethod::Eigh => {
                let (mut u, s) = eigh_descending(a, par)?;
                let permutation = match_columns(par, self.matrix(), &mut u)?;
                Ok((
                    DenseBasis::new_unchecked(u),
                    RefreshInfo {
                        eigenvalues: s,
                        permutation,
                    },
                ))
            }
            RefreshMethod::PowerQr => {
                // `power_qr` checks the statistic while it copies it.
                let (q, info) = power_qr(par, self.matrix(), a)?;
                Ok((DenseBasis::new_unchecked(q), info))
            }
        }
    }
}

/// What a Kronecker refresh found: the new basis and each side's [`RefreshInfo`].
#[derive(Clone, Debug)]
pub struct KroneckerRefresh {
    /// The refreshed basis.
    pub basis: KroneckerBasis,
    /// What the refresh of the left factor found.
    pub left: RefreshInfo,
    /// What the refresh of the right factor found.
    pub right: RefreshInfo,
}

impl KroneckerBasis {
    /// Refreshes both sides from `(L, R)`.
    pub fn refreshed(
        &self,
        left: MatRef<'_, f32>,
        right: MatRef<'_, f32>,
        method: RefreshMethod,
        par: Par,
    ) -> Result<KroneckerRefresh> {
        let (l, li) = self.left().refreshed(left, method, par)?;
        let (r, ri) = self.right().refreshed(right, method, par)?;
        Ok(KroneckerRefresh {
            basis: KroneckerBasis::from_bases(l, r),
            left: li,
            right: ri,
        })
    }
}

/// Mirrors the lower triangle into the upper one.
fn mirror_lower(mut a: MatMut<'_, f32>) {
    let d = a.nrows();
    for j in 0..d {
        for i in j + 1..d {
            a[(j, i)] = a[(i, j)];
        }
    }
}

fn scale_matrix(mut a: MatMut<'_, f32>, factor: f32) {
    if factor == 1.0 {
        return;
    }
    for j in 0..a.ncols() {
        a.rb_mut()
            .col_mut(j)
            .iter_mut()
            .for_each(|x| *x = if factor == 0.0 { 0.0 } else { *x * factor });
    }
}

use faer::reborrow::ReborrowMut;

/// Kronecker factors of an `m x n` matrix parameter: `L` (m x m) and `R` (n x n), updated by
/// [`KroneckerStatistics::update`] (see the module docs).
#[derive(Clone, Debug)]
pub struct KroneckerStatistics {
    left: Mat<f32>,
    right: Mat<f32>,
}

impl KroneckerStatistics {
    /// Zero factors for an `m x n` parameter.
    pub fn new(rows: usize, cols: usize) -> Self {
        Self {
            left: Mat::zeros(rows, rows),
            right: Mat::zeros(cols, cols),
        }
    }

    /// `m`.
    pub fn rows(&self) -> usize {
        self.left.nrows()
    }

    /// `n`.
    pub fn cols(&self) -> usize {
        self.right.nrows()
    }

    /// `L` (symmetric; both triangles are kept).
    pub fn left(&self) -> MatRef<'_, f32> {
        self.left.as_ref()
    }

    /// `R`.
    pub fn right(&self) -> MatRef<'_, f32> {
        self.right.as_ref()
    }

    /// `L <- beta L + (1 - beta) G G^T`, `R <- beta R + (1 - beta) G^T G` for a row-major
    /// `m x n` gradient `G`; `beta` in [0, 1).
    pub fn update(&mut self, g: &[f32], beta: f64, par: Par) -> Result<()> {
        update_kronecker_factors(self.left.as_mut(), self.right.as_mut(), g, beta, par)
    }
}

/// [`KroneckerStatistics::update`] on caller-owned factors (`left` m x m, `right` n x n, both
/// triangles written). Nothing is written on error.
pub fn update_kronecker_factors(
    mut left: MatMut<'_, f32>,
    mut right: MatMut<'_, f32>,
    g: &[f32],
    beta: f64,
    par: Par,
) -> Result<()> {
    error::check_half_open("beta", beta, 0.0, 1.0)?;
    let (m, n) = (left.nrows(), right.nrows());
    if left.ncols() != m || right.ncols() != n {
        return Err(Error::length("the Kronecker factors must be square"));
    }
    let len = m
        .checked_mul(n)
        .ok_or_else(|| Error::length("m * n overflows"))?;
    crate::error::check_lengths(len, &[("the gradient", g.len())])?;
    let gm = MatRef::from_row_major_slice(g, m, n);
    let alpha = (1.0 - beta) as f32;
    scale_matrix(left.rb_mut(), beta as f32);
    scale_matrix(right.rb_mut(), beta as f32);
    let flops = (m * n) as f64 * (m + n) as f64;
    with_faer_par(par, flops, |fp| {
        triangular::matmul(
            left.rb_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            gm,
            BlockStructure::Rectangular,
            gm.transpose(),
            BlockStructure::Rectangular,
            alpha,
            fp,
        );
        triangular::matmul(
            right.rb_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            gm.transpose(),
            BlockStructure::Rectangular,
            gm,
            BlockStructure::Rectangular,
            alpha,
            fp,
        );
    })?;
    mirror_lower(left);
    mirror_lower(right);
    Ok(())
}

/// Rows per block of the GN accumulation (the weighted rows are formed block by block).
const GN_ROWS: usize = 256;

/// The full GN matrix `H` (d x d) with its accumulation workspace.
#[derive(Clone, Debug)]
pub struct GnMatrix {
    h: Mat<f32>,
    weighted: Vec<f32>,
}

impl GnMatrix {
    /// A zero `d x d` matrix.
    pub fn new(dim: usize) -> Self {
        Self {
            h: Mat::zeros(dim, dim),
            weighted: Vec::new(),
        }
    }

    /// `d`.
    pub fn dim(&self) -> usize {
        self.h.nrows()
    }

    /// `H` (symmetric; both triangles kept).
    pub fn matrix(&self) -> MatRef<'_, f32> {
        self.h.as_ref()
    }

    /// `H <- beta H + (1 - beta) X^T diag(w) X / N`: `x` holds `n_samples` rows of `dim` floats,
    /// `row_stride` apart (`row_stride >= dim`); `weights` (length `n_samples`, finite) defaults
    /// to all ones; `beta` in [0, 1). `n_samples = 0` only scales by `beta`.
    pub fn accumulate(
        &mut self,
        x: &[f32],
        n_samples: usize,
        row_stride: usize,
        weights: Option<&[f32]>,
        beta: f64,
        par: Par,
    ) -> Result<()> {
        accumulate_gn_matrix(
            self.h.as_mut(),
            x,
            n_samples,
            row_stride,
            weights,
            beta,
            par,
            &mut self.weighted,
        )
    }
}

/// [`GnMatrix::accumulate`] on a caller-owned `d x d` matrix `h` (both triangles written);
/// `weighted` is scratch, grown to at most `256 * d` floats when weights are given. Nothing is
/// written to `h` on error.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_gn_matrix(
    mut h: MatMut<'_, f32>,
    x: &[f32],
    n_samples: usize,
    row_stride: usize,
    weights: Option<&[f32]>,
    beta: f64,
    par: Par,
    weighted: &mut Vec<f32>,
) -> Result<()> {
    let d = h.nrows();
    if h.ncols() != d {
        return Err(Error::length("the GN matrix must be square"));
    }
    error::check_half_open("beta", beta, 0.0, 1.0)?;
    if row_stride < d {
        return Err(Error::length(format!(
            "row_stride = {row_stride} is less than dim = {d}"
        )));
    }
    let needed = if n_samples == 0 {
        0
    } else {
        (n_samples - 1)
            .checked_mul(row_stride)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(|| Error::length("n_samples * row_stride overflows"))?
    };
    if x.len() < needed {
        return Err(Error::length(format!(
            "x has {} floats, {n_samples} rows of stride {row_stride} need {needed}",
            x.len()
        )));
    }
    if let Some(w) = weights {
        crate::error::check_lengths(n_samples, &[("weights", w.len())])?;
        if w.iter().any(|v| !v.is_finite()) {
            return Err(Error::new(ErrorKind::NonFinite, "weights hold NaN or Inf"));
        }
    }
    if weights.is_some() && weighted.len() < GN_ROWS.min(n_samples) * d {
        weighted
            .try_reserve_exact(GN_ROWS.min(n_samples) * d)
            .map_err(|_| alloc_error("the weighted rows"))?;
        weighted.resize(GN_ROWS.min(n_samples) * d, 0.0);
    }
    scale_matrix(h.rb_mut(), beta as f32);
    if n_samples > 0 {
        let alpha = ((1.0 - beta) / n_samples as f64) as f32;
        let mut start = 0;
        while start < n_samples {
            let rows = GN_ROWS.min(n_samples - start);
            let block = MatRef::from_row_major_slice_with_stride(
                &x[start * row_stride..],
                rows,
                d,
                row_stride,
            );
            let lhs = match weights {
                Some(w) => {
                    let buf = &mut weighted[..rows * d];
                    for r in 0..rows {
                        let wr = w[start + r];
                        let row = &x[(start + r) * row_stride..(start + r) * row_stride + d];
                        buf[r * d..(r + 1) * d]
                            .iter_mut()
                            .zip(row)
                            .for_each(|(o, v)| *o = wr * v);
                    }
                    MatRef::from_row_major_slice(&weighted[..rows * d], rows, d)
                }
                None => block,
            };
            with_faer_par(par, (rows * d * d) as f64, |fp| {
                triangular::matmul(
                    h.rb_mut(),
                    BlockStructure::TriangularLower,
                    Accum::Add,
                    lhs.transpose(),
                    BlockStructure::Rectangular,
                    block,
                    BlockStructure::Rectangular,
                    alpha,
                    fp,
                )
            })?;
            start += rows;
        }
    }
    mirror_lower(h);
    Ok(())
}

/// `P o P` for `P = old^T new`.
fn squared_overlap(par: Par, old: MatRef<'_, f32>, new: MatRef<'_, f32>) -> Result<Mat<f32>> {
    let mut p = product(par, old.transpose(), new)?;
    for j in 0..p.ncols() {
        p.col_mut(j).iter_mut().for_each(|x| *x *= *x);
    }
    Ok(p)
}

/// Checks that `p` is a permutation of `0..n` (what [`StateTransfer::Permute`] applies).
pub fn check_permutation(p: &[usize], n: usize) -> Result<()> {
    let mut seen = vec![false; n];
    if p.len() != n {
        return Err(Error::length(format!(
            "the permutation has {} entries, expected {n}",
            p.len()
        )));
    }
    for &i in p {
        if i >= n || seen[i] {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "not a permutation of 0..n",
            ));
        }
        seen[i] = true;
    }
    Ok(())
}

/// Carries a dense basis's rotated state to `new` in place (see the module docs). `scratch`
/// holds at least `d` floats; `m` and each of `seconds` have `d` floats.
fn transfer_dense(
    par: Par,
    old: &DenseBasis,
    new: &DenseBasis,
    permutation: Option<&[usize]>,
    m: Option<&mut [f32]>,
    seconds: &mut [Vec<f32>],
    scratch: &mut [f32],
) -> Result<()> {
    let d = old.dim();
    let scratch = &mut scratch[..d];
    if let Some(m) = m {
        // m~' = U'^T (U m~)
        old.rotate_out_with(par, m, scratch, false)?;
        new.rotate_into_with(par, scratch, m, false)?;
    }
    match permutation {
        Some(perm) => {
            for v in seconds.iter_mut() {
                scratch.copy_from_slice(v);
                for (j, &i) in perm.iter().enumerate() {
                    v[j] = scratch[i];
                }
            }
        }
        None if seconds.is_empty() => {}
        None => {
            let pp = squared_overlap(par, old.matrix(), new.matrix())?;
            for v in seconds.iter_mut() {
                scratch.copy_from_slice(v);
                let src = faer::ColRef::from_slice(scratch);
                let dst = faer::ColMut::from_slice_mut(v);
                with_faer_par(par, 2.0 * (d * d) as f64, |fp| {
                    matmul(
                        dst.as_mat_mut(),
                        Accum::Replace,
                        pp.transpose(),
                        src.as_mat(),
                        1.0,
                        fp,
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Carries a Kronecker basis's rotated state (row-major `m x n` buffers) to `new` in place.
/// `scratch` and `work` hold at least `m * n` floats each.
#[allow(clippy::too_many_arguments)]
fn transfer_kronecker(
    par: Par,
    old: &KroneckerBasis,
    new: &KroneckerBasis,
    permutations: Option<(&[usize], &[usize])>,
    m: Option<&mut [f32]>,
    seconds: &mut [Vec<f32>],
    scratch: &mut [f32],
    work: &mut [f32],
) -> Result<()> {
    let (rows, cols) = (old.rows(), old.cols());
    let len = rows * cols;
    let (scratch, work) = (&mut scratch[..len], &mut work[..len]);
    if let Some(m) = m {
        old.rotate_out_with(par, m, scratch, work, false)?;
        new.rotate_into_with(par, scratch, m, work, false)?;
    }
    match permutations {
        Some((pl, pr)) => {
            for v in seconds.iter_mut() {
                scratch.copy_from_slice(v);
                for (i, &si) in pl.iter().enumerate() {
                    for (j, &sj) in pr.iter().enumerate() {
                        v[i * cols + j] = scratch[si * cols + sj];
                    }
                }
            }
        }
        None if seconds.is_empty() => {}
        None => {
            let pl = squared_overlap(par, old.left().matrix(), new.left().matrix())?;
            let pr = squared_overlap(par, old.right().matrix(), new.right().matrix())?;
            for v in seconds.iter_mut() {
                // V' = (P_L o P_L)^T V (P_R o P_R)
                super::rotate::kron_rotate_into_with(
                    par,
                    pl.as_ref(),
                    pr.as_ref(),
                    v,
                    scratch,
                    work,
                    false,
                )?;
                v.copy_from_slice(scratch);
            }
        }
    }
    Ok(())
}

/// The statistic a basis is refreshed from: the `d x d` matrix of a dense basis, or the factors
/// `(L, R)` (`m x m`, `n x n`) of a Kronecker basis. Only the lower triangles are read.
#[derive(Clone, Copy, Debug)]
pub enum Statistic<'a> {
    /// For a [`Basis::Dense`].
    Dense(MatRef<'a, f32>),
    /// `(L, R)` for a [`Basis::Kronecker`].
    Kronecker(MatRef<'a, f32>, MatRef<'a, f32>),
}

/// A refreshed basis and what the refresh of each side found (`right` is `None` for a dense
/// basis).
#[derive(Clone, Debug)]
pub struct BasisRefresh {
    /// The new basis.
    pub basis: Basis,
    /// What the refresh of the dense basis, or of the left factor, found.
    pub left: RefreshInfo,
    /// What the refresh of the right factor found (Kronecker only).
    pub right: Option<RefreshInfo>,
}

impl BasisRefresh {
    /// The permutations [`StateTransfer::Permute`] applies: the left (or dense) one, then the
    /// right one (empty for a dense basis).
    pub fn permutations(&self) -> (&[usize], &[usize]) {
        (
            &self.left.permutation,
            self.right.as_ref().map_or(&[][..], |r| &r.permutation),
        )
    }
}

impl Basis {
    /// A new basis from `statistic` by `method`, starting from this one
    /// ([`DenseBasis::refreshed`], [`KroneckerBasis::refreshed`]). The identity has no
    /// statistic to refresh from; a statistic of the other kind is an error.
    pub fn refreshed(
        &self,
        statistic: Statistic<'_>,
        method: RefreshMethod,
        par: Par,
    ) -> Result<BasisRefresh> {
        match (self, statistic) {
            (Basis::Dense(b), Statistic::Dense(a)) => {
                let (basis, left) = b.refreshed(a, method, par)?;
                Ok(BasisRefresh {
                    basis: Basis::Dense(basis),
                    left,
                    right: None,
                })
            }
            (Basis::Kronecker(b), Statistic::Kronecker(l, r)) => {
                let k = b.refreshed(l, r, method, par)?;
                Ok(BasisRefresh {
                    basis: Basis::Kronecker(k.basis),
                    left: k.left,
                    right: Some(k.right),
                })
            }
            (Basis::Identity(_), _) => Err(Error::new(
                ErrorKind::InvalidArgument,
                "the identity basis has no statistic to refresh from",
            )),
            _ => Err(Error::new(
                ErrorKind::InvalidArgument,
                "a dense basis refreshes from one matrix, a Kronecker basis from two factors",
            )),
        }
    }
}

/// Rotated Adam state in a basis's coordinates, carried through a basis change: `m~` (re-projected
/// exactly) and the second moments `v~`, `vmax~` (by a [`StateTransfer`] rule). Each buffer has
/// the basis's length; absent ones are not carried.
#[derive(Debug, Default)]
pub struct RotatedState<'a> {
    /// `m~`.
    pub exp_avg: Option<&'a mut [f32]>,
    /// `v~` and, with amsgrad, `vmax~`.
    pub second_moments: Vec<&'a mut [f32]>,
}

fn try_copy(data: &[f32], what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(data.len())
        .map_err(|_| alloc_error(what))?;
    v.extend_from_slice(data);
    Ok(v)
}

fn try_zeros(n: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| alloc_error(what))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// Carries `state` from basis `old` to `new` (same kind and size; see the module docs):
/// `m~` re-projected exactly, the second moments by `transfer`. `permutations` (dense: the
/// first list; Kronecker: left, right) is what [`StateTransfer::Permute`] applies.
///
/// Everything (the kinds and sizes, the permutations, the buffer lengths) is checked and the
/// new state computed into new memory before `state` is written: on error it is unchanged.
pub fn carry_state(
    par: Par,
    old: &Basis,
    new: &Basis,
    transfer: StateTransfer,
    permutations: Option<(&[usize], &[usize])>,
    state: RotatedState<'_>,
) -> Result<()> {
    let perms = match transfer {
        StateTransfer::Permute => Some(permutations.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                "StateTransfer::Permute needs the refresh's permutation",
            )
        })?),
        StateTransfer::Reproject => None,
    };
    match (old, new) {
        (Basis::Dense(o), Basis::Dense(n)) if o.dim() == n.dim() => {
            if let Some((p, _)) = perms {
                check_permutation(p, o.dim())?;
            }
        }
        (Basis::Kronecker(o), Basis::Kronecker(n))
            if o.rows() == n.rows() && o.cols() == n.cols() =>
        {
            if let Some((pl, pr)) = perms {
                check_permutation(pl, o.rows())?;
                check_permutation(pr, o.cols())?;
            }
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the new basis must be of the same kind and size as the old one (dense or \
                 Kronecker)",
            ))
        }
    }
    let RotatedState {
        exp_avg,
        mut second_moments,
    } = state;
    let n = old.len();
    if let Some(m) = &exp_avg {
        error::check_lengths(n, &[("exp_avg", m.len())])?;
    }
    for v in &second_moments {
        error::check_lengths(n, &[("a second moment", v.len())])?;
    }
    // The new state is computed in copies, then written back when nothing can fail any more.
    let mut m = match &exp_avg {
        Some(m) => Some(try_copy(m, "the carried state")?),
        None => None,
    };
    let mut seconds = Vec::new();
    seconds
        .try_reserve_exact(second_moments.len())
        .map_err(|_| alloc_error("the carried state"))?;
    for v in &second_moments {
        seconds.push(try_copy(v, "the carried state")?);
    }
    let mut scratch = try_zeros(n, "the state transfer's workspace")?;
    match (old, new) {
        (Basis::Dense(o), Basis::Dense(nw)) => transfer_dense(
            par,
            o,
            nw,
            perms.map(|(p, _)| p),
            m.as_deref_mut(),
            &mut seconds,
            &mut scratch,
        )?,
        (Basis::Kronecker(o), Basis::Kronecker(nw)) => {
            let mut work = try_zeros(n, "the state transfer's workspace")?;
            transfer_kronecker(
                par,
                o,
                nw,
                perms,
                m.as_deref_mut(),
                &mut seconds,
                &mut scratch,
                &mut work,
            )?
        }
        _ => unreachable!("the kinds were checked above"),
    }
    if let (Some(dst), Some(src)) = (exp_avg, &m) {
        dst.copy_from_slice(src);
    }
    for (dst, src) in second_moments.iter_mut().zip(&seconds) {
        dst.copy_from_slice(src);
    }
    Ok(())
}

/// Refreshes `basis` from `statistic` by `method` ([`Basis::refreshed`]) and carries `state` to
/// the new basis by `transfer` ([`carry_state`], with the refresh's permutations). Returns the
/// new basis for the caller to install; on error `state` is unchanged.
pub fn refresh_with_state(
    par: Par,
    basis: &Basis,
    statistic: Statistic<'_>,
    method: RefreshMethod,
    transfer: StateTransfer,
    state: RotatedState<'_>,
) -> Result<BasisRefresh> {
    let refreshed = basis.refreshed(statistic, method, par)?;
    carry_state(
        par,
        basis,
        &refreshed.basis,
        transfer,
        Some(refreshed.permutations()),
        state,
    )?;
    Ok(refreshed)
}
