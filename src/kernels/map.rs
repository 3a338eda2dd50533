//! # Element-wise maps (f32)
//!
//! ```text
//! y_i = f(x_i)        into another slice, or in place
//! ```
//!
//! One kernel for every element-wise pass that is not a family's own fused step: scaling
//! (`x *= factor`: an in-place unscale or clip, [`crate::scale_in_place`]; the decoupled weight
//! decay of the rotated optimizers; `h *= beta` before the GN layer kernels accumulate into `h`),
//! and the GN diagonals' squares and logistic weights. A map is a [`Lane`]: its lane function
//! runs on whole registers and, masked, on the tail, so every element gets the same arithmetic
//! (bitwise identical results on every instruction set when the lane is).
//!
//! **Storage**: contiguous f32 slices, any alignment; `x` and `out` equally long.
//!
//! **Reference**: the lane's formula itself (`x * factor` is one f32 multiply).

use crate::dispatch::Isa;
use pulp::{Simd, WithSimd};

/// The function of a map, on one register.
pub(crate) trait Lane: Copy {
    /// `f(x)` lane by lane.
    fn lane<S: Simd>(self, simd: S, x: S::f32s) -> S::f32s;
}

/// `x * factor`.
#[derive(Clone, Copy)]
pub(crate) struct Scale(pub f32);

impl Lane for Scale {
    #[inline(always)]
    fn lane<S: Simd>(self, simd: S, x: S::f32s) -> S::f32s {
        simd.mul_f32s(x, simd.splat_f32s(self.0))
    }
}

/// `x <- f(x)` over one slice.
struct InPlace<'a, L> {
    x: &'a mut [f32],
    f: L,
}

impl<L: Lane> WithSimd for InPlace<'_, L> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (body, tail) = S::as_mut_simd_f32s(self.x);
        for x in body {
            *x = self.f.lane(simd, *x);
        }
        if !tail.is_empty() {
            let x = self.f.lane(simd, simd.partial_load_f32s(tail));
            simd.partial_store_f32s(tail, x);
        }
    }
}

/// `out <- f(x)` over two equally long slices.
struct Into<'a, L> {
    x: &'a [f32],
    out: &'a mut [f32],
    f: L,
}

impl<L: Lane> WithSimd for Into<'_, L> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (xb, xt) = S::as_simd_f32s(self.x);
        let (ob, ot) = S::as_mut_simd_f32s(self.out);
        for (o, &x) in ob.iter_mut().zip(xb) {
            *o = self.f.lane(simd, x);
        }
        if !ot.is_empty() {
            simd.partial_store_f32s(ot, self.f.lane(simd, simd.partial_load_f32s(xt)));
        }
    }
}

/// `x <- f(x)` on the calling thread.
pub(crate) fn map_in_place<L: Lane>(isa: Isa, x: &mut [f32], f: L) {
    isa.run(InPlace { x, f })
}

/// `out <- f(x)` on the calling thread; `x` and `out` must be equally long.
pub(crate) fn map_into<L: Lane>(isa: Isa, x: &[f32], out: &mut [f32], f: L) {
    debug_assert_eq!(x.len(), out.len());
    isa.run(Into { x, out, f })
}

/// `x *= factor` on the calling thread.
pub(crate) fn scale(isa: Isa, x: &mut [f32], factor: f32) {
    map_in_place(isa, x, Scale(factor))
}
