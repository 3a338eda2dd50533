//! Helpers shared by the integration tests: boundary lengths, seeded data, unaligned views,
//! error measures against f64 references.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Lengths around every SIMD width (1, 4, 8, 16 lanes): 0..=70, then larger odd sizes.
pub fn boundary_lengths() -> Vec<usize> {
    let mut lens: Vec<usize> = (0..=70).collect();
    lens.extend([127, 128, 129, 255, 1000, 1023, 4097, 16_385, 70_001]);
    lens
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Values `sign * 10^u`, `u` uniform in `[lo_exp, hi_exp]`: many magnitudes at once.
pub fn log_uniform(rng: &mut StdRng, n: usize, lo_exp: f32, hi_exp: f32, signed: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let mag = 10f32.powf(rng.random_range(lo_exp..=hi_exp));
            if signed && rng.random_bool(0.5) {
                -mag
            } else {
                mag
            }
        })
        .collect()
}

/// A buffer whose usable part starts `offset` floats past an allocation boundary, so kernels
/// see unaligned starts.
pub struct Unaligned {
    storage: Vec<f32>,
    offset: usize,
    len: usize,
}

impl Unaligned {
    pub fn new(values: &[f32], offset: usize) -> Self {
        let mut storage = vec![f32::NAN; values.len() + offset + 1];
        storage[offset..offset + values.len()].copy_from_slice(values);
        Self {
            storage,
            offset,
            len: values.len(),
        }
    }
    pub fn get(&self) -> &[f32] {
        &self.storage[self.offset..self.offset + self.len]
    }
    pub fn get_mut(&mut self) -> &mut [f32] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
    /// The guard elements around the buffer are untouched.
    pub fn guards_intact(&self) -> bool {
        self.storage[..self.offset].iter().all(|x| x.is_nan())
            && self.storage[self.offset + self.len..]
                .iter()
                .all(|x| x.is_nan())
    }
}

pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// `|ours - reference| / (ulp of scale)`: the error in units of f32 rounding at `scale`.
pub fn ulps(ours: f32, reference: f64, scale: f64) -> f64 {
    let unit = (scale.abs().max(f32::MIN_POSITIVE as f64)) * f32::EPSILON as f64;
    (ours as f64 - reference).abs() / unit
}

/// Bit patterns, for bitwise comparisons that treat NaN == NaN.
pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Lengths around each register or block width `L` in `units`: 0, 1, L - 1, L, L + 1, 2L + 1,
/// 4L + 3; then a large length (past the kernels' 4096-element alignment peel and their
/// 16384-element thread blocks) and three seeded random ones below 20000. Sorted, no repeats.
pub fn lengths_around(units: &[usize], seed: u64) -> Vec<usize> {
    let mut lens = vec![0, 1, 70_001];
    for &l in units {
        lens.extend([l - 1, l, l + 1, 2 * l + 1, 4 * l + 3]);
    }
    let mut r = rng(seed);
    lens.extend((0..3).map(|_| r.random_range(2..20_000)));
    lens.sort_unstable();
    lens.dedup();
    lens
}

/// f32 lanes of the scalar, AVX2 and AVX-512 backends and the 8-bit encoder's register groups
/// (2 and 4 AVX-512 registers), then the 256-element chunk (the quantization block).
pub const LANE_UNITS: [usize; 6] = [4, 8, 16, 32, 64, 256];

/// `values` at `offset` elements past the start of a fresh allocation (an unaligned start for
/// 8- and 16-bit buffers; [`Unaligned`] is the f32 version).
pub fn shifted<T: Copy + Default>(values: &[T], offset: usize) -> Vec<T> {
    let mut v = vec![T::default(); offset];
    v.extend_from_slice(values);
    v
}

/// `f()` run on a worker of a new rayon pool of `own` threads, for `own` in
/// `[threads, threads + 1]`: called from a caller's own pool of the crate's size (whose threads
/// then do the work) and of another size. Each result with its `own`.
pub fn from_own_pools<R: Send>(threads: usize, f: impl Fn() -> R + Sync) -> Vec<(usize, R)> {
    [threads, threads + 1]
        .into_iter()
        .map(|own| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(own)
                .build()
                .unwrap();
            (own, pool.install(&f))
        })
        .collect()
}
