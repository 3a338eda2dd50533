//! # Adam with compressed optimizer state: bf16 `m`/`v`, or 8-bit block-quantized `m`/`v`
//!
//! Both kernels decode the state in registers, run the f32 Adam lane function of
//! [`crate::kernels::adam`] (`theta` and `g` stay f32), and re-encode in the same pass.
//!
//! **bf16 state** (20 bytes of traffic per parameter instead of 28): `exp_avg` and `exp_avg_sq`
//! hold bf16 bits (`u16`). The new `m`, `v` are rounded stochastically, with random bits that
//! depend only on `(seed, step, stream, element index)` (stream 0: `m`, 1: `v`), so the result
//! is the same for any thread count and the rounding is unbiased: `E[round(x)] = x`.
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
//! larger range for `v` (2^-33 of the block maximum) than for `m` (2^-17); it is encoded by
//! integer arithmetic in registers (round to nearest even) instead of a table search. A
//! positive `v` never rounds to code 0 (it becomes code 1), so `m / sqrt(v)` cannot blow up
//! because `v` underflowed. Each block is processed as one unit: pass A decodes, steps and
//! collects the new absmax while the new `m`, `v` wait in a 2 KB stack buffer (L1), pass B
//! encodes; memory is read and written once. The layout is the checkpoint format: save `codes`
//! and `scales` as they are ([`quantize_exp_avg`] etc. convert from and to f32).
//!
//! **Accuracy**: per element, `theta` is the f32 step on the decoded state; the round trip
//! `decode(encode(x))` is within `max(|x| / 16, 2^-18 scale)` for `m` and
//! `max(v / 16, 2^-33 scale)` for `v` (a positive `v` below the smallest code becomes code 1) (see `tests/adam_mixed.rs`). Non-finite state cannot be
//! represented; use `check_finite`. Amsgrad is not supported.

use super::adam::{
    adam_lane, check_step, grad_is_finite, non_finite_error, AdamCoefficients, AdamConfig, Splat,
    BLOCK,
};
use super::adam_mixed::{check_lengths, check_no_amsgrad};
use super::convert::{
    self, bf16_to_f32, decode_minifloat, encode_minifloat, f32_to_bf16, iota, lanes, load_u16,
    load_u8, random_bits, store_u16, store_u8,
};
use crate::dispatch::{self, Isa, Par, Split};
use crate::error::{Error, Result};
use pulp::{Simd, WithSimd};

/// Elements per quantization block (one scale per block and moment).
pub const QUANT_BLOCK: usize = 256;

/// Number of scales for `len` elements: `ceil(len / 256)`.
pub fn quant_scales_len(len: usize) -> usize {
    len.div_ceil(QUANT_BLOCK)
}

// ---------------------------------------------------------------------------------------------
// bf16 state

pub(crate) struct Bf16StateBlock<'a> {
    pub offset: usize,
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    pub exp_avg: &'a mut [u16],
    pub exp_avg_sq: &'a mut [u16],
}

impl Split for Bf16StateBlock<'_> {
    fn len(&self) -> usize {
        self.param.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (p0, p1) = self.param.split_at_mut(mid);
        let (g0, g1) = self.grad.split_at(mid);
        let (m0, m1) = self.exp_avg.split_at_mut(mid);
        let (v0, v1) = self.exp_avg_sq.split_at_mut(mid);
        (
            Bf16StateBlock {
                offset: self.offset,
                param: p0,
                grad: g0,
                exp_avg: m0,
                exp_avg_sq: v0,
            },
            Bf16StateBlock {
                offset: self.offset + mid,
                param: p1,
                grad: g1,
                exp_avg: m1,
                exp_avg_sq: v1,
            },
        )
    }
}

struct Bf16StateKernel<'a, const L2: bool> {
    k: &'a AdamCoefficients,
    keys: [u64; 2],
    block: Bf16StateBlock<'a>,
}

/// One register of the bf16-state step: decode, the f32 lane, stochastic re-encode.
#[inline(always)]
fn bf16_state_lane<S: Simd, const L2: bool>(
    simd: S,
    c: &Splat<S>,
    keys: [S::u32s; 2],
    index: S::u32s,
    [theta, g, m16, v16]: [S::u32s; 4],
) -> (S::f32s, S::u32s, S::u32s) {
    let m = bf16_to_f32(simd, m16);
    let v = bf16_to_f32(simd, v16);
    let [theta, m, v] = adam_lane::<S, L2>(
        simd,
        c,
        [
            simd.transmute_f32s_u32s(theta),
            simd.transmute_f32s_u32s(g),
            m,
            v,
        ],
    );
    let m16 = f32_to_bf16::<S, true>(simd, m, random_bits(simd, keys[0], index));
    let v16 = f32_to_bf16::<S, true>(simd, v, random_bits(simd, keys[1], index));
    (theta, m16, v16)
}

impl<const L2: bool> WithSimd for Bf16StateKernel<'_, L2> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = Splat::new(simd, self.k);
        let Bf16StateBlock {
            offset,
            param,
            grad,
            exp_avg,
            exp_avg_sq,
        } = self.block;
        let width = lanes::<S>();
        let keys = [
            simd.splat_u32s(convert::block_key(self.keys[0], offset)),
            simd.splat_u32s(convert::block_key(self.keys[1], offset)),
        ];
        let iota = iota::<S>();
        let first = offset as u32;
        let (p_body, p_tail) = S::as_mut_simd_f32s(param);
        let (g_body, g_tail) = S::as_simd_f32s(grad);
        let n = p_body.len();
        let g_body = &g_body[..n];
        let (m_body, m_tail) = exp_avg.split_at_mut(n * width);
        let (v_body, v_tail) = exp_avg_sq.split_at_mut(n * width);
        for i in 0..n {
            let index = simd.add_u32s(
                simd.splat_u32s(first.wrapping_add((i * width) as u32)),
                iota,
            );
            let m = &mut m_body[i * width..][..width];
            let v = &mut v_body[i * width..][..width];
            let (theta, m16, v16) = bf16_state_lane::<S, L2>(
                simd,
                &c,
                keys,
                index,
                [
                    simd.transmute_u32s_f32s(p_body[i]),
                    simd.transmute_u32s_f32s(g_body[i]),
                    load_u16::<S>(simd, m),
                    load_u16::<S>(simd, v),
                ],
            );
            p_body[i] = theta;
            store_u16::<S>(simd, m, m16);
            store_u16::<S>(simd, v, v16);
        }
        if !p_tail.is_empty() {
            let index = simd.add_u32s(
                simd.splat_u32s(first.wrapping_add((n * width) as u32)),
                iota,
            );
            let (theta, m16, v16) = bf16_state_lane::<S, L2>(
                simd,
                &c,
                keys,
                index,
                [
                    simd.transmute_u32s_f32s(simd.partial_load_f32s(p_tail)),
                    simd.transmute_u32s_f32s(simd.partial_load_f32s(g_tail)),
                    load_u16::<S>(simd, m_tail),
                    load_u16::<S>(simd, v_tail),
                ],
            );
            simd.partial_store_f32s(p_tail, theta);
            store_u16::<S>(simd, m_tail, m16);
            store_u16::<S>(simd, v_tail, v16);
        }
    }
}

/// The buffers of one tensor with bf16 optimizer state.
#[derive(Debug)]
pub struct Bf16StateTensor<'a> {
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    /// `m` as bf16 bits.
    pub exp_avg: &'a mut [u16],
    /// `v` as bf16 bits.
    pub exp_avg_sq: &'a mut [u16],
}

/// One Adam/AdamW step with `m`, `v` stored as bf16, rounded stochastically from `seed`
/// (see the module docs). Errors as [`crate::adam_step`]; nothing is written on error.
pub fn adam_step_bf16_state(
    cfg: &AdamConfig,
    step: u64,
    seed: u64,
    tensor: Bf16StateTensor<'_>,
) -> Result<()> {
    adam_step_bf16_state_with(Isa::detect(), Par::Pool, cfg, step, seed, tensor)
}

/// [`adam_step_bf16_state`] on a chosen instruction set and parallelism.
pub fn adam_step_bf16_state_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    seed: u64,
    tensor: Bf16StateTensor<'_>,
) -> Result<()> {
    cfg.validate()?;
    check_step(step)?;
    check_no_amsgrad(cfg)?;
    let n = tensor.param.len();
    check_lengths(
        n,
        &[
            ("grad", tensor.grad.len()),
            ("exp_avg", tensor.exp_avg.len()),
            ("exp_avg_sq", tensor.exp_avg_sq.len()),
        ],
    )?;
    let k = AdamCoefficients::new(cfg, step);
    if cfg.check_finite && !grad_is_finite(isa, par, tensor.grad, k.grad_factor)? {
        return Err(non_finite_error());
    }
    let keys = [
        convert::stream_key(seed, step, 0),
        convert::stream_key(seed, step, 1),
    ];
    let block = Bf16StateBlock {
        offset: 0,
        param: tensor.param,
        grad: tensor.grad,
        exp_avg: tensor.exp_avg,
        exp_avg_sq: tensor.exp_avg_sq,
    };
    let l2 = k.l2 != 0.0;
    dispatch::map_reduce_blocks(
        par,
        block,
        BLOCK,
        &|block| {
            if l2 {
                isa.run(Bf16StateKernel::<true> { k: &k, keys, block })
            } else {
                isa.run(Bf16StateKernel::<false> { k: &k, keys, block })
            }
        },
        &|(), ()| (),
    )
}

// ---------------------------------------------------------------------------------------------
// 8-bit state

const M_MANT: u32 = 3;
const M_EMIN: i32 = -14;
const M_MAX_CODE: u32 = 120;
const V_MANT: u32 = 3;
const V_EMIN: i32 = -30;
const V_MAX_CODE: u32 = 248;

/// The signed `m` code of `x * inv_scale`.
#[inline(always)]
fn encode_m<S: Simd>(simd: S, x: S::f32s, inv_scale: S::f32s) -> S::u32s {
    let bits = simd.transmute_u32s_f32s(simd.mul_f32s(x, inv_scale));
    let magnitude = simd.and_u32s(bits, simd.splat_u32s(0x7fff_ffff));
    let code = encode_minifloat::<S, M_MANT, M_EMIN, false>(
        simd,
        magnitude,
        simd.splat_u32s(0),
        M_MAX_CODE,
    );
    let sign = simd.wrapping_dyn_shr_u32s(
        simd.and_u32s(bits, simd.splat_u32s(0x8000_0000)),
        simd.splat_u32s(24),
    );
    // -0 codes as +0, so equal values always have equal codes.
    let zero = simd.equal_u32s(code, simd.splat_u32s(0));
    simd.select_u32s(zero, code, simd.or_u32s(code, sign))
}

#[inline(always)]
fn decode_m<S: Simd>(simd: S, code: S::u32s, scale: S::f32s) -> S::f32s {
    let magnitude =
        decode_minifloat::<S, M_MANT, M_EMIN>(simd, simd.and_u32s(code, simd.splat_u32s(0x7f)));
    let sign = simd.wrapping_dyn_shl_u32s(
        simd.and_u32s(code, simd.splat_u32s(0x80)),
        simd.splat_u32s(24),
    );
    let signed = simd.transmute_f32s_u32s(simd.or_u32s(simd.transmute_u32s_f32s(magnitude), sign));
    simd.mul_f32s(signed, scale)
}

/// The `v` code of `x * inv_scale` (`x >= 0`); a positive `x` gets at least code 1.
#[inline(always)]
fn encode_v<S: Simd>(simd: S, x: S::f32s, inv_scale: S::f32s) -> S::u32s {
    let bits = simd.transmute_u32s_f32s(simd.mul_f32s(x, inv_scale));
    let magnitude = simd.and_u32s(bits, simd.splat_u32s(0x7fff_ffff));
    let code = encode_minifloat::<S, V_MANT, V_EMIN, false>(
        simd,
        magnitude,
        simd.splat_u32s(0),
        V_MAX_CODE,
    );
    let positive = simd.greater_than_f32s(x, simd.splat_f32s(0.0));
    let floor = simd.select_u32s(positive, simd.splat_u32s(1), simd.splat_u32s(0));
    simd.max_u32s(code, floor)
}

#[inline(always)]
fn decode_v<S: Simd>(simd: S, code: S::u32s, scale: S::f32s) -> S::f32s {
    simd.mul_f32s(decode_minifloat::<S, V_MANT, V_EMIN>(simd, code), scale)
}

/// `max(acc, |x|)` as compare + select (the same on every ISA).
#[inline(always)]
fn abs_max<S: Simd>(simd: S, acc: S::f32s, x: S::f32s) -> S::f32s {
    let a = simd.abs_f32s(x);
    simd.select_f32s(simd.greater_than_f32s(a, acc), a, acc)
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

impl Split for QuantBlock<'_> {
    fn len(&self) -> usize {
        self.param.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        // Splits fall on multiples of BLOCK, itself a multiple of QUANT_BLOCK.
        debug_assert!(mid.is_multiple_of(QUANT_BLOCK));
        let s = mid / QUANT_BLOCK;
        let (p0, p1) = self.param.split_at_mut(mid);
        let (g0, g1) = self.grad.split_at(mid);
        let (mc0, mc1) = self.m_codes.split_at_mut(mid);
        let (ms0, ms1) = self.m_scales.split_at_mut(s);
        let (vc0, vc1) = self.v_codes.split_at_mut(mid);
        let (vs0, vs1) = self.v_scales.split_at_mut(s);
        (
            QuantBlock {
                param: p0,
                grad: g0,
                m_codes: mc0,
                m_scales: ms0,
                v_codes: vc0,
                v_scales: vs0,
            },
            QuantBlock {
                param: p1,
                grad: g1,
                m_codes: mc1,
                m_scales: ms1,
                v_codes: vc1,
                v_scales: vs1,
            },
        )
    }
}

struct QuantKernel<'a, const L2: bool> {
    k: &'a AdamCoefficients,
    block: QuantBlock<'a>,
}

/// Decodes one register of state, runs the Adam lane: returns `(theta, m, v)`.
#[inline(always)]
fn quant_lane<S: Simd, const L2: bool>(
    simd: S,
    c: &Splat<S>,
    scales: [S::f32s; 2],
    theta: S::f32s,
    g: S::f32s,
    codes: [S::u32s; 2],
) -> [S::f32s; 3] {
    let m = decode_m(simd, codes[0], scales[0]);
    let v = decode_v(simd, codes[1], scales[1]);
    adam_lane::<S, L2>(simd, c, [theta, g, m, v])
}

impl<const L2: bool> WithSimd for QuantKernel<'_, L2> {
    type Output = ();

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
        let width = lanes::<S>();
        let zero = simd.splat_f32s(0.0);
        // The new m and v of one quantization block wait here between the two passes.
        let mut m_new = [0.0f32; QUANT_BLOCK];
        let mut v_new = [0.0f32; QUANT_BLOCK];
        for ((((p, g), mc), vc), (ms, vs)) in param
            .chunks_mut(QUANT_BLOCK)
            .zip(grad.chunks(QUANT_BLOCK))
            .zip(m_codes.chunks_mut(QUANT_BLOCK))
            .zip(v_codes.chunks_mut(QUANT_BLOCK))
            .zip(m_scales.iter_mut().zip(v_scales.iter_mut()))
        {
            let len = p.len();
            let scales = [simd.splat_f32s(*ms), simd.splat_f32s(*vs)];
            let (p_body, p_tail) = S::as_mut_simd_f32s(p);
            let (g_body, g_tail) = S::as_simd_f32s(g);
            let n = p_body.len();
            let g_body = &g_body[..n];
            let (mb, _) = S::as_mut_simd_f32s(&mut m_new[..]);
            let (vb, _) = S::as_mut_simd_f32s(&mut v_new[..]);
            // PERF: one accumulator each; indexing an array of them by `i & 1` put them in
            // memory and made LLVM update them with masked stores (microcoded on Zen 3: 3x slower).
            let mut m_max = zero;
            let mut v_max = zero;
            // Pass A: decode, step, collect the absmax.
            for i in 0..n {
                let codes = [
                    load_u8::<S>(simd, &mc[i * width..][..width]),
                    load_u8::<S>(simd, &vc[i * width..][..width]),
                ];
                let [theta, m, v] =
                    quant_lane::<S, L2>(simd, &c, scales, p_body[i], g_body[i], codes);
                p_body[i] = theta;
                mb[i] = m;
                vb[i] = v;
                m_max = abs_max(simd, m_max, m);
                v_max = abs_max(simd, v_max, v);
            }
            let regs = len.div_ceil(width);
            if !p_tail.is_empty() {
                // Zero padding decodes to m = v = 0 and steps to 0: the absmax is unchanged.
                let codes = [
                    load_u8::<S>(simd, &mc[n * width..]),
                    load_u8::<S>(simd, &vc[n * width..]),
                ];
                let [theta, m, v] = quant_lane::<S, L2>(
                    simd,
                    &c,
                    scales,
                    simd.partial_load_f32s(p_tail),
                    simd.partial_load_f32s(g_tail),
                    codes,
                );
                simd.partial_store_f32s(p_tail, theta);
                mb[n] = m;
                vb[n] = v;
                m_max = abs_max(simd, m_max, m);
                v_max = abs_max(simd, v_max, v);
            }
            let m_abs = simd.reduce_max_f32s(m_max);
            let v_abs = simd.reduce_max_f32s(v_max);
            *ms = m_abs;
            *vs = v_abs;
            // Pass B: encode with the new scales.
            let inv = [
                simd.splat_f32s(inverse_scale(m_abs)),
                simd.splat_f32s(inverse_scale(v_abs)),
            ];
            for i in 0..regs {
                let end = ((i + 1) * width).min(len);
                store_u8::<S>(simd, &mut mc[i * width..end], encode_m(simd, mb[i], inv[0]));
                store_u8::<S>(simd, &mut vc[i * width..end], encode_v(simd, vb[i], inv[1]));
            }
        }
    }
}

/// The buffers of one tensor with 8-bit optimizer state (layout: module docs).
#[derive(Debug)]
pub struct QuantStateTensor<'a> {
    pub param: &'a mut [f32],
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

fn check_quant_lengths(n: usize, named: &[(&str, usize)], scales: &[(&str, usize)]) -> Result<()> {
    check_lengths(n, named)?;
    check_lengths(quant_scales_len(n), scales)
}

/// One Adam/AdamW step with `m`, `v` stored as 8-bit block-quantized codes (module docs).
/// A zero-initialized state (all codes and scales 0) is the usual `m = v = 0` start.
/// Errors as [`crate::adam_step`] (scales must hold `ceil(len / 256)` values); nothing is
/// written on error.
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
    tensor: QuantStateTensor<'_>,
) -> Result<()> {
    cfg.validate()?;
    check_step(step)?;
    check_no_amsgrad(cfg)?;
    check_quant_lengths(
        tensor.param.len(),
        &[
            ("grad", tensor.grad.len()),
            ("exp_avg_codes", tensor.exp_avg_codes.len()),
            ("exp_avg_sq_codes", tensor.exp_avg_sq_codes.len()),
        ],
        &[
            ("exp_avg_scales", tensor.exp_avg_scales.len()),
            ("exp_avg_sq_scales", tensor.exp_avg_sq_scales.len()),
        ],
    )?;
    let k = AdamCoefficients::new(cfg, step);
    if cfg.check_finite && !grad_is_finite(isa, par, tensor.grad, k.grad_factor)? {
        return Err(non_finite_error());
    }
    let block = QuantBlock {
        param: tensor.param,
        grad: tensor.grad,
        m_codes: tensor.exp_avg_codes,
        m_scales: tensor.exp_avg_scales,
        v_codes: tensor.exp_avg_sq_codes,
        v_scales: tensor.exp_avg_sq_scales,
    };
    let l2 = k.l2 != 0.0;
    dispatch::map_reduce_blocks(
        par,
        block,
        BLOCK,
        &|block| {
            if l2 {
                isa.run(QuantKernel::<true> { k: &k, block })
            } else {
                isa.run(QuantKernel::<false> { k: &k, block })
            }
        },
        &|(), ()| (),
    )
}

/// Which moment a code buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// `m` (`exp_avg`): signed e4m3 codes.
    ExpAvg,
    /// `v` (`exp_avg_sq`): unsigned e5m3 codes; values must be >= 0.
    ExpAvgSq,
}

/// One register from a slice of at most one register's length (masked only when shorter:
/// pulp's masked loads and stores go through a jump table, and AMD's masked stores are slow).
#[inline(always)]
fn load_f32<S: Simd>(simd: S, r: &[f32]) -> S::f32s {
    match S::as_simd_f32s(r) {
        ([whole], []) => *whole,
        _ => simd.partial_load_f32s(r),
    }
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
        let width = lanes::<S>();
        for ((x, c), s) in self
            .values
            .chunks(QUANT_BLOCK)
            .zip(self.codes.chunks_mut(QUANT_BLOCK))
            .zip(self.scales.iter_mut())
        {
            let mut acc = simd.splat_f32s(0.0);
            for r in x.chunks(width) {
                acc = abs_max(simd, acc, load_f32(simd, r));
            }
            let absmax = simd.reduce_max_f32s(acc);
            *s = absmax;
            let inv = simd.splat_f32s(inverse_scale(absmax));
            for (r, cr) in x.chunks(width).zip(c.chunks_mut(width)) {
                let v = load_f32(simd, r);
                let code = match self.moment {
                    Moment::ExpAvg => encode_m(simd, v, inv),
                    Moment::ExpAvgSq => encode_v(simd, v, inv),
                };
                store_u8::<S>(simd, cr, code);
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
        let width = lanes::<S>();
        for ((c, o), &s) in self
            .codes
            .chunks(QUANT_BLOCK)
            .zip(self.out.chunks_mut(QUANT_BLOCK))
            .zip(self.scales)
        {
            let scale = simd.splat_f32s(s);
            for (cr, or) in c.chunks(width).zip(o.chunks_mut(width)) {
                let code = load_u8::<S>(simd, cr);
                let v = match self.moment {
                    Moment::ExpAvg => decode_m(simd, code, scale),
                    Moment::ExpAvgSq => decode_v(simd, code, scale),
                };
                match S::as_mut_simd_f32s(or) {
                    ([whole], []) => *whole = v,
                    _ => simd.partial_store_f32s(or, v),
                }
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
    if values.iter().any(|x| !x.is_finite())
        || (moment == Moment::ExpAvgSq && values.iter().any(|&x| x < 0.0))
    {
        return Err(Error::new(
            crate::ErrorKind::InvalidArgument,
            "state values must be finite (and >= 0 for exp_avg_sq)",
        ));
    }
    isa.run(Quantize {
        moment,
        values,
        codes,
        scales,
    });
    Ok(())
}

/// Decodes 8-bit codes and scales to f32 (exactly the values the step decodes).
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
    isa.run(Dequantize {
        moment,
        codes,
        scales,
        out,
    });
    Ok(())
}
