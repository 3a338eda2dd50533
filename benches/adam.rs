//! Criterion benches of the Adam step: bytes moved per second (28 bytes per element: read
//! param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq), cache-resident and
//! DRAM-sized, with an odd tail and an unaligned start, and the multi-tensor call on many small
//! tensors. `diagprec bench` prints the same rates beside the machine's measured bandwidth.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diagprec::{adam_step, adam_step_multi, AdamConfig, AdamTensor};
use std::hint::black_box;

fn single_tensor(c: &mut Criterion) {
    let cfg = AdamConfig::adamw(1e-3);
    let mut group = c.benchmark_group("adam_step_f32");
    // 2^12 (L1/L2), 2^18 + 7 (L3, odd tail, unaligned start), 2^22 (DRAM).
    for (n, offset) in [(1usize << 12, 0usize), ((1 << 18) + 7, 1), (1 << 22, 0)] {
        let mut p = vec![0.5f32; n + offset];
        let g = vec![1e-2f32; n + offset];
        let mut m = vec![0.0f32; n + offset];
        let mut v = vec![1e-4f32; n + offset];
        group.throughput(Throughput::Bytes(28 * n as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{n}+{offset}")),
            &n,
            |b, _| {
                b.iter(|| {
                    adam_step(
                        &cfg,
                        10,
                        &mut p[offset..],
                        black_box(&g[offset..]),
                        &mut m[offset..],
                        &mut v[offset..],
                        None,
                    )
                    .unwrap()
                })
            },
        );
    }
    group.finish();
}

fn many_small_tensors(c: &mut Criterion) {
    let cfg = AdamConfig::adamw(1e-3);
    let (count, len) = (1000usize, 1024usize);
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
    let mut group = c.benchmark_group("adam_step_multi_f32");
    group.throughput(Throughput::Bytes((28 * count * len) as u64));
    group.bench_function("1000x1024", |b| {
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
            adam_step_multi(&cfg, 10, &mut tensors).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, single_tensor, many_small_tensors);
criterion_main!(benches);
