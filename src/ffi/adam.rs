//! Adam/AdamW exports.

use super::check::{self, buffer, Region};
use super::{dp_status, guard};
use crate::error::{Error, Result};
use crate::kernels::adam::{adam_step, adam_step_multi, AdamConfig, AdamTensor};

/// Adam/AdamW hyperparameters (see `dp_adam_config_default`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_config {
    /// Learning rate, finite, >= 0.
    pub lr: f64,
    /// In [0, 1).
    pub beta1: f64,
    /// In [0, 1).
    pub beta2: f64,
    /// Finite, > 0.
    pub eps: f64,
    /// Finite, >= 0.
    pub weight_decay: f64,
    /// true: AdamW (decoupled decay); false: Adam (L2 decay added to the gradient).
    pub decoupled_weight_decay: bool,
    /// Keep the running max of exp_avg_sq (needs max_exp_avg_sq).
    pub amsgrad: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// Scan the gradient first; if it holds NaN/Inf return DP_ERR_NON_FINITE and write nothing.
    pub check_finite: bool,
    /// The gradient is multiplied by this first (AMP loss-scale inverse); finite, > 0; 1 = none.
    pub inv_grad_scale: f64,
}

impl From<&dp_adam_config> for AdamConfig {
    fn from(c: &dp_adam_config) -> Self {
        AdamConfig {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            decoupled_weight_decay: c.decoupled_weight_decay,
            amsgrad: c.amsgrad,
            maximize: c.maximize,
            check_finite: c.check_finite,
            inv_grad_scale: c.inv_grad_scale,
        }
    }
}

/// One tensor for `dp_adam_step_multi_f32`. `max_exp_avg_sq` may be NULL unless amsgrad.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_tensor_f32 {
    pub param: *mut f32,
    pub grad: *const f32,
    pub exp_avg: *mut f32,
    pub exp_avg_sq: *mut f32,
    pub max_exp_avg_sq: *mut f32,
    pub len: usize,
}

/// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay, no amsgrad,
/// no maximize, no finite check, inv_grad_scale 1.
#[no_mangle]
pub extern "C" fn dp_adam_config_default() -> dp_adam_config {
    let d = AdamConfig::default();
    dp_adam_config {
        lr: d.lr,
        beta1: d.beta1,
        beta2: d.beta2,
        eps: d.eps,
        weight_decay: d.weight_decay,
        decoupled_weight_decay: d.decoupled_weight_decay,
        amsgrad: d.amsgrad,
        maximize: d.maximize,
        check_finite: d.check_finite,
        inv_grad_scale: d.inv_grad_scale,
    }
}

/// Checks one tensor's pointers (null, size, alignment) and appends its regions for the overlap
/// check. `index` names the tensor in messages (None for the single-tensor call).
pub(super) fn check_tensor(
    index: Option<usize>,
    t: &dp_adam_tensor_f32,
    amsgrad: bool,
    regions: &mut Vec<Region>,
) -> Result<()> {
    let n = t.len;
    let buffers = [
        buffer("param", t.param, n, true),
        buffer("grad", t.grad, n, false),
        buffer("exp_avg", t.exp_avg, n, true),
        buffer("exp_avg_sq", t.exp_avg_sq, n, true),
        buffer("max_exp_avg_sq", t.max_exp_avg_sq, n, true),
    ];
    let used = if amsgrad { 5 } else { 4 };
    check::check_tensor_buffers(index, &buffers[..used], regions)
}

/// Forms the Rust view of a checked tensor.
///
/// # Safety
/// `t` passed [`check_tensor`] and the overlap check, and its buffers are valid for `t.len`
/// elements for `'a`.
pub(super) unsafe fn tensor_view<'a>(t: &dp_adam_tensor_f32, amsgrad: bool) -> AdamTensor<'a> {
    // SAFETY: non-null (or empty), aligned, sized and pairwise disjoint: checked by the caller
    // through check_tensor and check::disjoint; validity for len elements is the C contract.
    unsafe {
        AdamTensor {
            param: check::slice_mut(t.param, t.len),
            grad: check::slice(t.grad, t.len),
            exp_avg: check::slice_mut(t.exp_avg, t.len),
            exp_avg_sq: check::slice_mut(t.exp_avg_sq, t.len),
            max_exp_avg_sq: amsgrad.then(|| check::slice_mut(t.max_exp_avg_sq, t.len)),
        }
    }
}

pub(super) fn validate(cfg: &AdamConfig, step: u64) -> Result<()> {
    cfg.validate()?;
    if step == 0 {
        return Err(Error::hyperparameter("step = 0: steps are counted from 1"));
    }
    Ok(())
}

/// One Adam/AdamW step over one tensor of `len` floats (the math: DESIGN.md 2.1, matching
/// torch.optim.Adam/AdamW). `step` is the 1-based step count. `max_exp_avg_sq` may be NULL unless
/// `cfg->amsgrad`. Buffers must not overlap. On any failure nothing is written.
///
/// # Safety
/// Each non-NULL pointer must be valid for `len` floats (reads for `grad`, reads and writes for
/// the others) for the duration of the call; `cfg` must point to a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_f32(
    cfg: *const dp_adam_config,
    step: u64,
    param: *mut f32,
    grad: *const f32,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    max_exp_avg_sq: *mut f32,
    len: usize,
) -> dp_status {
    guard(|| {
        check::required("cfg", cfg)?;
        // SAFETY: cfg is non-null (checked above) and points to a dp_adam_config (C contract).
        let config = AdamConfig::from(unsafe { &*cfg });
        let tensor = dp_adam_tensor_f32 {
            param,
            grad,
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
            len,
        };
        let mut regions = Vec::with_capacity(5);
        check_tensor(None, &tensor, config.amsgrad, &mut regions)?;
        validate(&config, step)?;
        check::disjoint(regions)?;
        // SAFETY: checked by check_tensor and check::disjoint just above.
        let t = unsafe { tensor_view(&tensor, config.amsgrad) };
        adam_step(
            &config,
            step,
            t.param,
            t.grad,
            t.exp_avg,
            t.exp_avg_sq,
            t.max_exp_avg_sq,
        )
    })
}

/// One Adam/AdamW step over `count` tensors with one configuration (PyTorch's fused tensor-list
/// step). Work is balanced across threads by elements. No buffer may overlap another, within or
/// across tensors, except that gradients may share memory. All tensors are checked (and scanned,
/// with check_finite) before any is written; on failure nothing is written.
///
/// # Safety
/// `tensors` must be valid for `count` elements (or NULL with `count == 0`), and each tensor's
/// pointers valid as for `dp_adam_step_f32`; `cfg` must point to a `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_multi_f32(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_tensor_f32,
    count: usize,
) -> dp_status {
    guard(|| {
        check::required("cfg", cfg)?;
        // SAFETY: `tensors` is valid for `count` entries (C contract).
        let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 5)? };
        // SAFETY: cfg is non-null (checked above) and points to a dp_adam_config (C contract).
        let config = AdamConfig::from(unsafe { &*cfg });
        for (i, t) in list.iter().enumerate() {
            check_tensor(Some(i), t, config.amsgrad, &mut regions)?;
        }
        validate(&config, step)?;
        check::disjoint(regions)?;
        let mut views: Vec<AdamTensor<'_>> = list
            .iter()
            // SAFETY: every tensor passed check_tensor, and all regions are disjoint.
            .map(|t| unsafe { tensor_view(t, config.amsgrad) })
            .collect();
        adam_step_multi(&config, step, &mut views)
    })
}
