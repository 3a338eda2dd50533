//! Criterion benches of the fewer-bytes paths, in bytes moved per second: the bf16/f16
//! master-weight steps (28 B/param: read g16, master, m, v; write master, m, v, p16), the
//! bf16-state step (20 B/param) and the 8-bit-state step (16 B/param + scales), beside the f32
//! step (28 B/param), cache-resident (2^14 + 5, odd tail) and DRAM-sized (2^22); and the
//! two-pass clipped step on 16 tensors. `diagprec bench --only adam_mixed` prints the same rates
//! beside the machine's measured bandwidth and the unfused sequence.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diagprec::{
    adam_step, adam_step_8bit_state, adam_step_bf16_state, adam_step_clipped_multi,
    adam_step_master_bf16, adam_step_master_f16, quant_scales_len, AdamConfig, AdamTensor,
    Bf16StateTensor, QuantStateTensor, Rounding,
};
use std::hint::black_box;

fn paths(c: &mut Criterion) {
    let cfg = AdamConfig::adamw(1e-3);
    let mut group = c.benchmark_group("adam_mixed");
    for n in [(1usize << 14) + 5, 1 << 22] {
        let mut p = vec![0.5f32; n];
        let g = vec![1e-2f32; n];
        let mut m = vec![0.0f32; n];
        let mut v = vec![1e-4f32; n];
        let g16 = vec![half::bf16::from_f32(1e-2).to_bits(); n];
        let g16f = vec![half::f16::from_f32(1e-2).to_bits(); n];
        let mut p16 = vec![0u16; n];
        let (mut m16, mut v16) = (vec![0u16; n], vec![0u16; n]);
        let (mut mc, mut vc) = (vec![0u8; n], vec![0u8; n]);
        let (mut ms, mut vs) = (
            vec![0f32; quant_scales_len(n)],
            vec![0f32; quant_scales_len(n)],
        );
        group.throughput(Throughput::Bytes(28 * n as u64));
        group.bench_with_input(BenchmarkId::new("f32", n), &n, |b, _| {
            b.iter(|| adam_step(&cfg, 10, &mut p, black_box(&g), &mut m, &mut v, None).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("master_bf16", n), &n, |b, _| {
            b.iter(|| {
                adam_step_master_bf16(
                    &cfg,
                    10,
                    &mut p,
                    &mut p16,
                    black_box(&g16),
                    &mut m,
                    &mut v,
                    Rounding::NearestEven,
                )
                .unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("master_bf16_stochastic", n), &n, |b, _| {
            b.iter(|| {
                let r = Rounding::Stochastic { seed: 1 };
                adam_step_master_bf16(
                    &cfg,
                    10,
                    &mut p,
                    &mut p16,
                    black_box(&g16),
                    &mut m,
                    &mut v,
                    r,
                )
                .unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("master_f16", n), &n, |b, _| {
            b.iter(|| {
                adam_step_master_f16(
                    &cfg,
                    10,
                    &mut p,
                    &mut p16,
                    black_box(&g16f),
                    &mut m,
                    &mut v,
                    Rounding::NearestEven,
                )
                .unwrap()
            })
        });
        group.throughput(Throughput::Bytes(20 * n as u64));
        group.bench_with_input(BenchmarkId::new("bf16_state", n), &n, |b, _| {
            b.iter(|| {
                let t = Bf16StateTensor {
                    param: &mut p,
                    grad: black_box(&g),
                    exp_avg: &mut m16,
                    exp_avg_sq: &mut v16,
                };
                adam_step_bf16_state(&cfg, 10, 1, t).unwrap()
            })
        });
        group.throughput(Throughput::Bytes(
            16 * n as u64 + 16 * quant_scales_len(n) as u64,
        ));
        group.bench_with_input(BenchmarkId::new("8bit_state", n), &n, |b, _| {
            b.iter(|| {
                let t = QuantStateTensor {
                    param: &mut p,
                    grad: black_box(&g),
                    exp_avg_codes: &mut mc,
                    exp_avg_scales: &mut ms,
                    exp_avg_sq_codes: &mut vc,
                    exp_avg_sq_scales: &mut vs,
                };
                adam_step_8bit_state(&cfg, 10, t).unwrap()
            })
        });
    }
    group.finish();
}

fn two_pass(c: &mut Criterion) {
    let cfg = AdamConfig::adamw(1e-3);
    let (count, len) = (16usize, 1usize << 18);
    let mut bufs: Vec<[Vec<f32>; 4]> = (0..count)
        .map(|_| {
            [
                vec![0.5; len],
                vec![1e-2; len],
                vec![0.0; len],
                vec![1e-4; len],
            ]
        })
        .collect();
    let mut group = c.benchmark_group("adam_clipped_multi");
    group.throughput(Throughput::Elements((count * len) as u64));
    group.bench_function("16x2^18", |b| {
        b.iter(|| {
            let mut tensors: Vec<AdamTensor<'_>> = bufs
                .iter_mut()
                .map(|[p, g, m, v]| AdamTensor {
                    param: p,
                    grad: g,
                    exp_avg: m,
                    exp_avg_sq: v,
                    max_exp_avg_sq: None,
                })
                .collect();
            adam_step_clipped_multi(&cfg, 10, &mut tensors, 1.0).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, paths, two_pass);
criterion_main!(benches);
