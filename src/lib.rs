//! # diagprec
//!
//! Hand-optimised CPU SIMD kernels for diagonal preconditioners in any basis: every optimizer
//! here steps `theta <- theta - lr * U D U^T g` with an orthonormal basis `U` and a diagonal `D`
//! (Adam's from running averages of squared rotated gradients, Gauss-Newton's from
//! `diag(U^T H U)^p`). Each kernel module opens with its math; `docs/architecture.md` maps
//! every family to its files.
//!
//! Two tiers, as in faer: convenient calls ([`adam_step`]) that pick the instruction set and use
//! the crate's thread pool, and `*_with` calls that take an explicit [`Isa`] and [`Par`].
//! The C ABI (`include/diagprec.h`) wraps the same kernels.
//!
//! ```
//! use diagprec::{adam_step, AdamConfig};
//! let cfg = AdamConfig::default();
//! let (mut p, g) = (vec![1.0_f32; 10], vec![0.1_f32; 10]);
//! let (mut m, mut v) = (vec![0.0; 10], vec![0.0; 10]);
//! adam_step(&cfg, 1, &mut p, &g, &mut m, &mut v, None).unwrap();
//! assert!((p[0] - (1.0 - 1e-3)).abs() < 1e-6);
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]
#![warn(missing_docs)]

pub mod basis;
pub mod dispatch;
pub mod error;
pub mod ffi;
pub mod kernels;
pub mod optim;
pub mod reference;

pub use basis::{
    Basis, DenseBasis, Geodesic, GnMatrix, KroneckerBasis, KroneckerRefresh, KroneckerStatistics,
    RefreshInfo, RefreshMethod, StateTransfer,
};
pub use dispatch::{num_threads, set_num_threads, Isa, Par};
pub use error::{Error, ErrorKind, Result};
pub use kernels::adam::clipped::{
    adam_step_clipped_by_norm_multi, adam_step_clipped_by_norm_multi_with, adam_step_clipped_multi,
    adam_step_clipped_multi_with, adam_step_master_clipped_multi,
    adam_step_master_clipped_multi_with,
};
pub use kernels::adam::rotated::{rotated_adam_step_with, rotated_workspace_len};
pub use kernels::adam::{
    adam_step, adam_step_multi, adam_step_multi_with, adam_step_with, AdamConfig, AdamTensor,
};
pub use kernels::adam_mixed::bf16_state::{
    adam_step_bf16_state, adam_step_bf16_state_multi, adam_step_bf16_state_multi_with,
    adam_step_bf16_state_with, Bf16StateTensor,
};
pub use kernels::adam_mixed::master::{
    adam_step_master_bf16, adam_step_master_f16, adam_step_master_multi,
    adam_step_master_multi_with, adam_step_master_with, round_to_half, widen_half, HalfFormat,
    MasterTensor, Rounding,
};
pub use kernels::adam_mixed::state_8bit::{
    adam_step_8bit_state, adam_step_8bit_state_multi, adam_step_8bit_state_multi_with,
    adam_step_8bit_state_with, dequantize_state, quant_scales_len, quantize_state, Moment,
    QuantStateTensor, QUANT_BLOCK,
};
pub use kernels::gn::diag::{
    gn_diag_linear, gn_diag_linear_with, gn_diag_logistic, gn_diag_logistic_with, gn_diag_softmax,
    gn_diag_softmax_in_kronecker, gn_diag_softmax_in_kronecker_with, gn_diag_softmax_with,
    gn_diag_weighted, gn_diag_weighted_in_basis, gn_diag_weighted_in_basis_with,
    gn_diag_weighted_with, gn_sample_label, gn_sample_uniform, gn_softmax_factors, logistic_weight,
    GnEstimator,
};
pub use kernels::gn::rotated::rotated_gn_step_with;
pub use kernels::gn::samples::Samples;
pub use kernels::gn::step::{gn_step, gn_step_with, GnConfig, SophiaClip};
pub use kernels::grad_norm::{
    clip_coefficient, grad_norm_combine, grad_norm_multi, grad_norm_multi_half,
    grad_norm_multi_half_with, grad_norm_multi_with, grad_norm_partials, grad_norm_partials_with,
    grad_norm_piece_count, grad_norm_piece_len, scale_in_place, GradNorm,
};
pub use optim::Adam;
pub use optim::{GaussNewton, GaussNewtonConfig};
pub use optim::{RotatedAdam, Soap, SoapConfig};
