//! # GN^p in a basis: the preconditioned step with `h` and momentum in rotated coordinates
//!
//! **Reference**: [`crate::reference::gn_step`] on the rotated gradient, rotated back with
//! [`crate::reference::rotate_dense`] or [`crate::reference::rotate_kronecker`] (`tests/gn.rs`).

use crate::basis::Basis;
use crate::dispatch::{Isa, Par};
use crate::error::check_step;
use crate::error::{Error, ErrorKind, Result};
use crate::kernels::adam::grad_is_finite;
use crate::kernels::gn::step::{gn_step_with, GnConfig};
use crate::kernels::map::scale;

/// One GN^p step in `basis`, on caller-owned buffers: `h` is the diagonal
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
/// holds [`crate::rotated_workspace_len`] floats. Everything is checked (and, with `check_finite`,
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
        scale(isa, param, (1.0 - cfg.lr * cfg.weight_decay) as f32);
    }
    match basis {
        Basis::Identity(_) => unreachable!("handled above"),
        Basis::Dense(b) => b.rotate_out_with(par, dir, param, true),
        // rot (g~) is no longer needed: it is the GEMM workspace now.
        Basis::Kronecker(b) => b.rotate_out_with(par, dir, param, rot, true),
    }
}
