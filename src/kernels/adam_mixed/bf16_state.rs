//! # Adam with bf16 optimizer state
//!
//! The kernel decodes the state, runs the f32 Adam update of [`crate::kernels::adam`] on it
//! (`theta` and `g` stay f32), and re-encodes, in one pass over memory. Its 8-bit sibling is
//! [`super::state_8bit`].
//!
//! **bf16 state** (20 bytes of traffic per parameter instead of 28): `exp_avg` and `exp_avg_sq`
//! hold bf16 bits (`u16`). The new `m`, `v` are rounded stochastically, with random bits that
//! depend only on `(seed, step, element index)`: one 32-bit word per element, its low 16 bits
//! for `m` and its high 16 bits for `v` (one hash per element: the hash's multiplies were a third
//! of the step's time in cache). So the result is the same for any thread count and the rounding
//! is unbiased: `E[round(x)] = x`.
//!
//! **Pass**: the f32 kernel's own body (so the arithmetic is exactly the f32 step's), one pass
//! over memory, converting in registers as it loads and stores `m`, `v` (a 16-bit shift; a
//! stochastic rounding). The body asks for its operands 2 KB of each f32 array ahead
//! (`prefetcht0`) on every CPU (`dispatch::PrefetchKind::Heavy`): on an Intel Xeon and an AMD
//! Zen 5 the hardware prefetchers alone left the DRAM-sized steps waiting on their loads.
//!
//! **Accuracy**: `theta` is the f32 step on the widened state (bitwise); the stored `m`, `v` are
//! the f32 step's rounded stochastically to bf16 (within one bf16 ulp, unbiased). Non-finite
//! state is stored as it comes; use `check_finite` on the gradient. Amsgrad is not supported.
//!
//! **Reference**: [`crate::reference::adam_step_bf16_state`]: the f32 step, then
//! [`crate::reference::f32_to_half`] with the bits of [`crate::reference::stochastic_bits`]
//! (`tests/adam_mixed.rs`).

use super::master::{check_no_amsgrad, in_tensor, narrow, widen_at};
use crate::dispatch::batches::{balanced_batches, step_batches};
use crate::dispatch::{self, split_fields, Isa, Par, Split};
use crate::error::{check_lengths, check_step, non_finite_error, Result};
use crate::kernels::adam::{
    adam_body, align_head, finite_on_thread, grad_is_finite, registers_per_line, step_par,
    AdamCoefficients, AdamConfig, AdamRegisters, Splat, BLOCK, UNROLL,
};
use crate::kernels::convert::{self, iota, lanes, prefetch, store_u16, MAX_LANES};
use pulp::{Simd, WithSimd};

// ---------------------------------------------------------------------------------------------
// bf16 state

pub(crate) struct Bf16StateBlock<'a> {
    pub offset: usize,
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    pub exp_avg: &'a mut [u16],
    pub exp_avg_sq: &'a mut [u16],
}

split_fields!(Bf16StateBlock { param, grad, exp_avg, exp_avg_sq }; offset);

struct Bf16StateKernel<'a, const L2: bool> {
    k: &'a AdamCoefficients,
    key: u64,
    block: Bf16StateBlock<'a>,
}

impl<const L2: bool> WithSimd for Bf16StateKernel<'_, L2> {
    type Output = ();

    /// The f32 kernel's body on [`Bf16StateRegisters`] (`m`, `v` widened as they are loaded,
    /// rounded stochastically as they are stored); the unaligned head and the tail are staged
    /// in zero-padded registers.
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = Splat::new(simd, self.k);
        let offset = self.block.offset;
        let key = simd.splat_u32s(convert::block_key(self.key, offset));
        let head = align_head::<S>(self.block.param);
        let (head, rest) = self.block.split_at(head);
        let body = rest.len() / lanes::<S>() * lanes::<S>();
        let (body, tail) = rest.split_at(body);
        bf16_state_partial::<S, L2>(simd, &c, key, head);
        adam_body::<S, false, L2, _>(simd, &c, &mut Bf16StateRegisters::new(body, key));
        bf16_state_partial::<S, L2>(simd, &c, key, tail);
    }
}

/// The operands of the bf16-state step, whole registers.
struct Bf16StateRegisters<'a, S: Simd> {
    p: &'a mut [S::f32s],
    g: &'a [S::f32s],
    m16: &'a mut [u16],
    v16: &'a mut [u16],
    key: S::u32s,
    /// Element index (low 32 bits) of the first lane: the stochastic rounding's counter.
    first: u32,
}

impl<'a, S: Simd> Bf16StateRegisters<'a, S> {
    /// `block.len()` must be a multiple of the register width.
    #[inline(always)]
    fn new(block: Bf16StateBlock<'a>, key: S::u32s) -> Self {
        let (p, _) = S::as_mut_simd_f32s(block.param);
        let n = p.len();
        let width = lanes::<S>();
        Self {
            p,
            g: &S::as_simd_f32s(block.grad).0[..n],
            m16: &mut block.exp_avg[..n * width],
            v16: &mut block.exp_avg_sq[..n * width],
            key,
            first: block.offset as u32,
        }
    }
}

impl<S: Simd> AdamRegisters<S> for Bf16StateRegisters<'_, S> {
    const PREFETCH: dispatch::PrefetchKind = dispatch::PrefetchKind::Heavy;

    #[inline(always)]
    fn len(&self) -> usize {
        self.p.len()
    }

    #[inline(always)]
    fn load(&mut self, simd: S, i: usize) -> [S::f32s; 5] {
        let m = widen_at::<S, false>(simd, self.m16, i);
        let v = widen_at::<S, false>(simd, self.v16, i);
        [self.p[i], self.g[i], m, v, simd.splat_f32s(0.0)]
    }

    #[inline(always)]
    fn store_moments(&mut self, simd: S, i: usize, m: S::f32s, v: S::f32s, _: S::f32s) {
        let width = lanes::<S>();
        let index = simd.splat_u32s(self.first.wrapping_add((i * width) as u32));
        let random = convert::random_bits(simd, self.key, simd.add_u32s(index, iota::<S>()));
        let m = narrow::<S, false, true>(simd, m, random);
        let v = narrow::<S, false, true>(simd, v, convert::shr(simd, random, 16));
        store_u16::<S>(simd, &mut self.m16[i * width..][..width], m);
        store_u16::<S>(simd, &mut self.v16[i * width..][..width], v);
    }

    #[inline(always)]
    fn store_theta(&mut self, _: S, i: usize, theta: S::f32s) {
        self.p[i] = theta;
    }

    #[inline(always)]
    fn prefetch(&self, simd: S, i: usize) {
        for k in (0..UNROLL).step_by(registers_per_line::<S>()) {
            prefetch(&simd, self.p, i + k);
            prefetch(&simd, self.g, i + k);
        }
        // One line of u16 holds 32 elements: the `UNROLL` registers' worth with AVX-512.
        prefetch(&simd, self.m16, i * lanes::<S>());
        prefetch(&simd, self.v16, i * lanes::<S>());
    }
}

/// Fewer elements than a register: staged in zero-padded one-register arrays, run through the
/// same body, copied back.
#[inline(always)]
fn bf16_state_partial<S: Simd, const L2: bool>(
    simd: S,
    c: &Splat<S>,
    key: S::u32s,
    block: Bf16StateBlock<'_>,
) {
    let n = block.len();
    if n == 0 {
        return;
    }
    let width = lanes::<S>();
    let ([mut p, mut g], [mut m16, mut v16]) = ([[0f32; MAX_LANES]; 2], [[0u16; MAX_LANES]; 2]);
    p[..n].copy_from_slice(block.param);
    g[..n].copy_from_slice(block.grad);
    m16[..n].copy_from_slice(block.exp_avg);
    v16[..n].copy_from_slice(block.exp_avg_sq);
    let staged = Bf16StateBlock {
        offset: block.offset,
        param: &mut p[..width],
        grad: &g[..width],
        exp_avg: &mut m16[..width],
        exp_avg_sq: &mut v16[..width],
    };
    adam_body::<S, false, L2, _>(simd, c, &mut Bf16StateRegisters::new(staged, key));
    block.param.copy_from_slice(&p[..n]);
    block.exp_avg.copy_from_slice(&m16[..n]);
    block.exp_avg_sq.copy_from_slice(&v16[..n]);
}

/// The buffers of one tensor with bf16 optimizer state.
#[derive(Debug)]
pub struct Bf16StateTensor<'a> {
    /// The parameters (`theta`), updated in place.
    pub param: &'a mut [f32],
    /// The gradient (read only).
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
    mut tensor: Bf16StateTensor<'_>,
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
    let key = convert::stream_key(seed, step, 0);
    dispatch::map_reduce_blocks(
        par,
        tensor.block(0),
        BLOCK,
        &|block| update_bf16_state_block(isa, &k, key, block),
        &|(), ()| (),
    )
}

/// [`adam_step_bf16_state`] over a list of tensors in one call (PyTorch's tensor-list form):
/// every tensor is checked, and with `check_finite` every gradient scanned, before any is
/// written; threads share the work by elements, not by tensor. The elements are numbered as if
/// the tensors were laid end to end, so each gets its own random bits and the result is that of
/// one call on their concatenation, for any thread count. Errors as [`adam_step_bf16_state`],
/// naming the tensor; nothing is written on error.
pub fn adam_step_bf16_state_multi(
    cfg: &AdamConfig,
    step: u64,
    seed: u64,
    tensors: &mut [Bf16StateTensor<'_>],
) -> Result<()> {
    adam_step_bf16_state_multi_with(Isa::detect(), Par::Pool, cfg, step, seed, tensors)
}

/// [`adam_step_bf16_state_multi`] on a chosen instruction set and parallelism.
pub fn adam_step_bf16_state_multi_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    seed: u64,
    tensors: &mut [Bf16StateTensor<'_>],
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
    let mut offset = 0;
    let blocks = tensors.iter_mut().map(|t| {
        let block = t.block(offset);
        offset += block.len();
        block
    });
    let batches = balanced_batches(blocks, BLOCK, 1);
    let finite = |b: &Bf16StateBlock<'_>| finite_on_thread(isa, b.grad, k.grad_factor);
    let key = convert::stream_key(seed, step, 0);
    step_batches(par, batches, cfg.check_finite, finite, |block| {
        update_bf16_state_block(isa, &k, key, block)
    })
}

impl Bf16StateTensor<'_> {
    /// Every buffer as long as `param`.
    fn check(&self) -> Result<()> {
        check_lengths(
            self.param.len(),
            &[
                ("grad", self.grad.len()),
                ("exp_avg", self.exp_avg.len()),
                ("exp_avg_sq", self.exp_avg_sq.len()),
            ],
        )
    }

    /// The whole tensor as a block whose first element is element `offset` of the step.
    fn block(&mut self, offset: usize) -> Bf16StateBlock<'_> {
        Bf16StateBlock {
            offset,
            param: self.param,
            grad: self.grad,
            exp_avg: self.exp_avg,
            exp_avg_sq: self.exp_avg_sq,
        }
    }
}

/// The bf16-state step of one block on the calling thread.
fn update_bf16_state_block(isa: Isa, k: &AdamCoefficients, key: u64, block: Bf16StateBlock<'_>) {
    if k.l2 != 0.0 {
        isa.run(Bf16StateKernel::<true> { k, key, block })
    } else {
        isa.run(Bf16StateKernel::<false> { k, key, block })
    }
}
