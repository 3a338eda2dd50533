//! The SIMD kernels, one module per family. Each module opens with its math, storage layout,
//! accuracy contract and the reference it is tested against.

pub mod adam;
pub mod adam_compressed;
pub mod adam_mixed;
pub(crate) mod convert;
pub mod gn_diag;
pub mod grad_norm;
pub mod math;
pub mod precond;
pub mod rotate;
