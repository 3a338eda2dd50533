//! Basis rows: the Kronecker rotation `Q_L^T G Q_R` and back (two GEMMs, 4 n^3 flops) at
//! n = 256, 1024, 2048 against faer's own GEMM rate at the same shape; the dense rotation `U^T g`
//! (a matrix-vector product, 4 d^2 bytes) against the read bandwidth; basis refresh (eigh, and
//! one power-iteration step + QR) at 256 and 1024 against faer's bare eigendecomposition and one
//! GEMM; and a full SOAP-like step (rotate, Adam, rotate back: 4 GEMMs) against its GEMM floor.
//! 2048 and 1024-refresh rows run on all threads only (a 2048 GEMM takes about a second here).
//! Each kernel and its limit are measured alternately (see [`interleaved`]).

use super::{interleaved, stream_bytes, stream_closure, with_threads, Bench, Row};
use diagprec::{
    rotated_adam_step_with, AdamConfig, AdamTensor, Basis, DenseBasis, Isa, KroneckerBasis, Par,
    RefreshMethod,
};
use faer::Mat;

/// One faer GEMM `C = A B` (n x n, column-major) on `threads` threads: the rate limit.
fn gemm_closure(n: usize, threads: usize) -> impl FnMut() {
    use faer::linalg::matmul::matmul;
    let a = Mat::<f32>::from_fn(n, n, |i, j| ((i * 7 + j * 3) % 11) as f32 * 0.1);
    let b = Mat::<f32>::from_fn(n, n, |i, j| ((i * 5 + j) % 13) as f32 * 0.1);
    let mut c = Mat::<f32>::zeros(n, n);
    let par = if threads > 1 {
        faer::Par::rayon(threads)
    } else {
        faer::Par::Seq
    };
    move || {
        matmul(
            c.as_mut(),
            faer::Accum::Replace,
            a.as_ref(),
            b.as_ref(),
            1.0,
            par,
        )
    }
}

/// A random-ish orthonormal basis (eigenvectors of a fixed symmetric matrix).
fn basis(n: usize, seed: usize) -> DenseBasis {
    let a = Mat::<f32>::from_fn(n, n, |i, j| {
        let (i, j) = (i.min(j), i.max(j));
        (((i * 31 + j * 17 + seed * 7) % 101) as f32 - 50.0) * 0.01
            + if i == j { i as f32 * 0.01 } else { 0.0 }
    });
    DenseBasis::from_symmetric(a.as_ref()).expect("eigh").0
}

fn matrix_shape(n: usize) -> String {
    format!("{n} x {n}")
}

pub fn rows(b: &mut Bench) {
    let sizes: &[usize] = if b.quick {
        &[256, 1024]
    } else {
        &[256, 1024, 2048]
    };
    let all = b.all_threads;
    for &n in sizes {
        let kb = KroneckerBasis::from_bases(basis(n, 1), basis(n, 2));
        let g: Vec<f32> = (0..n * n)
            .map(|i| ((i % 89) as f32 - 44.0) * 1e-3)
            .collect();
        let mut out = vec![0.0f32; n * n];
        let mut work = vec![0.0f32; n * n];
        let threads: Vec<usize> = if n >= 2048 {
            vec![all]
        } else {
            b.thread_counts()
        };
        for t in threads {
            let budget = b.budget();
            let (into, back, limit) = with_threads(t, || {
                let (mut o1, mut w1) = (out.clone(), work.clone());
                let mut gemm = gemm_closure(n, t);
                let [into, back, gemm] = interleaved(
                    budget,
                    [
                        &mut || kb.rotate_into(&g, &mut o1, &mut w1).unwrap(),
                        &mut || kb.rotate_out(&g, &mut out, &mut work).unwrap(),
                        &mut gemm,
                    ],
                );
                (into, back, 2.0 * (n * n * n) as f64 / gemm / 1e9)
            });
            let flops = 4.0 * (n * n * n) as f64;
            for (name, secs) in [
                ("rotate_into Q_L^T G Q_R", into),
                ("rotate_out Q_L G Q_R^T", back),
            ] {
                b.push(Row {
                    kernel: format!("kron {name}"),
                    shape: matrix_shape(n),
                    threads: t,
                    rate: flops / secs / 1e9,
                    unit: "GFLOP/s",
                    limit,
                    limit_name: "faer GEMM, same n",
                    note: format!("{:.2} ms per rotation (2 GEMMs)", secs * 1e3),
                });
            }
        }
    }
    dense_rows(b);
    refresh_rows(b);
    soap_rows(b);
}

/// `U^T g` for a dense basis: one pass over `U` (4 d^2 bytes), against the read bandwidth.
fn dense_rows(b: &mut Bench) {
    let d = if b.quick { 2048 } else { 4096 };
    let u = basis(d, 3);
    let g: Vec<f32> = (0..d).map(|i| ((i % 89) as f32 - 44.0) * 1e-3).collect();
    let mut out = vec![0.0f32; d];
    for t in b.thread_counts() {
        let budget = b.budget();
        let (secs, limit) = with_threads(t, || {
            let mut stream = stream_closure::<0, 1>(d * d);
            let [secs, stream_secs] = interleaved(
                budget,
                [&mut || u.rotate_into(&g, &mut out).unwrap(), &mut stream],
            );
            (secs, stream_bytes::<0, 1>(d * d) / stream_secs / 1e9)
        });
        b.push(Row {
            kernel: "dense rotate_into U^T g".into(),
            shape: format!("d = {d}"),
            threads: t,
            rate: (4 * d * d) as f64 / secs / 1e9,
            unit: "GB/s",
            limit,
            limit_name: "read stream, 1 array",
            note: format!("{:.0} MB basis read per rotation", (4 * d * d) as f64 / 1e6),
        });
    }
}

/// Refresh from a symmetric statistic: eigh (ours: faer's eigh + sort + column matching) against
/// faer's bare eigendecomposition, and power iteration + QR against one GEMM of the same size.
fn refresh_rows(b: &mut Bench) {
    let sizes: &[usize] = if b.quick { &[256] } else { &[256, 1024] };
    let all = b.all_threads;
    for &n in sizes {
        let stat = Mat::<f32>::from_fn(n, n, |i, j| {
            let (i, j) = (i.min(j), i.max(j));
            (((i * 13 + j * 29) % 97) as f32 - 48.0) * 0.01 + if i == j { 2.0 } else { 0.0 }
        });
        let old = basis(n, 4);
        let threads: Vec<usize> = if n >= 1024 {
            vec![all]
        } else {
            b.thread_counts()
        };
        for t in threads {
            let budget = b.budget();
            let (eigh, bare, power, gemm) = with_threads(t, || {
                let mut gemm = gemm_closure(n, t);
                let [eigh, bare, power, gemm] = interleaved(
                    budget,
                    [
                        &mut || {
                            old.refreshed(stat.as_ref(), RefreshMethod::Eigh, Par::Pool)
                                .unwrap();
                        },
                        &mut || {
                            stat.as_ref()
                                .self_adjoint_eigen(faer::Side::Lower)
                                .expect("faer eigh");
                        },
                        &mut || {
                            old.refreshed(stat.as_ref(), RefreshMethod::PowerQr, Par::Pool)
                                .unwrap();
                        },
                        &mut gemm,
                    ],
                );
                (eigh, bare, power, gemm)
            });
            b.push(Row {
                kernel: "refresh eigh (+ sort, matching)".into(),
                shape: matrix_shape(n),
                threads: t,
                rate: 1.0 / eigh,
                unit: "refresh/s",
                limit: 1.0 / bare,
                limit_name: "faer eigh alone",
                note: format!("{:.1} ms per refresh", eigh * 1e3),
            });
            b.push(Row {
                kernel: "refresh power iteration + QR".into(),
                shape: matrix_shape(n),
                threads: t,
                rate: 1.0 / power,
                unit: "refresh/s",
                limit: 1.0 / gemm,
                limit_name: "one faer GEMM, same n",
                note: format!(
                    "{:.1} ms per refresh = {:.1} GEMM times",
                    power * 1e3,
                    power / gemm
                ),
            });
        }
    }
}

/// One SOAP-like step on an n x n matrix parameter: rotate the gradient in (2 GEMMs), the Adam
/// direction in rotated coordinates, rotate back accumulating into the parameter (2 GEMMs).
/// The floor is 4 GEMMs at faer's rate for the shape.
fn soap_rows(b: &mut Bench) {
    let sizes: &[usize] = if b.quick { &[256] } else { &[256, 1024] };
    let cfg = AdamConfig::adamw(1e-3);
    for &n in sizes {
        let basis = Basis::Kronecker(KroneckerBasis::from_bases(basis(n, 5), basis(n, 6)));
        let len = n * n;
        let mut p: Vec<f32> = (0..len).map(|i| ((i % 97) as f32 - 48.0) * 0.01).collect();
        let g: Vec<f32> = (0..len).map(|i| ((i % 89) as f32 - 44.0) * 1e-3).collect();
        let (mut m, mut v) = (vec![0.0f32; len], vec![1e-4f32; len]);
        let mut ws = vec![0.0f32; 2 * len];
        for t in b.thread_counts() {
            let budget = b.budget();
            let (secs, gflops) = with_threads(t, || {
                let mut gemm = gemm_closure(n, t);
                let [secs, gemm] = interleaved(
                    budget,
                    [
                        &mut || {
                            rotated_adam_step_with(
                                Isa::detect(),
                                Par::Pool,
                                &cfg,
                                10,
                                &basis,
                                AdamTensor {
                                    param: &mut p,
                                    grad: &g,
                                    exp_avg: &mut m,
                                    exp_avg_sq: &mut v,
                                    max_exp_avg_sq: None,
                                },
                                &mut ws,
                            )
                            .unwrap()
                        },
                        &mut gemm,
                    ],
                );
                (secs, 2.0 * (n * n * n) as f64 / gemm / 1e9)
            });
            let flops = 8.0 * (n * n * n) as f64;
            b.push(Row {
                kernel: "SOAP-like step (rot, Adam, rot)".into(),
                shape: matrix_shape(n),
                threads: t,
                rate: flops / secs / 1e9,
                unit: "GFLOP/s",
                limit: gflops,
                limit_name: "faer GEMM (4-GEMM floor)",
                note: format!(
                    "{:.2} ms per step; floor {:.2} ms",
                    secs * 1e3,
                    flops / (gflops * 1e9) * 1e3
                ),
            });
        }
    }
}
