//! Mixed-precision Adam, compressed state, global norm and the two-pass clipped step: every ISA
//! against references, rounding statistics, thread-count independence, bad input, convergence.

mod common;

use common::{
    bits, boundary_lengths, lengths_around, log_uniform, rng, shifted, to_f64, ulps, Unaligned,
    LANE_UNITS,
};
use diagprec::*;
use half::{bf16, f16};
use rand::Rng;

fn configs() -> Vec<(&'static str, AdamConfig)> {
    vec![
        ("adam", AdamConfig::default()),
        (
            "adam_l2",
            AdamConfig {
                lr: 3e-3,
                weight_decay: 0.05,
                ..AdamConfig::default()
            },
        ),
        ("adamw_scaled", {
            let mut c = AdamConfig::adamw(1e-2);
            c.inv_grad_scale = 1.0 / 1024.0;
            c.maximize = true;
            c
        }),
    ]
}

fn to_half(format: HalfFormat, x: f32) -> u16 {
    match format {
        HalfFormat::Bf16 => bf16::from_f32(x).to_bits(),
        HalfFormat::F16 => f16::from_f32(x).to_bits(),
    }
}

fn from_half(format: HalfFormat, h: u16) -> f32 {
    match format {
        HalfFormat::Bf16 => bf16::from_bits(h).to_f32(),
        HalfFormat::F16 => f16::from_bits(h).to_f32(),
    }
}

/// Random f32 bit patterns (every class: zeros, subnormals, normals, infinities, NaN) plus the
/// values around every f16 boundary.
fn awkward_floats(n: usize) -> Vec<f32> {
    let mut r = rng(7);
    let mut v: Vec<f32> = (0..n).map(|_| f32::from_bits(r.random())).collect();
    for e in -30..=17 {
        let x = 2f32.powi(e);
        v.extend([
            x,
            x * 1.5,
            x * (1.0 + 1.0 / 2048.0),
            x * (1.0 + 3.0 / 4096.0),
            -x,
        ]);
    }
    v.extend([
        0.0,
        -0.0,
        65504.0,
        65519.0,
        65520.0,
        65536.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN_POSITIVE,
        5.96e-8,
        2.98e-8,
        2.99e-8,
    ]);
    v
}

#[test]
fn nearest_even_conversion_equals_the_half_crate_on_every_isa() {
    let values = awkward_floats(200_003);
    for isa in Isa::available() {
        for format in [HalfFormat::Bf16, HalfFormat::F16] {
            let mut out = vec![0u16; values.len()];
            round_to_half(isa, format, &values, &mut out, Rounding::NearestEven, 1).unwrap();
            for (&x, &h) in values.iter().zip(&out) {
                let want = to_half(format, x);
                if x.is_nan() {
                    assert!(from_half(format, h).is_nan(), "{format:?} {x}: {h:#x}");
                    assert_eq!(h & 0x8000, want & 0x8000);
                } else {
                    assert_eq!(
                        h,
                        want,
                        "{} {format:?} {x:e}: {h:#x} vs {want:#x}",
                        isa.name()
                    );
                }
            }
        }
    }
}

#[test]
fn widening_is_exact_for_every_code_on_every_isa() {
    // Every 16-bit pattern (zeros, subnormals, normals, infinities, NaN), at an odd offset so
    // the tail and a misaligned start are covered too.
    let codes: Vec<u16> = (0..=u16::MAX).chain(0..7).collect();
    for isa in Isa::available() {
        for format in [HalfFormat::Bf16, HalfFormat::F16] {
            let mut out = vec![0f32; codes.len() + 1];
            widen_half(isa, format, &codes, &mut out[1..]).unwrap();
            for (&h, &x) in codes.iter().zip(&out[1..]) {
                let want = from_half(format, h);
                let at = format!("{} {format:?} {h:#06x}", isa.name());
                if want.is_nan() {
                    assert!(x.is_nan(), "{at}: {x}");
                    assert_eq!(x.is_sign_negative(), want.is_sign_negative(), "{at}");
                } else {
                    assert_eq!(x.to_bits(), want.to_bits(), "{at}: {x:e} vs {want:e}");
                }
            }
        }
    }
    let mut short = [0f32; 2];
    assert!(widen_half(Isa::scalar(), HalfFormat::F16, &[0; 3], &mut short).is_err());
}

#[test]
fn stochastic_rounding_is_unbiased_and_within_one_ulp() {
    // Tolerance: one rounding has standard deviation <= ulp / 2, so the mean of N = 20000
    // draws is within 6 sigma = 6 * 0.5 / sqrt(N) ~= 0.021 ulp of the value.
    let n = 20_000;
    let cases = [
        (HalfFormat::Bf16, 1.0f32 + 0.3 / 128.0),
        (HalfFormat::Bf16, -3.7e-5),
        (HalfFormat::F16, 1.0 + 0.71 / 1024.0),
        (HalfFormat::F16, 3.3e-7), // f16 subnormal
        (HalfFormat::F16, -1234.567),
    ];
    for isa in Isa::available() {
        for (format, x) in cases {
            let values = vec![x; n];
            let mut out = vec![0u16; n];
            round_to_half(
                isa,
                format,
                &values,
                &mut out,
                Rounding::Stochastic { seed: 9 },
                5,
            )
            .unwrap();
            let down = to_half(format, x);
            let lo = from_half(format, down) as f64;
            // The neighbour on the other side of x.
            let other = if (lo - x as f64).abs() == 0.0 {
                lo
            } else if (lo.abs()) < (x as f64).abs() {
                from_half(format, down + 1) as f64
            } else {
                from_half(format, down - 1) as f64
            };
            let ulp = (other - lo).abs().max(f64::MIN_POSITIVE);
            let mut sum = 0.0;
            for &h in &out {
                let y = from_half(format, h) as f64;
                assert!(
                    y == lo || y == other,
                    "{format:?} {x}: drew {y}, not {lo} or {other}"
                );
                sum += y;
            }
            let bias = (sum / n as f64 - x as f64).abs() / ulp;
            assert!(
                bias < 0.021,
                "{} {format:?} {x}: bias {bias} ulp",
                isa.name()
            );
        }
    }
}

fn widen(format: HalfFormat, g: &[u16]) -> Vec<f32> {
    g.iter().map(|&h| from_half(format, h)).collect()
}

#[test]
fn master_step_equals_the_f32_step_then_rounding_on_every_isa() {
    let mut r = rng(11);
    for format in [HalfFormat::Bf16, HalfFormat::F16] {
        for (name, cfg) in configs() {
            for len in boundary_lengths() {
                let master0 = log_uniform(&mut r, len, -3.0, 1.0, true);
                let grad: Vec<u16> = log_uniform(&mut r, len, -4.0, 0.0, true)
                    .iter()
                    .map(|&x| to_half(format, x))
                    .collect();
                let m0 = log_uniform(&mut r, len, -4.0, 0.0, true);
                let v0 = log_uniform(&mut r, len, -8.0, 0.0, false);
                let gw = widen(format, &grad);
                // The f32 kernel (itself tested against the f64 reference) on the widened gradient.
                let (mut ep, mut em, mut ev) = (master0.clone(), m0.clone(), v0.clone());
                adam_step_with(
                    Isa::scalar(),
                    Par::Seq,
                    &cfg,
                    3,
                    AdamTensor {
                        param: &mut ep,
                        grad: &gw,
                        exp_avg: &mut em,
                        exp_avg_sq: &mut ev,
                        max_exp_avg_sq: None,
                    },
                )
                .unwrap();
                // The f64 reference: master within 10 ulp of |theta| + |update|.
                let mut rp: Vec<f64> = master0.iter().map(|&x| x as f64).collect();
                let gd: Vec<f64> = gw.iter().map(|&x| x as f64).collect();
                let mut rm: Vec<f64> = m0.iter().map(|&x| x as f64).collect();
                let mut rv: Vec<f64> = v0.iter().map(|&x| x as f64).collect();
                reference::adam_step(&cfg, 3, &mut rp, &gd, &mut rm, &mut rv, None);
                for isa in Isa::available() {
                    for rounding in [Rounding::NearestEven, Rounding::Stochastic { seed: 3 }] {
                        let (mut p, mut m, mut v) = (master0.clone(), m0.clone(), v0.clone());
                        let mut p16 = vec![0u16; len];
                        adam_step_master_with(
                            isa,
                            Par::Seq,
                            format,
                            &cfg,
                            3,
                            MasterTensor {
                                master: &mut p,
                                param: &mut p16,
                                grad: &grad,
                                exp_avg: &mut m,
                                exp_avg_sq: &mut v,
                            },
                            rounding,
                        )
                        .unwrap();
                        let at = format!("{format:?} {name} {} len {len} {rounding:?}", isa.name());
                        assert_eq!(bits(&p), bits(&ep), "{at}: master");
                        assert_eq!(bits(&m), bits(&em), "{at}: exp_avg");
                        assert_eq!(bits(&v), bits(&ev), "{at}: exp_avg_sq");
                        for i in 0..len {
                            let update = (rp[i] - master0[i] as f64).abs();
                            let e = ulps(p[i], rp[i], (master0[i] as f64).abs() + update);
                            assert!(e <= 10.0, "{at}: master[{i}] off by {e} ulp");
                            let want = to_half(format, p[i]);
                            match rounding {
                                Rounding::NearestEven => {
                                    assert_eq!(p16[i], want, "{at}: param[{i}]")
                                }
                                Rounding::Stochastic { .. } => {
                                    // One of the two neighbours: within one 16-bit ulp.
                                    let d = (p16[i] as i32 - want as i32).abs();
                                    assert!(d <= 1, "{at}: param[{i}] {:#x} vs {want:#x}", p16[i]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn stochastic_paths_are_identical_for_any_isa_and_thread_count() {
    let n = 100_003;
    let mut r = rng(5);
    let cfg = AdamConfig::adamw(1e-3);
    let master0 = log_uniform(&mut r, n, -3.0, 1.0, true);
    let grad: Vec<u16> = log_uniform(&mut r, n, -4.0, 0.0, true)
        .iter()
        .map(|&x| to_half(HalfFormat::Bf16, x))
        .collect();
    let gw = widen(HalfFormat::Bf16, &grad);
    let run = |isa: Isa, par: Par| {
        let (mut p, mut m, mut v) = (master0.clone(), vec![0.0; n], vec![0.0; n]);
        let mut p16 = vec![0u16; n];
        let (mut q, mut m16, mut v16) = (master0.clone(), vec![0u16; n], vec![0u16; n]);
        for step in 1..=3 {
            let t = MasterTensor {
                master: &mut p,
                param: &mut p16,
                grad: &grad,
                exp_avg: &mut m,
                exp_avg_sq: &mut v,
            };
            adam_step_master_with(
                isa,
                par,
                HalfFormat::Bf16,
                &cfg,
                step,
                t,
                Rounding::Stochastic { seed: 77 },
            )
            .unwrap();
            let t = Bf16StateTensor {
                param: &mut q,
                grad: &gw,
                exp_avg: &mut m16,
                exp_avg_sq: &mut v16,
            };
            adam_step_bf16_state_with(isa, par, &cfg, step, 77, t).unwrap();
        }
        (bits(&p), p16, bits(&q), m16, v16)
    };
    let expected = run(Isa::scalar(), Par::Seq);
    for isa in Isa::available() {
        assert!(
            run(isa, Par::Seq) == expected,
            "{} differs from scalar",
            isa.name()
        );
        for threads in [1, 2, 3] {
            set_num_threads(threads).unwrap();
            assert!(run(isa, Par::Pool) == expected, "{threads} threads differ");
        }
    }
    set_num_threads(0).unwrap();
}

#[test]
fn bf16_state_step_matches_the_f64_reference() {
    // m, v: the reference from the same (decoded) state, within one bf16 ulp (2^-7 relative,
    // stochastic rounding) plus 4 f32 ulp; theta: within 8 f32 ulp of |theta| + |update|, as the
    // f32 step (theta is computed before m, v are rounded).
    let mut r = rng(12);
    for (name, cfg) in configs() {
        for len in boundary_lengths() {
            let p0 = log_uniform(&mut r, len, -3.0, 1.0, true);
            let g = log_uniform(&mut r, len, -4.0, 0.0, true);
            let m0: Vec<u16> = log_uniform(&mut r, len, -4.0, 0.0, true)
                .iter()
                .map(|&x| to_half(HalfFormat::Bf16, x))
                .collect();
            let v0: Vec<u16> = log_uniform(&mut r, len, -8.0, 0.0, false)
                .iter()
                .map(|&x| to_half(HalfFormat::Bf16, x))
                .collect();
            let mut rp: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
            let gd: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            let mut rm: Vec<f64> = widen(HalfFormat::Bf16, &m0)
                .iter()
                .map(|&x| x as f64)
                .collect();
            let mut rv: Vec<f64> = widen(HalfFormat::Bf16, &v0)
                .iter()
                .map(|&x| x as f64)
                .collect();
            reference::adam_step(&cfg, 2, &mut rp, &gd, &mut rm, &mut rv, None);
            for isa in Isa::available() {
                let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                adam_step_bf16_state_with(
                    isa,
                    Par::Seq,
                    &cfg,
                    2,
                    1,
                    Bf16StateTensor {
                        param: &mut p,
                        grad: &g,
                        exp_avg: &mut m,
                        exp_avg_sq: &mut v,
                    },
                )
                .unwrap();
                let at = format!("{name} {} len {len}", isa.name());
                for i in 0..len {
                    let update = (rp[i] - p0[i] as f64).abs();
                    let e = ulps(p[i], rp[i], (p0[i] as f64).abs() + update);
                    assert!(e <= 10.0, "{at}: param[{i}] off by {e} ulp");
                    let mi = from_half(HalfFormat::Bf16, m[i]) as f64;
                    assert!(
                        (mi - rm[i]).abs() <= rm[i].abs() * (1.0 / 128.0 + 1e-6),
                        "{at}: m[{i}] {mi} vs {}",
                        rm[i]
                    );
                    let vi = from_half(HalfFormat::Bf16, v[i]) as f64;
                    assert!(
                        (vi - rv[i]).abs() <= rv[i] * (1.0 / 128.0 + 1e-6),
                        "{at}: v[{i}] {vi} vs {}",
                        rv[i]
                    );
                }
            }
        }
    }
}

#[test]
fn eight_bit_round_trip_error_is_bounded_per_block() {
    // Bound (module docs): |x - decode(encode(x))| <= max(|x| / 16, 2^-14 * absmax) for m,
    // max(v / 16, 2^-30 * absmax) for v, with a 1e-6 relative slack for the scaling multiply.
    let mut r = rng(21);
    for len in [1usize, 7, 255, 256, 257, 1000, 4097] {
        let m = log_uniform(&mut r, len, -9.0, 1.0, true);
        let v = log_uniform(&mut r, len, -14.0, 2.0, false);
        for isa in Isa::available() {
            for (moment, x, floor) in [
                (Moment::ExpAvg, &m, 2f64.powi(-14)),
                (Moment::ExpAvgSq, &v, 2f64.powi(-30)),
            ] {
                let mut codes = vec![0u8; len];
                let mut scales = vec![0f32; quant_scales_len(len)];
                quantize_state(isa, moment, x, &mut codes, &mut scales).unwrap();
                // No subnormal code (exponent field 0 with a fraction) is ever written.
                for &c in &codes {
                    let magnitude = if moment == Moment::ExpAvg {
                        c & 0x7f
                    } else {
                        c
                    };
                    assert!(magnitude == 0 || magnitude >= 8, "{moment:?}: code {c:#x}");
                }
                let mut back = vec![0f32; len];
                dequantize_state(isa, moment, &codes, &scales, &mut back).unwrap();
                for (b, block) in x.chunks(QUANT_BLOCK).enumerate() {
                    let absmax = block.iter().fold(0f32, |a, &y| a.max(y.abs())) as f64;
                    assert_eq!(scales[b] as f64, absmax);
                    for (j, &y) in block.iter().enumerate() {
                        let i = b * QUANT_BLOCK + j;
                        let err = (back[i] as f64 - y as f64).abs();
                        let bound = (y.abs() as f64 / 16.0).max(floor * absmax) * (1.0 + 1e-6);
                        assert!(
                            err <= bound,
                            "{moment:?} len {len} [{i}]: {y} -> {}",
                            back[i]
                        );
                        assert_eq!(
                            back[i].is_sign_negative() && back[i] != 0.0,
                            y < 0.0 && back[i] != 0.0
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn eight_bit_encoding_follows_the_specification_on_every_isa() {
    // Every pattern of the top 16 bits (which decide the code) up to 1.0, with low halves at the
    // rounding edges, both signs for m, -0.0 and subnormals for v; blocks of 256 open with 1.0 so
    // the scale is 1 and the code is that of the value itself.
    let lows = [0u32, 1, 0x7fff, 0x8000, 0xffff];
    let magnitudes: Vec<f32> = (0..=0x3f80u32)
        .flat_map(|top| lows.map(|low| f32::from_bits(top << 16 | low)))
        .filter(|&x| x <= 1.0)
        .collect();
    for moment in [Moment::ExpAvg, Moment::ExpAvgSq] {
        let mut x: Vec<f32> = magnitudes.clone();
        match moment {
            Moment::ExpAvg => x.extend(magnitudes.iter().map(|&y| -y)),
            Moment::ExpAvgSq => {
                x.insert(0, -0.0);
                x.push(-0.0);
            }
        }
        let values: Vec<f32> = x
            .chunks(QUANT_BLOCK - 1)
            .flat_map(|block| std::iter::once(1.0).chain(block.iter().copied()))
            .collect();
        let want: Vec<u8> = values
            .iter()
            .map(|&y| reference::quant_code(moment, y))
            .collect();
        for isa in Isa::available() {
            // From an odd offset (a misaligned start); the last block ends in a partial register.
            let shifted: Vec<f32> = std::iter::once(0.0).chain(values.iter().copied()).collect();
            let mut codes = vec![0u8; values.len()];
            let mut scales = vec![0f32; quant_scales_len(values.len())];
            quantize_state(isa, moment, &shifted[1..], &mut codes, &mut scales).unwrap();
            assert!(scales.iter().all(|&s| s == 1.0));
            for (i, (&c, &w)) in codes.iter().zip(&want).enumerate() {
                let y = values[i];
                assert_eq!(c, w, "{} {moment:?} {y:e} ({:#x})", isa.name(), y.to_bits());
            }
        }
    }
}

/// Block scales whose decoded values are normal, subnormal or huge (up to `f32::MAX`).
const AWKWARD_SCALES: [f32; 9] = [
    1.0,
    3.7e-3,
    0.618,
    1e-38,
    1e-44,
    7.0e4,
    5.0e9,
    3.0e38,
    f32::MAX,
];

#[test]
fn eight_bit_decoding_is_the_code_value_times_the_scale_rounded_once() {
    // Every code, with scales whose results are normal, subnormal or huge: the decoder (an exact
    // rebias by a power of two, then the scale) must give the correctly rounded product of the
    // exact code value and the scale.
    let codes: Vec<u8> = (0..=255).collect();
    let scales = AWKWARD_SCALES;
    for isa in Isa::available() {
        for moment in [Moment::ExpAvg, Moment::ExpAvgSq] {
            for &scale in &scales {
                let mut out = vec![0f32; 256];
                dequantize_state(isa, moment, &codes, &[scale], &mut out).unwrap();
                for (&c, &x) in codes.iter().zip(&out) {
                    let want = (reference::quant_code_value(moment, c) * scale as f64) as f32;
                    assert_eq!(
                        x.to_bits(),
                        want.to_bits(),
                        "{} {moment:?} code {c:#04x} scale {scale:e}: {x:e} != {want:e}",
                        isa.name()
                    );
                }
            }
        }
    }
}

/// 8-bit optimizer state: codes and scales of `m`, then of `v`.
type QuantState = (Vec<u8>, Vec<f32>, Vec<u8>, Vec<f32>);

/// Parameters, `m` codes, `m` scales, `v` codes, `v` scales; floats as bits.
type StepBits = (Vec<u32>, Vec<u8>, Vec<u32>, Vec<u8>, Vec<u32>);

/// One 8-bit-state step on `isa` (one thread) from copies of `p0` and `state`: the new
/// parameters and state, floats as bits so that results compare exactly.
fn step_8bit(
    isa: Isa,
    cfg: &AdamConfig,
    step: u64,
    p0: &[f32],
    g: &[f32],
    state: &QuantState,
) -> StepBits {
    let mut p = p0.to_vec();
    let (mut mc, mut ms, mut vc, mut vs) = state.clone();
    adam_step_8bit_state_with(
        isa,
        Par::Seq,
        cfg,
        step,
        QuantStateTensor {
            param: &mut p,
            grad: g,
            exp_avg_codes: &mut mc,
            exp_avg_scales: &mut ms,
            exp_avg_sq_codes: &mut vc,
            exp_avg_sq_scales: &mut vs,
        },
    )
    .unwrap();
    (bits(&p), mc, bits(&ms), vc, bits(&vs))
}

#[test]
fn eight_bit_step_is_identical_on_every_isa_for_every_code_and_scale() {
    // The step's own decoder (AVX-512 folds the rebias into the scale where the product is
    // finite and decodes as it loads) against the scalar one: every code a step can meet, in
    // blocks whose scales give normal, subnormal and huge values, one block per scale.
    let scales = AWKWARD_SCALES;
    let len = scales.len() * QUANT_BLOCK - 5;
    let mut r = rng(27);
    let p0 = log_uniform(&mut r, len, -3.0, 1.0, true);
    let g = log_uniform(&mut r, len, -4.0, 0.0, true);
    // m: both signs of every magnitude up to 1.0 (120); v: every code up to 1.0 (248).
    let mc0: Vec<u8> = (0..len)
        .map(|i| ((i * 7) % 121) as u8 | (i % 2 * 0x80) as u8)
        .collect();
    let vc0: Vec<u8> = (0..len).map(|i| ((i * 5) % 249) as u8).collect();
    let state = (mc0, scales.to_vec(), vc0, scales.to_vec());
    for (name, cfg) in configs() {
        let expected = step_8bit(Isa::scalar(), &cfg, 2, &p0, &g, &state);
        for isa in Isa::available() {
            let got = step_8bit(isa, &cfg, 2, &p0, &g, &state);
            assert!(
                got == expected,
                "{name} {}: differs from scalar",
                isa.name()
            );
        }
    }
}

#[test]
fn eight_bit_step_matches_the_reference_on_the_decoded_state() {
    let mut r = rng(31);
    for (name, cfg) in configs() {
        for len in boundary_lengths() {
            let p0 = log_uniform(&mut r, len, -3.0, 1.0, true);
            let g = log_uniform(&mut r, len, -4.0, 0.0, true);
            let (mut mc0, mut ms0) = (vec![0u8; len], vec![0f32; quant_scales_len(len)]);
            let (mut vc0, mut vs0) = (mc0.clone(), ms0.clone());
            quantize_state(
                Isa::scalar(),
                Moment::ExpAvg,
                &log_uniform(&mut r, len, -4.0, 0.0, true),
                &mut mc0,
                &mut ms0,
            )
            .unwrap();
            quantize_state(
                Isa::scalar(),
                Moment::ExpAvgSq,
                &log_uniform(&mut r, len, -8.0, 0.0, false),
                &mut vc0,
                &mut vs0,
            )
            .unwrap();
            let mut md = vec![0f32; len];
            let mut vd = vec![0f32; len];
            dequantize_state(Isa::scalar(), Moment::ExpAvg, &mc0, &ms0, &mut md).unwrap();
            dequantize_state(Isa::scalar(), Moment::ExpAvgSq, &vc0, &vs0, &mut vd).unwrap();
            let decoded = reference::dequantize_state(Moment::ExpAvg, &mc0, &ms0);
            assert_eq!(bits(&md), bits(&decoded), "{name} len {len}: m decoded");
            let decoded = reference::dequantize_state(Moment::ExpAvgSq, &vc0, &vs0);
            assert_eq!(bits(&vd), bits(&decoded), "{name} len {len}: v decoded");
            let mut rp: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
            let gd: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            let mut rm: Vec<f64> = md.iter().map(|&x| x as f64).collect();
            let mut rv: Vec<f64> = vd.iter().map(|&x| x as f64).collect();
            reference::adam_step(&cfg, 4, &mut rp, &gd, &mut rm, &mut rv, None);
            // Every ISA gives the scalar path's bits; those are checked against the reference.
            let state = (mc0, ms0, vc0, vs0);
            let expected = step_8bit(Isa::scalar(), &cfg, 4, &p0, &g, &state);
            for isa in Isa::available() {
                let got = step_8bit(isa, &cfg, 4, &p0, &g, &state);
                assert!(
                    got == expected,
                    "{name} {} len {len}: differs from scalar",
                    isa.name()
                );
            }
            let at = format!("{name} len {len}");
            let floats = |b: &[u32]| b.iter().map(|&x| f32::from_bits(x)).collect::<Vec<_>>();
            let (p, mc, ms, vc, vs) = &expected;
            let (p, ms, vs) = (floats(p), floats(ms), floats(vs));
            for i in 0..len {
                let update = (rp[i] - p0[i] as f64).abs();
                let e = ulps(p[i], rp[i], (p0[i] as f64).abs() + update);
                assert!(e <= 10.0, "{at}: param[{i}] off by {e} ulp");
            }
            // The new state is the re-encoding of the reference's m, v (to the round trip bound).
            let mut m_back = vec![0f32; len];
            let mut v_back = vec![0f32; len];
            dequantize_state(Isa::scalar(), Moment::ExpAvg, mc, &ms, &mut m_back).unwrap();
            dequantize_state(Isa::scalar(), Moment::ExpAvgSq, vc, &vs, &mut v_back).unwrap();
            for (b, (rmb, rvb)) in rm
                .chunks(QUANT_BLOCK)
                .zip(rv.chunks(QUANT_BLOCK))
                .enumerate()
            {
                let mmax = rmb.iter().fold(0f64, |a, &y| a.max(y.abs()));
                let vmax = rvb.iter().fold(0f64, |a, &y| a.max(y));
                for j in 0..rmb.len() {
                    let i = b * QUANT_BLOCK + j;
                    let bm = (rmb[j].abs() / 16.0).max(mmax * 2f64.powi(-14)) + 1e-5 * mmax;
                    assert!((m_back[i] as f64 - rmb[j]).abs() <= bm, "{at}: m[{i}]");
                    let bv = (rvb[j] / 16.0).max(vmax * 2f64.powi(-30)) + 1e-5 * vmax;
                    assert!((v_back[i] as f64 - rvb[j]).abs() <= bv, "{at}: v[{i}]");
                }
            }
        }
    }
}

#[test]
fn grad_norm_is_accurate_and_identical_for_any_thread_count() {
    let mut r = rng(41);
    let lens = [0usize, 1, 17, 255, 16_384, 16_385, 100_003, 3];
    let grads: Vec<Vec<f32>> = lens
        .iter()
        .map(|&n| log_uniform(&mut r, n, -6.0, 1.0, true))
        .collect();
    let views: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    let scale = 0.125;
    let exact = grads
        .iter()
        .flatten()
        .map(|&g| (g as f64 * scale).powi(2))
        .sum::<f64>()
        .sqrt();
    for isa in Isa::available() {
        let seq = grad_norm_multi_with(isa, Par::Seq, &views, scale).unwrap();
        assert!(!seq.found_inf);
        // f32 partial sums over runs of 256: well within 1e-6 relative.
        assert!(
            (seq.norm - exact).abs() <= 1e-6 * exact,
            "{}: {} vs {exact}",
            isa.name(),
            seq.norm
        );
        for threads in [1, 2, 3] {
            set_num_threads(threads).unwrap();
            let pool = grad_norm_multi_with(isa, Par::Pool, &views, scale).unwrap();
            assert_eq!(pool.norm.to_bits(), seq.norm.to_bits(), "{threads} threads");
        }
    }
    set_num_threads(0).unwrap();
    let mut bad = grads.clone();
    bad[6][99_999] = f32::NAN;
    let views: Vec<&[f32]> = bad.iter().map(|g| g.as_slice()).collect();
    assert!(grad_norm_multi(&views, 1.0).unwrap().found_inf);
    bad[6][99_999] = f32::NEG_INFINITY;
    let views: Vec<&[f32]> = bad.iter().map(|g| g.as_slice()).collect();
    assert!(grad_norm_multi(&views, 1.0).unwrap().found_inf);
    assert_eq!(
        grad_norm_multi(&[], 1.0).unwrap(),
        GradNorm {
            norm: 0.0,
            found_inf: false
        }
    );
    assert_eq!(
        grad_norm_multi(&views, 0.0).unwrap_err().kind(),
        ErrorKind::InvalidHyperparameter
    );
}

#[test]
fn clipped_step_equals_norm_then_multi_step_and_skips_non_finite() {
    let mut r = rng(51);
    let lens = [5usize, 16_385, 1000];
    let mut cfg = AdamConfig::adamw(1e-2);
    cfg.inv_grad_scale = 0.5;
    let grads: Vec<Vec<f32>> = lens
        .iter()
        .map(|&n| log_uniform(&mut r, n, -3.0, 1.0, true))
        .collect();
    let params: Vec<Vec<f32>> = lens
        .iter()
        .map(|&n| log_uniform(&mut r, n, -2.0, 0.0, true))
        .collect();
    for max_norm in [0.1, 1e9, f64::INFINITY] {
        let mut p1 = params.clone();
        let mut m1: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        let mut v1 = m1.clone();
        let mut ts: Vec<AdamTensor> = p1
            .iter_mut()
            .zip(&grads)
            .zip(m1.iter_mut().zip(v1.iter_mut()))
            .map(|((p, g), (m, v))| AdamTensor {
                param: p,
                grad: g,
                exp_avg: m,
                exp_avg_sq: v,
                max_exp_avg_sq: None,
            })
            .collect();
        let norm = adam_step_clipped_multi(&cfg, 1, &mut ts, max_norm).unwrap();
        // Unfused: norm, then the multi-tensor step with the folded factor.
        let views: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        let n2 = grad_norm_multi(&views, cfg.inv_grad_scale).unwrap();
        assert_eq!(norm, n2.norm);
        let folded = AdamConfig {
            inv_grad_scale: cfg.inv_grad_scale * clip_coefficient(norm, max_norm),
            ..cfg
        };
        let mut p2 = params.clone();
        let mut m2: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        let mut v2 = m2.clone();
        let mut ts2: Vec<AdamTensor> = p2
            .iter_mut()
            .zip(&grads)
            .zip(m2.iter_mut().zip(v2.iter_mut()))
            .map(|((p, g), (m, v))| AdamTensor {
                param: p,
                grad: g,
                exp_avg: m,
                exp_avg_sq: v,
                max_exp_avg_sq: None,
            })
            .collect();
        adam_step_multi(&folded, 1, &mut ts2).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(m1, m2);
        if max_norm == 0.1 {
            // Clipped: the step direction is unchanged for Adam at t = 1, but m is scaled.
            let scale = 0.1 / (norm + 1e-6);
            let want = (1.0 - 0.9) * grads[0][0] as f64 * 0.5 * scale;
            assert!((m1[0][0] as f64 - want).abs() <= 1e-6 * want.abs());
        }
    }
    // A NaN in the last tensor: nothing written anywhere.
    let mut bad = grads.clone();
    bad[2][999] = f32::NAN;
    let mut p = params.clone();
    let mut m: Vec<Vec<f32>> = lens.iter().map(|&n| vec![1.0; n]).collect();
    let mut v = m.clone();
    let mut ts: Vec<AdamTensor> = p
        .iter_mut()
        .zip(&bad)
        .zip(m.iter_mut().zip(v.iter_mut()))
        .map(|((p, g), (m, v))| AdamTensor {
            param: p,
            grad: g,
            exp_avg: m,
            exp_avg_sq: v,
            max_exp_avg_sq: None,
        })
        .collect();
    let e = adam_step_clipped_multi(&cfg, 1, &mut ts, 1.0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    let e = adam_step_clipped_multi(&cfg, 1, &mut ts, 0.0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidHyperparameter);
    let e = adam_step_clipped_multi(&cfg, 1, &mut ts, f64::NAN).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidHyperparameter);
    drop(ts);
    assert_eq!(p, params);
    assert!(m
        .iter()
        .flatten()
        .chain(v.iter().flatten())
        .all(|&x| x == 1.0));
}

#[test]
fn bad_input_is_rejected_and_nothing_changes() {
    let cfg = AdamConfig {
        check_finite: true,
        ..AdamConfig::default()
    };
    let mut p = vec![1.0f32; 300];
    let mut p16 = vec![7u16; 300];
    let mut g16 = vec![to_half(HalfFormat::Bf16, 0.5); 300];
    let mut m = vec![0.0f32; 300];
    let mut v = vec![0.0f32; 300];
    let mut call = |cfg: &AdamConfig, step: u64, g16: &[u16], m_len: usize| {
        adam_step_master_bf16(
            cfg,
            step,
            &mut p,
            &mut p16,
            g16,
            &mut m[..m_len],
            &mut v,
            Rounding::NearestEven,
        )
        .unwrap_err()
        .kind()
    };
    assert_eq!(call(&cfg, 1, &g16, 299), ErrorKind::Length);
    assert_eq!(call(&cfg, 0, &g16, 300), ErrorKind::InvalidHyperparameter);
    assert_eq!(
        call(
            &AdamConfig {
                amsgrad: true,
                ..cfg
            },
            1,
            &g16,
            300
        ),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        call(&AdamConfig { beta1: 1.0, ..cfg }, 1, &g16, 300),
        ErrorKind::InvalidHyperparameter
    );
    g16[123] = 0x7fc0; // NaN
    assert_eq!(call(&cfg, 1, &g16, 300), ErrorKind::NonFinite);
    g16[123] = 0x7f80; // +inf
    assert_eq!(call(&cfg, 1, &g16, 300), ErrorKind::NonFinite);
    assert!(p.iter().all(|&x| x == 1.0) && p16.iter().all(|&x| x == 7));
    assert!(m.iter().chain(&v).all(|&x| x == 0.0));
    // f16 infinity is 0x7c00.
    let g = vec![0x7c00u16; 3];
    let (mut a, mut b, mut c, mut d) = (vec![0f32; 3], vec![0u16; 3], vec![0f32; 3], vec![0f32; 3]);
    let e = adam_step_master_f16(
        &cfg,
        1,
        &mut a,
        &mut b,
        &g,
        &mut c,
        &mut d,
        Rounding::NearestEven,
    );
    assert_eq!(e.unwrap_err().kind(), ErrorKind::NonFinite);
    // 8-bit: scales of the wrong length.
    let g = vec![0.5f32; 300];
    let (mut mc, mut vc) = (vec![0u8; 300], vec![0u8; 300]);
    let (mut ms, mut vs) = (vec![0f32; 1], vec![0f32; 2]);
    let e = adam_step_8bit_state(
        &cfg,
        1,
        QuantStateTensor {
            param: &mut a[..0],
            grad: &g,
            exp_avg_codes: &mut mc,
            exp_avg_scales: &mut ms,
            exp_avg_sq_codes: &mut vc,
            exp_avg_sq_scales: &mut vs,
        },
    );
    assert_eq!(e.unwrap_err().kind(), ErrorKind::Length);
    let mut pp = vec![1.0f32; 300];
    let e = adam_step_8bit_state(
        &cfg,
        1,
        QuantStateTensor {
            param: &mut pp,
            grad: &g,
            exp_avg_codes: &mut mc,
            exp_avg_scales: &mut ms,
            exp_avg_sq_codes: &mut vc,
            exp_avg_sq_scales: &mut vs,
        },
    );
    assert_eq!(e.unwrap_err().kind(), ErrorKind::Length);
    assert!(pp.iter().all(|&x| x == 1.0) && mc.iter().all(|&x| x == 0));
}

#[test]
fn corrupted_eight_bit_state_is_refused_and_nothing_changes() {
    // A block scale that is NaN, infinite or negative (a corrupted checkpoint), in either
    // moment: the step and the decoder name it and write nothing, on every ISA.
    let cfg = AdamConfig::adamw(1e-3);
    let n = 600; // three blocks, the last one short
    let g: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
    let p0 = vec![0.5f32; n];
    let good: QuantState = (vec![0x38; n], vec![1e-3; 3], vec![0xf0; n], vec![1e-6; 3]);
    for bad in [f32::NAN, f32::INFINITY, -1e-3] {
        for moment in [Moment::ExpAvg, Moment::ExpAvgSq] {
            let mut state = good.clone();
            let name = match moment {
                Moment::ExpAvg => {
                    state.1[2] = bad;
                    "exp_avg_scales[2]"
                }
                Moment::ExpAvgSq => {
                    state.3[2] = bad;
                    "exp_avg_sq_scales[2]"
                }
            };
            for isa in Isa::available() {
                let mut p = p0.clone();
                let (mut mc, mut ms, mut vc, mut vs) = state.clone();
                let e = adam_step_8bit_state_with(
                    isa,
                    Par::Pool,
                    &cfg,
                    3,
                    QuantStateTensor {
                        param: &mut p,
                        grad: &g,
                        exp_avg_codes: &mut mc,
                        exp_avg_scales: &mut ms,
                        exp_avg_sq_codes: &mut vc,
                        exp_avg_sq_scales: &mut vs,
                    },
                )
                .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
                assert!(e.message().contains(name), "{e}");
                assert_eq!(bits(&p), bits(&p0));
                assert_eq!((mc, vc), (state.0.clone(), state.2.clone()));
                assert_eq!((bits(&ms), bits(&vs)), (bits(&state.1), bits(&state.3)));
                let (codes, scales) = match moment {
                    Moment::ExpAvg => (&state.0, &state.1),
                    Moment::ExpAvgSq => (&state.2, &state.3),
                };
                let mut out = vec![7.0f32; n];
                let e = dequantize_state(isa, moment, codes, scales, &mut out).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
                assert!(e.message().contains("scales[2]"), "{e}");
                assert!(out.iter().all(|&x| x == 7.0));
            }
        }
    }
    // The encoder names the first value it cannot encode.
    for (moment, bad) in [
        (Moment::ExpAvg, f32::NAN),
        (Moment::ExpAvg, f32::NEG_INFINITY),
        (Moment::ExpAvgSq, -1e-9),
        (Moment::ExpAvgSq, f32::INFINITY),
    ] {
        let mut values = vec![0.25f32; n];
        values[417] = bad;
        values[500] = bad;
        let (mut codes, mut scales) = (vec![9u8; n], vec![3.0f32; 3]);
        let e =
            quantize_state(Isa::detect(), moment, &values, &mut codes, &mut scales).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains("values[417]"), "{e}");
        assert!(codes.iter().all(|&c| c == 9) && scales.iter().all(|&s| s == 3.0));
    }
    // The uncorrupted state steps.
    let (mut mc, mut ms, mut vc, mut vs) = good;
    let mut p = p0;
    adam_step_8bit_state(
        &cfg,
        3,
        QuantStateTensor {
            param: &mut p,
            grad: &g,
            exp_avg_codes: &mut mc,
            exp_avg_scales: &mut ms,
            exp_avg_sq_codes: &mut vc,
            exp_avg_sq_scales: &mut vs,
        },
    )
    .unwrap();
    assert!(p.iter().all(|&x| x != 0.5 && x.is_finite()));
}

/// Tensor lengths for the multi-tensor steps: a block and a bit of 8-bit state, empty, one,
/// exactly one block, more than four thread blocks with a tail, and short ones.
const LIST_LENGTHS: [usize; 7] = [300, 0, 1, 256, 70_001, 255, 4097];

/// Cuts equally long buffers into master-step tensors of `LIST_LENGTHS`.
fn master_list<'a>(
    mut p: &'a mut [f32],
    mut p16: &'a mut [u16],
    mut g: &'a [u16],
    mut m: &'a mut [f32],
    mut v: &'a mut [f32],
) -> Vec<MasterTensor<'a>> {
    let mut list = Vec::new();
    for n in LIST_LENGTHS {
        let (p0, p1) = p.split_at_mut(n);
        let (h0, h1) = p16.split_at_mut(n);
        let (g0, g1) = g.split_at(n);
        let (m0, m1) = m.split_at_mut(n);
        let (v0, v1) = v.split_at_mut(n);
        list.push(MasterTensor {
            master: p0,
            param: h0,
            grad: g0,
            exp_avg: m0,
            exp_avg_sq: v0,
        });
        (p, p16, g, m, v) = (p1, h1, g1, m1, v1);
    }
    list
}

/// Cuts equally long buffers into 8-bit-state tensors of `LIST_LENGTHS` (scales per tensor).
fn quant_list<'a>(
    mut p: &'a mut [f32],
    mut g: &'a [f32],
    state: &'a mut QuantState,
) -> Vec<QuantStateTensor<'a>> {
    let (mut mc, mut ms, mut vc, mut vs) = (
        &mut state.0[..],
        &mut state.1[..],
        &mut state.2[..],
        &mut state.3[..],
    );
    let mut list = Vec::new();
    for n in LIST_LENGTHS {
        let k = quant_scales_len(n);
        let (p0, p1) = p.split_at_mut(n);
        let (g0, g1) = g.split_at(n);
        let (mc0, mc1) = mc.split_at_mut(n);
        let (ms0, ms1) = ms.split_at_mut(k);
        let (vc0, vc1) = vc.split_at_mut(n);
        let (vs0, vs1) = vs.split_at_mut(k);
        list.push(QuantStateTensor {
            param: p0,
            grad: g0,
            exp_avg_codes: mc0,
            exp_avg_scales: ms0,
            exp_avg_sq_codes: vc0,
            exp_avg_sq_scales: vs0,
        });
        (p, g, mc, ms, vc, vs) = (p1, g1, mc1, ms1, vc1, vs1);
    }
    list
}

#[test]
fn multi_tensor_steps_equal_single_calls_on_every_isa_and_thread_count() {
    let mut r = rng(21);
    let cfg = AdamConfig::adamw(1e-3);
    let total: usize = LIST_LENGTHS.iter().sum();
    let master0 = log_uniform(&mut r, total, -3.0, 1.0, true);
    let g32 = log_uniform(&mut r, total, -4.0, 0.0, true);
    let runs = [(Par::Seq, 1), (Par::Pool, 2), (Par::Pool, 3)];
    // Master weights: the list steps as one call on its concatenation (stochastic rounding
    // included: the elements are numbered end to end).
    for format in [HalfFormat::Bf16, HalfFormat::F16] {
        let grad: Vec<u16> = g32.iter().map(|&x| to_half(format, x)).collect();
        for rounding in [Rounding::NearestEven, Rounding::Stochastic { seed: 9 }] {
            let fresh = || {
                (
                    master0.clone(),
                    vec![0u16; total],
                    vec![0f32; total],
                    vec![0f32; total],
                )
            };
            let (mut p, mut p16, mut m, mut v) = fresh();
            for step in 1..=2 {
                let t = MasterTensor {
                    master: &mut p,
                    param: &mut p16,
                    grad: &grad,
                    exp_avg: &mut m,
                    exp_avg_sq: &mut v,
                };
                adam_step_master_with(Isa::scalar(), Par::Seq, format, &cfg, step, t, rounding)
                    .unwrap();
            }
            let expected = (bits(&p), p16, bits(&m), bits(&v));
            for isa in Isa::available() {
                for (par, threads) in runs {
                    set_num_threads(threads).unwrap();
                    let (mut p, mut p16, mut m, mut v) = fresh();
                    for step in 1..=2 {
                        let mut list = master_list(&mut p, &mut p16, &grad, &mut m, &mut v);
                        adam_step_master_multi_with(
                            isa, par, format, &cfg, step, &mut list, rounding,
                        )
                        .unwrap();
                    }
                    assert!(
                        (bits(&p), p16, bits(&m), bits(&v)) == expected,
                        "{format:?} {rounding:?} {} {threads} threads",
                        isa.name()
                    );
                }
            }
        }
    }
    // bf16 state: one call on the concatenation too.
    let fresh = || (master0.clone(), vec![0u16; total], vec![0u16; total]);
    let (mut p, mut m16, mut v16) = fresh();
    for step in 1..=2 {
        let t = Bf16StateTensor {
            param: &mut p,
            grad: &g32,
            exp_avg: &mut m16,
            exp_avg_sq: &mut v16,
        };
        adam_step_bf16_state_with(Isa::scalar(), Par::Seq, &cfg, step, 4, t).unwrap();
    }
    let expected = (bits(&p), m16, v16);
    for isa in Isa::available() {
        for (par, threads) in runs {
            set_num_threads(threads).unwrap();
            let (mut p, mut m16, mut v16) = fresh();
            for step in 1..=2 {
                let (mut pr, mut gr, mut mr, mut vr) =
                    (&mut p[..], &g32[..], &mut m16[..], &mut v16[..]);
                let mut list = Vec::new();
                for n in LIST_LENGTHS {
                    let (p0, p1) = pr.split_at_mut(n);
                    let (g0, g1) = gr.split_at(n);
                    let (m0, m1) = mr.split_at_mut(n);
                    let (v0, v1) = vr.split_at_mut(n);
                    list.push(Bf16StateTensor {
                        param: p0,
                        grad: g0,
                        exp_avg: m0,
                        exp_avg_sq: v0,
                    });
                    (pr, gr, mr, vr) = (p1, g1, m1, v1);
                }
                adam_step_bf16_state_multi_with(isa, par, &cfg, step, 4, &mut list).unwrap();
            }
            assert!(
                (bits(&p), m16, v16) == expected,
                "bf16 state {} {threads} threads",
                isa.name()
            );
        }
    }
    // 8-bit state: one call per tensor (each has its own blocks and scales).
    let n_scales: usize = LIST_LENGTHS.iter().map(|&n| quant_scales_len(n)).sum();
    let fresh = || -> (Vec<f32>, QuantState) {
        let state = (
            vec![0u8; total],
            vec![0f32; n_scales],
            vec![0u8; total],
            vec![0f32; n_scales],
        );
        (master0.clone(), state)
    };
    let (mut p, mut state) = fresh();
    for step in 1..=2 {
        for t in quant_list(&mut p, &g32, &mut state) {
            adam_step_8bit_state_with(Isa::scalar(), Par::Seq, &cfg, step, t).unwrap();
        }
    }
    let expected = (bits(&p), state);
    for isa in Isa::available() {
        for (par, threads) in runs {
            set_num_threads(threads).unwrap();
            let (mut p, mut state) = fresh();
            for step in 1..=2 {
                let mut list = quant_list(&mut p, &g32, &mut state);
                adam_step_8bit_state_multi_with(isa, par, &cfg, step, &mut list).unwrap();
            }
            assert!(
                (bits(&p), state) == expected,
                "8-bit {} {threads} threads",
                isa.name()
            );
        }
    }
    set_num_threads(0).unwrap();
}

#[test]
fn multi_tensor_steps_check_every_tensor_before_writing() {
    let cfg = AdamConfig {
        check_finite: true,
        ..AdamConfig::adamw(1e-3)
    };
    let total: usize = LIST_LENGTHS.iter().sum();
    let p0: Vec<f32> = (0..total).map(|i| (i % 7) as f32 * 0.25).collect();
    let mut g32: Vec<f32> = (0..total).map(|i| (i % 5) as f32 * 0.01 - 0.02).collect();
    let mut grad: Vec<u16> = g32.iter().map(|&x| to_half(HalfFormat::Bf16, x)).collect();
    let (mut p, mut p16, mut m, mut v) = (
        p0.clone(),
        vec![3u16; total],
        vec![0f32; total],
        vec![0f32; total],
    );
    // A gradient too short in tensors[4]: a length error naming it.
    {
        let mut list = master_list(&mut p, &mut p16, &grad, &mut m, &mut v);
        let short = &grad[..10];
        list[4].grad = short;
        let e = adam_step_master_multi(HalfFormat::Bf16, &cfg, 1, &mut list, Rounding::NearestEven)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Length, "{e}");
        assert!(e.message().starts_with("tensors[4]: grad"), "{e}");
    }
    // A NaN in the last tensor: nothing written in any.
    grad[total - 1] = 0x7fc0;
    {
        let mut list = master_list(&mut p, &mut p16, &grad, &mut m, &mut v);
        let e = adam_step_master_multi(HalfFormat::Bf16, &cfg, 1, &mut list, Rounding::NearestEven)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NonFinite, "{e}");
    }
    assert_eq!(bits(&p), bits(&p0));
    assert!(p16.iter().all(|&h| h == 3) && m.iter().chain(&v).all(|&x| x == 0.0));
    // 8-bit: a corrupted scale in tensors[3], then a NaN gradient in tensors[0].
    let n_scales: usize = LIST_LENGTHS.iter().map(|&n| quant_scales_len(n)).sum();
    let mut state: QuantState = (
        vec![0; total],
        vec![0.0; n_scales],
        vec![0; total],
        vec![0.0; n_scales],
    );
    state.3[quant_scales_len(300) + 1] = f32::NAN; // tensors[1] has no block, [2] one: [3]'s
    let copy = state.clone();
    {
        let mut list = quant_list(&mut p, &g32, &mut state);
        let e = adam_step_8bit_state_multi(&cfg, 1, &mut list).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(
            e.message().starts_with("tensors[3]: exp_avg_sq_scales[0]"),
            "{e}"
        );
    }
    state.3[quant_scales_len(300) + 1] = 0.0;
    g32[5] = f32::INFINITY;
    {
        let mut list = quant_list(&mut p, &g32, &mut state);
        let e = adam_step_8bit_state_multi(&cfg, 1, &mut list).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NonFinite, "{e}");
    }
    assert_eq!(bits(&p), bits(&p0));
    assert_eq!(state.0, copy.0);
    assert_eq!(state.2, copy.2);
}

#[test]
fn half_norm_is_the_norm_of_the_widened_gradients_and_the_clipped_master_step_folds_it() {
    let mut r = rng(61);
    let total: usize = LIST_LENGTHS.iter().sum();
    let g32 = log_uniform(&mut r, total, -4.0, 1.0, true);
    for format in [HalfFormat::Bf16, HalfFormat::F16] {
        let mut grad: Vec<u16> = g32.iter().map(|&x| to_half(format, x)).collect();
        let cut = |g: &[u16]| -> Vec<Vec<u16>> {
            let mut at = 0;
            LIST_LENGTHS
                .iter()
                .map(|&n| {
                    at += n;
                    g[at - n..at].to_vec()
                })
                .collect()
        };
        // The norm: bitwise that of the widened values, on every ISA and thread count.
        let lists = cut(&grad);
        let views: Vec<&[u16]> = lists.iter().map(|g| g.as_slice()).collect();
        let wide: Vec<Vec<f32>> = lists.iter().map(|g| widen(format, g)).collect();
        let wide_views: Vec<&[f32]> = wide.iter().map(|g| g.as_slice()).collect();
        for isa in Isa::available() {
            let want = grad_norm_multi_with(isa, Par::Seq, &wide_views, 0.25).unwrap();
            for threads in [1, 2, 3] {
                set_num_threads(threads).unwrap();
                let got = grad_norm_multi_half_with(isa, Par::Pool, format, &views, 0.25);
                assert_eq!(got.unwrap(), want, "{format:?} {} {threads}", isa.name());
            }
        }
        set_num_threads(0).unwrap();
        // The two-pass master step: the norm, then the list step with the folded factor.
        let mut cfg = AdamConfig::adamw(1e-2);
        cfg.inv_grad_scale = 0.5;
        let master0 = log_uniform(&mut r, total, -2.0, 0.0, true);
        let rounding = Rounding::Stochastic { seed: 3 };
        for max_norm in [0.1, f64::INFINITY] {
            let fresh = || {
                (
                    master0.clone(),
                    vec![0u16; total],
                    vec![0f32; total],
                    vec![0f32; total],
                )
            };
            let (mut p, mut p16, mut m, mut v) = fresh();
            let mut list = master_list(&mut p, &mut p16, &grad, &mut m, &mut v);
            let norm =
                adam_step_master_clipped_multi(format, &cfg, 1, &mut list, max_norm, rounding)
                    .unwrap();
            let n2 = grad_norm_multi_half(format, &views, cfg.inv_grad_scale).unwrap();
            assert_eq!(norm, n2.norm);
            let folded = AdamConfig {
                inv_grad_scale: cfg.inv_grad_scale * clip_coefficient(norm, max_norm),
                ..cfg
            };
            let (mut q, mut q16, mut qm, mut qv) = fresh();
            let mut list = master_list(&mut q, &mut q16, &grad, &mut qm, &mut qv);
            adam_step_master_multi(format, &folded, 1, &mut list, rounding).unwrap();
            assert_eq!((bits(&p), p16, bits(&m)), (bits(&q), q16, bits(&qm)));
        }
        // A non-finite gradient: found by the norm, refused by the step with nothing written.
        grad[total - 3] = match format {
            HalfFormat::Bf16 => 0xff80, // -inf
            HalfFormat::F16 => 0x7e00,  // NaN
        };
        let lists = cut(&grad);
        let views: Vec<&[u16]> = lists.iter().map(|g| g.as_slice()).collect();
        assert!(grad_norm_multi_half(format, &views, 1.0).unwrap().found_inf);
        let (mut p, mut p16, mut m, mut v) = (
            master0.clone(),
            vec![7u16; total],
            vec![0f32; total],
            vec![0f32; total],
        );
        let mut list = master_list(&mut p, &mut p16, &grad, &mut m, &mut v);
        let e = adam_step_master_clipped_multi(format, &cfg, 1, &mut list, 1.0, rounding);
        assert_eq!(e.unwrap_err().kind(), ErrorKind::NonFinite);
        assert_eq!(bits(&p), bits(&master0));
        assert!(p16.iter().all(|&h| h == 7) && m.iter().chain(&v).all(|&x| x == 0.0));
    }
}

/// Logistic regression on separable-ish synthetic data: f32 Adam, bf16-master Adam (bf16
/// gradients computed from the bf16 parameters) and 8-bit-state Adam, 400 full-batch steps.
/// Margin: the final losses are within 0.005 (absolute, in nats; f32 ends near 0.034) of f32 training.
#[test]
fn bf16_master_and_eight_bit_state_train_as_well_as_f32() {
    let (n, d) = (512usize, 64usize);
    let mut r = rng(61);
    let w_true: Vec<f32> = (0..d).map(|_| r.random_range(-1.0..1.0)).collect();
    let x: Vec<f32> = (0..n * d).map(|_| r.random_range(-1.0..1.0)).collect();
    let y: Vec<f32> = (0..n)
        .map(|i| {
            let z: f32 = (0..d).map(|j| x[i * d + j] * w_true[j]).sum();
            let noise: f32 = r.random_range(-0.5..0.5);
            if z + noise > 0.0 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let loss_grad = |w: &[f32], grad: &mut [f32]| -> f64 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0f64;
        for i in 0..n {
            let z: f32 = (0..d).map(|j| x[i * d + j] * w[j]).sum();
            let s = 1.0 / (1.0 + (-z).exp());
            loss += (1.0 + (-z.abs() as f64).exp()).ln() + (z.max(0.0) as f64) - (y[i] * z) as f64;
            for j in 0..d {
                grad[j] += (s - y[i]) * x[i * d + j] / n as f32;
            }
        }
        loss / n as f64
    };
    let cfg = AdamConfig {
        lr: 0.05,
        ..AdamConfig::default()
    };
    let steps = 400;
    // f32
    let (mut w, mut g, mut m, mut v) = (vec![0f32; d], vec![0f32; d], vec![0f32; d], vec![0f32; d]);
    for t in 1..=steps {
        loss_grad(&w, &mut g);
        adam_step(&cfg, t, &mut w, &g, &mut m, &mut v, None).unwrap();
    }
    let f32_loss = loss_grad(&w, &mut g);
    // bf16 master: the model holds bf16 weights, gradients are bf16.
    let (mut master, mut m, mut v) = (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
    let mut w16 = vec![0u16; d];
    let mut g16 = vec![0u16; d];
    for t in 1..=steps {
        let w_model = widen(HalfFormat::Bf16, &w16);
        loss_grad(&w_model, &mut g);
        round_to_half(
            Isa::detect(),
            HalfFormat::Bf16,
            &g,
            &mut g16,
            Rounding::NearestEven,
            t,
        )
        .unwrap();
        adam_step_master_bf16(
            &cfg,
            t,
            &mut master,
            &mut w16,
            &g16,
            &mut m,
            &mut v,
            Rounding::NearestEven,
        )
        .unwrap();
    }
    let bf16_loss = loss_grad(&widen(HalfFormat::Bf16, &w16), &mut g);
    // 8-bit state.
    let mut w = vec![0f32; d];
    let (mut mc, mut vc) = (vec![0u8; d], vec![0u8; d]);
    let (mut ms, mut vs) = (
        vec![0f32; quant_scales_len(d)],
        vec![0f32; quant_scales_len(d)],
    );
    for t in 1..=steps {
        loss_grad(&w, &mut g);
        adam_step_8bit_state(
            &cfg,
            t,
            QuantStateTensor {
                param: &mut w,
                grad: &g,
                exp_avg_codes: &mut mc,
                exp_avg_scales: &mut ms,
                exp_avg_sq_codes: &mut vc,
                exp_avg_sq_scales: &mut vs,
            },
        )
        .unwrap();
    }
    let q_loss = loss_grad(&w, &mut g);
    // bf16 state.
    let mut w = vec![0f32; d];
    let (mut m16, mut v16) = (vec![0u16; d], vec![0u16; d]);
    for t in 1..=steps {
        loss_grad(&w, &mut g);
        adam_step_bf16_state(
            &cfg,
            t,
            3,
            Bf16StateTensor {
                param: &mut w,
                grad: &g,
                exp_avg: &mut m16,
                exp_avg_sq: &mut v16,
            },
        )
        .unwrap();
    }
    let b_loss = loss_grad(&w, &mut g);
    let start = (2f64).ln();
    assert!(f32_loss < 0.5 * start, "f32 did not train: {f32_loss}");
    eprintln!(
        "losses: f32 {f32_loss}, bf16 master {bf16_loss}, 8-bit {q_loss}, bf16 state {b_loss}"
    );
    for (name, loss) in [
        ("bf16 master", bf16_loss),
        ("8-bit state", q_loss),
        ("bf16 state", b_loss),
    ] {
        assert!(
            (loss - f32_loss).abs() <= 0.005,
            "{name}: {loss} vs f32 {f32_loss}"
        );
    }
}

#[test]
fn mixed_and_bf16_state_steps_do_not_depend_on_alignment() {
    // Long enough for the kernels' alignment peel (>= 4096 elements), and started at every
    // float offset within a register: the unaligned head runs through the staged path, with the
    // stochastic counters of the elements it covers.
    let mut r = rng(61);
    let len = 5003;
    let cfg = AdamConfig::adamw(1e-2);
    let p0 = log_uniform(&mut r, len, -3.0, 1.0, true);
    let g = log_uniform(&mut r, len, -4.0, 0.0, true);
    let g16: Vec<u16> = g.iter().map(|&x| to_half(HalfFormat::Bf16, x)).collect();
    let m0 = log_uniform(&mut r, len, -4.0, 0.0, true);
    let v0 = log_uniform(&mut r, len, -8.0, 0.0, false);
    let m16: Vec<u16> = m0.iter().map(|&x| to_half(HalfFormat::Bf16, x)).collect();
    let v16: Vec<u16> = v0.iter().map(|&x| to_half(HalfFormat::Bf16, x)).collect();
    for isa in Isa::available() {
        let mut expected = None;
        for offset in 0..16 {
            // Every buffer shifted by `offset` elements inside a longer allocation.
            let shifted = |x: &[f32]| {
                let mut b = vec![0f32; offset];
                b.extend_from_slice(x);
                b
            };
            let shifted16 = |x: &[u16]| {
                let mut b = vec![0u16; offset];
                b.extend_from_slice(x);
                b
            };
            let (mut p, mut m, mut v) = (shifted(&p0), shifted(&m0), shifted(&v0));
            let (g16s, mut p16) = (shifted16(&g16), vec![0u16; offset + len]);
            adam_step_master_with(
                isa,
                Par::Seq,
                HalfFormat::Bf16,
                &cfg,
                5,
                MasterTensor {
                    master: &mut p[offset..],
                    param: &mut p16[offset..],
                    grad: &g16s[offset..],
                    exp_avg: &mut m[offset..],
                    exp_avg_sq: &mut v[offset..],
                },
                Rounding::Stochastic { seed: 9 },
            )
            .unwrap();
            let (mut q, gs) = (shifted(&p0), shifted(&g));
            let (mut qm, mut qv) = (shifted16(&m16), shifted16(&v16));
            adam_step_bf16_state_with(
                isa,
                Par::Seq,
                &cfg,
                5,
                9,
                Bf16StateTensor {
                    param: &mut q[offset..],
                    grad: &gs[offset..],
                    exp_avg: &mut qm[offset..],
                    exp_avg_sq: &mut qv[offset..],
                },
            )
            .unwrap();
            let got = (
                bits(&p[offset..]),
                p16[offset..].to_vec(),
                bits(&m[offset..]),
                bits(&v[offset..]),
                bits(&q[offset..]),
                qm[offset..].to_vec(),
                qv[offset..].to_vec(),
            );
            match &expected {
                None => expected = Some(got),
                Some(e) => assert!(*e == got, "{} offset {offset}: differs", isa.name()),
            }
        }
    }
}

/// Test values for the 16-bit conversions: random f32 bit patterns (every class), values at
/// many magnitudes and, every seventh, a value on a bf16 or f16 rounding tie.
fn conversion_inputs(seed: u64, len: usize) -> Vec<f32> {
    let mut r = rng(seed);
    let wide = log_uniform(&mut r, len, -9.0, 6.0, true);
    (0..len)
        .map(|i| match i % 7 {
            0 => f32::from_bits(r.random()),
            3 => f32::from_bits((wide[i].to_bits() & !0xffff) | 0x8000), // bf16 tie
            5 => f32::from_bits((wide[i].to_bits() & !0x1fff) | 0x1000), // f16 tie (normal)
            _ => wide[i],
        })
        .collect()
}

/// 16-bit bits equal, NaN == NaN with the same sign (NaN payloads are not specified).
fn same_half(format: HalfFormat, got: u16, want: u16) -> bool {
    let nan = |h: u16| reference::half_to_f32(format, h).is_nan();
    got == want || (nan(got) && nan(want) && got & 0x8000 == want & 0x8000)
}

#[test]
fn rounding_and_widening_equal_the_reference_bitwise_on_every_isa_length_and_offset() {
    // Exact: every rounded code equals `reference::round_to_half` (nearest-even, and stochastic
    // with the reference's random bits), every widened value `reference::half_to_f32`.
    for (case, len) in lengths_around(&LANE_UNITS, 71).into_iter().enumerate() {
        let offset = case % 5;
        let values = conversion_inputs(case as u64, len);
        let input = Unaligned::new(&values, offset);
        let mut r = rng(case as u64 + 100);
        let codes: Vec<u16> = (0..len).map(|_| r.random()).collect();
        let codes_in = shifted(&codes, offset);
        for format in [HalfFormat::Bf16, HalfFormat::F16] {
            let widened: Vec<f32> = codes
                .iter()
                .map(|&h| reference::half_to_f32(format, h))
                .collect();
            for rounding in [Rounding::NearestEven, Rounding::Stochastic { seed: 9 }] {
                let want = reference::round_to_half(format, &values, rounding, 3);
                for isa in Isa::available() {
                    let at = format!(
                        "{} {format:?} {rounding:?} len {len} offset {offset}",
                        isa.name()
                    );
                    let mut out = shifted(&vec![0u16; len], offset);
                    round_to_half(isa, format, input.get(), &mut out[offset..], rounding, 3)
                        .unwrap();
                    for (i, (&got, &w)) in out[offset..].iter().zip(&want).enumerate() {
                        assert!(
                            same_half(format, got, w),
                            "{at}: [{i}] {:e} ({:#x}) -> {got:#06x}, reference {w:#06x}",
                            values[i],
                            values[i].to_bits()
                        );
                    }
                }
            }
            for isa in Isa::available() {
                let mut out = Unaligned::new(&vec![0f32; len], offset);
                widen_half(isa, format, &codes_in[offset..], out.get_mut()).unwrap();
                assert!(out.guards_intact());
                for (i, (&got, &w)) in out.get().iter().zip(&widened).enumerate() {
                    let nan_pair = got.is_nan() && w.is_nan();
                    assert!(
                        got.to_bits() == w.to_bits()
                            || nan_pair && got.is_sign_negative() == w.is_sign_negative(),
                        "{} {format:?} len {len} offset {offset}: [{i}] {:#06x} -> {got:e}, \
                         reference {w:e}",
                        isa.name(),
                        codes[i]
                    );
                }
            }
        }
    }
}

#[test]
fn stochastic_bits_are_those_of_the_reference() {
    // Values halfway between two bf16 neighbours round up exactly when bit 15 of the element's
    // random bits is set: the kernel's bits are `reference::stochastic_bits` (stream 2).
    let len = 4099;
    let values = vec![1.0f32 + 1.0 / 256.0; len]; // 1 + half a bf16 ulp
    for (seed, step) in [(0u64, 1u64), (9, 3), (u64::MAX, 1 << 40)] {
        for isa in Isa::available() {
            let mut out = vec![0u16; len];
            let rounding = Rounding::Stochastic { seed };
            round_to_half(isa, HalfFormat::Bf16, &values, &mut out, rounding, step).unwrap();
            for (i, &h) in out.iter().enumerate() {
                let up = reference::stochastic_bits(seed, step, 2, i as u64) & 0x8000 != 0;
                assert_eq!(
                    h,
                    0x3f80 + up as u16,
                    "{} seed {seed} step {step} [{i}]",
                    isa.name()
                );
            }
        }
    }
}

#[test]
fn master_step_equals_the_reference_on_every_isa_length_and_offset() {
    // theta within 10 ulp of |theta| + |update| of `reference::adam_step_master`'s (as the f32
    // step's bound); m, v within 4 ulp of their inputs' magnitude; theta16 exactly
    // `reference::f32_to_half` of the kernel's theta with the reference's random bits.
    let mut r = rng(73);
    for (case, len) in lengths_around(&LANE_UNITS, 73).into_iter().enumerate() {
        let offset = case % 5;
        let (name, cfg) = configs()[case % 3];
        let step = [1u64, 3, 100][case % 3];
        for format in [HalfFormat::Bf16, HalfFormat::F16] {
            let master0 = log_uniform(&mut r, len, -3.0, 1.0, true);
            let grad: Vec<u16> = log_uniform(&mut r, len, -4.0, 0.0, true)
                .iter()
                .map(|&x| to_half(format, x))
                .collect();
            let m0 = log_uniform(&mut r, len, -4.0, 0.0, true);
            let v0 = log_uniform(&mut r, len, -8.0, 0.0, false);
            for rounding in [Rounding::NearestEven, Rounding::Stochastic { seed: 5 }] {
                let (mut rp, mut rm, mut rv) = (to_f64(&master0), to_f64(&m0), to_f64(&v0));
                let mut r16 = vec![0u16; len];
                reference::adam_step_master(
                    &cfg, step, format, rounding, &mut rp, &mut r16, &grad, &mut rm, &mut rv,
                );
                for isa in Isa::available() {
                    let (mut p, mut m, mut v) = (
                        Unaligned::new(&master0, offset),
                        Unaligned::new(&m0, offset),
                        Unaligned::new(&v0, offset),
                    );
                    let g16 = shifted(&grad, offset);
                    let mut p16 = shifted(&vec![0u16; len], offset);
                    adam_step_master_with(
                        isa,
                        Par::Seq,
                        format,
                        &cfg,
                        step,
                        MasterTensor {
                            master: p.get_mut(),
                            param: &mut p16[offset..],
                            grad: &g16[offset..],
                            exp_avg: m.get_mut(),
                            exp_avg_sq: v.get_mut(),
                        },
                        rounding,
                    )
                    .unwrap();
                    let at = format!(
                        "{format:?} {name} {} len {len} offset {offset} {rounding:?}",
                        isa.name()
                    );
                    assert!(
                        p.guards_intact() && m.guards_intact() && v.guards_intact(),
                        "{at}"
                    );
                    let theta16 = reference::round_to_half(format, p.get(), rounding, step);
                    for i in 0..len {
                        let l2 = if cfg.decoupled_weight_decay {
                            0.0
                        } else {
                            cfg.weight_decay
                        };
                        let g = (from_half(format, grad[i]) as f64 * cfg.inv_grad_scale).abs()
                            + (l2 * master0[i] as f64).abs();
                        let e = ulps(m.get()[i], rm[i], (m0[i] as f64).abs().max(g));
                        assert!(e <= 4.0, "{at}: exp_avg[{i}] off by {e} ulp");
                        let e = ulps(v.get()[i], rv[i], (v0[i] as f64).max(g * g));
                        assert!(e <= 4.0, "{at}: exp_avg_sq[{i}] off by {e} ulp");
                        let update = (rp[i] - master0[i] as f64).abs();
                        let e = ulps(p.get()[i], rp[i], (master0[i] as f64).abs() + update);
                        assert!(e <= 10.0, "{at}: master[{i}] off by {e} ulp");
                        assert_eq!(p16[offset + i], theta16[i], "{at}: param[{i}]");
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_state_step_equals_the_reference_on_every_isa_length_and_offset() {
    // theta within 10 ulp of `reference::adam_step_bf16_state`'s (|theta| + |update|); the
    // bf16 m, v exactly `reference::f32_to_half` (stochastic, the reference's bits) of the f32
    // step's m, v on the widened state (that step is itself tested against the f64 reference).
    let mut r = rng(79);
    for (case, len) in lengths_around(&LANE_UNITS, 79).into_iter().enumerate() {
        let offset = case % 5;
        let (name, cfg) = configs()[case % 3];
        let (step, seed) = ([1u64, 2, 100][case % 3], case as u64);
        let p0 = log_uniform(&mut r, len, -3.0, 1.0, true);
        let g = log_uniform(&mut r, len, -4.0, 0.0, true);
        let to_bf16 =
            |x: Vec<f32>| -> Vec<u16> { x.iter().map(|&x| to_half(HalfFormat::Bf16, x)).collect() };
        let m0 = to_bf16(log_uniform(&mut r, len, -4.0, 0.0, true));
        let v0 = to_bf16(log_uniform(&mut r, len, -8.0, 0.0, false));
        let (mut rp, mut rm16, mut rv16) = (to_f64(&p0), m0.clone(), v0.clone());
        reference::adam_step_bf16_state(
            &cfg,
            step,
            seed,
            &mut rp,
            &to_f64(&g),
            &mut rm16,
            &mut rv16,
        );
        // The f32 step on the widened state, then the reference rounding.
        let (mut fp, mut fm, mut fv) = (
            p0.clone(),
            widen(HalfFormat::Bf16, &m0),
            widen(HalfFormat::Bf16, &v0),
        );
        adam_step_with(
            Isa::scalar(),
            Par::Seq,
            &cfg,
            step,
            AdamTensor {
                param: &mut fp,
                grad: &g,
                exp_avg: &mut fm,
                exp_avg_sq: &mut fv,
                max_exp_avg_sq: None,
            },
        )
        .unwrap();
        // One word per element: its low 16 bits round `m`, its high 16 bits `v`.
        let stochastic = |x: f32, shift: u32, i: usize| {
            let bits = reference::stochastic_bits(seed, step, 0, i as u64) >> shift;
            reference::f32_to_half(HalfFormat::Bf16, x, Some(bits))
        };
        for isa in Isa::available() {
            let mut p = Unaligned::new(&p0, offset);
            let gu = Unaligned::new(&g, offset);
            let (mut m, mut v) = (shifted(&m0, offset), shifted(&v0, offset));
            adam_step_bf16_state_with(
                isa,
                Par::Seq,
                &cfg,
                step,
                seed,
                Bf16StateTensor {
                    param: p.get_mut(),
                    grad: gu.get(),
                    exp_avg: &mut m[offset..],
                    exp_avg_sq: &mut v[offset..],
                },
            )
            .unwrap();
            let at = format!("{name} {} len {len} offset {offset}", isa.name());
            assert!(p.guards_intact(), "{at}");
            for i in 0..len {
                let update = (rp[i] - p0[i] as f64).abs();
                let e = ulps(p.get()[i], rp[i], (p0[i] as f64).abs() + update);
                assert!(e <= 10.0, "{at}: param[{i}] off by {e} ulp");
                assert_eq!(m[offset + i], stochastic(fm[i], 0, i), "{at}: exp_avg[{i}]");
                assert_eq!(
                    v[offset + i],
                    stochastic(fv[i], 16, i),
                    "{at}: exp_avg_sq[{i}]"
                );
            }
        }
    }
}

/// 8-bit test values of one moment: many magnitudes (`m` signed, `v` >= 0, `-0.0` included),
/// some zeros, and one all-zero block when there are three or more.
fn quant_inputs(moment: Moment, seed: u64, len: usize) -> Vec<f32> {
    let mut r = rng(seed);
    let mut x = match moment {
        Moment::ExpAvg => log_uniform(&mut r, len, -9.0, 1.0, true),
        Moment::ExpAvgSq => log_uniform(&mut r, len, -14.0, 2.0, false),
    };
    for i in (0..len).step_by(97) {
        x[i] = if i % 2 == 0 { 0.0 } else { -0.0 };
    }
    if len > 2 * QUANT_BLOCK {
        x[QUANT_BLOCK..2 * QUANT_BLOCK].fill(0.0);
    }
    x
}

#[test]
fn eight_bit_codec_equals_the_reference_bitwise_on_every_isa_length_and_offset() {
    // Exact: codes and scales of `quantize_state` equal `reference::quantize_state`, values of
    // `dequantize_state` equal `reference::dequantize_state`, from unaligned starts.
    for (case, len) in lengths_around(&LANE_UNITS, 83).into_iter().enumerate() {
        let offset = case % 5;
        for moment in [Moment::ExpAvg, Moment::ExpAvgSq] {
            let x = quant_inputs(moment, case as u64, len);
            let (want_codes, want_scales) = reference::quantize_state(moment, &x);
            let want_values = reference::dequantize_state(moment, &want_codes, &want_scales);
            let input = Unaligned::new(&x, offset);
            for isa in Isa::available() {
                let at = format!("{} {moment:?} len {len} offset {offset}", isa.name());
                let mut codes = shifted(&vec![0u8; len], offset);
                let mut scales = vec![0f32; quant_scales_len(len)];
                quantize_state(isa, moment, input.get(), &mut codes[offset..], &mut scales)
                    .unwrap();
                assert_eq!(bits(&scales), bits(&want_scales), "{at}: scales");
                for (i, (&c, &w)) in codes[offset..].iter().zip(&want_codes).enumerate() {
                    assert_eq!(c, w, "{at}: code [{i}] of {:e}", x[i]);
                }
                let mut out = Unaligned::new(&vec![0f32; len], offset);
                dequantize_state(isa, moment, &codes[offset..], &scales, out.get_mut()).unwrap();
                assert!(out.guards_intact(), "{at}");
                assert_eq!(bits(out.get()), bits(&want_values), "{at}: decoded");
            }
        }
    }
}

#[test]
fn reference_conversions_equal_the_half_crate() {
    // The reference itself, against an independent implementation: nearest-even rounding of
    // every awkward value and widening of every 16-bit pattern (NaN: NaN with the sign).
    for format in [HalfFormat::Bf16, HalfFormat::F16] {
        for x in awkward_floats(200_003) {
            let (got, want) = (reference::f32_to_half(format, x, None), to_half(format, x));
            assert!(
                same_half(format, got, want),
                "{format:?} {x:e}: {got:#06x} vs {want:#06x}"
            );
        }
        for h in 0..=u16::MAX {
            let (got, want) = (reference::half_to_f32(format, h), from_half(format, h));
            let nan_pair = got.is_nan() && want.is_nan();
            assert!(
                got.to_bits() == want.to_bits()
                    || nan_pair && got.is_sign_negative() == want.is_sign_negative(),
                "{format:?} {h:#06x}: {got:e} vs {want:e}"
            );
        }
    }
    // Stochastic rounding with all-zero bits truncates, with all-one bits rounds every inexact
    // value away from zero.
    let x = 1.0f32 + 1.0 / 512.0; // between bf16 1.0 and 1.0 + 2^-7
    assert_eq!(reference::f32_to_half(HalfFormat::Bf16, x, Some(0)), 0x3f80);
    assert_eq!(
        reference::f32_to_half(HalfFormat::Bf16, x, Some(u32::MAX)),
        0x3f81
    );
    assert_eq!(
        reference::f32_to_half(HalfFormat::Bf16, 1.0, Some(u32::MAX)),
        0x3f80
    );
}
