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
