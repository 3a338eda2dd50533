//! # Global gradient norm and the two-pass clipped Adam step
//!
//! **Norm** (multi-tensor, like `torch.nn.utils.clip_grad_norm_` with `norm_type = 2`):
//!
//! ```text
//! norm  = sqrt( sum_tensors sum_i (g_i * inv_grad_scale)^2 )
//! found_inf = any g_i * inv_grad_scale is NaN or +-Inf
//! ```
//!
//! Each gradient is cut into pieces of `BLOCK` (16384) elements. Inside a piece, squares are summed in
//! f32 by four register accumulators over runs of 256 elements, and each run's sum is added to an
//! f64 total (so the f32 rounding never accumulates over more than 256 terms); the pieces' f64
//! totals are combined along a binary tree fixed by the number of pieces. The f64 norm is
//! therefore bitwise identical for any thread count (on a given ISA; ISAs differ in the lane
//! order of the f32 partial sums, by a few f32 ulp of a run's sum).
//!
//! **Two-pass clipped step**: pass 1 is the norm above; if it finds a non-finite value (or the
//! sum of squares overflows), the step fails with [`crate::ErrorKind::NonFinite`] and writes
//! nothing. Otherwise pass 2 is the multi-tensor Adam/AdamW step of [`crate::kernels::adam`] with
//! the gradient factor `inv_grad_scale * clip` folded into its first multiply, where
//! `clip = min(1, max_grad_norm / (norm + 1e-6))` (PyTorch's formula). PyTorch's chain
//! (`scaler.unscale_`, `clip_grad_norm_`, `step`) reads the gradients three to four times and
//! writes them twice; this reads them twice and never writes them. The combined factor is
//! computed in f64 and rounded to f32 once, where PyTorch rounds after each multiply.

use super::adam::{
    adam_step_multi_with, check_step, non_finite_error, AdamConfig, AdamTensor, BLOCK,
};
use super::adam_mixed::{
    adam_step_master_multi_with, check_master_tensors, widen_into, HalfFormat, MasterTensor,
    Rounding,
};
use crate::dispatch::{self, Isa, Par, Split};
use crate::error::{self, Result};
use pulp::{Simd, WithSimd};

/// Elements summed in f32 before the partial sum joins the f64 total.
const RUN: usize = 256;

/// The result of the norm pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradNorm {
    /// The global L2 norm of the unscaled gradients (NaN or infinite when `found_inf`).
    pub norm: f64,
    /// Whether any unscaled gradient value is NaN or infinite.
    pub found_inf: bool,
}

/// The gradient values of a norm pass: f32, or 16-bit bits widened exactly, which give the norm
/// of the widened values, bit for bit.
#[derive(Clone, Copy)]
enum Values<'a> {
    F32(&'a [f32]),
    Half(HalfFormat, &'a [u16]),
}

impl<'a> Values<'a> {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::Half(_, v) => v.len(),
        }
    }

    /// Pieces of at most `block` elements.
    fn pieces(self, block: usize) -> impl Iterator<Item = Values<'a>> {
        let n = self.len();
        (0..n).step_by(block).map(move |start| {
            let end = (start + block).min(n);
            match self {
                Values::F32(v) => Values::F32(&v[start..end]),
                Values::Half(f, v) => Values::Half(f, &v[start..end]),
            }
        })
    }
}

/// The norm scan of one piece (`F16`: 16-bit values are IEEE binary16, else bf16).
struct NormScan<'a, const F16: bool> {
    values: Values<'a>,
    scale: f32,
}

/// `acc + x * x` and `nan_acc + x * 0` for `x = g * scale`.
#[inline(always)]
fn norm_lane<S: Simd>(
    simd: S,
    [acc, nan_acc]: [S::f32s; 2],
    g: S::f32s,
    scale: S::f32s,
) -> [S::f32s; 2] {
    let x = simd.mul_f32s(g, scale);
    [
        simd.mul_add_f32s(x, x, acc),
        simd.mul_add_f32s(x, simd.splat_f32s(0.0), nan_acc),
    ]
}

/// One run's sum of squares (f32, four accumulators) and the running NaN accumulator.
#[inline(always)]
fn run_norm<S: Simd>(simd: S, run: &[f32], scale: S::f32s, nan_acc: S::f32s) -> (f32, S::f32s) {
    let zero = simd.splat_f32s(0.0);
    let (body, tail) = S::as_simd_f32s(run);
    // PERF: four independent accumulators hide the FMA latency.
    let mut acc = [[zero, nan_acc], [zero, zero], [zero, zero], [zero, zero]];
    let (quads, rest) = pulp::as_arrays::<4, _>(body);
    for quad in quads {
        for k in 0..4 {
            acc[k] = norm_lane(simd, acc[k], quad[k], scale);
        }
    }
    for &g in rest {
        acc[0] = norm_lane(simd, acc[0], g, scale);
    }
    // Zero padding adds nothing to either sum: the tail runs the same lane function.
    acc[1] = norm_lane(simd, acc[1], simd.partial_load_f32s(tail), scale);
    let sum = simd.add_f32s(
        simd.add_f32s(acc[0][0], acc[1][0]),
        simd.add_f32s(acc[2][0], acc[3][0]),
    );
    let nan_acc = simd.add_f32s(
        simd.add_f32s(acc[0][1], acc[1][1]),
        simd.add_f32s(acc[2][1], acc[3][1]),
    );
    (simd.reduce_sum_f32s(sum), nan_acc)
}

impl<const F16: bool> WithSimd for NormScan<'_, F16> {
    type Output = (f64, bool);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> (f64, bool) {
        let scale = simd.splat_f32s(self.scale);
        let mut total = 0.0f64;
        let mut nan_acc = simd.splat_f32s(0.0);
        match self.values {
            Values::F32(values) => {
                for run in values.chunks(RUN) {
                    let (sum, acc) = run_norm(simd, run, scale, nan_acc);
                    (total, nan_acc) = (total + sum as f64, acc);
                }
            }
            Values::Half(_, values) => {
                // Each run widened into an L1 buffer, then summed as the f32 runs are.
                let mut buf = [0.0f32; RUN];
                for run in values.chunks(RUN) {
                    let wide = &mut buf[..run.len()];
                    widen_into::<S, F16>(simd, run, wide);
                    let (sum, acc) = run_norm(simd, wide, scale, nan_acc);
                    (total, nan_acc) = (total + sum as f64, acc);
                }
            }
        }
        (total, simd.reduce_sum_f32s(nan_acc) == 0.0)
    }
}

/// The sum of squares and finiteness of one piece, on the calling thread.
fn norm_of_piece(isa: Isa, values: Values<'_>, scale: f32) -> (f64, bool) {
    match values {
        Values::Half(HalfFormat::F16, _) => isa.run(NormScan::<true> { values, scale }),
        _ => isa.run(NormScan::<false> { values, scale }),
    }
}

/// A list of gradient pieces, split by piece count.
struct Pieces<'a>(&'a [Values<'a>]);

impl Split for Pieces<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (a, b) = self.0.split_at(mid);
        (Pieces(a), Pieces(b))
    }
}

/// The global L2 norm of `grads * inv_grad_scale` and whether any value is non-finite, on the
/// best instruction set and the crate's pool. `inv_grad_scale` must be finite and > 0.
pub fn grad_norm_multi(grads: &[&[f32]], inv_grad_scale: f64) -> Result<GradNorm> {
    grad_norm_multi_with(Isa::detect(), Par::Pool, grads, inv_grad_scale)
}

/// [`grad_norm_multi`] on a chosen instruction set and parallelism.
pub fn grad_norm_multi_with(
    isa: Isa,
    par: Par,
    grads: &[&[f32]],
    inv_grad_scale: f64,
) -> Result<GradNorm> {
    check_inv_grad_scale(inv_grad_scale)?;
    let grads = grads.iter().map(|&g| Values::F32(g));
    norm_pass(isa, par, grads, inv_grad_scale as f32)
}

/// [`grad_norm_multi`] of 16-bit gradients (bits of `format`): bitwise the norm of the widened
/// values.
pub fn grad_norm_multi_half(
    format: HalfFormat,
    grads: &[&[u16]],
    inv_grad_scale: f64,
) -> Result<GradNorm> {
    grad_norm_multi_half_with(Isa::detect(), Par::Pool, format, grads, inv_grad_scale)
}

/// [`grad_norm_multi_half`] on a chosen instruction set and parallelism.
pub fn grad_norm_multi_half_with(
    isa: Isa,
    par: Par,
    format: HalfFormat,
    grads: &[&[u16]],
    inv_grad_scale: f64,
) -> Result<GradNorm> {
    check_inv_grad_scale(inv_grad_scale)?;
    let grads = grads.iter().map(|&g| Values::Half(format, g));
    norm_pass(isa, par, grads, inv_grad_scale as f32)
}

fn norm_pass<'a>(
    isa: Isa,
    par: Par,
    grads: impl Iterator<Item = Values<'a>>,
    scale: f32,
) -> Result<GradNorm> {
    let pieces: Vec<Values<'_>> = grads.flat_map(|g| g.pieces(BLOCK)).collect();
    let (sum, finite) = dispatch::map_reduce_blocks(
        par,
        Pieces(&pieces),
        1,
        &|Pieces(list)| {
            list.iter().fold((0.0, true), |(s, f), &values| {
                let (s2, f2) = norm_of_piece(isa, values, scale);
                (s + s2, f && f2)
            })
        },
        &|a, b| (a.0 + b.0, a.1 && b.1),
    )?;
    Ok(GradNorm {
        norm: sum.sqrt(),
        found_inf: !finite,
    })
}

/// PyTorch's clip coefficient: `min(1, max_grad_norm / (norm + 1e-6))`.
pub fn clip_coefficient(norm: f64, max_grad_norm: f64) -> f64 {
    (max_grad_norm / (norm + 1e-6)).min(1.0)
}

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

/// Checks `inv_grad_scale`: finite and > 0, and so as the f32 factor the kernels multiply by
/// (1e39 would round to infinity, 1e-46 to zero).
pub(crate) fn check_inv_grad_scale(inv_grad_scale: f64) -> Result<()> {
    error::check_positive("inv_grad_scale", inv_grad_scale)?;
    error::check_f32("inv_grad_scale", inv_grad_scale, true)
}

/// Checks `max_grad_norm > 0` (and not NaN; infinity means no clipping).
pub(crate) fn check_max_grad_norm(max_grad_norm: f64) -> Result<()> {
    if max_grad_norm > 0.0 {
        Ok(())
    } else {
        Err(crate::Error::hyperparameter(format!(
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
    cfg.validate()?;
    check_step(step)?;
    check_max_grad_norm(max_grad_norm)?;
    for (i, t) in tensors.iter().enumerate() {
        t.check(cfg, Some(i))?;
    }
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
    let clip = clip_coefficient(norm.norm, max_grad_norm);
    let folded = AdamConfig {
        inv_grad_scale: cfg.inv_grad_scale * clip,
        check_finite: false,
        ..*cfg
    };
    if folded.inv_grad_scale <= 0.0 {
        // max_grad_norm / norm underflowed: the clipped gradient is zero to f64 precision.
        return Err(crate::Error::hyperparameter(
            "the clip factor underflows to 0 (max_grad_norm / norm below 1e-308)",
        ));
    }
    Ok((folded, norm.norm))
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

struct Scale<'a> {
    values: &'a mut [f32],
    factor: f32,
}

impl WithSimd for Scale<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let factor = simd.splat_f32s(self.factor);
        let (body, tail) = S::as_mut_simd_f32s(self.values);
        for x in body {
            *x = simd.mul_f32s(*x, factor);
        }
        if !tail.is_empty() {
            let x = simd.mul_f32s(simd.partial_load_f32s(tail), factor);
            simd.partial_store_f32s(tail, x);
        }
    }
}

/// `values *= factor` in place (an in-place unscale or clip: the building block of the unfused
/// sequence the report compares the two-pass step with).
pub fn scale_in_place(isa: Isa, par: Par, values: &mut [f32], factor: f32) -> Result<()> {
    struct Values<'a>(&'a mut [f32]);
    impl Split for Values<'_> {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn split_at(self, mid: usize) -> (Self, Self) {
            let (a, b) = self.0.split_at_mut(mid);
            (Values(a), Values(b))
        }
    }
    dispatch::map_reduce_blocks(
        par,
        Values(values),
        BLOCK,
        &|Values(values)| isa.run(Scale { values, factor }),
        &|(), ()| (),
    )
}
