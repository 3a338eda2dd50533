//! # Scaling in place (f32)
//!
//! ```text
//! x <- x * factor
//! ```
//!
//! One f32 multiply per element, the same on every instruction set (bitwise identical results).
//! Used for an in-place unscale or clip ([`crate::scale_in_place`]), the decoupled weight decay
//! of the rotated optimizers, and `h *= beta` before the GN layer kernels accumulate into `h`.
//! **Storage**: a contiguous f32 slice, any alignment.

use crate::dispatch::Isa;
use pulp::{Simd, WithSimd};

/// `x * factor` (the lane function of [`Scale`], body and tail).
#[inline(always)]
fn scale_lane<S: Simd>(simd: S, x: S::f32s, factor: S::f32s) -> S::f32s {
    simd.mul_f32s(x, factor)
}

/// `x *= factor` over one slice.
struct Scale<'a> {
    x: &'a mut [f32],
    factor: f32,
}

impl WithSimd for Scale<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let factor = simd.splat_f32s(self.factor);
        let (body, tail) = S::as_mut_simd_f32s(self.x);
        for x in body {
            *x = scale_lane(simd, *x, factor);
        }
        if !tail.is_empty() {
            let x = scale_lane(simd, simd.partial_load_f32s(tail), factor);
            simd.partial_store_f32s(tail, x);
        }
    }
}

/// `x *= factor` on the calling thread.
pub(crate) fn scale(isa: Isa, x: &mut [f32], factor: f32) {
    isa.run(Scale { x, factor })
}
