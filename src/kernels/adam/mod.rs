//! # Adam / AdamW step (f32)
//!
//! With `t` the 1-based step count, for every element (the operations of
//! `torch.optim.Adam` / `torch.optim.AdamW` with `foreach=False` on the CPU, in their order, but
//! for one division replaced by a multiply, marked below):
//!
//! ```text
//! g     <- g * inv_grad_scale                       (1.0: no unscale)
//! g     <- -g                                       if maximize
//! g     <- fma(theta, wd, g)                        Adam: L2 weight decay
//! theta <- theta * (1 - lr * wd)                    AdamW: decoupled weight decay
//! m     <- fma(1 - beta1, g - m, m)                 torch's lerp (|1 - beta1| < 0.5; else
//!                                                   fma(-beta1, g - m, g))
//! v     <- v * beta2 + ((1 - beta2) * g) * g        torch's mul_ then addcmul_, unfused
//! vmax  <- max(vmax, v), and vmax replaces v below  if amsgrad
//! theta <- theta + (-(lr / bc1) * m) / fma(sqrt(v), 1 / sqrt(bc2), eps)
//!          with bc1 = 1 - beta1^t, bc2 = 1 - beta2^t    (PyTorch: sqrt(v) / sqrt(bc2) + eps)
//! ```
//!
//! The scalars (`1 - beta`, `lr / bc1`, `1 / sqrt(bc2)`, `1 - lr * wd`) are computed in f64 and
//! rounded to f32, as PyTorch does; the per-element arithmetic is f32. The multiply by the
//! reciprocal leaves one division and one square root per element: the step is limited by
//! those (one divider on Zen 3) whenever its data is in cache, and this makes it 1.3x faster
//! there (0.49 -> 0.37 ns per element at 2^12, 1 thread), for at most about one ulp of
//! difference in `theta` (the torch fixtures still match to 5e-7, see `tests/adam.rs`).
//!
//! **Storage**: `param`, `grad`, `exp_avg` (`m`), `exp_avg_sq` (`v`) and, with amsgrad,
//! `max_exp_avg_sq` (`vmax`) are equally long, contiguous f32 slices; any alignment.
//!
//! **Accuracy**: every instruction set runs the same operations (fused exactly where listed
//! above), so results are bitwise identical across scalar, AVX2 and AVX-512, and across thread
//! counts. Against the f64 reference [`crate::reference::adam_step`], one step is within a few
//! ulp of the magnitudes involved (the bound is written in `tests/adam.rs`).
//!
//! **Non-finite gradients**: with `check_finite`, the whole gradient (after unscaling) is scanned
//! first; if any value is NaN or infinite, [`ErrorKind::NonFinite`] is returned and nothing is
//! written (the AMP "found_inf, skip the step" contract). The scan costs one extra read of `grad`.

pub mod clipped;
pub mod rotated;

use crate::dispatch::{self, batches, split_fields, FiniteScan, Isa, Par, Split};
use crate::error::{self, check_step, non_finite_error, Error, ErrorKind, Result};
use crate::kernels::convert::prefetch;
use pulp::{Simd, WithSimd};

/// Adam/AdamW hyperparameters. `Default` gives PyTorch's defaults (`lr = 1e-3`,
/// `betas = (0.9, 0.999)`, `eps = 1e-8`, no weight decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate, finite and >= 0.
    pub lr: f64,
    /// First-moment decay, in [0, 1).
    pub beta1: f64,
    /// Second-moment decay, in [0, 1).
    pub beta2: f64,
    /// Added to the denominator, finite and > 0.
    pub eps: f64,
    /// Weight decay, finite and >= 0.
    pub weight_decay: f64,
    /// `true`: AdamW (decoupled decay `theta *= 1 - lr * wd`); `false`: Adam (L2 term in `g`).
    pub decoupled_weight_decay: bool,
    /// Use the running maximum of `v` (needs a `max_exp_avg_sq` buffer).
    pub amsgrad: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// Scan the gradient first and skip the step (writing nothing) if it is not finite.
    pub check_finite: bool,
    /// Multiplies the gradient first (an AMP loss-scale inverse), finite and > 0; 1 means none.
    pub inv_grad_scale: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            amsgrad: false,
            maximize: false,
            check_finite: false,
            inv_grad_scale: 1.0,
        }
    }
}

impl AdamConfig {
    /// `torch.optim.AdamW` defaults (`weight_decay = 1e-2`, decoupled) with the given rate.
    pub fn adamw(lr: f64) -> Self {
        Self {
            lr,
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            ..Self::default()
        }
    }

    /// Checks every hyperparameter against its range, and that it and the coefficients derived
    /// from it are finite (and nonzero where they divide) as the f32 the kernels use: `lr = 1e39`
    /// or `eps = 1e-46` are errors, not a step that writes infinities.
    pub fn validate(&self) -> Result<()> {
        error::check_non_negative("lr", self.lr)?;
        error::check_half_open("beta1", self.beta1, 0.0, 1.0)?;
        error::check_half_open("beta2", self.beta2, 0.0, 1.0)?;
        error::check_positive("eps", self.eps)?;
        error::check_non_negative("weight_decay", self.weight_decay)?;
        error::check_positive("inv_grad_scale", self.inv_grad_scale)?;
        // Representable as the f32 coefficients of every step: the step size `lr / bc1` is
        // largest at step 1 (`bc1 = 1 - beta1`), `sqrt(bc2)` is at least `sqrt(1 - beta2)`.
        error::check_f32("lr", self.lr, false)?;
        error::check_f32(
            "lr / (1 - beta1) (the first step's size)",
            self.lr / (1.0 - self.beta1),
            false,
        )?;
        error::check_f32("eps", self.eps, true)?;
        error::check_f32("weight_decay", self.weight_decay, false)?;
        if self.decoupled_weight_decay {
            error::check_f32(
                "1 - lr * weight_decay",
                1.0 - self.lr * self.weight_decay,
                false,
            )?;
        }
        error::check_f32("inv_grad_scale", self.inv_grad_scale, true)?;
        Ok(())
    }
}

/// The f32 scalars of one step, computed from the f64 hyperparameters as PyTorch does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamCoefficients {
    /// `inv_grad_scale`, negated when maximizing.
    pub grad_factor: f32,
    /// L2 weight decay added to the gradient (0 for AdamW).
    pub l2: f32,
    /// `1 - lr * wd` for AdamW, 1 otherwise.
    pub decay: f32,
    /// The lerp coefficient: `1 - beta1`, or `-beta1` when the lerp starts from `g`.
    pub lerp_coeff: f32,
    /// PyTorch's lerp switches formula at weight 0.5: `m + w (g - m)` or `g - (1 - w)(g - m)`.
    pub lerp_from_grad: bool,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub inv_bc2_sqrt: f32,
    pub eps: f32,
    /// `-(lr / bc1)`.
    pub neg_step_size: f32,
    pub amsgrad: bool,
}

impl AdamCoefficients {
    /// The coefficients of step `step` (1-based). `cfg` must be valid.
    pub(crate) fn new(cfg: &AdamConfig, step: u64) -> Self {
        let t = step as f64;
        // Python evaluates `beta ** step` with a float step and `bc2 ** 0.5`: pow, not powi/sqrt.
        let bc1 = 1.0 - cfg.beta1.powf(t);
        let bc2 = 1.0 - cfg.beta2.powf(t);
        let lerp_weight = (1.0 - cfg.beta1) as f32;
        let lerp_from_grad = lerp_weight.abs() >= 0.5;
        let decoupled = cfg.decoupled_weight_decay && cfg.weight_decay != 0.0;
        let l2 = !cfg.decoupled_weight_decay && cfg.weight_decay != 0.0;
        Self {
            grad_factor: if cfg.maximize {
                -(cfg.inv_grad_scale as f32)
            } else {
                cfg.inv_grad_scale as f32
            },
            l2: if l2 { cfg.weight_decay as f32 } else { 0.0 },
            decay: if decoupled {
                (1.0 - cfg.lr * cfg.weight_decay) as f32
            } else {
                1.0
            },
            lerp_coeff: if lerp_from_grad {
                lerp_weight - 1.0
            } else {
                lerp_weight
            },
            lerp_from_grad,
            beta2: cfg.beta2 as f32,
            one_minus_beta2: (1.0 - cfg.beta2) as f32,
            inv_bc2_sqrt: (1.0 / bc2.powf(0.5)) as f32,
            eps: cfg.eps as f32,
            neg_step_size: (-(cfg.lr / bc1)) as f32,
            amsgrad: cfg.amsgrad,
        }
    }
}

/// The coefficients broadcast to registers.
pub(crate) struct Splat<S: Simd> {
    grad_factor: S::f32s,
    l2: S::f32s,
    decay: S::f32s,
    lerp_coeff: S::f32s,
    beta2: S::f32s,
    one_minus_beta2: S::f32s,
    inv_bc2_sqrt: S::f32s,
    eps: S::f32s,
    neg_step_size: S::f32s,
    lerp_from_grad: bool,
}

impl<S: Simd> Splat<S> {
    #[inline(always)]
    pub(crate) fn new(simd: S, k: &AdamCoefficients) -> Self {
        Self {
            grad_factor: simd.splat_f32s(k.grad_factor),
            l2: simd.splat_f32s(k.l2),
            decay: simd.splat_f32s(k.decay),
            lerp_coeff: simd.splat_f32s(k.lerp_coeff),
            beta2: simd.splat_f32s(k.beta2),
            one_minus_beta2: simd.splat_f32s(k.one_minus_beta2),
            inv_bc2_sqrt: simd.splat_f32s(k.inv_bc2_sqrt),
            eps: simd.splat_f32s(k.eps),
            neg_step_size: simd.splat_f32s(k.neg_step_size),
            lerp_from_grad: k.lerp_from_grad,
        }
    }
}

/// One register of the update, first half: the decayed `theta` and the new moments
/// `(theta, m, v, vmax)`. The body and the masked head and tail all run [`adam_moments`] then
/// [`adam_theta`], so there is no scalar copy of the formula.
#[inline(always)]
pub(crate) fn adam_moments<S: Simd, const AMSGRAD: bool, const L2: bool>(
    simd: S,
    c: &Splat<S>,
    [theta, g, m, v, vmax]: [S::f32s; 5],
) -> [S::f32s; 4] {
    let mut g = simd.mul_f32s(g, c.grad_factor);
    if L2 {
        g = simd.mul_add_f32s(theta, c.l2, g);
    }
    let theta = simd.mul_f32s(theta, c.decay);
    let base = if c.lerp_from_grad { g } else { m };
    let m = simd.mul_add_f32s(c.lerp_coeff, simd.sub_f32s(g, m), base);
    let v = simd.add_f32s(
        simd.mul_f32s(v, c.beta2),
        simd.mul_f32s(simd.mul_f32s(c.one_minus_beta2, g), g),
    );
    // max written as compare + select so every ISA agrees (x86 max_ps is not symmetric in NaN).
    let vmax = if AMSGRAD {
        simd.select_f32s(simd.greater_than_f32s(vmax, v), vmax, v)
    } else {
        vmax
    };
    [theta, m, v, vmax]
}

/// Second half: `theta + (-(lr / bc1) * m) / fma(sqrt(v_hat), 1 / sqrt(bc2), eps)`.
#[inline(always)]
pub(crate) fn adam_theta<S: Simd>(
    simd: S,
    c: &Splat<S>,
    theta: S::f32s,
    m: S::f32s,
    v_hat: S::f32s,
) -> S::f32s {
    let denom = simd.mul_add_f32s(simd.sqrt_f32s(v_hat), c.inv_bc2_sqrt, c.eps);
    simd.add_f32s(
        theta,
        simd.div_f32s(simd.mul_f32s(c.neg_step_size, m), denom),
    )
}

/// Equally long slices of one contiguous piece of work. `vmax` is empty unless amsgrad.
pub(crate) struct AdamBlock<'a> {
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    pub exp_avg: &'a mut [f32],
    pub exp_avg_sq: &'a mut [f32],
    pub max_exp_avg_sq: &'a mut [f32],
}

split_fields!(AdamBlock {
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq: upto,
});

struct AdamKernel<'a, const AMSGRAD: bool, const L2: bool> {
    k: &'a AdamCoefficients,
    block: AdamBlock<'a>,
}

impl<const AMSGRAD: bool, const L2: bool> WithSimd for AdamKernel<'_, AMSGRAD, L2> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = Splat::new(simd, self.k);
        let head = align_head::<S>(self.block.param);
        let (head, rest) = self.block.split_at(head);
        adam_partial::<S, AMSGRAD, L2>(simd, &c, head);
        adam_registers_of::<S, AMSGRAD, L2>(simd, &c, rest);
    }
}

/// The update of a whole block on the calling thread, without an alignment peel: the body
/// (whole registers) then the masked tail. The kernels whose conversions are heavy (f16,
/// 8-bit codes) stage them in f32 buffers and run this on the buffers.
#[inline(always)]
pub(crate) fn adam_registers_of<S: Simd, const AMSGRAD: bool, const L2: bool>(
    simd: S,
    c: &Splat<S>,
    block: AdamBlock<'_>,
) {
    let body = block.len() / S::F32_LANES * S::F32_LANES;
    let (body, tail) = block.split_at(body);
    adam_body::<S, AMSGRAD, L2, _>(simd, c, &mut F32Registers::<S, AMSGRAD>::new(body));
    adam_partial::<S, AMSGRAD, L2>(simd, c, tail);
}

/// The number of elements before the first register-aligned element of `x`, for a block of at
/// least 4096 elements; 0 for a shorter one.
// PERF: aligning the body on `param` pays: split loads cost ~10% of the bandwidth on Zen 3
// (measured: 24.5 -> 27 GB/s at 2^24 elements, 1 thread). Short blocks skip it: two masked
// passes would cost more than the split loads.
#[inline(always)]
pub(crate) fn align_head<S: Simd>(x: &[f32]) -> usize {
    let width = core::mem::size_of::<S::f32s>();
    let misaligned = x.as_ptr() as usize % width;
    if x.len() >= 4096 {
        (width - misaligned) % width / core::mem::size_of::<f32>()
    } else {
        0
    }
}

/// Registers processed per iteration of the body.
// PERF: 2 keeps twice the loads in flight: 24.5 -> 28-31 GB/s at 2^24 elements on 1 Zen 3
// thread (torch's fused AdamW: 26-29 GB/s in the same runs).
pub(crate) const UNROLL: usize = 2;

/// Where the body finds its operands and puts its results, register by register: f32 slices
/// ([`F32Registers`]: the f32 kernel, and the kernels that stage converted operands in f32
/// buffers), or 16-bit state converted in `load` and `store_moments` (the bf16-state kernel), so
/// every kernel runs this one loop.
pub(crate) trait AdamRegisters<S: Simd> {
    /// Which default [`dispatch::software_prefetch`] follows for this body.
    const PREFETCH: dispatch::PrefetchKind = dispatch::PrefetchKind::Stream;
    /// Number of (whole) registers.
    fn len(&self) -> usize;
    /// `[theta, g, m, v, vmax]` of register `i` (`vmax` is ignored unless amsgrad).
    fn load(&mut self, simd: S, i: usize) -> [S::f32s; 5];
    /// The new `m`, `v` (and `vmax`, with amsgrad) of register `i`.
    fn store_moments(&mut self, simd: S, i: usize, m: S::f32s, v: S::f32s, vmax: S::f32s);
    /// The new `theta` of register `i`.
    fn store_theta(&mut self, simd: S, i: usize, theta: S::f32s);
    /// Asks the cache for the operands of the [`UNROLL`] registers from `i` (`i` may be past
    /// the end); nothing by default.
    #[inline(always)]
    fn prefetch(&self, simd: S, i: usize) {
        let _ = (simd, i);
    }
    /// Other work the body interleaves with the [`UNROLL`] registers from `i`, for ports the
    /// update leaves idle; nothing by default.
    #[inline(always)]
    fn interleave(&mut self, simd: S, i: usize) {
        let _ = (simd, i);
    }
}

/// How far ahead of the update the body asks for its operands (`prefetcht0`), in elements:
/// 2 KB of each f32 array.
// PERF: on an Intel Xeon (2 cores, KVM guest), with the hardware prefetchers alone, the samples
// of the DRAM-sized steps sat on the loads of `theta` and `g`. With this distance the f32 step
// at 2^24 went from 1.38 to 1.20 ns per element on one thread (same run, alternating; 256: 1.16,
// 1024: no gain), the 8-bit step from about 2.5 to 1.9 on a loaded machine. See
// docs/performance.md.
pub(crate) const PREFETCH_AHEAD: usize = 512;

/// Registers from `i` to the next cache line, for the `prefetch` of f32 operands: every
/// register with AVX-512 (64 bytes), every other one with AVX2.
#[inline(always)]
pub(crate) fn registers_per_line<S: Simd>() -> usize {
    (64 / core::mem::size_of::<S::f32s>()).max(1)
}

/// The body over whole registers, [`UNROLL`] at a time.
#[inline(always)]
pub(crate) fn adam_body<S: Simd, const AMSGRAD: bool, const L2: bool, R: AdamRegisters<S>>(
    simd: S,
    c: &Splat<S>,
    regs: &mut R,
) {
    let n = regs.len();
    let ahead = PREFETCH_AHEAD / S::F32_LANES;
    let prefetch = dispatch::software_prefetch(R::PREFETCH);
    let mut i = 0;
    while i + UNROLL <= n {
        if prefetch {
            regs.prefetch(simd, i + ahead);
        }
        regs.interleave(simd, i);
        adam_registers::<S, AMSGRAD, L2, UNROLL, R>(simd, c, regs, i);
        i += UNROLL;
    }
    while i < n {
        adam_registers::<S, AMSGRAD, L2, 1, R>(simd, c, regs, i);
        i += 1;
    }
}

/// The f32 kernel's operands: equally long slices of whole registers (`x` empty unless
/// amsgrad).
pub(crate) struct F32Registers<'a, S: Simd, const AMSGRAD: bool> {
    p: &'a mut [S::f32s],
    g: &'a [S::f32s],
    m: &'a mut [S::f32s],
    v: &'a mut [S::f32s],
    x: &'a mut [S::f32s],
}

impl<'a, S: Simd, const AMSGRAD: bool> F32Registers<'a, S, AMSGRAD> {
    /// The whole registers of `block` (its length must be a multiple of the register width).
    #[inline(always)]
    fn new(block: AdamBlock<'a>) -> Self {
        let (p, _) = S::as_mut_simd_f32s(block.param);
        let (g, _) = S::as_simd_f32s(block.grad);
        let (m, _) = S::as_mut_simd_f32s(block.exp_avg);
        let (v, _) = S::as_mut_simd_f32s(block.exp_avg_sq);
        let (x, _) = S::as_mut_simd_f32s(block.max_exp_avg_sq);
        let n = p.len();
        // Equal lengths were checked by the caller; re-slicing lets the bounds checks go.
        Self {
            p,
            g: &g[..n],
            m: &mut m[..n],
            v: &mut v[..n],
            x: if AMSGRAD { &mut x[..n] } else { x },
        }
    }
}

impl<S: Simd, const AMSGRAD: bool> AdamRegisters<S> for F32Registers<'_, S, AMSGRAD> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.p.len()
    }

    #[inline(always)]
    fn load(&mut self, simd: S, i: usize) -> [S::f32s; 5] {
        let x = if AMSGRAD {
            self.x[i]
        } else {
            simd.splat_f32s(0.0)
        };
        [self.p[i], self.g[i], self.m[i], self.v[i], x]
    }

    #[inline(always)]
    fn store_moments(&mut self, _: S, i: usize, m: S::f32s, v: S::f32s, vmax: S::f32s) {
        self.m[i] = m;
        self.v[i] = v;
        if AMSGRAD {
            self.x[i] = vmax;
        }
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
            prefetch(&simd, self.m, i + k);
            prefetch(&simd, self.v, i + k);
            if AMSGRAD {
                prefetch(&simd, self.x, i + k);
            }
        }
    }
}

/// `K` consecutive registers from `i`: all loads, the moments, their stores (before the
/// sqrt/div chain, as PyTorch's fused kernel orders them), then `theta`.
#[inline(always)]
fn adam_registers<S: Simd, const AMSGRAD: bool, const L2: bool, const K: usize, R>(
    simd: S,
    c: &Splat<S>,
    r: &mut R,
    i: usize,
) where
    R: AdamRegisters<S>,
{
    let zero = simd.splat_f32s(0.0);
    let mut out = [[zero; 4]; K];
    for (k, out) in out.iter_mut().enumerate() {
        *out = adam_moments::<S, AMSGRAD, L2>(simd, c, r.load(simd, i + k));
    }
    for (k, &[_, m, v, x]) in out.iter().enumerate() {
        r.store_moments(simd, i + k, m, v, x);
    }
    for (k, &[p, m, v, x]) in out.iter().enumerate() {
        let theta = adam_theta(simd, c, p, m, if AMSGRAD { x } else { v });
        r.store_theta(simd, i + k, theta);
    }
}

/// Fewer elements than a register (the unaligned head, the tail): the same lane function on
/// zero-padded registers, stored under a mask.
#[inline(always)]
fn adam_partial<S: Simd, const AMSGRAD: bool, const L2: bool>(
    simd: S,
    c: &Splat<S>,
    block: AdamBlock<'_>,
) {
    if block.len() == 0 {
        return;
    }
    let vmax = if AMSGRAD {
        simd.partial_load_f32s(block.max_exp_avg_sq)
    } else {
        simd.splat_f32s(0.0)
    };
    let [p, m, v, x] = adam_moments::<S, AMSGRAD, L2>(
        simd,
        c,
        [
            simd.partial_load_f32s(block.param),
            simd.partial_load_f32s(block.grad),
            simd.partial_load_f32s(block.exp_avg),
            simd.partial_load_f32s(block.exp_avg_sq),
            vmax,
        ],
    );
    let p = adam_theta(simd, c, p, m, if AMSGRAD { x } else { v });
    simd.partial_store_f32s(block.param, p);
    simd.partial_store_f32s(block.exp_avg, m);
    simd.partial_store_f32s(block.exp_avg_sq, v);
    if AMSGRAD {
        simd.partial_store_f32s(block.max_exp_avg_sq, x);
    }
}

/// Runs the update on one block on the calling thread.
pub(crate) fn adam_update_block(isa: Isa, k: &AdamCoefficients, block: AdamBlock<'_>) {
    match (k.amsgrad, k.l2 != 0.0) {
        (false, false) => isa.run(AdamKernel::<false, false> { k, block }),
        (false, true) => isa.run(AdamKernel::<false, true> { k, block }),
        (true, false) => isa.run(AdamKernel::<true, false> { k, block }),
        (true, true) => isa.run(AdamKernel::<true, true> { k, block }),
    }
}

/// `par`, or [`Par::Seq`] for a step small enough to stay in one core's cache: the one threshold
/// of [`dispatch::par_for_bytes`], applied to the f32 step's traffic (28 bytes per element, so
/// up to about 2^16 elements run on the calling thread; measured on an Intel Xeon: 2^15 and 2^16
/// were 15-20% slower on two threads than on one). Results do not change.
pub(crate) fn step_par(par: Par, elements: usize) -> Par {
    dispatch::par_for_bytes(par, elements.saturating_mul(28))
}

/// Elements per block: the unit of threading and of the finite scan (~450 KB of traffic).
pub(crate) const BLOCK: usize = 1 << 14;

/// Whether `values * scale` is finite everywhere, on the calling thread.
pub(crate) fn finite_on_thread(isa: Isa, values: &[f32], scale: f32) -> bool {
    isa.run(FiniteScan { values, scale })
}

/// Whether `grad * scale` is finite everywhere, scanning blocks in parallel.
pub(crate) fn grad_is_finite(isa: Isa, par: Par, grad: &[f32], scale: f32) -> Result<bool> {
    dispatch::map_reduce_blocks(
        par,
        grad,
        BLOCK,
        &|values: &[f32]| finite_on_thread(isa, values, scale),
        &|a, b| a && b,
    )
}

/// The buffers of one tensor for [`adam_step_multi`].
#[derive(Debug)]
pub struct AdamTensor<'a> {
    /// The parameters (`theta`), updated in place.
    pub param: &'a mut [f32],
    /// The gradient (read only).
    pub grad: &'a [f32],
    /// The first moment `m`, updated in place.
    pub exp_avg: &'a mut [f32],
    /// The second moment `v`, updated in place.
    pub exp_avg_sq: &'a mut [f32],
    /// Required with amsgrad; ignored otherwise.
    pub max_exp_avg_sq: Option<&'a mut [f32]>,
}

impl AdamTensor<'_> {
    /// Lengths agree and amsgrad has its buffer; allocates only to report an error.
    pub(crate) fn check(&self, cfg: &AdamConfig, index: Option<usize>) -> Result<()> {
        let name = |field: &str| match index {
            Some(i) => format!("tensors[{i}].{field}"),
            None => field.to_string(),
        };
        let n = self.param.len();
        let vmax_len = match (&self.max_exp_avg_sq, cfg.amsgrad) {
            (Some(x), true) => x.len(),
            (None, true) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("amsgrad needs {}", name("max_exp_avg_sq")),
                ))
            }
            (_, false) => n,
        };
        let lengths = [
            ("grad", self.grad.len()),
            ("exp_avg", self.exp_avg.len()),
            ("exp_avg_sq", self.exp_avg_sq.len()),
            ("max_exp_avg_sq", vmax_len),
        ];
        match lengths.iter().find(|(_, len)| *len != n) {
            Some(&(field, len)) => Err(Error::length(format!(
                "{} has {len} elements, expected {n} (as {})",
                name(field),
                name("param")
            ))),
            None => Ok(()),
        }
    }

    fn block(&mut self, amsgrad: bool) -> AdamBlock<'_> {
        AdamBlock {
            param: &mut *self.param,
            grad: self.grad,
            exp_avg: &mut *self.exp_avg,
            exp_avg_sq: &mut *self.exp_avg_sq,
            max_exp_avg_sq: match (&mut self.max_exp_avg_sq, amsgrad) {
                (Some(x), true) => x,
                _ => &mut [],
            },
        }
    }
}

/// One Adam/AdamW step over one tensor (see the module docs for the math), on the best
/// instruction set and the crate's thread pool.
///
/// Errors: [`ErrorKind::Length`] if the slices differ in length, [`ErrorKind::InvalidArgument`]
/// if amsgrad is on without `max_exp_avg_sq`, [`ErrorKind::InvalidHyperparameter`] for a bad
/// config or `step == 0`, [`ErrorKind::NonFinite`] when `check_finite` finds NaN/Inf. Nothing is
/// written on error.
pub fn adam_step(
    cfg: &AdamConfig,
    step: u64,
    param: &mut [f32],
    grad: &[f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    max_exp_avg_sq: Option<&mut [f32]>,
) -> Result<()> {
    adam_step_with(
        Isa::detect(),
        Par::Pool,
        cfg,
        step,
        AdamTensor {
            param,
            grad,
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
        },
    )
}

/// [`adam_step`] on a chosen instruction set and parallelism (the low-level tier).
pub fn adam_step_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    mut tensor: AdamTensor<'_>,
) -> Result<()> {
    cfg.validate()?;
    check_step(step)?;
    tensor.check(cfg, None)?;
    let par = step_par(par, tensor.param.len());
    let k = AdamCoefficients::new(cfg, step);
    if cfg.check_finite && !grad_is_finite(isa, par, tensor.grad, k.grad_factor)? {
        return Err(non_finite_error());
    }
    dispatch::map_reduce_blocks(
        par,
        tensor.block(cfg.amsgrad),
        BLOCK,
        &|block| adam_update_block(isa, &k, block),
        &|(), ()| (),
    )
}

/// One Adam/AdamW step over many tensors with one configuration, like PyTorch's fused
/// tensor-list kernels. Work is cut into pieces of at most 16384 (`BLOCK`) elements and grouped into
/// balanced batches by element count (not tensor count) before it is spread over threads.
/// All tensors are checked (and, with `check_finite`, scanned) before any is written.
pub fn adam_step_multi(cfg: &AdamConfig, step: u64, tensors: &mut [AdamTensor<'_>]) -> Result<()> {
    adam_step_multi_with(Isa::detect(), Par::Pool, cfg, step, tensors)
}

/// [`adam_step_multi`] on a chosen instruction set and parallelism.
pub fn adam_step_multi_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    tensors: &mut [AdamTensor<'_>],
) -> Result<()> {
    cfg.validate()?;
    check_step(step)?;
    for (i, t) in tensors.iter().enumerate() {
        t.check(cfg, Some(i))?;
    }
    let elements: usize = tensors.iter().map(|t| t.param.len()).sum();
    let par = step_par(par, elements);
    let k = AdamCoefficients::new(cfg, step);
    let batches =
        batches::balanced_batches(tensors.iter_mut().map(|t| t.block(cfg.amsgrad)), BLOCK, 1);
    let finite = |b: &AdamBlock<'_>| finite_on_thread(isa, b.grad, k.grad_factor);
    batches::step_batches(par, batches, cfg.check_finite, finite, |block| {
        adam_update_block(isa, &k, block)
    })
}
