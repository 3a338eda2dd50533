//! The SIMD kernels, one module per family. Each module opens with its math, storage layout,
//! accuracy contract and the reference it is tested against.

pub mod adam;
pub mod gn_diag;
pub mod precond;
pub mod rotate;
