//! # Register conversions between f32 and 16- and 8-bit formats
//!
//! Shared by the mixed-precision and compressed-state Adam kernels; written with pulp's
//! portable integer operations (plus a few AVX2 and AVX-512 instructions that give the same
//! bits), so every instruction set agrees bitwise (NaN payloads aside, see f16).
//!
//! * **bf16** (the top 16 bits of an f32): widening is a 16-bit shift; narrowing rounds to
//!   nearest-even (`(x + 0x7fff + lsb) >> 16`), or stochastically (`(x + r16) >> 16`), and keeps
//!   NaN a NaN (quieted, sign kept).
//! * **f16** (IEEE binary16) and the 8-bit state codes are all "minifloats": `MANT` fraction bits
//!   and a smallest normal exponent `EMIN`, with gradual underflow. [`encode_minifloat`] rounds an
//!   f32 magnitude to such a code with integer arithmetic only (nearest-even or stochastic, the
//!   same code path for normal and subnormal results), [`decode_minifloat`] widens exactly.
//!   On AVX-512, f16 goes through the hardware conversion (`vcvtph2ps`, and `vcvtps2ph` for
//!   nearest-even), which pulp's AVX-512 token wraps safely; pulp's AVX2 token (x86-64-v3) does
//!   not include F16C, and `core::arch` would need `unsafe` outside `src/ffi/`, so AVX2 and
//!   scalar use this software conversion, and so does stochastic rounding everywhere. All paths
//!   give the same bits for every non-NaN value (see the tests against the `half` crate).
//! * Memory holds 8- and 16-bit values; registers hold one value per 32-bit lane. [`load_u16`]
//!   and friends widen through a register-sized stack array (which LLVM turns into
//!   `vpmovzxwd`-style loads); a shorter slice is zero-padded, so the masked tail of every kernel
//!   runs the same code as the body.
//! * Stochastic rounding draws its bits from [`random_bits`], a counter-based hash of
//!   `(key, element index)` where `key` mixes `(seed, step, stream)`: the bits of an element never
//!   depend on how the work was split over threads.
//!
//! **Reference**: [`crate::reference::half_to_f32`], [`crate::reference::f32_to_half`] and
//! [`crate::reference::stochastic_bits`], bit for bit (`tests/adam_mixed.rs`).

use pulp::Simd;

/// Most 32-bit lanes of any backend (AVX-512: 16).
pub(crate) const MAX_LANES: usize = 16;

#[inline(always)]
pub(crate) fn lanes<S: Simd>() -> usize {
    core::mem::size_of::<S::u32s>() / 4
}

#[inline(always)]
fn from_array<S: Simd>(buf: &[u32; MAX_LANES]) -> S::u32s {
    S::as_simd_u32s(&buf[..lanes::<S>()]).0[0]
}

#[inline(always)]
fn to_array<S: Simd>(x: S::u32s) -> [u32; MAX_LANES] {
    let mut buf = [0u32; MAX_LANES];
    S::as_mut_simd_u32s(&mut buf[..lanes::<S>()]).0[0] = x;
    buf
}

/// The AVX2 token, when `S` is it: lets the 8/16-bit loads and stores below use AVX2's widening
/// and packing instructions (through pulp's safe wrappers) instead of a round trip through a
/// stack array, which costs a store-forwarding stall per register. The test is on types, so it
/// folds away after monomorphization.
#[inline(always)]
pub(crate) fn avx2<S: Simd>(simd: &S) -> Option<pulp::x86::V3> {
    #[cfg(target_arch = "x86_64")]
    {
        token(simd)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = simd;
        None
    }
}

/// The AVX-512 token, when `S` is it (see [`avx2`]).
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[inline(always)]
pub(crate) fn avx512<S: Simd>(simd: &S) -> Option<pulp::x86::V4> {
    token(simd)
}

/// `simd` as the token type `T`, when it is one.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn token<S: Simd, T: Copy + 'static>(simd: &S) -> Option<T> {
    (simd as &dyn core::any::Any).downcast_ref::<T>().copied()
}

/// Asks for the cache line that holds `x[at]` (`prefetcht0`), when `at` is inside `x` and the
/// instruction set has the instruction (AVX2 and AVX-512 here; a no-op elsewhere). A hint: it
/// changes no value.
#[inline(always)]
pub(crate) fn prefetch<S: Simd, T>(simd: &S, x: &[T], at: usize) {
    if let Some(p) = x.get(at) {
        prefetch_ptr(simd, p as *const T);
    }
}

/// [`prefetch`] of the line at address `p` (a hint: `p` is never dereferenced, and need not
/// point into an allocation).
#[inline(always)]
pub(crate) fn prefetch_ptr<S: Simd, T>(simd: &S, p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::_MM_HINT_T0;
        let p = p.cast::<i8>();
        #[cfg(feature = "avx512")]
        if let Some(v4) = avx512(simd) {
            v4.sse._mm_prefetch::<_MM_HINT_T0>(p);
            return;
        }
        if let Some(v3) = avx2(simd) {
            v3.sse._mm_prefetch::<_MM_HINT_T0>(p);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (simd, p);
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
use core::arch::x86_64::__m512;
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{__m128i, __m256i};
#[cfg(target_arch = "x86_64")]
use pulp::bytemuck::cast;

/// Widens up to one register of u16 (zero padding past `src.len()`).
#[inline(always)]
pub(crate) fn load_u16<S: Simd>(simd: S, src: &[u16]) -> S::u32s {
    #[cfg(target_arch = "x86_64")]
    if let (Some(v3), Ok(a)) = (avx2(&simd), <[u16; 8]>::try_from(src)) {
        // PERF: one vpmovzxwd.
        return cast::<pulp::u32x8, S::u32s>(v3.convert_u16x8_to_u32x8(cast(a)));
    }
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let (Some(v4), Ok(a)) = (avx512(&simd), <[u16; 16]>::try_from(src)) {
        return cast::<pulp::u32x16, S::u32s>(v4.convert_u16x16_to_u32x16(cast(a)));
    }
    let _ = simd;
    let mut buf = [0u32; MAX_LANES];
    for (b, &s) in buf.iter_mut().zip(&src[..src.len().min(lanes::<S>())]) {
        *b = s as u32;
    }
    from_array::<S>(&buf)
}

/// Stores the low 16 bits of the first `dst.len()` lanes (values must fit in 16 bits).
#[inline(always)]
pub(crate) fn store_u16<S: Simd>(simd: S, dst: &mut [u16], x: S::u32s) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(v3), true) = (avx2(&simd), dst.len() == 8) {
        // PERF: vpackusdw (in-lane) + vpermq gathers the 8 halves into the low 128 bits.
        let x: __m256i = cast(x);
        let packed = v3.avx2._mm256_packus_epi32(x, x);
        let ordered = v3.avx2._mm256_permute4x64_epi64::<0b00_00_10_00>(packed);
        let low: __m128i = v3.avx._mm256_castsi256_si128(ordered);
        dst.copy_from_slice(&cast::<__m128i, [u16; 8]>(low));
        return;
    }
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let (Some(v4), true) = (avx512(&simd), dst.len() == 16) {
        // PERF: one vpmovdw.
        let narrow = v4.convert_u32x16_to_u16x16(cast::<S::u32s, pulp::u32x16>(x));
        dst.copy_from_slice(&cast::<pulp::u16x16, [u16; 16]>(narrow));
        return;
    }
    let _ = simd;
    let buf = to_array::<S>(x);
    let n = dst.len().min(lanes::<S>());
    for (d, &b) in dst[..n].iter_mut().zip(&buf) {
        *d = b as u16;
    }
}

/// Widens up to one register of bytes, as `i8` (sign-extended) if `SIGNED`, else as `u8`
/// (zero padding past `src.len()`).
#[inline(always)]
pub(crate) fn load_bytes<S: Simd, const SIGNED: bool>(simd: S, src: &[u8]) -> S::u32s {
    #[cfg(target_arch = "x86_64")]
    if let (Some(v3), Ok(a)) = (avx2(&simd), <[u8; 8]>::try_from(src)) {
        // PERF: one vpmovsxbd / vpmovzxbd.
        let mut wide = [0u8; 16];
        wide[..8].copy_from_slice(&a);
        return if SIGNED {
            cast::<pulp::i32x8, S::u32s>(v3.convert_i8x16_to_i32x8(cast(wide)))
        } else {
            cast::<pulp::u32x8, S::u32s>(v3.convert_u8x16_to_u32x8(cast(wide)))
        };
    }
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let (Some(v4), Ok(a)) = (avx512(&simd), <[u8; 16]>::try_from(src)) {
        // PERF: one vpmovsxbd / vpmovzxbd.
        return if SIGNED {
            cast::<pulp::i32x16, S::u32s>(v4.convert_i8x16_to_i32x16(cast(a)))
        } else {
            cast::<pulp::u32x16, S::u32s>(v4.convert_u8x16_to_u32x16(cast(a)))
        };
    }
    let _ = simd;
    let mut buf = [0u32; MAX_LANES];
    for (b, &s) in buf.iter_mut().zip(&src[..src.len().min(lanes::<S>())]) {
        *b = if SIGNED {
            s as i8 as i32 as u32
        } else {
            s as u32
        };
    }
    from_array::<S>(&buf)
}

/// Stores the low 8 bits of the first `dst.len()` lanes (values must fit in 8 bits).
#[inline(always)]
pub(crate) fn store_u8<S: Simd>(simd: S, dst: &mut [u8], x: S::u32s) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(v3), true) = (avx2(&simd), dst.len() == 8) {
        // PERF: two in-lane packs, then one dword permute brings both halves together.
        let x: __m256i = cast(x);
        let words = v3.avx2._mm256_packus_epi32(x, x);
        let bytes = v3.avx2._mm256_packus_epi16(words, words);
        let index: __m256i = cast([0u32, 4, 0, 0, 0, 0, 0, 0]);
        let ordered = v3.avx2._mm256_permutevar8x32_epi32(bytes, index);
        let low: [u8; 16] = cast(v3.avx._mm256_castsi256_si128(ordered));
        dst.copy_from_slice(&low[..8]);
        return;
    }
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let (Some(v4), true) = (avx512(&simd), dst.len() == 16) {
        // PERF: one vpmovdb.
        let narrow = v4.convert_u32x16_to_u8x16(cast::<S::u32s, pulp::u32x16>(x));
        dst.copy_from_slice(&cast::<pulp::u8x16, [u8; 16]>(narrow));
        return;
    }
    let _ = simd;
    let buf = to_array::<S>(x);
    let n = dst.len().min(lanes::<S>());
    for (d, &b) in dst[..n].iter_mut().zip(&buf) {
        *d = b as u8;
    }
}

/// Elements staged per chunk by the kernels that convert to and from f32 (the 8-bit state's
/// quantization block has the same length): four 1 KB f32 buffers at most, in L1.
pub(crate) const CHUNK: usize = 256;

/// The length of the first chunk of a block whose f32 stream starts at `x`: the elements
/// before the first register-aligned address when the block is long (split loads cost ~10%
/// on Zen 3, see the f32 kernel), so the following chunks are aligned; [`CHUNK`] otherwise.
#[inline(always)]
pub(crate) fn first_chunk<S: Simd>(x: &[f32]) -> usize {
    let width = core::mem::size_of::<S::f32s>();
    let misaligned = x.as_ptr() as usize % width;
    if x.len() >= 4096 && misaligned != 0 {
        (width - misaligned) / core::mem::size_of::<f32>()
    } else {
        CHUNK
    }
}

/// `[0, 1, 2, ...]`, one per lane.
#[inline(always)]
pub(crate) fn iota<S: Simd>() -> S::u32s {
    let mut buf = [0u32; MAX_LANES];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = i as u32;
    }
    from_array::<S>(&buf)
}

#[inline(always)]
pub(crate) fn shr<S: Simd>(simd: S, x: S::u32s, amount: u32) -> S::u32s {
    simd.wrapping_dyn_shr_u32s(x, simd.splat_u32s(amount))
}

#[inline(always)]
fn shl<S: Simd>(simd: S, x: S::u32s, amount: u32) -> S::u32s {
    simd.wrapping_dyn_shl_u32s(x, simd.splat_u32s(amount))
}

/// SplitMix64's finalizer: mixes the per-call key from `(seed, step, stream)` once, in scalar.
pub(crate) fn stream_key(seed: u64, step: u64, stream: u64) -> u64 {
    let mut z = seed
        ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
    for _ in 0..2 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

/// The 32-bit key of the elements `[start, start + 2^32)` of a stream: the high half of the
/// element index is folded in here, the low half per lane in [`random_bits`].
pub(crate) fn block_key(key: u64, start: usize) -> u32 {
    let hi = (start as u64) >> 32;
    let k = stream_key(key, hi, 0x5eed);
    (k ^ (k >> 32)) as u32
}

/// 32 random bits per lane for the elements `index` (low 32 bits of the element index) under
/// `key`: Wellons' `lowbias32` hash of `index * golden ^ key`. Counter-based: any split of the
/// work over threads draws the same bits for the same element.
#[inline(always)]
pub(crate) fn random_bits<S: Simd>(simd: S, key: S::u32s, index: S::u32s) -> S::u32s {
    let mut x = simd.xor_u32s(simd.mul_u32s(index, simd.splat_u32s(0x9e37_79b1)), key);
    x = simd.xor_u32s(x, shr(simd, x, 16));
    x = simd.mul_u32s(x, simd.splat_u32s(0x7feb_352d));
    x = simd.xor_u32s(x, shr(simd, x, 15));
    x = simd.mul_u32s(x, simd.splat_u32s(0x846c_a68b));
    simd.xor_u32s(x, shr(simd, x, 16))
}

/// bf16 bits (in the low half of each lane) to f32.
#[inline(always)]
pub(crate) fn bf16_to_f32<S: Simd>(simd: S, h: S::u32s) -> S::f32s {
    simd.transmute_f32s_u32s(shl(simd, h, 16))
}

/// f32 to bf16 bits: nearest-even, or stochastic with the low 16 bits of `random`.
/// NaN stays NaN (quiet bit set, sign kept); overflow rounds to infinity as IEEE does.
#[inline(always)]
pub(crate) fn f32_to_bf16<S: Simd, const STOCHASTIC: bool>(
    simd: S,
    x: S::f32s,
    random: S::u32s,
) -> S::u32s {
    let bits = simd.transmute_u32s_f32s(x);
    // PERF: NaN found by an unordered float compare (one instruction; an unsigned integer
    // compare is two on AVX2), and `bits >> 16` shared by the lsb and the quieted NaN.
    let is_nan = simd.not_m32s(simd.equal_f32s(x, x));
    let high = shr(simd, bits, 16);
    let add = if STOCHASTIC {
        simd.and_u32s(random, simd.splat_u32s(0xffff))
    } else {
        simd.add_u32s(
            simd.splat_u32s(0x7fff),
            simd.and_u32s(high, simd.splat_u32s(1)),
        )
    };
    let rounded = shr(simd, simd.add_u32s(bits, add), 16);
    let quiet = simd.or_u32s(high, simd.splat_u32s(0x0040));
    simd.select_u32s(is_nan, quiet, rounded)
}

/// Rounds f32 magnitudes (`a`: bits with the sign cleared, finite or +inf) to the code of an
/// unsigned minifloat with `MANT` fraction bits and smallest normal exponent `EMIN` (code
/// `e << MANT | f`, `e = 0` subnormal), saturating at `max_code`. Nearest-even, or stochastic with
/// `random`. Integer arithmetic only: the normal and the subnormal case differ only in the shift.
/// Stochastic rounding is exact for `a >= 2^(EMIN - MANT - 8)`; smaller values round to zero.
#[inline(always)]
pub(crate) fn encode_minifloat<
    S: Simd,
    const MANT: u32,
    const EMIN: i32,
    const STOCHASTIC: bool,
>(
    simd: S,
    a: S::u32s,
    random: S::u32s,
    max_code: u32,
) -> S::u32s {
    let min_normal_biased = (127 + EMIN) as u32;
    if !STOCHASTIC {
        // PERF: nearest-even as in Giesen's float_to_half_fast3_rtne, ~10 operations: normal
        // results round in integers (add half-ulp-minus-one plus the kept lsb, shift); subnormal
        // ones let the FPU round, by adding a power of two whose ulp is the code's ulp.
        let normal = simd.greater_than_or_equal_u32s(a, simd.splat_u32s(min_normal_biased << 23));
        let lsb = simd.and_u32s(shr(simd, a, 23 - MANT), simd.splat_u32s(1));
        let rebased = simd.sub_u32s(
            a,
            simd.splat_u32s(((min_normal_biased - 1) << 23).wrapping_sub((1 << (22 - MANT)) - 1)),
        );
        let normal_code = shr(simd, simd.add_u32s(rebased, lsb), 23 - MANT);
        let magic = ((127 + EMIN - MANT as i32 + 23) as u32) << 23;
        let sum = simd.add_f32s(
            simd.transmute_f32s_u32s(a),
            simd.splat_f32s(f32::from_bits(magic)),
        );
        let sub_code = simd.sub_u32s(simd.transmute_u32s_f32s(sum), simd.splat_u32s(magic));
        let code = simd.select_u32s(normal, normal_code, sub_code);
        let _ = random;
        return simd.min_u32s(code, simd.splat_u32s(max_code));
    }
    let exponent = shr(simd, a, 23);
    let normal = simd.greater_than_or_equal_u32s(exponent, simd.splat_u32s(min_normal_biased));
    // Normal: re-bias the exponent in place; the code is the top bits.
    let normal_base = simd.sub_u32s(a, simd.splat_u32s((min_normal_biased - 1) << 23));
    // Subnormal: the significand with its implicit bit, shifted further by the exponent deficit.
    let significand = simd.or_u32s(
        simd.and_u32s(a, simd.splat_u32s(0x007f_ffff)),
        simd.splat_u32s(0x0080_0000),
    );
    let deficit = simd.sub_u32s(simd.splat_u32s(min_normal_biased), exponent);
    let sub_shift = simd.add_u32s(deficit, simd.splat_u32s(23 - MANT));
    // Shifts past 31 bits (and f32 zeros/subnormals) give code 0.
    let too_small = simd.greater_than_u32s(sub_shift, simd.splat_u32s(31));
    let sub_base = simd.select_u32s(too_small, simd.splat_u32s(0), significand);
    let sub_shift = simd.min_u32s(sub_shift, simd.splat_u32s(31));
    let base = simd.select_u32s(normal, normal_base, sub_base);
    let shift = simd.select_u32s(normal, simd.splat_u32s(23 - MANT), sub_shift);
    let mask = simd.sub_u32s(
        simd.wrapping_dyn_shl_u32s(simd.splat_u32s(1), shift),
        simd.splat_u32s(1),
    );
    let add = if STOCHASTIC {
        simd.and_u32s(random, mask)
    } else {
        let lsb = simd.and_u32s(simd.wrapping_dyn_shr_u32s(base, shift), simd.splat_u32s(1));
        simd.add_u32s(shr(simd, mask, 1), lsb)
    };
    let code = simd.wrapping_dyn_shr_u32s(simd.add_u32s(base, add), shift);
    simd.min_u32s(code, simd.splat_u32s(max_code))
}

/// The f32 value of an unsigned minifloat code (see [`encode_minifloat`]); exact.
/// PERF: two operations: shifted into f32 position the code is the value times
/// `2^-(126 + EMIN)` (normal codes become normal f32, subnormal codes subnormal f32), and one
/// exact multiply by a power of two rebiases it.
#[inline(always)]
pub(crate) fn decode_minifloat<S: Simd, const MANT: u32, const EMIN: i32>(
    simd: S,
    code: S::u32s,
) -> S::f32s {
    let scale = f32::from_bits(((127 + 126 + EMIN) as u32) << 23);
    simd.mul_f32s(
        simd.transmute_f32s_u32s(shl(simd, code, 23 - MANT)),
        simd.splat_f32s(scale),
    )
}

/// f16 bits (low half of each lane) to f32, exactly; infinities and NaN (payload kept; AVX-512
/// quiets a signalling NaN) included.
#[inline(always)]
pub(crate) fn f16_to_f32<S: Simd>(simd: S, h: S::u32s) -> S::f32s {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let Some(v4) = avx512(&simd) {
        // PERF: the hardware conversion (F16C's, part of AVX-512F): vpmovdw + vcvtph2ps instead
        // of ~9 integer operations; it converts subnormals exactly and ignores MXCSR.DAZ.
        let h = v4.convert_u32x16_to_u16x16(cast::<S::u32s, pulp::u32x16>(h));
        return cast::<__m512, S::f32s>(v4.avx512f._mm512_cvtph_ps(cast(h)));
    }
    let magnitude = simd.and_u32s(h, simd.splat_u32s(0x7fff));
    let sign = shl(simd, simd.and_u32s(h, simd.splat_u32s(0x8000)), 16);
    let finite = decode_minifloat::<S, 10, -14>(simd, magnitude);
    let special = simd.or_u32s(shl(simd, magnitude, 13), simd.splat_u32s(0x7f80_0000));
    let is_special = simd.greater_than_or_equal_u32s(magnitude, simd.splat_u32s(0x7c00));
    let bits = simd.select_u32s(is_special, special, simd.transmute_u32s_f32s(finite));
    simd.transmute_f32s_u32s(simd.or_u32s(bits, sign))
}

/// f32 to f16 bits: nearest-even, or stochastic with `random`; overflow gives infinity (for
/// stochastic rounding: values past the largest finite f16 round up to infinity with the
/// probability of their excess), NaN gives a quiet NaN with the sign kept (`0x7e00` in
/// software; AVX-512's nearest-even conversion keeps the top of the payload).
#[inline(always)]
pub(crate) fn f32_to_f16<S: Simd, const STOCHASTIC: bool>(
    simd: S,
    x: S::f32s,
    random: S::u32s,
) -> S::u32s {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let (Some(v4), false) = (avx512(&simd), STOCHASTIC) {
        // PERF: the hardware conversion (vcvtps2ph, nearest-even from the immediate, not from
        // MXCSR) + vpmovzxwd instead of ~14 integer operations; the bits are those of the
        // software path for every non-NaN input (the tests compare both with the `half` crate).
        use core::arch::x86_64::{_MM_FROUND_NO_EXC, _MM_FROUND_TO_NEAREST_INT};
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let h = v4
            .avx512f
            ._mm512_cvtps_ph::<NEAREST>(cast::<S::f32s, __m512>(x));
        return cast::<pulp::u32x16, S::u32s>(v4.convert_u16x16_to_u32x16(cast(h)));
    }
    let bits = simd.transmute_u32s_f32s(x);
    let magnitude = simd.and_u32s(bits, simd.splat_u32s(0x7fff_ffff));
    let sign = shr(simd, simd.and_u32s(bits, simd.splat_u32s(0x8000_0000)), 16);
    let code = encode_minifloat::<S, 10, -14, STOCHASTIC>(simd, magnitude, random, 0x7c00);
    let is_nan = simd.greater_than_u32s(magnitude, simd.splat_u32s(0x7f80_0000));
    let code = simd.select_u32s(is_nan, simd.splat_u32s(0x7e00), code);
    simd.or_u32s(code, sign)
}
