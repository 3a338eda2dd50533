//! Optimizers in a basis: Adam with its moments in rotated coordinates ([`RotatedAdam`]), and a
//! SOAP-like optimizer for a matrix parameter ([`Soap`]: a Kronecker basis refreshed from its
//! factor statistics every k steps).
//!
//! **Rotated Adam** in basis `U`, one step:
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
//! GEMMs) plus one element-wise pass over `g~, m~, v~` (and `theta`, scaled there by AdamW's
//! decay), plus one pass over `g, theta` for Adam's L2 term when it is non-zero. With the
//! crate's pool the whole step runs inside one entry into it. The identity basis calls the
//! plain Adam kernel on the caller's buffers: nothing extra.
//!
//! The non-finite check scans `g` before anything is written.

use crate::basis::refresh::{carry_state, refresh_with_state, RotatedState, Statistic};
use crate::basis::{
    Basis, KroneckerBasis, KroneckerStatistics, RefreshInfo, RefreshMethod, StateTransfer,
};
use crate::dispatch::{Isa, Par};
use crate::error::{self, non_finite_error, Error, ErrorKind, Result};
use crate::kernels::adam::rotated::{rotated_adam_step_with, rotated_workspace_len};
use crate::kernels::adam::{grad_is_finite, AdamCoefficients, AdamConfig, AdamTensor};

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
    /// [`crate::basis::refresh::carry_state`]). Switching from or to the identity is not
    /// supported (their moments live in different coordinates): build a new optimizer instead.
    /// On error nothing changes.
    pub fn set_basis(
        &mut self,
        basis: Basis,
        transfer: StateTransfer,
        permutation: Option<(&[usize], &[usize])>,
    ) -> Result<()> {
        let par = self.par;
        let (old, state) = self.basis_and_state();
        carry_state(par, old, &basis, transfer, permutation, state)?;
        self.basis = basis;
        Ok(())
    }

    /// Refreshes the basis from `statistic` by `method` and carries the rotated state by
    /// `transfer` (see [`crate::basis::refresh::refresh_with_state`]); returns what the refresh
    /// of each side found (`right` only for a Kronecker basis). On error nothing changes.
    pub fn refresh(
        &mut self,
        statistic: Statistic<'_>,
        method: RefreshMethod,
        transfer: StateTransfer,
    ) -> Result<(RefreshInfo, Option<RefreshInfo>)> {
        let par = self.par;
        let (basis, state) = self.basis_and_state();
        let refreshed = refresh_with_state(par, basis, statistic, method, transfer, state)?;
        self.basis = refreshed.basis;
        Ok((refreshed.left, refreshed.right))
    }

    /// The basis, and the moments as a [`RotatedState`].
    fn basis_and_state(&mut self) -> (&Basis, RotatedState<'_>) {
        let mut second_moments: Vec<&mut [f32]> = vec![&mut self.exp_avg_sq[..]];
        if self.config.amsgrad {
            second_moments.push(&mut self.max_exp_avg_sq[..]);
        }
        let state = RotatedState {
            exp_avg: Some(&mut self.exp_avg[..]),
            second_moments,
        };
        (&self.basis, state)
    }
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
            let statistic = Statistic::Kronecker(self.stats.left(), self.stats.right());
            self.inner.refresh(statistic, cfg.refresh, cfg.transfer)?;
        }
        self.inner.step(param, grad)
    }
}
