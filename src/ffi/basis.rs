//! Basis exports: opaque `dp_basis` handles (identity, dense, Kronecker), rotation, statistics,
//! refresh with state transfer, geodesic interpolation, and the rotated Adam step.
//!
//! **Matrices** cross the boundary as row-major (C order) `float` arrays: a `d x d` basis `U`
//! has `U[i][j] = u[i * d + j]`, its columns are the basis vectors; a matrix parameter or
//! gradient is `rows x cols` row-major.
//!
//! **Handles**: created by the `dp_basis_create_*` functions and `dp_basis_interpolate_f32`
//! (written to `*out` only on success), owned by the caller, released with `dp_basis_free`
//! (`NULL` is a no-op). A handle may be used by several threads at once for rotations and steps;
//! `dp_basis_refresh_f32` needs exclusive use.

use super::adam::dp_adam_config;
use super::check::{self, Name, Region};
use super::{dp_status, guard};
use crate::basis::refresh::{
    accumulate_gn_matrix, transfer_dense, transfer_kronecker, update_kronecker_factors,
};
use crate::basis::{Basis, DenseBasis, Geodesic, KroneckerBasis, RefreshMethod, StateTransfer};
use crate::dispatch::{Isa, Par};
use crate::error::{Error, ErrorKind, Result};
use crate::kernels::adam::AdamTensor;
use crate::optim::{rotated_adam_step_with, rotated_workspace_len};
use faer::{Mat, MatMut, MatRef};

/// An orthonormal basis (opaque; see the module docs for ownership).
#[derive(Debug)]
pub struct dp_basis {
    inner: Basis,
}

/// `dp_basis_info.kind`: the identity.
pub const DP_BASIS_IDENTITY: i32 = 0;
/// `dp_basis_info.kind`: a dense `d x d` basis.
pub const DP_BASIS_DENSE: i32 = 1;
/// `dp_basis_info.kind`: a Kronecker pair `(Q_L, Q_R)`.
pub const DP_BASIS_KRONECKER: i32 = 2;

/// The largest `max |U^T U - I|` `dp_basis_create_dense_f32` (and the Kronecker and
/// interpolation calls) accept.
pub const DP_BASIS_ORTHONORMAL_TOLERANCE: f32 = 1e-4;
const _: () = assert!(DP_BASIS_ORTHONORMAL_TOLERANCE == crate::basis::ORTHONORMAL_TOLERANCE);

/// Refresh by a full eigendecomposition (eigenvalues descending), matched to the old basis.
pub const DP_REFRESH_EIGH: i32 = 0;
/// Refresh by one power-iteration step and QR (SOAP).
pub const DP_REFRESH_POWER_QR: i32 = 1;

/// Rotated second moments follow their matched eigenvectors (SOAP).
pub const DP_TRANSFER_PERMUTE: i32 = 0;
/// Rotated second moments are re-projected: `v' = (P o P)^T v`, `P = U_old^T U_new`.
pub const DP_TRANSFER_REPROJECT: i32 = 1;

/// What a basis is (`dp_basis_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_basis_info {
    /// `DP_BASIS_IDENTITY`, `DP_BASIS_DENSE` or `DP_BASIS_KRONECKER`.
    pub kind: i32,
    /// Parameter floats the basis acts on (`d`, or `rows * cols`).
    pub len: usize,
    /// `d` for dense, `rows` for Kronecker, `len` for the identity.
    pub rows: usize,
    /// `d` for dense, `cols` for Kronecker, 1 for the identity.
    pub cols: usize,
    /// Floats of `work` `dp_basis_rotate_into_f32` / `_out_f32` need.
    pub rotate_workspace_len: usize,
    /// Floats of `workspace` `dp_rotated_adam_step_f32` needs.
    pub step_workspace_len: usize,
}

/// A plain argument name for messages.
fn name(field: &'static str) -> Name {
    Name {
        tensor: None,
        field,
    }
}

fn square_len(name: &str, d: usize) -> Result<usize> {
    d.checked_mul(d)
        .ok_or_else(|| Error::length(format!("{name}: {d} x {d} overflows")))
}

fn product_len(rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols)
        .ok_or_else(|| Error::length(format!("{rows} x {cols} overflows")))
}

/// A `d x d` matrix from a checked row-major C array.
///
/// # Safety
/// `ptr` passed `non_null` and `size_and_alignment` for `d * d` floats, and is valid for reads.
unsafe fn read_square(ptr: *const f32, d: usize) -> Mat<f32> {
    // SAFETY: non-null (or d == 0), aligned and sized: checked by the caller; validity is the
    // C contract.
    let data = unsafe { check::slice(ptr, d * d) };
    Mat::from_fn(d, d, |i, j| data[i * d + j])
}

fn write_handle(out: *mut *mut dp_basis, inner: Basis) {
    let raw = Box::into_raw(Box::new(dp_basis { inner }));
    // SAFETY: out is non-null and aligned (checked by every caller before any work), and valid
    // for a write of one pointer (C contract).
    unsafe { *out = raw };
}

fn check_out(out: *mut *mut dp_basis) -> Result<()> {
    check::required("out", out)?;
    check::size_and_alignment("out", out, 1)
}

/// Creates the identity basis on `len` floats (rotations are copies; steps are the plain ones).
///
/// # Safety
/// `out` must be valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_create_identity(
    len: usize,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check_out(out)?;
        write_handle(out, Basis::Identity(len));
        Ok(())
    })
}

/// Creates a dense basis from the row-major `dim x dim` matrix `u` (copied), which must be
/// orthonormal: `max |U^T U - I| <= 1e-4`, else `DP_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `u` must be valid for `dim * dim` floats; `out` for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_create_dense_f32(
    u: *const f32,
    dim: usize,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check_out(out)?;
        let n = square_len("u", dim)?;
        check::non_null("u", u, n)?;
        check::size_and_alignment("u", u, n)?;
        // SAFETY: checked just above.
        let basis = DenseBasis::new(unsafe { read_square(u, dim) })?;
        write_handle(out, Basis::Dense(basis));
        Ok(())
    })
}

/// Creates a Kronecker basis for a `rows x cols` matrix parameter from the row-major orthonormal
/// factors `q_left` (`rows x rows`) and `q_right` (`cols x cols`), copied.
///
/// # Safety
/// `q_left` must be valid for `rows * rows` floats, `q_right` for `cols * cols`; `out` for
/// writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_create_kronecker_f32(
    q_left: *const f32,
    rows: usize,
    q_right: *const f32,
    cols: usize,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check_out(out)?;
        let (nl, nr) = (square_len("q_left", rows)?, square_len("q_right", cols)?);
        product_len(rows, cols)?;
        check::non_null("q_left", q_left, nl)?;
        check::non_null("q_right", q_right, nr)?;
        check::size_and_alignment("q_left", q_left, nl)?;
        check::size_and_alignment("q_right", q_right, nr)?;
        // SAFETY: checked just above.
        let (l, r) = unsafe { (read_square(q_left, rows), read_square(q_right, cols)) };
        write_handle(out, Basis::Kronecker(KroneckerBasis::new(l, r)?));
        Ok(())
    })
}

/// Creates the dense eigenbasis of the symmetric row-major `dim x dim` matrix `a` (a statistic
/// such as the GN matrix; its lower triangle `a[i * dim + j]`, `i >= j`, is read). Eigenvalues,
/// in descending order, go to `eigenvalues` (`dim` floats) unless it is NULL.
///
/// # Safety
/// `a` must be valid for `dim * dim` floats, `eigenvalues` (if not NULL) for writing `dim`;
/// `out` for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_create_from_symmetric_f32(
    a: *const f32,
    dim: usize,
    eigenvalues: *mut f32,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check_out(out)?;
        let n = square_len("a", dim)?;
        check::non_null("a", a, n)?;
        check::size_and_alignment("a", a, n)?;
        check::size_and_alignment("eigenvalues", eigenvalues, dim)?;
        check::disjoint(vec![
            Region::new(name("a"), a, n, false),
            Region::new(
                name("eigenvalues"),
                eigenvalues,
                if eigenvalues.is_null() { 0 } else { dim },
                true,
            ),
        ])?;
        // SAFETY: checked just above.
        let (basis, s) = DenseBasis::from_symmetric(unsafe { read_square(a, dim) }.as_ref())?;
        if !eigenvalues.is_null() {
            // SAFETY: non-null, aligned, sized and disjoint from `a` (checked above).
            unsafe { check::slice_mut(eigenvalues, dim) }.copy_from_slice(&s);
        }
        write_handle(out, Basis::Dense(basis));
        Ok(())
    })
}

/// Creates the Kronecker eigenbasis of the symmetric factors `left` (`rows x rows`) and `right`
/// (`cols x cols`), e.g. from `dp_kron_factors_update_f32`.
///
/// # Safety
/// `left` must be valid for `rows * rows` floats, `right` for `cols * cols`; `out` for writing one
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_create_from_factors_f32(
    left: *const f32,
    rows: usize,
    right: *const f32,
    cols: usize,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check_out(out)?;
        let (nl, nr) = (square_len("left", rows)?, square_len("right", cols)?);
        product_len(rows, cols)?;
        check::non_null("left", left, nl)?;
        check::non_null("right", right, nr)?;
        check::size_and_alignment("left", left, nl)?;
        check::size_and_alignment("right", right, nr)?;
        // SAFETY: checked just above.
        let (l, r) = unsafe { (read_square(left, rows), read_square(right, cols)) };
        let (basis, _, _) = KroneckerBasis::from_factors(l.as_ref(), r.as_ref())?;
        write_handle(out, Basis::Kronecker(basis));
        Ok(())
    })
}

/// Releases a basis. `NULL` is a no-op.
///
/// # Safety
/// `basis` must be NULL or a handle from this library not yet freed, and no other call may be
/// using it.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_free(basis: *mut dp_basis) {
    if basis.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: a live handle created by Box::into_raw in this module (C contract).
        drop(unsafe { Box::from_raw(basis) });
    }));
}

/// The handle behind a checked pointer.
///
/// # Safety
/// `basis` is non-null and a live handle (C contract).
unsafe fn handle<'a>(basis: *const dp_basis) -> &'a Basis {
    // SAFETY: see above.
    unsafe { &(*basis).inner }
}

/// Describes `basis` (kind, sizes, workspace lengths).
///
/// # Safety
/// `basis` must be a live handle; `out` valid for writing one `dp_basis_info`.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_get_info(
    basis: *const dp_basis,
    out: *mut dp_basis_info,
) -> dp_status {
    guard(|| {
        check::required("basis", basis)?;
        check::required("out", out)?;
        check::size_and_alignment("out", out, 1)?;
        // SAFETY: non-null; a live handle (C contract).
        let b = unsafe { handle(basis) };
        let (kind, rows, cols) = match b {
            Basis::Identity(n) => (DP_BASIS_IDENTITY, *n, 1),
            Basis::Dense(d) => (DP_BASIS_DENSE, d.dim(), d.dim()),
            Basis::Kronecker(k) => (DP_BASIS_KRONECKER, k.rows(), k.cols()),
        };
        let info = dp_basis_info {
            kind,
            len: b.len(),
            rows,
            cols,
            rotate_workspace_len: b.workspace_len(),
            step_workspace_len: rotated_workspace_len(b),
        };
        // SAFETY: non-null and aligned (checked above), valid for a write (C contract).
        unsafe { *out = info };
        Ok(())
    })
}

/// Copies a basis matrix out, row-major: `side` 0 is `U` (dense) or `Q_L` (Kronecker), 1 is
/// `Q_R` (Kronecker). `len` must be the matrix's number of floats. Not for the identity.
///
/// # Safety
/// `basis` must be a live handle; `out` valid for writing `len` floats.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_get_matrix_f32(
    basis: *const dp_basis,
    side: i32,
    out: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        check::required("basis", basis)?;
        check::non_null("out", out, len)?;
        check::size_and_alignment("out", out, len)?;
        // SAFETY: non-null; a live handle (C contract).
        let b = unsafe { handle(basis) };
        let m = match (b, side) {
            (Basis::Dense(d), 0) => d.matrix(),
            (Basis::Kronecker(k), 0) => k.left().matrix(),
            (Basis::Kronecker(k), 1) => k.right().matrix(),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("side = {side} names no matrix of this basis"),
                ))
            }
        };
        let d = m.nrows();
        crate::error::check_lengths(d * d, &[("out", len)])?;
        // SAFETY: non-null (len > 0 here unless d == 0), aligned, sized (checked above).
        let dst = unsafe { check::slice_mut(out, len) };
        for i in 0..d {
            for j in 0..d {
                dst[i * d + j] = m[(i, j)];
            }
        }
        Ok(())
    })
}

/// Shared body of the rotations.
///
/// # Safety
/// As the exports below.
unsafe fn rotate(
    basis: *const dp_basis,
    input: *const f32,
    out: *mut f32,
    work: *mut f32,
    work_len: usize,
    len: usize,
    into: bool,
) -> Result<()> {
    check::required("basis", basis)?;
    check::non_null("input", input, len)?;
    check::non_null("out", out, len)?;
    check::non_null("work", work, work_len)?;
    check::size_and_alignment("input", input, len)?;
    check::size_and_alignment("out", out, len)?;
    check::size_and_alignment("work", work, work_len)?;
    // SAFETY: non-null; a live handle (C contract).
    let b = unsafe { handle(basis) };
    crate::error::check_lengths(b.len(), &[("len", len)])?;
    if work_len < b.workspace_len() {
        return Err(Error::length(format!(
            "work has {work_len} floats, the rotation needs {}",
            b.workspace_len()
        )));
    }
    let work_len = b.workspace_len();
    check::disjoint(vec![
        Region::new(name("input"), input, len, false),
        Region::new(name("out"), out, len, true),
        Region::new(name("work"), work, work_len, true),
    ])?;
    // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
    let (g, o, w) = unsafe {
        (
            check::slice(input, len),
            check::slice_mut(out, len),
            check::slice_mut(work, work_len),
        )
    };
    if into {
        b.rotate_into(g, o, w)
    } else {
        b.rotate_out(g, o, w)
    }
}

/// `out = U^T g` (dense), `out = Q_L^T G Q_R` (Kronecker, row-major), or a copy (identity).
/// `work` holds `dp_basis_info.rotate_workspace_len` floats (may be NULL when that is 0).
/// No allocation.
///
/// # Safety
/// `basis` must be a live handle; `g` valid for reading `len` floats, `out` for writing `len`,
/// `work` for writing `work_len`.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_rotate_into_f32(
    basis: *const dp_basis,
    g: *const f32,
    out: *mut f32,
    work: *mut f32,
    work_len: usize,
    len: usize,
) -> dp_status {
    // SAFETY: forwarded C contract.
    guard(|| unsafe { rotate(basis, g, out, work, work_len, len, true) })
}

/// `out = U g_rot` (dense), `out = Q_L G_rot Q_R^T` (Kronecker), or a copy (identity).
///
/// # Safety
/// As `dp_basis_rotate_into_f32`.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_rotate_out_f32(
    basis: *const dp_basis,
    g_rot: *const f32,
    out: *mut f32,
    work: *mut f32,
    work_len: usize,
    len: usize,
) -> dp_status {
    // SAFETY: forwarded C contract.
    guard(|| unsafe { rotate(basis, g_rot, out, work, work_len, len, false) })
}

/// The basis on the geodesic from `u0` to `u1` at `t` (0 gives `u0`, 1 gives `u1` up to
/// column order and signs): `U(t) = U0 expm(t logm(U0^T U1))` after column matching and the
/// determinant fix (see the Rust docs of `diagprec::Geodesic`). Both dense of the same size, or
/// both Kronecker of the same shape (each factor interpolated). `t` finite.
///
/// # Safety
/// `u0`, `u1` must be live handles; `out` valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_interpolate_f32(
    u0: *const dp_basis,
    u1: *const dp_basis,
    t: f64,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check::required("u0", u0)?;
        check::required("u1", u1)?;
        check_out(out)?;
        if !t.is_finite() {
            return Err(Error::hyperparameter(format!("t = {t} is not finite")));
        }
        // SAFETY: non-null; live handles (C contract).
        let (a, b) = unsafe { (handle(u0), handle(u1)) };
        let result = match (a, b) {
            (Basis::Dense(x), Basis::Dense(y)) if x.dim() == y.dim() => {
                Basis::Dense(Geodesic::new(x.matrix(), y.matrix())?.at(t)?)
            }
            (Basis::Kronecker(x), Basis::Kronecker(y))
                if x.rows() == y.rows() && x.cols() == y.cols() =>
            {
                let l = Geodesic::new(x.left().matrix(), y.left().matrix())?.at(t)?;
                let r = Geodesic::new(x.right().matrix(), y.right().matrix())?.at(t)?;
                Basis::Kronecker(KroneckerBasis::from_bases(l, r))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "interpolation needs two dense bases of one size or two Kronecker bases of one shape",
                ))
            }
        };
        write_handle(out, result);
        Ok(())
    })
}

/// `H <- beta H + (1 - beta) X^T diag(w) X / N` on the caller's symmetric `dim x dim` matrix `h`
/// (both triangles written): `x` holds `n_samples` rows of `dim` floats, `row_stride` floats
/// apart; `weights` (`n_samples` finite floats) may be NULL for all ones; `beta` in [0, 1).
///
/// # Safety
/// `h` must be valid for reads and writes of `dim * dim` floats; `x` for reading
/// `(n_samples - 1) * row_stride + dim` floats (none when `n_samples == 0`); `weights` (if not
/// NULL) for reading `n_samples`.
#[no_mangle]
pub unsafe extern "C" fn dp_gn_matrix_accumulate_f32(
    h: *mut f32,
    dim: usize,
    x: *const f32,
    n_samples: usize,
    row_stride: usize,
    weights: *const f32,
    beta: f64,
) -> dp_status {
    guard(|| {
        let hn = square_len("h", dim)?;
        if row_stride < dim {
            return Err(Error::length(format!(
                "row_stride = {row_stride} is less than dim = {dim}"
            )));
        }
        let xn = if n_samples == 0 {
            0
        } else {
            (n_samples - 1)
                .checked_mul(row_stride)
                .and_then(|v| v.checked_add(dim))
                .ok_or_else(|| Error::length("n_samples * row_stride overflows"))?
        };
        check::non_null("h", h, hn)?;
        check::non_null("x", x, xn)?;
        check::size_and_alignment("h", h, hn)?;
        check::size_and_alignment("x", x, xn)?;
        let wn = if weights.is_null() { 0 } else { n_samples };
        check::size_and_alignment("weights", weights, wn)?;
        crate::error::check_half_open("beta", beta, 0.0, 1.0)?;
        check::disjoint(vec![
            Region::new(name("h"), h, hn, true),
            Region::new(name("x"), x, xn, false),
            Region::new(name("weights"), weights, wn, false),
        ])?;
        // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
        let (hs, xs, ws) = unsafe {
            (
                check::slice_mut(h, hn),
                check::slice(x, xn),
                (!weights.is_null()).then(|| check::slice(weights, wn)),
            )
        };
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

/// Kronecker factors of a `rows x cols` row-major gradient, fused EMA on the caller's symmetric
/// matrices: `left <- beta left + (1 - beta) G G^T` (`rows x rows`),
/// `right <- beta right + (1 - beta) G^T G` (`cols x cols`); `beta` in [0, 1).
///
/// # Safety
/// `left` must be valid for reads and writes of `rows * rows` floats, `right` of `cols * cols`,
/// `grad` for reading `rows * cols`.
#[no_mangle]
pub unsafe extern "C" fn dp_kron_factors_update_f32(
    left: *mut f32,
    rows: usize,
    right: *mut f32,
    cols: usize,
    grad: *const f32,
    beta: f64,
) -> dp_status {
    guard(|| {
        let (nl, nr, ng) = (
            square_len("left", rows)?,
            square_len("right", cols)?,
            product_len(rows, cols)?,
        );
        check::non_null("left", left, nl)?;
        check::non_null("right", right, nr)?;
        check::non_null("grad", grad, ng)?;
        check::size_and_alignment("left", left, nl)?;
        check::size_and_alignment("right", right, nr)?;
        check::size_and_alignment("grad", grad, ng)?;
        crate::error::check_half_open("beta", beta, 0.0, 1.0)?;
        check::disjoint(vec![
            Region::new(name("left"), left, nl, true),
            Region::new(name("right"), right, nr, true),
            Region::new(name("grad"), grad, ng, false),
        ])?;
        // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
        let (l, r, g) = unsafe {
            (
                check::slice_mut(left, nl),
                check::slice_mut(right, nr),
                check::slice(grad, ng),
            )
        };
        update_kronecker_factors(
            MatMut::from_row_major_slice_mut(l, rows, rows),
            MatMut::from_row_major_slice_mut(r, cols, cols),
            g,
            beta,
            Par::Pool,
        )
    })
}

/// Refreshes `basis` in place from its statistic (dense: `stat_left` is the `d x d` matrix and
/// `stat_right` must be NULL; Kronecker: the two factors), by `method` (`DP_REFRESH_*`), and
/// carries the rotated optimizer state: `exp_avg` is re-projected exactly, `exp_avg_sq` and
/// `max_exp_avg_sq` by `transfer` (`DP_TRANSFER_*`). Each state buffer may be NULL (not
/// carried); non-NULL ones hold `len` = the basis length. Not for the identity. On failure the
/// basis and the buffers are unchanged.
///
/// # Safety
/// `basis` must be a live handle used by no other call; `stat_left`/`stat_right` valid for
/// reading their sizes; each non-NULL state buffer valid for reads and writes of `len` floats.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_refresh_f32(
    basis: *mut dp_basis,
    stat_left: *const f32,
    stat_right: *const f32,
    method: i32,
    transfer: i32,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    max_exp_avg_sq: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        check::required("basis", basis)?;
        // SAFETY: non-null; a live handle (C contract).
        let b = unsafe { handle(basis) };
        let (nl, nr) = match b {
            Basis::Identity(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "the identity basis has no statistic to refresh from",
                ))
            }
            Basis::Dense(d) => (d.dim() * d.dim(), 0),
            Basis::Kronecker(k) => (k.rows() * k.rows(), k.cols() * k.cols()),
        };
        check::required("stat_left", stat_left)?;
        if matches!(b, Basis::Kronecker(_)) {
            check::required("stat_right", stat_right)?;
        } else if !stat_right.is_null() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "stat_right must be NULL for a dense basis",
            ));
        }
        let states = [
            ("exp_avg", exp_avg),
            ("exp_avg_sq", exp_avg_sq),
            ("max_exp_avg_sq", max_exp_avg_sq),
        ];
        let any_state = states.iter().any(|(_, p)| !p.is_null());
        if any_state {
            crate::error::check_lengths(b.len(), &[("len", len)])?;
        }
        check::size_and_alignment("stat_left", stat_left, nl)?;
        check::size_and_alignment("stat_right", stat_right, nr)?;
        for (name, p) in states {
            check::size_and_alignment(name, p, len)?;
        }
        let method = match method {
            DP_REFRESH_EIGH => RefreshMethod::Eigh,
            DP_REFRESH_POWER_QR => RefreshMethod::PowerQr,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("method = {other} is not a DP_REFRESH_* value"),
                ))
            }
        };
        let transfer = match transfer {
            DP_TRANSFER_PERMUTE => StateTransfer::Permute,
            DP_TRANSFER_REPROJECT => StateTransfer::Reproject,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("transfer = {other} is not a DP_TRANSFER_* value"),
                ))
            }
        };
        let state_len = |p: *mut f32| if p.is_null() { 0 } else { len };
        check::disjoint(vec![
            Region::new(name("stat_left"), stat_left, nl, false),
            Region::new(name("stat_right"), stat_right, nr, false),
            Region::new(name("exp_avg"), exp_avg, state_len(exp_avg), true),
            Region::new(name("exp_avg_sq"), exp_avg_sq, state_len(exp_avg_sq), true),
            Region::new(
                name("max_exp_avg_sq"),
                max_exp_avg_sq,
                state_len(max_exp_avg_sq),
                true,
            ),
        ])?;
        // Compute everything into new memory first: on failure nothing is written.
        // SAFETY: non-null, aligned, sized and disjoint: checked above.
        let (sl, sr) = unsafe { (check::slice(stat_left, nl), check::slice(stat_right, nr)) };
        // SAFETY: as above; each state buffer is either NULL (skipped) or len floats.
        let read = |p: *mut f32| unsafe { (!p.is_null()).then(|| check::slice(p, len).to_vec()) };
        let mut m = read(exp_avg).unwrap_or_else(|| vec![0.0; b.len()]);
        let mut seconds: Vec<Vec<f32>> = [exp_avg_sq, max_exp_avg_sq]
            .iter()
            .filter_map(|&p| read(p))
            .collect();
        let n = b.len();
        let mut scratch = vec![0.0f32; n];
        let mut work = vec![0.0f32; n];
        let new_basis = match b {
            Basis::Identity(_) => unreachable!("rejected above"),
            Basis::Dense(old) => {
                let d = old.dim();
                let (new, info) =
                    old.refreshed(MatRef::from_row_major_slice(sl, d, d), method, Par::Pool)?;
                let mut views: Vec<&mut [f32]> =
                    seconds.iter_mut().map(|v| v.as_mut_slice()).collect();
                let perm =
                    (transfer == StateTransfer::Permute).then_some(info.permutation.as_slice());
                transfer_dense(Par::Pool, old, &new, perm, &mut m, &mut views, &mut scratch)?;
                Basis::Dense(new)
            }
            Basis::Kronecker(old) => {
                let (r, c) = (old.rows(), old.cols());
                let refreshed = old.refreshed(
                    MatRef::from_row_major_slice(sl, r, r),
                    MatRef::from_row_major_slice(sr, c, c),
                    method,
                    Par::Pool,
                )?;
                let mut views: Vec<&mut [f32]> =
                    seconds.iter_mut().map(|v| v.as_mut_slice()).collect();
                let perms = (transfer == StateTransfer::Permute).then_some((
                    refreshed.left.permutation.as_slice(),
                    refreshed.right.permutation.as_slice(),
                ));
                transfer_kronecker(
                    Par::Pool,
                    old,
                    &refreshed.basis,
                    perms,
                    &mut m,
                    &mut views,
                    &mut scratch,
                    &mut work,
                )?;
                Basis::Kronecker(refreshed.basis)
            }
        };
        // Success: write the state back and swap the basis.
        let mut carried = seconds.into_iter();
        for (p, values) in [
            (exp_avg, Some(m)),
            (exp_avg_sq, None),
            (max_exp_avg_sq, None),
        ] {
            if p.is_null() {
                continue;
            }
            let values = values
                .or_else(|| carried.next())
                .expect("one carried buffer per non-NULL pointer");
            // SAFETY: non-null, aligned, sized, disjoint (checked above).
            unsafe { check::slice_mut(p, len) }.copy_from_slice(&values);
        }
        // SAFETY: non-null; a live handle used by no other call (C contract).
        unsafe { (*basis).inner = new_basis };
        Ok(())
    })
}

/// One Adam/AdamW step in `basis` (DESIGN.md 2.1, rotated Adam): `exp_avg`, `exp_avg_sq`,
/// `max_exp_avg_sq` live in rotated coordinates (original ones for the identity, where this is
/// `dp_adam_step_f32`); `workspace` holds `dp_basis_info.step_workspace_len` floats (0 for the
/// identity: may be NULL); `len` is the basis length. No allocation. On failure nothing is
/// written.
///
/// # Safety
/// `cfg` must point to a `dp_adam_config`, `basis` be a live handle; the buffers valid for
/// `len` floats (`workspace` for `workspace_len`), as for `dp_adam_step_f32`.
#[no_mangle]
pub unsafe extern "C" fn dp_rotated_adam_step_f32(
    cfg: *const dp_adam_config,
    step: u64,
    basis: *const dp_basis,
    param: *mut f32,
    grad: *const f32,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    max_exp_avg_sq: *mut f32,
    len: usize,
    workspace: *mut f32,
    workspace_len: usize,
) -> dp_status {
    guard(|| {
        // SAFETY: cfg is NULL or readable (C contract).
        let config = unsafe { super::adam::adam_config(cfg)? };
        check::required("basis", basis)?;
        let mut buffers: Vec<(&'static str, *const f32, bool)> = vec![
            ("param", param, true),
            ("grad", grad, false),
            ("exp_avg", exp_avg, true),
            ("exp_avg_sq", exp_avg_sq, true),
        ];
        if config.amsgrad {
            buffers.push(("max_exp_avg_sq", max_exp_avg_sq, true));
        }
        for (name, p, _) in &buffers {
            check::non_null(name, *p, len)?;
        }
        check::non_null("workspace", workspace, workspace_len)?;
        for (name, p, _) in &buffers {
            check::size_and_alignment(name, *p, len)?;
        }
        check::size_and_alignment("workspace", workspace, workspace_len)?;
        // SAFETY: non-null; a live handle (C contract).
        let b = unsafe { handle(basis) };
        crate::error::check_lengths(b.len(), &[("len", len)])?;
        let need = rotated_workspace_len(b);
        if workspace_len < need {
            return Err(Error::length(format!(
                "workspace has {workspace_len} floats, the step needs {need}"
            )));
        }
        config.validate()?;
        if step == 0 {
            return Err(Error::hyperparameter("step = 0: steps are counted from 1"));
        }
        let mut regions: Vec<Region> = buffers
            .iter()
            .map(|(field, p, w)| Region::new(name(field), *p, len, *w))
            .collect();
        regions.push(Region::new(name("workspace"), workspace, need, true));
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
        let tensor = unsafe {
            AdamTensor {
                param: check::slice_mut(param, len),
                grad: check::slice(grad, len),
                exp_avg: check::slice_mut(exp_avg, len),
                exp_avg_sq: check::slice_mut(exp_avg_sq, len),
                max_exp_avg_sq: config
                    .amsgrad
                    .then(|| check::slice_mut(max_exp_avg_sq, len)),
            }
        };
        // SAFETY: as above.
        let ws = unsafe { check::slice_mut(workspace, need) };
        rotated_adam_step_with(Isa::detect(), Par::Pool, &config, step, b, tensor, ws)
    })
}

/// One GN^p step in `basis` (DESIGN.md 2.3; the Rust docs of
/// `diagprec::rotated_gn_step_with`): `h` is `diag(U^T H U)` in rotated coordinates (e.g. from
/// `dp_gn_diag_weighted_in_basis_f32`); `exp_avg` (momentum, rotated coordinates) may be NULL;
/// `workspace` holds `dp_basis_info.step_workspace_len` floats (NULL with 0 for the identity,
/// where this is `dp_gn_step_f32`). No allocation. On failure nothing is written.
///
/// # Safety
/// `cfg` must point to a `dp_gn_config`, `basis` be a live handle; `param`, `grad`, `h` and
/// (if not NULL) `exp_avg` valid for `len` floats, `workspace` for `workspace_len`.
#[no_mangle]
pub unsafe extern "C" fn dp_rotated_gn_step_f32(
    cfg: *const super::gn::dp_gn_config,
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
        // SAFETY: non-null; points to a dp_gn_config (C contract).
        let config = crate::kernels::precond::GnConfig::from(unsafe { &*cfg });
        let m_len = if exp_avg.is_null() { 0 } else { len };
        let buffers: [(&'static str, *const f32, usize, bool); 4] = [
            ("param", param, len, true),
            ("grad", grad, len, false),
            ("exp_avg", exp_avg, m_len, true),
            ("h", h, len, false),
        ];
        for (field, p, n, _) in buffers {
            check::non_null(name(field), p, n)?;
        }
        check::non_null(name("workspace"), workspace, workspace_len)?;
        for (field, p, n, _) in buffers {
            check::size_and_alignment(name(field), p, n)?;
        }
        check::size_and_alignment(name("workspace"), workspace, workspace_len)?;
        // SAFETY: non-null; a live handle (C contract).
        let b = unsafe { handle(basis) };
        crate::error::check_lengths(b.len(), &[("len", len)])?;
        let need = rotated_workspace_len(b);
        if workspace_len < need {
            return Err(Error::length(format!(
                "workspace has {workspace_len} floats, the step needs {need}"
            )));
        }
        config.validate()?;
        if step == 0 {
            return Err(Error::hyperparameter("step = 0: steps are counted from 1"));
        }
        let mut regions: Vec<Region> = buffers
            .iter()
            .map(|&(field, p, n, w)| Region::new(name(field), p, n, w))
            .collect();
        regions.push(Region::new(name("workspace"), workspace, need, true));
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
        crate::optim::rotated_gn_step_with(
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
}
