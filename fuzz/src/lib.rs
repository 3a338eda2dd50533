//! The input model shared by the fuzz targets: every buffer of a call lives in one arena, placed
//! by offset and length, so that NULL, partial overlap, misalignment, shared gradients and wrong
//! counts all occur; hyperparameters come from a table of awkward values (zeros, subnormals,
//! values that overflow or vanish in f32, infinities, NaN, `1 - 2^-53`) or near typical ones;
//! steps from `{0, 1, 2, ..., 2^64 - 1}`.
//!
//! After every call [`Call::finish`] checks the contract: never `DP_ERR_PANIC`; the last-error
//! message is empty exactly when the status is `DP_OK`; on any error no byte of the arena (nor
//! of any output the call could write) changed.

use diagprec::ffi::dp_status;
use std::ffi::CStr;

/// Reads the fuzzer's bytes as choices; past the end every choice is 0.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Hyperparameter values that have broken numerical libraries.
pub const AWKWARD: [f64; 24] = [
    0.0,
    -0.0,
    5e-324,
    1e-46,
    1e-39,
    1.1754943508222875e-38,
    1e-8,
    1e-3,
    0.5,
    0.9,
    0.999,
    1.0 - 1.0 / 9007199254740992.0,
    1.0,
    2.0,
    -1.0,
    -0.5,
    -0.3,
    1e30,
    3.4028234663852886e38,
    1e39,
    1e300,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
];

/// Step counts, the edges first.
pub const STEPS: [u64; 8] = [0, 1, 2, 3, 10, 1 << 40, u64::MAX - 1, u64::MAX];

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.u32() as usize) % n
    }

    /// Mostly `typical` (or close to it), sometimes an awkward value.
    pub fn hyper(&mut self, typical: f64) -> f64 {
        match self.byte() % 8 {
            0..=3 => typical,
            4 => typical * (1.0 + f64::from(self.byte()) / 64.0),
            _ => AWKWARD[self.below(AWKWARD.len())],
        }
    }

    /// A mode or flag value: mostly valid (`0..valid`), sometimes any `u32`.
    pub fn mode(&mut self, valid: u32) -> u32 {
        match self.byte() % 8 {
            0 => self.u32(),
            1 => valid,
            _ => self.u32() % valid.max(1),
        }
    }

    pub fn step(&mut self) -> u64 {
        match self.byte() % 4 {
            0 => self.u64(),
            _ => STEPS[self.below(STEPS.len())],
        }
    }

    /// An element count around `typical`: mostly it, sometimes off by one, zero, or huge.
    pub fn count(&mut self, typical: usize) -> usize {
        match self.byte() % 16 {
            0 => 0,
            1 => typical.saturating_add(1),
            2 => typical.saturating_sub(1),
            3 => usize::MAX / 2 + self.below(7),
            4 => self.below(64),
            _ => typical,
        }
    }
}

/// The bytes every buffer of a call is placed in, 64-byte aligned, filled from the input.
pub struct Arena {
    words: Vec<u64>,
}

/// The arena's size in bytes.
pub const ARENA_BYTES: usize = 1 << 14;

impl Arena {
    /// Fills the arena: with small finite floats (most runs, so that calls succeed and results
    /// can be compared), or with the input's raw bytes (NaN, infinities, huge values).
    pub fn new(input: &mut Input<'_>) -> Self {
        let mut words = vec![0u64; ARENA_BYTES / 8 + 8];
        let raw = input.byte() % 4 == 0;
        let seed = input.u64();
        let mut x = seed | 1;
        for w in words.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *w = if raw {
                x
            } else {
                // Two floats in [-2, 2) with 16 random bits each.
                let f = |b: u64| ((b & 0xffff) as f32 / 16384.0 - 2.0).to_bits() as u64;
                f(x) | (f(x >> 16) << 32)
            };
        }
        Self { words }
    }

    pub fn base(&mut self) -> *mut u8 {
        let p = self.words.as_mut_ptr().cast::<u8>();
        let skip = p.align_offset(64);
        // SAFETY: the Vec has 64 spare bytes past ARENA_BYTES, so base + ARENA_BYTES stays inside.
        unsafe { p.add(skip) }
    }

    pub fn bytes(&mut self) -> Vec<u8> {
        let base = self.base();
        // SAFETY: base..base + ARENA_BYTES lies inside the Vec (see `base`).
        unsafe { std::slice::from_raw_parts(base, ARENA_BYTES) }.to_vec()
    }

    /// A buffer argument of `len` elements of `T`: NULL, the address `usize::MAX - 7` (when the
    /// range from it wraps the address space),
    /// a misaligned address, or an aligned one in the arena where `len` elements fit (placed
    /// anywhere, so buffers overlap at random). Never memory outside the arena, except the
    /// wrapping address, which the library must refuse before touching it.
    pub fn buffer<T>(&mut self, input: &mut Input<'_>, len: usize) -> *mut T {
        let size = std::mem::size_of::<T>();
        let bytes = len.checked_mul(size);
        let wraps = bytes.is_none_or(|b| b > 7);
        match input.byte() % 16 {
            0 => return std::ptr::null_mut(),
            // Only where the range really wraps: a short range there is merely memory that is
            // not the caller's, which no library can detect.
            1 if wraps => return (usize::MAX - 7) as *mut T,
            _ => {}
        }
        let Some(bytes) = bytes.filter(|&b| b <= ARENA_BYTES) else {
            return std::ptr::null_mut();
        };
        let room = ARENA_BYTES - bytes;
        let misaligned = size > 1 && input.byte() % 8 == 0;
        let mut offset = input.below(room / size + 1) * size;
        if misaligned {
            offset = (offset + 1).min(room);
        }
        // SAFETY: offset <= room, so [offset, offset + bytes) lies inside the arena.
        unsafe { self.base().add(offset).cast() }
    }
}

/// The last-error message of this thread.
pub fn last_error() -> String {
    // SAFETY: dp_last_error_message never returns NULL and its string lives until the next call.
    unsafe { CStr::from_ptr(diagprec::ffi::library::dp_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// The state of a call's memory before it ran.
pub struct Call {
    arena: Vec<u8>,
}

impl Call {
    pub fn start(arena: &mut Arena) -> Self {
        Self {
            arena: arena.bytes(),
        }
    }

    /// Checks the contract after the call returned `status`; `outputs_unchanged` says whether
    /// the call's out-parameters outside the arena (handles, norms) kept their values.
    pub fn finish(self, arena: &mut Arena, status: dp_status, outputs_unchanged: bool) {
        assert_ne!(status, dp_status::DP_ERR_PANIC, "panic: {}", last_error());
        let message = last_error();
        assert_eq!(
            status == dp_status::DP_OK,
            message.is_empty(),
            "status {status:?} with message {message:?}"
        );
        if status != dp_status::DP_OK {
            assert!(
                self.arena == arena.bytes(),
                "{status:?} ({message}) but the arena changed"
            );
            assert!(
                outputs_unchanged,
                "{status:?} ({message}) but an output changed"
            );
        }
    }
}

/// A config struct's bytes placed at an offset of 0..8 bytes (misaligned on purpose), sometimes
/// with a wrong `struct_size`; returns the pointer to pass.
pub struct Unaligned {
    bytes: Vec<u8>,
    offset: usize,
}

impl Unaligned {
    pub fn new<T: Copy>(input: &mut Input<'_>, value: T) -> Self {
        let size = std::mem::size_of::<T>();
        let offset = input.below(8);
        let mut bytes = vec![0u8; size + 16];
        // SAFETY: bytes has room for size bytes at offset; T is plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&value as *const T).cast::<u8>(),
                bytes.as_mut_ptr().add(offset),
                size,
            )
        };
        if input.byte() % 16 == 0 {
            // A struct_size from another version (the first field, a size_t).
            let wrong = (input.below(4) * 8) as u64;
            bytes[offset..offset + 8].copy_from_slice(&wrong.to_le_bytes());
        }
        Self { bytes, offset }
    }

    pub fn ptr<T>(&self) -> *const T {
        self.bytes[self.offset..].as_ptr().cast()
    }
}

/// Whether `got` (f32) agrees with the f64 reference `want` within `ulps` f32 ulps of `scale`
/// (the magnitude of the terms that formed it), or `want` itself is outside f32's range.
pub fn close(got: f32, want: f64, scale: f64, ulps: f64) -> bool {
    if !want.is_finite() || want.abs() > f32::MAX as f64 || scale > f32::MAX as f64 {
        return true;
    }
    let tol = ulps * f64::from(f32::EPSILON) * scale.max(want.abs()) + 1e-37;
    (f64::from(got) - want).abs() <= tol
}

/// The f32 values at `ptr` (a buffer placed in the arena at `base`) before a call, as f64, read
/// from the arena's snapshot: the inputs a reference computation starts from.
pub fn before(snapshot: &[u8], base: *mut u8, ptr: *const f32, len: usize) -> Vec<f64> {
    let start = ptr as usize - base as usize;
    snapshot[start..start + 4 * len]
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect()
}
