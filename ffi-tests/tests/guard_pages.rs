//! Every export with every buffer flush against `PROT_NONE` guard pages: each buffer gets its own
//! mapping `[guard | data | guard]` and is placed at element offsets 0..15 from the leading guard
//! or from the trailing one, for lengths 0..70 and odd larger sizes (matrices of 1..24, 67 and
//! 130), on every instruction set the machine has (the test re-runs itself with `DIAGPREC_ISA`
//! set). A read or write one element outside any buffer is a SIGSEGV, which fails the test. Every
//! call with valid arguments must return `DP_OK` (or `DP_ERR_LENGTH` for an empty buffer where the
//! operation needs elements).

use diagprec::ffi::adam::*;
use diagprec::ffi::adam_mixed::*;
use diagprec::ffi::basis::*;
use diagprec::ffi::dp_status;
use diagprec::ffi::gn::*;
use std::process::Command;

const PAGE: usize = 4096;
/// Lengths tried: every length to 70, then odd sizes across the SIMD widths and the 8-bit block.
const LENGTHS: [usize; 8] = [127, 255, 257, 511, 513, 1023, 1031, 4099];
/// Matrix sizes tried beyond 1..=24: large enough for the GEMMs' packed, blocked paths (the
/// `gemm` crate's small-size kernels stop at 64 x 64) with ragged edges.
const MATRIX_SIZES: [usize; 2] = [67, 130];
/// The largest buffer any case places, in bytes (plus room for the offsets): the elementwise
/// cases' four arrays of 4099, or a matrix case's step workspace (two `d x (d + 1)` matrices).
const SLOT_BYTES: usize = 4 * 4099 * 4 + 64 * 4 + 2 * 4 * 131 * 131;

struct Slot {
    data: *mut u8,
    bytes: usize,
}

impl Slot {
    fn new() -> Self {
        let bytes = SLOT_BYTES.div_ceil(PAGE) * PAGE;
        // SAFETY: an anonymous private mapping of fresh pages; the guard pages are made
        // inaccessible and never unmapped while the test runs.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                bytes + 2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let map = map.cast::<u8>();
            assert_eq!(libc::mprotect(map.cast(), PAGE, libc::PROT_NONE), 0);
            assert_eq!(
                libc::mprotect(map.add(PAGE + bytes).cast(), PAGE, libc::PROT_NONE),
                0
            );
            Self {
                data: map.add(PAGE),
                bytes,
            }
        }
    }
}

/// Places the buffers of one call: buffer `k` in slot `k`, `offset` elements from the leading
/// guard page or (with `at_end`) from the trailing one, filled with valid values.
struct Place {
    slots: Vec<Slot>,
    offset: usize,
    at_end: bool,
    used: usize,
}

impl Place {
    fn next<T: Copy>(&mut self, n: usize, fill: impl Fn(usize) -> T) -> *mut T {
        if self.used == self.slots.len() {
            self.slots.push(Slot::new());
        }
        let slot = &self.slots[self.used];
        self.used += 1;
        let size = std::mem::size_of::<T>();
        assert!((n + self.offset) * size <= slot.bytes);
        // SAFETY: the placed range lies inside the slot's data pages (asserted above).
        unsafe {
            let ptr = if self.at_end {
                slot.data.add(slot.bytes - (n + self.offset) * size)
            } else {
                slot.data.add(self.offset * size)
            }
            .cast::<T>();
            for i in 0..n {
                ptr.add(i).write(fill(i));
            }
            ptr
        }
    }

    fn f32(&mut self, n: usize) -> *mut f32 {
        self.next(n, |i| 0.01 + (i % 97) as f32 / 128.0)
    }

    /// bf16 or f16 bits of small positive values.
    fn half(&mut self, n: usize, format: u32) -> *mut u16 {
        self.next(n, move |i| {
            let base = if format == DP_FORMAT_BF16 {
                0x3c00
            } else {
                0x2000
            };
            base + (i % 31) as u16
        })
    }

    fn u8(&mut self, n: usize) -> *mut u8 {
        self.next(n, |i| (i * 37) as u8)
    }

    /// A `d x d` row-major identity, or a symmetric positive definite matrix.
    fn square(&mut self, d: usize, identity: bool) -> *mut f32 {
        self.next(d * d, move |i| {
            let (r, c) = (i / d, i % d);
            match (identity, r == c) {
                (true, true) => 1.0,
                (true, false) => 0.0,
                (false, true) => 2.0 + r as f32,
                (false, false) => 0.1 / (1.0 + (r + c) as f32),
            }
        })
    }

    /// A tensor-list array of one descriptor, itself flush against a guard page.
    fn list<T: Copy>(&mut self, t: T) -> *const T {
        self.next(1, |_| t)
    }
}

fn adam_cfg() -> dp_adam_config {
    let mut c = dp_adam_config_default();
    c.amsgrad = 1;
    c.check_finite = 1;
    c.weight_decay = 0.01;
    c
}

fn gn_cfg() -> dp_gn_config {
    let mut c = dp_gn_config_default();
    c.beta1 = 0.9;
    c.check_finite = 1;
    c
}

fn identity(len: usize) -> *mut dp_basis {
    let mut b = std::ptr::null_mut();
    // SAFETY: out is a valid pointer.
    let s = unsafe { dp_basis_create_identity(len, &mut b) };
    assert_eq!(s, dp_status::DP_OK);
    b
}

/// One export family's calls over length `n` with buffers placed by `p`; returns each status.
type Case = fn(&mut Place, usize) -> Vec<dp_status>;

/// Elementwise exports: every buffer has `n` elements.
fn elementwise(p: &mut Place, n: usize) -> Vec<dp_status> {
    let cfg = adam_cfg();
    let gcfg = gn_cfg();
    let mut out = Vec::new();
    // SAFETY (every call): each pointer is valid for the count passed with it.
    unsafe {
        out.push(dp_adam_step_f32(
            &cfg,
            3,
            p.f32(n),
            p.f32(n),
            p.f32(n),
            p.f32(n),
            p.f32(n),
            n,
        ));
        let t = dp_adam_tensor_f32 {
            param: p.f32(n),
            grad: p.f32(n),
            exp_avg: p.f32(n),
            exp_avg_sq: p.f32(n),
            max_exp_avg_sq: p.f32(n),
            len: n,
        };
        let list = p.list(t);
        out.push(dp_adam_step_multi_f32(&cfg, 3, list, 1));
        let mut norm = 0.0;
        out.push(dp_adam_step_clipped_multi_f32(
            &cfg, 3, list, 1, 1.0, &mut norm,
        ));
        let mut found = 0u32;
        out.push(dp_grad_norm_multi_f32(list, 1, 1.0, &mut norm, &mut found));
        let mut plain = cfg;
        plain.amsgrad = 0;
        for format in [DP_FORMAT_BF16, DP_FORMAT_F16] {
            for rounding in [DP_ROUND_NEAREST, DP_ROUND_STOCHASTIC] {
                let t = dp_adam_master_tensor {
                    master: p.f32(n),
                    param: p.half(n, format),
                    grad: p.half(n, format),
                    exp_avg: p.f32(n),
                    exp_avg_sq: p.f32(n),
                    len: n,
                };
                let list = p.list(t);
                out.push(dp_adam_master_step_multi(
                    &plain, 3, format, rounding, 7, list, 1,
                ));
                out.push(dp_adam_master_step_clipped_multi(
                    &plain, 3, format, rounding, 7, list, 1, 1.0, &mut norm,
                ));
                out.push(dp_grad_norm_master_multi(
                    format, list, 1, 1.0, &mut norm, &mut found,
                ));
            }
        }
        let t = dp_adam_bf16_state_tensor {
            param: p.f32(n),
            grad: p.f32(n),
            exp_avg_bf16: p.half(n, DP_FORMAT_BF16),
            exp_avg_sq_bf16: p.half(n, DP_FORMAT_BF16),
            len: n,
        };
        out.push(dp_adam_bf16_state_step_multi_f32(
            &plain,
            3,
            7,
            p.list(t),
            1,
        ));
        let s = dp_adam_8bit_scales_len(n);
        let t = dp_adam_8bit_tensor {
            param: p.f32(n),
            grad: p.f32(n),
            exp_avg_codes: p.u8(n),
            exp_avg_scales: p.f32(s),
            exp_avg_sq_codes: p.u8(n),
            exp_avg_sq_scales: p.f32(s),
            len: n,
            scales_len: s,
        };
        out.push(dp_adam_8bit_step_multi_f32(&plain, 3, p.list(t), 1));
        for moment in [DP_MOMENT_EXP_AVG, DP_MOMENT_EXP_AVG_SQ] {
            out.push(dp_adam_8bit_quantize_f32(
                moment,
                p.f32(n),
                n,
                p.u8(n),
                n,
                p.f32(s),
                s,
            ));
            out.push(dp_adam_8bit_dequantize_f32(
                moment,
                p.u8(n),
                n,
                p.f32(s),
                s,
                p.f32(n),
                n,
            ));
        }
        out.push(dp_gn_step_f32(
            &gcfg,
            3,
            p.f32(n),
            p.f32(n),
            p.f32(n),
            p.f32(n),
            n,
        ));
        // The identity basis: rotations and rotated steps over n floats.
        let b = identity(n);
        for direction in [DP_ROTATE_INTO, DP_ROTATE_OUT] {
            out.push(dp_basis_rotate_f32(
                b,
                direction,
                p.f32(n),
                n,
                p.f32(n),
                n,
                std::ptr::null_mut(),
                0,
            ));
        }
        out.push(dp_adam_rotated_step_f32(
            &cfg,
            3,
            b,
            p.f32(n),
            p.f32(n),
            p.f32(n),
            p.f32(n),
            p.f32(n),
            n,
            std::ptr::null_mut(),
            0,
        ));
        out.push(dp_gn_rotated_step_f32(
            &gcfg,
            3,
            b,
            p.f32(n),
            p.f32(n),
            p.f32(n),
            p.f32(n),
            n,
            std::ptr::null_mut(),
            0,
        ));
        dp_basis_free(b);
        // GN diagonals with n features: 3 samples (rows of stride n + 1).
        let (samples, stride) = (3usize, n + 1);
        let x_len = if n == 0 {
            0
        } else {
            (samples - 1) * stride + n
        };
        for weighting in [DP_GN_WEIGHTS_GIVEN, DP_GN_WEIGHTS_LOGISTIC] {
            out.push(dp_gn_diag_dense_f32(
                p.f32(x_len),
                x_len,
                samples,
                n,
                stride,
                weighting,
                p.f32(samples),
                samples,
                std::ptr::null(),
                0,
                n,
                0.9,
                p.f32(n),
                n,
            ));
        }
        for output in [
            DP_GN_OUTPUT_FACTORS,
            DP_GN_SOFTMAX_EXACT,
            DP_GN_SOFTMAX_SAMPLED,
        ] {
            let c = 3usize;
            out.push(dp_gn_diag_linear_f32(
                p.f32(samples * n),
                samples * n,
                samples,
                n,
                output,
                p.f32(samples * c),
                samples * c,
                c,
                7,
                std::ptr::null(),
                0,
                std::ptr::null(),
                0,
                0.9,
                p.f32(c * n),
                c * n,
                p.f32(c),
                c,
            ));
        }
    }
    out
}

/// Matrix exports over `d x d` (and `d x (d + 1)`) shapes, `d = n` for n up to 24.
fn matrices(p: &mut Place, n: usize) -> Vec<dp_status> {
    let d = n;
    let (rows, cols) = (d, d + 1);
    let cfg = adam_cfg();
    let gcfg = gn_cfg();
    let mut out = Vec::new();
    if d == 0 || d > MATRIX_SIZES[MATRIX_SIZES.len() - 1] {
        return out;
    }
    // SAFETY (every call): each pointer is valid for the count passed with it.
    unsafe {
        let mut dense = std::ptr::null_mut();
        out.push(dp_basis_create_from_symmetric_f32(
            p.square(d, false),
            d * d,
            d,
            &mut dense,
        ));
        let mut from_u = std::ptr::null_mut();
        out.push(dp_basis_create_dense_f32(
            p.square(d, true),
            d * d,
            d,
            &mut from_u,
        ));
        let mut kron = std::ptr::null_mut();
        out.push(dp_basis_create_kronecker_f32(
            p.square(rows, true),
            rows * rows,
            rows,
            p.square(cols, true),
            cols * cols,
            cols,
            &mut kron,
        ));
        let mut factors = std::ptr::null_mut();
        out.push(dp_basis_create_from_factors_f32(
            p.square(rows, false),
            rows * rows,
            rows,
            p.square(cols, false),
            cols * cols,
            cols,
            &mut factors,
        ));
        for (b, right) in [(dense, 0), (kron, cols * cols)] {
            if b.is_null() {
                continue;
            }
            let mut info: dp_basis_info = std::mem::zeroed();
            info.struct_size = std::mem::size_of::<dp_basis_info>();
            out.push(dp_basis_get_info(b, &mut info));
            let (w, sw) = (info.rotate_workspace_len, info.step_workspace_len);
            let left = if right == 0 { d * d } else { rows * rows };
            let n_el = info.len;
            out.push(dp_basis_get_matrix_f32(
                b,
                DP_FACTOR_LEFT,
                p.f32(left),
                left,
            ));
            for direction in [DP_ROTATE_INTO, DP_ROTATE_OUT] {
                out.push(dp_basis_rotate_f32(
                    b,
                    direction,
                    p.f32(n_el),
                    n_el,
                    p.f32(n_el),
                    n_el,
                    p.f32(w),
                    w,
                ));
            }
            out.push(dp_adam_rotated_step_f32(
                &cfg,
                3,
                b,
                p.f32(n_el),
                p.f32(n_el),
                p.f32(n_el),
                p.f32(n_el),
                p.f32(n_el),
                n_el,
                p.f32(sw),
                sw,
            ));
            out.push(dp_gn_rotated_step_f32(
                &gcfg,
                3,
                b,
                p.f32(n_el),
                p.f32(n_el),
                p.f32(n_el),
                p.f32(n_el),
                n_el,
                p.f32(sw),
                sw,
            ));
            let (sl, sr) = if right == 0 {
                (p.square(d, false), std::ptr::null_mut())
            } else {
                (p.square(rows, false), p.square(cols, false))
            };
            for method in [DP_REFRESH_EIGH, DP_REFRESH_POWER_QR] {
                out.push(dp_basis_refresh_f32(
                    b,
                    sl,
                    left,
                    sr,
                    right,
                    method,
                    DP_TRANSFER_PERMUTE,
                    p.f32(n_el),
                    p.f32(n_el),
                    p.f32(n_el),
                    n_el,
                ));
            }
            let mut mid = std::ptr::null_mut();
            out.push(dp_basis_interpolate_f32(b, b, 0.5, &mut mid));
            dp_basis_free(mid);
        }
        for b in [dense, from_u, kron, factors] {
            dp_basis_free(b);
        }
        out.push(dp_basis_kron_factors_update_f32(
            p.square(rows, false),
            rows * rows,
            rows,
            p.square(cols, false),
            cols * cols,
            cols,
            p.f32(rows * cols),
            rows * cols,
            0.9,
        ));
        let (samples, stride) = (3usize, d + 2);
        let x_len = (samples - 1) * stride + d;
        out.push(dp_gn_matrix_accumulate_f32(
            p.square(d, false),
            d * d,
            d,
            p.f32(x_len),
            x_len,
            samples,
            stride,
            p.f32(samples),
            samples,
            0.9,
        ));
        let k = d.div_ceil(2);
        out.push(dp_gn_diag_dense_f32(
            p.f32(x_len),
            x_len,
            samples,
            d,
            stride,
            DP_GN_WEIGHTS_GIVEN,
            p.f32(samples),
            samples,
            p.square(d, true),
            d * k,
            k,
            0.9,
            p.f32(k),
            k,
        ));
        let c = d + 1;
        for output in [DP_GN_SOFTMAX_EXACT, DP_GN_SOFTMAX_SAMPLED] {
            out.push(dp_gn_diag_linear_f32(
                p.f32(samples * d),
                samples * d,
                samples,
                d,
                output,
                p.f32(samples * c),
                samples * c,
                c,
                7,
                p.square(c, true),
                c * c,
                p.square(d, true),
                d * d,
                0.9,
                p.f32(c * d),
                c * d,
                p.f32(c),
                c,
            ));
        }
    }
    out
}

fn sweep(case: Case, name: &str, lengths: impl Iterator<Item = usize> + Clone) {
    let mut place = Place {
        slots: Vec::new(),
        offset: 0,
        at_end: false,
        used: 0,
    };
    for n in lengths {
        for offset in 0..16 {
            for at_end in [false, true] {
                place.offset = offset;
                place.at_end = at_end;
                place.used = 0;
                for (i, status) in case(&mut place, n).into_iter().enumerate() {
                    let fine = status == dp_status::DP_OK
                        || (n == 0 && status == dp_status::DP_ERR_LENGTH);
                    assert!(
                        fine,
                        "{name}: call {i}, n = {n}, offset {offset}, at_end {at_end}: {status:?} ({})",
                        // SAFETY: the message pointer is valid until the next call.
                        unsafe { std::ffi::CStr::from_ptr(diagprec::ffi::library::dp_last_error_message()) }
                            .to_string_lossy()
                    );
                }
            }
        }
    }
}

#[test]
#[ignore = "run once per instruction set by every_export_respects_guard_pages_on_every_isa"]
fn guard_pages_one_isa() {
    sweep(elementwise, "elementwise", (0..=70).chain(LENGTHS));
    sweep(matrices, "matrices", (1..=24).chain(MATRIX_SIZES));
}

#[test]
fn every_export_respects_guard_pages_on_every_isa() {
    let exe = std::env::current_exe().unwrap();
    for isa in diagprec::Isa::available() {
        let out = Command::new(&exe)
            .args(["--ignored", "--exact", "guard_pages_one_isa", "--nocapture"])
            .env("DIAGPREC_ISA", isa.name())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "guard pages on {}: {}\n{}",
            isa.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("guard pages on {}: every export passed", isa.name());
    }
}
