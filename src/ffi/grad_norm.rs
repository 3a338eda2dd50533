//! Sharded training (ZeRO stage 1, see `examples/mpi`): the pieces of the global gradient norm
//! that ranks holding different shards of the gradients combine, so that the clipped step of
//! every shard is bitwise that of one process's `dp_adam_step_clipped_multi_f32`.
//!
//! The recipe, per step: each rank calls `dp_grad_norm_partials_f32` on its shard (one f64
//! per piece of `dp_grad_norm_piece_len()` elements); the ranks allgather the partials in the
//! order of the whole tensor list (`MPI_Allgatherv`); each calls `dp_grad_norm_combine` on the
//! full list (the same norm on every rank, bitwise that of `dp_grad_norm_multi_f32` over all
//! tensors) and `dp_grad_norm_clip_coefficient`; then each steps its shard with
//! `dp_adam_step_multi_f32`, its config's `inv_grad_scale` multiplied by the coefficient (in
//! double) and `check_finite = 0`, which is what `dp_adam_step_clipped_multi_f32` runs as its
//! second pass. A shard may cut a tensor only at a multiple of `dp_grad_norm_piece_len()`
//! elements from the tensor's start.

use super::adam::dp_adam_tensor_f32;
use super::check::{self, buffer};
use super::{dp_status, guard};
use crate::error::{Error, ErrorKind};
use crate::kernels::adam::clipped::check_max_grad_norm;
use crate::kernels::grad_norm::{
    clip_coefficient, grad_norm_combine, grad_norm_partials, grad_norm_piece_count,
    grad_norm_piece_len,
};

/// The number of elements in a piece of the gradient norm (16384): every gradient is cut into
/// pieces of this length from its first element (the last piece shorter). Never fails.
///
/// Concurrency: any number of threads may call this at once.
#[no_mangle]
pub extern "C" fn dp_grad_norm_piece_len() -> usize {
    grad_norm_piece_len()
}

/// The number of norm pieces of a gradient of `len` elements: `ceil(len / 16384)` (0 for an
/// empty one). Never fails.
///
/// Concurrency: any number of threads may call this at once.
#[no_mangle]
pub extern "C" fn dp_grad_norm_piece_count(len: usize) -> usize {
    grad_norm_piece_count(len)
}

/// The partial sums of squares of `grad * inv_grad_scale`, one double per norm piece, for the
/// tensors of a shard (only `grad` and `len` are read; the other fields may be NULL), written
/// to `partials` in the list's order (each tensor's pieces in turn), exactly as
/// `dp_grad_norm_multi_f32` computes them. Combined over every shard in the order of the whole
/// list by `dp_grad_norm_combine`, they give `dp_grad_norm_multi_f32`'s norm bit for bit, for
/// any thread count (on one instruction set: run every rank on the same kind of CPU).
///
/// Parameters: `tensors`: `count` entries (NULL with count 0: an empty list); `inv_grad_scale`:
/// finite, > 0, finite as a float; `partials`: `partials_len` doubles, which must equal the sum
/// of `dp_grad_norm_piece_count(tensors[i].len)`; `found_inf_out`: set to 1 when a scaled value
/// is NaN or infinite, else 0 (may be NULL).
///
/// Returns: DP_OK; DP_ERR_NULL_POINTER (a NULL list, grad or partials with a nonzero count);
/// DP_ERR_LENGTH (a size overflow or wrap, or `partials_len` not the piece count);
/// DP_ERR_INVALID_ARGUMENT (a misaligned pointer); DP_ERR_INVALID_HYPERPARAMETER
/// (`inv_grad_scale`); DP_ERR_ALIASING (`partials` or `found_inf_out` overlaps a gradient or
/// each other); DP_ERR_ALLOCATION; DP_ERR_PANIC. On any status but DP_OK nothing is written.
///
/// Concurrency: any number of threads may call this at once with distinct outputs.
///
/// # Safety
/// `tensors` must be valid for `count` entries, each `grad` valid for reads of `len` floats;
/// `partials` valid for `partials_len` writes; `found_inf_out`, when non-NULL, for one write.
#[no_mangle]
pub unsafe extern "C" fn dp_grad_norm_partials_f32(
    tensors: *const dp_adam_tensor_f32,
    count: usize,
    inv_grad_scale: f64,
    partials: *mut f64,
    partials_len: usize,
    found_inf_out: *mut u32,
) -> dp_status {
    guard(|| {
        // SAFETY: `tensors` is valid for `count` entries (the caller's contract).
        let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 1, 2)? };
        for (i, t) in list.iter().enumerate() {
            check::check_tensor_buffers(
                Some(i),
                &[buffer("grad", t.grad, t.len, false)],
                &mut regions,
            )?;
        }
        let mut outputs = vec![buffer(
            "partials",
            partials.cast_const(),
            partials_len,
            true,
        )];
        if !found_inf_out.is_null() {
            outputs.push(buffer("found_inf_out", found_inf_out.cast_const(), 1, true));
        }
        regions.extend(check::check_buffers(&outputs)?);
        let need = list
            .iter()
            .try_fold(0usize, |n, t| n.checked_add(grad_norm_piece_count(t.len)))
            .ok_or_else(|| Error::length("the piece count overflows"))?;
        check::exact_len("partials_len", partials_len, need)?;
        crate::error::check_positive("inv_grad_scale", inv_grad_scale)?;
        crate::error::check_f32("inv_grad_scale", inv_grad_scale, true)?;
        check::disjoint(regions)?;
        let grads: Vec<&[f32]> = list
            .iter()
            // SAFETY: each gradient passed the buffer checks above; reads only.
            .map(|t| unsafe { check::slice(t.grad, t.len) })
            .collect();
        // SAFETY: `partials` is non-null (or empty), aligned, sized and disjoint from the
        // gradients and `found_inf_out` (checked above).
        let out = unsafe { check::slice_mut(partials, partials_len) };
        let found_inf = grad_norm_partials(&grads, inv_grad_scale, out)?;
        if !found_inf_out.is_null() {
            // SAFETY: non-null, aligned and disjoint (checked above).
            unsafe { check::write(found_inf_out, u32::from(found_inf)) };
        }
        Ok(())
    })
}

/// The global gradient norm from the partial sums of squares of every shard
/// (`dp_grad_norm_partials_f32`), gathered in the order of the whole tensor list: the square
/// root of their sum along the library's fixed binary tree (fixed by `partials_len` alone),
/// bitwise the norm `dp_grad_norm_multi_f32` returns for the whole list. A NaN or infinite
/// partial gives a NaN or infinite norm (not an error: `found_inf_out` of the partials tells).
///
/// Parameters: `partials`: `partials_len` doubles (NULL with 0: the norm is 0); `norm_out`:
/// one double, written on success.
///
/// Returns: DP_OK; DP_ERR_NULL_POINTER (`norm_out`, or `partials` with a nonzero count);
/// DP_ERR_LENGTH (size overflow or wrap); DP_ERR_INVALID_ARGUMENT (misaligned);
/// DP_ERR_ALIASING (`norm_out` inside `partials`); DP_ERR_PANIC. On any status but DP_OK
/// `*norm_out` is unchanged.
///
/// Concurrency: any number of threads may call this at once with distinct outputs.
///
/// # Safety
/// `partials` valid for reads of `partials_len` doubles; `norm_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn dp_grad_norm_combine(
    partials: *const f64,
    partials_len: usize,
    norm_out: *mut f64,
) -> dp_status {
    guard(|| {
        check::required("norm_out", norm_out)?;
        let regions = check::check_buffers(&[
            buffer("partials", partials, partials_len, false),
            buffer("norm_out", norm_out.cast_const(), 1, true),
        ])?;
        check::disjoint(regions)?;
        // SAFETY: non-null (or empty), aligned and sized: checked above; reads only.
        let norm = grad_norm_combine(unsafe { check::slice(partials, partials_len) });
        // SAFETY: non-null, aligned, disjoint from `partials` (checked above).
        unsafe { check::write(norm_out, norm) };
        Ok(())
    })
}

/// The clip coefficient of `dp_adam_step_clipped_multi_f32`, PyTorch's
/// `min(1, max_grad_norm / (norm + 1e-6))`, for a global norm computed by
/// `dp_grad_norm_combine`. Stepping a shard with `dp_adam_step_multi_f32` with
/// `cfg.inv_grad_scale * clip` (multiplied in double) and `cfg.check_finite = 0` is bitwise
/// what `dp_adam_step_clipped_multi_f32` does to those elements.
///
/// Parameters: `norm`: finite, >= 0; `max_grad_norm`: > 0 (INFINITY: no clipping, the
/// coefficient is 1); `clip_out`: one double, written on success.
///
/// Returns: DP_OK; DP_ERR_NULL_POINTER (`clip_out`); DP_ERR_INVALID_ARGUMENT (misaligned
/// `clip_out`); DP_ERR_NON_FINITE (`norm` NaN or infinite: the gradients hold NaN/Inf, skip the
/// step as `dp_adam_step_clipped_multi_f32` would); DP_ERR_INVALID_HYPERPARAMETER (`norm < 0`,
/// `max_grad_norm` not > 0, or a coefficient that underflows to 0); DP_ERR_PANIC. On any status
/// but DP_OK `*clip_out` is unchanged.
///
/// Concurrency: any number of threads may call this at once with distinct outputs.
///
/// # Safety
/// `clip_out` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn dp_grad_norm_clip_coefficient(
    norm: f64,
    max_grad_norm: f64,
    clip_out: *mut f64,
) -> dp_status {
    guard(|| {
        check::required("clip_out", clip_out)?;
        check::size_and_alignment("clip_out", clip_out.cast_const(), 1)?;
        check_max_grad_norm(max_grad_norm)?;
        if !norm.is_finite() {
            return Err(Error::new(
                ErrorKind::NonFinite,
                format!("norm = {norm}: the gradients hold NaN or Inf"),
            ));
        }
        if norm < 0.0 {
            return Err(Error::hyperparameter(format!("norm = {norm} must be >= 0")));
        }
        let clip = clip_coefficient(norm, max_grad_norm);
        if clip <= 0.0 {
            return Err(Error::hyperparameter(
                "the clip factor underflows to 0 (max_grad_norm / norm below 1e-308)",
            ));
        }
        // SAFETY: non-null and aligned (checked above).
        unsafe { check::write(clip_out, clip) };
        Ok(())
    })
}
