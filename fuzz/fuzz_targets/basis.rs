//! Basis handles through the C ABI as a state machine: create (identity, dense, Kronecker, from a
//! symmetric matrix, from Kronecker factors), rotate, the rotated Adam and GN steps, refresh,
//! interpolate, get_info / get_matrix and free, over live, freed, NULL and made-up handles, with
//! buffers placed at random in one arena.
#![no_main]

use diagprec::ffi::adam::{dp_adam_config, dp_adam_config_default, dp_adam_rotated_step_f32};
use diagprec::ffi::basis::{
    dp_basis, dp_basis_create_dense_f32, dp_basis_create_from_factors_f32,
    dp_basis_create_from_symmetric_f32, dp_basis_create_identity, dp_basis_create_kronecker_f32,
    dp_basis_free, dp_basis_get_info, dp_basis_get_matrix_f32, dp_basis_info,
    dp_basis_interpolate_f32, dp_basis_kron_factors_update_f32, dp_basis_refresh_f32,
    dp_basis_rotate_f32,
};
use diagprec::ffi::dp_status;
use diagprec::ffi::gn::{dp_gn_config, dp_gn_config_default, dp_gn_rotated_step_f32};
use diagprec_fuzz::{Arena, Call, Input, Unaligned};
use libfuzzer_sys::fuzz_target;

/// A handle to pass: a live one, a freed one, NULL, or one that was never created.
fn pick(input: &mut Input<'_>, live: &[*mut dp_basis], freed: &[*mut dp_basis]) -> *mut dp_basis {
    match input.byte() % 16 {
        0 => std::ptr::null_mut(),
        1 => 8 as *mut dp_basis,
        2 => input.u64() as usize as *mut dp_basis,
        3 if !freed.is_empty() => freed[input.below(freed.len())],
        _ if !live.is_empty() => live[input.below(live.len())],
        _ => std::ptr::null_mut(),
    }
}

/// The size a handle acts on (0 for a handle the library does not know).
fn info(basis: *mut dp_basis) -> dp_basis_info {
    // SAFETY: a zeroed info with its struct_size is plain data; the handle may be invalid, which
    // the call reports.
    let mut info: dp_basis_info = unsafe { std::mem::zeroed() };
    info.struct_size = std::mem::size_of::<dp_basis_info>();
    // SAFETY: info is a valid, aligned dp_basis_info.
    let status = unsafe { dp_basis_get_info(basis, &mut info) };
    if status != dp_status::DP_OK {
        info.len = 0;
        info.rows = 0;
        info.cols = 0;
    }
    info
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut arena = Arena::new(&mut input);
    let mut live: Vec<*mut dp_basis> = Vec::new();
    let mut freed: Vec<*mut dp_basis> = Vec::new();
    let mut adam: dp_adam_config = dp_adam_config_default();
    adam.lr = input.hyper(adam.lr);
    adam.amsgrad = input.mode(2);
    adam.check_finite = input.mode(2);
    let adam_cfg = Unaligned::new(&mut input, adam);
    let mut gn: dp_gn_config = dp_gn_config_default();
    gn.lr = input.hyper(1e-2);
    gn.power = input.hyper(-0.5);
    gn.damping = input.hyper(gn.damping);
    let gn_cfg = Unaligned::new(&mut input, gn);
    for _ in 0..(1 + input.below(12)) {
        let op = input.byte() % 12;
        let sentinel = 0x5a5a as *mut dp_basis;
        let mut out = sentinel;
        let call = Call::start(&mut arena);
        let b = pick(&mut input, &live, &freed);
        let i = info(b);
        let n = input.count(i.len);
        // SAFETY (every call below): buffers are NULL, the wrapping address, or inside the arena
        // for their counts; handles are live, freed, NULL or made up, which the library checks.
        let status = unsafe {
            match op {
                0 => dp_basis_create_identity(
                    {
                        let typical = 1 + input.below(64);
                        input.count(typical)
                    },
                    &mut out,
                ),
                1 => {
                    let d = 1 + input.below(12);
                    let len = input.count(d * d);
                    let a = arena.buffer::<f32>(&mut input, len);
                    dp_basis_create_from_symmetric_f32(a, len, d, &mut out)
                }
                2 => {
                    let (r, c) = (1 + input.below(8), 1 + input.below(8));
                    let (ll, rl) = (input.count(r * r), input.count(c * c));
                    let (l, rr) = (
                        arena.buffer::<f32>(&mut input, ll),
                        arena.buffer::<f32>(&mut input, rl),
                    );
                    if input.byte() % 2 == 0 {
                        dp_basis_create_from_factors_f32(l, ll, r, rr, rl, c, &mut out)
                    } else {
                        dp_basis_create_kronecker_f32(l, ll, r, rr, rl, c, &mut out)
                    }
                }
                3 => {
                    // A dense basis from a live handle's own matrix, copied through the arena.
                    let d = i.rows.max(1);
                    let len = input.count(d * d);
                    let u = arena.buffer::<f32>(&mut input, len);
                    let got = dp_basis_get_matrix_f32(b, input.mode(2), u, len);
                    if got == dp_status::DP_OK {
                        let before = Call::start(&mut arena);
                        let s = dp_basis_create_dense_f32(u, len, d, &mut out);
                        before.finish(&mut arena, s, out == sentinel);
                        // Every basis the library hands out is orthonormal, so its own matrix
                        // is accepted back (interpolation far outside [0, 1] once broke this).
                        assert_ne!(
                            s,
                            dp_status::DP_ERR_INVALID_ARGUMENT,
                            "{}",
                            diagprec_fuzz::last_error()
                        );
                        // get_matrix wrote the arena: the call as a whole succeeded.
                        if s != dp_status::DP_OK {
                            out = sentinel;
                        }
                        got
                    } else {
                        got
                    }
                }
                4 => {
                    let w = {
                        let typical = i.len + input.below(4);
                        input.count(typical)
                    };
                    let (src, dst, work) = (
                        arena.buffer::<f32>(&mut input, n),
                        arena.buffer::<f32>(&mut input, n),
                        arena.buffer::<f32>(&mut input, w),
                    );
                    dp_basis_rotate_f32(b, input.mode(2), src, n, dst, n, work, w)
                }
                5 => {
                    let w = input.count(i.step_workspace_len);
                    let bufs: Vec<*mut f32> =
                        (0..5).map(|_| arena.buffer::<f32>(&mut input, n)).collect();
                    let work = arena.buffer::<f32>(&mut input, w);
                    dp_adam_rotated_step_f32(
                        adam_cfg.ptr(),
                        input.step(),
                        b,
                        bufs[0],
                        bufs[1],
                        bufs[2],
                        bufs[3],
                        bufs[4],
                        n,
                        work,
                        w,
                    )
                }
                6 => {
                    let w = input.count(i.step_workspace_len);
                    let bufs: Vec<*mut f32> =
                        (0..4).map(|_| arena.buffer::<f32>(&mut input, n)).collect();
                    let work = arena.buffer::<f32>(&mut input, w);
                    dp_gn_rotated_step_f32(
                        gn_cfg.ptr(),
                        input.step(),
                        b,
                        bufs[0],
                        bufs[1],
                        bufs[2],
                        bufs[3],
                        n,
                        work,
                        w,
                    )
                }
                7 => {
                    let (ls, rs) = (input.count(i.rows * i.rows), input.count(i.cols * i.cols));
                    let (l, r) = (
                        arena.buffer::<f32>(&mut input, ls),
                        arena.buffer::<f32>(&mut input, rs),
                    );
                    let bufs: Vec<*mut f32> =
                        (0..3).map(|_| arena.buffer::<f32>(&mut input, n)).collect();
                    dp_basis_refresh_f32(
                        b,
                        l,
                        ls,
                        r,
                        rs,
                        input.mode(2),
                        input.mode(2),
                        bufs[0],
                        bufs[1],
                        bufs[2],
                        n,
                    )
                }
                8 => {
                    let other = pick(&mut input, &live, &freed);
                    dp_basis_interpolate_f32(b, other, input.hyper(0.5), &mut out)
                }
                9 => {
                    let (r, c) = (
                        {
                            let typical = 1 + input.below(8);
                            input.count(typical)
                        },
                        {
                            let typical = 1 + input.below(8);
                            input.count(typical)
                        },
                    );
                    let (ll, rl, gl) = (
                        input.count(r.saturating_mul(r)),
                        input.count(c.saturating_mul(c)),
                        input.count(r.saturating_mul(c)),
                    );
                    let (l, rr, g) = (
                        arena.buffer::<f32>(&mut input, ll),
                        arena.buffer::<f32>(&mut input, rl),
                        arena.buffer::<f32>(&mut input, gl),
                    );
                    dp_basis_kron_factors_update_f32(l, ll, r, rr, rl, c, g, gl, input.hyper(0.9))
                }
                10 => {
                    let mut bad: dp_basis_info = std::mem::zeroed();
                    bad.struct_size = if input.byte() % 4 == 0 {
                        3
                    } else {
                        std::mem::size_of::<dp_basis_info>()
                    };
                    let copy = bad;
                    let s = dp_basis_get_info(b, &mut bad);
                    let same = std::slice::from_raw_parts(
                        (&copy as *const dp_basis_info).cast::<u8>(),
                        std::mem::size_of::<dp_basis_info>(),
                    ) == std::slice::from_raw_parts(
                        (&bad as *const dp_basis_info).cast::<u8>(),
                        std::mem::size_of::<dp_basis_info>(),
                    );
                    let before = Call::start(&mut arena);
                    before.finish(&mut arena, s, same);
                    s
                }
                _ => {
                    dp_basis_free(b);
                    if let Some(k) = live.iter().position(|&h| h == b) {
                        freed.push(live.swap_remove(k));
                    }
                    dp_status::DP_OK
                }
            }
        };
        if op != 11 {
            call.finish(&mut arena, status, out == sentinel);
        }
        if status == dp_status::DP_OK && out != sentinel {
            assert!(!out.is_null());
            live.push(out);
        }
    }
    for h in live {
        // SAFETY: a live handle from this run, freed once.
        unsafe { dp_basis_free(h) };
    }
});
