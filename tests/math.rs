//! The vectorised `exp` and `x^p` of `kernels::math` against `reference::{exp, pow}`, on every
//! instruction set: over all exponents (a stride through every f32 bit pattern), every f32 whose
//! `exp` is subnormal, +-0, +-inf, NaN and tails of every length; and bitwise the same on every
//! instruction set.

mod common;

use common::boundary_lengths;
use diagprec::kernels::math::{exp_with, powf_with};
use diagprec::{reference, Isa};

/// The error of `ours` against `reference` in units of the f32 spacing at `reference` (for a
/// subnormal or zero reference: the smallest subnormal). Equal infinities, and NaN against NaN,
/// are 0; anything else non-finite is infinitely wrong.
fn ulp_error(ours: f32, reference: f64) -> f64 {
    if reference.is_nan() || ours.is_nan() {
        return if reference.is_nan() && ours.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let rounded = reference as f32;
    if rounded.is_infinite() || ours.is_infinite() {
        // The reference overflows f32 (or is infinite): only +-inf of the same sign is right,
        // except a reference within half an ulp of f32::MAX rounds to MAX.
        return if ours == rounded { 0.0 } else { f64::INFINITY };
    }
    let magnitude = reference.abs().max(f32::MIN_POSITIVE as f64);
    let unit = 2f64.powi(magnitude.log2().floor() as i32 - 23);
    (ours as f64 - reference).abs() / unit
}

/// Every `stride`-th f32 bit pattern (both signs), and the values at the edges of each range.
fn sweep(stride: u32) -> Vec<f32> {
    let mut out: Vec<f32> = (0..=u32::MAX / stride)
        .map(|k| f32::from_bits(k * stride))
        .collect();
    out.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::MAX,
        1.0,
        -1.0,
    ]);
    out
}

fn run_all(x: &[f32], f: impl Fn(Isa, &[f32], &mut [f32])) -> Vec<(Isa, Vec<f32>)> {
    Isa::available()
        .into_iter()
        .map(|isa| {
            let mut out = vec![0.0f32; x.len()];
            f(isa, x, &mut out);
            (isa, out)
        })
        .collect()
}

fn check(
    what: &str,
    x: &[f32],
    results: &[(Isa, Vec<f32>)],
    reference: impl Fn(f64) -> f64,
    bound: f64,
) -> f64 {
    let mut worst = 0.0f64;
    let scalar = &results[0].1;
    for (isa, out) in results {
        for (i, (&xi, &yi)) in x.iter().zip(out).enumerate() {
            let r = reference(xi as f64);
            let e = ulp_error(yi, r);
            worst = worst.max(e);
            assert!(
                e <= bound,
                "{what} {}: f({xi:e}) = {yi:e}, reference {r:e}: {e:.2} ulp > {bound}",
                isa.name()
            );
            assert_eq!(
                yi.to_bits(),
                scalar[i].to_bits(),
                "{what} {}: f({xi:e}) differs from the scalar backend",
                isa.name()
            );
        }
    }
    worst
}

#[test]
fn exp_is_within_two_ulp_everywhere_and_the_same_on_every_isa() {
    let x = sweep(997);
    let results = run_all(&x, |isa, x, out| exp_with(isa, x, out).unwrap());
    let worst = check("exp", &x, &results, reference::exp, 2.0);
    assert!(
        worst > 0.0,
        "a sweep this wide must meet some rounding error"
    );
}

#[test]
fn exp_with_subnormal_results_rounds_to_the_nearest_subnormal_or_next() {
    // Every f32 in [-104, -87.3]: exp is subnormal there (and rounds to 0 below ~-103.97).
    let lo = (-104.0f32).to_bits();
    let hi = (-87.3f32).to_bits();
    let x: Vec<f32> = (hi..=lo).map(f32::from_bits).collect();
    let results = run_all(&x, |isa, x, out| exp_with(isa, x, out).unwrap());
    for (isa, out) in &results {
        for (&xi, &yi) in x.iter().zip(out) {
            let r = reference::exp(xi as f64);
            let e = (yi as f64 - r).abs() / f32::from_bits(1) as f64;
            // Within one spacing of the smallest subnormal (the poly error is far below it,
            // the single rounding adds at most half of it).
            assert!(
                e <= 1.0,
                "exp {}: exp({xi:e}) = {yi:e}, reference {r:e}",
                isa.name()
            );
        }
    }
    // Some inputs really produce subnormals and some round to zero.
    let out = &results[0].1;
    assert!(out.iter().any(|&y| y > 0.0 && y < f32::MIN_POSITIVE));
    assert!(out.contains(&0.0));
}

#[test]
fn exp_special_values() {
    let x = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        88.72283,
        88.72284,
        -1000.0,
        1000.0,
    ];
    for isa in Isa::available() {
        let mut out = [0.0f32; 9];
        exp_with(isa, &x, &mut out).unwrap();
        assert!(out[0].is_nan(), "{}", isa.name());
        assert_eq!(out[1], f32::INFINITY, "{}", isa.name());
        assert_eq!(out[2], 0.0, "{}", isa.name());
        assert_eq!(out[3], 1.0, "{}", isa.name());
        assert_eq!(out[4], 1.0, "{}", isa.name());
        assert!(out[5].is_finite() && out[5] > 3.4e38, "{}", isa.name());
        assert_eq!(out[6], f32::INFINITY, "{}", isa.name());
        assert_eq!(out[7], 0.0, "{}", isa.name());
        assert_eq!(out[8], f32::INFINITY, "{}", isa.name());
    }
}

#[test]
fn exp_tails_of_every_length_run_the_body_formula() {
    for n in boundary_lengths() {
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 20.0).collect();
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; n];
            exp_with(isa, &x, &mut out).unwrap();
            for (i, (&xi, &yi)) in x.iter().zip(&out).enumerate() {
                let mut one = [0.0f32];
                exp_with(Isa::scalar(), &[xi], &mut one).unwrap();
                assert_eq!(yi.to_bits(), one[0].to_bits(), "n = {n}, [{i}]");
            }
        }
    }
    let mut short = [0.0f32; 2];
    assert!(exp_with(Isa::scalar(), &[1.0; 3], &mut short).is_err());
}

/// The powers of the GN step's tests and the report (and some large ones).
const POWERS: [f64; 12] = [
    -1.0, -0.5, -0.3, -0.25, 0.3, 0.5, 1.0, 2.0, -2.0, -3.7, 7.5, 0.0,
];

#[test]
fn pow_is_within_its_bound_for_every_power_and_the_same_on_every_isa() {
    // Non-negative inputs over every exponent, subnormal ones included.
    let x: Vec<f32> = sweep(9973)
        .into_iter()
        .filter(|v| v.is_nan() || *v >= 0.0)
        .collect();
    for p in POWERS {
        let results = run_all(&x, |isa, x, out| powf_with(isa, x, p, out).unwrap());
        // -0 is taken as +0 (the kernels' x = h + lambda is never -0).
        let bound = 1.5 + p.abs() / 2.0;
        let at = format!("pow p = {p}");
        let worst = check(&at, &x, &results, |v| reference::pow(v, p), bound);
        if p != 0.0 && p != 1.0 {
            assert!(
                worst > 0.0,
                "p = {p}: no rounding error at all is implausible"
            );
        }
    }
}

#[test]
fn pow_special_values() {
    let x = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NAN,
        -1.0,
        1.0,
        f32::from_bits(1),
        f32::MAX,
    ];
    for isa in Isa::available() {
        for p in [-0.3, 0.3, 0.0] {
            let mut out = [0.0f32; 8];
            powf_with(isa, &x, p, &mut out).unwrap();
            let at = format!("{} p = {p}", isa.name());
            let (zero, inf) = if p < 0.0 {
                (f32::INFINITY, 0.0)
            } else if p > 0.0 {
                (0.0, f32::INFINITY)
            } else {
                (1.0, 1.0)
            };
            assert_eq!(out[0], zero, "{at}");
            assert_eq!(out[1], zero, "{at}");
            assert_eq!(out[2], inf, "{at}");
            assert!(out[3].is_nan(), "{at}");
            assert!(out[4].is_nan(), "{at}: negative x");
            assert_eq!(out[5], 1.0, "{at}");
            for (i, &xi) in x.iter().enumerate().skip(6) {
                let e = ulp_error(out[i], reference::pow(xi as f64, p));
                assert!(e <= 2.2, "{at}: {xi:e}^p = {:e} ({e} ulp)", out[i]);
            }
        }
    }
    let mut out = [0.0f32; 1];
    assert!(powf_with(Isa::scalar(), &[1.0], f64::NAN, &mut out).is_err());
}

#[test]
fn pow_tails_of_every_length_run_the_body_formula() {
    for n in boundary_lengths() {
        let x: Vec<f32> = (0..n)
            .map(|i| (i as f32 * 0.61).cos().abs() * 30.0)
            .collect();
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; n];
            powf_with(isa, &x, -0.3, &mut out).unwrap();
            for (i, (&xi, &yi)) in x.iter().zip(&out).enumerate() {
                let mut one = [0.0f32];
                powf_with(Isa::scalar(), &[xi], -0.3, &mut one).unwrap();
                assert_eq!(yi.to_bits(), one[0].to_bits(), "n = {n}, [{i}]");
            }
        }
    }
}
