//! Gauss-Newton rows. The identity-basis diagonal against the machine's read bandwidth (it reads
//! X once: 4 bytes per element of X; `h` is cache-resident); the linear-layer, softmax, in-basis
//! and Kronecker diagonals against faer's own GEMM rate for the same GEMM shapes (flops of the
//! GEMMs they contain; for the Kronecker kernel the limit is faer's time for all four GEMMs);
//! the GN^p step against the streaming bandwidth of its access pattern.

use super::{
    faer_gemm_closure, interleaved, stream_bytes, stream_closure, with_threads, Aligned, Bench, Row,
};
use diagprec::{
    gn_diag_linear, gn_diag_softmax, gn_diag_softmax_in_kronecker, gn_diag_weighted,
    gn_diag_weighted_in_basis, gn_step, GnConfig, GnEstimator, Samples, SophiaClip,
};
use faer::Mat;

pub fn rows(b: &mut Bench) {
    identity_rows(b);
    layer_rows(b);
    basis_rows(b);
    step_rows(b);
}

fn identity_rows(b: &mut Bench) {
    let shapes: &[(usize, usize)] = if b.quick {
        &[(4096, 1024)]
    } else {
        &[(256, 1024), (4096, 1024), (16384, 1024)]
    };
    for &(n, d) in shapes {
        let x = Aligned::new(n * d, |i| ((i % 101) as f32 - 50.0) * 0.01);
        let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
        let mut h = vec![0.0f32; d];
        for threads in b.thread_counts() {
            let budget = b.budget();
            let (secs, limit) = with_threads(threads, || {
                let mut stream = stream_closure::<0, 1>(n * d);
                let [secs, stream_secs] = interleaved(
                    budget,
                    [
                        &mut || {
                            gn_diag_weighted(
                                Samples::strided(x.get(), n, d, d).unwrap(),
                                Some(&w),
                                0.9,
                                &mut h,
                            )
                            .unwrap()
                        },
                        &mut stream,
                    ],
                );
                (secs, stream_bytes::<0, 1>(n * d) / stream_secs / 1e9)
            });
            let bytes = (n * d * 4) as f64;
            b.push(Row {
                kernel: "gn_diag_weighted f32".into(),
                shape: format!("N={n} d={d}"),
                threads,
                rate: bytes / secs / 1e9,
                unit: "GB/s",
                limit,
                limit_name: "read stream, 1 array",
                note: if bytes < 32e6 {
                    // What limits it: from L2/L3 one core's FMA + accumulator traffic (about
                    // 2.5 elements per cycle) is below the cache's read rate; from DRAM, or
                    // on all cores, it reaches the bandwidth.
                    format!(
                        "{:.0} MB of X read once; cache-resident: compute-bound on 1 core",
                        bytes / 1e6
                    )
                } else {
                    format!("{:.0} MB of X read once", bytes / 1e6)
                },
            });
        }
    }
}

fn layer_rows(b: &mut Bench) {
    let (n, c, d) = (256usize, 1000usize, 1024usize);
    let x: Vec<f32> = (0..n * d)
        .map(|i| ((i % 37) as f32 - 18.0) * 0.05)
        .collect();
    let s: Vec<f32> = (0..n * c).map(|i| (i % 13) as f32 * 0.01).collect();
    let z: Vec<f32> = (0..n * c).map(|i| ((i % 29) as f32 - 14.0) * 0.2).collect();
    // One output per kernel: the closures below are alive at once.
    let mut h = [(); 3].map(|()| vec![0.0f32; c * d]);
    let mut hb = [(); 3].map(|()| vec![0.0f32; c]);
    let flops = 2.0 * (n * c * d) as f64;
    for threads in b.thread_counts() {
        let budget = b.budget();
        let (linear, exact, sampled, limit) = with_threads(threads, || {
            // The kernels and faer's GEMM alternate, so a load change on a shared machine hits
            // both sides of each ratio alike.
            let mut gemm = faer_gemm_closure(c, d, n, threads);
            let [h0, h1, h2] = &mut h;
            let [hb0, hb1, hb2] = &mut hb;
            let [linear, exact, sampled, gemm] = interleaved(
                budget,
                [
                    &mut || {
                        gn_diag_linear(
                            Samples::new(&x, n, d).unwrap(),
                            Samples::new(&s, n, c).unwrap(),
                            0.9,
                            h0,
                            Some(&mut *hb0),
                        )
                        .unwrap()
                    },
                    &mut || {
                        gn_diag_softmax(
                            Samples::new(&x, n, d).unwrap(),
                            Samples::new(&z, n, c).unwrap(),
                            GnEstimator::Exact,
                            5,
                            0.9,
                            h1,
                            Some(&mut *hb1),
                        )
                        .unwrap()
                    },
                    &mut || {
                        gn_diag_softmax(
                            Samples::new(&x, n, d).unwrap(),
                            Samples::new(&z, n, c).unwrap(),
                            GnEstimator::Sampled,
                            5,
                            0.9,
                            h2,
                            Some(&mut *hb2),
                        )
                        .unwrap()
                    },
                    &mut gemm,
                ],
            );
            (linear, exact, sampled, flops / gemm / 1e9)
        });
        for (name, secs, note) in [
            ("gn_diag_linear f32", linear, "S given; + square X, scale h"),
            (
                "gn_diag_softmax f32 exact",
                exact,
                "+ softmax factors (f32 lanes)",
            ),
            (
                "gn_diag_softmax f32 sampled",
                sampled,
                "+ softmax and label draws",
            ),
        ] {
            b.push(Row {
                kernel: name.into(),
                shape: format!("N={n} C={c} d={d}"),
                threads,
                rate: flops / secs / 1e9,
                unit: "GFLOP/s",
                limit,
                limit_name: "faer GEMM, same shape",
                note: note.into(),
            });
        }
    }
}

fn basis_rows(b: &mut Bench) {
    let (n, c, d) = (256usize, 1000usize, 1024usize);
    let x: Vec<f32> = (0..n * d)
        .map(|i| ((i % 37) as f32 - 18.0) * 0.05)
        .collect();
    let z: Vec<f32> = (0..n * c).map(|i| ((i % 29) as f32 - 14.0) * 0.2).collect();
    let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
    let u = Mat::<f32>::from_fn(d, d, |i, j| ((i * 7 + j * 3) % 11) as f32 * 0.01);
    let qc = Mat::<f32>::from_fn(c, c, |i, j| ((i * 5 + j) % 13) as f32 * 0.01);
    let mut h = vec![0.0f32; d];
    let mut hk = vec![0.0f32; c * d];
    let mut hkb = vec![0.0f32; c];
    for threads in b.thread_counts() {
        let budget = b.budget();
        let (dense, kron, dense_limit, kron_limit) = with_threads(threads, || {
            let mut dense_gemm = faer_gemm_closure(n, d, d, threads);
            // faer's time for the Kronecker kernel's GEMMs: P Q_C and P (Q_C o Q_C) (n x c x c
            // each), X Q_X (n x d x d), A^T B (c x d x n).
            let mut pq = faer_gemm_closure(n, c, c, threads);
            let mut xq = faer_gemm_closure(n, d, d, threads);
            let mut atb = faer_gemm_closure(c, d, n, threads);
            let mut kron_gemms = || {
                pq();
                pq();
                xq();
                atb();
            };
            let [dense, kron, dense_gemm, kron_faer] = interleaved(
                budget,
                [
                    &mut || {
                        gn_diag_weighted_in_basis(
                            Samples::strided(&x, n, d, d).unwrap(),
                            Some(&w),
                            u.as_ref(),
                            0.9,
                            &mut h,
                        )
                        .unwrap()
                    },
                    &mut || {
                        gn_diag_softmax_in_kronecker(
                            Samples::new(&x, n, d).unwrap(),
                            Samples::new(&z, n, c).unwrap(),
                            GnEstimator::Exact,
                            0,
                            qc.as_ref(),
                            u.as_ref(),
                            0.9,
                            &mut hk,
                            Some(&mut hkb),
                        )
                        .unwrap()
                    },
                    &mut dense_gemm,
                    &mut kron_gemms,
                ],
            );
            let dense_limit = 2.0 * (n * d * d) as f64 / dense_gemm / 1e9;
            (dense, kron, dense_limit, kron_faer)
        });
        let dense_flops = 2.0 * (n * d * d) as f64;
        b.push(Row {
            kernel: "gn_diag_weighted_in_basis f32".into(),
            shape: format!("N={n} d={d}"),
            threads,
            rate: dense_flops / dense / 1e9,
            unit: "GFLOP/s",
            limit: dense_limit,
            limit_name: "faer GEMM, same shape",
            note: "X U per 128-row block + weighted sumsq".into(),
        });
        let kron_flops = 2.0 * (2 * n * c * c + n * d * d + c * d * n) as f64;
        b.push(Row {
            kernel: "gn_diag_softmax_in_kronecker".into(),
            shape: format!("N={n} C={c} d={d}"),
            threads,
            rate: kron_flops / kron / 1e9,
            unit: "GFLOP/s",
            limit: kron_flops / kron_limit / 1e9,
            limit_name: "faer GEMM, its 4 shapes",
            note: "exact; A, B per 128-row block".into(),
        });
    }
}

fn step_rows(b: &mut Bench) {
    let n = if b.quick { 1usize << 20 } else { 1 << 22 };
    let mut p = Aligned::new(n, |i| (i % 97) as f32 * 0.01 - 0.5);
    let g = Aligned::new(n, |i| (i % 89) as f32 * 1e-3 - 0.04);
    let h = Aligned::new(n, |i| (i % 83) as f32 * 1e-2);
    let mut m = Aligned::new(n, |_| 0.0);
    let configs = [
        ("gn_step f32 p=-1", GnConfig::default(), false),
        (
            "gn_step f32 p=-1/2 momentum",
            GnConfig {
                power: -0.5,
                beta1: 0.9,
                ..GnConfig::default()
            },
            true,
        ),
        (
            "gn_step f32 Sophia",
            GnConfig {
                sophia: Some(SophiaClip::default()),
                beta1: 0.96,
                lr: 1e-3,
                ..GnConfig::default()
            },
            true,
        ),
        (
            "gn_step f32 p=-0.3 momentum",
            GnConfig {
                power: -0.3,
                beta1: 0.9,
                ..GnConfig::default()
            },
            true,
        ),
    ];
    for (name, cfg, momentum) in configs {
        for threads in b.thread_counts() {
            let budget = b.budget();
            let (secs, limit) = with_threads(threads, || {
                let mut step = || {
                    let exp_avg = momentum.then(|| m.get_mut());
                    gn_step(&cfg, 10, p.get_mut(), g.get(), exp_avg, h.get()).unwrap()
                };
                if momentum {
                    let mut stream = stream_closure::<2, 2>(n);
                    let [secs, s] = interleaved(budget, [&mut step, &mut stream]);
                    (secs, stream_bytes::<2, 2>(n) / s / 1e9)
                } else {
                    let mut stream = stream_closure::<1, 2>(n);
                    let [secs, s] = interleaved(budget, [&mut step, &mut stream]);
                    (secs, stream_bytes::<1, 2>(n) / s / 1e9)
                }
            });
            let bytes = if momentum { 24 } else { 16 } * n;
            b.push(Row {
                kernel: name.into(),
                shape: format!("2^{}", n.trailing_zeros()),
                threads,
                rate: bytes as f64 / secs / 1e9,
                unit: "GB/s",
                limit,
                limit_name: if momentum {
                    "RMW stream, 4 arrays"
                } else {
                    "RMW stream, 3 arrays"
                },
                note: if cfg.power == -0.3 {
                    "general power: vectorised 2^(p log2 x)".into()
                } else {
                    format!("{} B/element", bytes / n)
                },
            });
        }
    }
}
