//! Criterion benches of the bases: the Kronecker rotation `Q_L^T G Q_R` and back (4 n^3 flops,
//! reported as elements of G per second), refresh by eigh and by power iteration + QR, and a
//! SOAP-like step (rotate, Adam, rotate back). `diagprec bench --only basis` prints the same
//! rates beside faer's own GEMM rate, as ratios. Sizes stay small enough for a 2-core machine
//! (a 2048 x 2048 GEMM takes about a second there): 256 and 1024.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diagprec::{
    rotated_adam_step_with, AdamConfig, AdamTensor, Basis, DenseBasis, Isa, KroneckerBasis, Par,
    RefreshMethod,
};
use faer::Mat;
use std::hint::black_box;

fn symmetric(n: usize, seed: usize) -> Mat<f32> {
    Mat::from_fn(n, n, |i, j| {
        let (i, j) = (i.min(j), i.max(j));
        (((i * 31 + j * 17 + seed * 7) % 101) as f32 - 50.0) * 0.01
            + if i == j { 1.0 + i as f32 * 0.01 } else { 0.0 }
    })
}

fn basis(n: usize, seed: usize) -> DenseBasis {
    DenseBasis::from_symmetric(symmetric(n, seed).as_ref())
        .unwrap()
        .0
}

fn rotation(c: &mut Criterion) {
    let mut group = c.benchmark_group("kron_rotate_f32");
    group.sample_size(10);
    for n in [256usize, 1024] {
        let kb = KroneckerBasis::from_bases(basis(n, 1), basis(n, 2));
        let g: Vec<f32> = (0..n * n).map(|i| (i % 89) as f32 * 1e-3).collect();
        let (mut out, mut work) = (vec![0.0f32; n * n], vec![0.0f32; n * n]);
        group.throughput(Throughput::Elements((n * n) as u64));
        group.bench_with_input(BenchmarkId::new("into", n), &n, |b, _| {
            b.iter(|| kb.rotate_into(black_box(&g), &mut out, &mut work).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("out", n), &n, |b, _| {
            b.iter(|| kb.rotate_out(black_box(&g), &mut out, &mut work).unwrap())
        });
    }
    group.finish();
}

fn refresh(c: &mut Criterion) {
    let mut group = c.benchmark_group("refresh_f32");
    group.sample_size(10);
    for n in [256usize, 1024] {
        let stat = symmetric(n, 3);
        let old = basis(n, 4);
        group.throughput(Throughput::Elements((n * n) as u64));
        for (name, method) in [
            ("eigh", RefreshMethod::Eigh),
            ("power_qr", RefreshMethod::PowerQr),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| old.refreshed(stat.as_ref(), method, Par::Pool).unwrap())
            });
        }
    }
    group.finish();
}

fn soap_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("soap_like_step_f32");
    group.sample_size(10);
    let cfg = AdamConfig::adamw(1e-3);
    for n in [256usize, 1024] {
        let basis = Basis::Kronecker(KroneckerBasis::from_bases(basis(n, 5), basis(n, 6)));
        let len = n * n;
        let mut p = vec![0.5f32; len];
        let g: Vec<f32> = (0..len).map(|i| (i % 89) as f32 * 1e-3).collect();
        let (mut m, mut v, mut ws) = (vec![0.0f32; len], vec![1e-4f32; len], vec![0.0f32; 2 * len]);
        group.throughput(Throughput::Elements(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                rotated_adam_step_with(
                    Isa::detect(),
                    Par::Pool,
                    &cfg,
                    10,
                    &basis,
                    AdamTensor {
                        param: &mut p,
                        grad: black_box(&g),
                        exp_avg: &mut m,
                        exp_avg_sq: &mut v,
                        max_exp_avg_sq: None,
                    },
                    &mut ws,
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rotation, refresh, soap_step);
criterion_main!(benches);
