//! Criterion benches of the Gauss-Newton kernels. The identity-basis diagonal in bytes of X read
//! (cache-resident and DRAM-sized, odd `dim` and an unaligned start); the linear-layer, softmax
//! and in-basis diagonals in elements = GEMM multiply-adds (`N C d` or `N d d`); the GN^p step in
//! bytes moved. `diagprec bench --only gn` prints the same rates beside the machine's limits.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diagprec::{
    gn_diag_linear, gn_diag_softmax, gn_diag_weighted, gn_diag_weighted_in_basis, gn_step,
    GnConfig, GnEstimator, Samples,
};
use faer::Mat;
use std::hint::black_box;

fn identity(c: &mut Criterion) {
    let mut group = c.benchmark_group("gn_diag_weighted_f32");
    for (n, d, offset) in [
        (64usize, 1024usize, 0usize),
        (4096, 1024, 0),
        (4099, 1021, 1),
    ] {
        let x: Vec<f32> = (0..n * d + offset)
            .map(|i| (i % 101) as f32 * 0.01)
            .collect();
        let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
        let mut h = vec![0.0f32; d];
        group.throughput(Throughput::Bytes((4 * n * d) as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{n}x{d}+{offset}")),
            &n,
            |b, _| {
                b.iter(|| {
                    gn_diag_weighted(
                        Samples::strided(black_box(&x[offset..]), n, d, d).unwrap(),
                        Some(&w),
                        0.9,
                        &mut h,
                    )
                    .unwrap()
                })
            },
        );
    }
    group.finish();
}

fn layers(c: &mut Criterion) {
    let (n, classes, d) = (256usize, 1000usize, 1024usize);
    let x: Vec<f32> = (0..n * d)
        .map(|i| ((i % 37) as f32 - 18.0) * 0.05)
        .collect();
    let s: Vec<f32> = (0..n * classes).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut h = vec![0.0f32; classes * d];
    let mut hb = vec![0.0f32; classes];
    let mut group = c.benchmark_group("gn_diag_layer_f32");
    group.sample_size(20);
    group.throughput(Throughput::Elements((n * classes * d) as u64));
    group.bench_function("linear N=256 C=1000 d=1024", |b| {
        b.iter(|| {
            gn_diag_linear(
                Samples::new(black_box(&x), n, d).unwrap(),
                Samples::new(&s, n, classes).unwrap(),
                0.9,
                &mut h,
                Some(&mut hb),
            )
            .unwrap()
        })
    });
    for estimator in [GnEstimator::Exact, GnEstimator::Sampled] {
        group.bench_function(format!("softmax {estimator:?} N=256 C=1000 d=1024"), |b| {
            b.iter(|| {
                gn_diag_softmax(
                    Samples::new(black_box(&x), n, d).unwrap(),
                    Samples::new(&s, n, classes).unwrap(),
                    estimator,
                    3,
                    0.9,
                    &mut h,
                    Some(&mut hb),
                )
                .unwrap()
            })
        });
    }
    let u = Mat::<f32>::from_fn(d, d, |i, j| ((i * 7 + j * 3) % 11) as f32 * 0.01);
    let mut hu = vec![0.0f32; d];
    group.throughput(Throughput::Elements((n * d * d) as u64));
    group.bench_function("in dense basis N=256 d=1024", |b| {
        b.iter(|| {
            gn_diag_weighted_in_basis(
                Samples::strided(black_box(&x), n, d, d).unwrap(),
                None,
                u.as_ref(),
                0.9,
                &mut hu,
            )
            .unwrap()
        })
    });
    group.finish();
}

fn step(c: &mut Criterion) {
    let n = (1usize << 22) + 3;
    let mut p = vec![0.5f32; n];
    let g = vec![1e-2f32; n];
    let h = vec![0.3f32; n];
    let mut m = vec![0.0f32; n];
    let mut group = c.benchmark_group("gn_step_f32");
    group.throughput(Throughput::Bytes(16 * n as u64));
    group.bench_function("p=-1 2^22+3", |b| {
        b.iter(|| gn_step(&GnConfig::default(), 10, &mut p, black_box(&g), None, &h).unwrap())
    });
    let cfg = GnConfig {
        power: -0.5,
        beta1: 0.9,
        ..GnConfig::default()
    };
    group.throughput(Throughput::Bytes(24 * n as u64));
    group.bench_function("p=-1/2 momentum 2^22+3", |b| {
        b.iter(|| gn_step(&cfg, 10, &mut p, black_box(&g), Some(&mut m), &h).unwrap())
    });
    group.finish();
}

criterion_group!(benches, identity, layers, step);
criterion_main!(benches);
