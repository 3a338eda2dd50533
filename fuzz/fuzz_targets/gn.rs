//! The Gauss-Newton family through the C ABI: `dp_gn_step_f32` (compared with
//! `diagprec::reference::gn_step` on success), `dp_gn_diag_dense_f32`, `dp_gn_diag_linear_f32`
//! and `dp_gn_matrix_accumulate_f32`, with buffers placed at random in one arena.
#![no_main]

use diagprec::ffi::dp_status;
use diagprec::ffi::gn::{
    dp_gn_config, dp_gn_config_default, dp_gn_diag_dense_f32, dp_gn_diag_linear_f32,
    dp_gn_matrix_accumulate_f32, dp_gn_step_f32,
};
use diagprec_fuzz::{before, close, Arena, Call, Input, Unaligned};
use libfuzzer_sys::fuzz_target;

fn config(input: &mut Input<'_>) -> dp_gn_config {
    let mut c = dp_gn_config_default();
    c.lr = input.hyper(1e-2);
    c.power = [-1.0, -0.5, -0.3, 0.5][input.below(4)];
    c.power = input.hyper(c.power);
    c.damping = input.hyper(c.damping);
    c.beta1 = input.hyper(0.9);
    c.weight_decay = input.hyper(0.0);
    c.sophia_gamma = input.hyper(c.sophia_gamma);
    c.sophia_eps = input.hyper(c.sophia_eps);
    c.bias_correction = input.mode(2);
    c.sophia = if input.byte() % 4 == 0 {
        input.mode(2)
    } else {
        0
    };
    c.check_finite = input.mode(2);
    c
}

fn rust_config(c: &dp_gn_config) -> diagprec::GnConfig {
    diagprec::GnConfig {
        lr: c.lr,
        power: c.power,
        damping: c.damping,
        beta1: c.beta1,
        bias_correction: c.bias_correction == 1,
        weight_decay: c.weight_decay,
        sophia: (c.sophia == 1).then_some(diagprec::SophiaClip {
            gamma: c.sophia_gamma,
            eps: c.sophia_eps,
        }),
        check_finite: c.check_finite == 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut arena = Arena::new(&mut input);
    let base = arena.base();
    let beta = input.hyper(0.9);
    match input.byte() % 4 {
        0 => {
            let c = config(&mut input);
            let cfg = Unaligned::new(&mut input, c);
            let step = input.step();
            let len = {
                let typical = 1 + input.below(300);
                input.count(typical)
            };
            let (param, grad, exp_avg, h) = (
                arena.buffer::<f32>(&mut input, len),
                arena.buffer::<f32>(&mut input, len),
                arena.buffer::<f32>(&mut input, len),
                arena.buffer::<f32>(&mut input, len),
            );
            let snapshot = arena.bytes();
            let call = Call::start(&mut arena);
            // SAFETY: buffers are NULL, the wrapping address, or inside the arena for len.
            let status = unsafe { dp_gn_step_f32(cfg.ptr(), step, param, grad, exp_avg, h, len) };
            call.finish(&mut arena, status, true);
            let tame = snapshot
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).abs() <= 2.0);
            if status == dp_status::DP_OK && tame && len > 0 {
                let cfg = rust_config(&c);
                let p0 = before(&snapshot, base, param, len);
                let g = before(&snapshot, base, grad, len);
                let hv = before(&snapshot, base, h, len);
                let mut m = (!exp_avg.is_null()).then(|| before(&snapshot, base, exp_avg, len));
                let mut p = p0.clone();
                diagprec::reference::gn_step(&cfg, step, &mut p, &g, m.as_deref_mut(), &hv);
                // The step taken from |g| and |m0|: where beta1 m0 and (1 - beta1) g nearly
                // cancel, m carries their rounding at full size (as in the Adam oracle), and
                // a small h + damping scales it up.
                let size = {
                    let mut zero = vec![0.0; len];
                    let g_abs: Vec<f64> = g.iter().map(|x| x.abs()).collect();
                    let mut m_abs = (!exp_avg.is_null())
                        .then(|| before(&snapshot, base, exp_avg, len))
                        .map(|m| m.iter().map(|x| x.abs()).collect::<Vec<f64>>());
                    diagprec::reference::gn_step(
                        &cfg,
                        step,
                        &mut zero,
                        &g_abs,
                        m_abs.as_deref_mut(),
                        &hv,
                    );
                    zero
                };
                // SAFETY: the call succeeded: param is valid for len floats.
                let got = unsafe { std::slice::from_raw_parts(param, len) };
                for i in 0..len {
                    // Where the kernel's f32 intermediates overflow, the factor
                    // `(h + lambda)^p` or `m` times it, it computes IEEE infinities (as f32
                    // arithmetic does) and the f64 reference does not: not comparable, as in
                    // the Adam oracle. `size / lr` bounds `|m| (h + lambda)^p` from above.
                    if cfg.sophia.is_none() {
                        let factor = (hv[i].max(0.0) + cfg.damping).powf(cfg.power);
                        let max = f32::MAX as f64;
                        if !(factor <= max && size[i].abs() / cfg.lr <= max) {
                            continue;
                        }
                    }
                    let scale = p0[i].abs() * (1.0 + cfg.lr * cfg.weight_decay)
                        + (p[i] - p0[i]).abs()
                        + size[i].abs();
                    assert!(
                        close(got[i], p[i], scale, 64.0),
                        "param[{i}]: {} vs {} ({cfg:?})",
                        got[i],
                        p[i]
                    );
                }
            }
        }
        1 => {
            let n = {
                let typical = 1 + input.below(24);
                input.count(typical)
            };
            let dim = {
                let typical = 1 + input.below(24);
                input.count(typical)
            };
            let stride = dim + input.below(3);
            let x_len = input.count(
                n.saturating_sub(1)
                    .saturating_mul(stride)
                    .saturating_add(dim),
            );
            let x = arena.buffer::<f32>(&mut input, x_len);
            let weighting = input.mode(2);
            let weights_len = input.count(n);
            let weights = arena.buffer::<f32>(&mut input, weights_len);
            let k = {
                let typical = if input.byte() % 2 == 0 {
                    dim
                } else {
                    1 + input.below(dim.max(1))
                };
                input.count(typical)
            };
            let u_len = if input.byte() % 2 == 0 {
                0
            } else {
                input.count(dim.saturating_mul(k))
            };
            let u = if u_len == 0 {
                std::ptr::null_mut()
            } else {
                arena.buffer::<f32>(&mut input, u_len)
            };
            let h_len = input.count(k);
            let h = arena.buffer::<f32>(&mut input, h_len);
            let call = Call::start(&mut arena);
            // SAFETY: as above.
            let status = unsafe {
                dp_gn_diag_dense_f32(
                    x,
                    x_len,
                    n,
                    dim,
                    stride,
                    weighting,
                    weights,
                    weights_len,
                    u,
                    u_len,
                    k,
                    beta,
                    h,
                    h_len,
                )
            };
            call.finish(&mut arena, status, true);
        }
        2 => {
            let n = {
                let typical = 1 + input.below(16);
                input.count(typical)
            };
            let d_in = {
                let typical = 1 + input.below(16);
                input.count(typical)
            };
            let c_out = {
                let typical = 1 + input.below(16);
                input.count(typical)
            };
            let output = input.mode(3);
            let x_len = input.count(n.saturating_mul(d_in));
            let x = arena.buffer::<f32>(&mut input, x_len);
            let s_len = input.count(n.saturating_mul(c_out));
            let s = arena.buffer::<f32>(&mut input, s_len);
            let kron = input.byte() % 3 == 0;
            let q_c_len = if kron {
                input.count(c_out.saturating_mul(c_out))
            } else {
                0
            };
            let q_x_len = if kron {
                input.count(d_in.saturating_mul(d_in))
            } else {
                0
            };
            let q_c = if kron {
                arena.buffer::<f32>(&mut input, q_c_len)
            } else {
                std::ptr::null_mut()
            };
            let q_x = if kron {
                arena.buffer::<f32>(&mut input, q_x_len)
            } else {
                std::ptr::null_mut()
            };
            let h_len = input.count(c_out.saturating_mul(d_in));
            let h = arena.buffer::<f32>(&mut input, h_len);
            let h_bias_len = input.count(c_out);
            let h_bias = arena.buffer::<f32>(&mut input, h_bias_len);
            let seed = input.u64();
            let call = Call::start(&mut arena);
            // SAFETY: as above.
            let status = unsafe {
                dp_gn_diag_linear_f32(
                    x, x_len, n, d_in, output, s, s_len, c_out, seed, q_c, q_c_len, q_x, q_x_len,
                    beta, h, h_len, h_bias, h_bias_len,
                )
            };
            call.finish(&mut arena, status, true);
        }
        _ => {
            let n = {
                let typical = 1 + input.below(16);
                input.count(typical)
            };
            let dim = {
                let typical = 1 + input.below(16);
                input.count(typical)
            };
            let stride = dim + input.below(3);
            let h_len = input.count(dim.saturating_mul(dim));
            let h = arena.buffer::<f32>(&mut input, h_len);
            let x_len = input.count(
                n.saturating_sub(1)
                    .saturating_mul(stride)
                    .saturating_add(dim),
            );
            let x = arena.buffer::<f32>(&mut input, x_len);
            let weights_len = input.count(n);
            let weights = arena.buffer::<f32>(&mut input, weights_len);
            let call = Call::start(&mut arena);
            // SAFETY: as above.
            if std::env::var_os("FUZZ_DEBUG").is_some() {
                eprintln!("matrix_accumulate dim {dim} h_len {h_len} n {n} stride {stride} x_len {x_len} weights_len {weights_len} beta {beta}");
            }
            let status = unsafe {
                dp_gn_matrix_accumulate_f32(
                    h,
                    h_len,
                    dim,
                    x,
                    x_len,
                    n,
                    stride,
                    weights,
                    weights_len,
                    beta,
                )
            };
            call.finish(&mut arena, status, true);
        }
    }
});
