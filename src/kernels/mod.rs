//! The SIMD kernels, one module per family (see `docs/architecture.md`). Each module opens with
//! its math, storage layout, accuracy contract and the reference it is tested against.

pub mod adam;
pub mod adam_mixed;
pub(crate) mod convert;
pub mod gn;
pub mod grad_norm;
pub(crate) mod map;
pub mod math;
