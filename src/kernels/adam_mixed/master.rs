//! # Mixed-precision Adam: 16-bit parameters and gradients, f32 master weights, one pass
//!
//! Per element, in one pass over memory (read `g16`, `theta`, `m`, `v`; write `theta`, `m`, `v`,
//! `theta16`):
//!
//! ```text
//! g       <- widen(g16)                           exact (bf16: a 16-bit shift; f16: exact decode)
//! theta, m, v <- the f32 Adam/AdamW update of [`crate::kernels::adam`] (the same lane function)
//! theta16 <- round(theta)                         nearest-even, or stochastic on request
//! ```
//!
//! **Storage**: `master` (`theta`, f32), `param` (`theta16`, bf16 or f16 bit patterns as `u16`),
//! `grad` (`g16`, `u16` bits), `exp_avg` (`m`, f32), `exp_avg_sq` (`v`, f32); equally long,
//! contiguous, any alignment. 16 bytes of traffic per parameter (f32 Adam: 28, counting the
//! 16-bit copy it would also need to write: 30).
//!
//! **Rounding**: [`Rounding::NearestEven`] is IEEE round-to-nearest-even (NaN stays NaN, overflow
//! gives infinity). [`Rounding::Stochastic`] rounds up with probability equal to the discarded
//! fraction of an ulp, using random bits that depend only on `(seed, step, element index)`
//! (see `kernels::convert`), so results are identical for any thread count.
//!
//! **Accuracy**: `theta`, `m`, `v` are bitwise equal to [`crate::kernels::adam::adam_step`] on
//! the widened gradient; `theta16` is `theta` correctly rounded (nearest-even: within 0.5 ulp of
//! the 16-bit format; stochastic: within 1 ulp). Reference: [`crate::reference::adam_step`] on
//! the widened gradient, then rounding. Amsgrad is not supported here (it would add a fifth
//! stream); asking for it is [`ErrorKind::InvalidArgument`].

use crate::dispatch::batches::{balanced_batches, step_batches};
use crate::dispatch::{self, split_fields, Isa, Par, Split};
use crate::error::{check_lengths, check_step, non_finite_error, Error, ErrorKind, Result};
use crate::kernels::adam::{
    adam_body, adam_registers_of, align_head, registers_per_line, step_par, AdamBlock,
    AdamCoefficients, AdamConfig, AdamRegisters, Splat, BLOCK, UNROLL,
};
use crate::kernels::convert::{
    self, bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, first_chunk, iota, lanes, load_u16,
    random_bits, store_u16, CHUNK, MAX_LANES,
};
use pulp::{Simd, WithSimd};

/// The 16-bit floating-point format of parameters and gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfFormat {
    /// bfloat16: 8 exponent bits, 7 fraction bits (the top half of an f32).
    Bf16,
    /// IEEE binary16: 5 exponent bits, 10 fraction bits.
    F16,
}

/// How an f32 value is rounded to a narrower format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rounding {
    /// IEEE round-to-nearest, ties to even.
    #[default]
    NearestEven,
    /// Stochastic rounding with random bits from `(seed, step, element index)`.
    Stochastic {
        /// Selects the random stream; the same seed gives the same bits.
        seed: u64,
    },
}

/// Widens 16-bit values of `format` (as `u16` bits in the low half of each lane) to f32.
#[inline(always)]
pub(crate) fn widen<S: Simd, const F16: bool>(simd: S, h: S::u32s) -> S::f32s {
    if F16 {
        f16_to_f32(simd, h)
    } else {
        bf16_to_f32(simd, h)
    }
}

/// Rounds f32 to 16-bit bits of the format.
#[inline(always)]
pub(crate) fn narrow<S: Simd, const F16: bool, const STOCHASTIC: bool>(
    simd: S,
    x: S::f32s,
    random: S::u32s,
) -> S::u32s {
    if F16 {
        f32_to_f16::<S, STOCHASTIC>(simd, x, random)
    } else {
        f32_to_bf16::<S, STOCHASTIC>(simd, x, random)
    }
}

/// Widens `src` (16-bit bits of the format) into the equally long `dst`, register by register.
#[inline(always)]
pub(crate) fn widen_into<S: Simd, const F16: bool>(simd: S, src: &[u16], dst: &mut [f32]) {
    let width = lanes::<S>();
    let (body, tail) = S::as_mut_simd_f32s(dst);
    let (src, src_tail) = src.split_at(body.len() * width);
    for (d, s) in body.iter_mut().zip(src.chunks_exact(width)) {
        *d = widen::<S, F16>(simd, load_u16::<S>(simd, s));
    }
    if !tail.is_empty() {
        simd.partial_store_f32s(tail, widen::<S, F16>(simd, load_u16::<S>(simd, src_tail)));
    }
}

/// Rounds `src` into 16-bit bits of the format in the equally long `dst`; `first` is the (low
/// 32 bits of the) element index of `src[0]`, the counter of stochastic rounding under `key`.
#[inline(always)]
pub(crate) fn narrow_into<S: Simd, const F16: bool, const STOCHASTIC: bool>(
    simd: S,
    src: &[f32],
    dst: &mut [u16],
    key: S::u32s,
    first: u32,
) {
    let width = lanes::<S>();
    let (body, tail) = S::as_simd_f32s(src);
    let (dst, dst_tail) = dst.split_at_mut(body.len() * width);
    for (i, (&x, d)) in body.iter().zip(dst.chunks_exact_mut(width)).enumerate() {
        store_u16::<S>(
            simd,
            d,
            narrow_at::<S, F16, STOCHASTIC>(simd, x, key, first, i),
        );
    }
    if !tail.is_empty() {
        let x = simd.partial_load_f32s(tail);
        let rounded = narrow_at::<S, F16, STOCHASTIC>(simd, x, key, first, body.len());
        store_u16::<S>(simd, dst_tail, rounded);
    }
}

/// Register `i` of 16-bit values of the format, widened.
#[inline(always)]
pub(crate) fn widen_at<S: Simd, const F16: bool>(simd: S, src: &[u16], i: usize) -> S::f32s {
    let width = lanes::<S>();
    widen::<S, F16>(simd, load_u16::<S>(simd, &src[i * width..][..width]))
}

/// Rounds `x` into register `i` of `dst` (the counter as in [`narrow_at`]).
#[inline(always)]
pub(crate) fn narrow_store_at<S: Simd, const F16: bool, const STOCHASTIC: bool>(
    simd: S,
    dst: &mut [u16],
    x: S::f32s,
    key: S::u32s,
    first: u32,
    i: usize,
) {
    let width = lanes::<S>();
    let rounded = narrow_at::<S, F16, STOCHASTIC>(simd, x, key, first, i);
    store_u16::<S>(simd, &mut dst[i * width..][..width], rounded);
}

/// [`narrow`] of register `i` of a run whose first element has index `first`.
// No closure here: a closure is a function of its own, compiled without the SIMD target
// features, so the pulp operations in it would not inline (measured: 30x slower).
#[inline(always)]
pub(crate) fn narrow_at<S: Simd, const F16: bool, const STOCHASTIC: bool>(
    simd: S,
    x: S::f32s,
    key: S::u32s,
    first: u32,
    i: usize,
) -> S::u32s {
    let width = lanes::<S>();
    let random = if STOCHASTIC {
        let index = simd.splat_u32s(first.wrapping_add((i * width) as u32));
        random_bits(simd, key, simd.add_u32s(index, iota::<S>()))
    } else {
        simd.splat_u32s(0)
    };
    narrow::<S, F16, STOCHASTIC>(simd, x, random)
}

/// Equally long slices of one piece of work; `offset` is the index of its first element in the
/// tensor (the counter of the stochastic rounding).
pub(crate) struct MasterBlock<'a> {
    pub offset: usize,
    pub master: &'a mut [f32],
    pub param: &'a mut [u16],
    pub grad: &'a [u16],
    pub exp_avg: &'a mut [f32],
    pub exp_avg_sq: &'a mut [f32],
}

split_fields!(MasterBlock { master, param, grad, exp_avg, exp_avg_sq }; offset);

struct MasterKernel<'a, const F16: bool, const STOCHASTIC: bool, const L2: bool> {
    k: &'a AdamCoefficients,
    key: u64,
    block: MasterBlock<'a>,
}

impl<const F16: bool, const STOCHASTIC: bool, const L2: bool> WithSimd
    for MasterKernel<'_, F16, STOCHASTIC, L2>
{
    type Output = ();

    /// With AVX-512: the f32 kernel's body on [`MasterRegisters`] (the gradient widened as it
    /// is loaded, the new `theta` rounded into the 16-bit copy as it is stored), the unaligned
    /// head and the tail staged in zero-padded registers. Otherwise, per chunk: widen the
    /// gradient into an f32 buffer, run the f32 update on the chunk, round the new `theta`
    /// into the 16-bit copy.
    // PERF: converting in registers needs room for the conversion's constants: in cache (2^12,
    // 1 thread, best of 5 alternating runs) AVX-512 went from 0.42 to 0.37 ns per parameter
    // (bf16, nearest), 0.52 to 0.43 (stochastic), 0.41 to 0.32 (f16); with AVX2's 16 registers
    // f16 went from 0.71 to 0.90 (spills) and bf16 did not change, so AVX2 and scalar stage.
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = Splat::new(simd, self.k);
        let key = simd.splat_u32s(convert::block_key(self.key, self.block.offset));
        if lanes::<S>() == MAX_LANES {
            let head = align_head::<S>(self.block.master);
            let (head, rest) = self.block.split_at(head);
            let body = rest.len() / lanes::<S>() * lanes::<S>();
            let (body, tail) = rest.split_at(body);
            master_partial::<S, F16, STOCHASTIC, L2>(simd, &c, key, head);
            let mut regs = MasterRegisters::<S, F16, STOCHASTIC>::new(body, key);
            adam_body::<S, false, L2, _>(simd, &c, &mut regs);
            master_partial::<S, F16, STOCHASTIC, L2>(simd, &c, key, tail);
            return;
        }
        let mut grad = [0.0f32; CHUNK];
        let mut len = first_chunk::<S>(self.block.master);
        let mut rest = self.block;
        while rest.len() > 0 {
            let n = rest.len().min(len);
            let (chunk, tail) = rest.split_at(n);
            (rest, len) = (tail, CHUNK);
            let MasterBlock {
                offset,
                master,
                param,
                grad: grad16,
                exp_avg,
                exp_avg_sq,
            } = chunk;
            let g = &mut grad[..master.len()];
            widen_into::<S, F16>(simd, grad16, g);
            let block = AdamBlock {
                param: &mut *master,
                grad: g,
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq: &mut [],
            };
            adam_registers_of::<S, false, L2>(simd, &c, block);
            narrow_into::<S, F16, STOCHASTIC>(simd, master, param, key, offset as u32);
        }
    }
}

/// The operands of the master step, whole registers.
struct MasterRegisters<'a, S: Simd, const F16: bool, const STOCHASTIC: bool> {
    p: &'a mut [S::f32s],
    g16: &'a [u16],
    m: &'a mut [S::f32s],
    v: &'a mut [S::f32s],
    p16: &'a mut [u16],
    key: S::u32s,
    /// Element index (low 32 bits) of the first lane: the stochastic rounding's counter.
    first: u32,
}

impl<'a, S: Simd, const F16: bool, const STOCHASTIC: bool> MasterRegisters<'a, S, F16, STOCHASTIC> {
    /// `block.len()` must be a multiple of the register width.
    #[inline(always)]
    fn new(block: MasterBlock<'a>, key: S::u32s) -> Self {
        let (p, _) = S::as_mut_simd_f32s(block.master);
        let n = p.len();
        let width = lanes::<S>();
        Self {
            p,
            g16: &block.grad[..n * width],
            m: &mut S::as_mut_simd_f32s(block.exp_avg).0[..n],
            v: &mut S::as_mut_simd_f32s(block.exp_avg_sq).0[..n],
            p16: &mut block.param[..n * width],
            key,
            first: block.offset as u32,
        }
    }
}

impl<S: Simd, const F16: bool, const STOCHASTIC: bool> AdamRegisters<S>
    for MasterRegisters<'_, S, F16, STOCHASTIC>
{
    #[inline(always)]
    fn len(&self) -> usize {
        self.p.len()
    }

    #[inline(always)]
    fn load(&mut self, simd: S, i: usize) -> [S::f32s; 5] {
        let g = widen_at::<S, F16>(simd, self.g16, i);
        [self.p[i], g, self.m[i], self.v[i], simd.splat_f32s(0.0)]
    }

    #[inline(always)]
    fn store_moments(&mut self, _: S, i: usize, m: S::f32s, v: S::f32s, _: S::f32s) {
        self.m[i] = m;
        self.v[i] = v;
    }

    #[inline(always)]
    fn store_theta(&mut self, simd: S, i: usize, theta: S::f32s) {
        self.p[i] = theta;
        narrow_store_at::<S, F16, STOCHASTIC>(simd, self.p16, theta, self.key, self.first, i);
    }

    #[inline(always)]
    fn prefetch(&self, simd: S, i: usize) {
        for k in (0..UNROLL).step_by(registers_per_line::<S>()) {
            convert::prefetch(&simd, self.p, i + k);
            convert::prefetch(&simd, self.m, i + k);
            convert::prefetch(&simd, self.v, i + k);
        }
        // One line of u16 holds 32 elements: the `UNROLL` registers' worth with AVX-512.
        convert::prefetch(&simd, self.g16, i * lanes::<S>());
        convert::prefetch(&simd, self.p16, i * lanes::<S>());
    }
}

/// Fewer elements than a register: staged in zero-padded one-register arrays, run through the
/// same body, copied back.
#[inline(always)]
fn master_partial<S: Simd, const F16: bool, const STOCHASTIC: bool, const L2: bool>(
    simd: S,
    c: &Splat<S>,
    key: S::u32s,
    block: MasterBlock<'_>,
) {
    let n = block.len();
    if n == 0 {
        return;
    }
    let width = lanes::<S>();
    let ([mut p, mut m, mut v], [mut p16, mut g16]) =
        ([[0f32; MAX_LANES]; 3], [[0u16; MAX_LANES]; 2]);
    p[..n].copy_from_slice(block.master);
    m[..n].copy_from_slice(block.exp_avg);
    v[..n].copy_from_slice(block.exp_avg_sq);
    g16[..n].copy_from_slice(block.grad);
    let staged = MasterBlock {
        offset: block.offset,
        master: &mut p[..width],
        param: &mut p16[..width],
        grad: &g16[..width],
        exp_avg: &mut m[..width],
        exp_avg_sq: &mut v[..width],
    };
    let mut regs = MasterRegisters::<S, F16, STOCHASTIC>::new(staged, key);
    adam_body::<S, false, L2, _>(simd, c, &mut regs);
    block.master.copy_from_slice(&p[..n]);
    block.param.copy_from_slice(&p16[..n]);
    block.exp_avg.copy_from_slice(&m[..n]);
    block.exp_avg_sq.copy_from_slice(&v[..n]);
}

fn update_block(
    isa: Isa,
    format: HalfFormat,
    rounding: Rounding,
    k: &AdamCoefficients,
    key: u64,
    block: MasterBlock<'_>,
) {
    let l2 = k.l2 != 0.0;
    let stochastic = matches!(rounding, Rounding::Stochastic { .. });
    macro_rules! go {
        ($f16:literal) => {
            match (stochastic, l2) {
                (false, false) => isa.run(MasterKernel::<$f16, false, false> { k, key, block }),
                (false, true) => isa.run(MasterKernel::<$f16, false, true> { k, key, block }),
                (true, false) => isa.run(MasterKernel::<$f16, true, false> { k, key, block }),
                (true, true) => isa.run(MasterKernel::<$f16, true, true> { k, key, block }),
            }
        };
    }
    match format {
        HalfFormat::Bf16 => go!(false),
        HalfFormat::F16 => go!(true),
    }
}

/// Whether `widen(x) * scale` is finite everywhere: `acc + (x * scale) * 0` stays zero.
struct Finite16<'a, const F16: bool> {
    values: &'a [u16],
    scale: f32,
}

impl<const F16: bool> WithSimd for Finite16<'_, F16> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> bool {
        let width = lanes::<S>();
        let scale = simd.splat_f32s(self.scale);
        let zero = simd.splat_f32s(0.0);
        let mut acc = zero;
        let chunks = self.values.chunks_exact(width);
        let tail = chunks.remainder();
        for chunk in chunks {
            let x = simd.mul_f32s(widen::<S, F16>(simd, load_u16::<S>(simd, chunk)), scale);
            acc = simd.mul_add_f32s(x, zero, acc);
        }
        let x = simd.mul_f32s(widen::<S, F16>(simd, load_u16::<S>(simd, tail)), scale);
        acc = simd.mul_add_f32s(x, zero, acc);
        simd.reduce_sum_f32s(acc) == 0.0
    }
}

/// Whether the 16-bit gradient, unscaled, is finite (parallel over fixed blocks).
pub(crate) fn grad16_is_finite(
    isa: Isa,
    par: Par,
    format: HalfFormat,
    grad: &[u16],
    scale: f32,
) -> Result<bool> {
    dispatch::map_reduce_blocks(
        par,
        grad,
        BLOCK,
        &|values: &[u16]| finite16(isa, format, values, scale),
        &|a, b| a && b,
    )
}

/// Whether `widen(values) * scale` is finite everywhere, on the calling thread.
fn finite16(isa: Isa, format: HalfFormat, values: &[u16], scale: f32) -> bool {
    match format {
        HalfFormat::Bf16 => isa.run(Finite16::<false> { values, scale }),
        HalfFormat::F16 => isa.run(Finite16::<true> { values, scale }),
    }
}

/// The buffers of one tensor for the master-weight step.
#[derive(Debug)]
pub struct MasterTensor<'a> {
    /// f32 master weights (`theta`).
    pub master: &'a mut [f32],
    /// The 16-bit copy of the parameters, written (bits).
    pub param: &'a mut [u16],
    /// The 16-bit gradient (bits).
    pub grad: &'a [u16],
    /// The first moment `m`, updated in place.
    pub exp_avg: &'a mut [f32],
    /// The second moment `v`, updated in place.
    pub exp_avg_sq: &'a mut [f32],
}

impl MasterTensor<'_> {
    /// Every buffer as long as `master`.
    fn check(&self) -> Result<()> {
        check_lengths(
            self.master.len(),
            &[
                ("param", self.param.len()),
                ("grad", self.grad.len()),
                ("exp_avg", self.exp_avg.len()),
                ("exp_avg_sq", self.exp_avg_sq.len()),
            ],
        )
    }

    /// The whole tensor as a block whose first element is element `offset` of the step.
    fn block(&mut self, offset: usize) -> MasterBlock<'_> {
        MasterBlock {
            offset,
            master: self.master,
            param: self.param,
            grad: self.grad,
            exp_avg: self.exp_avg,
            exp_avg_sq: self.exp_avg_sq,
        }
    }
}

/// No amsgrad, and every tensor's lengths agree (the error names the tensor).
pub(crate) fn check_master_tensors(cfg: &AdamConfig, tensors: &[MasterTensor<'_>]) -> Result<()> {
    check_no_amsgrad(cfg)?;
    for (i, t) in tensors.iter().enumerate() {
        in_tensor(i, t.check())?;
    }
    Ok(())
}

/// `result`, its error naming tensor `index` of a list.
pub(crate) fn in_tensor<T>(index: usize, result: Result<T>) -> Result<T> {
    result.map_err(|e| Error::new(e.kind(), format!("tensors[{index}]: {}", e.message())))
}

/// Rejects amsgrad for the kernels without a `vmax` stream.
pub(crate) fn check_no_amsgrad(cfg: &AdamConfig) -> Result<()> {
    if cfg.amsgrad {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "amsgrad is not supported by the mixed-precision and compressed-state steps",
        ));
    }
    Ok(())
}

/// One Adam/AdamW step with bf16 parameters and gradients and f32 master weights, on the best
/// instruction set and the crate's pool. `param` receives `master` rounded as `rounding` says.
///
/// Errors as [`crate::adam_step`] (amsgrad is [`ErrorKind::InvalidArgument`]); nothing is
/// written on error.
#[allow(clippy::too_many_arguments)]
pub fn adam_step_master_bf16(
    cfg: &AdamConfig,
    step: u64,
    master: &mut [f32],
    param: &mut [u16],
    grad: &[u16],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    rounding: Rounding,
) -> Result<()> {
    adam_step_master_with(
        Isa::detect(),
        Par::Pool,
        HalfFormat::Bf16,
        cfg,
        step,
        MasterTensor {
            master,
            param,
            grad,
            exp_avg,
            exp_avg_sq,
        },
        rounding,
    )
}

/// [`adam_step_master_bf16`] for IEEE f16 parameters and gradients.
#[allow(clippy::too_many_arguments)]
pub fn adam_step_master_f16(
    cfg: &AdamConfig,
    step: u64,
    master: &mut [f32],
    param: &mut [u16],
    grad: &[u16],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    rounding: Rounding,
) -> Result<()> {
    adam_step_master_with(
        Isa::detect(),
        Par::Pool,
        HalfFormat::F16,
        cfg,
        step,
        MasterTensor {
            master,
            param,
            grad,
            exp_avg,
            exp_avg_sq,
        },
        rounding,
    )
}

/// The master-weight step on a chosen instruction set, parallelism and 16-bit format.
pub fn adam_step_master_with(
    isa: Isa,
    par: Par,
    format: HalfFormat,
    cfg: &AdamConfig,
    step: u64,
    mut tensor: MasterTensor<'_>,
    rounding: Rounding,
) -> Result<()> {
    cfg.validate()?;
    check_step(step)?;
    check_no_amsgrad(cfg)?;
    tensor.check()?;
    let par = step_par(par, tensor.master.len());
    let k = AdamCoefficients::new(cfg, step);
    if cfg.check_finite && !grad16_is_finite(isa, par, format, tensor.grad, k.grad_factor)? {
        return Err(non_finite_error());
    }
    let key = rounding_key(rounding, step);
    dispatch::map_reduce_blocks(
        par,
        tensor.block(0),
        BLOCK,
        &|b| update_block(isa, format, rounding, &k, key, b),
        &|(), ()| (),
    )
}

/// The stochastic rounding's key of a step (unused with nearest-even).
fn rounding_key(rounding: Rounding, step: u64) -> u64 {
    match rounding {
        Rounding::NearestEven => 0,
        Rounding::Stochastic { seed } => convert::stream_key(seed, step, 2),
    }
}

/// The master-weight step over a list of tensors in one call (PyTorch's tensor-list form).
/// Every tensor is checked, and with `check_finite` every gradient scanned, before any is
/// written; threads share the work by elements, not by tensor. Stochastic rounding numbers the
/// elements as if the tensors were laid end to end, so each tensor gets its own random bits and
/// the result is that of one call on their concatenation, for any thread count. Errors as
/// [`adam_step_master_bf16`], naming the tensor; nothing is written on error.
pub fn adam_step_master_multi(
    format: HalfFormat,
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [MasterTensor<'_>],
    rounding: Rounding,
) -> Result<()> {
    adam_step_master_multi_with(
        Isa::detect(),
        Par::Pool,
        format,
        cfg,
        step,
        tensors,
        rounding,
    )
}

/// [`adam_step_master_multi`] on a chosen instruction set and parallelism.
pub fn adam_step_master_multi_with(
    isa: Isa,
    par: Par,
    format: HalfFormat,
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [MasterTensor<'_>],
    rounding: Rounding,
) -> Result<()> {
    cfg.validate()?;
    check_step(step)?;
    check_master_tensors(cfg, tensors)?;
    let elements: usize = tensors.iter().map(|t| t.master.len()).sum();
    let par = step_par(par, elements);
    let k = AdamCoefficients::new(cfg, step);
    let mut offset = 0;
    let blocks = tensors.iter_mut().map(|t| {
        let block = t.block(offset);
        offset += block.len();
        block
    });
    let batches = balanced_batches(blocks, BLOCK, 1);
    let finite = |b: &MasterBlock<'_>| finite16(isa, format, b.grad, k.grad_factor);
    let key = rounding_key(rounding, step);
    step_batches(par, batches, cfg.check_finite, finite, |block| {
        update_block(isa, format, rounding, &k, key, block)
    })
}

/// Widens 16-bit bits of `format` to f32, exactly (the conversion the kernels use; for tests
/// and setup).
pub fn widen_half(isa: Isa, format: HalfFormat, values: &[u16], out: &mut [f32]) -> Result<()> {
    check_lengths(values.len(), &[("out", out.len())])?;
    struct Widen<'a, const F16: bool> {
        values: &'a [u16],
        out: &'a mut [f32],
    }
    impl<const F16: bool> WithSimd for Widen<'_, F16> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            widen_into::<S, F16>(simd, self.values, self.out);
        }
    }
    match format {
        HalfFormat::Bf16 => isa.run(Widen::<false> { values, out }),
        HalfFormat::F16 => isa.run(Widen::<true> { values, out }),
    }
    Ok(())
}

/// Rounds f32 values to 16-bit bits (the conversion the kernels use; for tests and setup):
/// `key`-less nearest-even, or stochastic with `(seed, step)` as in the step.
pub fn round_to_half(
    isa: Isa,
    format: HalfFormat,
    values: &[f32],
    out: &mut [u16],
    rounding: Rounding,
    step: u64,
) -> Result<()> {
    check_lengths(values.len(), &[("out", out.len())])?;
    struct Round<'a, const F16: bool, const STOCHASTIC: bool> {
        values: &'a [f32],
        out: &'a mut [u16],
        key: u64,
    }
    impl<const F16: bool, const STOCHASTIC: bool> WithSimd for Round<'_, F16, STOCHASTIC> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let width = lanes::<S>();
            let key = simd.splat_u32s(convert::block_key(self.key, 0));
            for (j, (x, o)) in self
                .values
                .chunks(width)
                .zip(self.out.chunks_mut(width))
                .enumerate()
            {
                let index = simd.add_u32s(simd.splat_u32s((j * width) as u32), iota::<S>());
                let random = random_bits(simd, key, index);
                store_u16::<S>(
                    simd,
                    o,
                    narrow::<S, F16, STOCHASTIC>(simd, simd.partial_load_f32s(x), random),
                );
            }
        }
    }
    match (format, rounding) {
        (HalfFormat::Bf16, Rounding::NearestEven) => isa.run(Round::<false, false> {
            values,
            out,
            key: 0,
        }),
        (HalfFormat::F16, Rounding::NearestEven) => isa.run(Round::<true, false> {
            values,
            out,
            key: 0,
        }),
        (HalfFormat::Bf16, Rounding::Stochastic { seed }) => isa.run(Round::<false, true> {
            values,
            out,
            key: convert::stream_key(seed, step, 2),
        }),
        (HalfFormat::F16, Rounding::Stochastic { seed }) => isa.run(Round::<true, true> {
            values,
            out,
            key: convert::stream_key(seed, step, 2),
        }),
    }
    Ok(())
}
