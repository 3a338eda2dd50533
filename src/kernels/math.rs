//! # Vectorised transcendental functions (f32 lanes)
//!
//! `exp(x)` and `x^p` written once over pulp's SIMD types, for the hot loops of the softmax
//! factors, the logistic weights and the general-power GN step: no libm call per element.
//!
//! ```text
//! exp(x):  n = round(x log2 e),  r = x - n ln2 (two FMAs, Cody-Waite),
//!          exp(x) = (1 + r + r^2 P(r)) * 2^(n1) * 2^(n - n1)     (n1 = round(n / 2))
//! x^p:     x = 2^e m (m in (sqrt(1/2), sqrt(2)]),  l = log2 m from ln(1 + f), f = m - 1,
//!          t = p (e + l) carried as an f32 pair (t_hi, t_lo),  n = round(t_hi),
//!          x^p = exp((t_hi - n + t_lo) ln 2) * 2^n
//! ```
//!
//! The reduction of `x` is integer arithmetic on its bits (one carry into the exponent field
//! picks the binade around `sqrt 2`, no compare or select). The scale `2^n` is applied as two
//! exact powers of two, so results that are subnormal are rounded once (gradual underflow is
//! right) and overflow gives +inf. On AVX-512 the rounding to an integer and the scale are one
//! instruction each (`vrndscaleps`, `vscalefps`) with the same results. `P` are Cephes' minimax
//! coefficients; every step is an IEEE operation or a fused multiply-add in a fixed order, so the
//! result is bitwise the same on every instruction set (scalar, AVX2, AVX-512).
//!
//! **Accuracy** (against the correctly rounded f64 value, tested in `tests/math.rs` on every
//! instruction set over all exponents, subnormal results, +-0, +-inf and NaN):
//!
//! | function | bound |
//! | --- | --- |
//! | `exp` ([`exp_with`]) | 2 ulp (normal results); subnormal results within 1 ulp of the smallest subnormal |
//! | `x^p` ([`powf_with`]), `x >= 0` | `2 + abs(p) / 2` ulp (normal results) |
//!
//! Special values: `exp(NaN) = NaN`, `exp(+inf) = +inf`, `exp(-inf) = 0`; `x^p` for `x = NaN`
//! or `x < 0` is NaN, `+-0^p` and `inf^p` are those of IEEE `pow` at `+0` and `+inf`
//! (`0^p = +inf` for `p < 0`), `x^0 = 1` for every other `x`.
//!
//! The slice functions [`exp_with`] and [`powf_with`] run the lane functions over slices (body
//! and masked tail alike); they are the entry points the tests measure.

use crate::dispatch::Isa;
use crate::error::{Error, Result};
use pulp::{Simd, WithSimd};

/// `1.5 * 2^23`: adding it to a float of magnitude below `2^22` rounds it to an integer
/// (ties to even), which then sits in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n * LN2_HI` is exact for `|n| < 2^15`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const LN2: f32 = std::f32::consts::LN_2;
/// Cephes `expf` coefficients, highest first: `exp(r) = 1 + r + r^2 P(r)` on `|r| <= ln2 / 2`.
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];
/// Cephes `logf` coefficients, highest first: `ln(1 + f) = f - f^2 / 2 + f^3 Q(f)`.
const LOG_Q: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];

/// Added to the bits of a positive normal `x` in the logarithm's reduction: the mantissa bits
/// of `sqrt 2` (as f32) plus one, subtracted from `2^23`, so a mantissa above that of `sqrt 2`
/// carries into the exponent field.
const SPLIT: u32 = 0x0080_0000 - (std::f32::consts::SQRT_2.to_bits() & 0x007f_ffff) - 1;
/// The bits of the smallest reduced `m`: `SPLIT` less than those of 1.0, i.e. the f32 above
/// `sqrt 2` halved.
const SPLIT_LOW: u32 = 0x3f80_0000 - SPLIT;

/// `k` rounded to an integer (ties to even) for `|k| < 2^22`.
#[inline(always)]
fn round_int<S: Simd>(simd: S, k: S::f32s) -> S::f32s {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let Some(y) = avx512::map(simd, [k], |v4, [k]| {
        // vrndscaleps, nearest even (the same integer; -0 for small negative k, which every
        // caller only adds, subtracts or scales).
        pulp::cast(v4.avx512f._mm512_roundscale_ps::<0>(pulp::cast(k)))
    }) {
        return y;
    }
    let magic = simd.splat_f32s(ROUND_MAGIC);
    simd.sub_f32s(simd.add_f32s(k, magic), magic)
}

/// `2^k` for an integer-valued `k` in `[-126, 127]`: the biased exponent placed in the bits.
#[inline(always)]
fn pow2_int<S: Simd>(simd: S, k: S::f32s) -> S::f32s {
    // k + 1.5 * 2^23 + 127 holds k + 127 in its low mantissa bits; shifting them into the
    // exponent field drops everything above.
    let biased = simd.add_f32s(k, simd.splat_f32s(ROUND_MAGIC + 127.0));
    let bits = simd.wrapping_dyn_shl_u32s(simd.transmute_u32s_f32s(biased), simd.splat_u32s(23));
    simd.transmute_f32s_u32s(bits)
}

/// `y * 2^n` for an integer-valued `n` in `[-252, 252]`, rounded once: `2^n` as two exact
/// powers of two, so a subnormal or overflowing result is rounded only by the last product.
#[inline(always)]
fn scale_pow2<S: Simd>(simd: S, y: S::f32s, n: S::f32s) -> S::f32s {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let Some(r) = avx512::scale(simd, y, n) {
        return r;
    }
    let n1 = round_int(simd, simd.mul_f32s(n, simd.splat_f32s(0.5)));
    let n2 = simd.sub_f32s(n, n1);
    simd.mul_f32s(simd.mul_f32s(y, pow2_int(simd, n1)), pow2_int(simd, n2))
}

/// `exp(r)` for `|r| <= ln2 / 2` (a little more is fine), Horner with FMAs.
#[inline(always)]
fn exp_poly<S: Simd>(simd: S, r: S::f32s) -> S::f32s {
    let mut q = simd.splat_f32s(EXP_P[0]);
    for &c in &EXP_P[1..] {
        q = simd.mul_add_f32s(q, r, simd.splat_f32s(c));
    }
    let r2 = simd.mul_f32s(r, r);
    simd.add_f32s(simd.mul_add_f32s(r2, q, r), simd.splat_f32s(1.0))
}

/// `exp(hi + lo)` per lane, for a pair with `|lo| <= ulp(hi) / 2` (pass `lo = 0` for plain
/// `exp`): the low part joins the reduced argument, so `exp` of an exactly represented
/// difference keeps its accuracy. NaN in `hi` gives NaN.
#[inline(always)]
pub(crate) fn exp_sum_lane<S: Simd>(simd: S, hi: S::f32s, lo: S::f32s) -> S::f32s {
    // Past these bounds the result is +inf or 0 anyway; clamping keeps n in range. NaN is
    // restored below (min/max treat NaN differently per ISA).
    let x = simd.min_f32s(
        simd.max_f32s(hi, simd.splat_f32s(-110.0)),
        simd.splat_f32s(89.0),
    );
    let n = round_int(simd, simd.mul_f32s(x, simd.splat_f32s(LOG2_E)));
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_HI), x);
    let r = simd.mul_add_f32s(n, simd.splat_f32s(-LN2_LO), r);
    let r = simd.add_f32s(r, lo);
    let y = scale_pow2(simd, exp_poly(simd, r), n);
    simd.select_f32s(simd.equal_f32s(hi, hi), y, hi)
}

/// `exp(x)` per lane (see the module's accuracy table).
#[inline(always)]
pub(crate) fn exp_lane<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    exp_sum_lane(simd, x, simd.splat_f32s(0.0))
}

/// The exponent `p` of [`pow_lane`] as an f32 pair (`hi + lo` carries an f64 `p` to 48 bits),
/// with the results of the special inputs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Power {
    hi: f32,
    lo: f32,
    at_zero: f32,
    at_inf: f32,
}

impl Power {
    /// `p` must be finite.
    pub(crate) fn new(p: f64) -> Self {
        let hi = p as f32;
        let lo = (p - hi as f64) as f32;
        Self {
            hi,
            lo,
            at_zero: 0f64.powf(p) as f32,
            at_inf: f64::INFINITY.powf(p) as f32,
        }
    }
}

/// The splatted form of [`Power`].
#[derive(Clone, Copy)]
pub(crate) struct PowerLanes<S: Simd> {
    hi: S::f32s,
    lo: S::f32s,
    at_zero: S::f32s,
    at_inf: S::f32s,
}

impl<S: Simd> PowerLanes<S> {
    #[inline(always)]
    pub(crate) fn new(simd: S, p: &Power) -> Self {
        Self {
            hi: simd.splat_f32s(p.hi),
            lo: simd.splat_f32s(p.lo),
            at_zero: simd.splat_f32s(p.at_zero),
            at_inf: simd.splat_f32s(p.at_inf),
        }
    }
}

/// `x^p` per lane for `x >= 0` (see the module's accuracy table).
#[inline(always)]
pub(crate) fn pow_lane<S: Simd>(simd: S, x: S::f32s, p: &PowerLanes<S>) -> S::f32s {
    pow_lane_range::<S, true>(simd, x, p)
}

/// The largest `|p|` for which [`pow_positive_lane`] is exact: `|p log2 x| <= 125` for every
/// normal `x`, so `2^n` is one normal power of two.
pub(crate) const POSITIVE_LANE_MAX_POWER: f64 = 0.97;

/// [`pow_lane`] for `x` that is NaN, +inf or at least `f32::MIN_POSITIVE` (never 0, subnormal
/// or negative), and `|p| <= POSITIVE_LANE_MAX_POWER`: the same bits as [`pow_lane`] for those
/// inputs, with the subnormal, zero and range paths left out (about a fifth of the
/// instructions). The GN step's `max(h, 0) + lambda` with a normal `lambda` qualifies.
#[inline(always)]
pub(crate) fn pow_positive_lane<S: Simd>(simd: S, x: S::f32s, p: &PowerLanes<S>) -> S::f32s {
    pow_lane_range::<S, false>(simd, x, p)
}

#[inline(always)]
fn pow_lane_range<S: Simd, const FULL_RANGE: bool>(
    simd: S,
    x: S::f32s,
    p: &PowerLanes<S>,
) -> S::f32s {
    let zero = simd.splat_f32s(0.0);
    let one = simd.splat_f32s(1.0);
    // Subnormal x: scale by 2^24 into the normal range, take 24 off the exponent.
    let tiny = simd.less_than_f32s(x, simd.splat_f32s(f32::MIN_POSITIVE));
    let xs = if FULL_RANGE {
        simd.select_f32s(tiny, simd.mul_f32s(x, simd.splat_f32s(16_777_216.0)), x)
    } else {
        x
    };
    // x = 2^e m with m in (sqrt(1/2), sqrt 2]: adding SPLIT carries a mantissa above that of
    // sqrt 2 into the exponent field; the low 23 bits plus the bits of the smallest such m give
    // m (halved where the carry happened), the high bits e + 127 (one more where it happened).
    let bits = simd.add_u32s(simd.transmute_u32s_f32s(xs), simd.splat_u32s(SPLIT));
    let m = simd.transmute_f32s_u32s(simd.add_u32s(
        simd.and_u32s(bits, simd.splat_u32s(0x007f_ffff)),
        simd.splat_u32s(SPLIT_LOW),
    ));
    // e as a float (exact): the biased exponent in the low bits of 1.5 * 2^23, less the bias.
    let exp_bits = simd.wrapping_dyn_shr_u32s(bits, simd.splat_u32s(23));
    let e = simd.sub_f32s(
        simd.transmute_f32s_u32s(simd.add_u32s(exp_bits, simd.splat_u32s(0x4b40_0000))),
        simd.splat_f32s(ROUND_MAGIC + 127.0),
    );
    let e = if FULL_RANGE {
        simd.select_f32s(tiny, simd.sub_f32s(e, simd.splat_f32s(24.0)), e)
    } else {
        e
    };
    let f = simd.sub_f32s(m, one);
    // ln(1 + f) = f - f^2 / 2 + f^3 Q(f), then log2 m = ln(1 + f) log2 e.
    let mut q = simd.splat_f32s(LOG_Q[0]);
    for &c in &LOG_Q[1..] {
        q = simd.mul_add_f32s(q, f, simd.splat_f32s(c));
    }
    let f2 = simd.mul_f32s(f, f);
    let tail = simd.mul_add_f32s(
        simd.mul_f32s(f2, f),
        q,
        simd.mul_f32s(simd.splat_f32s(-0.5), f2),
    );
    let ln_m = simd.add_f32s(f, tail);
    let l = simd.mul_f32s(ln_m, simd.splat_f32s(LOG2_E));
    // t = p (e + l) as t_hi + t_lo: p_hi e exactly (two-product), the small terms added once.
    let a_hi = simd.mul_f32s(p.hi, e);
    let a_lo = simd.mul_add_f32s(p.hi, e, simd.neg_f32s(a_hi));
    let b = simd.mul_add_f32s(p.hi, l, simd.mul_f32s(p.lo, simd.add_f32s(e, l)));
    // |a_hi| >= |b| whenever e != 0 (and a_hi = 0 otherwise): Fast2Sum is exact.
    let t_hi = simd.add_f32s(a_hi, b);
    let t_lo = simd.add_f32s(simd.add_f32s(simd.sub_f32s(a_hi, t_hi), b), a_lo);
    let t_hi = if FULL_RANGE {
        simd.min_f32s(
            simd.max_f32s(t_hi, simd.splat_f32s(-200.0)),
            simd.splat_f32s(200.0),
        )
    } else {
        t_hi
    };
    // Special inputs, last: 0, +inf, NaN or negative (NaN).
    let finish = |y: S::f32s| {
        let y = if FULL_RANGE {
            simd.select_f32s(simd.equal_f32s(x, zero), p.at_zero, y)
        } else {
            y
        };
        let y = simd.select_f32s(
            simd.equal_f32s(x, simd.splat_f32s(f32::INFINITY)),
            p.at_inf,
            y,
        );
        let valid = simd.greater_than_or_equal_f32s(x, zero);
        simd.select_f32s(valid, y, simd.splat_f32s(f32::NAN))
    };
    let n = round_int(simd, t_hi);
    let r = simd.mul_f32s(
        simd.add_f32s(simd.sub_f32s(t_hi, n), t_lo),
        simd.splat_f32s(LN2),
    );
    let y = if FULL_RANGE {
        scale_pow2(simd, exp_poly(simd, r), n)
    } else {
        // n in [-126, 125]: one power of two, the product rounded once as in scale_pow2.
        let y = exp_poly(simd, r);
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        if let Some(r) = avx512::scale(simd, y, n) {
            return finish(r);
        }
        simd.mul_f32s(y, pow2_int(simd, n))
    };
    finish(y)
}

/// AVX-512 forms of the exact steps above (rounding to an integer, scaling by a power of two):
/// one instruction each, the same bits as the portable sequences. Picked by comparing `S` with
/// pulp's AVX-512 backend, which the compiler resolves per instantiation.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
mod avx512 {
    use pulp::x86::V4;
    use pulp::{f32x16, Simd};
    use std::any::Any;

    /// `f(args)` when `S` is [`V4`], else `None`.
    #[inline(always)]
    pub(super) fn map<S: Simd, const N: usize>(
        simd: S,
        args: [S::f32s; N],
        f: impl FnOnce(V4, [f32x16; N]) -> f32x16,
    ) -> Option<S::f32s> {
        let v4 = *(&simd as &dyn Any).downcast_ref::<V4>()?;
        let args = *(&args as &dyn Any).downcast_ref::<[f32x16; N]>()?;
        (&f(v4, args) as &dyn Any)
            .downcast_ref::<S::f32s>()
            .copied()
    }

    /// `y * 2^n` for an integer-valued `n`, rounded once (vscalefps): the value of
    /// `scale_pow2`, subnormal and overflowing results included.
    #[inline(always)]
    pub(super) fn scale<S: Simd>(simd: S, y: S::f32s, n: S::f32s) -> Option<S::f32s> {
        map(simd, [y, n], |v4, [y, n]| {
            pulp::cast(v4.avx512f._mm512_scalef_ps(pulp::cast(y), pulp::cast(n)))
        })
    }
}

/// Which function [`MapSlice`] applies.
#[derive(Clone, Copy)]
enum Function {
    Exp,
    Pow(Power),
}

/// `out[i] = f(x[i])`: body and masked tail run the same lane function.
struct MapSlice<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    function: Function,
}

impl WithSimd for MapSlice<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (xb, xt) = S::as_simd_f32s(self.x);
        let (ob, ot) = S::as_mut_simd_f32s(self.out);
        let xb = &xb[..ob.len()];
        match self.function {
            Function::Exp => {
                for (o, &x) in ob.iter_mut().zip(xb) {
                    *o = exp_lane(simd, x);
                }
                if !ot.is_empty() {
                    simd.partial_store_f32s(ot, exp_lane(simd, simd.partial_load_f32s(xt)));
                }
            }
            Function::Pow(p) => {
                let p = PowerLanes::new(simd, &p);
                for (o, &x) in ob.iter_mut().zip(xb) {
                    *o = pow_lane(simd, x, &p);
                }
                if !ot.is_empty() {
                    simd.partial_store_f32s(ot, pow_lane(simd, simd.partial_load_f32s(xt), &p));
                }
            }
        }
    }
}

fn check_pair(x: &[f32], out: &[f32]) -> Result<()> {
    if x.len() != out.len() {
        return Err(Error::length(format!(
            "out has {} elements, expected {}",
            out.len(),
            x.len()
        )));
    }
    Ok(())
}

/// `out[i] = exp(x[i])` on a chosen instruction set (the lane function the kernels use).
pub fn exp_with(isa: Isa, x: &[f32], out: &mut [f32]) -> Result<()> {
    check_pair(x, out)?;
    isa.run(MapSlice {
        x,
        out,
        function: Function::Exp,
    });
    Ok(())
}

/// `out[i] = x[i]^p` (`x >= 0`; NaN for negative `x`) on a chosen instruction set (the lane
/// function of the general-power GN step). `p` must be finite.
pub fn powf_with(isa: Isa, x: &[f32], p: f64, out: &mut [f32]) -> Result<()> {
    check_pair(x, out)?;
    if !p.is_finite() {
        return Err(Error::hyperparameter(format!("p = {p} must be finite")));
    }
    isa.run(MapSlice {
        x,
        out,
        function: Function::Pow(Power::new(p)),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(pow_lane, pow_positive_lane)` over one slice.
    struct BothLanes<'a> {
        x: &'a [f32],
        p: Power,
        out: (&'a mut [f32], &'a mut [f32]),
    }

    impl WithSimd for BothLanes<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let p = PowerLanes::new(simd, &self.p);
            for (i, &x) in self.x.iter().enumerate() {
                let v = simd.partial_load_f32s(&[x]);
                let (mut a, mut b) = ([0.0f32], [0.0f32]);
                simd.partial_store_f32s(&mut a, pow_lane(simd, v, &p));
                simd.partial_store_f32s(&mut b, pow_positive_lane(simd, v, &p));
                self.out.0[i] = a[0];
                self.out.1[i] = b[0];
            }
        }
    }

    #[test]
    fn positive_lane_has_the_bits_of_the_full_lane_on_its_domain() {
        // Every 4099th positive normal pattern, +inf and NaN.
        let mut x: Vec<f32> = (f32::MIN_POSITIVE.to_bits()..f32::INFINITY.to_bits())
            .step_by(4099)
            .map(f32::from_bits)
            .collect();
        x.extend([f32::MIN_POSITIVE, f32::MAX, f32::INFINITY, f32::NAN, 1.0]);
        for p in [
            -POSITIVE_LANE_MAX_POWER,
            -0.5,
            -0.3,
            0.25,
            POSITIVE_LANE_MAX_POWER,
        ] {
            for isa in Isa::available() {
                let (mut a, mut b) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
                isa.run(BothLanes {
                    x: &x,
                    p: Power::new(p),
                    out: (&mut a, &mut b),
                });
                for i in 0..x.len() {
                    assert_eq!(
                        a[i].to_bits(),
                        b[i].to_bits(),
                        "{} p = {p}: x = {:e}",
                        isa.name(),
                        x[i]
                    );
                }
            }
        }
    }
}
