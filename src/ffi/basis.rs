//! Basis exports: opaque `dp_basis` handles (identity, dense, Kronecker), rotation, Kronecker
//! statistics, refresh with state transfer, geodesic interpolation. The rotated Adam step on a
//! handle is in `ffi/adam.rs`, the rotated GN step in `ffi/gn.rs`.
//!
//! **Matrices** cross the boundary as row-major (C order) `float` arrays: a `d x d` basis `U`
//! has `U[i][j] = u[i * d + j]`, its columns are the basis vectors; a matrix parameter or
//! gradient is `rows x cols` row-major. Every array comes with its element count.
//!
//! **Handles**: a `dp_basis *` is an opaque token, never dereferenced: a never-reused number
//! that names an entry of a process-wide registry (`Mutex<HashMap<token, Arc<RwLock<Basis>>>>`).
//! The `dp_basis_create_*` functions and `dp_basis_interpolate_f32` register a basis and write
//! its token to `*out` (only on success); `dp_basis_free` removes it. A token that names no
//! live basis (freed, never created, another library's pointer, `(dp_basis *)8`) is
//! `DP_ERR_INVALID_ARGUMENT`; NULL is `DP_ERR_NULL_POINTER`.
//!
//! **Concurrency on one handle**: any number of threads may use one handle at once. Rotations,
//! steps, `get_info`, `get_matrix` and `interpolate` hold its read lock while they run;
//! `dp_basis_refresh_f32` holds its write lock, so a refresh waits for the calls inside and
//! the calls that start later wait for it (each sees the basis before or after the refresh,
//! never a mix). `dp_basis_free` only removes the token: calls already inside keep the basis
//! alive (through the `Arc`) and finish normally; calls that start after it get
//! `DP_ERR_INVALID_ARGUMENT`. The registry's mutex is held only to look a token up, insert or
//! remove it (never while a kernel runs or while memory is allocated for a kernel), so after
//! `fork()` the child can use the registry unless another thread was inside a diagprec call at
//! the moment of the fork: do not fork while another thread is inside a diagprec call.

use super::check::{self, buffer, check_buffers, exact_len, min_len, Name, Region};
use super::{dp_status, guard};
use crate::basis::refresh::{
    refresh_with_state, update_kronecker_factors, RotatedState, Statistic,
};
use crate::basis::{Basis, DenseBasis, Geodesic, KroneckerBasis, RefreshMethod, StateTransfer};
use crate::dispatch::Par;
use crate::error::{Error, ErrorKind, Result};
use crate::kernels::adam::rotated::rotated_workspace_len;
use faer::{Mat, MatMut, MatRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// An orthonormal basis: an opaque token (see the module docs). C code only holds pointers to
/// it and never looks inside; the library never dereferences them.
#[derive(Debug)]
pub struct dp_basis {
    _opaque: [u8; 0],
}

/// `dp_basis_info.kind`: the identity.
pub const DP_BASIS_IDENTITY: u32 = 0;
/// `dp_basis_info.kind`: a dense `d x d` basis.
pub const DP_BASIS_DENSE: u32 = 1;
/// `dp_basis_info.kind`: a Kronecker pair `(Q_L, Q_R)`.
pub const DP_BASIS_KRONECKER: u32 = 2;

/// The largest `max |U^T U - I|` `dp_basis_create_dense_f32` (and the Kronecker and
/// interpolation calls) accept.
pub const DP_BASIS_ORTHONORMAL_TOLERANCE: f32 = 1e-4;
const _: () = assert!(DP_BASIS_ORTHONORMAL_TOLERANCE == crate::basis::ORTHONORMAL_TOLERANCE);

/// The largest `|t|` `dp_basis_interpolate_f32` accepts (farther extrapolation is refused with
/// `DP_ERR_INVALID_HYPERPARAMETER`: its rotation angles are no longer accurate).
pub const DP_BASIS_MAX_INTERPOLATION_T: f64 = 1024.0;
const _: () = assert!(DP_BASIS_MAX_INTERPOLATION_T == crate::basis::geodesic::MAX_INTERPOLATION_T);

/// `dp_basis_refresh_f32` `method`: a full eigendecomposition (eigenvalues descending), matched
/// to the old basis.
pub const DP_REFRESH_EIGH: u32 = 0;
/// `dp_basis_refresh_f32` `method`: one power-iteration step and QR (SOAP).
pub const DP_REFRESH_POWER_QR: u32 = 1;

/// `dp_basis_refresh_f32` `transfer`: rotated second moments follow their matched eigenvectors
/// (SOAP).
pub const DP_TRANSFER_PERMUTE: u32 = 0;
/// `dp_basis_refresh_f32` `transfer`: rotated second moments are re-projected,
/// `v' = (P o P)^T v` with `P = U_old^T U_new`.
pub const DP_TRANSFER_REPROJECT: u32 = 1;

/// `dp_basis_rotate_f32` `direction`: `out = U^T in` (into the basis).
pub const DP_ROTATE_INTO: u32 = 0;
/// `dp_basis_rotate_f32` `direction`: `out = U in` (out of the basis).
pub const DP_ROTATE_OUT: u32 = 1;

/// `dp_basis_get_matrix_f32` `which`: `U` of a dense basis, `Q_L` of a Kronecker basis.
pub const DP_FACTOR_LEFT: u32 = 0;
/// `dp_basis_get_matrix_f32` `which`: `Q_R` of a Kronecker basis.
pub const DP_FACTOR_RIGHT: u32 = 1;

/// What a basis is (`dp_basis_get_info`). The caller sets `struct_size` to
/// `sizeof(dp_basis_info)` before the call; the library fills the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_basis_info {
    /// `sizeof(dp_basis_info)`, set by the caller.
    pub struct_size: usize,
    /// `DP_BASIS_IDENTITY`, `DP_BASIS_DENSE` or `DP_BASIS_KRONECKER`.
    pub kind: u32,
    /// Written as 0.
    pub reserved: u32,
    /// Parameter floats the basis acts on (`d`, or `rows * cols`).
    pub len: usize,
    /// `d` for dense, `rows` for Kronecker, `len` for the identity.
    pub rows: usize,
    /// `d` for dense, `cols` for Kronecker, 1 for the identity.
    pub cols: usize,
    /// Floats of `work` `dp_basis_rotate_f32` needs.
    pub rotate_workspace_len: usize,
    /// Floats of `workspace` `dp_adam_rotated_step_f32` and `dp_gn_rotated_step_f32` need.
    pub step_workspace_len: usize,
}

// ---------------------------------------------------------------------------------------------
// Checks local to the basis and GN exports.

/// A plain argument name for messages.
pub(super) fn name(field: &'static str) -> Name {
    check::plain(field)
}

pub(super) fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

pub(super) fn alloc_error(what: &str) -> Error {
    Error::new(ErrorKind::Allocation, format!("no memory for {what}"))
}

/// A zeroed vector, or `DP_ERR_ALLOCATION`.
pub(super) fn try_zeros<T: Copy + Default>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| alloc_error(what))?;
    v.resize(n, T::default());
    Ok(v)
}

/// Fails with `DP_ERR_ALLOCATION` when `bytes` cannot be allocated now. The library's
/// factorisations allocate their matrices as they go; this reserves (and releases) their
/// estimated peak first, so a size that cannot be had is an error status, not an abort.
pub(super) fn probe_memory(bytes: Option<usize>, what: &str) -> Result<()> {
    let bytes = bytes
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| alloc_error(what))?;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(bytes).map_err(|_| alloc_error(what))?;
    Ok(())
}

/// Bytes of `count` `d x d` f64 matrices (a factorisation's working set).
fn square_f64_bytes(d: usize, count: usize) -> Option<usize> {
    d.checked_mul(d)?.checked_mul(8)?.checked_mul(count)
}

/// `d * d`, or `DP_ERR_LENGTH` when it overflows.
fn square_len(name: &str, d: usize) -> Result<usize> {
    check::product(name, d, d)
}

/// A `d x d` matrix from a checked row-major array, allocated fallibly.
fn try_square(data: &[f32], d: usize, what: &str) -> Result<Mat<f32>> {
    let mut m = Mat::<f32>::new();
    m.try_reserve(d, d).map_err(|_| alloc_error(what))?;
    m.resize_with(d, d, |i, j| data[i * d + j]);
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// The handle registry.

type Shared = Arc<RwLock<Basis>>;

struct Registry {
    /// Tokens handed out so far: the next token is `TOKEN_BASE + issued * TOKEN_STEP`.
    issued: usize,
    live: HashMap<usize, Shared>,
}

/// Tokens are never-reused numbers from `TOKEN_BASE` up, `TOKEN_STEP` apart. On 64-bit targets
/// they are non-canonical addresses (above 2^59), so no pointer to memory equals one.
const TOKEN_BASE: usize = (usize::MAX >> 4) & !0xffff;
const TOKEN_STEP: usize = 16;

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Runs `f` on the registry with its mutex held. A poisoned mutex is taken over: nothing
/// panics while it is held, and the map is never left half-updated.
fn registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut slot = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let registry = slot.get_or_insert_with(|| Registry {
        issued: 0,
        live: HashMap::new(),
    });
    f(registry)
}

/// Registers `basis` and returns its new token (`DP_ERR_ALLOCATION` when the registry cannot
/// grow).
fn register(basis: Basis) -> Result<usize> {
    let shared = Arc::new(RwLock::new(basis));
    registry(|r| {
        r.live
            .try_reserve(1)
            .map_err(|_| alloc_error("the handle registry"))?;
        let token = r
            .issued
            .checked_mul(TOKEN_STEP)
            .and_then(|o| o.checked_add(TOKEN_BASE))
            .ok_or_else(|| alloc_error("a new handle (every token is used)"))?;
        r.issued += 1;
        r.live.insert(token, shared);
        Ok(token)
    })
}

/// The live basis a token names.
fn lookup(name: &str, handle: *const dp_basis) -> Result<Shared> {
    if handle.is_null() {
        return Err(Error::new(
            ErrorKind::NullPointer,
            format!("{name} is NULL"),
        ));
    }
    registry(|r| r.live.get(&(handle as usize)).cloned())
        .ok_or_else(|| invalid(format!("{name}: not a live dp_basis handle")))
}

/// Runs `f` on the basis `handle` names, with its read lock held (any number of readers run
/// at once; a refresh waits for them). NULL is `DP_ERR_NULL_POINTER`; a token that names no
/// live basis is `DP_ERR_INVALID_ARGUMENT`.
pub(crate) fn with_basis<R>(
    name: &str,
    handle: *const dp_basis,
    f: impl FnOnce(&Basis) -> Result<R>,
) -> Result<R> {
    let shared = lookup(name, handle)?;
    let basis = shared.read().unwrap_or_else(|e| e.into_inner());
    f(&basis)
}

/// As [`with_basis`] with the write lock: `f` may replace the basis.
fn with_basis_mut<R>(
    name: &str,
    handle: *const dp_basis,
    f: impl FnOnce(&mut Basis) -> Result<R>,
) -> Result<R> {
    let shared = lookup(name, handle)?;
    // A poisoned lock means a panic inside a refresh, which replaces the basis only as its
    // last, non-panicking step: the basis is intact.
    let mut basis = shared.write().unwrap_or_else(|e| e.into_inner());
    f(&mut basis)
}

/// Checks `out` (a `dp_basis **`): non-null and not wrapping the address space; written
/// unaligned, so any address is accepted.
fn check_out(out: *mut *mut dp_basis) -> Result<()> {
    check::required("out", out)?;
    check_buffers(&[buffer(
        "out",
        out.cast::<u8>(),
        size_of::<*mut dp_basis>(),
        true,
    )])?;
    Ok(())
}

/// Registers `basis` and writes its token to `*out`.
///
/// # Safety
/// `out` is non-null (checked) and valid for writing one pointer (C contract).
unsafe fn publish(out: *mut *mut dp_basis, basis: Basis) -> Result<()> {
    let token = register(basis)?;
    // SAFETY: non-null and not wrapping (checked by every caller first); valid for one pointer
    // (C contract); written unaligned.
    unsafe { check::write(out, token as *mut dp_basis) };
    Ok(())
}

/// The region of `*out` for the overlap check.
fn out_region(out: *mut *mut dp_basis) -> Region {
    Region::new(
        name("out"),
        out.cast::<u8>(),
        size_of::<*mut dp_basis>(),
        true,
    )
}

/// The largest number of floats a basis acts on: its step workspace (`2 * len` floats) must
/// fit in `PTRDIFF_MAX` bytes.
const MAX_LEN: usize = isize::MAX as usize / 8;

fn check_basis_len(what: &str, len: usize) -> Result<()> {
    if len > MAX_LEN {
        return Err(Error::length(format!(
            "{what}: {len} floats is more than a basis can act on ({MAX_LEN})"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Creation and release.

/// Creates the identity basis on `len` floats (rotations are copies; steps are the plain
/// ones) and writes its handle to `*out`.
///
/// Parameters: `len`, at most `PTRDIFF_MAX / 8`; `out`, one `dp_basis *`, written only on
/// success (any alignment).
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER` (`out` NULL); `DP_ERR_LENGTH` (`len` too large);
/// `DP_ERR_ALLOCATION`; `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call.
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
        check_basis_len("len", len)?;
        // SAFETY: out checked above; validity is the C contract.
        unsafe { publish(out, Basis::Identity(len)) }
    })
}

/// Creates a dense basis from the row-major `dim x dim` matrix `u` (copied), which must be
/// orthonormal (`max |U^T U - I| <= DP_BASIS_ORTHONORMAL_TOLERANCE`), and writes its handle to
/// `*out`.
///
/// Parameters: `u`, `u_len` floats, `u_len == dim * dim`; `out`, one `dp_basis *`, written
/// only on success.
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER` (`out` NULL, or `u` NULL with `u_len > 0`);
/// `DP_ERR_LENGTH` (`u_len != dim * dim`, a size that overflows or wraps the address space);
/// `DP_ERR_INVALID_ARGUMENT` (`u` misaligned or not orthonormal); `DP_ERR_ALIASING` (`out`
/// inside `u`); `DP_ERR_NON_FINITE` (`u` holds NaN or Inf); `DP_ERR_ALLOCATION`;
/// `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not write `u`.
///
/// # Safety
/// `u` must be valid for reading `u_len` floats; `out` for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_create_dense_f32(
    u: *const f32,
    u_len: usize,
    dim: usize,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check_out(out)?;
        let mut regions = check_buffers(&[buffer("u", u, u_len, false)])?;
        exact_len("u", u_len, square_len("u", dim)?)?;
        check_basis_len("dim", dim)?;
        regions.push(out_region(out));
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), sized and aligned: checked above; validity is the C
        // contract.
        let m = try_square(unsafe { check::slice(u, u_len) }, dim, "the basis")?;
        probe_memory(square_f64_bytes(dim, 1), "the orthonormality check")?;
        // SAFETY: out checked above.
        unsafe { publish(out, Basis::Dense(DenseBasis::new(m)?)) }
    })
}

/// Creates a Kronecker basis for a `rows x cols` matrix parameter from the row-major
/// orthonormal factors `q_left` (`rows x rows`) and `q_right` (`cols x cols`), copied, and
/// writes its handle to `*out`.
///
/// Parameters: `q_left`, `q_left_len == rows * rows` floats; `q_right`,
/// `q_right_len == cols * cols` floats; `out`, one `dp_basis *`, written only on success.
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_LENGTH` (a count that does not match, a
/// size that overflows or wraps); `DP_ERR_INVALID_ARGUMENT` (misaligned, or a factor not
/// orthonormal); `DP_ERR_ALIASING` (`out` inside a factor); `DP_ERR_NON_FINITE`;
/// `DP_ERR_ALLOCATION`; `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not write the factors.
///
/// # Safety
/// `q_left` must be valid for reading `q_left_len` floats, `q_right` for `q_right_len`; `out`
/// for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_create_kronecker_f32(
    q_left: *const f32,
    q_left_len: usize,
    rows: usize,
    q_right: *const f32,
    q_right_len: usize,
    cols: usize,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check_out(out)?;
        // SAFETY: forwarded C contract.
        let (l, r) = unsafe {
            read_factor_pair(
                ("q_left", q_left, q_left_len, rows),
                ("q_right", q_right, q_right_len, cols),
                out,
            )
        }?;
        // SAFETY: out checked above.
        unsafe { publish(out, Basis::Kronecker(KroneckerBasis::new(l, r)?)) }
    })
}

/// The checks and copies shared by the Kronecker creations: two row-major square matrices.
///
/// # Safety
/// Each pointer must be valid for reading its count of floats (C contract).
unsafe fn read_factor_pair(
    left: (&'static str, *const f32, usize, usize),
    right: (&'static str, *const f32, usize, usize),
    out: *mut *mut dp_basis,
) -> Result<(Mat<f32>, Mat<f32>)> {
    let (ln, lp, ll, rows) = left;
    let (rn, rp, rl, cols) = right;
    let mut regions = check_buffers(&[buffer(ln, lp, ll, false), buffer(rn, rp, rl, false)])?;
    exact_len(ln, ll, square_len(ln, rows)?)?;
    exact_len(rn, rl, square_len(rn, cols)?)?;
    check_basis_len("rows * cols", check::product("rows * cols", rows, cols)?)?;
    regions.push(out_region(out));
    check::disjoint(regions)?;
    // SAFETY: non-null (or empty), sized and aligned: checked above.
    let (ls, rs) = unsafe { (check::slice(lp, ll), check::slice(rp, rl)) };
    let (l, r) = (try_square(ls, rows, ln)?, try_square(rs, cols, rn)?);
    probe_memory(
        square_f64_bytes(rows.max(cols), 1),
        "the orthonormality check",
    )?;
    Ok((l, r))
}

/// Creates the dense eigenbasis of the symmetric row-major `dim x dim` matrix `a` (a statistic
/// such as the GN matrix; its lower triangle `a[i * dim + j]`, `i >= j`, is read), columns in
/// descending order of eigenvalue, and writes its handle to `*out`. The eigenvalues are
/// `u_j^T A u_j` (compute them from `dp_basis_get_matrix_f32` if needed).
///
/// Parameters: `a`, `a_len == dim * dim` floats; `out`, one `dp_basis *`, written only on
/// success.
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_LENGTH`; `DP_ERR_INVALID_ARGUMENT`
/// (misaligned, or the eigendecomposition did not converge); `DP_ERR_ALIASING` (`out` inside
/// `a`); `DP_ERR_NON_FINITE` (`a` holds NaN or Inf); `DP_ERR_ALLOCATION` (e.g. a `dim` whose
/// factorisation does not fit in memory); `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not write `a`.
///
/// # Safety
/// `a` must be valid for reading `a_len` floats; `out` for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_create_from_symmetric_f32(
    a: *const f32,
    a_len: usize,
    dim: usize,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check_out(out)?;
        let mut regions = check_buffers(&[buffer("a", a, a_len, false)])?;
        exact_len("a", a_len, square_len("a", dim)?)?;
        check_basis_len("dim", dim)?;
        regions.push(out_region(out));
        check::disjoint(regions)?;
        probe_memory(square_f64_bytes(dim, 4), "the eigendecomposition")?;
        // SAFETY: non-null (or empty), sized and aligned: checked above.
        let data = unsafe { check::slice(a, a_len) };
        let (basis, _) = DenseBasis::from_symmetric(MatRef::from_row_major_slice(data, dim, dim))?;
        // SAFETY: out checked above.
        unsafe { publish(out, Basis::Dense(basis)) }
    })
}

/// Creates the Kronecker eigenbasis of the symmetric row-major factors `left` (`rows x rows`)
/// and `right` (`cols x cols`), e.g. from `dp_basis_kron_factors_update_f32`, and writes its
/// handle to `*out`.
///
/// Parameters: `left`, `left_len == rows * rows` floats; `right`, `right_len == cols * cols`
/// floats; `out`, one `dp_basis *`, written only on success.
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_LENGTH`; `DP_ERR_INVALID_ARGUMENT`
/// (misaligned, or no convergence); `DP_ERR_ALIASING`; `DP_ERR_NON_FINITE`;
/// `DP_ERR_ALLOCATION`; `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not write the factors.
///
/// # Safety
/// `left` must be valid for reading `left_len` floats, `right` for `right_len`; `out` for
/// writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_create_from_factors_f32(
    left: *const f32,
    left_len: usize,
    rows: usize,
    right: *const f32,
    right_len: usize,
    cols: usize,
    out: *mut *mut dp_basis,
) -> dp_status {
    guard(|| {
        check_out(out)?;
        let mut regions = check_buffers(&[
            buffer("left", left, left_len, false),
            buffer("right", right, right_len, false),
        ])?;
        exact_len("left", left_len, square_len("left", rows)?)?;
        exact_len("right", right_len, square_len("right", cols)?)?;
        check_basis_len("rows * cols", check::product("rows * cols", rows, cols)?)?;
        regions.push(out_region(out));
        check::disjoint(regions)?;
        probe_memory(
            square_f64_bytes(rows.max(cols), 4),
            "the eigendecomposition",
        )?;
        // SAFETY: non-null (or empty), sized and aligned: checked above.
        let (l, r) = unsafe { (check::slice(left, left_len), check::slice(right, right_len)) };
        let (basis, _, _) = KroneckerBasis::from_factors(
            MatRef::from_row_major_slice(l, rows, rows),
            MatRef::from_row_major_slice(r, cols, cols),
        )?;
        // SAFETY: out checked above.
        unsafe { publish(out, Basis::Kronecker(basis)) }
    })
}

/// Releases a basis: its token stops naming it at once; calls already inside on other threads
/// finish normally and the memory is freed when the last of them returns. NULL, and a token
/// that names no live basis (already freed, never created), are no-ops. Returns nothing and
/// leaves `dp_last_error_message()` as it was.
///
/// Thread safety: may run concurrently with any call, on this handle too (see above).
///
/// # Safety
/// None beyond the C contract: `basis` is only compared with the registry's tokens.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_free(basis: *mut dp_basis) {
    if basis.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Dropped outside the registry's lock (a basis can be large).
        let removed = registry(|r| r.live.remove(&(basis as usize)));
        drop(removed);
    }));
}

// ---------------------------------------------------------------------------------------------
// Queries and rotation.

/// Describes `basis`: kind, sizes, workspace lengths.
///
/// Parameters: `basis`, a live handle; `info`, one `dp_basis_info` whose `struct_size` the
/// caller has set to `sizeof(dp_basis_info)` (read and written unaligned; written only on
/// success).
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER` (`basis` or `info` NULL); `DP_ERR_INVALID_ARGUMENT`
/// (`basis` not a live handle, `info->struct_size` wrong); `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call (it waits for a refresh of `basis`).
///
/// # Safety
/// `info` must be valid for reading and writing one `dp_basis_info`.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_get_info(
    basis: *const dp_basis,
    info: *mut dp_basis_info,
) -> dp_status {
    guard(|| {
        check::required("basis", basis)?;
        check::required("info", info)?;
        check_buffers(&[buffer(
            "info",
            info.cast::<u8>(),
            size_of::<dp_basis_info>(),
            true,
        )])?;
        // SAFETY: non-null and not wrapping (checked above); valid for one dp_basis_info (C
        // contract); read unaligned.
        let given = unsafe { check::read(info.cast_const()) }.struct_size;
        if given != size_of::<dp_basis_info>() {
            return Err(invalid(format!(
                "info->struct_size = {given}, but this library's dp_basis_info has {} bytes: \
                 set it to sizeof(dp_basis_info)",
                size_of::<dp_basis_info>()
            )));
        }
        let result = with_basis("basis", basis, |b| {
            let (kind, rows, cols) = match b {
                Basis::Identity(n) => (DP_BASIS_IDENTITY, *n, 1),
                Basis::Dense(d) => (DP_BASIS_DENSE, d.dim(), d.dim()),
                Basis::Kronecker(k) => (DP_BASIS_KRONECKER, k.rows(), k.cols()),
            };
            Ok(dp_basis_info {
                struct_size: size_of::<dp_basis_info>(),
                kind,
                reserved: 0,
                len: b.len(),
                rows,
                cols,
                rotate_workspace_len: b.workspace_len(),
                step_workspace_len: rotated_workspace_len(b),
            })
        })?;
        // SAFETY: non-null and not wrapping (checked above), valid for a write (C contract);
        // written unaligned.
        unsafe { check::write(info, result) };
        Ok(())
    })
}

/// Copies a basis matrix out, row-major: `which` `DP_FACTOR_LEFT` is `U` (dense) or `Q_L`
/// (Kronecker), `DP_FACTOR_RIGHT` is `Q_R` (Kronecker). The identity has no matrix.
///
/// Parameters: `basis`, a live handle; `out`, `out_len` floats, `out_len` the matrix's
/// `d * d`.
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER` (`basis` NULL, `out` NULL with `out_len > 0`);
/// `DP_ERR_INVALID_ARGUMENT` (`basis` not a live handle, `which` not a `DP_FACTOR_*` value or
/// naming no matrix of this basis, `out` misaligned); `DP_ERR_LENGTH` (`out_len` wrong, or
/// wrapping the address space); `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not use `out` (it waits for a
/// refresh of `basis`).
///
/// # Safety
/// `out` must be valid for writing `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_get_matrix_f32(
    basis: *const dp_basis,
    which: u32,
    out: *mut f32,
    out_len: usize,
) -> dp_status {
    guard(|| {
        check::required("basis", basis)?;
        check_buffers(&[buffer("out", out, out_len, true)])?;
        with_basis("basis", basis, |b| {
            if which != DP_FACTOR_LEFT && which != DP_FACTOR_RIGHT {
                return Err(invalid(format!(
                    "which = {which} is not a DP_FACTOR_* value"
                )));
            }
            let m = match (b, which) {
                (Basis::Dense(d), DP_FACTOR_LEFT) => d.matrix(),
                (Basis::Kronecker(k), DP_FACTOR_LEFT) => k.left().matrix(),
                (Basis::Kronecker(k), DP_FACTOR_RIGHT) => k.right().matrix(),
                _ => {
                    return Err(invalid(format!(
                        "which = {which} names no matrix of this basis"
                    )))
                }
            };
            let d = m.nrows();
            exact_len("out", out_len, d * d)?;
            // SAFETY: non-null (or empty), aligned, sized: checked above.
            let dst = unsafe { check::slice_mut(out, out_len) };
            for i in 0..d {
                for j in 0..d {
                    dst[i * d + j] = m[(i, j)];
                }
            }
            Ok(())
        })
    })
}

/// Rotates a vector: `direction` `DP_ROTATE_INTO` gives `out = U^T in` (dense) or
/// `out = Q_L^T IN Q_R` (Kronecker, row-major `rows x cols`); `DP_ROTATE_OUT` gives `out = U in`
/// or `out = Q_L IN Q_R^T`; the identity copies. No allocation.
///
/// Parameters: `basis`, a live handle; `in`, `in_len` floats and `out`, `out_len` floats, both
/// equal to the basis length; `work`, `work_len >= dp_basis_info.rotate_workspace_len` floats
/// (NULL with 0 when that is 0).
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER` (`basis` NULL, a buffer NULL with a count > 0);
/// `DP_ERR_INVALID_ARGUMENT` (`basis` not a live handle, `direction` not a `DP_ROTATE_*` value,
/// a misaligned buffer); `DP_ERR_LENGTH` (a count that does not match, a range that wraps);
/// `DP_ERR_ALIASING` (`out` or `work` overlapping another buffer); `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not write `in` or use `out` or
/// `work`, this handle's other rotations and steps included; it waits for a refresh of
/// `basis`.
///
/// # Safety
/// `in` must be valid for reading `in_len` floats, `out` for writing `out_len`, `work` for
/// writing `work_len`.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_rotate_f32(
    basis: *const dp_basis,
    direction: u32,
    r#in: *const f32,
    in_len: usize,
    out: *mut f32,
    out_len: usize,
    work: *mut f32,
    work_len: usize,
) -> dp_status {
    let input = r#in;
    guard(|| {
        check::required("basis", basis)?;
        let regions = check_buffers(&[
            buffer("in", input, in_len, false),
            buffer("out", out, out_len, true),
            buffer("work", work, work_len, true),
        ])?;
        with_basis("basis", basis, |b| {
            let n = b.len();
            exact_len("in", in_len, n)?;
            exact_len("out", out_len, n)?;
            min_len("work", work_len, b.workspace_len())?;
            let into = match direction {
                DP_ROTATE_INTO => true,
                DP_ROTATE_OUT => false,
                other => {
                    return Err(invalid(format!(
                        "direction = {other} is not a DP_ROTATE_* value"
                    )))
                }
            };
            check::disjoint(regions)?;
            // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
            let (g, o, w) = unsafe {
                (
                    check::slice(input, n),
                    check::slice_mut(out, n),
                    check::slice_mut(work, work_len),
                )
            };
            if into {
                b.rotate_into(g, o, w)
            } else {
                b.rotate_out(g, o, w)
            }
        })
    })
}

/// The basis on the geodesic from `u0` to `u1` at `t` (0 gives `u0`, 1 gives `u1` up to
/// column order and signs): `U(t) = U0 expm(t logm(U0^T U1))` after column matching and the
/// determinant fix (see the Rust docs of `diagprec::Geodesic`), written to `*out` as a new
/// handle. Both dense of the same size, or both Kronecker of the same shape (each factor
/// interpolated). `u0` and `u1` may be the same handle.
///
/// Parameters: `u0`, `u1`, live handles; `t`, finite with `|t| <= DP_BASIS_MAX_INTERPOLATION_T`
/// (1024); `out`, one `dp_basis *`, written only on success.
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_INVALID_ARGUMENT` (a handle not live, kinds
/// or sizes that differ, identity bases, no convergence); `DP_ERR_INVALID_HYPERPARAMETER` (`t`
/// not finite or out of range); `DP_ERR_ALLOCATION`; `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call (it waits for a refresh of `u0` or `u1`).
///
/// # Safety
/// `out` must be valid for writing one pointer.
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
        let (s0, s1) = (lookup("u0", u0)?, lookup("u1", u1)?);
        crate::basis::geodesic::check_t(t)?;
        // A reader queues behind a waiting refresh, so two read locks are taken in one global
        // order (the lower token first): interpolate(a, b) and interpolate(b, a) racing
        // refreshes of a and b cannot wait on each other. One lock when both name one basis.
        let same = Arc::ptr_eq(&s0, &s1);
        let (first, second) = if (u0 as usize) <= (u1 as usize) {
            (&s0, &s1)
        } else {
            (&s1, &s0)
        };
        let g_first = first.read().unwrap_or_else(|e| e.into_inner());
        let g_second = (!same).then(|| second.read().unwrap_or_else(|e| e.into_inner()));
        let (g_low, g_high): (&Basis, &Basis) = (&g_first, g_second.as_deref().unwrap_or(&g_first));
        let (a, b) = if (u0 as usize) <= (u1 as usize) {
            (g_low, g_high)
        } else {
            (g_high, g_low)
        };
        let result =
            match (a, b) {
                (Basis::Dense(x), Basis::Dense(y)) if x.dim() == y.dim() => {
                    probe_memory(square_f64_bytes(x.dim(), 16), "the interpolation")?;
                    Basis::Dense(Geodesic::new(x.matrix(), y.matrix())?.at(t)?)
                }
                (Basis::Kronecker(x), Basis::Kronecker(y))
                    if x.rows() == y.rows() && x.cols() == y.cols() =>
                {
                    probe_memory(
                        square_f64_bytes(x.rows().max(x.cols()), 16),
                        "the interpolation",
                    )?;
                    let l = Geodesic::new(x.left().matrix(), y.left().matrix())?.at(t)?;
                    let r = Geodesic::new(x.right().matrix(), y.right().matrix())?.at(t)?;
                    Basis::Kronecker(KroneckerBasis::from_bases(l, r))
                }
                _ => return Err(invalid(
                    "interpolation needs two dense bases of one size or two Kronecker bases of \
                     one shape",
                )),
            };
        drop((g_first, g_second));
        // SAFETY: out checked above.
        unsafe { publish(out, result) }
    })
}

// ---------------------------------------------------------------------------------------------
// Statistics and refresh.

/// Kronecker factors of a `rows x cols` row-major gradient, fused EMA on the caller's symmetric
/// matrices: `left <- beta left + (1 - beta) G G^T` (`rows x rows`),
/// `right <- beta right + (1 - beta) G^T G` (`cols x cols`).
///
/// Parameters: `left`, `left_len == rows * rows` floats (read and written); `right`,
/// `right_len == cols * cols` floats (read and written); `grad`, `grad_len == rows * cols`
/// floats; `beta` in [0, 1).
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_LENGTH`; `DP_ERR_INVALID_ARGUMENT`
/// (misaligned); `DP_ERR_INVALID_HYPERPARAMETER` (`beta`); `DP_ERR_ALIASING` (any two buffers
/// overlapping, except `grad` with nothing written); `DP_ERR_ALLOCATION`; `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not use `left` or `right` or
/// write `grad`.
///
/// # Safety
/// `left` must be valid for reads and writes of `left_len` floats, `right` of `right_len`,
/// `grad` for reading `grad_len`.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_kron_factors_update_f32(
    left: *mut f32,
    left_len: usize,
    rows: usize,
    right: *mut f32,
    right_len: usize,
    cols: usize,
    grad: *const f32,
    grad_len: usize,
    beta: f64,
) -> dp_status {
    guard(|| {
        let regions = check_buffers(&[
            buffer("left", left, left_len, true),
            buffer("right", right, right_len, true),
            buffer("grad", grad, grad_len, false),
        ])?;
        exact_len("left", left_len, square_len("left", rows)?)?;
        exact_len("right", right_len, square_len("right", cols)?)?;
        exact_len("grad", grad_len, check::product("grad", rows, cols)?)?;
        crate::error::check_half_open("beta", beta, 0.0, 1.0)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
        let (l, r, g) = unsafe {
            (
                check::slice_mut(left, left_len),
                check::slice_mut(right, right_len),
                check::slice(grad, grad_len),
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
/// `stat_right` is empty; Kronecker: the two factors), by `method` (`DP_REFRESH_*`), and
/// carries the rotated optimizer state: `exp_avg` is re-projected exactly, `exp_avg_sq` and
/// `max_exp_avg_sq` by `transfer` (`DP_TRANSFER_*`). Each state buffer may be NULL (not
/// carried). Not for the identity. On failure the basis and the buffers are unchanged.
///
/// Parameters: `basis`, a live handle; `stat_left`, `stat_left_len` floats (`d * d` dense,
/// `rows * rows` Kronecker); `stat_right`, `stat_right_len` floats (0 dense, `cols * cols`
/// Kronecker; NULL with 0 for a dense basis); `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, each
/// NULL or `len` floats (read and written), `len` the basis length (or 0 when all three are
/// NULL).
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER` (`basis` NULL, a statistic NULL with a count > 0);
/// `DP_ERR_INVALID_ARGUMENT` (`basis` not a live handle or the identity, `method` or `transfer`
/// not a defined value, a misaligned buffer, no convergence); `DP_ERR_LENGTH` (a count that
/// does not match the handle: e.g. a `4 x 4` statistic for an `8 x 8` basis; a range that
/// wraps); `DP_ERR_ALIASING` (a state buffer overlapping another buffer); `DP_ERR_NON_FINITE`
/// (a statistic holds NaN or Inf); `DP_ERR_ALLOCATION`; `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not use these buffers. On
/// `basis` it holds the write lock: it waits for the rotations, steps and queries inside, and
/// those that start later wait for it; `dp_basis_free` may run at any time (the refresh
/// finishes on the freed basis, which is then dropped).
///
/// # Safety
/// `stat_left` must be valid for reading `stat_left_len` floats, `stat_right` for
/// `stat_right_len`; each non-NULL state buffer for reads and writes of `len` floats.
#[no_mangle]
pub unsafe extern "C" fn dp_basis_refresh_f32(
    basis: *mut dp_basis,
    stat_left: *const f32,
    stat_left_len: usize,
    stat_right: *const f32,
    stat_right_len: usize,
    method: u32,
    transfer: u32,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    max_exp_avg_sq: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        check::required("basis", basis)?;
        let state_len = |p: *mut f32| if p.is_null() { 0 } else { len };
        let regions = check_buffers(&[
            buffer("stat_left", stat_left, stat_left_len, false),
            buffer("stat_right", stat_right, stat_right_len, false),
            buffer("exp_avg", exp_avg, state_len(exp_avg), true),
            buffer("exp_avg_sq", exp_avg_sq, state_len(exp_avg_sq), true),
            buffer(
                "max_exp_avg_sq",
                max_exp_avg_sq,
                state_len(max_exp_avg_sq),
                true,
            ),
        ])?;
        let any_state = [exp_avg, exp_avg_sq, max_exp_avg_sq]
            .iter()
            .any(|p| !p.is_null());
        with_basis_mut("basis", basis, |b| {
            let (nl, nr, side) = match &*b {
                Basis::Identity(_) => {
                    return Err(invalid(
                        "the identity basis has no statistic to refresh from",
                    ))
                }
                Basis::Dense(d) => (d.dim() * d.dim(), 0, d.dim()),
                Basis::Kronecker(k) => (
                    k.rows() * k.rows(),
                    k.cols() * k.cols(),
                    k.rows().max(k.cols()),
                ),
            };
            exact_len("stat_left", stat_left_len, nl)?;
            exact_len("stat_right", stat_right_len, nr)?;
            let n = b.len();
            if any_state || len != 0 {
                exact_len("len", len, n)?;
            }
            let method = match method {
                DP_REFRESH_EIGH => RefreshMethod::Eigh,
                DP_REFRESH_POWER_QR => RefreshMethod::PowerQr,
                other => {
                    return Err(invalid(format!(
                        "method = {other} is not a DP_REFRESH_* value"
                    )))
                }
            };
            let transfer = match transfer {
                DP_TRANSFER_PERMUTE => StateTransfer::Permute,
                DP_TRANSFER_REPROJECT => StateTransfer::Reproject,
                other => {
                    return Err(invalid(format!(
                        "transfer = {other} is not a DP_TRANSFER_* value"
                    )))
                }
            };
            check::disjoint(regions)?;
            probe_memory(square_f64_bytes(side, 4), "the refresh")?;
            // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
            let (sl, sr) = unsafe { (check::slice(stat_left, nl), check::slice(stat_right, nr)) };
            let statistic = match &*b {
                Basis::Kronecker(k) => Statistic::Kronecker(
                    MatRef::from_row_major_slice(sl, k.rows(), k.rows()),
                    MatRef::from_row_major_slice(sr, k.cols(), k.cols()),
                ),
                _ => Statistic::Dense(MatRef::from_row_major_slice(sl, side, side)),
            };
            let state_slice = |p: *mut f32| {
                // SAFETY: a non-null state buffer is aligned, `len == n` floats and disjoint
                // from every other buffer: checked above.
                (!p.is_null()).then(|| unsafe { check::slice_mut(p, n) })
            };
            let state = RotatedState {
                exp_avg: state_slice(exp_avg),
                second_moments: [exp_avg_sq, max_exp_avg_sq]
                    .into_iter()
                    .filter_map(state_slice)
                    .collect(),
            };
            // The state is written only when the refresh and the transfer succeeded.
            let refreshed = refresh_with_state(Par::Pool, b, statistic, method, transfer, state)?;
            *b = refreshed.basis;
            Ok(())
        })
    })
}
