//! # GN^p preconditioned step (f32)
//!
//! With `t` the 1-based step count, for every element:
//!
//! ```text
//! theta <- theta * (1 - lr * wd)                      decoupled weight decay (wd > 0)
//! m     <- fma(1 - beta1, g, beta1 * m)               with momentum (an exp_avg buffer)
//! m_hat =  m / (1 - beta1^t)  with bias correction;  m  without;  g  without momentum
//! u     =  m_hat * (max(h, 0) + lambda)^p             p = -1: a division; p = -1/2: a
//!                                                     division by a square root; any other
//!                                                     p: the vectorised power of
//!                                                     `kernels::math` (no libm call)
//! u     =  clip(m_hat / max(gamma * h, eps), -1, 1)   Sophia's clipped form (replaces the line
//!                                                     above; power and lambda unused)
//! theta <- fma(-lr, u, theta)                         (the bias correction is folded into lr)
//! ```
//!
//! Scalars (`1 - lr wd`, `1 - beta1`, `lr / (1 - beta1^t)`) are computed in f64 and rounded to
//! f32; per-element arithmetic is f32 (the general power carries `p` as an f32 pair).
//!
//! **Positivity**: `h` is the diagonal of a PSD matrix; negative entries (rounding in a
//! caller's estimate) are treated as 0 (NaN propagates). A negative power needs `lambda > 0`
//! ([`GnConfig::validate`] rejects `power < 0` with `damping == 0`), so `h + lambda > 0`
//! everywhere and the factor is always finite. Sophia's form needs `gamma > 0`, `eps > 0`.
//!
//! **Storage**: `param`, `grad`, `h` and (with momentum) `exp_avg` are equally long, contiguous
//! f32 slices; any alignment.
//!
//! **Accuracy**: the p = -1 and p = -1/2 paths and Sophia's form use only correctly rounded
//! operations, so they are bitwise identical across instruction sets and thread counts; the
//! general power `(h + lambda)^p` is within `1.5 + |p| / 2` ulp ([`crate::kernels::math`]), also
//! from a fixed sequence of IEEE operations and FMAs, so identical everywhere too. The bound
//! against [`crate::reference::gn_step`] is in `tests/gn.rs`.
//!
//! **Non-finite input**: with `check_finite`, `grad` and `h` are scanned first; NaN or +-Inf in
//! either returns [`ErrorKind::NonFinite`] and writes nothing.

use crate::dispatch::{self, FiniteScan, Isa, Par, Split};
use crate::error::{self, check_lengths, check_step, Error, ErrorKind, Result};
use crate::kernels::adam::{grad_is_finite, registers_per_line, BLOCK, PREFETCH_AHEAD};
use crate::kernels::convert;
use crate::kernels::math::{self, Power, PowerLanes};
use pulp::{Simd, WithSimd};

/// Sophia's clipped update `clip(m / max(gamma * h, eps), -1, 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SophiaClip {
    /// Scales `h`, finite and > 0 (Sophia's `rho`, with `h` the unscaled estimate).
    pub gamma: f64,
    /// Floor of the denominator, finite and > 0.
    pub eps: f64,
}

impl Default for SophiaClip {
    /// Sophia's paper defaults: `gamma = 0.01`, `eps = 1e-15` (rounded to f32: 1e-15).
    fn default() -> Self {
        Self {
            gamma: 0.01,
            eps: 1e-15,
        }
    }
}

/// GN^p step hyperparameters. `Default`: `lr = 1`, `power = -1` (a damped Newton step on the
/// diagonal), `damping = 1e-4`, no momentum, bias correction on (used only with momentum), no
/// weight decay, no Sophia clipping, no finite check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GnConfig {
    /// Learning rate, finite and >= 0.
    pub lr: f64,
    /// The power `p` of `(h + damping)`, in `[-MAX_POWER, MAX_POWER]`; -1 and -0.5 are fast paths.
    pub power: f64,
    /// `lambda`, finite and >= 0; > 0 when `power < 0`.
    pub damping: f64,
    /// Momentum decay in [0, 1) (used when an `exp_avg` buffer is given; 0 means `m = g`).
    pub beta1: f64,
    /// Divide `m` by `1 - beta1^t` (with momentum).
    pub bias_correction: bool,
    /// Decoupled weight decay `theta *= 1 - lr * wd`, finite and >= 0.
    pub weight_decay: f64,
    /// Use Sophia's clipped form instead of the power.
    pub sophia: Option<SophiaClip>,
    /// Scan `grad` and `h` first and write nothing if either holds NaN or Inf.
    pub check_finite: bool,
}

impl Default for GnConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            power: -1.0,
            damping: 1e-4,
            beta1: 0.0,
            bias_correction: true,
            weight_decay: 0.0,
            sophia: None,
            check_finite: false,
        }
    }
}

/// The largest `|power|` a GN^p step accepts (the paper's powers are -1 and -1/2; beyond a few
/// units `(h + damping)^p` leaves f32 for ordinary `h`).
pub const MAX_POWER: f64 = 4.0;

impl GnConfig {
    /// Checks every hyperparameter against its range, and that it and the coefficients derived
    /// from it are finite (and nonzero where they divide) as the f32 the kernels use: the step
    /// size (`lr / (1 - beta1)` at step 1 with bias correction), the decay `1 - lr * wd`, the
    /// damping and the largest preconditioner value `damping^power` (reached where `h = 0`).
    pub fn validate(&self) -> Result<()> {
        error::check_non_negative("lr", self.lr)?;
        if self.power.is_nan() || self.power.abs() > MAX_POWER {
            return Err(Error::hyperparameter(format!(
                "power = {} is outside [-{MAX_POWER}, {MAX_POWER}]",
                self.power
            )));
        }
        error::check_non_negative("damping", self.damping)?;
        if self.sophia.is_none() && self.power < 0.0 && self.damping == 0.0 {
            return Err(Error::hyperparameter(format!(
                "power = {} < 0 needs damping > 0 (h + damping must be positive)",
                self.power
            )));
        }
        error::check_half_open("beta1", self.beta1, 0.0, 1.0)?;
        error::check_non_negative("weight_decay", self.weight_decay)?;
        if let Some(s) = self.sophia {
            error::check_positive("sophia.gamma", s.gamma)?;
            error::check_positive("sophia.eps", s.eps)?;
            error::check_f32("sophia.eps", s.eps, true)?;
        }
        error::check_f32("lr", self.lr, false)?;
        if self.bias_correction && self.beta1 > 0.0 {
            error::check_f32(
                "lr / (1 - beta1) (the first step's size)",
                self.lr / (1.0 - self.beta1),
                false,
            )?;
        }
        error::check_f32("weight_decay", self.weight_decay, false)?;
        error::check_f32(
            "1 - lr * weight_decay",
            1.0 - self.lr * self.weight_decay,
            false,
        )?;
        // A nonzero damping must stay nonzero in f32: `x^p` with `p > 0` is 0 at `x = 0` but
        // near 1 at a tiny `x` when `p` is small, so a damping flushed to 0 changes the step.
        error::check_f32("damping", self.damping, self.damping != 0.0)?;
        if let Some(s) = self.sophia {
            error::check_f32("sophia.gamma", s.gamma, true)?;
        } else if self.power < 0.0 {
            let damping = self.damping as f32;
            error::check_f32("damping", self.damping, true)?;
            error::check_f32(
                "damping^power (the preconditioner where h = 0)",
                f64::from(damping).powf(self.power),
                false,
            )?;
        }
        Ok(())
    }
}

/// How `u` is formed from `m_hat` and `h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Recip,
    Rsqrt,
    Power,
    Sophia,
}

const RECIP: u8 = 0;
const RSQRT: u8 = 1;
const POWER: u8 = 2;
const SOPHIA: u8 = 3;
/// The general power when `x = max(h, 0) + lambda` is at least `lambda >= f32::MIN_POSITIVE`
/// and `|p|` is small enough for [`math::pow_positive_lane`]: the same bits, fewer instructions.
const POWER_POSITIVE: u8 = 4;

/// The f32 scalars of one step.
#[derive(Clone, Copy, Debug)]
struct GnCoefficients {
    decay: f32,
    beta1: f32,
    one_minus_beta1: f32,
    /// `-lr / bc1` (bias correction folded in), or `-lr`.
    neg_step: f32,
    /// For Sophia: `1 / bc1` (the ratio needs m_hat), else 1.
    inv_bc1: f32,
    damping: f32,
    power: Power,
    power_value: f64,
    gamma: f32,
    eps: f32,
    mode: Mode,
}

impl GnCoefficients {
    /// Whether the general power may use [`math::pow_positive_lane`].
    fn positive_power_lane(&self) -> bool {
        self.damping >= f32::MIN_POSITIVE && self.power_value.abs() <= math::POSITIVE_LANE_MAX_POWER
    }

    fn new(cfg: &GnConfig, step: u64, momentum: bool) -> Self {
        let bc1 = if momentum && cfg.bias_correction {
            1.0 - cfg.beta1.powf(step as f64)
        } else {
            1.0
        };
        let mode = if cfg.sophia.is_some() {
            Mode::Sophia
        } else if cfg.power == -1.0 {
            Mode::Recip
        } else if cfg.power == -0.5 {
            Mode::Rsqrt
        } else {
            Mode::Power
        };
        let sophia = cfg.sophia.unwrap_or_default();
        Self {
            decay: (1.0 - cfg.lr * cfg.weight_decay) as f32,
            beta1: cfg.beta1 as f32,
            one_minus_beta1: (1.0 - cfg.beta1) as f32,
            neg_step: if mode == Mode::Sophia {
                -cfg.lr as f32
            } else {
                (-cfg.lr / bc1) as f32
            },
            inv_bc1: if mode == Mode::Sophia {
                (1.0 / bc1) as f32
            } else {
                1.0
            },
            damping: cfg.damping as f32,
            power: Power::new(cfg.power),
            power_value: cfg.power,
            gamma: sophia.gamma as f32,
            eps: sophia.eps as f32,
            mode,
        }
    }
}

struct Splat<S: Simd> {
    decay: S::f32s,
    beta1: S::f32s,
    one_minus_beta1: S::f32s,
    neg_step: S::f32s,
    inv_bc1: S::f32s,
    damping: S::f32s,
    gamma: S::f32s,
    eps: S::f32s,
    zero: S::f32s,
    one: S::f32s,
    power: PowerLanes<S>,
}

impl<S: Simd> Splat<S> {
    #[inline(always)]
    fn new(simd: S, k: &GnCoefficients) -> Self {
        Self {
            decay: simd.splat_f32s(k.decay),
            beta1: simd.splat_f32s(k.beta1),
            one_minus_beta1: simd.splat_f32s(k.one_minus_beta1),
            neg_step: simd.splat_f32s(k.neg_step),
            inv_bc1: simd.splat_f32s(k.inv_bc1),
            damping: simd.splat_f32s(k.damping),
            gamma: simd.splat_f32s(k.gamma),
            eps: simd.splat_f32s(k.eps),
            zero: simd.splat_f32s(0.0),
            one: simd.splat_f32s(1.0),
            power: PowerLanes::new(simd, &k.power),
        }
    }
}

/// `max(h, 0)` with NaN propagated: compare and select; on AVX-512 and AVX2 one `max(0, h)`
/// (`vmaxps` returns its second operand when either is NaN or both are zero), the same bits.
#[inline(always)]
fn max_zero<S: Simd>(simd: S, h: S::f32s, zero: S::f32s) -> S::f32s {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    if let Some([y]) = math::on_backend(
        simd,
        [zero, h],
        |v4: pulp::x86::V4, [z, h]: [pulp::f32x16; 2]| {
            [pulp::cast(
                v4.avx512f._mm512_max_ps(pulp::cast(z), pulp::cast(h)),
            )]
        },
    ) {
        return y;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some([y]) = math::on_backend(
        simd,
        [zero, h],
        |v3: pulp::x86::V3, [z, h]: [pulp::f32x8; 2]| {
            [pulp::cast(
                v3.avx._mm256_max_ps(pulp::cast(z), pulp::cast(h)),
            )]
        },
    ) {
        return y;
    }
    simd.select_f32s(simd.less_than_f32s(h, zero), zero, h)
}

/// One register of the step: returns `(theta, m)`. Body and masked tail both run it.
#[inline(always)]
fn gn_lane<S: Simd, const MOMENTUM: bool, const MODE: u8>(
    simd: S,
    c: &Splat<S>,
    [theta, g, m, h]: [S::f32s; 4],
) -> [S::f32s; 2] {
    let theta = simd.mul_f32s(theta, c.decay);
    let m = if MOMENTUM {
        simd.mul_add_f32s(c.one_minus_beta1, g, simd.mul_f32s(c.beta1, m))
    } else {
        m
    };
    let m_eff = if MOMENTUM { m } else { g };
    let h_pos = || max_zero(simd, h, c.zero);
    let u = match MODE {
        RECIP => simd.div_f32s(m_eff, simd.add_f32s(h_pos(), c.damping)),
        RSQRT => simd.div_f32s(m_eff, simd.sqrt_f32s(simd.add_f32s(h_pos(), c.damping))),
        POWER => simd.mul_f32s(
            m_eff,
            math::pow_lane(simd, simd.add_f32s(h_pos(), c.damping), &c.power),
        ),
        POWER_POSITIVE => simd.mul_f32s(
            m_eff,
            math::pow_positive_lane(simd, simd.add_f32s(h_pos(), c.damping), &c.power),
        ),
        _ => {
            let gh = simd.mul_f32s(c.gamma, h);
            let denom = simd.select_f32s(simd.greater_than_f32s(gh, c.eps), gh, c.eps);
            let ratio = simd.div_f32s(simd.mul_f32s(m_eff, c.inv_bc1), denom);
            let neg_one = simd.neg_f32s(c.one);
            let r = simd.select_f32s(simd.greater_than_f32s(ratio, c.one), c.one, ratio);
            simd.select_f32s(simd.less_than_f32s(r, neg_one), neg_one, r)
        }
    };
    [simd.mul_add_f32s(c.neg_step, u, theta), m]
}

/// Equally long slices of one piece of work; `exp_avg` is empty without momentum.
struct GnBlock<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    exp_avg: &'a mut [f32],
    h: &'a [f32],
}

dispatch::split_fields!(GnBlock {
    param,
    grad,
    exp_avg: upto,
    h,
});

struct GnKernel<'a, const MOMENTUM: bool, const MODE: u8> {
    k: &'a GnCoefficients,
    block: GnBlock<'a>,
}

impl<const MOMENTUM: bool, const MODE: u8> WithSimd for GnKernel<'_, MOMENTUM, MODE> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = Splat::new(simd, self.k);
        let GnBlock {
            param,
            grad,
            exp_avg,
            h,
        } = self.block;
        let (p_body, p_tail) = S::as_mut_simd_f32s(param);
        let (g_body, g_tail) = S::as_simd_f32s(grad);
        let (m_body, m_tail) = S::as_mut_simd_f32s(exp_avg);
        let (h_body, h_tail) = S::as_simd_f32s(h);
        let n = p_body.len();
        let (g_body, h_body) = (&g_body[..n], &h_body[..n]);
        let m_body = if MOMENTUM { &mut m_body[..n] } else { m_body };
        // The Adam bodies' software prefetch (`dispatch::software_prefetch`), one line of each
        // operand per cache line of progress; a general power is heavy work per element.
        let kind = if MODE == POWER || MODE == POWER_POSITIVE {
            dispatch::PrefetchKind::Heavy
        } else {
            dispatch::PrefetchKind::Stream
        };
        let prefetch = dispatch::software_prefetch(kind);
        let (ahead, per_line) = (PREFETCH_AHEAD / S::F32_LANES, registers_per_line::<S>());
        for i in 0..n {
            if prefetch && i % per_line == 0 {
                convert::prefetch(&simd, p_body, i + ahead);
                convert::prefetch(&simd, g_body, i + ahead);
                convert::prefetch(&simd, h_body, i + ahead);
                if MOMENTUM {
                    convert::prefetch(&simd, m_body, i + ahead);
                }
            }
            let m = if MOMENTUM { m_body[i] } else { c.zero };
            let [p, m] =
                gn_lane::<S, MOMENTUM, MODE>(simd, &c, [p_body[i], g_body[i], m, h_body[i]]);
            p_body[i] = p;
            if MOMENTUM {
                m_body[i] = m;
            }
        }
        if !p_tail.is_empty() {
            let m = if MOMENTUM {
                simd.partial_load_f32s(m_tail)
            } else {
                c.zero
            };
            let [p, m] = gn_lane::<S, MOMENTUM, MODE>(
                simd,
                &c,
                [
                    simd.partial_load_f32s(p_tail),
                    simd.partial_load_f32s(g_tail),
                    m,
                    simd.partial_load_f32s(h_tail),
                ],
            );
            simd.partial_store_f32s(p_tail, p);
            if MOMENTUM {
                simd.partial_store_f32s(m_tail, m);
            }
        }
    }
}

fn run_block(isa: Isa, k: &GnCoefficients, momentum: bool, block: GnBlock<'_>) {
    match (momentum, k.mode) {
        (false, Mode::Recip) => isa.run(GnKernel::<false, RECIP> { k, block }),
        (false, Mode::Rsqrt) => isa.run(GnKernel::<false, RSQRT> { k, block }),
        (false, Mode::Power) if k.positive_power_lane() => {
            isa.run(GnKernel::<false, POWER_POSITIVE> { k, block })
        }
        (true, Mode::Power) if k.positive_power_lane() => {
            isa.run(GnKernel::<true, POWER_POSITIVE> { k, block })
        }
        (false, Mode::Power) => isa.run(GnKernel::<false, POWER> { k, block }),
        (false, Mode::Sophia) => isa.run(GnKernel::<false, SOPHIA> { k, block }),
        (true, Mode::Recip) => isa.run(GnKernel::<true, RECIP> { k, block }),
        (true, Mode::Rsqrt) => isa.run(GnKernel::<true, RSQRT> { k, block }),
        (true, Mode::Power) => isa.run(GnKernel::<true, POWER> { k, block }),
        (true, Mode::Sophia) => isa.run(GnKernel::<true, SOPHIA> { k, block }),
    }
}

/// Whether every value of `values` is finite, scanning blocks in parallel.
pub(crate) fn all_finite(isa: Isa, par: Par, values: &[f32]) -> Result<bool> {
    if values.len() <= BLOCK {
        return Ok(isa.run(FiniteScan { values, scale: 1.0 }));
    }
    grad_is_finite(isa, par, values, 1.0)
}

/// Checks the configuration, the step count and the lengths of one tensor's buffers.
pub(crate) fn check_gn_step(
    cfg: &GnConfig,
    step: u64,
    len: usize,
    grad: usize,
    exp_avg: Option<usize>,
    h: usize,
) -> Result<()> {
    check_lengths(len, &[("grad", grad), ("h", h)])?;
    if let Some(m) = exp_avg {
        check_lengths(len, &[("exp_avg", m)])?;
    }
    cfg.validate()?;
    check_step(step)
}

fn non_finite_error() -> Error {
    Error::new(
        ErrorKind::NonFinite,
        "grad or h holds NaN or Inf: step skipped, nothing written",
    )
}

/// One GN^p step over one tensor (see the module docs): `theta -= lr * m_hat * (h + damping)^p`
/// (or Sophia's clipped form), on the best instruction set and the crate's pool.
/// `exp_avg = None` means no momentum (`m_hat = g`). `step` is 1-based.
///
/// Errors: [`ErrorKind::Length`] if the slices differ in length,
/// [`ErrorKind::InvalidHyperparameter`] for a bad config or `step == 0`,
/// [`ErrorKind::NonFinite`] when `check_finite` finds NaN/Inf in `grad` or `h`. Nothing is
/// written on error.
pub fn gn_step(
    cfg: &GnConfig,
    step: u64,
    param: &mut [f32],
    grad: &[f32],
    exp_avg: Option<&mut [f32]>,
    h: &[f32],
) -> Result<()> {
    gn_step_with(Isa::detect(), Par::Pool, cfg, step, param, grad, exp_avg, h)
}

/// [`gn_step`] on a chosen instruction set and parallelism.
#[allow(clippy::too_many_arguments)]
pub fn gn_step_with(
    isa: Isa,
    par: Par,
    cfg: &GnConfig,
    step: u64,
    param: &mut [f32],
    grad: &[f32],
    exp_avg: Option<&mut [f32]>,
    h: &[f32],
) -> Result<()> {
    check_gn_step(
        cfg,
        step,
        param.len(),
        grad.len(),
        exp_avg.as_ref().map(|m| m.len()),
        h.len(),
    )?;
    if cfg.check_finite && !(all_finite(isa, par, grad)? && all_finite(isa, par, h)?) {
        return Err(non_finite_error());
    }
    let momentum = exp_avg.is_some();
    let k = GnCoefficients::new(cfg, step, momentum);
    let block = GnBlock {
        param,
        grad,
        exp_avg: exp_avg.unwrap_or(&mut []),
        h,
    };
    dispatch::map_reduce_blocks(
        par,
        block,
        BLOCK,
        &|b| run_block(isa, &k, momentum, b),
        &|(), ()| (),
    )
}
