//! # Vectorised transcendental functions (f32 lanes)
//!
//! `exp(x)` and `x^p` written once over pulp's SIMD types, for the hot loops of the softmax
//! factors, the logistic weights and the general-power GN step: no libm call per element.
//!
//! ```text
//! exp(x):  n = round(x log2 e),  r = x - n ln2 (two FMAs, Cody-Waite),
//!          exp(x) = (1 + r + r^2 P(r)) * 2^(n1) * 2^(n - n1)     (n1 = round(n / 2))
//! x^p:     x = 2^e z (z in [0.711, 1.422), 32 cells), r = z / c_i - 1 (|r| <= 1/64, one FMA),
//!          p log2 z = p log2 c_i + r (p A(r))                  (A of degree 2, one rounding)
//!          t = p (e + log2 z) = k / 32 + r2                     (|r2| <= 1/64, exact)
//!          x^p = 2^(k / 32) (1 + r2 B(r2))                      (2^(j/32) from a 32-entry table)
//! ```
//!
//! The reduction of `x` is integer arithmetic on its bits (one carry into the exponent field
//! picks the binade around `z0 = 0.711`, no compare or select); the top five bits of the
//! mantissa pick the cell `i`, and `1 / c_i` and `p log2 c_i` come from two 32-entry tables (the
//! second made per `p`, in f64, rounded once). `p_hi e` (`p = p_hi + p_lo`, an f32 pair) is
//! rounded to a multiple of 1/32 by one FMA with `1.5 * 2^18`, which leaves the integer `k1` in
//! the low bits; its remainder is exact, and with `p_lo e` and `p log2 z` it makes `w`, which one
//! addition to `1.5 * 2^18 + k1 / 32` splits into `k2 / 32 + r2` (`k = k1 + k2`). `2^(k / 32)`
//! is the table's `2^(j/32)` (`j` the low five bits of `k`) with the rest added to its exponent
//! bits; where the result may be
//! subnormal or overflow, the scale is applied as two exact powers of two, so such results are
//! rounded once more (gradual underflow is right) and overflow gives +inf. A table lookup is
//! one permutation on AVX-512 (`vpermt2ps`), four and three blends on AVX2, an array read per
//! lane elsewhere; on AVX-512 the rounding to an integer and the scale of `exp` are one
//! instruction each (`vrndscaleps`, `vscalefps`) with the same results. `P` are Cephes' minimax
//! coefficients for `exp`; `A` and `B` least-maximum-error fits. Every step is an IEEE operation
//! or a fused multiply-add in a fixed order and the tables are the same everywhere, so the
//! result is bitwise the same on every instruction set (scalar, AVX2, AVX-512).
//!
//! **Accuracy** (against the correctly rounded f64 value, tested in `tests/math.rs` on every
//! instruction set over all exponents, subnormal results, +-0, +-inf and NaN):
//!
//! | function | bound |
//! | --- | --- |
//! | `exp` ([`exp_with`]) | 2 ulp (normal results); subnormal results within 1 ulp of the smallest subnormal |
//! | `x^p` ([`powf_with`]), `x >= 0` | `1.5 + abs(p) / 2` ulp (normal results) |
//!
//! Special values: `exp(NaN) = NaN`, `exp(+inf) = +inf`, `exp(-inf) = 0`; `x^p` for `x = NaN`
//! is that NaN (quieted), for `x < 0` NaN, `+-0^p` and `inf^p` are those of IEEE `pow` at `+0` and `+inf`
//! (`0^p = +inf` for `p < 0`), `x^0 = 1` for every other `x`.
//!
//! The slice functions [`exp_with`] and [`powf_with`] run the lane functions over slices (body
//! and masked tail alike); they are the entry points the tests measure.

use crate::dispatch::Isa;
use crate::error::{Error, Result};
use pulp::{bytemuck, Simd, WithSimd};

/// `1.5 * 2^23`: adding it to a float of magnitude below `2^22` rounds it to an integer
/// (ties to even), which then sits in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n * LN2_HI` is exact for `|n| < 2^15`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` coefficients, highest first: `exp(r) = 1 + r + r^2 P(r)` on `|r| <= ln2 / 2`.
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];
/// The bits of `z0 = 0.7109375`, the smallest reduced argument of the logarithm: `x = 2^e z`
/// with `z` in `[z0, 2 z0)`. The 32 cells of that range (the top five bits of `bits(z) -
/// LOG_OFF`) are `1/64` wide below 1 and `1/32` above; cell 18, `[0.9921875, 1.015625)`, holds 1.
const LOG_OFF: u32 = 0x3f36_0000;
/// Added to the bits of a positive normal `x`: the mantissa bits at or above those of `2 z0`
/// carry into the exponent field, so the low 23 bits are `bits(z) - LOG_OFF` and the high bits
/// `e + 127`.
const LOG_SPLIT: u32 = 0x3f80_0000 - LOG_OFF;
/// `1 / c` for the middle `c` of each cell, rounded to f32 (1 for the cell that holds 1), so
/// `r = z / c - 1 = fma(z, LOG_INVC[i], -1)` is within `[-0.01516, 0.015625]`.
const LOG_INVC: [f32; 32] = [
    1.391_304_4,
    1.361_702_1,
    1.333_333_4,
    1.306_122_4,
    1.28,
    1.254_902,
    1.230_769_3,
    1.207_547_2,
    1.185_185_2,
    1.163_636_3,
    1.142_857_2,
    1.122_807,
    1.103_448_3,
    1.084_745_8,
    1.066_666_7,
    1.049_180_3,
    1.032_258,
    1.015_873_1,
    1.0,
    0.969_697,
    0.941_176_5,
    0.914_285_7,
    0.888_888_9,
    0.864_864_9,
    0.842_105_27,
    0.820_512_83,
    0.8,
    0.780_487_8,
    0.761_904_8,
    0.744_186_04,
    0.727_272_75,
    0.711_111_1,
];
/// `-log2(LOG_INVC[i])` in f64 (the GN step's `Power` multiplies it by `p` and rounds once).
#[allow(clippy::excessive_precision)]
const LOG_C: [f64; 32] = [
    -0.476_438_070_815_276_06,
    -0.445_411_102_639_470_26,
    -0.415_037_542_274_505_9,
    -0.385_290_126_325_273_4,
    -0.356_143_777_978_527_9,
    -0.327_574_709_085_852_96,
    -0.299_560_335_603_485_2,
    -0.272_079_566_934_632_03,
    -0.245_112_508_585_447_1,
    -0.218_640_240_792_448_04,
    -0.192_645_142_435_888_5,
    -0.167_109_996_584_173_97,
    -0.142_018_999_497_970_03,
    -0.117_356_953_325_387_66,
    -0.093_109_479_633_889_26,
    -0.069_262_581_820_243_88,
    -0.045_803_646_617_461_43,
    -0.022_720_159_804_177_638,
    0.0,
    0.044_394_076_362_791_364,
    0.087_462_835_875_881_58,
    0.129_283_008_883_279_73,
    0.169_924_990_693_396_73,
    0.209_453_330_694_974_24,
    0.247_927_502_694_669_84,
    0.285_402_200_051_646,
    0.321_928_073_389_531_17,
    0.357_552_058_362_663_07,
    0.392_317_395_906_471_36,
    0.426_264_760_076_555_8,
    0.459_431_575_641_635_17,
    0.491_853_061_395_699_2,
];
/// `log2(1 + r) = r (A1 + A2 r + A3 r^2)` on the range of `r` above (least-maximum-error fit,
/// absolute error below `2^-30`); scaled by `p` in [`Power`].
#[allow(clippy::excessive_precision)]
const LOG_A: [f64; 3] = [
    1.442_695_067_672_521_9,
    -0.721_418_178_559_191_1,
    0.480_653_471_785_685_57,
];
/// `2^r - 1 = r (B1 + B2 r + B3 r^2)` on `|r| <= 1/64` (relative error below `2^-30`).
// B1 is the fitted coefficient, which rounds to ln 2 in f32; kept as the fit printed it.
#[allow(clippy::approx_constant)]
const EXP2_B: [f32; 3] = [0.693_147_2, 0.240_228_46, 0.055_504_568];
/// `2^(j/32)` rounded to f32 (entry 16 is sqrt 2: a table, not a named constant).
#[allow(clippy::approx_constant)]
const EXP2_T: [f32; 32] = [
    1.0,
    1.021_897_2,
    1.044_273_7,
    1.067_140_5,
    1.090_507_7,
    1.114_386_8,
    1.138_788_6,
    1.163_724_9,
    1.189_207_1,
    1.215_247_4,
    1.241_857_8,
    1.269_051,
    1.296_839_6,
    1.325_236_7,
    1.354_255_6,
    1.383_91,
    1.414_213_5,
    1.445_180_8,
    1.476_826_2,
    1.509_164_5,
    1.542_210_8,
    1.575_980_9,
    1.610_490_3,
    1.645_755_5,
    1.681_792_9,
    1.718_619_3,
    1.756_252_2,
    1.794_709_1,
    1.834_008_1,
    1.874_167_7,
    1.915_206_6,
    1.957_144_1,
];
/// The bits of `EXP2_T[j]` less `j << 18`: adding `k << 18` for `k = 32 n + j` gives the bits of
/// `2^(n + j/32)` (for a normal result).
const EXP2_ADJ: [f32; 32] = {
    let mut t = [0.0f32; 32];
    let mut j = 0;
    while j < 32 {
        t[j] = f32::from_bits(EXP2_T[j].to_bits().wrapping_sub((j as u32) << 18));
        j += 1;
    }
    t
};
/// `1.5 * 2^18`: adding it to a float of magnitude below `2^17` rounds it to a multiple of
/// `1/32`, whose 32 times sits in the low mantissa bits.
const SHIFT32: f32 = 393_216.0;
/// The largest `|p|` that [`Power`] carries: beyond it `x^p` is 0 or +inf for every positive
/// normal or subnormal `x != 1` (`|log2 x| >= 2^-24`, so `|p log2 x| > 2^9`), as with `p` itself.
const POWER_CLAMP: f64 = 8_589_934_592.0;

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
/// the logarithm's cell values and coefficients times `p` (each rounded once from f64), and the
/// results of the special inputs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Power {
    hi: f32,
    lo: f32,
    /// `p log2 c` per cell (`p LOG_C[i]`).
    log_c: [f32; 32],
    /// `p A1, p A2, p A3` (`p LOG_A`).
    log_a: [f32; 3],
    at_zero: f32,
    at_inf: f32,
    /// `vfixupimmps`'s table for `pow_positive_lane`: NaN to itself quieted, +inf to `at_inf`.
    fixup: u32,
}

impl Power {
    /// `p` must be finite.
    pub(crate) fn new(p: f64) -> Self {
        let at_zero = 0f64.powf(p) as f32;
        let at_inf = f64::INFINITY.powf(p) as f32;
        let p = p.clamp(-POWER_CLAMP, POWER_CLAMP);
        let hi = p as f32;
        let lo = (p - hi as f64) as f32;
        Self {
            hi,
            lo,
            log_c: LOG_C.map(|c| (p * c) as f32),
            log_a: LOG_A.map(|a| (p * a) as f32),
            at_zero,
            at_inf,
            fixup: fixup_table(at_inf),
        }
    }
}

/// The `vfixupimmps` table (a 4-bit response per input class: 0 QNaN, 1 SNaN, 2 zero, 3 one,
/// 4 -inf, 5 +inf, 6 negative, 7 positive) that maps NaN to itself quieted (response 2) and
/// +inf to `at_inf` (0, +inf or 1: responses 8, 5, 10) and keeps every other lane (0).
fn fixup_table(at_inf: f32) -> u32 {
    let inf_response = if at_inf == 0.0 {
        8
    } else if at_inf == f32::INFINITY {
        5
    } else {
        10
    };
    0x22 | (inf_response << 20)
}

/// The splatted form of [`Power`] (the cell table stays an array: [`lookup`] reads it).
#[derive(Clone, Copy)]
pub(crate) struct PowerLanes<S: Simd> {
    hi: S::f32s,
    lo: S::f32s,
    log_c: [f32; 32],
    log_a: [S::f32s; 3],
    at_zero: S::f32s,
    at_inf: S::f32s,
    fixup: S::u32s,
}

impl<S: Simd> PowerLanes<S> {
    #[inline(always)]
    pub(crate) fn new(simd: S, p: &Power) -> Self {
        Self {
            hi: simd.splat_f32s(p.hi),
            lo: simd.splat_f32s(p.lo),
            log_c: p.log_c,
            log_a: p.log_a.map(|a| simd.splat_f32s(a)),
            at_zero: simd.splat_f32s(p.at_zero),
            at_inf: simd.splat_f32s(p.at_inf),
            fixup: simd.splat_u32s(p.fixup),
        }
    }
}

/// `table[i mod 32]` per lane. One table permutation on AVX-512, four permutations and three
/// blends on AVX2, lane by lane elsewhere: the same values.
#[inline(always)]
fn lookup<S: Simd>(simd: S, table: &[f32; 32], i: S::u32s) -> S::f32s {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let Some(y) = avx512::lookup(simd, table, simd.transmute_f32s_u32s(i)) {
        return y;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(y) = avx2::lookup(simd, table, simd.transmute_f32s_u32s(i)) {
        return y;
    }
    let mut out = simd.splat_f32s(0.0);
    let lanes: &mut [f32] = bytemuck::cast_slice_mut(std::slice::from_mut(&mut out));
    let cells: &[u32] = bytemuck::cast_slice(std::slice::from_ref(&i));
    for (o, &k) in lanes.iter_mut().zip(cells) {
        *o = table[(k & 31) as usize];
    }
    out
}

/// `[z, e, cell]` with `x = 2^e z`, `z` in `[z0, 2 z0)` (see `LOG_OFF`) and `z`'s cell in the
/// low five bits of `cell` (integer bits), for the bits of a positive normal `x` (anything else
/// gives finite values).
#[inline(always)]
fn log_reduce<S: Simd>(simd: S, x: S::f32s) -> [S::f32s; 3] {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let Some(r) = avx512::log_reduce(simd, x) {
        return r;
    }
    // After adding LOG_SPLIT the bits hold e + 127 above bit 23, bits(z) - LOG_OFF below it.
    let bits = simd.add_u32s(simd.transmute_u32s_f32s(x), simd.splat_u32s(LOG_SPLIT));
    let z = simd.transmute_f32s_u32s(simd.add_u32s(
        simd.and_u32s(bits, simd.splat_u32s(0x007f_ffff)),
        simd.splat_u32s(LOG_OFF),
    ));
    // e as a float (exact): the biased exponent in the low bits of 1.5 * 2^23, less the bias.
    let exp_bits = simd.wrapping_dyn_shr_u32s(bits, simd.splat_u32s(23));
    let e = simd.sub_f32s(
        simd.transmute_f32s_u32s(simd.add_u32s(exp_bits, simd.splat_u32s(0x4b40_0000))),
        simd.splat_f32s(ROUND_MAGIC + 127.0),
    );
    let cell = simd.wrapping_dyn_shr_u32s(bits, simd.splat_u32s(18));
    [z, e, simd.transmute_f32s_u32s(cell)]
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
/// inputs, with the subnormal, zero and range paths left out. The GN step's
/// `max(h, 0) + lambda` with a normal `lambda` qualifies.
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
    let shift = simd.splat_f32s(SHIFT32);
    let clamp = |v: S::f32s, lo: f32, hi: f32| {
        simd.min_f32s(simd.max_f32s(v, simd.splat_f32s(lo)), simd.splat_f32s(hi))
    };
    // Subnormal x: scale by 2^24 into the normal range, take 24 off the exponent.
    let tiny = simd.less_than_f32s(x, simd.splat_f32s(f32::MIN_POSITIVE));
    let xs = if FULL_RANGE {
        simd.select_f32s(tiny, simd.mul_f32s(x, simd.splat_f32s(16_777_216.0)), x)
    } else {
        x
    };
    let [z, e, cell] = log_reduce(simd, xs);
    let e = if FULL_RANGE {
        simd.select_f32s(tiny, simd.sub_f32s(e, simd.splat_f32s(24.0)), e)
    } else {
        e
    };
    // p log2 z = p log2 c + p log2(1 + r), r = z / c - 1 (|r| <= 1/64), the sum rounded once.
    let cell = simd.transmute_u32s_f32s(cell);
    let r = simd.mul_add_f32s(z, lookup(simd, &LOG_INVC, cell), simd.splat_f32s(-1.0));
    let q = simd.mul_add_f32s(p.log_a[2], r, p.log_a[1]);
    let q = simd.mul_add_f32s(q, r, p.log_a[0]);
    let pl = simd.mul_add_f32s(r, q, lookup(simd, &p.log_c, cell));
    // t = p (e + log2 z) = k1 / 32 + w: p_hi e rounded once to a multiple of 1/32, its remainder
    // p_hi e - k1 / 32 exactly (a multiple of ulp(p_hi) below 1/64; below 2^-31 off for
    // |p| < 2^-7), then p_lo e and p log2 z, one rounding (|w| <= |p| / 2 + 1/64).
    let kz1 = simd.mul_add_f32s(p.hi, e, shift);
    let kz1 = if FULL_RANGE {
        // |p e| > 2^16: the result over- or underflows, and keeps its side after the clamps.
        clamp(kz1, SHIFT32 - 65_536.0, SHIFT32 + 65_536.0)
    } else {
        kz1
    };
    let d1 = simd.mul_add_f32s(p.hi, e, simd.sub_f32s(shift, kz1));
    let w = simd.add_f32s(simd.mul_add_f32s(p.lo, e, d1), pl);
    let w = if FULL_RANGE {
        clamp(w, -1024.0, 1024.0)
    } else {
        w
    };
    // kz = kz1 + w holds k = k1 + k2 (w rounded to k2 / 32); rr = w - k2 / 32 (|rr| <= 1/64),
    // both exact: 2^t = 2^(k / 32) 2^rr.
    let kz = simd.add_f32s(kz1, w);
    let rr = simd.sub_f32s(w, simd.sub_f32s(kz, kz1));
    let k = simd.transmute_u32s_f32s(kz);
    let q = simd.mul_add_f32s(simd.splat_f32s(EXP2_B[2]), rr, simd.splat_f32s(EXP2_B[1]));
    let q = simd.mul_f32s(rr, simd.mul_add_f32s(q, rr, simd.splat_f32s(EXP2_B[0])));
    let table = simd.transmute_u32s_f32s(lookup(simd, &EXP2_ADJ, k));
    let y = if FULL_RANGE {
        // 2^(j/32) (1 + q), then 2^n (n = floor((k1 + k2) / 32), within [-252, 252]) as in
        // scale_pow2: subnormal results rounded once more, overflow to +inf.
        let j = simd.and_u32s(k, simd.splat_u32s(31));
        let s = simd.transmute_f32s_u32s(
            simd.add_u32s(table, simd.wrapping_dyn_shl_u32s(j, simd.splat_u32s(18))),
        );
        let kf = simd.sub_f32s(kz, shift);
        let n = round_int(simd, simd.sub_f32s(kf, simd.splat_f32s(31.0 / 64.0)));
        scale_pow2(simd, simd.mul_add_f32s(s, q, s), clamp(n, -252.0, 252.0))
    } else {
        // |t| <= 125: 2^(n + j/32) is normal, its bits the table's plus k << 18.
        let s = simd.transmute_f32s_u32s(
            simd.add_u32s(table, simd.wrapping_dyn_shl_u32s(k, simd.splat_u32s(18))),
        );
        simd.mul_add_f32s(s, q, s)
    };
    // Special inputs, last: 0, +inf, negative (NaN), NaN (itself, quieted).
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if !FULL_RANGE {
        if let Some(r) = avx512::fix_special(simd, y, x, simd.transmute_f32s_u32s(p.fixup)) {
            return r;
        }
    }
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
    let y = if FULL_RANGE {
        let valid = simd.greater_than_or_equal_f32s(x, zero);
        simd.select_f32s(valid, y, simd.splat_f32s(f32::NAN))
    } else {
        y
    };
    simd.select_f32s(simd.equal_f32s(x, x), y, simd.add_f32s(x, x))
}

/// `f(simd, args)` when `S` is the backend `B` (whose vector type is `V`), else `None`: the
/// compiler resolves the comparison per instantiation.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn on_backend<
    S: Simd,
    B: Simd + 'static,
    V: Copy + 'static,
    const N: usize,
    const M: usize,
>(
    simd: S,
    args: [S::f32s; N],
    f: impl FnOnce(B, [V; N]) -> [V; M],
) -> Option<[S::f32s; M]> {
    use std::any::Any;
    let b = *(&simd as &dyn Any).downcast_ref::<B>()?;
    let args = *(&args as &dyn Any).downcast_ref::<[V; N]>()?;
    (&f(b, args) as &dyn Any)
        .downcast_ref::<[S::f32s; M]>()
        .copied()
}

/// AVX-512 forms of exact steps above (rounding to an integer, scaling by a power of two, table
/// lookup): one instruction each, the same bits as the portable sequences.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
mod avx512 {
    use pulp::x86::V4;
    use pulp::{f32x16, Simd};

    /// `f(args)` when `S` is [`V4`], else `None`.
    #[inline(always)]
    pub(super) fn map<S: Simd, const N: usize>(
        simd: S,
        args: [S::f32s; N],
        f: impl FnOnce(V4, [f32x16; N]) -> f32x16,
    ) -> Option<S::f32s> {
        super::on_backend(simd, args, |v4, args| [f(v4, args)]).map(|[y]| y)
    }

    /// `y * 2^n` for an integer-valued `n`, rounded once (vscalefps): the value of
    /// `scale_pow2`, subnormal and overflowing results included.
    #[inline(always)]
    pub(super) fn scale<S: Simd>(simd: S, y: S::f32s, n: S::f32s) -> Option<S::f32s> {
        map(simd, [y, n], |v4, [y, n]| {
            pulp::cast(v4.avx512f._mm512_scalef_ps(pulp::cast(y), pulp::cast(n)))
        })
    }

    /// `log_reduce` from `t = bits(x) - LOG_OFF`: `e` is `t >> 23` (arithmetic) converted,
    /// `z` the bits of `x` less `t`'s exponent field, the cell `t >> 18`: the same values.
    #[inline(always)]
    pub(super) fn log_reduce<S: Simd>(simd: S, x: S::f32s) -> Option<[S::f32s; 3]> {
        super::on_backend(simd, [x], |v4: V4, [x]: [f32x16; 1]| {
            let f = v4.avx512f;
            let bits = pulp::cast(x);
            let t = f._mm512_sub_epi32(bits, f._mm512_set1_epi32(super::LOG_OFF as i32));
            let field = f._mm512_and_si512(t, f._mm512_set1_epi32(0xff80_0000_u32 as i32));
            let z = pulp::cast(f._mm512_sub_epi32(bits, field));
            let e = pulp::cast(f._mm512_cvtepi32_ps(f._mm512_srai_epi32::<23>(t)));
            [z, e, pulp::cast(f._mm512_srli_epi32::<18>(t))]
        })
    }

    /// `y` with the lanes where `x` is NaN or +inf replaced per `table` (vfixupimmps; see
    /// `fixup_table`): the values of the portable selects.
    #[inline(always)]
    pub(super) fn fix_special<S: Simd>(
        simd: S,
        y: S::f32s,
        x: S::f32s,
        table: S::f32s,
    ) -> Option<S::f32s> {
        map(simd, [y, x, table], |v4, [y, x, table]| {
            pulp::cast(v4.avx512f._mm512_fixupimm_ps::<0>(
                pulp::cast(y),
                pulp::cast(x),
                pulp::cast(table),
            ))
        })
    }

    /// `table[i mod 32]` (vpermt2ps; `i` holds integer bits).
    #[inline(always)]
    pub(super) fn lookup<S: Simd>(simd: S, table: &[f32; 32], i: S::f32s) -> Option<S::f32s> {
        map(simd, [i], |v4, [i]| {
            let [lo, hi]: [f32x16; 2] = pulp::cast(*table);
            pulp::cast(v4.avx512f._mm512_permutex2var_ps(
                pulp::cast(lo),
                pulp::cast(i),
                pulp::cast(hi),
            ))
        })
    }
}

/// AVX2 form of the table lookup: four 8-entry permutations (vpermps, which reads the low three
/// bits of each index), then blends on bits 3 and 4.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use pulp::x86::V3;
    use pulp::{f32x8, Simd};

    /// `table[i mod 32]` (`i` holds integer bits).
    #[inline(always)]
    pub(super) fn lookup<S: Simd>(simd: S, table: &[f32; 32], i: S::f32s) -> Option<S::f32s> {
        super::on_backend(simd, [i], |v3: V3, [i]: [f32x8; 1]| {
            let t: [f32x8; 4] = pulp::cast(*table);
            let idx = pulp::cast(i);
            let p = t.map(|t| v3.avx2._mm256_permutevar8x32_ps(pulp::cast(t), idx));
            let bit3 = pulp::cast(v3.avx2._mm256_slli_epi32::<28>(idx));
            let bit4 = pulp::cast(v3.avx2._mm256_slli_epi32::<27>(idx));
            let low = v3.avx._mm256_blendv_ps(p[0], p[1], bit3);
            let high = v3.avx._mm256_blendv_ps(p[2], p[3], bit3);
            [pulp::cast(v3.avx._mm256_blendv_ps(low, high, bit4))]
        })
        .map(|[y]| y)
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
        // Every 4099th positive normal pattern, +inf and NaN (both signs).
        let mut x: Vec<f32> = (f32::MIN_POSITIVE.to_bits()..f32::INFINITY.to_bits())
            .step_by(4099)
            .map(f32::from_bits)
            .collect();
        x.extend([
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::INFINITY,
            f32::NAN,
            -f32::NAN,
            1.0,
        ]);
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
