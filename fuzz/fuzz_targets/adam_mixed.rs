//! Mixed-precision and compressed-state Adam through the C ABI: the master-weight steps (bf16 and
//! f16, nearest and stochastic rounding, with and without clipping), the bf16-state and 8-bit
//! state steps, the 8-bit codec and the 16-bit gradient norm, with buffers placed at random in
//! one arena.
#![no_main]

use diagprec::ffi::adam::{dp_adam_config, dp_adam_config_default};
use diagprec::ffi::adam_mixed::{
    dp_adam_8bit_dequantize_f32, dp_adam_8bit_quantize_f32, dp_adam_8bit_scales_len,
    dp_adam_8bit_step_multi_f32, dp_adam_8bit_tensor, dp_adam_bf16_state_step_multi_f32,
    dp_adam_bf16_state_tensor, dp_adam_master_step_clipped_multi, dp_adam_master_step_multi,
    dp_adam_master_tensor, dp_grad_norm_master_multi,
};
use diagprec_fuzz::{Arena, Call, Input, Unaligned};
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
    c.amsgrad = if input.byte() % 8 == 0 { input.mode(2) } else { 0 };
    c.maximize = input.mode(2);
    c.check_finite = input.mode(2);
    c
}

fn len(input: &mut Input<'_>) -> usize {
    let typical = match input.byte() % 4 {
        0 => 256 * (1 + input.below(3)),
        _ => 1 + input.below(600),
    };
    input.count(typical)
}

fn master(input: &mut Input<'_>, arena: &mut Arena) -> dp_adam_master_tensor {
    let n = len(input);
    dp_adam_master_tensor {
        master: arena.buffer(input, n),
        param: arena.buffer(input, n),
        grad: arena.buffer(input, n),
        exp_avg: arena.buffer(input, n),
        exp_avg_sq: arena.buffer(input, n),
        len: n,
    }
}

fn bf16_state(input: &mut Input<'_>, arena: &mut Arena) -> dp_adam_bf16_state_tensor {
    let n = len(input);
    dp_adam_bf16_state_tensor {
        param: arena.buffer(input, n),
        grad: arena.buffer(input, n),
        exp_avg_bf16: arena.buffer(input, n),
        exp_avg_sq_bf16: arena.buffer(input, n),
        len: n,
    }
}

fn eight_bit(input: &mut Input<'_>, arena: &mut Arena) -> dp_adam_8bit_tensor {
    let n = len(input);
    let scales_len = input.count(dp_adam_8bit_scales_len(n));
    dp_adam_8bit_tensor {
        param: arena.buffer(input, n),
        grad: arena.buffer(input, n),
        exp_avg_codes: arena.buffer(input, n),
        exp_avg_scales: arena.buffer(input, scales_len),
        exp_avg_sq_codes: arena.buffer(input, n),
        exp_avg_sq_scales: arena.buffer(input, scales_len),
        len: n,
        scales_len,
    }
}

fn list<T>(input: &mut Input<'_>, items: &[T]) -> *const T {
    if items.is_empty() && input.byte() % 2 == 0 {
        std::ptr::null()
    } else {
        items.as_ptr()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut arena = Arena::new(&mut input);
    let c = config(&mut input);
    let cfg = Unaligned::new(&mut input, c);
    let cfg_ptr: *const dp_adam_config = cfg.ptr();
    let step = input.step();
    let seed = input.u64();
    let format = input.mode(2);
    let rounding = input.mode(2);
    let count = input.below(4);
    let (mut norm, mut found) = (-7.0f64, 7u32);
    let (status, unchanged);
    match input.byte() % 6 {
        0 | 1 => {
            let tensors: Vec<_> = (0..count).map(|_| master(&mut input, &mut arena)).collect();
            let ptr = list(&mut input, &tensors);
            let clipped = input.byte() % 2 == 0;
            let max_norm = input.hyper(1.0);
            let call = Call::start(&mut arena);
            // SAFETY: every buffer is NULL, the wrapping address, or inside the arena for len.
            status = unsafe {
                if clipped {
                    dp_adam_master_step_clipped_multi(cfg_ptr, step, format, rounding, seed, ptr, count, max_norm, &mut norm)
                } else {
                    dp_adam_master_step_multi(cfg_ptr, step, format, rounding, seed, ptr, count)
                }
            };
            unchanged = norm == -7.0;
            call.finish(&mut arena, status, unchanged);
        }
        2 => {
            let tensors: Vec<_> = (0..count).map(|_| master(&mut input, &mut arena)).collect();
            let ptr = list(&mut input, &tensors);
            let scale = input.hyper(1.0);
            let call = Call::start(&mut arena);
            // SAFETY: as above.
            status = unsafe { dp_grad_norm_master_multi(format, ptr, count, scale, &mut norm, &mut found) };
            unchanged = norm == -7.0 && found == 7;
            call.finish(&mut arena, status, unchanged);
        }
        3 => {
            let tensors: Vec<_> = (0..count).map(|_| bf16_state(&mut input, &mut arena)).collect();
            let ptr = list(&mut input, &tensors);
            let call = Call::start(&mut arena);
            // SAFETY: as above.
            status = unsafe { dp_adam_bf16_state_step_multi_f32(cfg_ptr, step, seed, ptr, count) };
            call.finish(&mut arena, status, true);
        }
        4 => {
            let tensors: Vec<_> = (0..count).map(|_| eight_bit(&mut input, &mut arena)).collect();
            let ptr = list(&mut input, &tensors);
            let call = Call::start(&mut arena);
            // SAFETY: as above.
            status = unsafe { dp_adam_8bit_step_multi_f32(cfg_ptr, step, ptr, count) };
            call.finish(&mut arena, status, true);
        }
        _ => {
            let n = len(&mut input);
            let moment = input.mode(2);
            let values = arena.buffer::<f32>(&mut input, n);
            let codes_len = input.count(n);
            let codes = arena.buffer::<u8>(&mut input, codes_len);
            let scales_len = input.count(dp_adam_8bit_scales_len(n));
            let scales = arena.buffer::<f32>(&mut input, scales_len);
            let call = Call::start(&mut arena);
            // SAFETY: as above.
            status = unsafe {
                if input.byte() % 2 == 0 {
                    dp_adam_8bit_quantize_f32(moment, values, n, codes, codes_len, scales, scales_len)
                } else {
                    dp_adam_8bit_dequantize_f32(moment, codes, codes_len, scales, scales_len, values, n)
                }
            };
            call.finish(&mut arena, status, true);
        }
    }
    let _ = status;
});
