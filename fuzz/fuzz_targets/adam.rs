//! The f32 Adam family through the C ABI: `dp_adam_step_f32`, `dp_adam_step_multi_f32`,
//! `dp_adam_step_clipped_multi_f32` and `dp_grad_norm_multi_f32`, with buffers placed at random
//! in one arena. On success of the single-tensor step the result is compared with
//! `diagprec::reference::adam_step`.
#![no_main]

use diagprec::ffi::adam::{
    dp_adam_config, dp_adam_config_default, dp_adam_step_f32, dp_adam_step_multi_f32,
    dp_adam_tensor_f32,
};
use diagprec::ffi::adam_mixed::{dp_adam_step_clipped_multi_f32, dp_grad_norm_multi_f32};
use diagprec::ffi::dp_status;
use diagprec_fuzz::{before, close, Arena, Call, Input, Unaligned};
use libfuzzer_sys::fuzz_target;

fn config(input: &mut Input<'_>) -> dp_adam_config {
    let mut c = dp_adam_config_default();
    c.lr = input.hyper(c.lr);
    c.beta1 = input.hyper(c.beta1);
    c.beta2 = input.hyper(c.beta2);
    c.eps = input.hyper(c.eps);
    c.weight_decay = input.hyper(0.01);
    c.inv_grad_scale = input.hyper(1.0);
    c.decoupled_weight_decay = input.mode(2);
    c.amsgrad = input.mode(2);
    c.maximize = input.mode(2);
    c.check_finite = input.mode(2);
    c
}

fn tensor(input: &mut Input<'_>, arena: &mut Arena) -> dp_adam_tensor_f32 {
    let len = {
        let typical = 1 + input.below(300);
        input.count(typical)
    };
    dp_adam_tensor_f32 {
        param: arena.buffer(input, len),
        grad: arena.buffer(input, len),
        exp_avg: arena.buffer(input, len),
        exp_avg_sq: arena.buffer(input, len),
        max_exp_avg_sq: arena.buffer(input, len),
        len,
    }
}

fn rust_config(c: &dp_adam_config) -> diagprec::AdamConfig {
    diagprec::AdamConfig {
        lr: c.lr,
        beta1: c.beta1,
        beta2: c.beta2,
        eps: c.eps,
        weight_decay: c.weight_decay,
        decoupled_weight_decay: c.decoupled_weight_decay == 1,
        amsgrad: c.amsgrad == 1,
        maximize: c.maximize == 1,
        check_finite: c.check_finite == 1,
        inv_grad_scale: c.inv_grad_scale,
    }
}

/// Compares a successful single-tensor step with the f64 reference, within 64 f32 ulps of the
/// magnitude of the terms that form each value (the documented bound of the f32 kernels).
fn compare(c: &dp_adam_config, step: u64, t: &dp_adam_tensor_f32, snapshot: &[u8], base: *mut u8) {
    let cfg = rust_config(c);
    let n = t.len;
    if n == 0 {
        return;
    }
    let p0 = before(snapshot, base, t.param, n);
    let g = before(snapshot, base, t.grad, n);
    let m0 = before(snapshot, base, t.exp_avg, n);
    let v0 = before(snapshot, base, t.exp_avg_sq, n);
    let x0 = if cfg.amsgrad {
        before(snapshot, base, t.max_exp_avg_sq, n)
    } else {
        vec![0.0; n]
    };
    let (mut p, mut m, mut v, mut x) = (p0.clone(), m0.clone(), v0.clone(), x0.clone());
    diagprec::reference::adam_step(&cfg, step, &mut p, &g, &mut m, &mut v, Some(&mut x));
    // SAFETY: the call succeeded, so every buffer is valid for n floats in the arena.
    let got = |ptr: *const f32| unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec();
    let (gp, gm, gv) = (got(t.param), got(t.exp_avg), got(t.exp_avg_sq));
    let bc1 = 1.0 - cfg.beta1.powf(step as f64);
    let bc2 = 1.0 - cfg.beta2.powf(step as f64);
    for i in 0..n {
        let gs = (g[i] * cfg.inv_grad_scale).abs()
            + if cfg.decoupled_weight_decay {
                0.0
            } else {
                (cfg.weight_decay * p0[i]).abs()
            };
        // The kernel computes `m` as PyTorch's lerp does, `m0 + (1 - beta1) (g - m0)` with
        // `1 - beta1` rounded to f32, so `m0` and `g` are terms of it at full size: with
        // beta1 = 1e-8 the f32 weight is 1 and `m` is `g`, off the exact value by beta1 * m0.
        let m_scale = m0[i].abs() + gs;
        let v_scale = (cfg.beta2 * v0[i]).abs() + (1.0 - cfg.beta2) * gs * gs;
        // Where a term overflows f32 the kernel computes IEEE infinities, as PyTorch's f32
        // arithmetic does, and the f64 reference does not: not comparable.
        if !(gs * gs <= f32::MAX as f64 && v_scale <= f32::MAX as f64) {
            continue;
        }
        assert!(
            close(gm[i], m[i], m_scale, 16.0),
            "exp_avg[{i}]: {} vs {}",
            gm[i],
            m[i]
        );
        assert!(
            close(gv[i], v[i], v_scale, 16.0),
            "exp_avg_sq[{i}]: {} vs {}",
            gv[i],
            v[i]
        );
        let v_used = if cfg.amsgrad { x[i] } else { v[i] };
        // `v` is a sum of non-negative terms when `exp_avg_sq >= 0` on entry, as every step
        // leaves it. A negative one (outside that contract) makes `v` a difference: its
        // rounding, bounded by `v_scale`, reaches the step through `1 / sqrt(v)` amplified by
        // `v_scale / v`, and where `v` is within that bound of 0 even its sign is rounding
        // (the kernel's square root may be NaN): not comparable.
        let v_err = if !cfg.amsgrad || v[i] >= x0[i] {
            v_scale
        } else {
            0.0
        };
        if v_err > 0.0 && v_used <= 64.0 * f64::from(f32::EPSILON) * v_err {
            continue;
        }
        let amplify = if v_err > 0.0 {
            (v_err / v_used).max(1.0)
        } else {
            1.0
        };
        let denom = v_used.sqrt() / bc2.sqrt() + cfg.eps;
        let p_scale = p0[i].abs() + (cfg.lr / bc1) * m_scale / denom * amplify;
        assert!(
            close(gp[i], p[i], p_scale, 64.0),
            "param[{i}]: {} vs {} ({cfg:?}, step {step})",
            gp[i],
            p[i]
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut arena = Arena::new(&mut input);
    let base = arena.base();
    let c = config(&mut input);
    let cfg = Unaligned::new(&mut input, c);
    let cfg_ptr = if input.byte() % 32 == 0 {
        std::ptr::null()
    } else {
        cfg.ptr::<dp_adam_config>()
    };
    let step = input.step();
    match input.byte() % 4 {
        0 => {
            let t = tensor(&mut input, &mut arena);
            let call = Call::start(&mut arena);
            let snapshot = arena.bytes();
            // SAFETY: every buffer is NULL, the wrapping address, or inside the arena for len.
            let status = unsafe {
                dp_adam_step_f32(
                    cfg_ptr,
                    step,
                    t.param,
                    t.grad,
                    t.exp_avg,
                    t.exp_avg_sq,
                    t.max_exp_avg_sq,
                    t.len,
                )
            };
            call.finish(&mut arena, status, true);
            let raw_values = snapshot
                .chunks_exact(4)
                .any(|b| !(f32::from_le_bytes([b[0], b[1], b[2], b[3]]).abs() <= 2.0));
            if status == dp_status::DP_OK && !raw_values {
                compare(&c, step, &t, &snapshot, base);
            }
        }
        kind => {
            let count = input.below(6);
            let tensors: Vec<dp_adam_tensor_f32> =
                (0..count).map(|_| tensor(&mut input, &mut arena)).collect();
            let list = if count == 0 && input.byte() % 2 == 0 {
                std::ptr::null()
            } else {
                tensors.as_ptr()
            };
            let call = Call::start(&mut arena);
            let (mut norm, mut found) = (-7.0f64, 7u32);
            // SAFETY: the list holds `count` tensors whose buffers are as above.
            let status = unsafe {
                match kind {
                    1 => dp_adam_step_multi_f32(cfg_ptr, step, list, count),
                    2 => dp_adam_step_clipped_multi_f32(
                        cfg_ptr,
                        step,
                        list,
                        count,
                        input.hyper(1.0),
                        &mut norm,
                    ),
                    _ => {
                        dp_grad_norm_multi_f32(list, count, input.hyper(1.0), &mut norm, &mut found)
                    }
                }
            };
            let unchanged = norm == -7.0 && found == 7;
            call.finish(&mut arena, status, unchanged);
            if status == dp_status::DP_OK && kind == 3 {
                assert!(found <= 1, "found_inf {found}");
                assert!(found == 1 || norm >= 0.0, "norm {norm} with found_inf 0");
            }
        }
    }
});
