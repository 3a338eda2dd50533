//! Adam/AdamW: parity with torch fixtures, every ISA against the f64 reference, bitwise
//! agreement across ISAs and thread counts, the multi-tensor entry point, bad input.

mod common;

use common::*;
use diagprec::grad_norm_multi_with;
use diagprec::{
    adam_step, adam_step_multi, adam_step_multi_with, adam_step_with, reference, Adam, AdamConfig,
    AdamTensor, ErrorKind, Isa, Par,
};
use std::collections::HashMap;
use std::path::PathBuf;

/// One torch trajectory from `tests/fixtures/adam` (see `scripts/torch_adam_fixtures.py`).
struct Fixture {
    name: String,
    config: AdamConfig,
    param0: Vec<f32>,
    grads: Vec<Vec<f32>>,
    params: Vec<Vec<f32>>,
    state: HashMap<String, Vec<f32>>,
}

fn parse_hex(words: &[&str]) -> Vec<f32> {
    words
        .iter()
        .map(|w| f32::from_bits(u32::from_str_radix(w, 16).expect("hex f32")))
        .collect()
}

fn load_fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adam");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let fixtures: Vec<Fixture> = paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let mut config = AdamConfig::default();
            let (mut param0, mut grads, mut params) = (Vec::new(), Vec::new(), Vec::new());
            let mut state = HashMap::new();
            for line in text.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words[0] {
                    "optimizer" => config.decoupled_weight_decay = words[1] == "adamw",
                    "config" => {
                        for kv in &words[1..] {
                            let (k, v) = kv.split_once('=').unwrap();
                            let x: f64 = v.parse().unwrap();
                            match k {
                                "lr" => config.lr = x,
                                "beta1" => config.beta1 = x,
                                "beta2" => config.beta2 = x,
                                "eps" => config.eps = x,
                                "weight_decay" => config.weight_decay = x,
                                "amsgrad" => config.amsgrad = x != 0.0,
                                "maximize" => config.maximize = x != 0.0,
                                other => panic!("unknown key {other}"),
                            }
                        }
                    }
                    "param0" => param0 = parse_hex(&words[1..]),
                    "grad" => grads.push(parse_hex(&words[1..])),
                    "param" => params.push(parse_hex(&words[1..])),
                    "exp_avg" | "exp_avg_sq" | "max_exp_avg_sq" => {
                        state.insert(words[0].to_string(), parse_hex(&words[1..]));
                    }
                    _ => {}
                }
            }
            Fixture {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                config,
                param0,
                grads,
                params,
                state,
            }
        })
        .collect();
    assert!(fixtures.len() >= 9, "fixtures missing from {dir:?}");
    fixtures
}

/// Replays a fixture; returns the worst `max|ours - torch| / max|torch|` over all steps and the
/// final state.
fn replay(isa: Isa, f: &Fixture, grad_scale: f32) -> (f64, [Vec<f32>; 4]) {
    let n = f.param0.len();
    let cfg = AdamConfig {
        inv_grad_scale: 1.0 / grad_scale as f64,
        ..f.config
    };
    let mut p = f.param0.clone();
    let (mut m, mut v, mut x) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut worst = 0.0f64;
    for (t, (g, expected)) in f.grads.iter().zip(&f.params).enumerate() {
        let g: Vec<f32> = g.iter().map(|&x| x * grad_scale).collect();
        let tensor = AdamTensor {
            param: &mut p,
            grad: &g,
            exp_avg: &mut m,
            exp_avg_sq: &mut v,
            max_exp_avg_sq: cfg.amsgrad.then_some(&mut x[..]),
        };
        adam_step_with(isa, Par::Seq, &cfg, t as u64 + 1, tensor).unwrap();
        let scale = expected.iter().fold(0.0f64, |a, &b| a.max(b.abs() as f64));
        let err = p
            .iter()
            .zip(expected)
            .fold(0.0f64, |a, (&o, &e)| a.max((o as f64 - e as f64).abs()));
        worst = worst.max(err / scale);
    }
    (worst, [p, m, v, x])
}

#[test]
fn matches_torch_adam_and_adamw_trajectories() {
    for f in load_fixtures() {
        for isa in Isa::available() {
            let (worst, [_, m, v, x]) = replay(isa, &f, 1.0);
            assert!(
                worst <= 5e-7,
                "{} on {}: max|ours - torch| / max|param| = {worst:e} over 50 steps",
                f.name,
                isa.name()
            );
            for (name, ours) in [("exp_avg", &m), ("exp_avg_sq", &v), ("max_exp_avg_sq", &x)] {
                if let Some(torch) = f.state.get(name) {
                    let scale = torch.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
                    for (o, t) in ours.iter().zip(torch) {
                        assert!(
                            (o - t).abs() <= 4.0 * f32::EPSILON * scale,
                            "{}: {name}",
                            f.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn unscaling_by_a_power_of_two_is_exact() {
    let f = load_fixtures()
        .into_iter()
        .find(|f| f.name == "adam_default")
        .unwrap();
    let isa = Isa::detect();
    let (_, plain) = replay(isa, &f, 1.0);
    let (_, scaled) = replay(isa, &f, 1024.0);
    for (a, b) in plain.iter().zip(&scaled) {
        assert_eq!(bits(a), bits(b));
    }
}

fn configs() -> Vec<(&'static str, AdamConfig)> {
    vec![
        ("default", AdamConfig::default()),
        (
            "amsgrad",
            AdamConfig {
                amsgrad: true,
                ..Default::default()
            },
        ),
        (
            "l2",
            AdamConfig {
                weight_decay: 0.3,
                lr: 1e-2,
                ..Default::default()
            },
        ),
        (
            "adamw-maximize-unscale",
            AdamConfig {
                maximize: true,
                inv_grad_scale: 1.0 / 3.0,
                ..AdamConfig::adamw(3e-2)
            },
        ),
        (
            "low-betas-amsgrad-l2",
            AdamConfig {
                beta1: 0.2,
                beta2: 0.4,
                amsgrad: true,
                weight_decay: 0.01,
                eps: 1e-3,
                ..Default::default()
            },
        ),
    ]
}

/// State before a step: every buffer with several magnitudes; `v <= vmax` as in a real run.
fn state(seed: u64, n: usize) -> [Vec<f32>; 5] {
    let mut r = rng(seed);
    let p = log_uniform(&mut r, n, -3.0, 1.0, true);
    let g = log_uniform(&mut r, n, -6.0, 2.0, true);
    let m = log_uniform(&mut r, n, -4.0, 0.0, true);
    let v = log_uniform(&mut r, n, -8.0, 1.0, false);
    let x: Vec<f32> = v
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 3 == 0 { v } else { v * 2.0 })
        .collect();
    [p, g, m, v, x]
}

#[test]
fn every_isa_matches_the_f64_reference_on_boundary_lengths_and_unaligned_starts() {
    for (name, cfg) in configs() {
        for (case, n) in boundary_lengths().into_iter().enumerate() {
            let offset = case % 4;
            let step = [1u64, 7, 1000][case % 3];
            let [p, g, m, v, x] = state(case as u64, n);
            // The reference, from the same f32 inputs.
            let (mut rp, mut rm, mut rv, mut rx) = (to_f64(&p), to_f64(&m), to_f64(&v), to_f64(&x));
            reference::adam_step(
                &cfg,
                step,
                &mut rp,
                &to_f64(&g),
                &mut rm,
                &mut rv,
                Some(&mut rx),
            );
            for isa in Isa::available() {
                let (mut up, ug, mut um, mut uv, mut ux) = (
                    Unaligned::new(&p, offset),
                    Unaligned::new(&g, offset),
                    Unaligned::new(&m, offset),
                    Unaligned::new(&v, offset),
                    Unaligned::new(&x, offset),
                );
                let tensor = AdamTensor {
                    param: up.get_mut(),
                    grad: ug.get(),
                    exp_avg: um.get_mut(),
                    exp_avg_sq: uv.get_mut(),
                    max_exp_avg_sq: Some(ux.get_mut()),
                };
                adam_step_with(isa, Par::Seq, &cfg, step, tensor).unwrap();
                let at = format!("{name}, {}, n = {n}, offset {offset}", isa.name());
                assert!(
                    up.guards_intact()
                        && um.guards_intact()
                        && uv.guards_intact()
                        && ux.guards_intact(),
                    "{at}: wrote outside"
                );
                for i in 0..n {
                    // The effective gradient's magnitude, before any cancellation of its terms.
                    let l2 = if cfg.decoupled_weight_decay {
                        0.0
                    } else {
                        cfg.weight_decay
                    };
                    let g_eff = (g[i] as f64 * cfg.inv_grad_scale).abs() + (l2 * p[i] as f64).abs();
                    // m: within 4 ulp of its inputs' magnitude.
                    let e = ulps(um.get()[i], rm[i], (m[i] as f64).abs().max(g_eff));
                    assert!(e <= 4.0, "{at}: exp_avg[{i}] off by {e} ulp");
                    let e = ulps(uv.get()[i], rv[i], (v[i] as f64).max(g_eff * g_eff));
                    assert!(e <= 4.0, "{at}: exp_avg_sq[{i}] off by {e} ulp");
                    if cfg.amsgrad {
                        let e = ulps(ux.get()[i], rx[i], (x[i] as f64).max(g_eff * g_eff));
                        assert!(e <= 4.0, "{at}: max_exp_avg_sq[{i}] off by {e} ulp");
                    } else {
                        assert_eq!(
                            ux.get()[i].to_bits(),
                            x[i].to_bits(),
                            "{at}: vmax written without amsgrad"
                        );
                    }
                    // theta: within 10 ulp of |theta| + |update|, where the update is measured
                    // at m's magnitude before cancellation (8 held for PyTorch's `/ sqrt(bc2)`;
                    // the kernel's multiply by its f32 reciprocal adds up to about one ulp).
                    let bc1 = 1.0 - cfg.beta1.powf(step as f64);
                    let bc2 = 1.0 - cfg.beta2.powf(step as f64);
                    let v_hat = if cfg.amsgrad { rx[i] } else { rv[i] };
                    let denom = v_hat.sqrt() / bc2.sqrt() + cfg.eps;
                    let update =
                        cfg.lr / bc1 * (m[i] as f64).abs().max(g_eff).max(rm[i].abs()) / denom;
                    let e = ulps(up.get()[i], rp[i], (p[i] as f64).abs() + update);
                    assert!(e <= 10.0, "{at}: param[{i}] off by {e} ulp");
                }
            }
        }
    }
}

#[test]
fn isas_and_thread_counts_agree_bitwise() {
    let n = 300_007;
    for (name, cfg) in configs() {
        let [p0, g, m0, v0, x0] = state(42, n);
        let run = |isa: Isa, par: Par| {
            let (mut p, mut m, mut v, mut x) = (p0.clone(), m0.clone(), v0.clone(), x0.clone());
            for step in 1..=3 {
                let tensor = AdamTensor {
                    param: &mut p,
                    grad: &g,
                    exp_avg: &mut m,
                    exp_avg_sq: &mut v,
                    max_exp_avg_sq: Some(&mut x),
                };
                adam_step_with(isa, par, &cfg, step, tensor).unwrap();
            }
            [bits(&p), bits(&m), bits(&v), bits(&x)]
        };
        let expected = run(Isa::scalar(), Par::Seq);
        for isa in Isa::available() {
            assert_eq!(
                run(isa, Par::Seq),
                expected,
                "{name}: {} differs from scalar",
                isa.name()
            );
            for threads in [1, 2, 3] {
                diagprec::set_num_threads(threads).unwrap();
                assert_eq!(
                    run(isa, Par::Pool),
                    expected,
                    "{name}: {} threads differ",
                    threads
                );
            }
        }
    }
    diagprec::set_num_threads(0).unwrap();
}

#[test]
fn multi_tensor_step_equals_one_call_per_tensor() {
    let lengths = [0usize, 1, 17, 1000, 40_000, 3, 16_384, 16_385];
    for (name, cfg) in configs() {
        let states: Vec<[Vec<f32>; 5]> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| state(i as u64, n))
            .collect();
        let mut single = states.clone();
        for [p, g, m, v, x] in single.iter_mut() {
            adam_step(&cfg, 5, p, g, m, v, Some(x)).unwrap();
        }
        for isa in Isa::available() {
            for par in [Par::Seq, Par::Pool] {
                let mut multi = states.clone();
                let mut tensors: Vec<AdamTensor<'_>> = multi
                    .iter_mut()
                    .map(|[p, g, m, v, x]| AdamTensor {
                        param: p,
                        grad: g,
                        exp_avg: m,
                        exp_avg_sq: v,
                        max_exp_avg_sq: Some(x),
                    })
                    .collect();
                adam_step_multi_with(isa, par, &cfg, 5, &mut tensors).unwrap();
                for (a, b) in multi.iter().zip(&single) {
                    for (x, y) in a.iter().zip(b) {
                        assert_eq!(bits(x), bits(y), "{name} on {}", isa.name());
                    }
                }
            }
        }
    }
}

#[test]
fn non_finite_gradient_skips_the_step_and_writes_nothing() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for &(n, at) in &[(1usize, 0usize), (37, 36), (100_000, 50_001)] {
            let [mut p, mut g, mut m, mut v, mut x] = state(7, n);
            g[at] = bad;
            let before = [bits(&p), bits(&m), bits(&v), bits(&x)];
            let cfg = AdamConfig {
                check_finite: true,
                amsgrad: true,
                ..Default::default()
            };
            let err = adam_step(&cfg, 1, &mut p, &g, &mut m, &mut v, Some(&mut x)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NonFinite);
            assert_eq!([bits(&p), bits(&m), bits(&v), bits(&x)], before);
            // Without the check the step proceeds (and poisons that element, as torch would).
            let cfg = AdamConfig {
                check_finite: false,
                ..cfg
            };
            adam_step(&cfg, 1, &mut p, &g, &mut m, &mut v, Some(&mut x)).unwrap();
            assert!(!p[at].is_finite() || !m[at].is_finite());
        }
    }
    // A finite gradient that overflows when unscaled is caught too.
    let [mut p, mut g, mut m, mut v, _] = state(8, 9);
    g[4] = 3e38;
    let cfg = AdamConfig {
        check_finite: true,
        inv_grad_scale: 4.0,
        ..Default::default()
    };
    let err = adam_step(&cfg, 1, &mut p, &g, &mut m, &mut v, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NonFinite);
    // Multi-tensor: a NaN in the last tensor leaves every tensor untouched.
    let mut states: Vec<[Vec<f32>; 5]> = (0..4).map(|i| state(i, 20_000)).collect();
    states[3][1][19_999] = f32::NAN;
    let before: Vec<Vec<Vec<u32>>> = states
        .iter()
        .map(|s| s.iter().map(|b| bits(b)).collect())
        .collect();
    let mut tensors: Vec<AdamTensor<'_>> = states
        .iter_mut()
        .map(|[p, g, m, v, _]| AdamTensor {
            param: p,
            grad: g,
            exp_avg: m,
            exp_avg_sq: v,
            max_exp_avg_sq: None,
        })
        .collect();
    let cfg = AdamConfig {
        check_finite: true,
        ..Default::default()
    };
    assert_eq!(
        adam_step_multi(&cfg, 1, &mut tensors).unwrap_err().kind(),
        ErrorKind::NonFinite
    );
    let after: Vec<Vec<Vec<u32>>> = states
        .iter()
        .map(|s| s.iter().map(|b| bits(b)).collect())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn bad_input_is_rejected_and_nothing_changes() {
    let [p0, g, m0, v0, x0] = state(3, 33);
    let bad_configs: Vec<(AdamConfig, u64)> = vec![
        (
            AdamConfig {
                beta1: 1.0,
                ..Default::default()
            },
            1,
        ),
        (
            AdamConfig {
                beta1: -0.1,
                ..Default::default()
            },
            1,
        ),
        (
            AdamConfig {
                beta2: 1.0,
                ..Default::default()
            },
            1,
        ),
        (
            AdamConfig {
                beta2: f64::NAN,
                ..Default::default()
            },
            1,
        ),
        (
            AdamConfig {
                eps: 0.0,
                ..Default::default()
            },
            1,
        ),
        (
            AdamConfig {
                eps: f64::INFINITY,
                ..Default::default()
            },
            1,
        ),
        (
            AdamConfig {
                lr: -1e-3,
                ..Default::default()
            },
            1,
        ),
        (
            AdamConfig {
                lr: f64::NAN,
                ..Default::default()
            },
            1,
        ),
        (
            AdamConfig {
                weight_decay: -1.0,
                ..Default::default()
            },
            1,
        ),
        (
            AdamConfig {
                inv_grad_scale: 0.0,
                ..Default::default()
            },
            1,
        ),
        (AdamConfig::default(), 0),
    ];
    for (cfg, step) in bad_configs {
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        let err = adam_step(&cfg, step, &mut p, &g, &mut m, &mut v, None).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidHyperparameter,
            "{cfg:?} step {step}"
        );
        assert!(!err.message().is_empty());
        assert_eq!(
            [bits(&p), bits(&m), bits(&v)],
            [bits(&p0), bits(&m0), bits(&v0)]
        );
    }
    let cfg = AdamConfig::default();
    let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
    let err = adam_step(&cfg, 1, &mut p, &g[..32], &mut m, &mut v, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Length);
    assert!(err.message().contains("grad"), "{}", err.message());
    let mut short = x0[..5].to_vec();
    let amsgrad = AdamConfig {
        amsgrad: true,
        ..cfg
    };
    let err = adam_step(&amsgrad, 1, &mut p, &g, &mut m, &mut v, Some(&mut short)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Length);
    let err = adam_step(&amsgrad, 1, &mut p, &g, &mut m, &mut v, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        [bits(&p), bits(&m), bits(&v)],
        [bits(&p0), bits(&m0), bits(&v0)]
    );
}

#[test]
fn the_optimizer_equals_the_kernel_calls_and_survives_a_skipped_step() {
    let cfg = AdamConfig {
        amsgrad: true,
        check_finite: true,
        ..AdamConfig::adamw(1e-2)
    };
    let lengths = [5usize, 300];
    let mut opt = Adam::new(cfg, &lengths).unwrap();
    let mut params: Vec<Vec<f32>> = lengths
        .iter()
        .map(|&n| state(n as u64, n)[0].clone())
        .collect();
    let mut manual = params.clone();
    let mut manual_state: Vec<[Vec<f32>; 3]> = lengths
        .iter()
        .map(|&n| [vec![0.0; n], vec![0.0; n], vec![0.0; n]])
        .collect();
    for step in 1..=10u64 {
        let grads: Vec<Vec<f32>> = lengths
            .iter()
            .map(|&n| state(step * 100 + n as u64, n)[1].clone())
            .collect();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let grad_views: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &grad_views).unwrap();
        for ((p, g), [m, v, x]) in manual.iter_mut().zip(&grads).zip(manual_state.iter_mut()) {
            adam_step(&cfg, step, p, g, m, v, Some(x)).unwrap();
        }
    }
    assert_eq!(opt.steps_taken(), 10);
    for (a, b) in params.iter().zip(&manual) {
        assert_eq!(bits(a), bits(b));
    }
    // A non-finite gradient: skipped, state and count unchanged.
    let snapshot = params.clone();
    let mut grads: Vec<Vec<f32>> = lengths.iter().map(|&n| vec![0.5; n]).collect();
    grads[1][299] = f32::INFINITY;
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let grad_views: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    assert_eq!(
        opt.step(&mut views, &grad_views).unwrap_err().kind(),
        ErrorKind::NonFinite
    );
    assert_eq!(opt.steps_taken(), 10);
    assert_eq!(params, snapshot);
    // Wrong number of tensors.
    let mut views: Vec<&mut [f32]> = params
        .iter_mut()
        .take(1)
        .map(|p| p.as_mut_slice())
        .collect();
    assert_eq!(
        opt.step(&mut views, &grad_views[..1]).unwrap_err().kind(),
        ErrorKind::Length
    );
}

#[test]
fn grad_norm_equals_the_f64_reference_on_every_isa_length_and_offset() {
    // Bound: x_i = g_i * s is the reference's own f32 value and x_i^2 is fused into the
    // accumulation; a 256-element run is summed in f32 by four accumulators per lane (at most
    // 66 terms each: 63 groups of four plus 3 left over), combined in 2 + 4 more roundings
    // (accumulators, then at most 16 lanes): relative error <= 71 u (u = 2^-24) of the run's
    // sum of positive terms; the runs add in f64. The norm's relative error is half the sum's:
    // |norm - reference| <= 36 u reference (measured: 0.9 u). found_inf: exact.
    let bound = 36.0 * f32::EPSILON as f64 / 2.0;
    let lens = lengths_around(&[4, 8, 16, 32, 64, 256, 16_384], 91);
    for (case, &len) in lens.iter().enumerate() {
        let offset = case % 5;
        let mut r = rng(case as u64);
        // Three tensors: this length, a short one and one of the next length in the list.
        let sizes = [len, case % 17, lens[(case + 1) % lens.len()]];
        let grads: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| log_uniform(&mut r, n, -6.0, 2.0, true))
            .collect();
        let scale = [1.0, 0.125, 1.0 / 3.0][case % 3];
        for isa in Isa::available() {
            let at = format!("{} len {len} offset {offset}", isa.name());
            let held: Vec<Unaligned> = grads.iter().map(|g| Unaligned::new(g, offset)).collect();
            let views: Vec<&[f32]> = held.iter().map(|g| g.get()).collect();
            let want = reference::grad_norm(&views, scale);
            let got = grad_norm_multi_with(isa, Par::Seq, &views, scale).unwrap();
            assert!(!got.found_inf && !want.found_inf, "{at}");
            assert!(
                (got.norm - want.norm).abs() <= bound * want.norm,
                "{at}: {} vs {}",
                got.norm,
                want.norm
            );
            // One non-finite value, first or last in the first tensor: found, as the reference.
            if len > 0 {
                for (at_index, bad) in [
                    (0, f32::NAN),
                    (len - 1, f32::INFINITY),
                    (len / 2, f32::NEG_INFINITY),
                ] {
                    let mut g = grads[0].clone();
                    g[at_index] = bad;
                    let held = Unaligned::new(&g, offset);
                    let views = [held.get(), grads[1].as_slice()];
                    let want = reference::grad_norm(&views, scale);
                    let got = grad_norm_multi_with(isa, Par::Seq, &views, scale).unwrap();
                    assert!(want.found_inf && got.found_inf, "{at}: {bad} at {at_index}");
                    assert!(!got.norm.is_finite(), "{at}: {bad} at {at_index}");
                }
            }
        }
    }
    // An f32 overflow of g * scale is non-finite too.
    let big = [f32::MAX, 1.0];
    assert!(reference::grad_norm(&[&big], 4.0).found_inf);
    for isa in Isa::available() {
        assert!(
            grad_norm_multi_with(isa, Par::Seq, &[&big], 4.0)
                .unwrap()
                .found_inf
        );
    }
}
