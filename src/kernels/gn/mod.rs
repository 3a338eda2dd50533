//! # The `gn` family: Gauss-Newton diagonals and GN^p steps
//!
//! - [`diag`]: the diagonal of the Gauss-Newton matrix `h = diag(U^T H_GN U)` from samples, in the
//!   identity basis, a dense basis or a Kronecker basis (linear, logistic and softmax models,
//!   exact or sampled labels);
//! - [`step`]: the preconditioned step `theta -= lr * (h + lambda)^p * g`;
//! - [`rotated`]: that step in a dense or Kronecker basis;
//! - [`samples`]: the view [`Samples`] through which the diagonal kernels take their inputs.
//!
//! The same word names the C entry (`src/ffi/gn.rs`), tests (`tests/gn.rs`), C and C++ tests
//! (`ffi-tests/{c,cpp}/gn.*`) and bench (`benches/gn.rs`, `diagprec bench --only gn`).

pub mod diag;
pub mod rotated;
pub mod samples;
pub mod step;

pub use samples::Samples;
