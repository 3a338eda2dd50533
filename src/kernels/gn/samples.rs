//! # Sample matrices
//!
//! A batch of `n_samples` rows of `dim` f32 values, row-major, with consecutive rows
//! `row_stride >= dim` floats apart: the inputs `X`, the softmax logits and the output factors
//! `S` of the Gauss-Newton diagonal kernels ([`crate::kernels::gn::diag`]). [`Samples`] checks
//! the shape once, where it is built; the kernels take it as it is (bases travel the same way,
//! as faer's `MatRef`).

use crate::error::{Error, Result};
use faer::MatRef;

/// A read-only view of `n_samples` rows of `dim` f32 values, row-major, `row_stride` apart
/// (`row_stride == dim`: contiguous). Built by [`Samples::new`] or [`Samples::strided`], which
/// check that the slice holds every row.
#[derive(Clone, Copy, Debug)]
pub struct Samples<'a> {
    /// Exactly `(n_samples - 1) * row_stride + dim` values (none when a dimension is 0).
    data: &'a [f32],
    n_samples: usize,
    dim: usize,
    row_stride: usize,
}

impl<'a> Samples<'a> {
    /// `n_samples` contiguous rows of `dim` values: `data.len()` must be `n_samples * dim`.
    ///
    /// Errors ([`crate::ErrorKind::Length`]): another length, or `n_samples * dim` overflows.
    pub fn new(data: &'a [f32], n_samples: usize, dim: usize) -> Result<Self> {
        let need = n_samples
            .checked_mul(dim)
            .ok_or_else(|| Error::length(format!("{n_samples} x {dim} samples: overflows")))?;
        if data.len() != need {
            return Err(Error::length(format!(
                "the samples have {} elements, expected {n_samples} x {dim} = {need}",
                data.len()
            )));
        }
        Ok(Self {
            data,
            n_samples,
            dim,
            row_stride: dim,
        })
    }

    /// `n_samples` rows of `dim` values, `row_stride >= dim` apart: `data.len()` must be at
    /// least `(n_samples - 1) * row_stride + dim` (values past the last row are not read).
    ///
    /// Errors ([`crate::ErrorKind::Length`]): `row_stride < dim`, `data` too short, or the
    /// least length overflows.
    pub fn strided(
        data: &'a [f32],
        n_samples: usize,
        dim: usize,
        row_stride: usize,
    ) -> Result<Self> {
        let need = strided_len(n_samples, dim, row_stride)?;
        if data.len() < need {
            return Err(Error::length(format!(
                "the samples have {} elements, expected at least {need}",
                data.len()
            )));
        }
        Ok(Self {
            data: &data[..need],
            n_samples,
            dim,
            row_stride,
        })
    }

    /// The number of rows.
    pub fn n_samples(&self) -> usize {
        self.n_samples
    }

    /// The number of values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The distance between the starts of consecutive rows, in floats.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// The values, from the first row's first to the last row's last.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Whether the rows are contiguous (no gap between them): `data()` is then the
    /// `n_samples x dim` row-major matrix.
    pub fn is_contiguous(&self) -> bool {
        self.row_stride == self.dim || self.n_samples <= 1 || self.dim == 0
    }

    /// The rows as a faer matrix view (`n_samples x dim`, row stride `row_stride`).
    pub fn as_mat(&self) -> MatRef<'a, f32> {
        if self.n_samples == 0 || self.dim == 0 {
            return MatRef::from_row_major_slice(&[], self.n_samples, self.dim);
        }
        MatRef::from_row_major_slice_with_stride(
            self.data,
            self.n_samples,
            self.dim,
            self.row_stride,
        )
    }
}

/// The least length of a strided row-major `rows x dim` matrix.
pub(crate) fn strided_len(rows: usize, dim: usize, row_stride: usize) -> Result<usize> {
    if row_stride < dim {
        return Err(Error::length(format!(
            "row_stride = {row_stride} is less than dim = {dim}"
        )));
    }
    if rows == 0 || dim == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(row_stride)
        .and_then(|v| v.checked_add(dim))
        .ok_or_else(|| Error::length("x: (n_samples - 1) * row_stride + dim overflows"))
}
