//! Optimizers in a basis: Adam with its moments in rotated coordinates ([`RotatedAdam`]), and a
//! SOAP-like optimizer for a matrix parameter ([`Soap`]: a Kronecker basis refreshed from its
//! factor statistics every k steps).
//!
//! **Rotated Adam** (DESIGN.md 2.1) in basis `U`, one step:
//!
//! ```text
//! g'  = g * inv_grad_scale (negated if maximize) (+ wd * theta for Adam's L2 decay)
//! g~  = U^T g'                                   rotate in (GEMM)
//! m~, v~ updated from g~ as Adam does; d~ = -(lr / bc1) m~ / (sqrt(v~) / sqrt(bc2) + eps)
//! theta <- theta * (1 - lr * wd)                 AdamW only
//! theta <- theta + U d~                          rotate out, accumulated into theta by the GEMM
//! ```
//!
//! **Where the moments live**: both `m~` and `v~` (and `vmax~`) live in rotated coordinates.
//! `m` is linear, so this equals SOAP's choice (keep `m` in the original coordinates and rotate
//! it every step) in exact arithmetic, at two GEMMs less per step; on a basis change `m~` is
//! re-projected exactly (`m~' = U'^T U m~`) and `v~` carried by a [`StateTransfer`] rule.
//!
//! **Cost per step**: the two rotations (dense: two matrix-vector products; Kronecker: four
//! GEMMs) plus one element-wise pass over `g~, m~, v~`, plus one pass over `theta` for AdamW's
//! decay and one over `g, theta` for Adam's L2 term when those are non-zero. The identity basis
//! calls the plain Adam kernel on the caller's buffers: nothing extra.
//!
//! The non-finite check scans `g` before anything is written.

use crate::basis::refresh::{transfer_dense, transfer_kronecker};
use crate::basis::rotate::{self, DirectionBlock};
use crate::basis::{Basis, KroneckerBasis, KroneckerStatistics, RefreshMethod, StateTransfer};
use crate::dispatch::{Isa, Par};
use crate::error::{self, Error, ErrorKind, Result};
use crate::kernels::adam::{
    adam_step_with, check_step, grad_is_finite, non_finite_error, AdamCoefficients, AdamConfig,
    AdamTensor,
};
use crate::kernels::gn::step::{gn_step_with, GnConfig};

fn zeros(n: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::new(ErrorKind::Allocation, format!("no memory for {what}")))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// Adam (or AdamW) on one parameter tensor in a basis ([`Basis`]), owning its rotated moments
/// and workspace. See the module docs for the math and costs.
///
/// ```
/// use diagprec::{AdamConfig, Basis, DenseBasis, RotatedAdam};
/// let basis = Basis::Dense(DenseBasis::identity(4));
/// let mut opt = RotatedAdam::new(AdamConfig::default(), basis).unwrap();
/// let mut p = vec![1.0_f32; 4];
/// opt.step(&mut p, &[0.5, -0.5, 0.25, 0.0]).unwrap();
/// assert!(p[0] < 1.0 && p[1] > 1.0 && p[3] == 1.0);
/// ```
#[derive(Clone, Debug)]
pub struct RotatedAdam {
    config: AdamConfig,
    steps_taken: u64,
    basis: Basis,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    max_exp_avg_sq: Vec<f32>,
    /// [`rotated_workspace_len`] floats: `g~` / `d~`, then the GEMM workspace.
    workspace: Vec<f32>,
    isa: Isa,
    par: Par,
}

impl RotatedAdam {
    /// Zeroed state for a parameter of `basis.len()` floats (row-major `m x n` for Kronecker).
    pub fn new(config: AdamConfig, basis: Basis) -> Result<Self> {
        config.validate()?;
        let n = basis.len();
        Ok(Self {
            config,
            steps_taken: 0,
            exp_avg: zeros(n, "exp_avg")?,
            exp_avg_sq: zeros(n, "exp_avg_sq")?,
            max_exp_avg_sq: if config.amsgrad {
                zeros(n, "max_exp_avg_sq")?
            } else {
                Vec::new()
            },
            workspace: zeros(rotated_workspace_len(&basis), "the workspace")?,
            basis,
            isa: Isa::detect(),
            par: Par::Pool,
        })
    }

    /// Runs on `isa` with parallelism `par` (default: detected ISA, the crate's pool).
    pub fn with_isa_par(mut self, isa: Isa, par: Par) -> Self {
        self.isa = isa;
        self.par = par;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// The current basis.
    pub fn basis(&self) -> &Basis {
        &self.basis
    }

    /// Steps applied so far.
    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// `m~` (in rotated coordinates; original ones for the identity basis).
    pub fn exp_avg(&self) -> &[f32] {
        &self.exp_avg
    }

    /// `v~`.
    pub fn exp_avg_sq(&self) -> &[f32] {
        &self.exp_avg_sq
    }

    /// `vmax~` (empty without amsgrad).
    pub fn max_exp_avg_sq(&self) -> &[f32] {
        &self.max_exp_avg_sq
    }

    /// Number of parameter floats.
    pub fn len(&self) -> usize {
        self.basis.len()
    }

    /// Whether the parameter is empty.
    pub fn is_empty(&self) -> bool {
        self.basis.is_empty()
    }

    /// One step (see the module docs). On error nothing changes, the step count included.
    pub fn step(&mut self, param: &mut [f32], grad: &[f32]) -> Result<()> {
        let t = self.steps_taken + 1;
        let amsgrad = self.config.amsgrad;
        rotated_adam_step_with(
            self.isa,
            self.par,
            &self.config,
            t,
            &self.basis,
            AdamTensor {
                param,
                grad,
                exp_avg: &mut self.exp_avg,
                exp_avg_sq: &mut self.exp_avg_sq,
                max_exp_avg_sq: amsgrad.then_some(&mut self.max_exp_avg_sq[..]),
            },
            &mut self.workspace,
        )?;
        self.steps_taken = t;
        Ok(())
    }

    /// Switches to `basis` (same kind and size), carrying the rotated state: `m~` re-projected
    /// exactly, `v~` (and `vmax~`) by `transfer`; `permutation` (dense: one list; Kronecker: left
    /// then right) is needed by [`StateTransfer::Permute`] (see
    /// [`crate::basis::refresh`]). Switching from or to the identity is not supported (their
    /// moments live in different coordinates): build a new optimizer instead.
    pub fn set_basis(
        &mut self,
        basis: Basis,
        transfer: StateTransfer,
        permutation: Option<(&[usize], &[usize])>,
    ) -> Result<()> {
        let perms = match transfer {
            StateTransfer::Permute => Some(permutation.ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "StateTransfer::Permute needs the refresh's permutation",
                )
            })?),
            StateTransfer::Reproject => None,
        };
        let par = self.par;
        let half = self.workspace.len() / 2;
        let (rot, work) = self.workspace.split_at_mut(half);
        let mut seconds: Vec<&mut [f32]> = vec![&mut self.exp_avg_sq[..]];
        if self.config.amsgrad {
            seconds.push(&mut self.max_exp_avg_sq[..]);
        }
        match (&self.basis, &basis) {
            (Basis::Dense(old), Basis::Dense(new)) if old.dim() == new.dim() => {
                if let Some((p, _)) = perms {
                    check_permutation(p, old.dim())?;
                }
                transfer_dense(
                    par,
                    old,
                    new,
                    perms.map(|(p, _)| p),
                    &mut self.exp_avg,
                    &mut seconds,
                    &mut self.workspace,
                )?;
            }
            (Basis::Kronecker(old), Basis::Kronecker(new))
                if old.rows() == new.rows() && old.cols() == new.cols() =>
            {
                if let Some((pl, pr)) = perms {
                    check_permutation(pl, old.rows())?;
                    check_permutation(pr, old.cols())?;
                }
                transfer_kronecker(
                    par,
                    old,
                    new,
                    perms,
                    &mut self.exp_avg,
                    &mut seconds,
                    rot,
                    work,
                )?;
            }
            _ => return Err(Error::new(
                ErrorKind::InvalidArgument,
                "set_basis: the new basis must be of the same kind and size (dense or Kronecker)",
            )),
        }
        self.basis = basis;
        Ok(())
    }
}

/// Floats of workspace [`rotated_adam_step_with`] needs: 0 for the identity, `2 * len`
/// otherwise (the rotated gradient, then the GEMM workspace).
pub fn rotated_workspace_len(basis: &Basis) -> usize {
    match basis {
        Basis::Identity(_) => 0,
        b => 2 * b.len(),
    }
}

/// One Adam step in `basis` on caller-owned buffers (the module docs give the math): `exp_avg`,
/// `exp_avg_sq`, `max_exp_avg_sq` are in rotated coordinates (original ones for the identity,
/// where this is exactly [`adam_step_with`]); `workspace` holds at least
/// [`rotated_workspace_len`] floats. Everything is checked (and `grad` scanned with
/// `check_finite`) before anything is written.
pub fn rotated_adam_step_with(
    isa: Isa,
    par: Par,
    cfg: &AdamConfig,
    step: u64,
    basis: &Basis,
    tensor: AdamTensor<'_>,
    workspace: &mut [f32],
) -> Result<()> {
    let AdamTensor {
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        max_exp_avg_sq,
    } = tensor;
    let n = basis.len();
    crate::error::check_lengths(n, &[("param", param.len())])?;
    if let Basis::Identity(_) = basis {
        return adam_step_with(
            isa,
            par,
            cfg,
            step,
            AdamTensor {
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq,
            },
        );
    }
    cfg.validate()?;
    check_step(step)?;
    crate::error::check_lengths(
        n,
        &[
            ("grad", grad.len()),
            ("exp_avg", exp_avg.len()),
            ("exp_avg_sq", exp_avg_sq.len()),
        ],
    )?;
    let vmax: &mut [f32] = match (cfg.amsgrad, max_exp_avg_sq) {
        (true, Some(x)) => {
            crate::error::check_lengths(n, &[("max_exp_avg_sq", x.len())])?;
            x
        }
        (true, None) => {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "amsgrad needs max_exp_avg_sq",
            ))
        }
        (false, _) => &mut [],
    };
    if workspace.len() < 2 * n {
        return Err(Error::length(format!(
            "the workspace has {} floats, the rotated step needs {}",
            workspace.len(),
            2 * n
        )));
    }
    let (rot, rest) = workspace.split_at_mut(n);
    let work = &mut rest[..n];
    let mut k = AdamCoefficients::new(cfg, step);
    if cfg.check_finite && !grad_is_finite(isa, par, grad, k.grad_factor)? {
        return Err(non_finite_error());
    }
    let l2 = k.l2 != 0.0;
    match basis {
        Basis::Identity(_) => unreachable!("handled above"),
        Basis::Dense(b) => {
            if l2 {
                rotate::l2_gradient(isa, grad, param, work, k.grad_factor, k.l2);
                k.grad_factor = 1.0;
                b.rotate_into_with(par, work, rot, false)?;
            } else {
                b.rotate_into_with(par, grad, rot, false)?;
            }
        }
        Basis::Kronecker(b) => {
            if l2 {
                rotate::l2_gradient(isa, grad, param, rot, k.grad_factor, k.l2);
                k.grad_factor = 1.0;
                // work = Q_L^T G', rot = work Q_R: the in-place form of rotate_into.
                kron_in_place(par, b, rot, work)?;
            } else {
                b.rotate_into_with(par, grad, rot, work, false)?;
            }
        }
    }
    rotate::adam_direction(
        isa,
        par,
        &k,
        DirectionBlock {
            grad: rot,
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq: vmax,
        },
    )?;
    if k.decay != 1.0 {
        rotate::scale(isa, param, k.decay);
    }
    match basis {
        Basis::Identity(_) => unreachable!("handled above"),
        Basis::Dense(b) => b.rotate_out_with(par, rot, param, true),
        Basis::Kronecker(b) => b.rotate_out_with(par, rot, param, work, true),
    }
}

/// One GN^p step (DESIGN.md 2.3) in `basis`, on caller-owned buffers: `h` is the diagonal
/// `diag(U^T H U)` in rotated coordinates (for a dense basis, from
/// [`crate::gn_diag_weighted_in_basis`]; for a Kronecker one, e.g. from
/// [`crate::gn_diag_softmax_in_kronecker`]), and `exp_avg` (optional momentum) lives in rotated
/// coordinates too. The step:
///
/// ```text
/// g~ = U^T g;   d~ = -lr * m_hat~ * (h + lambda)^p   (gn_step on a zeroed buffer; or Sophia's clip)
/// theta <- theta * (1 - lr * wd);   theta <- theta + U d~  (accumulated by the last GEMM)
/// ```
///
/// The identity basis is exactly [`crate::gn_step_with`] on the caller's buffers. `workspace`
/// holds [`rotated_workspace_len`] floats. Everything is checked (and, with `check_finite`,
/// `grad` and `h` scanned) before anything is written. Costs over the rotations: one pass to
/// zero the direction, the GN^p pass, and a scaling pass over `theta` when `wd > 0`.
#[allow(clippy::too_many_arguments)]
pub fn rotated_gn_step_with(
    isa: Isa,
    par: Par,
    cfg: &GnConfig,
    step: u64,
    basis: &Basis,
    param: &mut [f32],
    grad: &[f32],
    exp_avg: Option<&mut [f32]>,
    h: &[f32],
    workspace: &mut [f32],
) -> Result<()> {
    let n = basis.len();
    crate::error::check_lengths(n, &[("param", param.len())])?;
    if let Basis::Identity(_) = basis {
        return gn_step_with(isa, par, cfg, step, param, grad, exp_avg, h);
    }
    cfg.validate()?;
    check_step(step)?;
    crate::error::check_lengths(n, &[("grad", grad.len()), ("h", h.len())])?;
    if let Some(m) = &exp_avg {
        crate::error::check_lengths(n, &[("exp_avg", m.len())])?;
    }
    if workspace.len() < 2 * n {
        return Err(Error::length(format!(
            "the workspace has {} floats, the rotated step needs {}",
            workspace.len(),
            2 * n
        )));
    }
    if cfg.check_finite
        && !(grad_is_finite(isa, par, grad, 1.0)? && grad_is_finite(isa, par, h, 1.0)?)
    {
        return Err(Error::new(
            ErrorKind::NonFinite,
            "grad or h holds NaN or Inf: step skipped, nothing written",
        ));
    }
    let (rot, rest) = workspace.split_at_mut(n);
    let dir = &mut rest[..n];
    match basis {
        Basis::Identity(_) => unreachable!("handled above"),
        Basis::Dense(b) => b.rotate_into_with(par, grad, rot, false)?,
        Basis::Kronecker(b) => b.rotate_into_with(par, grad, rot, dir, false)?,
    }
    dir.fill(0.0);
    let inner = GnConfig {
        weight_decay: 0.0,
        check_finite: false,
        ..*cfg
    };
    gn_step_with(isa, par, &inner, step, dir, rot, exp_avg, h)?;
    if cfg.weight_decay != 0.0 {
        rotate::scale(isa, param, (1.0 - cfg.lr * cfg.weight_decay) as f32);
    }
    match basis {
        Basis::Identity(_) => unreachable!("handled above"),
        Basis::Dense(b) => b.rotate_out_with(par, dir, param, true),
        // rot (g~) is no longer needed: it is the GEMM workspace now.
        Basis::Kronecker(b) => b.rotate_out_with(par, dir, param, rot, true),
    }
}

fn check_permutation(p: &[usize], n: usize) -> Result<()> {
    let mut seen = vec![false; n];
    if p.len() != n {
        return Err(Error::length(format!(
            "the permutation has {} entries, expected {n}",
            p.len()
        )));
    }
    for &i in p {
        if i >= n || seen[i] {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "not a permutation of 0..n",
            ));
        }
        seen[i] = true;
    }
    Ok(())
}

/// `g <- Q_L^T g Q_R` in place (through `work`).
fn kron_in_place(par: Par, b: &KroneckerBasis, g: &mut [f32], work: &mut [f32]) -> Result<()> {
    use faer::linalg::matmul::matmul;
    use faer::{Accum, MatMut, MatRef};
    let (m, n) = (b.rows(), b.cols());
    let (ql, qr) = (b.left().matrix(), b.right().matrix());
    rotate::with_faer_par(par, 2.0 * (m * n) as f64 * (m + n) as f64, |fp| {
        matmul(
            MatMut::from_row_major_slice_mut(&mut work[..], m, n),
            Accum::Replace,
            ql.transpose(),
            MatRef::from_row_major_slice(&g[..], m, n),
            1.0,
            fp,
        );
        matmul(
            MatMut::from_row_major_slice_mut(&mut g[..], m, n),
            Accum::Replace,
            MatRef::from_row_major_slice(&work[..], m, n),
            qr,
            1.0,
            fp,
        );
    })
}

/// SOAP-like configuration: Adam in a Kronecker eigenbasis of the factor statistics, refreshed
/// every `precondition_frequency` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoapConfig {
    /// The Adam part (SOAP's defaults: betas (0.95, 0.95), eps 1e-8).
    pub adam: AdamConfig,
    /// EMA decay of the factors `L`, `R`, in [0, 1) (SOAP: 0.95).
    pub shampoo_beta: f64,
    /// Refresh the basis every this many steps, >= 1 (SOAP: 10).
    pub precondition_frequency: u64,
    /// How the basis is refreshed (SOAP: one power-iteration step + QR).
    pub refresh: RefreshMethod,
    /// How `v~` follows a refresh (SOAP: permute).
    pub transfer: StateTransfer,
}

impl Default for SoapConfig {
    fn default() -> Self {
        Self {
            adam: AdamConfig {
                lr: 3e-3,
                beta1: 0.95,
                beta2: 0.95,
                ..AdamConfig::default()
            },
            shampoo_beta: 0.95,
            precondition_frequency: 10,
            refresh: RefreshMethod::PowerQr,
            transfer: StateTransfer::Permute,
        }
    }
}

impl SoapConfig {
    /// Checks every hyperparameter.
    pub fn validate(&self) -> Result<()> {
        self.adam.validate()?;
        error::check_half_open("shampoo_beta", self.shampoo_beta, 0.0, 1.0)?;
        if self.precondition_frequency == 0 {
            return Err(Error::hyperparameter(
                "precondition_frequency = 0: must be >= 1",
            ));
        }
        Ok(())
    }
}

/// A SOAP-like optimizer for one `m x n` row-major matrix parameter. Each step:
/// 1. `L, R <- EMA of G G^T, G^T G` (shampoo_beta);
/// 2. on the first step the basis is the eigenbasis of `(L, R)`; afterwards, every
///    `precondition_frequency` steps (when `t % k == 0`), it is refreshed by `config.refresh`
///    and the rotated state carried by `config.transfer`;
/// 3. one rotated Adam step in the current basis.
///
/// Differences from the SOAP paper's code, on purpose: the first step updates the parameter
/// (SOAP only initialises its basis), and the statistics are updated before the rotation.
#[derive(Clone, Debug)]
pub struct Soap {
    config: SoapConfig,
    stats: KroneckerStatistics,
    inner: RotatedAdam,
    initialized: bool,
}

impl Soap {
    /// A zeroed optimizer for an `m x n` parameter.
    pub fn new(config: SoapConfig, rows: usize, cols: usize) -> Result<Self> {
        config.validate()?;
        rows.checked_mul(cols)
            .ok_or_else(|| Error::length("rows * cols overflows"))?;
        Ok(Self {
            config,
            stats: KroneckerStatistics::new(rows, cols),
            inner: RotatedAdam::new(
                config.adam,
                Basis::Kronecker(KroneckerBasis::identity(rows, cols)),
            )?,
            initialized: false,
        })
    }

    /// Runs on `isa` with parallelism `par`.
    pub fn with_isa_par(mut self, isa: Isa, par: Par) -> Self {
        self.inner = self.inner.with_isa_par(isa, par);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SoapConfig {
        &self.config
    }

    /// The factor statistics.
    pub fn statistics(&self) -> &KroneckerStatistics {
        &self.stats
    }

    /// The rotated Adam inside (its basis, moments and step count).
    pub fn adam(&self) -> &RotatedAdam {
        &self.inner
    }

    /// One step (see the type docs). Inputs are checked (and, with `check_finite`, the gradient
    /// scanned) before anything changes.
    pub fn step(&mut self, param: &mut [f32], grad: &[f32]) -> Result<()> {
        let n = self.inner.len();
        crate::error::check_lengths(n, &[("param", param.len()), ("grad", grad.len())])?;
        let cfg = &self.config;
        let t = self.inner.steps_taken() + 1;
        let par = self.inner.par;
        if cfg.adam.check_finite {
            let k = AdamCoefficients::new(&cfg.adam, t);
            if !grad_is_finite(self.inner.isa, par, grad, k.grad_factor)? {
                return Err(non_finite_error());
            }
        }
        self.stats.update(grad, cfg.shampoo_beta, par)?;
        if !self.initialized {
            let (basis, _, _) =
                KroneckerBasis::from_factors(self.stats.left(), self.stats.right())?;
            // The state is still zero: nothing to carry.
            self.inner.basis = Basis::Kronecker(basis);
            self.initialized = true;
        } else if t.is_multiple_of(cfg.precondition_frequency) {
            let Basis::Kronecker(current) = &self.inner.basis else {
                unreachable!("Soap always holds a Kronecker basis")
            };
            let refreshed =
                current.refreshed(self.stats.left(), self.stats.right(), cfg.refresh, par)?;
            let (pl, pr) = (refreshed.left.permutation, refreshed.right.permutation);
            self.inner.set_basis(
                Basis::Kronecker(refreshed.basis),
                cfg.transfer,
                Some((&pl, &pr)),
            )?;
        }
        self.inner.step(param, grad)
    }
}
