//! Mixed-precision Adam, compressed optimizer state, the global gradient norm and the two-pass
//! clipped step.
//!
//! 16-bit values cross the ABI as `uint16_t` bit patterns (bf16: the top half of an IEEE f32;
//! f16: IEEE binary16).
//!
//! 8-bit state layout (the checkpoint format; save and restore the four arrays as they are):
//! elements are grouped in blocks of 256 (`DP_ADAM_8BIT_BLOCK`); block `b` covers elements
//! `[256 b, 256 b + 256)`; `exp_avg_scales[b]` / `exp_avg_sq_scales[b]` (float) is the absmax of
//! the block's `m` / `v`; `dp_adam_8bit_scales_len(len) = ceil(len / 256)`. One byte per element:
//! - `exp_avg` code `c`: bit 7 is the sign; `q = c & 0x7f = e << 3 | f` (4-bit `e`, 3-bit `f`);
//!   `|m| = scale * (e == 0 ? f * 2^-17 : (1 + f / 8) * 2^(e - 15))`; codes 121..127 unused.
//! - `exp_avg_sq` code `c = e << 3 | f` (5-bit `e`, 3-bit `f`):
//!   `v = scale * (e == 0 ? f * 2^-33 : (1 + f / 8) * 2^(e - 31))`; codes 249..255 unused.
//!
//! All-zero codes and scales are the usual `m = v = 0` start.

use super::adam::{check_tensor, dp_adam_config, dp_adam_tensor_f32, tensor_view, validate};
use super::check::{self, buffer, check_buffers, plain, Region};
use super::{dp_status, guard};
use crate::error::{Error, ErrorKind, Result};
use crate::kernels::adam::AdamConfig;
use crate::kernels::adam_compressed::{
    adam_step_8bit_state, adam_step_8bit_state_multi, adam_step_bf16_state,
    adam_step_bf16_state_multi, dequantize_state, quant_scales_len, quantize_state,
    Bf16StateTensor, Moment, QuantStateTensor, QUANT_BLOCK,
};
use crate::kernels::adam_mixed::{
    adam_step_master_multi, adam_step_master_with, check_no_amsgrad, HalfFormat, MasterTensor,
    Rounding,
};
use crate::kernels::grad_norm::{
    adam_step_clipped_multi, adam_step_master_clipped_multi, check_max_grad_norm, grad_norm_multi,
    grad_norm_multi_half, GradNorm,
};
use crate::{Isa, Par};

/// Elements per block of the 8-bit optimizer state (one scale per block and moment).
///
/// 8-bit state layout (the checkpoint format: save and restore the four arrays as they are).
/// Block `b` covers elements `[256 b, 256 b + 256)`; `exp_avg_scales[b]` / `exp_avg_sq_scales[b]`
/// (float) is the absmax of the block's m / v; each scale array holds
/// `dp_adam_8bit_scales_len(len) = ceil(len / 256)` floats. One byte per element:
/// - exp_avg code `c`: bit 7 is the sign; `q = c & 0x7f = e << 3 | f` (4-bit e, 3-bit f);
///   `|m| = scale * (e == 0 ? f * 2^-17 : (1 + f / 8) * 2^(e - 15))`; codes 121..127 unused.
/// - exp_avg_sq code `c = e << 3 | f` (5-bit e, 3-bit f):
///   `v = scale * (e == 0 ? f * 2^-33 : (1 + f / 8) * 2^(e - 31))`; codes 249..255 unused.
///
/// All-zero codes and scales are the usual m = v = 0 start.
pub const DP_ADAM_8BIT_BLOCK: usize = 256;

const _: () = assert!(DP_ADAM_8BIT_BLOCK == QUANT_BLOCK);

fn config(cfg: *const dp_adam_config) -> Result<AdamConfig> {
    check::required("cfg", cfg)?;
    // SAFETY: cfg is non-null (checked above) and points to a dp_adam_config (C contract).
    Ok(AdamConfig::from(unsafe { &*cfg }))
}

#[allow(clippy::too_many_arguments)]
fn master_step(
    format: HalfFormat,
    rounding: Rounding,
    cfg: *const dp_adam_config,
    step: u64,
    master: *mut f32,
    param: *mut u16,
    grad: *const u16,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    len: usize,
) -> Result<()> {
    let config = config(cfg)?;
    let regions = check_buffers(&[
        buffer("master", master, len, true),
        buffer("param", param, len, true),
        buffer("grad", grad, len, false),
        buffer("exp_avg", exp_avg, len, true),
        buffer("exp_avg_sq", exp_avg_sq, len, true),
    ])?;
    validate(&config, step)?;
    check_no_amsgrad(&config)?;
    check::disjoint(regions)?;
    // SAFETY: every pointer is non-null (or len == 0), aligned, sized and the buffers are
    // pairwise disjoint: checked just above; validity for len elements is the C contract.
    let tensor = unsafe {
        MasterTensor {
            master: check::slice_mut(master, len),
            param: check::slice_mut(param, len),
            grad: check::slice(grad, len),
            exp_avg: check::slice_mut(exp_avg, len),
            exp_avg_sq: check::slice_mut(exp_avg_sq, len),
        }
    };
    adam_step_master_with(
        Isa::detect(),
        Par::Pool,
        format,
        &config,
        step,
        tensor,
        rounding,
    )
}

/// One Adam/AdamW step with bf16 parameters and gradients and f32 master weights, in one pass:
/// reads `grad_bf16`, `master`, `exp_avg`, `exp_avg_sq`; writes `master`, `exp_avg`,
/// `exp_avg_sq` and `param_bf16 = round_nearest_even(master)`. amsgrad is not supported
/// (DP_ERR_INVALID_ARGUMENT). With `cfg->check_finite`, a NaN/Inf gradient (after unscaling)
/// returns DP_ERR_NON_FINITE. Buffers must not overlap; on failure nothing is written.
///
/// # Safety
/// Each non-NULL pointer must be valid for `len` elements (reads for `grad_bf16`, reads and
/// writes for the others) for the duration of the call; `cfg` must point to a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_bf16(
    cfg: *const dp_adam_config,
    step: u64,
    master: *mut f32,
    param_bf16: *mut u16,
    grad_bf16: *const u16,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        master_step(
            HalfFormat::Bf16,
            Rounding::NearestEven,
            cfg,
            step,
            master,
            param_bf16,
            grad_bf16,
            exp_avg,
            exp_avg_sq,
            len,
        )
    })
}

/// `dp_adam_step_master_bf16` for IEEE f16 parameters and gradients (`uint16_t` bits).
///
/// # Safety
/// As `dp_adam_step_master_bf16`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_f16(
    cfg: *const dp_adam_config,
    step: u64,
    master: *mut f32,
    param_f16: *mut u16,
    grad_f16: *const u16,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        master_step(
            HalfFormat::F16,
            Rounding::NearestEven,
            cfg,
            step,
            master,
            param_f16,
            grad_f16,
            exp_avg,
            exp_avg_sq,
            len,
        )
    })
}

/// `dp_adam_step_master_bf16` with stochastic rounding of the bf16 copy: the random bits depend
/// only on `(seed, step, element index)`, so the result does not depend on the thread count.
///
/// # Safety
/// As `dp_adam_step_master_bf16`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_bf16_stochastic(
    cfg: *const dp_adam_config,
    step: u64,
    seed: u64,
    master: *mut f32,
    param_bf16: *mut u16,
    grad_bf16: *const u16,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        master_step(
            HalfFormat::Bf16,
            Rounding::Stochastic { seed },
            cfg,
            step,
            master,
            param_bf16,
            grad_bf16,
            exp_avg,
            exp_avg_sq,
            len,
        )
    })
}

/// `dp_adam_step_master_f16` with stochastic rounding (see
/// `dp_adam_step_master_bf16_stochastic`).
///
/// # Safety
/// As `dp_adam_step_master_bf16`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_f16_stochastic(
    cfg: *const dp_adam_config,
    step: u64,
    seed: u64,
    master: *mut f32,
    param_f16: *mut u16,
    grad_f16: *const u16,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        master_step(
            HalfFormat::F16,
            Rounding::Stochastic { seed },
            cfg,
            step,
            master,
            param_f16,
            grad_f16,
            exp_avg,
            exp_avg_sq,
            len,
        )
    })
}

/// Pass 1 of a training step: the global L2 norm of every tensor's `grad * inv_grad_scale`
/// (only the `grad` and `len` fields are read; the others may be NULL), and whether any value
/// is NaN or infinite. The f64 norm is bitwise identical for any thread count. Writes
/// `*norm_out` and `*found_inf_out` on success (a non-finite gradient is not an error here:
/// `*found_inf_out = true`). `inv_grad_scale` must be finite and > 0.
///
/// # Safety
/// `tensors` must be valid for `count` elements (or NULL with `count == 0`), each `grad` valid
/// for reads of `len` floats; `norm_out` and `found_inf_out` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn dp_grad_norm_multi_f32(
    tensors: *const dp_adam_tensor_f32,
    count: usize,
    inv_grad_scale: f64,
    norm_out: *mut f64,
    found_inf_out: *mut bool,
) -> dp_status {
    guard(|| {
        // SAFETY: the C contract of this export, as `grad_norm_export` requires.
        unsafe {
            grad_norm_export(
                tensors,
                count,
                |t| (t.grad, t.len),
                inv_grad_scale,
                norm_out,
                found_inf_out,
                |grads| grad_norm_multi(grads, inv_grad_scale),
            )
        }
    })
}

/// The body of the norm exports: checks the list, each gradient (`grad_of`: pointer and
/// length) and the outputs, runs `norm` on the gradients, writes the outputs.
///
/// # Safety
/// `tensors` valid for `count` entries, each gradient for its length, the outputs for one
/// write (the C contract of the norm exports).
unsafe fn grad_norm_export<T, G>(
    tensors: *const T,
    count: usize,
    grad_of: impl Fn(&T) -> (*const G, usize),
    inv_grad_scale: f64,
    norm_out: *mut f64,
    found_inf_out: *mut bool,
    norm: impl FnOnce(&[&[G]]) -> Result<GradNorm>,
) -> Result<()> {
    check::required("norm_out", norm_out)?;
    check::required("found_inf_out", found_inf_out)?;
    // SAFETY: `tensors` is valid for `count` entries (the caller's contract).
    let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 1)? };
    regions.try_reserve_exact(2).map_err(|_| {
        Error::new(
            ErrorKind::Allocation,
            format!("no memory to check {count} tensors"),
        )
    })?;
    for (i, t) in list.iter().enumerate() {
        let (grad, len) = grad_of(t);
        check::check_tensor_buffers(Some(i), &[buffer("grad", grad, len, false)], &mut regions)?;
    }
    check::size_and_alignment("norm_out", norm_out, 1)?;
    crate::error::check_positive("inv_grad_scale", inv_grad_scale)?;
    regions.push(Region::new(plain("norm_out"), norm_out, 1, true));
    regions.push(Region::new(plain("found_inf_out"), found_inf_out, 1, true));
    check::disjoint(regions)?;
    let grads: Vec<&[G]> = list
        .iter()
        .map(|t| {
            let (grad, len) = grad_of(t);
            // SAFETY: each gradient passed the buffer checks above; reads only.
            unsafe { check::slice(grad, len) }
        })
        .collect();
    let result = norm(&grads)?;
    // SAFETY: both outputs are non-null, aligned and disjoint from the gradients (checked).
    unsafe {
        *norm_out = result.norm;
        *found_inf_out = result.found_inf;
    }
    Ok(())
}

/// `dp_grad_norm_multi_f32` of the bf16 gradients (`grad`) of master-weight tensors: bitwise
/// the norm of the widened values.
///
/// # Safety
/// `tensors` must be valid for `count` elements (or NULL with `count == 0`), each `grad` valid
/// for reads of `len` values; `norm_out` and `found_inf_out` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn dp_grad_norm_multi_bf16(
    tensors: *const dp_adam_master_tensor,
    count: usize,
    inv_grad_scale: f64,
    norm_out: *mut f64,
    found_inf_out: *mut bool,
) -> dp_status {
    // SAFETY: the C contract of this export.
    guard(|| unsafe {
        half_norm(
            HalfFormat::Bf16,
            tensors,
            count,
            inv_grad_scale,
            norm_out,
            found_inf_out,
        )
    })
}

/// `dp_grad_norm_multi_bf16` of IEEE f16 gradients.
///
/// # Safety
/// As `dp_grad_norm_multi_bf16`.
#[no_mangle]
pub unsafe extern "C" fn dp_grad_norm_multi_f16(
    tensors: *const dp_adam_master_tensor,
    count: usize,
    inv_grad_scale: f64,
    norm_out: *mut f64,
    found_inf_out: *mut bool,
) -> dp_status {
    // SAFETY: the C contract of this export.
    guard(|| unsafe {
        half_norm(
            HalfFormat::F16,
            tensors,
            count,
            inv_grad_scale,
            norm_out,
            found_inf_out,
        )
    })
}

/// # Safety
/// As `dp_grad_norm_multi_bf16`.
unsafe fn half_norm(
    format: HalfFormat,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    inv_grad_scale: f64,
    norm_out: *mut f64,
    found_inf_out: *mut bool,
) -> Result<()> {
    // SAFETY: forwarded from the caller.
    unsafe {
        grad_norm_export(
            tensors,
            count,
            |t| (t.grad, t.len),
            inv_grad_scale,
            norm_out,
            found_inf_out,
            |grads| grad_norm_multi_half(format, grads, inv_grad_scale),
        )
    }
}

/// The two-pass training step over `count` tensors. Pass 1: the global L2 norm of the unscaled
/// gradients (`grad * cfg->inv_grad_scale`) with a non-finite scan; if any value is NaN/Inf the
/// call returns DP_ERR_NON_FINITE and writes nothing (not even `*norm_out`), whatever
/// `cfg->check_finite` says. Pass 2: Adam/AdamW with unscale and
/// `clip = min(1, max_grad_norm / (norm + 1e-6))` folded into one gradient factor.
/// `max_grad_norm > 0` (INFINITY: no clipping). `norm_out` may be NULL; otherwise it receives
/// the norm before clipping. Overlap rules as `dp_adam_step_multi_f32`.
///
/// # Safety
/// As `dp_adam_step_multi_f32`; `norm_out`, when non-NULL, valid for one write.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_clipped_multi_f32(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_tensor_f32,
    count: usize,
    max_grad_norm: f64,
    norm_out: *mut f64,
) -> dp_status {
    guard(|| {
        let config = config(cfg)?;
        // SAFETY: `tensors` is valid for `count` entries (C contract).
        let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 5)? };
        for (i, t) in list.iter().enumerate() {
            check_tensor(Some(i), t, config.amsgrad, &mut regions)?;
        }
        check::size_and_alignment("norm_out", norm_out, 1)?;
        validate(&config, step)?;
        check_max_grad_norm(max_grad_norm)?;
        if !norm_out.is_null() {
            regions.push(Region::new(plain("norm_out"), norm_out, 1, true));
        }
        check::disjoint(regions)?;
        let mut views: Vec<_> = list
            .iter()
            // SAFETY: every tensor passed check_tensor, and all regions are disjoint.
            .map(|t| unsafe { tensor_view(t, config.amsgrad) })
            .collect();
        let norm = adam_step_clipped_multi(&config, step, &mut views, max_grad_norm)?;
        if !norm_out.is_null() {
            // SAFETY: non-null, aligned, disjoint from every tensor (checked above).
            unsafe { *norm_out = norm };
        }
        Ok(())
    })
}

/// One Adam/AdamW step with `exp_avg` (m) and `exp_avg_sq` (v) stored as bf16 bits, rounded
/// stochastically with random bits from `(seed, step, element index)` (m and v use separate
/// streams): unbiased and independent of the thread count. `param` and `grad` are f32.
/// amsgrad is not supported. Buffers must not overlap; on failure nothing is written.
///
/// # Safety
/// Each non-NULL pointer valid for `len` elements (reads for `grad`, reads and writes for the
/// others); `cfg` must point to a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_bf16_state(
    cfg: *const dp_adam_config,
    step: u64,
    seed: u64,
    param: *mut f32,
    grad: *const f32,
    exp_avg_bf16: *mut u16,
    exp_avg_sq_bf16: *mut u16,
    len: usize,
) -> dp_status {
    guard(|| {
        let config = config(cfg)?;
        let regions = check_buffers(&[
            buffer("param", param, len, true),
            buffer("grad", grad, len, false),
            buffer("exp_avg_bf16", exp_avg_bf16, len, true),
            buffer("exp_avg_sq_bf16", exp_avg_sq_bf16, len, true),
        ])?;
        validate(&config, step)?;
        check_no_amsgrad(&config)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or len == 0), aligned, sized, pairwise disjoint: checked above.
        let tensor = unsafe {
            Bf16StateTensor {
                param: check::slice_mut(param, len),
                grad: check::slice(grad, len),
                exp_avg: check::slice_mut(exp_avg_bf16, len),
                exp_avg_sq: check::slice_mut(exp_avg_sq_bf16, len),
            }
        };
        adam_step_bf16_state(&config, step, seed, tensor)
    })
}

/// `ceil(len / 256)`: the number of floats in each scale array of the 8-bit state.
#[no_mangle]
pub extern "C" fn dp_adam_8bit_scales_len(len: usize) -> usize {
    quant_scales_len(len)
}

/// One Adam/AdamW step with 8-bit block-quantized `m` and `v` (layout: see
/// DP_ADAM_8BIT_BLOCK): decoded, stepped and re-encoded in one pass, with fresh per-block
/// scales. Code arrays hold `len` bytes, scale arrays `dp_adam_8bit_scales_len(len)` floats.
/// A scale that is not finite or is negative (a corrupted state) is DP_ERR_INVALID_ARGUMENT.
/// amsgrad is not supported. Buffers must not overlap; on failure nothing is written.
///
/// # Safety
/// Each non-NULL pointer valid for its element count (reads for `grad`, reads and writes for
/// the others); `cfg` must point to a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_8bit_state(
    cfg: *const dp_adam_config,
    step: u64,
    param: *mut f32,
    grad: *const f32,
    exp_avg_codes: *mut u8,
    exp_avg_scales: *mut f32,
    exp_avg_sq_codes: *mut u8,
    exp_avg_sq_scales: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        let config = config(cfg)?;
        let n_scales = quant_scales_len(len);
        let regions = check_buffers(&[
            buffer("param", param, len, true),
            buffer("grad", grad, len, false),
            buffer("exp_avg_codes", exp_avg_codes, len, true),
            buffer("exp_avg_scales", exp_avg_scales, n_scales, true),
            buffer("exp_avg_sq_codes", exp_avg_sq_codes, len, true),
            buffer("exp_avg_sq_scales", exp_avg_sq_scales, n_scales, true),
        ])?;
        validate(&config, step)?;
        check_no_amsgrad(&config)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized, pairwise disjoint: checked above.
        let tensor = unsafe {
            QuantStateTensor {
                param: check::slice_mut(param, len),
                grad: check::slice(grad, len),
                exp_avg_codes: check::slice_mut(exp_avg_codes, len),
                exp_avg_scales: check::slice_mut(exp_avg_scales, n_scales),
                exp_avg_sq_codes: check::slice_mut(exp_avg_sq_codes, len),
                exp_avg_sq_scales: check::slice_mut(exp_avg_sq_scales, n_scales),
            }
        };
        adam_step_8bit_state(&config, step, tensor)
    })
}

/// `moment` of `dp_adam_8bit_quantize_f32` and `dp_adam_8bit_dequantize_f32`: `exp_avg` (signed
/// codes).
pub const DP_MOMENT_EXP_AVG: u32 = 0;
/// `moment`: `exp_avg_sq` (unsigned codes; the values must be >= 0).
pub const DP_MOMENT_EXP_AVG_SQ: u32 = 1;

fn moment(value: u32) -> Result<Moment> {
    match value {
        DP_MOMENT_EXP_AVG => Ok(Moment::ExpAvg),
        DP_MOMENT_EXP_AVG_SQ => Ok(Moment::ExpAvgSq),
        other => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("moment = {other}: expected DP_MOMENT_EXP_AVG (0) or DP_MOMENT_EXP_AVG_SQ (1)"),
        )),
    }
}

/// Encodes `len` f32 values of one moment into the 8-bit layout (see DP_ADAM_8BIT_BLOCK), as
/// the 8-bit step encodes its new state: `len` codes and `dp_adam_8bit_scales_len(len)` scales
/// (each block's absmax). For example, to go on from an f32 checkpoint with 8-bit state. The
/// values must be finite (and >= 0 for DP_MOMENT_EXP_AVG_SQ), else DP_ERR_INVALID_ARGUMENT.
/// Buffers must not overlap; on failure nothing is written.
///
/// # Safety
/// `values` must be valid for reading `len` floats, `codes` for writing `len` bytes, `scales`
/// for writing `dp_adam_8bit_scales_len(len)` floats.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_8bit_quantize_f32(
    moment: u32,
    values: *const f32,
    codes: *mut u8,
    scales: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        let moment = self::moment(moment)?;
        let n_scales = quant_scales_len(len);
        let regions = check_buffers(&[
            buffer("values", values, len, false),
            buffer("codes", codes, len, true),
            buffer("scales", scales, n_scales, true),
        ])?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized, pairwise disjoint: checked above.
        let (values, codes, scales) = unsafe {
            (
                check::slice(values, len),
                check::slice_mut(codes, len),
                check::slice_mut(scales, n_scales),
            )
        };
        quantize_state(Isa::detect(), moment, values, codes, scales)
    })
}

/// Decodes `len` codes of one moment and their `dp_adam_8bit_scales_len(len)` scales (layout:
/// see DP_ADAM_8BIT_BLOCK) into f32: exactly the values the 8-bit step decodes, e.g. to save
/// the state as f32. A scale that is not finite or is negative is DP_ERR_INVALID_ARGUMENT.
/// Buffers must not overlap; on failure nothing is written.
///
/// # Safety
/// `codes` must be valid for reading `len` bytes, `scales` for reading
/// `dp_adam_8bit_scales_len(len)` floats, `values` for writing `len` floats.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_8bit_dequantize_f32(
    moment: u32,
    codes: *const u8,
    scales: *const f32,
    values: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        let moment = self::moment(moment)?;
        let n_scales = quant_scales_len(len);
        let regions = check_buffers(&[
            buffer("codes", codes, len, false),
            buffer("scales", scales, n_scales, false),
            buffer("values", values, len, true),
        ])?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized, pairwise disjoint: checked above.
        let (codes, scales, values) = unsafe {
            (
                check::slice(codes, len),
                check::slice(scales, n_scales),
                check::slice_mut(values, len),
            )
        };
        dequantize_state(Isa::detect(), moment, codes, scales, values)
    })
}

/// One tensor for the multi-tensor master-weight steps (`dp_adam_step_master_bf16_multi` and
/// the like): f32 master weights, the 16-bit parameter copy (written) and the 16-bit gradient
/// as bits, f32 moments; `len` elements each.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_master_tensor {
    pub master: *mut f32,
    pub param: *mut u16,
    pub grad: *const u16,
    pub exp_avg: *mut f32,
    pub exp_avg_sq: *mut f32,
    pub len: usize,
}

/// The checked Rust views of a C list of master-weight tensors, and the configuration. With
/// `clipped = Some((norm_out, max_grad_norm))`, the two-pass step's output (may be NULL) and
/// bound are checked too, each in its place in the order of checks.
fn master_views<'a>(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    clipped: Option<(*mut f64, f64)>,
) -> Result<(AdamConfig, Vec<MasterTensor<'a>>)> {
    let config = config(cfg)?;
    // SAFETY: `tensors` is valid for `count` entries (C contract).
    let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 5)? };
    for (i, t) in list.iter().enumerate() {
        let n = t.len;
        let buffers = [
            buffer("master", t.master, n, true),
            buffer("param", t.param, n, true),
            buffer("grad", t.grad, n, false),
            buffer("exp_avg", t.exp_avg, n, true),
            buffer("exp_avg_sq", t.exp_avg_sq, n, true),
        ];
        check::check_tensor_buffers(Some(i), &buffers, &mut regions)?;
    }
    if let Some((norm_out, _)) = clipped {
        check::size_and_alignment("norm_out", norm_out, 1)?;
    }
    validate(&config, step)?;
    check_no_amsgrad(&config)?;
    if let Some((norm_out, max_grad_norm)) = clipped {
        check_max_grad_norm(max_grad_norm)?;
        if !norm_out.is_null() {
            regions.push(Region::new(plain("norm_out"), norm_out, 1, true));
        }
    }
    check::disjoint(regions)?;
    let views = list
        .iter()
        // SAFETY: every tensor's buffers are non-null (or empty), aligned, sized and disjoint
        // from all others: checked above; validity for len elements is the C contract.
        .map(|t| unsafe {
            MasterTensor {
                master: check::slice_mut(t.master, t.len),
                param: check::slice_mut(t.param, t.len),
                grad: check::slice(t.grad, t.len),
                exp_avg: check::slice_mut(t.exp_avg, t.len),
                exp_avg_sq: check::slice_mut(t.exp_avg_sq, t.len),
            }
        })
        .collect();
    Ok((config, views))
}

fn master_step_multi(
    format: HalfFormat,
    rounding: Rounding,
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
) -> Result<()> {
    let (config, mut views) = master_views(cfg, step, tensors, count, None)?;
    adam_step_master_multi(format, &config, step, &mut views, rounding)
}

#[allow(clippy::too_many_arguments)]
fn master_step_clipped(
    format: HalfFormat,
    rounding: Rounding,
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    max_grad_norm: f64,
    norm_out: *mut f64,
) -> Result<()> {
    let clipped = Some((norm_out, max_grad_norm));
    let (config, mut views) = master_views(cfg, step, tensors, count, clipped)?;
    let norm =
        adam_step_master_clipped_multi(format, &config, step, &mut views, max_grad_norm, rounding)?;
    if !norm_out.is_null() {
        // SAFETY: non-null, aligned, disjoint from every tensor (checked above).
        unsafe { *norm_out = norm };
    }
    Ok(())
}

/// `dp_adam_step_master_bf16` over `count` tensors in one call (PyTorch's tensor-list form):
/// work is balanced across threads by elements. No buffer may overlap another, within or across
/// tensors, except that gradients may share memory. All tensors are checked (and scanned, with
/// check_finite) before any is written; on failure nothing is written.
///
/// # Safety
/// `tensors` must be valid for `count` entries (or NULL with `count == 0`), each tensor's
/// pointers valid as for `dp_adam_step_master_bf16`; `cfg` must point to a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_bf16_multi(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
) -> dp_status {
    guard(|| {
        let r = Rounding::NearestEven;
        master_step_multi(HalfFormat::Bf16, r, cfg, step, tensors, count)
    })
}

/// `dp_adam_step_master_bf16_multi` with stochastic rounding. The elements are numbered as if
/// the tensors were laid end to end: the result is that of `dp_adam_step_master_bf16_stochastic`
/// on their concatenation, for any thread count.
///
/// # Safety
/// As `dp_adam_step_master_bf16_multi`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_bf16_multi_stochastic(
    cfg: *const dp_adam_config,
    step: u64,
    seed: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
) -> dp_status {
    guard(|| {
        let r = Rounding::Stochastic { seed };
        master_step_multi(HalfFormat::Bf16, r, cfg, step, tensors, count)
    })
}

/// `dp_adam_step_master_bf16_multi` with IEEE f16 parameters and gradients.
///
/// # Safety
/// As `dp_adam_step_master_bf16_multi`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_f16_multi(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
) -> dp_status {
    guard(|| {
        let r = Rounding::NearestEven;
        master_step_multi(HalfFormat::F16, r, cfg, step, tensors, count)
    })
}

/// `dp_adam_step_master_bf16_multi_stochastic` with IEEE f16 parameters and gradients.
///
/// # Safety
/// As `dp_adam_step_master_bf16_multi`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_f16_multi_stochastic(
    cfg: *const dp_adam_config,
    step: u64,
    seed: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
) -> dp_status {
    guard(|| {
        let r = Rounding::Stochastic { seed };
        master_step_multi(HalfFormat::F16, r, cfg, step, tensors, count)
    })
}

/// One tensor for `dp_adam_step_bf16_state_multi`: `len` f32 parameters and gradients, `m` and
/// `v` as bf16 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_bf16_state_tensor {
    pub param: *mut f32,
    pub grad: *const f32,
    pub exp_avg_bf16: *mut u16,
    pub exp_avg_sq_bf16: *mut u16,
    pub len: usize,
}

/// `dp_adam_step_bf16_state` over `count` tensors in one call: work is balanced across threads
/// by elements; the elements are numbered as if the tensors were laid end to end, so the result
/// is that of `dp_adam_step_bf16_state` on their concatenation, for any thread count. No buffer
/// may overlap another, within or across tensors, except that gradients may share memory. All
/// tensors are checked (and scanned, with check_finite) before any is written; on failure
/// nothing is written.
///
/// # Safety
/// `tensors` must be valid for `count` entries (or NULL with `count == 0`), each tensor's
/// pointers valid as for `dp_adam_step_bf16_state`; `cfg` must point to a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_bf16_state_multi(
    cfg: *const dp_adam_config,
    step: u64,
    seed: u64,
    tensors: *const dp_adam_bf16_state_tensor,
    count: usize,
) -> dp_status {
    guard(|| {
        let config = config(cfg)?;
        // SAFETY: `tensors` is valid for `count` entries (C contract).
        let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 4)? };
        for (i, t) in list.iter().enumerate() {
            let n = t.len;
            let buffers = [
                buffer("param", t.param, n, true),
                buffer("grad", t.grad, n, false),
                buffer("exp_avg_bf16", t.exp_avg_bf16, n, true),
                buffer("exp_avg_sq_bf16", t.exp_avg_sq_bf16, n, true),
            ];
            check::check_tensor_buffers(Some(i), &buffers, &mut regions)?;
        }
        validate(&config, step)?;
        check_no_amsgrad(&config)?;
        check::disjoint(regions)?;
        let mut views: Vec<Bf16StateTensor<'_>> = list
            .iter()
            // SAFETY: every tensor's buffers are non-null (or empty), aligned, sized and
            // disjoint from all others: checked above; validity is the C contract.
            .map(|t| unsafe {
                Bf16StateTensor {
                    param: check::slice_mut(t.param, t.len),
                    grad: check::slice(t.grad, t.len),
                    exp_avg: check::slice_mut(t.exp_avg_bf16, t.len),
                    exp_avg_sq: check::slice_mut(t.exp_avg_sq_bf16, t.len),
                }
            })
            .collect();
        adam_step_bf16_state_multi(&config, step, seed, &mut views)
    })
}

/// One tensor for `dp_adam_step_8bit_state_multi`: `len` f32 parameters and gradients, `len`
/// bytes of codes and `dp_adam_8bit_scales_len(len)` scales per moment (layout: see
/// DP_ADAM_8BIT_BLOCK; each tensor has its own blocks).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_8bit_tensor {
    pub param: *mut f32,
    pub grad: *const f32,
    pub exp_avg_codes: *mut u8,
    pub exp_avg_scales: *mut f32,
    pub exp_avg_sq_codes: *mut u8,
    pub exp_avg_sq_scales: *mut f32,
    pub len: usize,
}

/// `dp_adam_step_8bit_state` over `count` tensors in one call: work is balanced across threads
/// by elements, and the result is that of one call per tensor. No buffer may overlap another,
/// within or across tensors, except that gradients may share memory. All tensors are checked
/// (and scanned, with check_finite) before any is written; on failure nothing is written.
///
/// # Safety
/// `tensors` must be valid for `count` entries (or NULL with `count == 0`), each tensor's
/// pointers valid as for `dp_adam_step_8bit_state`; `cfg` must point to a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_8bit_state_multi(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_8bit_tensor,
    count: usize,
) -> dp_status {
    guard(|| {
        let config = config(cfg)?;
        // SAFETY: `tensors` is valid for `count` entries (C contract).
        let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 6)? };
        for (i, t) in list.iter().enumerate() {
            let (n, k) = (t.len, quant_scales_len(t.len));
            let buffers = [
                buffer("param", t.param, n, true),
                buffer("grad", t.grad, n, false),
                buffer("exp_avg_codes", t.exp_avg_codes, n, true),
                buffer("exp_avg_scales", t.exp_avg_scales, k, true),
                buffer("exp_avg_sq_codes", t.exp_avg_sq_codes, n, true),
                buffer("exp_avg_sq_scales", t.exp_avg_sq_scales, k, true),
            ];
            check::check_tensor_buffers(Some(i), &buffers, &mut regions)?;
        }
        validate(&config, step)?;
        check_no_amsgrad(&config)?;
        check::disjoint(regions)?;
        let mut views: Vec<QuantStateTensor<'_>> = list
            .iter()
            // SAFETY: every tensor's buffers are non-null (or empty), aligned, sized and
            // disjoint from all others: checked above; validity is the C contract.
            .map(|t| unsafe {
                let k = quant_scales_len(t.len);
                QuantStateTensor {
                    param: check::slice_mut(t.param, t.len),
                    grad: check::slice(t.grad, t.len),
                    exp_avg_codes: check::slice_mut(t.exp_avg_codes, t.len),
                    exp_avg_scales: check::slice_mut(t.exp_avg_scales, k),
                    exp_avg_sq_codes: check::slice_mut(t.exp_avg_sq_codes, t.len),
                    exp_avg_sq_scales: check::slice_mut(t.exp_avg_sq_scales, k),
                }
            })
            .collect();
        adam_step_8bit_state_multi(&config, step, &mut views)
    })
}

/// The two-pass step of `dp_adam_step_master_bf16_multi`: pass 1 is the global L2 norm of the
/// unscaled bf16 gradients with a non-finite scan (a NaN/Inf returns DP_ERR_NON_FINITE and
/// writes nothing, not even `*norm_out`); pass 2 is the master step with unscale and
/// `clip = min(1, max_grad_norm / (norm + 1e-6))` folded into one gradient factor (see
/// `dp_adam_step_clipped_multi_f32`). `max_grad_norm > 0` (INFINITY: no clipping); `norm_out`
/// may be NULL. Overlap rules as `dp_adam_step_master_bf16_multi`.
///
/// # Safety
/// As `dp_adam_step_master_bf16_multi`; `norm_out`, when non-NULL, valid for one write.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_bf16_clipped_multi(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    max_grad_norm: f64,
    norm_out: *mut f64,
) -> dp_status {
    guard(|| {
        let (f, r) = (HalfFormat::Bf16, Rounding::NearestEven);
        master_step_clipped(f, r, cfg, step, tensors, count, max_grad_norm, norm_out)
    })
}

/// `dp_adam_step_master_bf16_clipped_multi` with stochastic rounding (elements numbered end to
/// end, as `dp_adam_step_master_bf16_multi_stochastic`).
///
/// # Safety
/// As `dp_adam_step_master_bf16_clipped_multi`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_bf16_clipped_multi_stochastic(
    cfg: *const dp_adam_config,
    step: u64,
    seed: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    max_grad_norm: f64,
    norm_out: *mut f64,
) -> dp_status {
    guard(|| {
        let (f, r) = (HalfFormat::Bf16, Rounding::Stochastic { seed });
        master_step_clipped(f, r, cfg, step, tensors, count, max_grad_norm, norm_out)
    })
}

/// `dp_adam_step_master_bf16_clipped_multi` with IEEE f16 parameters and gradients.
///
/// # Safety
/// As `dp_adam_step_master_bf16_clipped_multi`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_f16_clipped_multi(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    max_grad_norm: f64,
    norm_out: *mut f64,
) -> dp_status {
    guard(|| {
        let (f, r) = (HalfFormat::F16, Rounding::NearestEven);
        master_step_clipped(f, r, cfg, step, tensors, count, max_grad_norm, norm_out)
    })
}

/// `dp_adam_step_master_f16_clipped_multi` with stochastic rounding.
///
/// # Safety
/// As `dp_adam_step_master_bf16_clipped_multi`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_master_f16_clipped_multi_stochastic(
    cfg: *const dp_adam_config,
    step: u64,
    seed: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    max_grad_norm: f64,
    norm_out: *mut f64,
) -> dp_status {
    guard(|| {
        let (f, r) = (HalfFormat::F16, Rounding::Stochastic { seed });
        master_step_clipped(f, r, cfg, step, tensors, count, max_grad_norm, norm_out)
    })
}
