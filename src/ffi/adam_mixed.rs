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
//!
//! The checks run in the order of every Adam export (see `super::adam`): `cfg`, the tensor
//! list and its buffers with their counts, modes (`format`, `rounding`, `moment`), flags the
//! step does not support (amsgrad), hyperparameters, overlap, then the data scans.

use super::adam::{
    adam_config, check_tensor, collect_views, dp_adam_config, dp_adam_tensor_f32, tensor_view,
    validate,
};
use super::check::{self, buffer, check_buffers, plain, Region};
use super::{dp_status, guard};
use crate::error::{Error, ErrorKind, Result};
use crate::kernels::adam::clipped::{
    adam_step_clipped_multi, adam_step_master_clipped_multi, check_max_grad_norm,
};
use crate::kernels::adam::AdamConfig;
use crate::kernels::adam_mixed::bf16_state::{adam_step_bf16_state_multi, Bf16StateTensor};
use crate::kernels::adam_mixed::master::{
    adam_step_master_multi, check_no_amsgrad, HalfFormat, MasterTensor, Rounding,
};
use crate::kernels::adam_mixed::state_8bit::{
    adam_step_8bit_state_multi, dequantize_state, quant_scales_len, quantize_state, Moment,
    QuantStateTensor, QUANT_BLOCK,
};
use crate::kernels::grad_norm::{
    check_inv_grad_scale, grad_norm_multi, grad_norm_multi_half, GradNorm,
};
use crate::Isa;

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

/// `format`: bfloat16 parameters and gradients (`uint16_t` bits, the top half of an f32).
pub const DP_FORMAT_BF16: u32 = 0;
/// `format`: IEEE binary16 parameters and gradients (`uint16_t` bits).
pub const DP_FORMAT_F16: u32 = 1;

/// `rounding`: the 16-bit parameter copy is rounded to nearest, ties to even (`seed` unused).
pub const DP_ROUND_NEAREST: u32 = 0;
/// `rounding`: stochastic rounding with random bits from `(seed, step, element index)`,
/// elements numbered as if the tensors were laid end to end: the result does not depend on the
/// thread count, and a list is one call on the concatenation of its tensors.
pub const DP_ROUND_STOCHASTIC: u32 = 1;

/// `moment` of `dp_adam_8bit_quantize_f32` and `dp_adam_8bit_dequantize_f32`: `exp_avg` (signed
/// codes).
pub const DP_MOMENT_EXP_AVG: u32 = 0;
/// `moment`: `exp_avg_sq` (unsigned codes; the values must be >= 0).
pub const DP_MOMENT_EXP_AVG_SQ: u32 = 1;

fn format(value: u32) -> Result<HalfFormat> {
    match value {
        DP_FORMAT_BF16 => Ok(HalfFormat::Bf16),
        DP_FORMAT_F16 => Ok(HalfFormat::F16),
        other => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("format = {other}: expected DP_FORMAT_BF16 (0) or DP_FORMAT_F16 (1)"),
        )),
    }
}

fn rounding(value: u32, seed: u64) -> Result<Rounding> {
    match value {
        DP_ROUND_NEAREST => Ok(Rounding::NearestEven),
        DP_ROUND_STOCHASTIC => Ok(Rounding::Stochastic { seed }),
        other => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("rounding = {other}: expected DP_ROUND_NEAREST (0) or DP_ROUND_STOCHASTIC (1)"),
        )),
    }
}

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

/// Checks an optional `double` output (NULL allowed) and adds its region.
fn optional_out(name: &'static str, out: *mut f64, regions: &mut Vec<Region>) -> Result<()> {
    if out.is_null() {
        return Ok(());
    }
    check::check_tensor_buffers(None, &[buffer(name, out, 1, true)], regions)
}

/// The two-pass training step over `count` f32 tensors. Pass 1: the global L2 norm of the
/// unscaled gradients (`grad * cfg->inv_grad_scale`) with a non-finite scan; if any value is
/// NaN/Inf the call returns DP_ERR_NON_FINITE and writes nothing (not even `*norm_out`),
/// whatever `cfg->check_finite` says. Pass 2: Adam/AdamW with unscale and
/// `clip = min(1, max_grad_norm / (norm + 1e-6))` folded into one gradient factor.
///
/// Parameters: `cfg` (read unaligned); `tensors`: `count` entries as for
/// `dp_adam_step_multi_f32`; `max_grad_norm > 0` (INFINITY: no clipping); `norm_out`: NULL, or
/// one double that receives the norm before clipping.
///
/// Returns:
/// - DP_OK: the norm was computed and every tensor stepped;
/// - DP_ERR_NULL_POINTER: `cfg` is NULL, `tensors` is NULL with `count > 0`, or a buffer a
///   tensor uses is NULL with its `len > 0`;
/// - DP_ERR_LENGTH: a size overflows `isize::MAX` bytes or an address range wraps;
/// - DP_ERR_INVALID_ARGUMENT: `cfg->struct_size` is wrong, a flag is not 0 or 1, or `tensors`,
///   a buffer or `norm_out` is misaligned;
/// - DP_ERR_INVALID_HYPERPARAMETER: as `dp_adam_step_f32`, or `max_grad_norm` is not > 0;
/// - DP_ERR_ALIASING: two buffers overlap (gradients may share memory), `norm_out` included;
/// - DP_ERR_NON_FINITE: a scaled gradient holds NaN or Inf, or the sum of squares overflows;
/// - DP_ERR_ALLOCATION: no memory to check `count` tensors, or the pool could not start;
/// - DP_ERR_PANIC: a bug in diagprec.
///
/// On any status but DP_OK no byte of any tensor or of `*norm_out` changes.
///
/// Concurrency: any number of threads may call this at once on disjoint buffers.
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
        // SAFETY: cfg is NULL or readable (C contract).
        let config = unsafe { adam_config(cfg)? };
        // SAFETY: `tensors` is valid for `count` entries (C contract).
        let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 5, 0)? };
        for (i, t) in list.iter().enumerate() {
            check_tensor(Some(i), t, config.amsgrad, &mut regions)?;
        }
        optional_out("norm_out", norm_out, &mut regions)?;
        validate(&config, step)?;
        check_max_grad_norm(max_grad_norm)?;
        check::disjoint(regions)?;
        // SAFETY: every tensor passed check_tensor, and all regions are disjoint.
        let mut views = collect_views(list, |t| unsafe { tensor_view(t, config.amsgrad) })?;
        let norm = adam_step_clipped_multi(&config, step, &mut views, max_grad_norm)?;
        if !norm_out.is_null() {
            // SAFETY: non-null, aligned, disjoint from every tensor (checked above).
            unsafe { check::write(norm_out, norm) };
        }
        Ok(())
    })
}

/// Pass 1 of a training step: the global L2 norm of every tensor's `grad * inv_grad_scale`
/// (only the `grad` and `len` fields of each tensor are read; the others may be NULL), and
/// whether any value is NaN or infinite. The f64 norm is bitwise identical for any thread
/// count. A non-finite gradient is not an error here: `*found_inf_out = 1`.
///
/// Parameters: `tensors`: `count` entries (NULL with `count == 0` is an empty list), each
/// `grad` of its `len` floats; `inv_grad_scale`: finite and > 0 (and > 0, finite as an f32);
/// `norm_out`: one double, written; `found_inf_out`: one uint32_t, written 0 or 1.
///
/// Returns:
/// - DP_OK: `*norm_out` and `*found_inf_out` were written;
/// - DP_ERR_NULL_POINTER: `norm_out` or `found_inf_out` is NULL, `tensors` is NULL with
///   `count > 0`, or a `grad` is NULL with its `len > 0`;
/// - DP_ERR_LENGTH: a size overflows `isize::MAX` bytes or an address range wraps;
/// - DP_ERR_INVALID_ARGUMENT: `tensors`, a `grad`, `norm_out` or `found_inf_out` is
///   misaligned;
/// - DP_ERR_INVALID_HYPERPARAMETER: `inv_grad_scale` is not finite and > 0 as an f32;
/// - DP_ERR_ALIASING: `norm_out` or `found_inf_out` overlaps a gradient or each other;
/// - DP_ERR_ALLOCATION: no memory to check `count` tensors, or the pool could not start;
/// - DP_ERR_PANIC: a bug in diagprec.
///
/// On any status but DP_OK `*norm_out` and `*found_inf_out` are unchanged.
///
/// Concurrency: any number of threads may call this at once (the gradients are only read;
/// the outputs must be distinct per call).
///
/// # Safety
/// `tensors` must be valid for `count` entries (or NULL with `count == 0`), each `grad` valid
/// for reads of `len` floats; `norm_out` and `found_inf_out` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn dp_grad_norm_multi_f32(
    tensors: *const dp_adam_tensor_f32,
    count: usize,
    inv_grad_scale: f64,
    norm_out: *mut f64,
    found_inf_out: *mut u32,
) -> dp_status {
    guard(|| {
        // SAFETY: the C contract of this export, as `grad_norm_export` requires.
        unsafe {
            grad_norm_export(
                tensors,
                count,
                |t| (t.grad, t.len),
                || Ok(()),
                inv_grad_scale,
                norm_out,
                found_inf_out,
                |(), grads| grad_norm_multi(grads, inv_grad_scale),
            )
        }
    })
}

/// `dp_grad_norm_multi_f32` of the 16-bit gradients (`grad`, bits of `format`) of
/// master-weight tensors: bitwise the norm of the widened values. Only the `grad` and `len`
/// fields are read; the others may be NULL.
///
/// Parameters: `format`: DP_FORMAT_BF16 or DP_FORMAT_F16; the others as
/// `dp_grad_norm_multi_f32` (`grad` holds `len` uint16_t).
///
/// Returns: as `dp_grad_norm_multi_f32`, and DP_ERR_INVALID_ARGUMENT for an unknown `format`.
/// On any status but DP_OK `*norm_out` and `*found_inf_out` are unchanged.
///
/// Concurrency: any number of threads may call this at once (the gradients are only read;
/// the outputs must be distinct per call).
///
/// # Safety
/// `tensors` must be valid for `count` entries (or NULL with `count == 0`), each `grad` valid
/// for reads of `len` values; `norm_out` and `found_inf_out` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn dp_grad_norm_master_multi(
    format: u32,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    inv_grad_scale: f64,
    norm_out: *mut f64,
    found_inf_out: *mut u32,
) -> dp_status {
    guard(|| {
        // SAFETY: the C contract of this export, as `grad_norm_export` requires.
        unsafe {
            grad_norm_export(
                tensors,
                count,
                |t| (t.grad, t.len),
                || self::format(format),
                inv_grad_scale,
                norm_out,
                found_inf_out,
                |half, grads| grad_norm_multi_half(half, grads, inv_grad_scale),
            )
        }
    })
}

/// The body of the norm exports: checks the outputs, the list, each gradient (`grad_of`:
/// pointer and length), the modes (`modes`, whose value goes to `norm`), `inv_grad_scale` and overlap, then runs `norm` on
/// the gradients and writes the outputs.
///
/// # Safety
/// `tensors` valid for `count` entries, each gradient for its length, the outputs for one
/// write (the C contract of the norm exports).
#[allow(clippy::too_many_arguments)]
unsafe fn grad_norm_export<T, G, M>(
    tensors: *const T,
    count: usize,
    grad_of: impl Fn(&T) -> (*const G, usize),
    modes: impl FnOnce() -> Result<M>,
    inv_grad_scale: f64,
    norm_out: *mut f64,
    found_inf_out: *mut u32,
    norm: impl FnOnce(M, &[&[G]]) -> Result<GradNorm>,
) -> Result<()> {
    check::required("norm_out", norm_out)?;
    check::required("found_inf_out", found_inf_out)?;
    // SAFETY: `tensors` is valid for `count` entries (the caller's contract).
    let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 1, 2)? };
    for (i, t) in list.iter().enumerate() {
        let (grad, len) = grad_of(t);
        check::check_tensor_buffers(Some(i), &[buffer("grad", grad, len, false)], &mut regions)?;
    }
    check::check_tensor_buffers(
        None,
        &[
            buffer("norm_out", norm_out, 1, true),
            buffer("found_inf_out", found_inf_out, 1, true),
        ],
        &mut regions,
    )?;
    let modes = modes()?;
    check_inv_grad_scale(inv_grad_scale)?;
    check::disjoint(regions)?;
    let grads = collect_views(list, |t| {
        let (grad, len) = grad_of(t);
        // SAFETY: each gradient passed the buffer checks above; it is only read.
        unsafe { check::slice(grad, len) }
    })?;
    let result = norm(modes, &grads)?;
    // SAFETY: both outputs are non-null, aligned and disjoint from the gradients and from each
    // other (checked above).
    unsafe {
        check::write(norm_out, result.norm);
        check::write(found_inf_out, u32::from(result.found_inf));
    }
    Ok(())
}

/// One tensor for the master-weight steps (`dp_adam_master_step_multi`,
/// `dp_adam_master_step_clipped_multi`) and `dp_grad_norm_master_multi`: f32 master weights,
/// the 16-bit parameter copy (written) and the 16-bit gradient as bits of the call's `format`,
/// f32 moments; `len` elements each.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_master_tensor {
    /// The f32 master weights, updated in place.
    pub master: *mut f32,
    /// The 16-bit parameters (bits of the format), written as the rounded master weights.
    pub param: *mut u16,
    /// The 16-bit gradient (bits of the format, read only).
    pub grad: *const u16,
    /// The first moment `m`, updated in place.
    pub exp_avg: *mut f32,
    /// The second moment `v`, updated in place.
    pub exp_avg_sq: *mut f32,
    /// Elements in each buffer of this tensor.
    pub len: usize,
}

/// The checked Rust views of a C list of master-weight tensors, the configuration, format and
/// rounding. With `clipped = Some((norm_out, max_grad_norm))`, the two-pass step's output (may
/// be NULL) and bound are checked too, each in its place in the order of checks.
#[allow(clippy::too_many_arguments)]
fn master_views<'a>(
    cfg: *const dp_adam_config,
    step: u64,
    format: u32,
    rounding: u32,
    seed: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    clipped: Option<(*mut f64, f64)>,
) -> Result<(AdamConfig, HalfFormat, Rounding, Vec<MasterTensor<'a>>)> {
    // SAFETY: cfg is NULL or readable (C contract).
    let config = unsafe { adam_config(cfg)? };
    // SAFETY: `tensors` is valid for `count` entries (C contract).
    let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 5, 0)? };
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
        optional_out("norm_out", norm_out, &mut regions)?;
    }
    let format = self::format(format)?;
    let rounding = self::rounding(rounding, seed)?;
    check_no_amsgrad(&config)?;
    validate(&config, step)?;
    if let Some((_, max_grad_norm)) = clipped {
        check_max_grad_norm(max_grad_norm)?;
    }
    check::disjoint(regions)?;
    // SAFETY: every tensor's buffers are non-null (or empty), aligned, sized and disjoint from
    // all others: checked above; validity for len elements is the C contract.
    let views = collect_views(list, |t| unsafe {
        MasterTensor {
            master: check::slice_mut(t.master, t.len),
            param: check::slice_mut(t.param, t.len),
            grad: check::slice(t.grad, t.len),
            exp_avg: check::slice_mut(t.exp_avg, t.len),
            exp_avg_sq: check::slice_mut(t.exp_avg_sq, t.len),
        }
    })?;
    Ok((config, format, rounding, views))
}

/// One Adam/AdamW step over `count` tensors with 16-bit parameters and gradients and f32
/// master weights, in one pass per element: reads `grad`, `master`, `exp_avg`, `exp_avg_sq`;
/// writes `master`, `exp_avg`, `exp_avg_sq` and `param = round(master)` in `format`. A single
/// tensor is a list of one. Work is balanced across threads by elements; the result does not
/// depend on the thread count. amsgrad is not supported.
///
/// Parameters: `cfg` (read unaligned); `format`: DP_FORMAT_BF16 or DP_FORMAT_F16; `rounding`:
/// DP_ROUND_NEAREST (`seed` unused) or DP_ROUND_STOCHASTIC (random bits from
/// `(seed, step, element index)`, elements numbered as if the tensors were laid end to end);
/// `tensors`: `count` entries (NULL with `count == 0` is an empty list), each with its five
/// buffers of `len` elements. No buffer may overlap another, within or across tensors, except
/// that gradients may share memory.
///
/// Returns:
/// - DP_OK: every tensor was stepped;
/// - DP_ERR_NULL_POINTER: `cfg` is NULL, `tensors` is NULL with `count > 0`, or a buffer is
///   NULL with its `len > 0` (the message names `tensors[i].field`);
/// - DP_ERR_LENGTH: a size overflows `isize::MAX` bytes or an address range wraps;
/// - DP_ERR_INVALID_ARGUMENT: `cfg->struct_size` is wrong, a flag is not 0 or 1,
///   `cfg->amsgrad` is 1, `format` or `rounding` is not a defined value, or `tensors` or a
///   buffer is misaligned;
/// - DP_ERR_INVALID_HYPERPARAMETER: as `dp_adam_step_f32`;
/// - DP_ERR_ALIASING: two buffers overlap (gradients may share memory);
/// - DP_ERR_NON_FINITE: `cfg->check_finite` and a widened, scaled gradient holds NaN or Inf
///   (all gradients are scanned before any tensor is written);
/// - DP_ERR_ALLOCATION: no memory to check `count` tensors, or the pool could not start;
/// - DP_ERR_PANIC: a bug in diagprec.
///
/// On any status but DP_OK no byte of any tensor changes (the list is all or nothing).
///
/// Concurrency: any number of threads may call this at once on disjoint buffers.
///
/// # Safety
/// `tensors` must be valid for `count` entries (or NULL with `count == 0`), each tensor's
/// pointers valid for `len` elements (reads for `grad`, reads and writes for the others) for
/// the duration of the call; `cfg` must be valid for reading a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_master_step_multi(
    cfg: *const dp_adam_config,
    step: u64,
    format: u32,
    rounding: u32,
    seed: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
) -> dp_status {
    guard(|| {
        let (config, format, rounding, mut views) =
            master_views(cfg, step, format, rounding, seed, tensors, count, None)?;
        adam_step_master_multi(format, &config, step, &mut views, rounding)
    })
}

/// The two-pass step of `dp_adam_master_step_multi`: pass 1 is the global L2 norm of the
/// unscaled 16-bit gradients with a non-finite scan (a NaN/Inf returns DP_ERR_NON_FINITE and
/// writes nothing, not even `*norm_out`, whatever `cfg->check_finite` says); pass 2 is the
/// master step with unscale and `clip = min(1, max_grad_norm / (norm + 1e-6))` folded into one
/// gradient factor (as `dp_adam_step_clipped_multi_f32`).
///
/// Parameters: as `dp_adam_master_step_multi`, and `max_grad_norm > 0` (INFINITY: no
/// clipping); `norm_out`: NULL, or one double that receives the norm before clipping.
///
/// Returns: as `dp_adam_master_step_multi`, and also
/// - DP_ERR_INVALID_ARGUMENT: `norm_out` is misaligned;
/// - DP_ERR_INVALID_HYPERPARAMETER: `max_grad_norm` is not > 0;
/// - DP_ERR_ALIASING: `norm_out` overlaps a buffer;
/// - DP_ERR_NON_FINITE: a scaled gradient holds NaN or Inf, or the sum of squares overflows.
///
/// On any status but DP_OK no byte of any tensor or of `*norm_out` changes.
///
/// Concurrency: any number of threads may call this at once on disjoint buffers.
///
/// # Safety
/// As `dp_adam_master_step_multi`; `norm_out`, when non-NULL, valid for one write.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_master_step_clipped_multi(
    cfg: *const dp_adam_config,
    step: u64,
    format: u32,
    rounding: u32,
    seed: u64,
    tensors: *const dp_adam_master_tensor,
    count: usize,
    max_grad_norm: f64,
    norm_out: *mut f64,
) -> dp_status {
    guard(|| {
        let clipped = Some((norm_out, max_grad_norm));
        let (config, format, rounding, mut views) =
            master_views(cfg, step, format, rounding, seed, tensors, count, clipped)?;
        let norm = adam_step_master_clipped_multi(
            format,
            &config,
            step,
            &mut views,
            max_grad_norm,
            rounding,
        )?;
        if !norm_out.is_null() {
            // SAFETY: non-null, aligned, disjoint from every tensor (checked above).
            unsafe { check::write(norm_out, norm) };
        }
        Ok(())
    })
}

/// One tensor for `dp_adam_bf16_state_step_multi_f32`: `len` f32 parameters and gradients,
/// `len` bf16 bits each of `m` and `v`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_bf16_state_tensor {
    /// The parameters (`theta`), updated in place.
    pub param: *mut f32,
    /// The gradient (read only).
    pub grad: *const f32,
    /// `m` as bf16 bits, updated in place.
    pub exp_avg_bf16: *mut u16,
    /// `v` as bf16 bits, updated in place.
    pub exp_avg_sq_bf16: *mut u16,
    /// Elements in each buffer of this tensor.
    pub len: usize,
}

/// One Adam/AdamW step over `count` tensors with `exp_avg` (m) and `exp_avg_sq` (v) stored as
/// bf16 bits, rounded stochastically with random bits from `(seed, step, element index)` (m
/// and v use the low and the high 16 bits of one 32-bit word per element; elements numbered
/// as if the tensors were laid end to end): unbiased, and independent of the thread count. `param` and `grad` are f32. A single tensor
/// is a list of one. amsgrad is not supported.
///
/// Parameters: `cfg` (read unaligned); `seed`; `tensors`: `count` entries (NULL with
/// `count == 0` is an empty list), each with its four buffers of `len` elements. No buffer may
/// overlap another, within or across tensors, except that gradients may share memory.
///
/// Returns:
/// - DP_OK: every tensor was stepped;
/// - DP_ERR_NULL_POINTER: `cfg` is NULL, `tensors` is NULL with `count > 0`, or a buffer is
///   NULL with its `len > 0`;
/// - DP_ERR_LENGTH: a size overflows `isize::MAX` bytes or an address range wraps;
/// - DP_ERR_INVALID_ARGUMENT: `cfg->struct_size` is wrong, a flag is not 0 or 1,
///   `cfg->amsgrad` is 1, or `tensors` or a buffer is misaligned;
/// - DP_ERR_INVALID_HYPERPARAMETER: as `dp_adam_step_f32`;
/// - DP_ERR_ALIASING: two buffers overlap (gradients may share memory);
/// - DP_ERR_NON_FINITE: `cfg->check_finite` and a scaled gradient holds NaN or Inf;
/// - DP_ERR_ALLOCATION: no memory to check `count` tensors, or the pool could not start;
/// - DP_ERR_PANIC: a bug in diagprec.
///
/// On any status but DP_OK no byte of any tensor changes (the list is all or nothing).
///
/// Concurrency: any number of threads may call this at once on disjoint buffers.
///
/// # Safety
/// `tensors` must be valid for `count` entries (or NULL with `count == 0`), each tensor's
/// pointers valid for `len` elements (reads for `grad`, reads and writes for the others);
/// `cfg` must be valid for reading a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_bf16_state_step_multi_f32(
    cfg: *const dp_adam_config,
    step: u64,
    seed: u64,
    tensors: *const dp_adam_bf16_state_tensor,
    count: usize,
) -> dp_status {
    guard(|| {
        // SAFETY: cfg is NULL or readable (C contract).
        let config = unsafe { adam_config(cfg)? };
        // SAFETY: `tensors` is valid for `count` entries (C contract).
        let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 4, 0)? };
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
        check_no_amsgrad(&config)?;
        validate(&config, step)?;
        check::disjoint(regions)?;
        // SAFETY: every tensor's buffers are non-null (or empty), aligned, sized and disjoint
        // from all others: checked above; validity is the C contract.
        let mut views = collect_views(list, |t| unsafe {
            Bf16StateTensor {
                param: check::slice_mut(t.param, t.len),
                grad: check::slice(t.grad, t.len),
                exp_avg: check::slice_mut(t.exp_avg_bf16, t.len),
                exp_avg_sq: check::slice_mut(t.exp_avg_sq_bf16, t.len),
            }
        })?;
        adam_step_bf16_state_multi(&config, step, seed, &mut views)
    })
}

/// One tensor for `dp_adam_8bit_step_multi_f32`: `len` f32 parameters and gradients, `len`
/// bytes of codes per moment, and `scales_len` scales per moment, which must equal
/// `dp_adam_8bit_scales_len(len)` (layout: see DP_ADAM_8BIT_BLOCK; each tensor has its own
/// blocks).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_8bit_tensor {
    /// The parameters (`theta`), updated in place.
    pub param: *mut f32,
    /// The gradient (read only).
    pub grad: *const f32,
    /// One byte per element: the signed 8-bit code of `m`.
    pub exp_avg_codes: *mut u8,
    /// The per-block scales of `m` (`scales_len` floats).
    pub exp_avg_scales: *mut f32,
    /// One byte per element: the 8-bit code of `v`.
    pub exp_avg_sq_codes: *mut u8,
    /// The per-block scales of `v` (`scales_len` floats).
    pub exp_avg_sq_scales: *mut f32,
    /// Elements of `param`, `grad` and each code array.
    pub len: usize,
    /// Floats of each scale array: must equal `dp_adam_8bit_scales_len(len)`.
    pub scales_len: usize,
}

/// `ceil(len / 256)`: the number of floats in each scale array of the 8-bit state. Never
/// fails; any thread may call it at any time.
#[no_mangle]
pub extern "C" fn dp_adam_8bit_scales_len(len: usize) -> usize {
    quant_scales_len(len)
}

/// One Adam/AdamW step over `count` tensors with 8-bit block-quantized `m` and `v` (layout:
/// see DP_ADAM_8BIT_BLOCK): decoded, stepped and re-encoded in one pass, with fresh per-block
/// scales. The result is that of one call per tensor (a single tensor is a list of one), for
/// any thread count. amsgrad is not supported.
///
/// Parameters: `cfg` (read unaligned); `tensors`: `count` entries (NULL with `count == 0` is an
/// empty list), each with `len` floats of `param` and `grad`, `len` bytes of each code array
/// and `scales_len` floats of each scale array. No buffer may overlap another, within or
/// across tensors, except that gradients may share memory.
///
/// Returns:
/// - DP_OK: every tensor was stepped;
/// - DP_ERR_NULL_POINTER: `cfg` is NULL, `tensors` is NULL with `count > 0`, or a buffer is
///   NULL with its count > 0;
/// - DP_ERR_LENGTH: a tensor's `scales_len` is not `dp_adam_8bit_scales_len(len)`, a size
///   overflows `isize::MAX` bytes, or an address range wraps;
/// - DP_ERR_INVALID_ARGUMENT: `cfg->struct_size` is wrong, a flag is not 0 or 1,
///   `cfg->amsgrad` is 1, `tensors` or a buffer is misaligned, or a scale is negative or not
///   finite (a corrupted state);
/// - DP_ERR_INVALID_HYPERPARAMETER: as `dp_adam_step_f32`;
/// - DP_ERR_ALIASING: two buffers overlap (gradients may share memory);
/// - DP_ERR_NON_FINITE: `cfg->check_finite` and a scaled gradient holds NaN or Inf;
/// - DP_ERR_ALLOCATION: no memory to check `count` tensors, or the pool could not start;
/// - DP_ERR_PANIC: a bug in diagprec.
///
/// On any status but DP_OK no byte of any tensor changes (the list is all or nothing).
///
/// Concurrency: any number of threads may call this at once on disjoint buffers.
///
/// # Safety
/// `tensors` must be valid for `count` entries (or NULL with `count == 0`), each tensor's
/// pointers valid for their counts (reads for `grad`, reads and writes for the others); `cfg`
/// must be valid for reading a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_8bit_step_multi_f32(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_8bit_tensor,
    count: usize,
) -> dp_status {
    guard(|| {
        // SAFETY: cfg is NULL or readable (C contract).
        let config = unsafe { adam_config(cfg)? };
        // SAFETY: `tensors` is valid for `count` entries (C contract).
        let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 6, 0)? };
        for (i, t) in list.iter().enumerate() {
            let (n, k) = (t.len, t.scales_len);
            let buffers = [
                buffer("param", t.param, n, true),
                buffer("grad", t.grad, n, false),
                buffer("exp_avg_codes", t.exp_avg_codes, n, true),
                buffer("exp_avg_scales", t.exp_avg_scales, k, true),
                buffer("exp_avg_sq_codes", t.exp_avg_sq_codes, n, true),
                buffer("exp_avg_sq_scales", t.exp_avg_sq_scales, k, true),
            ];
            check::check_tensor_buffers(Some(i), &buffers, &mut regions)?;
            check::exact_len(
                format_args!("tensors[{i}].scales_len"),
                k,
                quant_scales_len(n),
            )?;
        }
        check_no_amsgrad(&config)?;
        validate(&config, step)?;
        check::disjoint(regions)?;
        // SAFETY: every tensor's buffers are non-null (or empty), aligned, sized (scales_len is
        // the step's count) and disjoint from all others: checked above; validity is the C
        // contract.
        let mut views = collect_views(list, |t| unsafe {
            QuantStateTensor {
                param: check::slice_mut(t.param, t.len),
                grad: check::slice(t.grad, t.len),
                exp_avg_codes: check::slice_mut(t.exp_avg_codes, t.len),
                exp_avg_scales: check::slice_mut(t.exp_avg_scales, t.scales_len),
                exp_avg_sq_codes: check::slice_mut(t.exp_avg_sq_codes, t.len),
                exp_avg_sq_scales: check::slice_mut(t.exp_avg_sq_scales, t.scales_len),
            }
        })?;
        adam_step_8bit_state_multi(&config, step, &mut views)
    })
}

/// The checks shared by the 8-bit codec exports: `codes_len == len`, `scales_len` the scales
/// of `len` elements, and `moment` a defined value.
fn codec_args(moment: u32, len: usize, codes_len: usize, scales_len: usize) -> Result<Moment> {
    check::exact_len(plain("codes_len"), codes_len, len)?;
    check::exact_len(plain("scales_len"), scales_len, quant_scales_len(len))?;
    self::moment(moment)
}

/// Encodes `len` f32 values of one moment into the 8-bit layout (see DP_ADAM_8BIT_BLOCK), as
/// the 8-bit step encodes its new state: `len` codes and `dp_adam_8bit_scales_len(len)` scales
/// (each block's absmax). For example, to go on from an f32 checkpoint with 8-bit state.
///
/// Parameters: `moment`: DP_MOMENT_EXP_AVG or DP_MOMENT_EXP_AVG_SQ; `values`: `len` floats,
/// read; `codes`: `codes_len` bytes, written (must equal `len`); `scales`: `scales_len`
/// floats, written (must equal `dp_adam_8bit_scales_len(len)`).
///
/// Returns:
/// - DP_OK: `codes` and `scales` were written;
/// - DP_ERR_NULL_POINTER: a buffer is NULL with its count > 0;
/// - DP_ERR_LENGTH: `codes_len != len`, `scales_len != dp_adam_8bit_scales_len(len)`, a size
///   overflows `isize::MAX` bytes, or an address range wraps;
/// - DP_ERR_INVALID_ARGUMENT: `moment` is not a defined value, `values` or `scales` is
///   misaligned, or a value is not finite (or is negative for DP_MOMENT_EXP_AVG_SQ);
/// - DP_ERR_ALIASING: two buffers overlap;
/// - DP_ERR_PANIC: a bug in diagprec.
///
/// On any status but DP_OK no byte of `codes` or `scales` changes.
///
/// Concurrency: any number of threads may call this at once on disjoint outputs.
///
/// # Safety
/// `values` must be valid for reading `len` floats, `codes` for writing `codes_len` bytes,
/// `scales` for writing `scales_len` floats.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_8bit_quantize_f32(
    moment: u32,
    values: *const f32,
    len: usize,
    codes: *mut u8,
    codes_len: usize,
    scales: *mut f32,
    scales_len: usize,
) -> dp_status {
    guard(|| {
        let regions = check_buffers(&[
            buffer("values", values, len, false),
            buffer("codes", codes, codes_len, true),
            buffer("scales", scales, scales_len, true),
        ])?;
        let moment = codec_args(moment, len, codes_len, scales_len)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized, pairwise disjoint: checked above.
        let (values, codes, scales) = unsafe {
            (
                check::slice(values, len),
                check::slice_mut(codes, codes_len),
                check::slice_mut(scales, scales_len),
            )
        };
        quantize_state(Isa::detect(), moment, values, codes, scales)
    })
}

/// Decodes `len` codes of one moment and their `dp_adam_8bit_scales_len(len)` scales (layout:
/// see DP_ADAM_8BIT_BLOCK) into f32: exactly the values the 8-bit step decodes, e.g. to save
/// the state as f32.
///
/// Parameters: `moment`: DP_MOMENT_EXP_AVG or DP_MOMENT_EXP_AVG_SQ; `codes`: `codes_len`
/// bytes, read (must equal `len`); `scales`: `scales_len` floats, read (must equal
/// `dp_adam_8bit_scales_len(len)`); `values`: `len` floats, written.
///
/// Returns:
/// - DP_OK: `values` was written;
/// - DP_ERR_NULL_POINTER: a buffer is NULL with its count > 0;
/// - DP_ERR_LENGTH: `codes_len != len`, `scales_len != dp_adam_8bit_scales_len(len)`, a size
///   overflows `isize::MAX` bytes, or an address range wraps;
/// - DP_ERR_INVALID_ARGUMENT: `moment` is not a defined value, `scales` or `values` is
///   misaligned, or a scale is negative or not finite;
/// - DP_ERR_ALIASING: `values` overlaps `codes` or `scales`;
/// - DP_ERR_PANIC: a bug in diagprec.
///
/// On any status but DP_OK no byte of `values` changes.
///
/// Concurrency: any number of threads may call this at once on disjoint outputs.
///
/// # Safety
/// `codes` must be valid for reading `codes_len` bytes, `scales` for reading `scales_len`
/// floats, `values` for writing `len` floats.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_8bit_dequantize_f32(
    moment: u32,
    codes: *const u8,
    codes_len: usize,
    scales: *const f32,
    scales_len: usize,
    values: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        let regions = check_buffers(&[
            buffer("codes", codes, codes_len, false),
            buffer("scales", scales, scales_len, false),
            buffer("values", values, len, true),
        ])?;
        let moment = codec_args(moment, len, codes_len, scales_len)?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned, sized, pairwise disjoint: checked above.
        let (codes, scales, values) = unsafe {
            (
                check::slice(codes, codes_len),
                check::slice(scales, scales_len),
                check::slice_mut(values, len),
            )
        };
        dequantize_state(Isa::detect(), moment, codes, scales, values)
    })
}
