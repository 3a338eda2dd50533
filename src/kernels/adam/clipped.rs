//! # Two-pass clipped Adam / AdamW steps
//!
//! Pass 1 is the global gradient norm of [`crate::kernels::grad_norm`]; if it finds a non-finite
//! value (or the sum of squares overflows), the step fails with [`crate::ErrorKind::NonFinite`]
//! and writes nothing. Otherwise pass 2 is the multi-tensor step of [`crate::kernels::adam`]
//! (or, for 16-bit gradients, of [`crate::kernels::adam_mixed::master`]) with the gradient
//! factor `inv_grad_scale * clip` folded into its first multiply, where
//! `clip = min(1, max_grad_norm / (norm + 1e-6))` (PyTorch's formula,
//! [`crate::clip_coefficient`]). PyTorch's chain (`scaler.unscale_`, `clip_grad_norm_`, `step`)
//! reads the gradients three to four times and writes them twice; this reads them twice and
//! never writes them. The combined factor is computed in f64 and rounded to f32 once, where
//! PyTorch rounds after each multiply.
//!
//! A caller that holds the gradients in shards computes the norm from every shard's partial
//! sums ([`crate::kernels::grad_norm::grad_norm_partials`], `grad_norm_combine`) and runs pass 2
//! alone with [`adam_step_clipped_by_norm_multi`].
//!
//! **Reference**: [`crate::reference::grad_norm`] for pass 1 and [`crate::reference::adam_step`]
//! with the folded factor for pass 2 (`tests/adam.rs`).

use super::{adam_step_multi_with, AdamConfig, AdamTensor};
use crate::dispatch::{Isa, Par};
use crate::error::{check_step, non_finite_error, Error, Result};
use crate::kernels::adam_mixed::master::{
    adam_step_master_multi_with, check_master_tensors, HalfFormat, MasterTensor, Rounding,
};
use crate::kernels::grad_norm::{clip_coefficient, norm_pass, Values};

/// The two-pass step: global norm (pass 1), then Adam/AdamW on every tensor with unscaling and
/// clip-by-global-norm folded in (pass 2). Returns the norm of the unscaled gradients (before
/// clipping). `max_grad_norm` must be > 0 (`f64::INFINITY`: no clipping). `cfg.check_finite` is
/// implied: a non-finite gradient is [`crate::ErrorKind::NonFinite`] with nothing written.
pub fn adam_step_clipped_multi(
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [AdamTensor<'_>],
    max_grad_norm: f64,
) -> Result<f64> {
    adam_step_clipped_multi_with(Isa::detect(), Par::Pool, cfg, step, tensors, max_grad_norm)
}

/// The checks of the f32 clipped steps: the configuration, the step count, `max_grad_norm`
/// and every tensor.
fn check_clipped(
    cfg: &AdamConfig,
    step: u64,
    max_grad_norm: f64,
    tensors: &[AdamTensor<'_>],
) -> Result<()> {
    cfg.validate()?;
    check_step(step)?;
    check_max_grad_norm(max_grad_norm)?;
    for (i, t) in tensors.iter().enumerate() {
        t.check(cfg, Some(i))?;
    }
    Ok(())
}

/// Checks `max_grad_norm > 0` (and not NaN; infinity means no clipping).
pub(crate) fn check_max_grad_norm(max_grad_norm: f64) -> Result<()> {
    if max_grad_norm > 0.0 {
        Ok(())
    } else {
        Err(Error::hyperparameter(format!(
            "max_grad_norm = {max_grad_norm} must be > 0 (inf: no clipping)"
        )))
    }
}

/// [`adam_step_clipped_multi`] on a chosen instruction set and parallelism.
pub fn adam_step_clipped_multi_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [AdamTensor<'_>],
    max_grad_norm: f64,
) -> Result<f64> {
    check_clipped(cfg, step, max_grad_norm, tensors)?;
    let grads = tensors.iter().map(|t| Values::F32(t.grad));
    let (folded, norm) = clipped_config(isa, par, cfg, grads, max_grad_norm)?;
    adam_step_multi_with(isa, par, &folded, step, tensors)?;
    Ok(norm)
}

/// Pass 1 of the two-pass steps: the norm of the unscaled gradients, then `cfg` with
/// `inv_grad_scale * clip` folded in (and no second finite scan), and the norm; a non-finite
/// gradient (or an overflowing sum of squares) is [`crate::ErrorKind::NonFinite`].
fn clipped_config<'a>(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    grads: impl Iterator<Item = Values<'a>>,
    max_grad_norm: f64,
) -> Result<(AdamConfig, f64)> {
    let norm = norm_pass(isa, par, grads, cfg.inv_grad_scale as f32)?;
    if norm.found_inf || !norm.norm.is_finite() {
        return Err(non_finite_error());
    }
    Ok((fold_clip(cfg, norm.norm, max_grad_norm)?, norm.norm))
}

/// `cfg` with `inv_grad_scale * clip_coefficient(norm, max_grad_norm)` folded in and no finite
/// scan: what pass 2 of the clipped steps runs with (`norm` finite).
fn fold_clip(cfg: &AdamConfig, norm: f64, max_grad_norm: f64) -> Result<AdamConfig> {
    let clip = clip_coefficient(norm, max_grad_norm);
    let folded = AdamConfig {
        inv_grad_scale: cfg.inv_grad_scale * clip,
        check_finite: false,
        ..*cfg
    };
    if folded.inv_grad_scale <= 0.0 {
        // max_grad_norm / norm underflowed: the clipped gradient is zero to f64 precision.
        return Err(Error::hyperparameter(
            "the clip factor underflows to 0 (max_grad_norm / norm below 1e-308)",
        ));
    }
    Ok(folded)
}

/// The two-pass step of the master-weight kernels: the global norm of the 16-bit gradients
/// (pass 1), then [`crate::adam_step_master_multi`] with unscaling and clip-by-global-norm
/// folded in (pass 2). As [`adam_step_clipped_multi`] otherwise: returns the norm before
/// clipping, and a non-finite gradient is [`crate::ErrorKind::NonFinite`] with nothing written.
pub fn adam_step_master_clipped_multi(
    format: HalfFormat,
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [MasterTensor<'_>],
    max_grad_norm: f64,
    rounding: Rounding,
) -> Result<f64> {
    adam_step_master_clipped_multi_with(
        Isa::detect(),
        Par::Pool,
        format,
        cfg,
        step,
        tensors,
        max_grad_norm,
        rounding,
    )
}

/// [`adam_step_master_clipped_multi`] on a chosen instruction set and parallelism.
#[allow(clippy::too_many_arguments)]
pub fn adam_step_master_clipped_multi_with(
    isa: Isa,
    par: Par,
    format: HalfFormat,
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [MasterTensor<'_>],
    max_grad_norm: f64,
    rounding: Rounding,
) -> Result<f64> {
    cfg.validate()?;
    check_step(step)?;
    check_max_grad_norm(max_grad_norm)?;
    check_master_tensors(cfg, tensors)?;
    let grads = tensors.iter().map(|t| Values::Half(format, t.grad));
    let (folded, norm) = clipped_config(isa, par, cfg, grads, max_grad_norm)?;
    adam_step_master_multi_with(isa, par, format, &folded, step, tensors, rounding)?;
    Ok(norm)
}

/// Pass 2 of [`adam_step_clipped_multi`] with a global norm computed elsewhere (for example
/// by [`crate::grad_norm_combine`] over the partials of every shard): the Adam/AdamW step on `tensors`
/// with `inv_grad_scale * clip_coefficient(norm, max_grad_norm)` folded in. On each element
/// the result is bitwise that of [`adam_step_clipped_multi`] over the whole list given the same
/// norm (the step is elementwise). A non-finite `norm` is [`crate::ErrorKind::NonFinite`]
/// with nothing written; a negative one is an invalid hyperparameter.
pub fn adam_step_clipped_by_norm_multi(
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [AdamTensor<'_>],
    max_grad_norm: f64,
    norm: f64,
) -> Result<()> {
    adam_step_clipped_by_norm_multi_with(
        Isa::detect(),
        Par::Pool,
        cfg,
        step,
        tensors,
        max_grad_norm,
        norm,
    )
}

/// [`adam_step_clipped_by_norm_multi`] on a chosen instruction set and parallelism.
pub fn adam_step_clipped_by_norm_multi_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [AdamTensor<'_>],
    max_grad_norm: f64,
    norm: f64,
) -> Result<()> {
    check_clipped(cfg, step, max_grad_norm, tensors)?;
    if !norm.is_finite() {
        return Err(non_finite_error());
    }
    if norm < 0.0 {
        return Err(Error::hyperparameter(format!("norm = {norm} must be >= 0")));
    }
    let folded = fold_clip(cfg, norm, max_grad_norm)?;
    adam_step_multi_with(isa, par, &folded, step, tensors)
}
