//! Library-wide exports: version, status names, the last error message, threads, the ISA.

use super::{dp_status, guard};
use crate::dispatch::{self, Isa};
use std::ffi::c_char;

/// The library version, `"MAJOR.MINOR.PATCH"`. The ABI is stable within a major version.
#[no_mangle]
pub extern "C" fn dp_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version this header describes: a program built against a header whose
/// `DP_ABI_VERSION` differs from `dp_abi_version()` must not call the library.
pub const DP_ABI_VERSION: u32 = 1;

/// The ABI version of the loaded library (`DP_ABI_VERSION` of the header it was built with).
/// Compare it with `DP_ABI_VERSION` at start-up. Never fails.
#[no_mangle]
pub extern "C" fn dp_abi_version() -> u32 {
    DP_ABI_VERSION
}

/// The name of a status code (`"DP_ERR_LENGTH"`), or `"DP_UNKNOWN_STATUS"`. Never NULL.
#[no_mangle]
pub extern "C" fn dp_status_str(status: i32) -> *const c_char {
    let name: &'static str = match status {
        0 => "DP_OK\0",
        1 => "DP_ERR_NULL_POINTER\0",
        2 => "DP_ERR_LENGTH\0",
        3 => "DP_ERR_ALIASING\0",
        4 => "DP_ERR_INVALID_HYPERPARAMETER\0",
        5 => "DP_ERR_NON_FINITE\0",
        6 => "DP_ERR_PANIC\0",
        7 => "DP_ERR_INVALID_ARGUMENT\0",
        8 => "DP_ERR_ALLOCATION\0",
        _ => "DP_UNKNOWN_STATUS\0",
    };
    name.as_ptr().cast()
}

/// Why the last call on this thread failed ("" after a success). Never NULL; valid until the
/// next diagprec call on the same thread. Safe anywhere, thread-local destructors included
/// (where this thread's slot is already gone it returns "").
#[no_mangle]
pub extern "C" fn dp_last_error_message() -> *const c_char {
    super::last_error()
}

/// Sets the number of threads the kernels use, for the whole process: `0` is the default
/// (the environment variable `DIAGPREC_NUM_THREADS`, read once, else one per core; `RAYON_NUM_THREADS`
/// and `OMP_NUM_THREADS` are ignored), `1` runs every kernel on the calling thread with no pool
/// thread at all (the choice inside an OpenMP parallel region, or with several MPI ranks per
/// host), at most 1024. Results are bitwise the same for any count. Safe to call from any thread
/// and after `fork()` (a child starts its own pool on first use). Do not call it while another
/// thread is inside a diagprec call: that call keeps the old pool until it returns.
///
/// Returns `DP_OK`; `DP_ERR_INVALID_ARGUMENT` (more than 1024, or `DIAGPREC_NUM_THREADS` set to
/// something other than a count from 1 to 1024); `DP_ERR_ALLOCATION` (threads could not start).
#[no_mangle]
pub extern "C" fn dp_set_num_threads(n_threads: usize) -> dp_status {
    guard(|| dispatch::set_num_threads(n_threads))
}

/// Panics on purpose inside the panic boundary and returns what every export returns then,
/// `DP_ERR_PANIC`: lets a C test or a binding confirm that no panic unwinds into its code.
#[no_mangle]
pub extern "C" fn dp_check_panic_boundary() -> dp_status {
    guard(|| panic!("dp_check_panic_boundary: deliberate panic"))
}

/// The number of threads the kernels use (1 when they run on the caller's thread). Never fails.
#[no_mangle]
pub extern "C" fn dp_get_num_threads() -> usize {
    dispatch::num_threads()
}

/// The instruction set the kernels run on: "scalar", "avx2", "avx512" or "neon".
#[no_mangle]
pub extern "C" fn dp_isa_name() -> *const c_char {
    match Isa::detect().name() {
        "avx2" => "avx2\0",
        "avx512" => "avx512\0",
        "neon" => "neon\0",
        _ => "scalar\0",
    }
    .as_ptr()
    .cast()
}
