//! Adam/AdamW exports: the configuration struct, the f32 step over one tensor and over a tensor
//! list, and the rotated step in a `dp_basis` (its moments in the basis's coordinates).
//!
//! Every export here checks, in this order, before anything is written: `cfg` (NULL,
//! `struct_size`, its 0/1 flags), the buffers (NULL with a nonzero count, sizes that overflow
//! or wrap the address space, misalignment), the hyperparameters (ranges and their f32
//! representability, `step >= 1`), overlapping buffers, and only then the gradient scan of
//! `check_finite`.

use super::basis::{dp_basis, with_basis};
use super::check::{self, buffer, check_buffers, exact_len, min_len, Region};
use super::{dp_status, guard};
use crate::dispatch::{Isa, Par};
use crate::error::{Error, ErrorKind, Result};
use crate::kernels::adam::rotated::{rotated_adam_step_with, rotated_workspace_len};
use crate::kernels::adam::{adam_step, adam_step_multi, AdamConfig, AdamTensor};

/// Adam/AdamW hyperparameters. Fill it with `dp_adam_config_default()` and change the fields
/// you need: `struct_size` lets later 1.x versions grow the struct without breaking callers.
/// The library reads it unaligned (any address works). 72 bytes on LP64.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_config {
    /// `sizeof(dp_adam_config)`, set by `dp_adam_config_default()`; any other value is
    /// DP_ERR_INVALID_ARGUMENT.
    pub struct_size: usize,
    /// Learning rate, finite, >= 0 (and `lr / (1 - beta1)` finite as an f32).
    pub lr: f64,
    /// In [0, 1).
    pub beta1: f64,
    /// In [0, 1).
    pub beta2: f64,
    /// Finite, > 0, and nonzero as an f32 (it divides).
    pub eps: f64,
    /// Finite, >= 0, finite as an f32 (with AdamW, `1 - lr * weight_decay` too).
    pub weight_decay: f64,
    /// The gradient is multiplied by this first (AMP loss-scale inverse); finite and > 0 in
    /// f32; 1 = none.
    pub inv_grad_scale: f64,
    /// 1: AdamW (decoupled decay); 0: Adam (L2 decay added to the gradient).
    pub decoupled_weight_decay: u32,
    /// 1: keep the running max of exp_avg_sq (needs max_exp_avg_sq); 0: plain Adam.
    pub amsgrad: u32,
    /// 1: ascend instead of descend.
    pub maximize: u32,
    /// 1: scan the gradient first; if it holds NaN/Inf return DP_ERR_NON_FINITE and write
    /// nothing.
    pub check_finite: u32,
}

impl dp_adam_config {
    /// The Rust configuration, or DP_ERR_INVALID_ARGUMENT for a flag other than 0 or 1 (the
    /// `struct_size` was checked by [`check::config`]). Ranges are checked later, by
    /// [`validate`].
    pub(crate) fn to_rust(self) -> Result<AdamConfig> {
        Ok(AdamConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decoupled_weight_decay: check::flag(
                "cfg->decoupled_weight_decay",
                self.decoupled_weight_decay,
            )?,
            amsgrad: check::flag("cfg->amsgrad", self.amsgrad)?,
            maximize: check::flag("cfg->maximize", self.maximize)?,
            check_finite: check::flag("cfg->check_finite", self.check_finite)?,
            inv_grad_scale: self.inv_grad_scale,
        })
    }
}

impl check::Versioned for dp_adam_config {
    const NAME: &'static str = "dp_adam_config";
    const DEFAULT_FN: &'static str = "dp_adam_config_default";
    fn struct_size(&self) -> usize {
        self.struct_size
    }
}

/// Reads `*cfg` (NULL: DP_ERR_NULL_POINTER; any alignment; a wrong `struct_size`:
/// DP_ERR_INVALID_ARGUMENT) and converts it with [`dp_adam_config::to_rust`].
///
/// # Safety
/// `cfg` is NULL or valid for reading a `dp_adam_config` (the C contract).
pub(crate) unsafe fn adam_config(cfg: *const dp_adam_config) -> Result<AdamConfig> {
    // SAFETY: NULL or readable for one struct (the caller's contract); every bit pattern is a
    // valid dp_adam_config (integers and floats only).
    let c = unsafe { check::config("cfg", cfg)? };
    c.to_rust()
}

/// One tensor for `dp_adam_step_multi_f32` and the other f32 tensor-list calls: `len` floats
/// each. `max_exp_avg_sq` may be NULL unless amsgrad.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dp_adam_tensor_f32 {
    /// The parameters (`theta`), updated in place.
    pub param: *mut f32,
    /// The gradient (read only).
    pub grad: *const f32,
    /// The first moment `m`, updated in place.
    pub exp_avg: *mut f32,
    /// The second moment `v`, updated in place.
    pub exp_avg_sq: *mut f32,
    /// The running maximum of `v` (amsgrad); may be NULL otherwise.
    pub max_exp_avg_sq: *mut f32,
    /// Elements in each buffer of this tensor.
    pub len: usize,
}

/// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay, no amsgrad,
/// no maximize, no finite check, inv_grad_scale 1; `struct_size = sizeof(dp_adam_config)`.
/// Never fails; any thread may call it at any time.
#[no_mangle]
pub extern "C" fn dp_adam_config_default() -> dp_adam_config {
    let d = AdamConfig::default();
    dp_adam_config {
        struct_size: core::mem::size_of::<dp_adam_config>(),
        lr: d.lr,
        beta1: d.beta1,
        beta2: d.beta2,
        eps: d.eps,
        weight_decay: d.weight_decay,
        inv_grad_scale: d.inv_grad_scale,
        decoupled_weight_decay: d.decoupled_weight_decay.into(),
        amsgrad: d.amsgrad.into(),
        maximize: d.maximize.into(),
        check_finite: d.check_finite.into(),
    }
}

/// Checks one tensor's pointers (null, size, address wrap, alignment) and appends its regions
/// for the overlap check. `index` names the tensor in messages (None for the single-tensor
/// call).
pub(crate) fn check_tensor(
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
pub(crate) unsafe fn tensor_view<'a>(t: &dp_adam_tensor_f32, amsgrad: bool) -> AdamTensor<'a> {
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

/// The hyperparameter checks of every Adam export: the configuration's ranges and f32
/// representability, and `step >= 1`.
pub(crate) fn validate(cfg: &AdamConfig, step: u64) -> Result<()> {
    cfg.validate()?;
    crate::error::check_step(step)?;
    Ok(())
}

/// `n` views collected with fallible allocation (DP_ERR_ALLOCATION instead of an abort).
pub(crate) fn collect_views<T, V>(list: &[T], view: impl FnMut(&T) -> V) -> Result<Vec<V>> {
    let mut views = Vec::new();
    views.try_reserve_exact(list.len()).map_err(|_| {
        Error::new(
            ErrorKind::Allocation,
            format!("no memory for {} tensor views", list.len()),
        )
    })?;
    views.extend(list.iter().map(view));
    Ok(views)
}

/// One Adam/AdamW step over one tensor of `len` floats, matching torch.optim.Adam / AdamW
/// (`foreach=False`). `step` is the 1-based step count.
///
/// Parameters: `cfg` (read unaligned); `param`, `exp_avg`, `exp_avg_sq` (read and written),
/// `grad` (read) and `max_exp_avg_sq` (read and written; only with `cfg->amsgrad`, may be
/// NULL otherwise): `len` floats each. NULL with `len == 0` is an empty buffer.
///
/// Returns:
/// - DP_OK: the step was taken;
/// - DP_ERR_NULL_POINTER: `cfg` is NULL, or a buffer the step uses is NULL with `len > 0`;
/// - DP_ERR_LENGTH: `len` floats overflow `isize::MAX` bytes, or a buffer's address range
///   wraps around the address space;
/// - DP_ERR_INVALID_ARGUMENT: `cfg->struct_size` is not `sizeof(dp_adam_config)`, a flag is
///   not 0 or 1, or a buffer is not aligned to 4 bytes;
/// - DP_ERR_INVALID_HYPERPARAMETER: a hyperparameter is out of range or not representable as
///   the finite (nonzero where it divides) f32 the kernel uses, or `step == 0`;
/// - DP_ERR_ALIASING: two buffers overlap (a written one with any other);
/// - DP_ERR_NON_FINITE: `cfg->check_finite` and `grad * inv_grad_scale` holds NaN or Inf;
/// - DP_ERR_ALLOCATION: the thread pool could not be started;
/// - DP_ERR_PANIC: a bug in diagprec (please report it).
///
/// On any status but DP_OK no byte of any buffer changes.
///
/// Concurrency: any number of threads may call this at once on disjoint buffers (`grad` and
/// `cfg` may be shared: they are only read).
///
/// # Safety
/// Each pointer the step uses must be valid for `len` floats (reads for `grad`, reads and
/// writes for the others) for the duration of the call; `cfg` must be valid for reading a
/// `dp_adam_config`.
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
        // SAFETY: cfg is NULL or readable (C contract).
        let config = unsafe { adam_config(cfg)? };
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

/// One Adam/AdamW step over `count` tensors with one configuration (PyTorch's fused
/// tensor-list step): the result is that of `dp_adam_step_f32` on each tensor, bitwise, for any
/// thread count. Work is balanced across threads by elements.
///
/// Parameters: `cfg` (read unaligned); `tensors`: `count` entries (NULL with `count == 0` is an
/// empty list; the array must be aligned for `dp_adam_tensor_f32`), each with buffers of its
/// `len` floats as for `dp_adam_step_f32`. No buffer may overlap another, within or across
/// tensors, except that gradients may share memory.
///
/// Returns:
/// - DP_OK: every tensor was stepped;
/// - DP_ERR_NULL_POINTER: `cfg` is NULL, `tensors` is NULL with `count > 0`, or a buffer a
///   tensor uses is NULL with its `len > 0` (the message names `tensors[i].field`);
/// - DP_ERR_LENGTH: `count` entries or a tensor's `len` floats overflow `isize::MAX` bytes, or
///   an address range wraps around the address space;
/// - DP_ERR_INVALID_ARGUMENT: `cfg->struct_size` is not `sizeof(dp_adam_config)`, a flag is
///   not 0 or 1, or `tensors` or a buffer is misaligned;
/// - DP_ERR_INVALID_HYPERPARAMETER: as `dp_adam_step_f32`;
/// - DP_ERR_ALIASING: two buffers overlap (gradients may share memory);
/// - DP_ERR_NON_FINITE: `cfg->check_finite` and any tensor's scaled gradient holds NaN or Inf
///   (all gradients are scanned before any tensor is written);
/// - DP_ERR_ALLOCATION: no memory to check `count` tensors, or the pool could not start;
/// - DP_ERR_PANIC: a bug in diagprec.
///
/// On any status but DP_OK no byte of any tensor changes (the list is all or nothing).
///
/// Concurrency: any number of threads may call this at once on disjoint buffers.
///
/// # Safety
/// `tensors` must be valid for `count` entries (or NULL with `count == 0`), each tensor's
/// pointers valid as for `dp_adam_step_f32`; `cfg` must be valid for reading a
/// `dp_adam_config`.
#[no_mangle]
pub unsafe extern "C" fn dp_adam_step_multi_f32(
    cfg: *const dp_adam_config,
    step: u64,
    tensors: *const dp_adam_tensor_f32,
    count: usize,
) -> dp_status {
    guard(|| {
        // SAFETY: cfg is NULL or readable (C contract).
        let config = unsafe { adam_config(cfg)? };
        // SAFETY: `tensors` is valid for `count` entries (C contract).
        let (list, mut regions) = unsafe { check::tensor_list(tensors, count, 5, 0)? };
        for (i, t) in list.iter().enumerate() {
            check_tensor(Some(i), t, config.amsgrad, &mut regions)?;
        }
        validate(&config, step)?;
        check::disjoint(regions)?;
        // SAFETY: every tensor passed check_tensor, and all regions are disjoint.
        let mut views = collect_views(list, |t| unsafe { tensor_view(t, config.amsgrad) })?;
        adam_step_multi(&config, step, &mut views)
    })
}

// ---------------------------------------------------------------------------------------------
// The rotated Adam step (the basis is a `dp_basis` handle, see `ffi/basis.rs`).

/// One Adam/AdamW step in `basis` (rotated Adam): `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`
/// live in rotated coordinates (original ones for the identity, where this is
/// `dp_adam_step_f32` bit for bit). No allocation. On failure nothing is written.
///
/// Parameters: `cfg`, a `dp_adam_config` (read unaligned); `step`, 1-based; `basis`, a live
/// handle; `param`, `grad`, `exp_avg`, `exp_avg_sq`, each `len` floats, and `max_exp_avg_sq`
/// (`len` floats with amsgrad, else ignored), `len` the basis length; `workspace`,
/// `workspace_len >= dp_basis_info.step_workspace_len` floats (NULL with 0 for the identity).
///
/// Returns `DP_OK`; `DP_ERR_NULL_POINTER`; `DP_ERR_INVALID_ARGUMENT` (`basis` not a live
/// handle, a config field, a misaligned buffer); `DP_ERR_LENGTH` (`len` not the basis length,
/// `workspace_len` too small, a range that wraps); `DP_ERR_INVALID_HYPERPARAMETER` (the config,
/// `step == 0`); `DP_ERR_ALIASING` (a written buffer overlapping another); `DP_ERR_NON_FINITE`
/// (`check_finite` and a NaN/Inf gradient: nothing written); `DP_ERR_PANIC`.
///
/// Thread safety: may run concurrently with any call that does not use these buffers, other
/// steps and rotations on `basis` included; it waits for a refresh of `basis`.
///
/// # Safety
/// `cfg` must point to a `dp_adam_config`; the buffers valid for `len` floats (`workspace`
/// for `workspace_len`).
#[no_mangle]
pub unsafe extern "C" fn dp_adam_rotated_step_f32(
    cfg: *const dp_adam_config,
    step: u64,
    basis: *const dp_basis,
    param: *mut f32,
    grad: *const f32,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    max_exp_avg_sq: *mut f32,
    len: usize,
    workspace: *mut f32,
    workspace_len: usize,
) -> dp_status {
    guard(|| {
        // SAFETY: cfg is NULL or readable (C contract).
        let config = unsafe { adam_config(cfg)? };
        check::required("basis", basis)?;
        let mut buffers = vec![
            buffer("param", param, len, true),
            buffer("grad", grad, len, false),
            buffer("exp_avg", exp_avg, len, true),
            buffer("exp_avg_sq", exp_avg_sq, len, true),
        ];
        if config.amsgrad {
            buffers.push(buffer("max_exp_avg_sq", max_exp_avg_sq, len, true));
        }
        buffers.push(buffer("workspace", workspace, workspace_len, true));
        let regions = check_buffers(&buffers)?;
        with_basis("basis", basis, |b| {
            exact_len("len", len, b.len())?;
            let need = rotated_workspace_len(b);
            min_len("workspace", workspace_len, need)?;
            config.validate()?;
            if step == 0 {
                return Err(Error::hyperparameter("step = 0: steps are counted from 1"));
            }
            check::disjoint(regions)?;
            // SAFETY: non-null (or empty), aligned, sized and disjoint: checked above.
            let tensor = unsafe {
                AdamTensor {
                    param: check::slice_mut(param, len),
                    grad: check::slice(grad, len),
                    exp_avg: check::slice_mut(exp_avg, len),
                    exp_avg_sq: check::slice_mut(exp_avg_sq, len),
                    max_exp_avg_sq: config
                        .amsgrad
                        .then(|| check::slice_mut(max_exp_avg_sq, len)),
                }
            };
            // SAFETY: as above.
            let ws = unsafe { check::slice_mut(workspace, need) };
            rotated_adam_step_with(Isa::detect(), Par::Pool, &config, step, b, tensor, ws)
        })
    })
}
