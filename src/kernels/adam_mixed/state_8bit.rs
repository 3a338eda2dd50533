//! # Adam with 8-bit block-quantized optimizer state
//!
//! The kernel decodes the state, runs the f32 Adam update of [`crate::kernels::adam`] on it
//! (`theta` and `g` stay f32), and re-encodes, in one pass over memory. Its bf16 sibling is
//! [`super::bf16_state`].
//!
//! **8-bit state** (16 bytes per parameter plus 1/32 for scales), after Dettmers et al. (8-bit
//! Adam): elements are grouped in blocks of [`QUANT_BLOCK`] = 256; each block of each moment
//! stores one f32 scale (its absmax) and one byte per element:
//!
//! ```text
//! exp_avg:    code = s | q,  s = sign bit (0x80), q = e4m3 minifloat of |m| / scale  (7 bits)
//!             q = e << 3 | f; e = 0: |m|/scale = f * 2^-17; else (1 + f/8) * 2^(e - 15);
//!             1.0 is q = 120 (the largest code used)
//! exp_avg_sq: code = e5m3 minifloat of v / scale (8 bits, unsigned)
//!             e = 0: v/scale = f * 2^-33; else (1 + f/8) * 2^(e - 31); 1.0 is code 248
//! value = decode(code) * scale[element / 256]       (scale = absmax of the block, f32)
//! ```
//!
//! This is a dynamic (exponent-based, non-linear) code like bitsandbytes' dynamic map, with a
//! larger range for `v` (2^-30 of the block maximum) than for `m` (2^-14); it is encoded by a
//! few integer operations in registers (f32 exponent and top fraction bits, rounded half up and
//! re-biased) instead of a table search. No subnormal code is written: an `m` below the smallest
//! normal code (2^-14 of the scale) becomes a signed zero (0x80 decodes to -0.0), a positive `v`
//! below it (2^-30) becomes the smallest normal code, so `m / sqrt(v)` cannot blow up because
//! `v` underflowed, and decoding never meets a subnormal float (a microcode assist each on
//! Zen 3; subnormal codes from elsewhere still decode exactly, only slower).
//!
//! **Pass**: the f32 kernel's own body (so the arithmetic is exactly the f32 step's), in one pass
//! over memory, per quantization block: decode `m`, `v`, run the body, keep the new `m`, `v` in two
//! 1 KB f32 buffers (L1) while taking their absmax, encode. The encoder works on 16-bit lanes, two
//! registers at a time with AVX-512, four with AVX2; with AVX-512 a block is encoded inside the
//! body of the next one (two pairs of buffers), so the encoder's integer work runs while the update
//! waits on its divisions. Every body asks for its operands 2 KB of each f32 array ahead
//! (`prefetcht0`) on every CPU (`dispatch::PrefetchKind::Heavy`): on an Intel Xeon and an AMD
//! Zen 5 the hardware prefetchers alone left the DRAM-sized steps waiting on their loads. With
//! AVX-512 (32 registers) the body also decodes the codes as it loads them; with AVX2 (16
//! registers) that spills constants (measured: ~5% slower on Zen 4, ~10% on Zen 3), so AVX2 and
//! scalar decode into the buffers first: the 8-bit codecs are long integer chains that overlap
//! better in loops of their own there.
//!
//! The layout is the checkpoint format: save `codes` and `scales` as they are
//! ([`quantize_state`] and [`dequantize_state`] convert from and to f32).
//!
//! **Accuracy**: per element, `theta` is the f32 step on the decoded state; the round trip
//! `decode(encode(x))` is within `max(|x| / 16, 2^-14 scale)` for `m` and
//! `max(v / 16, 2^-30 scale)` for `v` (see `tests/adam_mixed.rs`). Non-finite state cannot be
//! represented; use `check_finite`. A scale that is not finite or is negative (a corrupted
//! checkpoint) is refused with an error before anything is written. Amsgrad is not supported.
//!
//! **Reference**: the codec is [`crate::reference::quant_code`],
//! [`crate::reference::quantize_state`] and [`crate::reference::dequantize_state`], bit for bit;
//! the step is [`crate::reference::adam_step`] on the decoded state (`tests/adam_mixed.rs`).

use super::master::{check_no_amsgrad, in_tensor};
use crate::dispatch::batches::{balanced_batches, step_batches};
use crate::dispatch::{self, split_fields, Isa, Par, Split};
use crate::error::{check_lengths, check_step, non_finite_error, Error, ErrorKind, Result};
use crate::kernels::adam::{
    adam_body, adam_registers_of, finite_on_thread, grad_is_finite, registers_per_line, step_par,
    AdamBlock, AdamCoefficients, AdamConfig, AdamRegisters, Splat, BLOCK, UNROLL,
};
use crate::kernels::convert::{self, lanes, load_bytes, prefetch_ptr, store_u8, MAX_LANES};
use pulp::{Simd, WithSimd};

/// Elements per quantization block (one scale per block and moment).
pub const QUANT_BLOCK: usize = 256;

/// Number of scales for `len` elements: `ceil(len / 256)`.
pub fn quant_scales_len(len: usize) -> usize {
    len.div_ceil(QUANT_BLOCK)
}

// ---------------------------------------------------------------------------------------------
// 8-bit state

/// `m`: e4m3 magnitudes, smallest normal 2^-14 (the code of 1.0 is 120).
const M_MANT: u32 = 3;
const M_EMIN: i32 = -14;
/// `v`: e5m3, smallest normal 2^-30 (the code of 1.0 is 248).
const V_MANT: u32 = 3;
const V_EMIN: i32 = -30;

/// The minifloat code (`MANT` fraction bits, smallest normal exponent `EMIN`) of the f32
/// magnitude bits `a`, as a signed integer: f32 exponent and top fraction bits rounded half up,
/// re-biased. Magnitudes below the smallest normal give codes <= 7 (or <= 0), within
/// `2^EMIN` of their value once decoded; the callers clamp the negative ones.
// PERF: 4 integer operations; the nearest-even encoder with exact subnormals took ~12.
#[inline(always)]
fn minifloat_code<S: Simd, const MANT: u32, const EMIN: i32>(simd: S, a: S::u32s) -> S::u32s {
    let half_ulp = 1u32 << (22 - MANT);
    let bias = ((127 + EMIN - 1) as u32) << MANT;
    let code = simd.wrapping_dyn_shr_u32s(
        simd.add_u32s(a, simd.splat_u32s(half_ulp)),
        simd.splat_u32s(23 - MANT),
    );
    simd.sub_u32s(code, simd.splat_u32s(bias))
}

/// The signed `m` code of `x * inv_scale`: sign bit 0x80, magnitude code in the low 7 bits
/// (values below 2^-15 of the scale become a signed zero).
#[inline(always)]
fn encode_m<S: Simd>(simd: S, x: S::f32s, inv_scale: S::f32s) -> S::u32s {
    let bits = simd.transmute_u32s_f32s(simd.mul_f32s(x, inv_scale));
    let magnitude = simd.and_u32s(bits, simd.splat_u32s(0x7fff_ffff));
    let code = minifloat_code::<S, M_MANT, M_EMIN>(simd, magnitude);
    // Codes below the smallest normal one (8) become zero: no subnormal code is written, so the
    // decoder never meets a subnormal f32 (each costs a microcode assist: with 1% of them the
    // step ran 10% slower).
    let normal = simd.greater_than_i32s(
        simd.transmute_i32s_u32s(code),
        simd.splat_i32s((1 << M_MANT) - 1),
    );
    let code = simd.select_u32s(normal, code, simd.splat_u32s(0));
    let sign = simd.and_u32s(
        simd.wrapping_dyn_shr_u32s(bits, simd.splat_u32s(24)),
        simd.splat_u32s(0x80),
    );
    simd.or_u32s(code, sign)
}

/// The value of `m` codes (sign-extended to 32 bits, as [`load_bytes`] gives them) times `scale`.
/// `FOLDED`: `scale` is `scale * M_REBIAS` (see [`fold_rebias`]).
#[inline(always)]
fn decode_m<S: Simd, const FOLDED: bool>(simd: S, code: S::u32s, scale: S::f32s) -> S::f32s {
    // The sign lands on bit 31, the magnitude code on the f32 exponent and top fraction bits.
    let bits = simd.and_u32s(
        simd.wrapping_dyn_shl_u32s(code, simd.splat_u32s(23 - M_MANT)),
        simd.splat_u32s(0x8000_0000 | (0x7f << (23 - M_MANT))),
    );
    rebias_and_scale::<S, FOLDED>(simd, simd.transmute_f32s_u32s(bits), M_REBIAS, scale)
}

/// The power of two that takes a code shifted into f32 position to its value (see
/// [`convert::decode_minifloat`]): 2^(126 + EMIN).
const M_REBIAS: f32 = f32::from_bits(((127 + 126 + M_EMIN) as u32) << 23);
const V_REBIAS: f32 = f32::from_bits(((127 + 126 + V_EMIN) as u32) << 23);

/// `(x * rebias) * scale`, or `x * scale` when the rebias is already folded into `scale`. Both
/// give the same bits: `x * rebias` is exact (a power of two, no overflow or underflow), so
/// either way the result is the exact product `x * rebias * scale` rounded once.
#[inline(always)]
fn rebias_and_scale<S: Simd, const FOLDED: bool>(
    simd: S,
    x: S::f32s,
    rebias: f32,
    scale: S::f32s,
) -> S::f32s {
    if FOLDED {
        simd.mul_f32s(x, scale)
    } else {
        simd.mul_f32s(simd.mul_f32s(x, simd.splat_f32s(rebias)), scale)
    }
}

/// The block's scales with the decoders' rebias folded in, when both products are finite (they
/// are then exact: the scales times powers of two). Otherwise (an `m` scale of 2^16 or more, a
/// `v` scale of 2^32 or more) the rebias stays a multiply of its own.
fn fold_rebias(m_scale: f32, v_scale: f32) -> Option<[f32; 2]> {
    let folded = [m_scale * M_REBIAS, v_scale * V_REBIAS];
    folded.iter().all(|s| s.is_finite()).then_some(folded)
}

/// The `v` code of `x * inv_scale` (`x >= 0`; `-0.0` counts as zero); a positive `x` gets at
/// least the smallest normal code.
#[inline(always)]
fn encode_v<S: Simd>(simd: S, x: S::f32s, inv_scale: S::f32s) -> S::u32s {
    let bits = simd.and_u32s(
        simd.transmute_u32s_f32s(simd.mul_f32s(x, inv_scale)),
        simd.splat_u32s(0x7fff_ffff),
    );
    let code = minifloat_code::<S, V_MANT, V_EMIN>(simd, bits);
    // The floor of the code: the smallest normal code (8) for a positive value (min(bits, 1)
    // is 1), 0 for zero; no subnormal code is written (see `encode_m`).
    let floor = simd.wrapping_dyn_shl_u32s(
        simd.min_u32s(bits, simd.splat_u32s(1)),
        simd.splat_u32s(V_MANT),
    );
    simd.transmute_u32s_i32s(simd.max_i32s(
        simd.transmute_i32s_u32s(code),
        simd.transmute_i32s_u32s(floor),
    ))
}

/// `FOLDED`: `scale` is `scale * V_REBIAS`.
#[inline(always)]
fn decode_v<S: Simd, const FOLDED: bool>(simd: S, code: S::u32s, scale: S::f32s) -> S::f32s {
    let bits = simd.wrapping_dyn_shl_u32s(code, simd.splat_u32s(23 - V_MANT));
    rebias_and_scale::<S, FOLDED>(simd, simd.transmute_f32s_u32s(bits), V_REBIAS, scale)
}

/// `max(acc, |x|)` as compare + select (the same on every ISA).
#[inline(always)]
fn abs_max<S: Simd>(simd: S, acc: S::u32s, x: S::f32s) -> S::u32s {
    // The bits of non-negative floats order as the floats do: one integer max, the same on
    // every instruction set (a NaN would win; non-finite state is not representable anyway).
    let a = simd.and_u32s(simd.transmute_u32s_f32s(x), simd.splat_u32s(0x7fff_ffff));
    simd.max_u32s(acc, a)
}

#[inline(always)]
fn decode<S: Simd, const M: bool, const FOLDED: bool>(
    simd: S,
    code: S::u32s,
    scale: S::f32s,
) -> S::f32s {
    if M {
        decode_m::<S, FOLDED>(simd, code, scale)
    } else {
        decode_v::<S, FOLDED>(simd, code, scale)
    }
}

#[inline(always)]
fn encode<S: Simd, const M: bool>(simd: S, x: S::f32s, inv_scale: S::f32s) -> S::u32s {
    if M {
        encode_m(simd, x, inv_scale)
    } else {
        encode_v(simd, x, inv_scale)
    }
}

/// Decodes one moment's codes (`M`: `m`, else `v`) into the equally long `out`.
#[inline(always)]
fn decode_into<S: Simd, const M: bool>(simd: S, codes: &[u8], out: &mut [f32], scale: S::f32s) {
    let width = lanes::<S>();
    let (body, tail) = S::as_mut_simd_f32s(out);
    let (codes, codes_tail) = codes.split_at(body.len() * width);
    for (o, c) in body.iter_mut().zip(codes.chunks_exact(width)) {
        // `m` codes are sign-extended (the sign lands on bit 31), `v` codes zero-extended.
        *o = decode::<S, M, false>(simd, load_bytes::<S, M>(simd, c), scale);
    }
    if !tail.is_empty() {
        let x = decode::<S, M, false>(simd, load_bytes::<S, M>(simd, codes_tail), scale);
        simd.partial_store_f32s(tail, x);
    }
}

/// Encodes `values` of one moment (`M`: `m`, else `v`) into the equally long `codes`.
#[inline(always)]
fn encode_into<S: Simd, const M: bool>(
    simd: S,
    values: &[f32],
    codes: &mut [u8],
    inv_scale: S::f32s,
) {
    let width = lanes::<S>();
    let (body, tail) = S::as_simd_f32s(values);
    let (codes, codes_tail) = codes.split_at_mut(body.len() * width);
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    let (body, codes) = match convert::avx512(&simd) {
        Some(v4) => {
            let pairs = body.chunks_exact(2);
            let (pair_codes, rest_codes) = codes.split_at_mut(body.len() / 2 * 32);
            let rest = pairs.remainder();
            for (x, c) in pairs.zip(pair_codes.chunks_exact_mut(32)) {
                let x = pulp::bytemuck::cast_slice::<S::f32s, pulp::f32x16>(x);
                let inv = pulp::bytemuck::cast::<S::f32s, pulp::f32x16>(inv_scale);
                c.copy_from_slice(&encode_pair_avx512::<M>(v4, [x[0], x[1]], inv));
            }
            (rest, rest_codes)
        }
        None => (body, codes),
    };
    #[cfg(target_arch = "x86_64")]
    let (body, codes) = match convert::avx2(&simd) {
        Some(v3) => {
            let quads = body.chunks_exact(4);
            let (quad_codes, rest_codes) = codes.split_at_mut(body.len() / 4 * 4 * width);
            let rest = quads.remainder();
            for (x, c) in quads.zip(quad_codes.chunks_exact_mut(4 * width)) {
                let x = pulp::bytemuck::cast_slice::<S::f32s, pulp::f32x8>(x);
                let inv = pulp::bytemuck::cast::<S::f32s, pulp::f32x8>(inv_scale);
                c.copy_from_slice(&encode_quad_avx2::<M>(v3, [x[0], x[1], x[2], x[3]], inv));
            }
            (rest, rest_codes)
        }
        None => (body, codes),
    };
    for (&x, c) in body.iter().zip(codes.chunks_exact_mut(width)) {
        store_u8::<S>(simd, c, encode::<S, M>(simd, x, inv_scale));
    }
    if !tail.is_empty() {
        let x = simd.partial_load_f32s(tail);
        store_u8::<S>(simd, codes_tail, encode::<S, M>(simd, x, inv_scale));
    }
}

/// [`encode`] of two AVX-512 registers at once, on 16-bit lanes (AVX-512BW), with the same bits.
///
/// The code depends only on the top 16 bits of `x * inv_scale`: rounding half up adds 2^19 and
/// shifts right by 20 (see [`minifloat_code`]), so the low 16 bits never carry into the result.
/// One `vpermt2w` gathers the top halves of 32 values into one register, and the integer work
/// runs on 32 lanes per instruction: re-bias folded into the rounding constant with an
/// arithmetic shift, the range check as a mask (`vpcmpgtw`, or `vptestmd` on the f32 bits for
/// the positivity of `v`), the sign merged by `vpternlogd`, `vpmovwb` to bytes.
// PERF: ~10 instructions per 32 values instead of ~18 (m) and ~15 (v) on 32-bit lanes; in
// cache (2^12 elements, 1 thread, best of 10 alternating runs) the 8-bit step went from 0.62
// to 0.56 ns per parameter.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[inline(always)]
fn encode_pair_avx512<const M: bool>(
    v4: pulp::x86::V4,
    x: [pulp::f32x16; 2],
    inv_scale: pulp::f32x16,
) -> [u8; 32] {
    use core::arch::x86_64::__m512i;
    use pulp::bytemuck::cast;
    const fn top_halves() -> [u16; 32] {
        let mut index = [0u16; 32];
        let mut j = 0;
        while j < 32 {
            index[j] = 2 * j as u16 + 1;
            j += 1;
        }
        index
    }
    const SHIFT: u32 = 23 - M_MANT - 16;
    const _: () = assert!(M_MANT == V_MANT);
    let (f, bw) = (v4.avx512f, v4.avx512bw);
    let splat = |x: i16| f._mm512_set1_epi16(x);
    let y = [v4.mul_f32s(x[0], inv_scale), v4.mul_f32s(x[1], inv_scale)];
    let (y0, y1): (__m512i, __m512i) = (cast(y[0]), cast(y[1]));
    let high = bw._mm512_permutex2var_epi16(y0, cast(top_halves()), y1);
    let magnitude = f._mm512_and_si512(high, splat(0x7fff));
    let codes = if M {
        let rebias = splat(round_and_rebias(M_MANT, M_EMIN));
        let code = bw._mm512_srai_epi16::<SHIFT>(bw._mm512_add_epi16(magnitude, rebias));
        let normal = bw._mm512_cmpgt_epi16_mask(code, splat((1 << M_MANT) - 1));
        let sign = bw._mm512_srli_epi16::<8>(high);
        // code | (sign & 0x80)
        f._mm512_ternarylogic_epi32::<0xf8>(
            bw._mm512_maskz_mov_epi16(normal, code),
            sign,
            splat(0x80),
        )
    } else {
        let rebias = splat(round_and_rebias(V_MANT, V_EMIN));
        let code = bw._mm512_srai_epi16::<SHIFT>(bw._mm512_add_epi16(magnitude, rebias));
        let abs = f._mm512_set1_epi32(0x7fff_ffff);
        let positive = f._mm512_test_epi32_mask(y0, abs) as u32
            | (f._mm512_test_epi32_mask(y1, abs) as u32) << 16;
        bw._mm512_maskz_max_epi16(positive, code, splat(1 << V_MANT))
    };
    cast(bw._mm512_cvtepi16_epi8(codes))
}

/// [`encode`] of four AVX2 registers at once, on 16-bit lanes, with the same bits (see
/// [`encode_pair_avx512`] for why the top 16 bits of `x * inv_scale` suffice).
///
/// Two `vpackusdw` gather the top halves of 32 values into two registers, in-lane order; the
/// integer work runs on 16 lanes per instruction; `vpackuswb` and one `vpermd` put the bytes in
/// order. For `v` the zero test needs all 32 bits: `vpackusdw` of `|x|` itself saturates any
/// magnitude of 2^16 or more to 0xffff and keeps a smaller one, so a 16-bit lane is zero
/// exactly when its f32 is.
// PERF: ~28 instructions per 32 values instead of ~44 (m) and ~40 (v) on 32-bit lanes; in
// cache (2^12 elements, 1 thread, AVX2 forced on Zen 4, best of 8 alternating runs) the 8-bit
// step went from 0.74 to 0.66 ns per parameter.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn encode_quad_avx2<const M: bool>(
    v3: pulp::x86::V3,
    x: [pulp::f32x8; 4],
    inv_scale: pulp::f32x8,
) -> [u8; 32] {
    use core::arch::x86_64::__m256i;
    use pulp::bytemuck::cast;
    const SHIFT: i32 = (23 - M_MANT - 16) as i32;
    let (avx, avx2) = (v3.avx, v3.avx2);
    let y: [__m256i; 4] = [
        cast(v3.mul_f32s(x[0], inv_scale)),
        cast(v3.mul_f32s(x[1], inv_scale)),
        cast(v3.mul_f32s(x[2], inv_scale)),
        cast(v3.mul_f32s(x[3], inv_scale)),
    ];
    // Words in the order a0-3 b0-3 | a4-7 b4-7 and c0-3 d0-3 | c4-7 d4-7.
    let pack = |[a, b, c, d]: [__m256i; 4]| {
        [
            avx2._mm256_packus_epi32(a, b),
            avx2._mm256_packus_epi32(c, d),
        ]
    };
    let codes = if M {
        let high = pack([
            avx2._mm256_srli_epi32::<16>(y[0]),
            avx2._mm256_srli_epi32::<16>(y[1]),
            avx2._mm256_srli_epi32::<16>(y[2]),
            avx2._mm256_srli_epi32::<16>(y[3]),
        ]);
        let rebias = avx._mm256_set1_epi16(round_and_rebias(M_MANT, M_EMIN));
        let (magnitude, smallest) = (avx._mm256_set1_epi16(0x7fff), avx._mm256_set1_epi16(7));
        let sign_bit = avx._mm256_set1_epi16(0x80);
        let code = |high: __m256i| {
            let magnitude = avx2._mm256_and_si256(high, magnitude);
            let code = avx2._mm256_srai_epi16::<SHIFT>(avx2._mm256_add_epi16(magnitude, rebias));
            let normal = avx2._mm256_cmpgt_epi16(code, smallest);
            let sign = avx2._mm256_and_si256(avx2._mm256_srli_epi16::<8>(high), sign_bit);
            avx2._mm256_or_si256(avx2._mm256_and_si256(code, normal), sign)
        };
        [code(high[0]), code(high[1])]
    } else {
        let abs = avx._mm256_set1_epi32(0x7fff_ffff);
        let a = [
            avx2._mm256_and_si256(y[0], abs),
            avx2._mm256_and_si256(y[1], abs),
            avx2._mm256_and_si256(y[2], abs),
            avx2._mm256_and_si256(y[3], abs),
        ];
        let magnitude = pack([
            avx2._mm256_srli_epi32::<16>(a[0]),
            avx2._mm256_srli_epi32::<16>(a[1]),
            avx2._mm256_srli_epi32::<16>(a[2]),
            avx2._mm256_srli_epi32::<16>(a[3]),
        ]);
        let nonzero = pack(a);
        let rebias = avx._mm256_set1_epi16(round_and_rebias(V_MANT, V_EMIN));
        let (smallest, zero) = (
            avx._mm256_set1_epi16(1 << V_MANT),
            avx._mm256_setzero_si256(),
        );
        let code = |magnitude: __m256i, nonzero: __m256i| {
            let code = avx2._mm256_srai_epi16::<SHIFT>(avx2._mm256_add_epi16(magnitude, rebias));
            let is_zero = avx2._mm256_cmpeq_epi16(nonzero, zero);
            avx2._mm256_andnot_si256(is_zero, avx2._mm256_max_epi16(code, smallest))
        };
        [
            code(magnitude[0], nonzero[0]),
            code(magnitude[1], nonzero[1]),
        ]
    };
    // Bytes a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7, as dwords 0..8: put them in order.
    let bytes = avx2._mm256_packus_epi16(codes[0], codes[1]);
    let index: __m256i = cast([0u32, 4, 1, 5, 2, 6, 3, 7]);
    cast(avx2._mm256_permutevar8x32_epi32(bytes, index))
}

/// `(bits16 + C) >> (23 - mant - 16)` (arithmetic) is the re-biased code of the top 16 bits of
/// an f32 magnitude: `C` = the rounding half-ulp minus the bias shifted into place.
const fn round_and_rebias(mant: u32, emin: i32) -> i16 {
    let shift = 23 - mant - 16;
    let bias = (127 + emin - 1) << mant;
    (1i32 << (shift - 1)).wrapping_sub(bias << shift) as i16
}

/// The largest `|x|` of a slice (0 for an empty one), with two accumulators: the maximum is
/// exact, so the order does not change it.
#[inline(always)]
fn abs_max_of<S: Simd>(simd: S, x: &[f32]) -> f32 {
    // PERF: two named accumulators; an array of them indexed in the loop went to memory, updated
    // with masked stores (microcoded on Zen 3).
    let (mut a, mut b) = (simd.splat_u32s(0), simd.splat_u32s(0));
    let (body, tail) = S::as_simd_f32s(x);
    let pairs = body.chunks_exact(2);
    if let [x] = pairs.remainder() {
        b = abs_max(simd, b, *x);
    }
    for pair in pairs {
        a = abs_max(simd, a, pair[0]);
        b = abs_max(simd, b, pair[1]);
    }
    b = abs_max(simd, b, simd.partial_load_f32s(tail));
    reduce_max_bits(simd.max_u32s(a, b))
}

/// The largest lane of `bits` (the bits of non-negative floats), as the float.
#[inline(always)]
fn reduce_max_bits<U: pulp::bytemuck::Pod>(bits: U) -> f32 {
    let lanes: &[u32] = pulp::bytemuck::cast_slice(core::slice::from_ref(&bits));
    f32::from_bits(lanes.iter().copied().max().unwrap_or(0))
}

/// `1 / absmax`, or 0 for an all-zero block (its codes are then all 0).
fn inverse_scale(absmax: f32) -> f32 {
    if absmax > 0.0 {
        (1.0 / absmax).min(f32::MAX)
    } else {
        0.0
    }
}

pub(crate) struct QuantBlock<'a> {
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    pub m_codes: &'a mut [u8],
    pub m_scales: &'a mut [f32],
    pub v_codes: &'a mut [u8],
    pub v_scales: &'a mut [f32],
}

split_fields!(QuantBlock {
    param,
    grad,
    m_codes,
    m_scales: per(QUANT_BLOCK),
    v_codes,
    v_scales: per(QUANT_BLOCK),
});

struct QuantKernel<'a, const L2: bool> {
    k: &'a AdamCoefficients,
    block: QuantBlock<'a>,
}

impl<const L2: bool> WithSimd for QuantKernel<'_, L2> {
    type Output = ();

    /// Per quantization block: decode `m`, `v` (as the body loads them, with AVX-512; else into
    /// f32 buffers first), run the f32 update into the buffers while taking the new absmax of
    /// each, encode. With AVX-512 the encoding of a block runs inside the body of the next one
    /// (see [`Pending`]); the last block's after the loop.
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = Splat::new(simd, self.k);
        let QuantBlock {
            param,
            grad,
            m_codes,
            m_scales,
            v_codes,
            v_scales,
        } = self.block;
        // Two pairs of L1 buffers: the block being updated and the one being encoded.
        let mut buffers = [[[0.0f32; QUANT_BLOCK]; 2]; 2];
        let len = param.len();
        // Addresses for the prefetches (hints, never dereferenced).
        let bases = (
            param.as_ptr(),
            grad.as_ptr(),
            m_codes.as_ptr(),
            v_codes.as_ptr(),
        );
        // PERF: with AVX-512's 32 registers, the whole registers are decoded as the update
        // loads them, which saves the buffers' store and reload (in cache, 1 thread: 0.56 to
        // 0.51 ns per parameter); with AVX2's 16 the constants spill (0.72 to 0.76), so
        // AVX2 and scalar decode everything into the buffers first.
        let decode_in_loads = lanes::<S>() == MAX_LANES;
        let mut carried: Option<Encoded<'_>> = None;
        for (b, ((((p, g), mc), vc), (ms, vs))) in param
            .chunks_mut(QUANT_BLOCK)
            .zip(grad.chunks(QUANT_BLOCK))
            .zip(m_codes.chunks_mut(QUANT_BLOCK))
            .zip(v_codes.chunks_mut(QUANT_BLOCK))
            .zip(m_scales.iter_mut().zip(v_scales.iter_mut()))
            .enumerate()
        {
            // The prefetches of the body: `PREFETCH_AHEAD` elements on from each register,
            // within this kernel's slices.
            let start = b * QUANT_BLOCK;
            let ahead = Ahead {
                p: bases.0.wrapping_add(start),
                g: bases.1.wrapping_add(start),
                codes: [bases.2.wrapping_add(start), bases.3.wrapping_add(start)],
                within: len - start,
            };
            let [first_pair, second_pair] = &mut buffers;
            let (current, previous) = if b % 2 == 0 {
                (first_pair, &*second_pair)
            } else {
                (second_pair, &*first_pair)
            };
            let [m, v] = current;
            let n = p.len();
            let (m, v) = (&mut m[..n], &mut v[..n]);
            let scales = [simd.splat_f32s(*ms), simd.splat_f32s(*vs)];
            // The previous block, encoded inside this body (AVX-512) or before it.
            let mut pending = carried.take().map(|e| e.resume(simd, previous));
            if !decode_in_loads {
                if let Some(pending) = &mut pending {
                    pending.encode_to(simd, QUANT_BLOCK);
                }
                pending = None;
            }
            // Whole registers through `QuantRegisters` (the absmax taken as the moments are
            // stored), the rest (the tensor's last block only) through the masked tail.
            let whole = n / lanes::<S>() * lanes::<S>();
            let first = if decode_in_loads { whole } else { 0 };
            decode_into::<S, true>(simd, &mc[first..], &mut m[first..], scales[0]);
            decode_into::<S, false>(simd, &vc[first..], &mut v[first..], scales[1]);
            let (p, p_tail) = p.split_at_mut(whole);
            let (g, g_tail) = g.split_at(whole);
            let (m_body, m_tail) = m.split_at_mut(whole);
            let (v_body, v_tail) = v.split_at_mut(whole);
            let codes = decode_in_loads.then_some([&mc[..whole], &vc[..whole]]);
            // PERF: one multiply per decoded value instead of two where the scales allow it
            // (in cache, 1 thread: 0.52 to 0.49 ns per parameter).
            let (m_max, v_max, pending) = match fold_rebias(*ms, *vs) {
                Some([fm, fv]) if decode_in_loads => {
                    let scales = [simd.splat_f32s(fm), simd.splat_f32s(fv)];
                    let mut regs = QuantRegisters::<S, true>::new(
                        p, g, m_body, v_body, codes, scales, pending, ahead, simd,
                    );
                    adam_body::<S, false, L2, _>(simd, &c, &mut regs);
                    (regs.m_max, regs.v_max, regs.pending)
                }
                _ => {
                    let mut regs = QuantRegisters::<S, false>::new(
                        p, g, m_body, v_body, codes, scales, pending, ahead, simd,
                    );
                    adam_body::<S, false, L2, _>(simd, &c, &mut regs);
                    (regs.m_max, regs.v_max, regs.pending)
                }
            };
            if let Some(mut pending) = pending {
                pending.encode_to(simd, QUANT_BLOCK);
            }
            let tail = AdamBlock {
                param: p_tail,
                grad: g_tail,
                exp_avg: &mut *m_tail,
                exp_avg_sq: &mut *v_tail,
                max_exp_avg_sq: &mut [],
            };
            adam_registers_of::<S, false, L2>(simd, &c, tail);
            *ms = reduce_max_bits(m_max).max(abs_max_of(simd, m_tail));
            *vs = reduce_max_bits(v_max).max(abs_max_of(simd, v_tail));
            carried = Some(Encoded {
                codes: [mc, vc],
                inv_scales: [inverse_scale(*ms), inverse_scale(*vs)],
            });
        }
        // The last block: its buffers are the pair of the last index.
        let last = quant_scales_len(len).wrapping_sub(1) % 2;
        if let Some(e) = carried {
            e.resume(simd, &buffers[last]).encode_to(simd, QUANT_BLOCK);
        }
    }
}

/// A block whose new moments wait in a pair of L1 buffers to be encoded: its code slices and
/// the inverses of its new scales.
struct Encoded<'a> {
    codes: [&'a mut [u8]; 2],
    inv_scales: [f32; 2],
}

impl<'a> Encoded<'a> {
    /// Its encoding, from the buffers that hold its moments.
    #[inline(always)]
    fn resume<'b, S: Simd>(self, simd: S, buffers: &'b [[f32; QUANT_BLOCK]; 2]) -> Pending<'b, S>
    where
        'a: 'b,
    {
        let n = self.codes[0].len();
        Pending {
            values: [&buffers[0][..n], &buffers[1][..n]],
            codes: self.codes,
            inv_scales: self.inv_scales.map(|x| simd.splat_f32s(x)),
            done: 0,
        }
    }
}

/// The encoding of the previous block, a range at a time: the body of the next block encodes
/// the elements of its own register range at every iteration ([`AdamRegisters::interleave`]),
/// so the encoder's integer work runs beside the update's divisions and square roots (which
/// keep the divider busy and the other ports idle) instead of after them.
// PERF: in cache (2^14, 1 thread, Intel Xeon) the step spent about a fifth of its samples in
// the encoding loops after the body, while the body waits on the divider; interleaved, 0.60 to
// 0.58 ns per parameter (0.51 with the body's prefetches). See docs/performance.md.
struct Pending<'a, S: Simd> {
    values: [&'a [f32]; 2],
    codes: [&'a mut [u8]; 2],
    inv_scales: [S::f32s; 2],
    /// Elements encoded so far.
    done: usize,
}

impl<S: Simd> Pending<'_, S> {
    /// Encodes both moments up to element `end` (at most the block's length).
    #[inline(always)]
    fn encode_to(&mut self, simd: S, end: usize) {
        let end = end.min(self.values[0].len());
        if end > self.done {
            let range = self.done..end;
            let [m, v] = &mut self.codes;
            encode_into::<S, true>(
                simd,
                &self.values[0][range.clone()],
                &mut m[range.clone()],
                self.inv_scales[0],
            );
            encode_into::<S, false>(
                simd,
                &self.values[1][range.clone()],
                &mut v[range],
                self.inv_scales[1],
            );
            self.done = end;
        }
    }
}

/// The operands of one quantization block, whole registers: `theta`, `g`, the moments' codes
/// (AVX-512) or their decoded values, and the L1 buffers that take the new moments; the absmax
/// of the new moments (as bits) accumulates as they are stored, which saves a pass over the
/// buffers.
struct QuantRegisters<'a, S: Simd, const FOLDED: bool> {
    p: &'a mut [S::f32s],
    g: &'a [S::f32s],
    m: &'a mut [S::f32s],
    v: &'a mut [S::f32s],
    /// The codes of `m` and `v` when they are decoded as they are loaded (else the buffers
    /// hold the decoded values), and their scales (`FOLDED`: times the rebias, see
    /// [`fold_rebias`]).
    codes: Option<[&'a [u8]; 2]>,
    scales: [S::f32s; 2],
    m_max: S::u32s,
    v_max: S::u32s,
    /// The previous block, encoded as the body runs (see [`Pending`]).
    pending: Option<Pending<'a, S>>,
    ahead: Ahead,
}

/// Where the operands of this block and the ones after it lie, for the body's prefetches
/// (addresses only: the block's own slices do not reach that far).
#[derive(Clone, Copy)]
struct Ahead {
    p: *const f32,
    g: *const f32,
    codes: [*const u8; 2],
    /// Elements from the block's first to the end of the kernel's slices.
    within: usize,
}

impl<'a, S: Simd, const FOLDED: bool> QuantRegisters<'a, S, FOLDED> {
    /// Equally long slices of whole registers.
    #[inline(always)]
    // The block's operands, and the work that overlaps its body: one call site per `FOLDED`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &'a mut [f32],
        g: &'a [f32],
        m: &'a mut [f32],
        v: &'a mut [f32],
        codes: Option<[&'a [u8]; 2]>,
        scales: [S::f32s; 2],
        pending: Option<Pending<'a, S>>,
        ahead: Ahead,
        simd: S,
    ) -> Self {
        let (p, _) = S::as_mut_simd_f32s(p);
        let n = p.len();
        let width = lanes::<S>();
        Self {
            p,
            g: &S::as_simd_f32s(g).0[..n],
            m: &mut S::as_mut_simd_f32s(m).0[..n],
            v: &mut S::as_mut_simd_f32s(v).0[..n],
            codes: codes.map(|[m, v]| [&m[..n * width], &v[..n * width]]),
            scales,
            m_max: simd.splat_u32s(0),
            v_max: simd.splat_u32s(0),
            pending,
            ahead,
        }
    }
}

impl<S: Simd, const FOLDED: bool> AdamRegisters<S> for QuantRegisters<'_, S, FOLDED> {
    const PREFETCH: dispatch::PrefetchKind = dispatch::PrefetchKind::Heavy;

    #[inline(always)]
    fn len(&self) -> usize {
        self.p.len()
    }

    #[inline(always)]
    fn load(&mut self, simd: S, i: usize) -> [S::f32s; 5] {
        let (m, v) = match self.codes {
            Some([m, v]) => {
                let width = lanes::<S>();
                let m = load_bytes::<S, true>(simd, &m[i * width..][..width]);
                let v = load_bytes::<S, false>(simd, &v[i * width..][..width]);
                (
                    decode::<S, true, FOLDED>(simd, m, self.scales[0]),
                    decode::<S, false, FOLDED>(simd, v, self.scales[1]),
                )
            }
            None => (self.m[i], self.v[i]),
        };
        [self.p[i], self.g[i], m, v, simd.splat_f32s(0.0)]
    }

    #[inline(always)]
    fn store_moments(&mut self, simd: S, i: usize, m: S::f32s, v: S::f32s, _: S::f32s) {
        self.m[i] = m;
        self.v[i] = v;
        self.m_max = abs_max(simd, self.m_max, m);
        self.v_max = abs_max(simd, self.v_max, v);
    }

    #[inline(always)]
    fn store_theta(&mut self, _: S, i: usize, theta: S::f32s) {
        self.p[i] = theta;
    }

    #[inline(always)]
    fn prefetch(&self, simd: S, i: usize) {
        let at = i * lanes::<S>();
        if at < self.ahead.within {
            for k in (0..UNROLL).step_by(registers_per_line::<S>()) {
                let line = at + k * lanes::<S>();
                prefetch_ptr(&simd, self.ahead.p.wrapping_add(line));
                prefetch_ptr(&simd, self.ahead.g.wrapping_add(line));
            }
            prefetch_ptr(&simd, self.ahead.codes[0].wrapping_add(at));
            prefetch_ptr(&simd, self.ahead.codes[1].wrapping_add(at));
        }
    }

    #[inline(always)]
    fn interleave(&mut self, simd: S, i: usize) {
        if let Some(pending) = &mut self.pending {
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            if let Some(v4) = convert::avx512(&simd) {
                // One pair of registers per moment: the `UNROLL` registers from `i`.
                const _: () = assert!(UNROLL == 2);
                let j = i * lanes::<S>();
                if pending.done == j && j + 32 <= pending.values[0].len() {
                    let inv: [pulp::f32x16; 2] = pulp::bytemuck::cast(pending.inv_scales);
                    let [m, v] = &mut pending.codes;
                    let x = pulp::bytemuck::cast_slice::<f32, pulp::f32x16>(
                        &pending.values[0][j..j + 32],
                    );
                    m[j..j + 32].copy_from_slice(&encode_pair_avx512::<true>(
                        v4,
                        [x[0], x[1]],
                        inv[0],
                    ));
                    let x = pulp::bytemuck::cast_slice::<f32, pulp::f32x16>(
                        &pending.values[1][j..j + 32],
                    );
                    v[j..j + 32].copy_from_slice(&encode_pair_avx512::<false>(
                        v4,
                        [x[0], x[1]],
                        inv[1],
                    ));
                    pending.done = j + 32;
                    return;
                }
            }
            pending.encode_to(simd, (i + UNROLL) * lanes::<S>());
        }
    }
}

/// The buffers of one tensor with 8-bit optimizer state (layout: module docs).
#[derive(Debug)]
pub struct QuantStateTensor<'a> {
    /// The parameters (`theta`), updated in place.
    pub param: &'a mut [f32],
    /// The gradient (read only).
    pub grad: &'a [f32],
    /// One byte per element: the signed `m` code.
    pub exp_avg_codes: &'a mut [u8],
    /// `ceil(len / 256)` f32 scales of `m`.
    pub exp_avg_scales: &'a mut [f32],
    /// One byte per element: the `v` code.
    pub exp_avg_sq_codes: &'a mut [u8],
    /// `ceil(len / 256)` f32 scales of `v`.
    pub exp_avg_sq_scales: &'a mut [f32],
}

impl QuantStateTensor<'_> {
    /// Lengths agree, and the scales can be those of a state.
    fn check(&self) -> Result<()> {
        check_quant_lengths(
            self.param.len(),
            &[
                ("grad", self.grad.len()),
                ("exp_avg_codes", self.exp_avg_codes.len()),
                ("exp_avg_sq_codes", self.exp_avg_sq_codes.len()),
            ],
            &[
                ("exp_avg_scales", self.exp_avg_scales.len()),
                ("exp_avg_sq_scales", self.exp_avg_sq_scales.len()),
            ],
        )?;
        check_scales("exp_avg_scales", self.exp_avg_scales)?;
        check_scales("exp_avg_sq_scales", self.exp_avg_sq_scales)
    }

    fn block(&mut self) -> QuantBlock<'_> {
        QuantBlock {
            param: self.param,
            grad: self.grad,
            m_codes: self.exp_avg_codes,
            m_scales: self.exp_avg_scales,
            v_codes: self.exp_avg_sq_codes,
            v_scales: self.exp_avg_sq_scales,
        }
    }
}

fn check_quant_lengths(n: usize, named: &[(&str, usize)], scales: &[(&str, usize)]) -> Result<()> {
    check_lengths(n, named)?;
    check_lengths(quant_scales_len(n), scales)
}

/// Every value in `[low, f32::MAX]` (so finite), else [`ErrorKind::InvalidArgument`] naming
/// the first one outside.
fn check_range(name: &str, values: &[f32], low: f32, what: &str) -> Result<()> {
    // One vectorizable pass; the position only on failure.
    let inside = |x: &f32| (low..=f32::MAX).contains(x);
    if values.iter().fold(true, |all, x| all & inside(x)) {
        return Ok(());
    }
    let (i, x) = values
        .iter()
        .enumerate()
        .find(|(_, x)| !inside(x))
        .expect("a value is outside");
    Err(Error::new(
        ErrorKind::InvalidArgument,
        format!("{name}[{i}] = {x}: must be {what}"),
    ))
}

/// Block scales are absmax values: finite and >= 0. A corrupted checkpoint is refused instead
/// of stepping the parameters into NaN.
fn check_scales(name: &str, scales: &[f32]) -> Result<()> {
    check_range(name, scales, 0.0, "finite and >= 0 (a block's absmax)")
}

/// One Adam/AdamW step with `m`, `v` stored as 8-bit block-quantized codes (module docs).
/// A zero-initialized state (all codes and scales 0) is the usual `m = v = 0` start.
/// Errors as [`crate::adam_step`] (scales must hold `ceil(len / 256)` values), and
/// [`ErrorKind::InvalidArgument`] for a scale that is not finite or is negative (a corrupted
/// state); nothing is written on error.
pub fn adam_step_8bit_state(
    cfg: &AdamConfig,
    step: u64,
    tensor: QuantStateTensor<'_>,
) -> Result<()> {
    adam_step_8bit_state_with(Isa::detect(), Par::Pool, cfg, step, tensor)
}

/// [`adam_step_8bit_state`] on a chosen instruction set and parallelism.
pub fn adam_step_8bit_state_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    mut tensor: QuantStateTensor<'_>,
) -> Result<()> {
    cfg.validate()?;
    check_step(step)?;
    check_no_amsgrad(cfg)?;
    tensor.check()?;
    let par = step_par(par, tensor.param.len());
    let k = AdamCoefficients::new(cfg, step);
    if cfg.check_finite && !grad_is_finite(isa, par, tensor.grad, k.grad_factor)? {
        return Err(non_finite_error());
    }
    dispatch::map_reduce_blocks(
        par,
        tensor.block(),
        BLOCK,
        &|block| update_quant_block(isa, &k, block),
        &|(), ()| (),
    )
}

/// [`adam_step_8bit_state`] over a list of tensors in one call (PyTorch's tensor-list form):
/// every tensor is checked, and with `check_finite` every gradient scanned, before any is
/// written; threads share the work by elements, not by tensor. The result is that of one call
/// per tensor. Errors as [`adam_step_8bit_state`], naming the tensor; nothing is written on
/// error.
pub fn adam_step_8bit_state_multi(
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [QuantStateTensor<'_>],
) -> Result<()> {
    adam_step_8bit_state_multi_with(Isa::detect(), Par::Pool, cfg, step, tensors)
}

/// [`adam_step_8bit_state_multi`] on a chosen instruction set and parallelism.
pub fn adam_step_8bit_state_multi_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [QuantStateTensor<'_>],
) -> Result<()> {
    cfg.validate()?;
    check_step(step)?;
    check_no_amsgrad(cfg)?;
    for (i, t) in tensors.iter().enumerate() {
        in_tensor(i, t.check())?;
    }
    let elements: usize = tensors.iter().map(|t| t.param.len()).sum();
    let par = step_par(par, elements);
    let k = AdamCoefficients::new(cfg, step);
    // Cut only between quantization blocks.
    let batches = balanced_batches(tensors.iter_mut().map(|t| t.block()), BLOCK, QUANT_BLOCK);
    let finite = |b: &QuantBlock<'_>| finite_on_thread(isa, b.grad, k.grad_factor);
    step_batches(par, batches, cfg.check_finite, finite, |block| {
        update_quant_block(isa, &k, block)
    })
}

/// The 8-bit step of one block on the calling thread.
fn update_quant_block(isa: Isa, k: &AdamCoefficients, block: QuantBlock<'_>) {
    if k.l2 != 0.0 {
        isa.run(QuantKernel::<true> { k, block })
    } else {
        isa.run(QuantKernel::<false> { k, block })
    }
}

/// Which moment a code buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// `m` (`exp_avg`): signed e4m3 codes.
    ExpAvg,
    /// `v` (`exp_avg_sq`): unsigned e5m3 codes; values must be >= 0.
    ExpAvgSq,
}

struct Quantize<'a> {
    moment: Moment,
    values: &'a [f32],
    codes: &'a mut [u8],
    scales: &'a mut [f32],
}

impl WithSimd for Quantize<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        for ((x, c), s) in self
            .values
            .chunks(QUANT_BLOCK)
            .zip(self.codes.chunks_mut(QUANT_BLOCK))
            .zip(self.scales.iter_mut())
        {
            *s = abs_max_of(simd, x);
            let inv = simd.splat_f32s(inverse_scale(*s));
            match self.moment {
                Moment::ExpAvg => encode_into::<S, true>(simd, x, c, inv),
                Moment::ExpAvgSq => encode_into::<S, false>(simd, x, c, inv),
            }
        }
    }
}

struct Dequantize<'a> {
    moment: Moment,
    codes: &'a [u8],
    scales: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for Dequantize<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        for ((c, o), &s) in self
            .codes
            .chunks(QUANT_BLOCK)
            .zip(self.out.chunks_mut(QUANT_BLOCK))
            .zip(self.scales)
        {
            let scale = simd.splat_f32s(s);
            match self.moment {
                Moment::ExpAvg => decode_into::<S, true>(simd, c, o, scale),
                Moment::ExpAvgSq => decode_into::<S, false>(simd, c, o, scale),
            }
        }
    }
}

/// Encodes f32 moment values into 8-bit codes and per-block scales (the step's encoding), e.g.
/// to import a checkpoint. `values` must be finite (and >= 0 for `ExpAvgSq`).
pub fn quantize_state(
    isa: Isa,
    moment: Moment,
    values: &[f32],
    codes: &mut [u8],
    scales: &mut [f32],
) -> Result<()> {
    check_quant_lengths(
        values.len(),
        &[("codes", codes.len())],
        &[("scales", scales.len())],
    )?;
    match moment {
        Moment::ExpAvg => check_range("values", values, -f32::MAX, "finite")?,
        Moment::ExpAvgSq => check_range("values", values, 0.0, "finite and >= 0 for exp_avg_sq")?,
    }
    isa.run(Quantize {
        moment,
        values,
        codes,
        scales,
    });
    Ok(())
}

/// Decodes 8-bit codes and scales to f32 (exactly the values the step decodes). Scales must be
/// finite and >= 0 ([`ErrorKind::InvalidArgument`] otherwise, nothing written).
pub fn dequantize_state(
    isa: Isa,
    moment: Moment,
    codes: &[u8],
    scales: &[f32],
    out: &mut [f32],
) -> Result<()> {
    check_quant_lengths(
        out.len(),
        &[("codes", codes.len())],
        &[("scales", scales.len())],
    )?;
    check_scales("scales", scales)?;
    isa.run(Dequantize {
        moment,
        codes,
        scales,
        out,
    });
    Ok(())
}
