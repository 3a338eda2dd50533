//! Gauss-Newton diagonals and the GN^p step: every kernel against its f64 reference (the
//! in-basis ones against an explicitly formed `U^T H U`), every ISA, boundary lengths,
//! unaligned starts, bitwise agreement across ISAs and thread counts, the unbiasedness of the
//! sampled estimator, the optimizer, bad input.

mod common;

use common::*;
use diagprec::kernels::gn::diag::SUB_BLOCK_ROWS;
use diagprec::{
    gn_diag_linear_with, gn_diag_logistic_with, gn_diag_softmax, gn_diag_softmax_in_kronecker,
    gn_diag_softmax_in_kronecker_with, gn_diag_softmax_with, gn_diag_weighted,
    gn_diag_weighted_in_basis, gn_diag_weighted_in_basis_with, gn_diag_weighted_with,
    gn_softmax_factors, gn_step, gn_step_with, reference, ErrorKind, GaussNewton,
    GaussNewtonConfig, GnConfig, GnEstimator, Isa, Par, Samples, SophiaClip,
};
use faer::Mat;
use rand::Rng;

fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

/// Asserts `|ours - reference| <= ulps_allowed * eps * scale` elementwise.
fn assert_close(at: &str, ours: &[f32], reference: &[f64], scale: &[f64], ulps_allowed: f64) {
    assert_eq!(ours.len(), reference.len(), "{at}: length");
    for i in 0..ours.len() {
        let e = ulps(ours[i], reference[i], scale[i]);
        assert!(
            e <= ulps_allowed,
            "{at}: [{i}] = {} vs {} ({e:.1} ulp of {:e}, allowed {ulps_allowed})",
            ours[i],
            reference[i],
            scale[i]
        );
    }
}

/// The magnitude an EMA result is measured at: `beta |h0| + (1 - beta) |batch|`.
fn ema_scale(h0: &[f32], batch_abs: &[f64], beta: f32) -> Vec<f64> {
    let beta = beta as f64;
    h0.iter()
        .zip(batch_abs)
        .map(|(&h, &b)| beta * (h as f64).abs() + (1.0 - beta) * b)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Identity basis.

#[test]
fn weighted_diagonal_matches_the_reference_on_every_isa_length_and_offset() {
    // f32 sums of non-negative terms over SUB_BLOCK_ROWS rows, then f64: the error is at most
    // (SUB_BLOCK_ROWS + 1) roundings of sum |w| x^2, plus the final EMA rounding.
    let bound = SUB_BLOCK_ROWS as f64 + 4.0;
    for (case, dim) in boundary_lengths().into_iter().enumerate() {
        let n = match dim {
            0..=70 => [1, 3, 33, 70, 129][case % 5],
            71..=5000 => 45,
            _ => 3,
        };
        let stride = dim + case % 3;
        let offset = case % 4;
        let x = log_uniform(
            &mut rng(case as u64),
            (n - 1) * stride + dim,
            -2.0,
            1.0,
            true,
        );
        let weights = (case % 2 == 0).then(|| log_uniform(&mut rng(99), n, -3.0, 0.0, true));
        let beta = [0.0f32, 0.9, 0.5][case % 3];
        let h0 = log_uniform(&mut rng(7 + case as u64), dim, -3.0, 1.0, false);
        let (x64, w64) = (to_f64(&x), weights.as_deref().map(to_f64));
        let mut expected = to_f64(&h0);
        reference::gn_diag_weighted(
            &x64,
            n,
            dim,
            stride,
            w64.as_deref(),
            beta as f64,
            &mut expected,
        );
        let abs_w: Option<Vec<f64>> = w64.as_ref().map(|w| w.iter().map(|v| v.abs()).collect());
        let mut batch_abs = vec![0.0; dim];
        reference::gn_diag_weighted(&x64, n, dim, stride, abs_w.as_deref(), 0.0, &mut batch_abs);
        let scale = ema_scale(&h0, &batch_abs, beta);
        for isa in Isa::available() {
            let ux = Unaligned::new(&x, offset);
            let mut uh = Unaligned::new(&h0, (offset + 1) % 4);
            gn_diag_weighted_with(
                isa,
                Par::Seq,
                Samples::strided(ux.get(), n, dim, stride).unwrap(),
                weights.as_deref(),
                beta,
                uh.get_mut(),
            )
            .unwrap();
            let at = format!("{}, n = {n}, dim = {dim}, stride = {stride}", isa.name());
            assert!(uh.guards_intact(), "{at}: wrote outside h");
            assert_close(&at, uh.get(), &expected, &scale, bound);
        }
    }
}

#[test]
fn weighted_diagonal_is_bitwise_identical_across_isas_and_threads() {
    let (n, dim, stride) = (4096 + 17, 1000, 1003);
    let x = uniform(1, (n - 1) * stride + dim, -2.0, 2.0);
    let w = uniform(2, n, 0.0, 1.0);
    let h0 = uniform(3, dim, 0.0, 1.0);
    let run = |isa: Isa, par: Par, weights: Option<&[f32]>| {
        let mut h = h0.clone();
        gn_diag_weighted_with(
            isa,
            par,
            Samples::strided(&x, n, dim, stride).unwrap(),
            weights,
            0.95,
            &mut h,
        )
        .unwrap();
        bits(&h)
    };
    for weights in [None, Some(&w[..])] {
        let expected = run(Isa::scalar(), Par::Seq, weights);
        for isa in Isa::available() {
            assert_eq!(run(isa, Par::Seq, weights), expected, "{}", isa.name());
            for threads in [1, 2, 3] {
                diagprec::set_num_threads(threads).unwrap();
                assert_eq!(run(isa, Par::Pool, weights), expected, "{threads} threads");
            }
        }
    }
    diagprec::set_num_threads(0).unwrap();
}

#[test]
fn logistic_weights_match_the_reference() {
    let (n, dim) = (77, 19);
    let x = uniform(4, n * dim, -1.0, 1.0);
    let logits = uniform(5, n, -30.0, 30.0);
    let w64: Vec<f64> = logits
        .iter()
        .map(|&z| reference::logistic_weight(z as f64))
        .collect();
    let mut expected = vec![0.0; dim];
    reference::gn_diag_weighted(&to_f64(&x), n, dim, dim, Some(&w64), 0.0, &mut expected);
    for isa in Isa::available() {
        let mut h = vec![f32::NAN; dim]; // beta = 0 must not read the old h
        gn_diag_logistic_with(
            isa,
            Par::Seq,
            Samples::strided(&x, n, dim, dim).unwrap(),
            &logits,
            0.0,
            &mut h,
        )
        .unwrap();
        assert_close(
            isa.name(),
            &h,
            &expected,
            &expected,
            SUB_BLOCK_ROWS as f64 + 6.0,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Linear and softmax layers.

const LAYER_SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (2, 3, 1),
    (7, 13, 5),
    (37, 300, 17),
    (300, 257, 3),
    (5, 0, 4),
    (9, 600, 2),
];

#[test]
fn linear_layer_matches_the_reference() {
    for (case, &(n, d_in, c_out)) in LAYER_SHAPES.iter().enumerate() {
        let x = uniform(10 + case as u64, n * d_in, -2.0, 2.0);
        let s = uniform(20 + case as u64, n * c_out, 0.0, 1.0);
        let h0 = uniform(30 + case as u64, c_out * d_in, 0.0, 1.0);
        let hb0 = uniform(40 + case as u64, c_out, 0.0, 1.0);
        for beta in [0.0f32, 0.75] {
            let (mut eh, mut ehb) = (to_f64(&h0), to_f64(&hb0));
            reference::gn_diag_linear(
                &to_f64(&x),
                n,
                d_in,
                &to_f64(&s),
                c_out,
                beta as f64,
                &mut eh,
                Some(&mut ehb),
            );
            let (mut batch, mut batch_b) = (vec![0.0; c_out * d_in], vec![0.0; c_out]);
            reference::gn_diag_linear(
                &to_f64(&x),
                n,
                d_in,
                &to_f64(&s),
                c_out,
                0.0,
                &mut batch,
                Some(&mut batch_b),
            );
            // An f32 GEMM of length n over non-negative terms, then one EMA.
            let bound = n as f64 + 6.0;
            for isa in Isa::available() {
                for par in [Par::Seq, Par::Pool] {
                    // Unaligned starts for every buffer.
                    let off = case % 4;
                    let (ux, us) = (Unaligned::new(&x, off), Unaligned::new(&s, (off + 1) % 4));
                    let mut uh = Unaligned::new(&h0, (off + 2) % 4);
                    let mut uhb = Unaligned::new(&hb0, (off + 3) % 4);
                    gn_diag_linear_with(
                        isa,
                        par,
                        Samples::new(ux.get(), n, d_in).unwrap(),
                        Samples::new(us.get(), n, c_out).unwrap(),
                        beta,
                        uh.get_mut(),
                        Some(uhb.get_mut()),
                    )
                    .unwrap();
                    let at = format!("{} n={n} d_in={d_in} c={c_out} beta={beta}", isa.name());
                    assert!(
                        uh.guards_intact() && uhb.guards_intact(),
                        "{at}: wrote outside"
                    );
                    assert_close(&at, uh.get(), &eh, &ema_scale(&h0, &batch, beta), bound);
                    assert_close(
                        &at,
                        uhb.get(),
                        &ehb,
                        &ema_scale(&hb0, &batch_b, beta),
                        bound,
                    );
                }
            }
        }
    }
}

#[test]
fn softmax_layer_matches_the_reference_for_both_estimators() {
    for (case, &(n, d_in, classes)) in LAYER_SHAPES.iter().enumerate() {
        let x = uniform(50 + case as u64, n * d_in, -2.0, 2.0);
        let logits = uniform(60 + case as u64, n * classes, -8.0, 8.0);
        for estimator in [GnEstimator::Exact, GnEstimator::Sampled] {
            let s = reference::softmax_factors(&to_f64(&logits), n, classes, estimator, 1234);
            let (mut eh, mut ehb) = (vec![0.0; classes * d_in], vec![0.0; classes]);
            reference::gn_diag_linear(
                &to_f64(&x),
                n,
                d_in,
                &s,
                classes,
                0.0,
                &mut eh,
                Some(&mut ehb),
            );
            for isa in Isa::available() {
                let (mut h, mut hb) = (vec![f32::NAN; classes * d_in], vec![f32::NAN; classes]);
                gn_diag_softmax_with(
                    isa,
                    Par::Pool,
                    Samples::new(&x, n, d_in).unwrap(),
                    Samples::new(&logits, n, classes).unwrap(),
                    estimator,
                    1234,
                    0.0,
                    &mut h,
                    Some(&mut hb),
                )
                .unwrap();
                let at = format!("{estimator:?} {} n={n} d_in={d_in} c={classes}", isa.name());
                // Plus the f32 rounding of each factor.
                let bound = n as f64 + 8.0;
                assert_close(&at, &h, &eh, &eh, bound);
                assert_close(&at, &hb, &ehb, &ehb, bound);
            }
        }
    }
}

#[test]
fn sampled_estimator_is_unbiased_for_the_exact_diagonal() {
    let (n, d_in, classes, seeds) = (6, 4, 5, 4000u64);
    let x = uniform(70, n * d_in, -1.5, 1.5);
    let logits = uniform(71, n * classes, -2.0, 2.0);
    let mut exact = vec![0.0f32; classes * d_in];
    gn_diag_softmax(
        Samples::new(&x, n, d_in).unwrap(),
        Samples::new(&logits, n, classes).unwrap(),
        GnEstimator::Exact,
        0,
        0.0,
        &mut exact,
        None,
    )
    .unwrap();
    let mut mean = vec![0.0f64; classes * d_in];
    let mut h = vec![0.0f32; classes * d_in];
    for seed in 0..seeds {
        gn_diag_softmax(
            Samples::new(&x, n, d_in).unwrap(),
            Samples::new(&logits, n, classes).unwrap(),
            GnEstimator::Sampled,
            seed,
            0.0,
            &mut h,
            None,
        )
        .unwrap();
        for (m, &v) in mean.iter_mut().zip(&h) {
            *m += v as f64 / seeds as f64;
        }
    }
    // The standard error of each mean, from the known distribution of (p - e_y)^2:
    // E[s] = p (1 - p), E[s^2] = p (1 - p)^4 + (1 - p) p^4, samples independent.
    for c in 0..classes {
        for j in 0..d_in {
            let mut var = 0.0;
            for s in 0..n {
                let p = reference::softmax(&to_f64(&logits[s * classes..(s + 1) * classes]))[c];
                let es2 = p * (1.0 - p).powi(4) + (1.0 - p) * p.powi(4);
                let v = es2 - (p * (1.0 - p)).powi(2);
                var += (x[s * d_in + j] as f64).powi(4) * v / (n * n) as f64;
            }
            let se = (var / seeds as f64).sqrt();
            let diff = (mean[c * d_in + j] - exact[c * d_in + j] as f64).abs();
            assert!(
                diff <= 5.0 * se + 1e-6 * exact[c * d_in + j] as f64,
                "h[{c},{j}]: mean over {seeds} seeds {} vs exact {} ({:.2} standard errors)",
                mean[c * d_in + j],
                exact[c * d_in + j],
                diff / se
            );
        }
    }
    // And the draws really vary with the seed.
    let mut other = vec![0.0f32; classes * d_in];
    gn_diag_softmax(
        Samples::new(&x, n, d_in).unwrap(),
        Samples::new(&logits, n, classes).unwrap(),
        GnEstimator::Sampled,
        1,
        0.0,
        &mut other,
        None,
    )
    .unwrap();
    gn_diag_softmax(
        Samples::new(&x, n, d_in).unwrap(),
        Samples::new(&logits, n, classes).unwrap(),
        GnEstimator::Sampled,
        2,
        0.0,
        &mut h,
        None,
    )
    .unwrap();
    assert_ne!(bits(&h), bits(&other));
}

// ---------------------------------------------------------------------------------------------
// Bases.

/// A random `rows x cols` matrix, row-major, and its faer copy.
fn basis(seed: u64, rows: usize, cols: usize) -> (Vec<f32>, Mat<f32>) {
    let v = uniform(seed, rows * cols, -1.0, 1.0);
    let m = Mat::from_fn(rows, cols, |i, j| v[i * cols + j]);
    (v, m)
}

#[test]
fn weighted_diagonal_in_a_dense_basis_matches_explicit_u_t_h_u() {
    for (case, &(n, dim, k)) in [
        (1, 1, 1),
        (5, 3, 3),
        (40, 17, 17),
        (130, 33, 20),
        (300, 8, 12),
        (3, 0, 2),
    ]
    .iter()
    .enumerate()
    {
        let stride = dim + case % 2;
        let x = uniform(
            80 + case as u64,
            if n == 0 { 0 } else { (n - 1) * stride + dim },
            -1.0,
            1.0,
        );
        let w = uniform(90 + case as u64, n, 0.0, 2.0);
        let (u, um) = basis(100 + case as u64, dim, k);
        let h0 = uniform(110 + case as u64, k, 0.0, 1.0);
        for weights in [None, Some(&w[..])] {
            let w64 = weights.map(to_f64);
            let mut expected = to_f64(&h0);
            reference::gn_diag_weighted_in_basis(
                &to_f64(&x),
                n,
                dim,
                stride,
                w64.as_deref(),
                &to_f64(&u),
                k,
                0.5,
                &mut expected,
            );
            // Scale: the same quadratic form with |x| and |U|, which bounds every rounding.
            let abs_u: Vec<f64> = u.iter().map(|v| v.abs() as f64).collect();
            let abs_x: Vec<f64> = x.iter().map(|v| v.abs() as f64).collect();
            let mut batch_abs = vec![0.0; k];
            reference::gn_diag_weighted_in_basis(
                &abs_x,
                n,
                dim,
                stride,
                w64.as_deref(),
                &abs_u,
                k,
                0.0,
                &mut batch_abs,
            );
            let scale = ema_scale(&h0, &batch_abs, 0.5);
            for isa in Isa::available() {
                let mut h = h0.clone();
                gn_diag_weighted_in_basis_with(
                    isa,
                    Par::Pool,
                    Samples::strided(&x, n, dim, stride).unwrap(),
                    weights,
                    um.as_ref(),
                    0.5,
                    &mut h,
                )
                .unwrap();
                let at = format!("{} n={n} dim={dim} k={k}", isa.name());
                assert_close(
                    &at,
                    &h,
                    &expected,
                    &scale,
                    2.0 * dim as f64 + SUB_BLOCK_ROWS as f64 + 8.0,
                );
            }
        }
    }
}

#[test]
fn softmax_diagonal_in_a_kronecker_basis_matches_explicit_u_t_h_u() {
    for (case, &(n, d_in, classes, kc, kx)) in [
        (1, 1, 2, 2, 1),
        (7, 3, 4, 4, 3),
        (20, 5, 3, 2, 6),
        (140, 4, 5, 5, 4),
        (3, 0, 3, 3, 0),
    ]
    .iter()
    .enumerate()
    {
        let x = uniform(120 + case as u64, n * d_in, -1.0, 1.0);
        let logits = uniform(130 + case as u64, n * classes, -3.0, 3.0);
        let (qc, qcm) = basis(140 + case as u64, classes, kc);
        let (qx, qxm) = basis(150 + case as u64, d_in, kx);
        let h0 = uniform(160 + case as u64, kc * kx, 0.0, 1.0);
        let hb0 = uniform(170 + case as u64, kc, 0.0, 1.0);
        for estimator in [GnEstimator::Exact, GnEstimator::Sampled] {
            let (mut eh, mut ehb) = (to_f64(&h0), to_f64(&hb0));
            reference::gn_diag_softmax_in_kronecker(
                &to_f64(&x),
                &to_f64(&logits),
                n,
                d_in,
                classes,
                estimator,
                77,
                &to_f64(&qc),
                kc,
                &to_f64(&qx),
                kx,
                0.25,
                &mut eh,
                Some(&mut ehb),
            );
            // Cancellation in A (sum p Q^2 - (Q.p)^2) is measured against its terms' size: the
            // bound is relative to max|h_batch| + |h0|, which the explicit form never exceeds
            // by more than the |Q| products below.
            let qmax = qc
                .iter()
                .chain(&qx)
                .fold(0.0f64, |m, &v| m.max(v.abs() as f64));
            let xmax = x.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
            let term = (classes as f64 * qmax * qmax) * (d_in as f64 * qmax * xmax).powi(2);
            for isa in Isa::available() {
                for par in [Par::Seq, Par::Pool] {
                    let (mut h, mut hb) = (h0.clone(), hb0.clone());
                    gn_diag_softmax_in_kronecker_with(
                        isa,
                        par,
                        Samples::new(&x, n, d_in).unwrap(),
                        Samples::new(&logits, n, classes).unwrap(),
                        estimator,
                        77,
                        qcm.as_ref(),
                        qxm.as_ref(),
                        0.25,
                        &mut h,
                        Some(&mut hb),
                    )
                    .unwrap();
                    let at = format!("{estimator:?} {} n={n} d_in={d_in} C={classes}", isa.name());
                    let scale: Vec<f64> =
                        h0.iter().map(|&v| 0.25 * v as f64 + 0.75 * term).collect();
                    assert_close(
                        &at,
                        &h,
                        &eh,
                        &scale,
                        4.0 * (n + classes + d_in) as f64 + 16.0,
                    );
                    let bscale: Vec<f64> = hb0
                        .iter()
                        .map(|&v| 0.25 * v as f64 + 0.75 * classes as f64 * qmax * qmax)
                        .collect();
                    assert_close(&at, &hb, &ehb, &bscale, 4.0 * (n + classes) as f64 + 16.0);
                }
            }
        }
    }
}

#[test]
fn gemm_shaped_kernels_are_bitwise_identical_across_thread_counts() {
    let (n, d_in, classes) = (300, 600, 20);
    let x = uniform(200, n * d_in, -1.0, 1.0);
    let logits = uniform(201, n * classes, -4.0, 4.0);
    let s = uniform(202, n * classes, 0.0, 1.0);
    let (_, qc) = basis(203, classes, classes);
    let (_, qx) = basis(204, d_in, d_in);
    let (_, u) = basis(205, d_in, 64);
    let w = uniform(206, n, 0.0, 1.0);
    let h0 = uniform(207, classes * d_in, 0.0, 1.0);
    let isa = Isa::detect();
    let run = |par: Par| {
        let (mut a, mut ab) = (h0.clone(), vec![0.5; classes]);
        gn_diag_linear_with(
            isa,
            par,
            Samples::new(&x, n, d_in).unwrap(),
            Samples::new(&s, n, classes).unwrap(),
            0.9,
            &mut a,
            Some(&mut ab),
        )
        .unwrap();
        let (mut b, mut bb) = (h0.clone(), vec![0.5; classes]);
        gn_diag_softmax_with(
            isa,
            par,
            Samples::new(&x, n, d_in).unwrap(),
            Samples::new(&logits, n, classes).unwrap(),
            GnEstimator::Sampled,
            9,
            0.9,
            &mut b,
            Some(&mut bb),
        )
        .unwrap();
        let mut c = vec![0.5f32; 64];
        gn_diag_weighted_in_basis_with(
            isa,
            par,
            Samples::strided(&x, n, d_in, d_in).unwrap(),
            Some(&w),
            u.as_ref(),
            0.9,
            &mut c,
        )
        .unwrap();
        let (mut d, mut db) = (h0.clone(), vec![0.5; classes]);
        gn_diag_softmax_in_kronecker_with(
            isa,
            par,
            Samples::new(&x, n, d_in).unwrap(),
            Samples::new(&logits, n, classes).unwrap(),
            GnEstimator::Exact,
            0,
            qc.as_ref(),
            qx.as_ref(),
            0.9,
            &mut d,
            Some(&mut db),
        )
        .unwrap();
        [a, ab, b, bb, c, d, db].map(|v| bits(&v))
    };
    let expected = run(Par::Seq);
    for threads in [1, 2, 3] {
        diagprec::set_num_threads(threads).unwrap();
        assert_eq!(run(Par::Pool), expected, "{threads} threads");
        for (own, from_pool) in from_own_pools(threads, || run(Par::Pool)) {
            assert_eq!(
                from_pool, expected,
                "{threads} threads from a pool of {own}"
            );
        }
    }
    diagprec::set_num_threads(0).unwrap();
}

#[test]
fn bad_diagonal_input_is_rejected_and_nothing_changes() {
    let (n, dim) = (4, 5);
    let x = uniform(300, n * dim, -1.0, 1.0);
    let w = vec![1.0f32; n];
    let h0 = vec![0.25f32; dim];
    let mut h = h0.clone();
    let expect = |kind: ErrorKind, r: diagprec::Result<()>, h: &[f32]| {
        let err = r.unwrap_err();
        assert_eq!(err.kind(), kind, "{}", err.message());
        assert!(!err.message().is_empty());
        assert_eq!(bits(h), bits(&h0));
    };
    expect(
        ErrorKind::Length,
        Samples::strided(&x, 0, dim, dim)
            .and_then(|x_view| gn_diag_weighted(x_view, None, 0.0, &mut h)),
        &h,
    );
    expect(
        ErrorKind::Length,
        Samples::strided(&x, n, dim, dim - 1)
            .and_then(|x_view| gn_diag_weighted(x_view, None, 0.0, &mut h)),
        &h,
    );
    expect(
        ErrorKind::Length,
        Samples::strided(&x[1..], n, dim, dim)
            .and_then(|x_view| gn_diag_weighted(x_view, None, 0.0, &mut h)),
        &h,
    );
    expect(
        ErrorKind::Length,
        Samples::strided(&x, n, dim, dim)
            .and_then(|x_view| gn_diag_weighted(x_view, Some(&w[1..]), 0.0, &mut h)),
        &h,
    );
    expect(
        ErrorKind::Length,
        Samples::strided(&x, n, dim, dim)
            .and_then(|x_view| gn_diag_weighted(x_view, None, 0.0, &mut h[1..])),
        &h,
    );
    expect(
        ErrorKind::Length,
        Samples::strided(&x, usize::MAX, dim, dim)
            .and_then(|x_view| gn_diag_weighted(x_view, None, 0.0, &mut h)),
        &h,
    );
    for beta in [1.0f32, -0.1, f32::NAN, f32::INFINITY] {
        expect(
            ErrorKind::InvalidHyperparameter,
            Samples::strided(&x, n, dim, dim)
                .and_then(|x_view| gn_diag_weighted(x_view, None, beta, &mut h)),
            &h,
        );
    }
    let (_, u) = basis(301, dim, 3);
    expect(
        ErrorKind::Length,
        Samples::strided(&x, n, dim, dim)
            .and_then(|x_view| gn_diag_weighted_in_basis(x_view, None, u.as_ref(), 0.0, &mut h)),
        &h,
    );
    let (_, u_bad) = basis(302, dim + 1, dim);
    expect(
        ErrorKind::Length,
        Samples::strided(&x, n, dim, dim).and_then(|x_view| {
            gn_diag_weighted_in_basis(x_view, None, u_bad.as_ref(), 0.0, &mut h)
        }),
        &h,
    );
    // Layers: h is 2 x 5, x is 4 x 5.
    let (classes, d_in) = (2, dim);
    let logits = vec![0.0f32; n * classes];
    let mut hl = vec![0.25f32; classes * d_in];
    let mut hb = vec![0.25f32; classes];
    let check_layer = |r: diagprec::Result<()>, hl: &[f32], hb: &[f32], kind: ErrorKind| {
        assert_eq!(r.unwrap_err().kind(), kind);
        assert!(hl.iter().chain(hb).all(|&v| v == 0.25));
    };
    let r = Samples::new(&x, n, d_in).and_then(|x_view| {
        Samples::new(&logits[1..], n, classes).and_then(|s_view| {
            diagprec::gn_diag_linear(x_view, s_view, 0.0, &mut hl, Some(&mut hb))
        })
    });
    check_layer(r, &hl, &hb, ErrorKind::Length);
    let r = Samples::new(&x, n, d_in).and_then(|x_view| {
        Samples::new(&logits, n, classes).and_then(|s_view| {
            diagprec::gn_diag_linear(x_view, s_view, 0.0, &mut hl, Some(&mut hb[1..]))
        })
    });
    check_layer(r, &hl, &hb, ErrorKind::Length);
    let r = Samples::new(&x, n, d_in).and_then(|x_view| {
        Samples::new(&logits, n, classes).and_then(|s_view| {
            diagprec::gn_diag_linear(x_view, s_view, 1.0, &mut hl, Some(&mut hb))
        })
    });
    check_layer(r, &hl, &hb, ErrorKind::InvalidHyperparameter);
    let r = Samples::new(&x, n, d_in).and_then(|x_view| {
        Samples::new(&logits[..3], n, classes).and_then(|z_view| {
            gn_diag_softmax(
                x_view,
                z_view,
                GnEstimator::Exact,
                0,
                0.0,
                &mut hl,
                Some(&mut hb),
            )
        })
    });
    check_layer(r, &hl, &hb, ErrorKind::Length);
    let (_, qc) = basis(303, classes, classes);
    let (_, qx) = basis(304, d_in + 1, d_in);
    let r = Samples::new(&x, n, d_in).and_then(|x_view| {
        Samples::new(&logits, n, classes).and_then(|z_view| {
            gn_diag_softmax_in_kronecker(
                x_view,
                z_view,
                GnEstimator::Exact,
                0,
                qc.as_ref(),
                qx.as_ref(),
                0.0,
                &mut hl,
                Some(&mut hb),
            )
        })
    });
    check_layer(r, &hl, &hb, ErrorKind::Length);
    let (_, qx) = basis(305, d_in, d_in);
    let r = Samples::new(&x, n, d_in).and_then(|x_view| {
        Samples::new(&logits, n, classes).and_then(|z_view| {
            gn_diag_softmax_in_kronecker(
                x_view,
                z_view,
                GnEstimator::Exact,
                0,
                qc.as_ref(),
                qx.as_ref(),
                0.0,
                &mut hl[1..],
                None,
            )
        })
    });
    check_layer(r, &hl, &hb, ErrorKind::Length);
}

// ---------------------------------------------------------------------------------------------
// The GN^p step.

fn step_configs() -> Vec<(&'static str, GnConfig)> {
    let base = GnConfig::default();
    vec![
        ("newton", base),
        (
            "rsqrt-momentum",
            GnConfig {
                power: -0.5,
                damping: 1e-3,
                beta1: 0.9,
                lr: 0.1,
                ..base
            },
        ),
        (
            "recip-momentum-nobc-wd",
            GnConfig {
                beta1: 0.5,
                bias_correction: false,
                weight_decay: 0.1,
                lr: 0.3,
                ..base
            },
        ),
        (
            "power-0.3",
            GnConfig {
                power: 0.3,
                damping: 0.0,
                lr: 0.01,
                ..base
            },
        ),
        (
            "power--0.25-wd",
            GnConfig {
                power: -0.25,
                weight_decay: 0.01,
                ..base
            },
        ),
        (
            "power--2",
            GnConfig {
                power: -2.0,
                damping: 1e-2,
                lr: 1e-3,
                beta1: 0.3,
                ..base
            },
        ),
        (
            "sophia",
            GnConfig {
                sophia: Some(SophiaClip {
                    gamma: 0.05,
                    eps: 1e-12,
                }),
                beta1: 0.96,
                lr: 1e-2,
                weight_decay: 0.1,
                ..base
            },
        ),
        (
            "sophia-plain",
            GnConfig {
                sophia: Some(SophiaClip::default()),
                lr: 1e-3,
                ..base
            },
        ),
    ]
}

/// State before a step: `h` with several magnitudes and a few negative entries.
fn step_state(seed: u64, n: usize) -> [Vec<f32>; 4] {
    let mut r = rng(seed);
    let p = log_uniform(&mut r, n, -3.0, 1.0, true);
    let g = log_uniform(&mut r, n, -6.0, 1.0, true);
    let m = log_uniform(&mut r, n, -5.0, 0.0, true);
    let mut h = log_uniform(&mut r, n, -6.0, 2.0, false);
    for v in h.iter_mut().step_by(11) {
        *v = -*v * 1e-3;
    }
    [p, g, m, h]
}

#[test]
fn gn_step_matches_the_reference_on_every_isa_length_and_offset() {
    for (name, cfg) in step_configs() {
        for (case, n) in boundary_lengths().into_iter().enumerate() {
            let offset = case % 4;
            let step = [1u64, 4, 1000][case % 3];
            let [p, g, m, h] = step_state(case as u64, n);
            let momentum = case % 2 == 0 || cfg.beta1 > 0.0;
            let (mut rp, mut rm) = (to_f64(&p), to_f64(&m));
            reference::gn_step(
                &cfg,
                step,
                &mut rp,
                &to_f64(&g),
                momentum.then_some(&mut rm[..]),
                &to_f64(&h),
            );
            for isa in Isa::available() {
                let (mut up, ug, mut um, uh) = (
                    Unaligned::new(&p, offset),
                    Unaligned::new(&g, offset),
                    Unaligned::new(&m, (offset + 1) % 4),
                    Unaligned::new(&h, (offset + 2) % 4),
                );
                gn_step_with(
                    isa,
                    Par::Seq,
                    &cfg,
                    step,
                    up.get_mut(),
                    ug.get(),
                    momentum.then_some(um.get_mut()),
                    uh.get(),
                )
                .unwrap();
                let at = format!(
                    "{name}, {}, n = {n}, offset {offset}, momentum {momentum}",
                    isa.name()
                );
                assert!(
                    up.guards_intact() && um.guards_intact(),
                    "{at}: wrote outside"
                );
                let bc1 = if momentum && cfg.bias_correction {
                    1.0 - cfg.beta1.powf(step as f64)
                } else {
                    1.0
                };
                for i in 0..n {
                    let m_mag = if momentum {
                        (m[i] as f64).abs().max(g[i].abs() as f64)
                    } else {
                        g[i].abs() as f64
                    };
                    if momentum {
                        let e = ulps(um.get()[i], rm[i], m_mag);
                        assert!(e <= 3.0, "{at}: exp_avg[{i}] off by {e} ulp");
                    } else {
                        assert_eq!(
                            um.get()[i].to_bits(),
                            m[i].to_bits(),
                            "{at}: exp_avg written"
                        );
                    }
                    let factor = match cfg.sophia {
                        Some(s) => 1.0 / ((s.gamma * h[i] as f64).max(s.eps)),
                        None => ((h[i] as f64).max(0.0) + cfg.damping).powf(cfg.power),
                    };
                    // Measured before the clip: cancellation in m is amplified by the factor
                    // whether or not the result is clipped.
                    let update = m_mag / bc1 * factor;
                    // theta: within 6 + 2|p| ulp of |theta| + lr |update before cancellation|.
                    let e = ulps(up.get()[i], rp[i], (p[i] as f64).abs() + cfg.lr * update);
                    assert!(
                        e <= 6.0 + 2.0 * cfg.power.abs(),
                        "{at}: param[{i}] off by {e} ulp: p {} g {} m {} h {} -> {} vs {}",
                        p[i],
                        g[i],
                        m[i],
                        h[i],
                        up.get()[i],
                        rp[i]
                    );
                }
            }
        }
    }
}

#[test]
fn gn_step_is_bitwise_identical_across_isas_and_threads() {
    let n = 300_007;
    for (name, cfg) in step_configs() {
        let [p0, g, m0, mut h] = step_state(42, n);
        // max(h, 0) must agree on every ISA for the values where compare-and-select and
        // vmaxps could differ: signed zeros and NaN (no finite check in these configs).
        for (i, v) in [
            (5, -0.0f32),
            (6, 0.0),
            (7, f32::NAN),
            (150_001, -0.0),
            (n - 1, f32::NAN),
        ] {
            h[i] = v;
        }
        let run = |isa: Isa, par: Par| {
            let (mut p, mut m) = (p0.clone(), m0.clone());
            for step in 1..=3 {
                gn_step_with(isa, par, &cfg, step, &mut p, &g, Some(&mut m), &h).unwrap();
            }
            [bits(&p), bits(&m)]
        };
        let expected = run(Isa::scalar(), Par::Seq);
        for isa in Isa::available() {
            assert_eq!(run(isa, Par::Seq), expected, "{name}: {}", isa.name());
            for threads in [1, 2, 3] {
                diagprec::set_num_threads(threads).unwrap();
                assert_eq!(run(isa, Par::Pool), expected, "{name}: {threads} threads");
            }
        }
    }
    diagprec::set_num_threads(0).unwrap();
}

#[test]
fn gn_step_non_finite_input_skips_the_step_and_writes_nothing() {
    let cfg = GnConfig {
        check_finite: true,
        beta1: 0.9,
        ..Default::default()
    };
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for &(n, at) in &[(1usize, 0usize), (37, 36), (100_000, 50_001)] {
            for in_h in [false, true] {
                let [mut p, mut g, mut m, mut h] = step_state(7, n);
                if in_h {
                    h[at] = bad
                } else {
                    g[at] = bad
                }
                let before = [bits(&p), bits(&m)];
                let err = gn_step(&cfg, 1, &mut p, &g, Some(&mut m), &h).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::NonFinite);
                assert_eq!([bits(&p), bits(&m)], before);
                let unchecked = GnConfig {
                    check_finite: false,
                    ..cfg
                };
                gn_step(&unchecked, 1, &mut p, &g, Some(&mut m), &h).unwrap();
                if !in_h {
                    assert!(!p[at].is_finite(), "a non-finite gradient reaches theta");
                }
            }
        }
    }
}

#[test]
fn gn_step_bad_input_is_rejected_and_nothing_changes() {
    let [p0, g, m0, h] = step_state(3, 33);
    let base = GnConfig::default();
    let bad: Vec<(GnConfig, u64)> = vec![
        (GnConfig { lr: -1.0, ..base }, 1),
        (
            GnConfig {
                lr: f64::NAN,
                ..base
            },
            1,
        ),
        (
            GnConfig {
                power: f64::NAN,
                ..base
            },
            1,
        ),
        (
            GnConfig {
                power: f64::INFINITY,
                ..base
            },
            1,
        ),
        (
            GnConfig {
                power: -1.0,
                damping: 0.0,
                ..base
            },
            1,
        ),
        (
            GnConfig {
                damping: -1e-3,
                ..base
            },
            1,
        ),
        (
            GnConfig {
                damping: f64::INFINITY,
                ..base
            },
            1,
        ),
        // Found by the gn fuzzer: a nonzero damping that is 0 in f32 (5e-324) with a tiny
        // positive power made the kernel's factor 0^p = 0 where the f64 step's is ~1.
        (
            GnConfig {
                power: f64::from(f32::MIN_POSITIVE),
                damping: 5e-324,
                ..base
            },
            1,
        ),
        (GnConfig { beta1: 1.0, ..base }, 1),
        (
            GnConfig {
                beta1: -0.5,
                ..base
            },
            1,
        ),
        (
            GnConfig {
                weight_decay: -0.1,
                ..base
            },
            1,
        ),
        (
            GnConfig {
                sophia: Some(SophiaClip {
                    gamma: 0.0,
                    eps: 1e-12,
                }),
                ..base
            },
            1,
        ),
        (
            GnConfig {
                sophia: Some(SophiaClip {
                    gamma: 0.1,
                    eps: 0.0,
                }),
                ..base
            },
            1,
        ),
        (
            GnConfig {
                sophia: Some(SophiaClip {
                    gamma: 0.1,
                    eps: 1e-50,
                }),
                ..base
            },
            1,
        ),
        (base, 0),
    ];
    for (cfg, step) in bad {
        let (mut p, mut m) = (p0.clone(), m0.clone());
        let err = gn_step(&cfg, step, &mut p, &g, Some(&mut m), &h).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidHyperparameter,
            "{cfg:?} step {step}"
        );
        assert!(!err.message().is_empty());
        assert_eq!([bits(&p), bits(&m)], [bits(&p0), bits(&m0)]);
    }
    let (mut p, mut m) = (p0.clone(), m0.clone());
    for (gl, ml, hl) in [(32, 33, 33), (33, 32, 33), (33, 33, 32)] {
        let err = gn_step(&base, 1, &mut p, &g[..gl], Some(&mut m[..ml]), &h[..hl]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Length);
    }
    assert_eq!([bits(&p), bits(&m)], [bits(&p0), bits(&m0)]);
    // Sophia ignores power and damping: power < 0 with damping 0 is fine there.
    let sophia = GnConfig {
        damping: 0.0,
        sophia: Some(SophiaClip::default()),
        ..base
    };
    gn_step(&sophia, 1, &mut p, &g, None, &h).unwrap();
}

#[test]
fn the_optimizer_refreshes_every_k_steps_and_equals_the_kernel_calls() {
    let cfg = GaussNewtonConfig {
        step: GnConfig {
            beta1: 0.9,
            lr: 0.05,
            check_finite: true,
            ..Default::default()
        },
        hessian_beta: 0.8,
        refresh_interval: 3,
    };
    let lengths = [4usize, 30];
    let mut opt = GaussNewton::new(cfg, &lengths).unwrap();
    let mut params: Vec<Vec<f32>> = lengths
        .iter()
        .map(|&n| uniform(n as u64, n, -1.0, 1.0))
        .collect();
    let mut manual = params.clone();
    let mut manual_m: Vec<Vec<f32>> = lengths.iter().map(|&n| vec![0.0; n]).collect();
    let mut manual_h: Vec<Vec<f32>> = lengths.iter().map(|&n| vec![0.0; n]).collect();
    let mut refreshes = 0;
    for step in 1..=10u64 {
        let data: Vec<Vec<f32>> = lengths
            .iter()
            .map(|&n| uniform(step * 31 + n as u64, 8 * n, -1.0, 1.0))
            .collect();
        if opt.needs_refresh() {
            assert_eq!((step - 1) % 3, 0);
            opt.refresh(|i, h, beta| {
                gn_diag_weighted(
                    Samples::strided(&data[i], 8, h.len(), h.len()).unwrap(),
                    None,
                    beta,
                    h,
                )
            })
            .unwrap();
            let beta = if refreshes == 0 { 0.0 } else { 0.8 };
            for (i, h) in manual_h.iter_mut().enumerate() {
                gn_diag_weighted(
                    Samples::strided(&data[i], 8, h.len(), h.len()).unwrap(),
                    None,
                    beta,
                    h,
                )
                .unwrap();
            }
            refreshes += 1;
        }
        let grads: Vec<Vec<f32>> = lengths
            .iter()
            .map(|&n| uniform(step * 7 + n as u64, n, -1.0, 1.0))
            .collect();
        let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gv: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut views, &gv).unwrap();
        for i in 0..lengths.len() {
            gn_step(
                &cfg.step,
                step,
                &mut manual[i],
                &grads[i],
                Some(&mut manual_m[i]),
                &manual_h[i],
            )
            .unwrap();
        }
    }
    assert_eq!((opt.steps_taken(), opt.refreshes()), (10, 4));
    for i in 0..lengths.len() {
        assert_eq!(bits(&params[i]), bits(&manual[i]));
        assert_eq!(bits(&opt.h()[i]), bits(&manual_h[i]));
        assert_eq!(bits(&opt.exp_avg()[i]), bits(&manual_m[i]));
    }
    // A NaN in the last tensor's gradient: nothing changes, the count included.
    let snapshot = params.clone();
    let mut grads: Vec<Vec<f32>> = lengths.iter().map(|&n| vec![0.5; n]).collect();
    grads[1][29] = f32::NAN;
    let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gv: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    assert_eq!(
        opt.step(&mut views, &gv).unwrap_err().kind(),
        ErrorKind::NonFinite
    );
    assert_eq!(opt.steps_taken(), 10);
    assert_eq!(params, snapshot);
    // Bad configurations.
    for bad in [
        GaussNewtonConfig {
            refresh_interval: 0,
            ..cfg
        },
        GaussNewtonConfig {
            hessian_beta: 1.0,
            ..cfg
        },
    ] {
        assert_eq!(
            GaussNewton::new(bad, &lengths).unwrap_err().kind(),
            ErrorKind::InvalidHyperparameter
        );
    }
}

#[test]
fn softmax_factors_are_within_six_ulp_at_extreme_logits() {
    // Rows of one class far above the rest (p near 1: 1 - p must not cancel), ties, large
    // offsets, and every length around the SIMD widths.
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for classes in [1usize, 2, 3, 7, 15, 16, 17, 33, 100, 1000] {
        for gap in [0.0f32, 0.5, 5.0, 20.0, 40.0, 60.0] {
            for offset in [0.0f32, -1e4, 3e3] {
                let mut z: Vec<f32> = (0..classes)
                    .map(|c| offset + ((c * 7) % 11) as f32 * 0.3 - 1.5)
                    .collect();
                z[classes / 2] = offset + 1.5 + gap;
                rows.push(z.clone());
                if classes > 2 {
                    // A tie for the maximum.
                    z[classes - 1] = z[classes / 2];
                    rows.push(z);
                }
            }
        }
    }
    for z in &rows {
        let classes = z.len();
        let mut s = vec![f32::NAN; classes];
        gn_softmax_factors(
            Samples::new(z, 1, classes).unwrap(),
            GnEstimator::Exact,
            0,
            &mut s,
        )
        .unwrap();
        let expected = reference::softmax_factors(&to_f64(z), 1, classes, GnEstimator::Exact, 0);
        assert_close(
            &format!("classes {classes}, max {}", z[classes / 2]),
            &s,
            &expected,
            &expected,
            6.0,
        );
    }
}

#[test]
fn sampled_factors_over_many_classes_draw_the_reference_labels() {
    // 1000 classes: the label search crosses many chunks of the cumulative sum.
    let (n, classes) = (64, 1000);
    let logits = uniform(300, n * classes, -3.0, 3.0);
    let mut s = vec![f32::NAN; n * classes];
    gn_softmax_factors(
        Samples::new(&logits, n, classes).unwrap(),
        GnEstimator::Sampled,
        77,
        &mut s,
    )
    .unwrap();
    let expected =
        reference::softmax_factors(&to_f64(&logits), n, classes, GnEstimator::Sampled, 77);
    // The same labels (a different one would put a factor near 1 where the reference has p^2),
    // so every factor within its bound (p^2: twice the error of p, plus one rounding).
    assert_close("sampled, 1000 classes", &s, &expected, &expected, 7.0);
}

#[test]
fn logistic_weights_are_within_six_ulp() {
    // One sample with x = 1: h is the weight itself (the f32 product and f64 mean are exact).
    let mut logits: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).collect();
    logits.extend([
        0.0, -0.0, 1e-30, 87.0, 88.7, 89.0, 103.0, 104.0, -150.0, 200.0,
    ]);
    for isa in Isa::available() {
        for &z in &logits {
            let mut h = [f32::NAN];
            gn_diag_logistic_with(
                isa,
                Par::Seq,
                Samples::strided(&[1.0], 1, 1, 1).unwrap(),
                &[z],
                0.0,
                &mut h,
            )
            .unwrap();
            // w(z) = w(-z); the reference at -|z| does not cancel in 1 - s.
            let w = reference::logistic_weight(-(z.abs() as f64));
            assert_close(&format!("{} z = {z}", isa.name()), &h, &[w], &[w], 6.0);
        }
    }
}
