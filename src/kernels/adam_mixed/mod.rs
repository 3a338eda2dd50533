//! # The `adam_mixed` family: Adam with 16-bit or 8-bit storage
//!
//! Every kernel here runs the f32 lane of [`crate::kernels::adam`] (so `theta`, `m`, `v` follow
//! the same arithmetic) and changes only how values are stored:
//!
//! | module | stored | traffic per parameter |
//! | --- | --- | --- |
//! | [`master`] | bf16/f16 `theta16` and `g16`, f32 master `theta`, `m`, `v` | 16 bytes |
//! | [`bf16_state`] | f32 `theta`, `g`; bf16 `m`, `v` (stochastic rounding) | 20 bytes |
//! | [`state_8bit`] | f32 `theta`, `g`; 8-bit block-quantized `m`, `v` | 16 bytes + scales |
//!
//! The f32 step moves 28 bytes per parameter.

pub mod bf16_state;
pub mod master;
pub mod state_8bit;
