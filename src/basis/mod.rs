//! # Orthonormal bases: identity, dense, Kronecker
//!
//! Every optimizer in the crate steps `theta <- theta - lr * U D U^T g`; this module
//! holds `U`:
//!
//! * [`Basis::Identity`]: `U = I`. Optimizers call the plain kernels on the caller's buffers:
//!   no copy, no GEMM.
//! * [`DenseBasis`]: a `d x d` orthonormal `U` (f32, a `faer::Mat` inside), for a vector
//!   parameter of `d` floats: `g~ = U^T g`.
//! * [`KroneckerBasis`]: `(Q_L m x m, Q_R n x n)` for an `m x n` row-major matrix parameter:
//!   `G~ = Q_L^T G Q_R`, i.e. `U = Q_L (x) Q_R` on the row-major `vec(G)`.
//!
//! Rotation is [`crate::basis::rotate`] (GEMMs by the `gemm` crate for a Kronecker pair, faer's
//! matrix-vector product for a dense basis; caller-owned workspace). Building a basis from
//! statistics (the full GN matrix, Kronecker factors), refreshing it (eigendecomposition, or one
//! power-iteration step + QR as SOAP does) and carrying rotated state to the new basis live in
//! [`refresh`]; geodesic interpolation between two bases in [`geodesic`].
//!
//! **Orthonormality**: [`DenseBasis::new`] accepts a matrix when `max |U^T U - I|` (f32 GEMM)
//! is at most [`ORTHONORMAL_TOLERANCE`] = 1e-4: f32 rounding of an exactly orthonormal matrix
//! leaves about `sqrt(d) * 6e-8` (3e-6 at d = 2048), so this catches wrong inputs (a
//! non-orthogonal matrix, a transposed or scaled one) without rejecting rounded ones.

pub mod geodesic;
mod qr;
pub mod refresh;
pub mod rotate;

use crate::dispatch::{with_faer_par, Par};
use crate::error::{Error, ErrorKind, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use rotate::{
    dense_rotate_into_with, dense_rotate_out_with, kron_rotate_into_with, kron_rotate_out_with,
};

pub use geodesic::Geodesic;
pub use refresh::{
    carry_state, refresh_with_state, BasisRefresh, GnMatrix, KroneckerRefresh, KroneckerStatistics,
    RefreshInfo, RefreshMethod, RotatedState, StateTransfer, Statistic,
};

/// The largest `max |U^T U - I|` [`DenseBasis::new`] accepts.
pub const ORTHONORMAL_TOLERANCE: f32 = 1e-4;

/// `max_ij |U^T U - I|_ij` (f32 GEMM), or an error if `u` is not square or not finite.
pub fn orthonormality_error(u: MatRef<'_, f32>) -> Result<f32> {
    let d = u.nrows();
    if u.ncols() != d {
        return Err(Error::length(format!(
            "a basis must be square; got {} x {}",
            u.nrows(),
            u.ncols()
        )));
    }
    for j in 0..d {
        for i in 0..d {
            if !u[(i, j)].is_finite() {
                return Err(Error::new(
                    ErrorKind::NonFinite,
                    format!("basis entry ({i}, {j}) is not finite"),
                ));
            }
        }
    }
    let mut gram = Mat::<f32>::zeros(d, d);
    with_faer_par(Par::Pool, 2.0 * (d * d * d) as f64, |fp| {
        matmul(gram.as_mut(), Accum::Replace, u.transpose(), u, 1.0, fp)
    })?;
    let mut worst = 0.0f32;
    for j in 0..d {
        for i in 0..d {
            let target = if i == j { 1.0 } else { 0.0 };
            worst = worst.max((gram[(i, j)] - target).abs());
        }
    }
    Ok(worst)
}

/// A `d x d` orthonormal basis (f32). Columns are the basis vectors: `g~_j = u_j . g`.
#[derive(Clone, Debug)]
pub struct DenseBasis {
    u: Mat<f32>,
}

impl DenseBasis {
    /// The identity basis of size `d` (a dense matrix: use [`Basis::Identity`] for the free one).
    pub fn identity(d: usize) -> Self {
        Self {
            u: Mat::identity(d, d),
        }
    }

    /// Wraps `u` after checking it is square, finite and orthonormal to
    /// [`ORTHONORMAL_TOLERANCE`] (`max |U^T U - I|`).
    pub fn new(u: Mat<f32>) -> Result<Self> {
        let err = orthonormality_error(u.as_ref())?;
        if err.is_nan() || err > ORTHONORMAL_TOLERANCE {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the basis is not orthonormal: max |U^T U - I| = {err:e} > {ORTHONORMAL_TOLERANCE:e}"
                ),
            ));
        }
        Ok(Self { u })
    }

    /// Wraps `u` without the orthonormality check (for matrices built orthonormal here).
    pub(crate) fn new_unchecked(u: Mat<f32>) -> Self {
        Self { u }
    }

    /// The eigenbasis of a symmetric matrix (its lower triangle is read): columns are
    /// eigenvectors, eigenvalues sorted in descending order (faer's self-adjoint
    /// eigendecomposition).
    pub fn from_symmetric(a: MatRef<'_, f32>) -> Result<(Self, Vec<f32>)> {
        let (u, s) = refresh::eigh_descending(a, Par::Pool)?;
        Ok((Self { u }, s))
    }

    /// `d`.
    pub fn dim(&self) -> usize {
        self.u.nrows()
    }

    /// The matrix `U` (column-major).
    pub fn matrix(&self) -> MatRef<'_, f32> {
        self.u.as_ref()
    }

    /// Consumes the basis, returning `U`.
    pub fn into_matrix(self) -> Mat<f32> {
        self.u
    }

    /// `out = U^T g` on the crate's thread pool.
    pub fn rotate_into(&self, g: &[f32], out: &mut [f32]) -> Result<()> {
        dense_rotate_into_with(Par::Pool, self.matrix(), g, out, false)
    }

    /// `out = U g~` on the crate's thread pool.
    pub fn rotate_out(&self, g_rot: &[f32], out: &mut [f32]) -> Result<()> {
        dense_rotate_out_with(Par::Pool, self.matrix(), g_rot, out, false)
    }

    /// `out = U^T g`, or `out += U^T g` with `accumulate`, with explicit parallelism.
    pub fn rotate_into_with(
        &self,
        par: Par,
        g: &[f32],
        out: &mut [f32],
        accumulate: bool,
    ) -> Result<()> {
        dense_rotate_into_with(par, self.matrix(), g, out, accumulate)
    }

    /// `out = U g~`, or `out += U g~` with `accumulate`, with explicit parallelism.
    pub fn rotate_out_with(
        &self,
        par: Par,
        g_rot: &[f32],
        out: &mut [f32],
        accumulate: bool,
    ) -> Result<()> {
        dense_rotate_out_with(par, self.matrix(), g_rot, out, accumulate)
    }
}

/// A Kronecker basis `(Q_L, Q_R)` for an `m x n` row-major matrix parameter:
/// `rotate_into(G) = Q_L^T G Q_R`, `rotate_out(G~) = Q_L G~ Q_R^T`. Rotation needs `m * n`
/// floats of caller-owned workspace ([`KroneckerBasis::workspace_len`]). The basis holds each
/// factor twice, column-major and row-major (`2 (m^2 + n^2)` floats), so that every product of
/// a rotation reads operands of one layout.
#[derive(Clone, Debug)]
pub struct KroneckerBasis {
    left: DenseBasis,
    right: DenseBasis,
    /// `Q_L^T` stored column-major, i.e. `Q_L` row-major: `rotate_out`'s first product
    /// `Q_L G~` into a row-major workspace runs at faer's full rate only when both operands are
    /// row-major (measured: about 0.65x of the rate with a column-major `Q_L`).
    left_row_major: Mat<f32>,
    /// `Q_R` row-major, for `rotate_into`'s second product `W Q_R` (row-major `W`), for the
    /// same reason (AMD Zen 5, 256 x 256, one thread: 216 against 241 GFLOP/s).
    right_row_major: Mat<f32>,
}

impl KroneckerBasis {
    /// `(I_m, I_n)`.
    pub fn identity(rows: usize, cols: usize) -> Self {
        Self::from_bases(DenseBasis::identity(rows), DenseBasis::identity(cols))
    }

    /// From two orthonormal factors (each checked by [`DenseBasis::new`]).
    pub fn new(q_left: Mat<f32>, q_right: Mat<f32>) -> Result<Self> {
        Ok(Self::from_bases(
            DenseBasis::new(q_left)?,
            DenseBasis::new(q_right)?,
        ))
    }

    /// From two bases.
    pub fn from_bases(left: DenseBasis, right: DenseBasis) -> Self {
        let left_row_major = left.matrix().transpose().to_owned();
        let right_row_major = right.matrix().transpose().to_owned();
        Self {
            left,
            right,
            left_row_major,
            right_row_major,
        }
    }

    /// The eigenbases of two symmetric factors (`L` m x m, `R` n x n), eigenvalues descending.
    pub fn from_factors(
        left: MatRef<'_, f32>,
        right: MatRef<'_, f32>,
    ) -> Result<(Self, Vec<f32>, Vec<f32>)> {
        let (l, sl) = DenseBasis::from_symmetric(left)?;
        let (r, sr) = DenseBasis::from_symmetric(right)?;
        Ok((Self::from_bases(l, r), sl, sr))
    }

    /// `m`.
    pub fn rows(&self) -> usize {
        self.left.dim()
    }

    /// `n`.
    pub fn cols(&self) -> usize {
        self.right.dim()
    }

    /// `Q_L`.
    pub fn left(&self) -> &DenseBasis {
        &self.left
    }

    /// `Q_R`.
    pub fn right(&self) -> &DenseBasis {
        &self.right
    }

    /// `Q_R` as a row-major view (of a copy made with the basis).
    pub(crate) fn right_row_major(&self) -> MatRef<'_, f32> {
        self.right_row_major.transpose()
    }

    /// Floats of workspace rotation needs (`m * n`).
    pub fn workspace_len(&self) -> usize {
        rotate::kron_workspace_len(self.rows(), self.cols())
    }

    /// `out = Q_L^T G Q_R` on the crate's pool; `work` holds [`Self::workspace_len`] floats.
    pub fn rotate_into(&self, g: &[f32], out: &mut [f32], work: &mut [f32]) -> Result<()> {
        self.rotate_into_with(Par::Pool, g, out, work, false)
    }

    /// `out = Q_L G~ Q_R^T` on the crate's pool.
    pub fn rotate_out(&self, g_rot: &[f32], out: &mut [f32], work: &mut [f32]) -> Result<()> {
        self.rotate_out_with(Par::Pool, g_rot, out, work, false)
    }

    /// [`Self::rotate_into`] with explicit parallelism, optionally accumulating into `out`.
    pub fn rotate_into_with(
        &self,
        par: Par,
        g: &[f32],
        out: &mut [f32],
        work: &mut [f32],
        accumulate: bool,
    ) -> Result<()> {
        kron_rotate_into_with(
            par,
            self.left.matrix(),
            self.right_row_major(),
            g,
            out,
            work,
            accumulate,
        )
    }

    /// [`Self::rotate_out`] with explicit parallelism, optionally accumulating into `out`.
    pub fn rotate_out_with(
        &self,
        par: Par,
        g_rot: &[f32],
        out: &mut [f32],
        work: &mut [f32],
        accumulate: bool,
    ) -> Result<()> {
        kron_rotate_out_with(
            par,
            self.left_row_major.transpose(),
            self.right.matrix(),
            g_rot,
            out,
            work,
            accumulate,
        )
    }
}

/// Any basis an optimizer can run in.
#[derive(Clone, Debug)]
pub enum Basis {
    /// `U = I` on a parameter of this many floats: the plain kernels, no rotation.
    Identity(usize),
    /// A dense `d x d` basis for a vector parameter.
    Dense(DenseBasis),
    /// A Kronecker basis for an `m x n` row-major matrix parameter.
    Kronecker(KroneckerBasis),
}

impl Basis {
    /// The number of parameter floats the basis acts on.
    pub fn len(&self) -> usize {
        match self {
            Basis::Identity(n) => *n,
            Basis::Dense(b) => b.dim(),
            Basis::Kronecker(b) => b.rows() * b.cols(),
        }
    }

    /// Whether the basis acts on no floats.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Floats of workspace [`Basis::rotate_into`] / [`Basis::rotate_out`] need.
    pub fn workspace_len(&self) -> usize {
        match self {
            Basis::Kronecker(b) => b.workspace_len(),
            _ => 0,
        }
    }

    /// `out = U^T g` (a copy for the identity; optimizers never call it for the identity).
    pub fn rotate_into(&self, g: &[f32], out: &mut [f32], work: &mut [f32]) -> Result<()> {
        self.rotate_into_with(Par::Pool, g, out, work, false)
    }

    /// `out = U g~`.
    pub fn rotate_out(&self, g_rot: &[f32], out: &mut [f32], work: &mut [f32]) -> Result<()> {
        self.rotate_out_with(Par::Pool, g_rot, out, work, false)
    }

    /// `out (+)= U^T g` with explicit parallelism.
    pub fn rotate_into_with(
        &self,
        par: Par,
        g: &[f32],
        out: &mut [f32],
        work: &mut [f32],
        accumulate: bool,
    ) -> Result<()> {
        match self {
            Basis::Identity(n) => identity_apply(*n, g, out, accumulate),
            Basis::Dense(b) => b.rotate_into_with(par, g, out, accumulate),
            Basis::Kronecker(b) => b.rotate_into_with(par, g, out, work, accumulate),
        }
    }

    /// `out (+)= U g~` with explicit parallelism.
    pub fn rotate_out_with(
        &self,
        par: Par,
        g_rot: &[f32],
        out: &mut [f32],
        work: &mut [f32],
        accumulate: bool,
    ) -> Result<()> {
        match self {
            Basis::Identity(n) => identity_apply(*n, g_rot, out, accumulate),
            Basis::Dense(b) => b.rotate_out_with(par, g_rot, out, accumulate),
            Basis::Kronecker(b) => b.rotate_out_with(par, g_rot, out, work, accumulate),
        }
    }
}

fn identity_apply(n: usize, g: &[f32], out: &mut [f32], accumulate: bool) -> Result<()> {
    crate::error::check_lengths(n, &[("input", g.len()), ("out", out.len())])?;
    if accumulate {
        out.iter_mut().zip(g).for_each(|(o, x)| *o += x);
    } else {
        out.copy_from_slice(g);
    }
    Ok(())
}
