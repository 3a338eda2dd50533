//! Bases: rotation round trips and f64 references, rotated Adam against the f64 reference and
//! the invariance "Adam in basis U on g equals plain Adam on U^T g", statistics, eigen and
//! power-iteration refresh, state transfer, geodesic interpolation, SOAP end to end, bad input.

mod common;

use common::*;
use diagprec::basis::orthonormality_error;
use diagprec::basis::rotate::{dense_rotate_into_with, kron_rotate_into_with};
use diagprec::{
    adam_step, reference, AdamConfig, Basis, DenseBasis, ErrorKind, Geodesic, GnMatrix, Isa,
    KroneckerBasis, KroneckerStatistics, Par, RefreshMethod, RotatedAdam, Samples, Soap,
    SoapConfig, StateTransfer,
};
use faer::Mat;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

fn gaussian(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// A random orthonormal basis (eigenvectors of a random symmetric matrix).
fn random_basis(seed: u64, d: usize) -> DenseBasis {
    let mut r = rng(seed);
    let a = gaussian(&mut r, d * d);
    let sym = Mat::from_fn(d, d, |i, j| a[i * d + j] + a[j * d + i]);
    DenseBasis::from_symmetric(sym.as_ref()).unwrap().0
}

/// `U` as a row-major f64 array.
fn row_major(u: faer::MatRef<'_, f32>) -> Vec<f64> {
    let d = u.nrows();
    (0..d * d).map(|k| u[(k / d, k % d)] as f64).collect()
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

fn max_abs_diff(a: faer::MatRef<'_, f32>, b: faer::MatRef<'_, f32>) -> f32 {
    let mut worst = 0.0f32;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            worst = worst.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    worst
}

#[test]
fn dense_rotation_matches_reference_and_round_trips() {
    for (seed, d) in [(1, 1), (2, 3), (3, 17), (4, 64), (5, 129), (6, 300)] {
        let basis = random_basis(seed, d);
        let g = gaussian(&mut rng(seed + 100), d);
        let mut rot = vec![0.0; d];
        let mut back = vec![0.0; d];
        basis.rotate_into(&g, &mut rot).unwrap();
        basis.rotate_out(&rot, &mut back).unwrap();
        let u = row_major(basis.matrix());
        let expected = reference::rotate_dense(&u, &to_f64(&g), true);
        assert!(rel_err(&rot, &expected) < 1e-5, "d = {d}: into");
        assert!(rel_err(&back, &to_f64(&g)) < 1e-5, "d = {d}: round trip");
        // Unaligned buffers and accumulation.
        let src = Unaligned::new(&g, 3);
        let mut out = Unaligned::new(&rot, 1);
        dense_rotate_into_with(Par::Seq, basis.matrix(), src.get(), out.get_mut(), true).unwrap();
        let doubled: Vec<f64> = expected.iter().map(|x| 2.0 * x).collect();
        assert!(rel_err(out.get(), &doubled) < 1e-5);
        assert!(out.guards_intact());
    }
}

#[test]
fn kronecker_rotation_matches_reference_and_round_trips() {
    for (seed, m, n) in [(1, 1, 1), (2, 1, 7), (3, 5, 3), (4, 33, 17), (5, 64, 100)] {
        let kb = KroneckerBasis::from_bases(random_basis(seed, m), random_basis(seed + 50, n));
        let g = gaussian(&mut rng(seed + 7), m * n);
        let (mut rot, mut back, mut work) = (vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n]);
        kb.rotate_into(&g, &mut rot, &mut work).unwrap();
        kb.rotate_out(&rot, &mut back, &mut work).unwrap();
        let (ql, qr) = (
            row_major(kb.left().matrix()),
            row_major(kb.right().matrix()),
        );
        let expected = reference::rotate_kronecker(&ql, &qr, &to_f64(&g), m, n, true);
        assert!(rel_err(&rot, &expected) < 1e-5, "{m} x {n}: into");
        assert!(rel_err(&back, &to_f64(&g)) < 1e-5, "{m} x {n}: round trip");
        // The Kronecker basis is the dense basis Q_L (x) Q_R on the row-major vec.
        if m * n <= 200 {
            let u = Mat::from_fn(m * n, m * n, |r, c| {
                kb.left().matrix()[(r / n, c / n)] * kb.right().matrix()[(r % n, c % n)]
            });
            let dense = DenseBasis::new(u).unwrap();
            let mut rot2 = vec![0.0; m * n];
            dense.rotate_into(&g, &mut rot2).unwrap();
            assert!(rel_err(&rot2, &expected) < 1e-5);
        }
        let b = Basis::Kronecker(kb);
        assert_eq!(b.workspace_len(), m * n);
        let mut short = vec![0.0; m * n - 1];
        let err = b.rotate_into(&g, &mut rot, &mut short).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Length);
    }
}

#[test]
fn new_basis_checks_orthonormality() {
    let u = random_basis(9, 20).into_matrix();
    assert!(orthonormality_error(u.as_ref()).unwrap() < 1e-5);
    assert!(DenseBasis::new(u.clone()).is_ok());
    let mut scaled = u.clone();
    scaled[(3, 4)] += 1e-3;
    assert_eq!(
        DenseBasis::new(scaled).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        DenseBasis::new(Mat::zeros(3, 4)).unwrap_err().kind(),
        ErrorKind::Length
    );
    let mut nan = u;
    nan[(0, 0)] = f32::NAN;
    assert_eq!(
        DenseBasis::new(nan).unwrap_err().kind(),
        ErrorKind::NonFinite
    );
    assert_eq!(DenseBasis::identity(0).dim(), 0);
}

fn configs() -> Vec<AdamConfig> {
    vec![
        AdamConfig {
            lr: 1e-2,
            ..AdamConfig::default()
        },
        AdamConfig::adamw(1e-2),
        AdamConfig {
            lr: 1e-2,
            weight_decay: 0.1,
            amsgrad: true,
            maximize: true,
            inv_grad_scale: 0.5,
            ..AdamConfig::default()
        },
    ]
}

#[test]
fn rotated_adam_matches_the_f64_reference() {
    for (seed, d) in [(11, 1), (12, 19), (13, 70)] {
        let basis = random_basis(seed, d);
        let u = row_major(basis.matrix());
        for cfg in configs() {
            let mut opt = RotatedAdam::new(cfg, Basis::Dense(basis.clone())).unwrap();
            let mut r = rng(seed);
            let mut p = gaussian(&mut r, d);
            let mut p64 = to_f64(&p);
            let (mut m, mut v, mut x) = (vec![0.0; d], vec![0.0; d], vec![0.0; d]);
            for t in 1..=10 {
                let g = gaussian(&mut r, d);
                opt.step(&mut p, &g).unwrap();
                reference::rotated_adam_step(
                    &cfg,
                    t,
                    &|y| reference::rotate_dense(&u, y, true),
                    &|y| reference::rotate_dense(&u, y, false),
                    &mut p64,
                    &to_f64(&g),
                    &mut m,
                    &mut v,
                    Some(&mut x),
                );
            }
            for i in 0..d {
                // Ten steps of lr 1e-2 through f32 GEMMs: within 2e-5 of the f64 path.
                assert!(
                    (p[i] as f64 - p64[i]).abs() < 2e-5 * (1.0 + p64[i].abs()),
                    "d = {d}, {cfg:?}: {} vs {}",
                    p[i],
                    p64[i]
                );
            }
        }
    }
}

/// Adam in basis U on gradients g equals plain Adam on U^T theta with gradients U^T g.
#[test]
fn adam_in_a_basis_equals_plain_adam_on_rotated_data() {
    let (m, n) = (12, 9);
    let kb = KroneckerBasis::from_bases(random_basis(21, m), random_basis(22, n));
    for cfg in [AdamConfig::default(), AdamConfig::adamw(1e-2)] {
        let cfg = AdamConfig { lr: 1e-2, ..cfg };
        for basis in [
            Basis::Kronecker(kb.clone()),
            Basis::Dense(random_basis(23, m * n)),
        ] {
            let mut r = rng(5);
            let mut p = gaussian(&mut r, m * n);
            let mut work = vec![0.0; basis.workspace_len()];
            let mut p_rot = vec![0.0; m * n];
            basis.rotate_into(&p, &mut p_rot, &mut work).unwrap();
            let (mut mm, mut vv) = (vec![0.0; m * n], vec![0.0; m * n]);
            let mut opt = RotatedAdam::new(cfg, basis.clone()).unwrap();
            for t in 1..=8 {
                let g = gaussian(&mut r, m * n);
                opt.step(&mut p, &g).unwrap();
                let mut g_rot = vec![0.0; m * n];
                basis.rotate_into(&g, &mut g_rot, &mut work).unwrap();
                adam_step(&cfg, t, &mut p_rot, &g_rot, &mut mm, &mut vv, None).unwrap();
            }
            let mut back = vec![0.0; m * n];
            basis.rotate_out(&p_rot, &mut back, &mut work).unwrap();
            for i in 0..m * n {
                assert!(
                    (p[i] - back[i]).abs() < 2e-5,
                    "{i}: {} vs {}",
                    p[i],
                    back[i]
                );
            }
            // v lives in rotated coordinates: it matches plain Adam's on rotated data.
            for (ours, plain) in opt.exp_avg_sq().iter().zip(&vv) {
                assert!((ours - plain).abs() <= 1e-5 * plain.max(1e-3));
            }
        }
    }
}

#[test]
fn identity_basis_is_the_plain_kernel_bitwise() {
    let n = 1001;
    let mut r = rng(3);
    for cfg in configs() {
        let mut opt = RotatedAdam::new(cfg, Basis::Identity(n)).unwrap();
        let mut p = gaussian(&mut r, n);
        let mut p2 = p.clone();
        let (mut m, mut v, mut x) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for t in 1..=3 {
            let g = gaussian(&mut r, n);
            opt.step(&mut p, &g).unwrap();
            adam_step(&cfg, t, &mut p2, &g, &mut m, &mut v, Some(&mut x)).unwrap();
        }
        assert_eq!(bits(&p), bits(&p2));
        assert_eq!(bits(opt.exp_avg_sq()), bits(&v));
    }
}

#[test]
fn rotated_step_agrees_across_isas_and_threads() {
    // Large enough for the GEMMs to use the pool: 2 m n (m + n) = 87 MFLOP per Kronecker
    // rotation, 2 d^2 = 2.4 MFLOP per dense one.
    let (m, n) = (300, 260);
    let d = 1100;
    let bases = [
        Basis::Kronecker(KroneckerBasis::from_bases(
            random_basis(31, m),
            random_basis(32, n),
        )),
        Basis::Dense(random_basis(33, d)),
    ];
    for basis in bases {
        let len = basis.len();
        let run = |isa: Isa, par: Par| {
            let mut r = rng(8);
            let mut p = gaussian(&mut r, len);
            let cfg = AdamConfig {
                amsgrad: true,
                ..AdamConfig::adamw(1e-2)
            };
            let mut opt = RotatedAdam::new(cfg, basis.clone())
                .unwrap()
                .with_isa_par(isa, par);
            for _ in 0..3 {
                let g = gaussian(&mut r, len);
                opt.step(&mut p, &g).unwrap();
            }
            bits(&p)
        };
        let first = run(Isa::scalar(), Par::Seq);
        for isa in Isa::available() {
            assert_eq!(run(isa, Par::Seq), first, "{}", isa.name());
        }
        for threads in [1, 2, 3] {
            diagprec::set_num_threads(threads).unwrap();
            let p = run(Isa::detect(), Par::Pool);
            // The GEMMs split work by output blocks: sums do not depend on the thread count.
            assert_eq!(p, first, "{threads} threads, {len} floats");
            // From a caller's own rayon pool of the same size and of another size.
            for (own, p) in from_own_pools(threads, || run(Isa::detect(), Par::Pool)) {
                assert_eq!(
                    p, first,
                    "{threads} threads from a pool of {own}, {len} floats"
                );
            }
        }
        diagprec::set_num_threads(0).unwrap();
    }
}

#[test]
fn rotated_adam_bad_input_writes_nothing() {
    let d = 10;
    let basis = Basis::Dense(random_basis(41, d));
    let cfg = AdamConfig {
        check_finite: true,
        ..AdamConfig::default()
    };
    let mut opt = RotatedAdam::new(cfg, basis).unwrap();
    let mut p = vec![1.0f32; d];
    let mut g = vec![0.5f32; d];
    opt.step(&mut p, &g).unwrap();
    let (p0, v0) = (p.clone(), opt.exp_avg_sq().to_vec());
    g[7] = f32::NAN;
    assert_eq!(
        opt.step(&mut p, &g).unwrap_err().kind(),
        ErrorKind::NonFinite
    );
    assert_eq!(
        opt.step(&mut p[..9], &g[..9]).unwrap_err().kind(),
        ErrorKind::Length
    );
    assert_eq!(bits(&p), bits(&p0));
    assert_eq!(bits(opt.exp_avg_sq()), bits(&v0));
    assert_eq!(opt.steps_taken(), 1);
    let bad = AdamConfig {
        beta2: 1.0,
        ..AdamConfig::default()
    };
    assert_eq!(
        RotatedAdam::new(bad, Basis::Identity(3))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidHyperparameter
    );
}

/// A symmetric matrix with known eigenpairs: `Q diag(lambda) Q^T`.
fn known_spectrum(seed: u64, d: usize) -> (Mat<f32>, DenseBasis, Vec<f32>) {
    let q = random_basis(seed, d);
    let lambda: Vec<f32> = (0..d)
        .map(|i| 1.0 + 3.0 * (d - i) as f32 / d as f32)
        .collect();
    let a = Mat::from_fn(d, d, |i, j| {
        (0..d)
            .map(|k| q.matrix()[(i, k)] as f64 * lambda[k] as f64 * q.matrix()[(j, k)] as f64)
            .sum::<f64>() as f32
    });
    (a, q, lambda)
}

#[test]
fn eigen_refresh_matches_the_reference_decomposition() {
    let d = 40;
    let (a, q, lambda) = known_spectrum(51, d);
    let (basis, s) = DenseBasis::from_symmetric(a.as_ref()).unwrap();
    for i in 0..d {
        assert!(
            (s[i] - lambda[i]).abs() < 1e-4 * lambda[i],
            "eigenvalue {i}"
        );
        let dot: f32 = (0..d)
            .map(|k| basis.matrix()[(k, i)] * q.matrix()[(k, i)])
            .sum();
        assert!(
            dot.abs() > 1.0 - 1e-4,
            "eigenvector {i}: |dot| = {}",
            dot.abs()
        );
    }
    // Refresh from a permuted, sign-flipped copy of the answer: the matching recovers it.
    let perm: Vec<usize> = (0..d).map(|i| (i * 7) % d).collect();
    let old = DenseBasis::new(Mat::from_fn(d, d, |r, c| {
        let sign = if c % 3 == 0 { -1.0 } else { 1.0 };
        sign * q.matrix()[(r, perm[c])]
    }))
    .unwrap();
    let (new, info) = old
        .refreshed(a.as_ref(), RefreshMethod::Eigh, Par::Pool)
        .unwrap();
    for j in 0..d {
        let i = info.permutation[j];
        assert_eq!(perm[i], j, "new column {j} follows old column {i}");
        let dot: f32 = (0..d)
            .map(|k| new.matrix()[(k, j)] * old.matrix()[(k, i)])
            .sum();
        assert!(dot > 1.0 - 1e-4);
    }
    assert_eq!(info.eigenvalues, s);
}

#[test]
fn power_iteration_refresh_converges_to_the_eigenbasis() {
    let d = 24;
    let (a, q, lambda) = known_spectrum(61, d);
    let mut basis = DenseBasis::identity(d);
    let mut info = None;
    for _ in 0..300 {
        let (b, i) = basis
            .refreshed(a.as_ref(), RefreshMethod::PowerQr, Par::Seq)
            .unwrap();
        basis = b;
        info = Some(i);
    }
    assert!(orthonormality_error(basis.matrix()).unwrap() < 1e-5);
    let info = info.unwrap();
    for (i, &l) in lambda.iter().enumerate() {
        let dot: f32 = (0..d)
            .map(|k| basis.matrix()[(k, i)] * q.matrix()[(k, i)])
            .sum();
        assert!(dot.abs() > 1.0 - 1e-3, "column {i}: |dot| = {}", dot.abs());
        assert!((info.eigenvalues[i] - l).abs() < 1e-3 * l);
    }
    // Converged: a further refresh is the identity permutation and keeps every column's sign.
    let (again, info) = basis
        .refreshed(a.as_ref(), RefreshMethod::PowerQr, Par::Seq)
        .unwrap();
    assert_eq!(info.permutation, (0..d).collect::<Vec<_>>());
    assert!(max_abs_diff(again.matrix(), basis.matrix()) < 1e-3);
}

#[test]
fn statistics_match_f64_references() {
    let (m, n) = (7, 11);
    let mut st = KroneckerStatistics::new(m, n);
    let mut r = rng(71);
    let (mut l64, mut r64) = (vec![0.0f64; m * m], vec![0.0f64; n * n]);
    let beta = 0.9;
    for _ in 0..3 {
        let g = gaussian(&mut r, m * n);
        st.update(&g, beta, Par::Pool).unwrap();
        for i in 0..m {
            for j in 0..m {
                let s: f64 = (0..n)
                    .map(|k| g[i * n + k] as f64 * g[j * n + k] as f64)
                    .sum();
                l64[i * m + j] = beta * l64[i * m + j] + (1.0 - beta) * s;
            }
        }
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..m)
                    .map(|k| g[k * n + i] as f64 * g[k * n + j] as f64)
                    .sum();
                r64[i * n + j] = beta * r64[i * n + j] + (1.0 - beta) * s;
            }
        }
    }
    for i in 0..m {
        for j in 0..m {
            assert!(
                (st.left()[(i, j)] as f64 - l64[i * m + j]).abs()
                    < 1e-5 * (1.0 + l64[i * m + j].abs())
            );
        }
    }
    for i in 0..n {
        for j in 0..n {
            assert!(
                (st.right()[(i, j)] as f64 - r64[i * n + j]).abs()
                    < 1e-5 * (1.0 + r64[i * n + j].abs())
            );
        }
    }

    // Full GN matrix: 600 rows (three blocks), stride 13 > dim 10, weights, EMA.
    let (samples, dim, stride) = (600, 10, 13);
    let x = gaussian(&mut r, samples * stride);
    let w: Vec<f32> = (0..samples).map(|_| r.random_range(0.0..1.0)).collect();
    let mut h = GnMatrix::new(dim);
    h.accumulate(&x, samples, stride, None, 0.0, Par::Pool)
        .unwrap();
    h.accumulate(&x, samples, stride, Some(&w), 0.5, Par::Pool)
        .unwrap();
    for i in 0..dim {
        for j in 0..dim {
            let plain: f64 = (0..samples)
                .map(|s| x[s * stride + i] as f64 * x[s * stride + j] as f64)
                .sum::<f64>()
                / samples as f64;
            let weighted: f64 = (0..samples)
                .map(|s| w[s] as f64 * x[s * stride + i] as f64 * x[s * stride + j] as f64)
                .sum::<f64>()
                / samples as f64;
            let want = 0.5 * plain + 0.5 * weighted;
            assert!(
                (h.matrix()[(i, j)] as f64 - want).abs() < 1e-5,
                "({i}, {j})"
            );
        }
    }
    assert_eq!(
        h.accumulate(&x, samples, 9, None, 0.0, Par::Pool)
            .unwrap_err()
            .kind(),
        ErrorKind::Length
    );
    assert_eq!(
        h.accumulate(&x, samples + 1, stride, None, 0.0, Par::Pool)
            .unwrap_err()
            .kind(),
        ErrorKind::Length
    );
    assert_eq!(
        st.update(&x[..m * n], 1.0, Par::Pool).unwrap_err().kind(),
        ErrorKind::InvalidHyperparameter
    );
}

#[test]
fn state_transfer_rules() {
    let d = 16;
    let old = random_basis(81, d);
    let new = random_basis(82, d);
    let cfg = AdamConfig::default();
    let mut opt = RotatedAdam::new(cfg, Basis::Dense(old.clone())).unwrap();
    let mut r = rng(83);
    let mut p = gaussian(&mut r, d);
    for _ in 0..3 {
        let g = gaussian(&mut r, d);
        opt.step(&mut p, &g).unwrap();
    }
    let mut m_orig = vec![0.0; d];
    old.rotate_out(opt.exp_avg(), &mut m_orig).unwrap();
    let v_old = opt.exp_avg_sq().to_vec();

    let mut reproject = opt.clone();
    reproject
        .set_basis(Basis::Dense(new.clone()), StateTransfer::Reproject, None)
        .unwrap();
    // m is re-projected exactly: the same vector in original coordinates.
    let mut m_after = vec![0.0; d];
    new.rotate_out(reproject.exp_avg(), &mut m_after).unwrap();
    assert!(rel_err(&m_after, &to_f64(&m_orig)) < 1e-5);
    // v~' = (P o P)^T v~ keeps the sum.
    let sum_old: f32 = v_old.iter().sum();
    let sum_new: f32 = reproject.exp_avg_sq().iter().sum();
    assert!((sum_old - sum_new).abs() < 1e-4 * sum_old);

    let perm: Vec<usize> = (0..d).rev().collect();
    let mut permute = opt.clone();
    permute
        .set_basis(
            Basis::Dense(new.clone()),
            StateTransfer::Permute,
            Some((&perm, &[])),
        )
        .unwrap();
    for j in 0..d {
        assert_eq!(permute.exp_avg_sq()[j], v_old[perm[j]]);
    }
    let bad = vec![0usize; d];
    assert_eq!(
        opt.set_basis(
            Basis::Dense(new.clone()),
            StateTransfer::Permute,
            Some((&bad, &[]))
        )
        .unwrap_err()
        .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        opt.set_basis(Basis::Dense(new), StateTransfer::Permute, None)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        opt.set_basis(Basis::Identity(d), StateTransfer::Reproject, None)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
}

fn check_geodesic(u0: &DenseBasis, u1: &DenseBasis) -> Geodesic {
    let geo = Geodesic::new(u0.matrix(), u1.matrix()).unwrap();
    let at0 = geo.at(0.0).unwrap();
    let at1 = geo.at(1.0).unwrap();
    assert!(max_abs_diff(at0.matrix(), u0.matrix()) < 1e-5, "t = 0");
    assert!(
        max_abs_diff(at1.matrix(), geo.matched_end()) < 1e-5,
        "t = 1"
    );
    for t in [0.25, 0.5, 0.9] {
        let ut = geo.at(t).unwrap();
        assert!(orthonormality_error(ut.matrix()).unwrap() < 1e-5, "t = {t}");
    }
    // The matched end is U1's columns, permuted and signed.
    let d = u0.dim();
    for i in 0..d {
        for k in 0..d {
            let want = geo.signs()[i] * u1.matrix()[(k, geo.permutation()[i])];
            assert_eq!(geo.matched_end()[(k, i)], want);
        }
    }
    geo
}

#[test]
fn geodesic_endpoints_orthonormality_and_angles() {
    for (seed, d) in [(91, 2), (92, 3), (93, 10), (94, 64), (95, 512)] {
        check_geodesic(&random_basis(seed, d), &random_basis(seed + 1000, d));
    }
    // Known path: U1 = U0 exp(theta J) in one plane; U(t) rotates by t * theta.
    let d = 6;
    let u0 = random_basis(96, d);
    let theta = 0.7f64;
    let u1 = DenseBasis::new(Mat::from_fn(d, d, |r, c| {
        let (a, b) = (u0.matrix()[(r, 0)] as f64, u0.matrix()[(r, 1)] as f64);
        (match c {
            0 => a * theta.cos() + b * theta.sin(),
            1 => -a * theta.sin() + b * theta.cos(),
            _ => u0.matrix()[(r, c)] as f64,
        }) as f32
    }))
    .unwrap();
    let geo = check_geodesic(&u0, &u1);
    assert!((geo.angles()[0] - theta).abs() < 1e-5 && (geo.angles()[1] - theta).abs() < 1e-5);
    assert!(geo.angles()[2] < 1e-5);
    let half = geo.at(0.5).unwrap();
    for r in 0..d {
        let (a, b) = (u0.matrix()[(r, 0)] as f64, u0.matrix()[(r, 1)] as f64);
        let want = a * (theta / 2.0).cos() + b * (theta / 2.0).sin();
        assert!((half.matrix()[(r, 0)] as f64 - want).abs() < 1e-5);
    }
    // Column order and signs do not change the path: U1 permuted and negated gives the same.
    let shuffled =
        DenseBasis::new(Mat::from_fn(d, d, |r, c| -u1.matrix()[(r, (c + 2) % d)])).unwrap();
    let geo2 = check_geodesic(&u0, &shuffled);
    assert!(max_abs_diff(geo2.at(0.5).unwrap().matrix(), half.matrix()) < 1e-5);
}

#[test]
fn geodesic_far_extrapolation_is_orthonormal_or_refused() {
    // Found by the basis fuzzer: between a basis and the same basis moved by t = 1.59 on a
    // geodesic, t = 1e30 returned a matrix with max |U^T U - I| = 8.7e-3 (sin(t w) / w of
    // angles that are rounding noise). Every accepted t gives an orthonormal basis; beyond
    // MAX_INTERPOLATION_T the call is refused and nothing is produced.
    use diagprec::basis::geodesic::MAX_INTERPOLATION_T;
    for (seed, d) in [(31u64, 9usize), (32, 64)] {
        let u0 = random_basis(seed, d);
        for u1 in [random_basis(seed + 1, d), turned(seed + 2, &u0, 1e-3)] {
            let moved = Geodesic::new(u0.matrix(), u1.matrix())
                .unwrap()
                .at(1.59375)
                .unwrap();
            for end in [&u1, &moved, &u0] {
                let geo = Geodesic::new(u0.matrix(), end.matrix()).unwrap();
                for t in [-MAX_INTERPOLATION_T, -37.5, 3.0, 100.0, MAX_INTERPOLATION_T] {
                    let ut = geo.at(t).unwrap();
                    let err = orthonormality_error(ut.matrix()).unwrap();
                    assert!(err < 1e-5, "d = {d}, t = {t}: max |U^T U - I| = {err:e}");
                }
                for t in [MAX_INTERPOLATION_T * 1.001, -1e6, 1e30, f64::INFINITY] {
                    assert_eq!(
                        geo.at(t).unwrap_err().kind(),
                        ErrorKind::InvalidHyperparameter,
                        "t = {t}"
                    );
                }
            }
        }
    }
}

#[test]
fn geodesic_with_a_rotation_by_pi() {
    // U1 = U0 R, R = 2 n n^T - I on the first three axes (a rotation by pi about n): after
    // column matching R may keep eigenvalue -1; the endpoints must still be reproduced.
    let d = 5;
    let u0 = random_basis(97, d);
    let nvec = [1.0f64, 2.0, 2.0].map(|x| x / 3.0);
    let r = |i: usize, j: usize| -> f64 {
        if i < 3 && j < 3 {
            2.0 * nvec[i] * nvec[j] - if i == j { 1.0 } else { 0.0 }
        } else if i == j {
            1.0
        } else {
            0.0
        }
    };
    let u1 = DenseBasis::new(Mat::from_fn(d, d, |row, c| {
        (0..d)
            .map(|k| u0.matrix()[(row, k)] as f64 * r(k, c))
            .sum::<f64>() as f32
    }))
    .unwrap();
    check_geodesic(&u0, &u1);
    // Exactly -I on a plane: the matching flips signs, the path is trivial.
    let flipped = DenseBasis::new(Mat::from_fn(d, d, |row, c| {
        if c < 2 {
            -u0.matrix()[(row, c)]
        } else {
            u0.matrix()[(row, c)]
        }
    }))
    .unwrap();
    let geo = check_geodesic(&u0, &flipped);
    assert!(geo.angles().iter().all(|&a| a < 1e-6));
    assert!(Geodesic::new(u0.matrix(), DenseBasis::identity(4).matrix()).is_err());
    assert_eq!(
        geo.at(f64::NAN).unwrap_err().kind(),
        ErrorKind::InvalidHyperparameter
    );
}

#[test]
fn soap_like_loop_solves_a_matrix_least_squares_problem() {
    // minimise f(W) = 0.5 ||A W - B||^2 / N with an ill-conditioned A (W is 8 x 6).
    let (samples, m, n) = (64, 8, 6);
    let mut r = rng(101);
    let mut a = gaussian(&mut r, samples * m);
    for s in 0..samples {
        for k in 0..m {
            a[s * m + k] *= (1.0 + k as f32).powf(1.5) / 4.0;
        }
    }
    let w_star = gaussian(&mut r, m * n);
    let b: Vec<f32> = (0..samples * n)
        .map(|idx| {
            (0..m)
                .map(|k| a[(idx / n) * m + k] * w_star[k * n + idx % n])
                .sum()
        })
        .collect();
    let loss_grad = |w: &[f32], grad: &mut [f32]| -> f64 {
        let mut loss = 0.0f64;
        grad.iter_mut().for_each(|g| *g = 0.0);
        for s in 0..samples {
            for j in 0..n {
                let pred: f32 = (0..m).map(|k| a[s * m + k] * w[k * n + j]).sum();
                let res = pred - b[s * n + j];
                loss += 0.5 * (res as f64).powi(2) / samples as f64;
                for k in 0..m {
                    grad[k * n + j] += a[s * m + k] * res / samples as f32;
                }
            }
        }
        loss
    };
    for refresh in [RefreshMethod::PowerQr, RefreshMethod::Eigh] {
        let cfg = SoapConfig {
            adam: AdamConfig {
                lr: 3e-2,
                ..SoapConfig::default().adam
            },
            precondition_frequency: 5,
            refresh,
            ..SoapConfig::default()
        };
        let mut soap = Soap::new(cfg, m, n).unwrap();
        let mut w = vec![0.0f32; m * n];
        let mut g = vec![0.0f32; m * n];
        let first = loss_grad(&w, &mut g);
        let mut last = first;
        for _ in 0..400 {
            last = loss_grad(&w, &mut g);
            soap.step(&mut w, &g).unwrap();
        }
        assert!(last < 1e-3 * first, "{refresh:?}: loss {first} -> {last}");
        assert_eq!(soap.adam().steps_taken(), 400);
        assert!(matches!(soap.adam().basis(), Basis::Kronecker(_)));
    }
    let bad = SoapConfig {
        precondition_frequency: 0,
        ..SoapConfig::default()
    };
    assert_eq!(
        Soap::new(bad, 2, 2).unwrap_err().kind(),
        ErrorKind::InvalidHyperparameter
    );
}

#[test]
fn kron_rotation_accumulates() {
    let (m, n) = (3, 4);
    let kb = KroneckerBasis::from_bases(random_basis(111, m), random_basis(112, n));
    let g = gaussian(&mut rng(113), m * n);
    let mut out = vec![1.0f32; m * n];
    let mut work = vec![0.0; m * n];
    kron_rotate_into_with(
        Par::Seq,
        kb.left().matrix(),
        kb.right().matrix(),
        &g,
        &mut out,
        &mut work,
        true,
    )
    .unwrap();
    let (ql, qr) = (
        row_major(kb.left().matrix()),
        row_major(kb.right().matrix()),
    );
    let expected: Vec<f64> = reference::rotate_kronecker(&ql, &qr, &to_f64(&g), m, n, true)
        .iter()
        .map(|x| x + 1.0)
        .collect();
    assert!(rel_err(&out, &expected) < 1e-5);
}

/// GN^p in basis U (h = diag(U^T H U) from the GN kernels) equals plain GN^p on rotated data.
#[test]
fn gn_in_a_basis_equals_plain_gn_on_rotated_data() {
    use diagprec::{
        gn_diag_weighted, gn_diag_weighted_in_basis, gn_step, rotated_gn_step_with, GnConfig,
    };
    let (samples, d) = (50, 24);
    let u = random_basis(121, d);
    let mut r = rng(122);
    let x = gaussian(&mut r, samples * d);
    let w: Vec<f32> = (0..samples).map(|_| r.random_range(0.1..1.0)).collect();
    // h in the basis from the kernel, and from rotated data X U in the identity basis.
    let mut h = vec![0.0f32; d];
    gn_diag_weighted_in_basis(
        Samples::strided(&x, samples, d, d).unwrap(),
        Some(&w),
        u.matrix(),
        0.0,
        &mut h,
    )
    .unwrap();
    let mut xu = vec![0.0f32; samples * d];
    for s in 0..samples {
        u.rotate_into(&x[s * d..(s + 1) * d], &mut xu[s * d..(s + 1) * d])
            .unwrap();
    }
    let mut h_rot = vec![0.0f32; d];
    gn_diag_weighted(
        Samples::strided(&xu, samples, d, d).unwrap(),
        Some(&w),
        0.0,
        &mut h_rot,
    )
    .unwrap();
    for j in 0..d {
        assert!((h[j] - h_rot[j]).abs() < 1e-5 * (1.0 + h_rot[j]));
    }
    for cfg in [
        GnConfig {
            lr: 0.1,
            ..GnConfig::default()
        },
        GnConfig {
            lr: 0.05,
            power: -0.5,
            damping: 1e-2,
            beta1: 0.9,
            weight_decay: 0.1,
            ..GnConfig::default()
        },
    ] {
        for basis in [
            Basis::Dense(u.clone()),
            Basis::Kronecker(KroneckerBasis::from_bases(
                random_basis(123, 4),
                random_basis(124, 6),
            )),
        ] {
            let mut p = gaussian(&mut r, d);
            let mut work = vec![0.0; basis.workspace_len()];
            let mut p_rot = vec![0.0; d];
            basis.rotate_into(&p, &mut p_rot, &mut work).unwrap();
            let (mut m, mut m_plain) = (vec![0.0f32; d], vec![0.0f32; d]);
            let mut ws = vec![0.0f32; 2 * d];
            let momentum = cfg.beta1 > 0.0;
            for t in 1..=5 {
                let g = gaussian(&mut r, d);
                rotated_gn_step_with(
                    Isa::detect(),
                    Par::Pool,
                    &cfg,
                    t,
                    &basis,
                    &mut p,
                    &g,
                    momentum.then_some(&mut m[..]),
                    &h,
                    &mut ws,
                )
                .unwrap();
                let mut g_rot = vec![0.0; d];
                basis.rotate_into(&g, &mut g_rot, &mut work).unwrap();
                gn_step(
                    &cfg,
                    t,
                    &mut p_rot,
                    &g_rot,
                    momentum.then_some(&mut m_plain[..]),
                    &h,
                )
                .unwrap();
            }
            let mut back = vec![0.0; d];
            basis.rotate_out(&p_rot, &mut back, &mut work).unwrap();
            for i in 0..d {
                assert!(
                    (p[i] - back[i]).abs() < 1e-4 * (1.0 + back[i].abs()),
                    "{i}: {} vs {}",
                    p[i],
                    back[i]
                );
            }
        }
    }
    // Identity: the plain kernel, bitwise.
    let cfg = GnConfig::default();
    let g = gaussian(&mut r, d);
    let (mut p1, mut p2) = (vec![1.0f32; d], vec![1.0f32; d]);
    rotated_gn_step_with(
        Isa::detect(),
        Par::Pool,
        &cfg,
        1,
        &Basis::Identity(d),
        &mut p1,
        &g,
        None,
        &h,
        &mut [],
    )
    .unwrap();
    gn_step(&cfg, 1, &mut p2, &g, None, &h).unwrap();
    assert_eq!(bits(&p1), bits(&p2));
    // Bad input writes nothing.
    let checked = GnConfig {
        check_finite: true,
        ..cfg
    };
    let mut bad_h = h.clone();
    bad_h[2] = f32::NAN;
    let mut ws = vec![0.0f32; 2 * d];
    let basis = Basis::Dense(u);
    let err = rotated_gn_step_with(
        Isa::detect(),
        Par::Pool,
        &checked,
        1,
        &basis,
        &mut p1,
        &g,
        None,
        &bad_h,
        &mut ws,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NonFinite);
    let err = rotated_gn_step_with(
        Isa::detect(),
        Par::Pool,
        &cfg,
        1,
        &basis,
        &mut p1,
        &g,
        None,
        &h,
        &mut ws[..2 * d - 1],
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Length);
    assert_eq!(bits(&p1), bits(&p2));
}

/// `q` turned by `expm(eps K)` (`K` a random skew matrix of spectral norm about 2), then its
/// columns permuted and every third one negated: an old basis close to `q`'s eigenvectors.
fn turned(seed: u64, q: &DenseBasis, eps: f64) -> DenseBasis {
    let d = q.dim();
    let mut r = rng(seed);
    let g = gaussian(&mut r, d * d);
    let k: Vec<f64> = (0..d * d)
        .map(|i| eps * (g[i] as f64 - g[(i % d) * d + i / d] as f64) / (2.0 * d as f64).sqrt())
        .collect();
    let turned = reference::mat_mul(&row_major(q.matrix()), &reference::expm(&k, d), d);
    let perm: Vec<usize> = (0..d).map(|c| (c * 5 + 3) % d).collect();
    let perm = if d.is_multiple_of(5) {
        (0..d).rev().collect()
    } else {
        perm
    };
    DenseBasis::new(Mat::from_fn(d, d, |i, c| {
        let sign = if c % 3 == 0 { -1.0 } else { 1.0 };
        (sign * turned[i * d + perm[c]]) as f32
    }))
    .unwrap()
}

/// Largest `|a_ij - b_ij|` of an f32 matrix and a row-major f64 one.
fn max_diff_f64(a: faer::MatRef<'_, f32>, b: &[f64]) -> f64 {
    let d = a.nrows();
    (0..d * d).fold(0.0, |m, k| m.max((a[(k / d, k % d)] as f64 - b[k]).abs()))
}

/// Dimensions around the f32 register widths (8, 16) and larger ones.
// The QR's blocks are 32 columns as two sub-panels of 16: 17 and 61 end in a block of 17 and
// 29 columns (a second sub-panel of 1 and 13), 64 in whole blocks, 130 in a block of 2.
const BASIS_DIMS: [usize; 13] = [1, 2, 3, 7, 8, 9, 15, 16, 17, 33, 61, 64, 130];

#[test]
fn refresh_equals_the_f64_reference_for_every_dimension() {
    // A = Q diag(lambda) Q^T with lambda from 4 down to 1 + 3/d (gap 3/d), the old basis Q
    // turned by 0.02 rad and permuted. Bounds (f32 arithmetic, unit u = 2^-24, ||A|| = 4,
    // cond(A) = 4): eigenvalues and Rayleigh quotients (sums of d products) within
    // (64 + 4 d) u ||A|| of the f64 reference; Eigh's eigenvectors within 64 u ||A|| / gap
    // entrywise (the perturbation bound of an isolated eigenvector); PowerQr's Q within
    // 64 u cond(A) entrywise (Householder QR of A Q is backward stable); the same permutation.
    // Measured (d up to 130): eigenvalues 64 u ||A||, Eigh vectors 0.08 of the bound, PowerQr
    // 3.6e-7.
    let u = f32::EPSILON as f64 / 2.0;
    for (case, d) in BASIS_DIMS.into_iter().enumerate() {
        let (a, q, _) = known_spectrum(200 + case as u64, d);
        let old = turned(300 + case as u64, &q, 0.02);
        let (old64, a64) = (row_major(old.matrix()), row_major(a.as_ref()));
        // The statistic's lower triangle is all that is read: NaN above it must not matter.
        let a = Mat::<f32>::from_fn(d, d, |i, j| if i >= j { a[(i, j)] } else { f32::NAN });
        let gap = 3.0 / d as f64;
        let value_bound = (64.0 + 4.0 * d as f64) * u * 4.0;
        for par in [Par::Seq, Par::Pool] {
            let at = format!("d = {d} {par:?}");
            let (new, info) = old.refreshed(a.as_ref(), RefreshMethod::Eigh, par).unwrap();
            let (q_ref, lambda, perm) = reference::refresh_eigh(&old64, &a64, d);
            assert_eq!(info.permutation, perm, "{at}: Eigh permutation");
            for (&l, &r) in info.eigenvalues.iter().zip(&lambda) {
                assert!(
                    (l as f64 - r).abs() <= value_bound,
                    "{at}: eigenvalue {l} vs {r}"
                );
            }
            let e = max_diff_f64(new.matrix(), &q_ref);
            assert!(e <= 64.0 * u * 4.0 / gap, "{at}: Eigh vectors off by {e}");
            let (new, info) = old
                .refreshed(a.as_ref(), RefreshMethod::PowerQr, par)
                .unwrap();
            let (q_ref, est, perm) = reference::refresh_power_qr(&old64, &a64, d);
            assert_eq!(info.permutation, perm, "{at}: PowerQr permutation");
            for (&l, &r) in info.eigenvalues.iter().zip(&est) {
                assert!(
                    (l as f64 - r).abs() <= value_bound,
                    "{at}: estimate {l} vs {r}"
                );
            }
            let e = max_diff_f64(new.matrix(), &q_ref);
            assert!(e <= 64.0 * u * 4.0, "{at}: PowerQr vectors off by {e}");
        }
    }
}

#[test]
fn geodesic_equals_the_f64_reference_for_every_dimension() {
    // U(t) = U0 expm(t logm(U0^T U1)) in f64 (`reference::geodesic_at`) against `Geodesic::at`
    // for an unrelated U1 and for U0 turned by 0.3 rad: within 8 u = 2^-21 entrywise (f64
    // throughout, one rounding to f32 of entries of magnitude <= 1 at the end; measured: 3e-8);
    // the column matching (permutation, signs, matched end) exactly that of
    // `reference::geodesic_match`.
    for (case, d) in BASIS_DIMS.into_iter().enumerate() {
        let u0 = random_basis(400 + case as u64, d);
        for (kind, u1) in [
            ("unrelated", random_basis(500 + case as u64, d)),
            ("turned", turned(600 + case as u64, &u0, 0.3)),
        ] {
            let (u0_64, u1_64) = (row_major(u0.matrix()), row_major(u1.matrix()));
            let (matched, perm, signs) = reference::geodesic_match(&u0_64, &u1_64, d);
            // The reference's own endpoints: U0 and the matched U1 (up to their orthonormality
            // in f32, ~1e-7).
            let ts = [0.0, 0.3, 0.5, 1.0, 1.7];
            let want = reference::geodesic_at(&u0_64, &matched, d, &ts);
            for (k, end) in [(0, &u0_64), (3, &matched)] {
                let e = want[k]
                    .iter()
                    .zip(end.iter())
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    e <= 1e-6,
                    "d = {d} {kind}: reference U({}) off by {e}",
                    ts[k]
                );
            }
            for par in [Par::Seq, Par::Pool] {
                let at = format!("d = {d} {kind} {par:?}");
                let geo = Geodesic::new_with(par, u0.matrix(), u1.matrix()).unwrap();
                assert_eq!(geo.permutation(), perm, "{at}: permutation");
                let kernel_signs: Vec<f64> = geo.signs().iter().map(|&s| s as f64).collect();
                assert_eq!(kernel_signs, signs, "{at}: signs");
                assert_eq!(
                    max_diff_f64(geo.matched_end(), &matched),
                    0.0,
                    "{at}: matched end"
                );
                for (&t, want) in ts.iter().zip(&want) {
                    let got = geo.at_with(par, t).unwrap();
                    let e = max_diff_f64(got.matrix(), want);
                    assert!(e <= 2f64.powi(-21), "{at}: U({t}) off by {e}");
                }
            }
        }
    }
}

/// `RotatedAdam::refresh` is `KroneckerBasis::refreshed` followed by `set_basis` with the
/// refresh's permutations, bit for bit; a statistic of the wrong kind changes nothing.
#[test]
fn refresh_with_state_equals_refresh_then_set_basis() {
    use diagprec::basis::Statistic;
    let (m, n) = (6, 9);
    let cfg = AdamConfig {
        amsgrad: true,
        ..AdamConfig::default()
    };
    let basis = KroneckerBasis::from_bases(random_basis(91, m), random_basis(92, n));
    let mut opt = RotatedAdam::new(cfg, Basis::Kronecker(basis.clone())).unwrap();
    let mut r = rng(93);
    let mut p = gaussian(&mut r, m * n);
    let mut stats = KroneckerStatistics::new(m, n);
    for _ in 0..3 {
        let g = gaussian(&mut r, m * n);
        stats.update(&g, 0.9, Par::Seq).unwrap();
        opt.step(&mut p, &g).unwrap();
    }
    for method in [RefreshMethod::PowerQr, RefreshMethod::Eigh] {
        for transfer in [StateTransfer::Permute, StateTransfer::Reproject] {
            let refreshed = basis
                .refreshed(stats.left(), stats.right(), method, Par::Pool)
                .unwrap();
            let mut two_calls = opt.clone();
            two_calls
                .set_basis(
                    Basis::Kronecker(refreshed.basis.clone()),
                    transfer,
                    Some((&refreshed.left.permutation, &refreshed.right.permutation)),
                )
                .unwrap();
            let mut one_call = opt.clone();
            let (left, right) = one_call
                .refresh(
                    Statistic::Kronecker(stats.left(), stats.right()),
                    method,
                    transfer,
                )
                .unwrap();
            assert_eq!(left, refreshed.left);
            assert_eq!(right, Some(refreshed.right));
            assert_eq!(one_call.exp_avg(), two_calls.exp_avg());
            assert_eq!(one_call.exp_avg_sq(), two_calls.exp_avg_sq());
            assert_eq!(one_call.max_exp_avg_sq(), two_calls.max_exp_avg_sq());
            let (Basis::Kronecker(a), Basis::Kronecker(b)) = (one_call.basis(), two_calls.basis())
            else {
                panic!("the basis stays Kronecker");
            };
            assert_eq!(max_abs_diff(a.left().matrix(), b.left().matrix()), 0.0);
            assert_eq!(max_abs_diff(a.right().matrix(), b.right().matrix()), 0.0);
        }
    }
    let mut wrong = opt.clone();
    let err = wrong
        .refresh(
            Statistic::Dense(stats.left()),
            RefreshMethod::PowerQr,
            StateTransfer::Permute,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(wrong.exp_avg(), opt.exp_avg());
    assert_eq!(wrong.exp_avg_sq(), opt.exp_avg_sq());
}

#[test]
fn power_refresh_of_rank_deficient_and_ill_conditioned_statistics_is_orthonormal() {
    // SOAP's statistics start rank-deficient (a few gradients' G G^T) and stay ill-conditioned:
    // the Householder QR gives an orthonormal Q for any of them. Cases: a zero statistic, rank 3
    // (sum of three g g^T), eigenvalues from 1 down to 1e-12 (cond 1e12, far beyond what
    // f32 CholeskyQR survives), and one huge and one tiny scale. d = 300 spans ten QR blocks.
    for d in [1, 5, 33, 130, 300] {
        let old = random_basis(700 + d as u64, d);
        let mut r = rng(710 + d as u64);
        let gs: Vec<Vec<f32>> = (0..3).map(|_| gaussian(&mut r, d)).collect();
        let rank3 = Mat::from_fn(d, d, |i, j| gs.iter().map(|g| g[i] * g[j]).sum::<f32>());
        let q = random_basis(720 + d as u64, d);
        let graded = Mat::from_fn(d, d, |i, j| {
            (0..d)
                .map(|k| {
                    let l = 10f64.powf(-12.0 * k as f64 / d.max(2) as f64) as f32;
                    q.matrix()[(i, k)] * l * q.matrix()[(j, k)]
                })
                .sum::<f32>()
        });
        let cases = [
            ("zero", Mat::<f32>::zeros(d, d)),
            ("rank 3", rank3.clone()),
            ("graded", graded),
            ("huge", Mat::from_fn(d, d, |i, j| rank3[(i, j)] * 1e15)),
            ("tiny", Mat::from_fn(d, d, |i, j| rank3[(i, j)] * 1e-20)),
        ];
        for (name, a) in cases {
            for par in [Par::Seq, Par::Pool] {
                let (new, info) = old
                    .refreshed(a.as_ref(), RefreshMethod::PowerQr, par)
                    .unwrap();
                let err = orthonormality_error(new.matrix()).unwrap();
                assert!(err < 1e-5, "d = {d} {name} {par:?}: orthonormality {err}");
                check_permutation_is_valid(&info.permutation, d);
            }
        }
    }
}

fn check_permutation_is_valid(p: &[usize], d: usize) {
    let mut seen = vec![false; d];
    for &i in p {
        assert!(!seen[i]);
        seen[i] = true;
    }
    assert_eq!(p.len(), d);
}

#[test]
fn power_refresh_is_bitwise_identical_for_any_thread_count() {
    // 2 d^3 = 16 and 54 MFLOP: the product and the QR's two workers use the pool; 200 runs the
    // QR in blocks of 16 columns, 300 in blocks of 32.
    for d in [200, 300] {
        let (a, q, _) = known_spectrum(730, d);
        let old = turned(731, &q, 0.05);
        let run = |par: Par| {
            let (new, info) = old
                .refreshed(a.as_ref(), RefreshMethod::PowerQr, par)
                .unwrap();
            let entries: Vec<f32> = (0..d * d).map(|k| new.matrix()[(k % d, k / d)]).collect();
            (bits(&entries), info)
        };
        let first = run(Par::Seq);
        for threads in [1, 2, 3] {
            diagprec::set_num_threads(threads).unwrap();
            assert!(run(Par::Pool) == first, "d = {d}, {threads} threads");
            for (own, from_pool) in from_own_pools(threads, || run(Par::Pool)) {
                assert!(
                    from_pool == first,
                    "d = {d}, {threads} threads from a pool of {own}"
                );
            }
        }
        diagprec::set_num_threads(0).unwrap();
    }
}

#[test]
fn power_refresh_rejects_a_non_finite_statistic_entry_and_names_it() {
    // The lower triangle is checked while it is copied (the first bad entry in column order is
    // named); the upper triangle is never read. 130 runs the copy beside the pool's worker.
    for d in [5, 130] {
        let (a, q, _) = known_spectrum(740 + d as u64, d);
        for (i, j) in [(0, 0), (d - 1, 0), (d - 1, d - 1), (d / 2 + 1, d / 2)] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut a = a.clone();
                a[(i, j)] = bad;
                // A later bad entry (the last in column order) must not be the one reported.
                if (i, j) != (d - 1, d - 1) {
                    a[(d - 1, d - 1)] = f32::NAN;
                }
                for par in [Par::Seq, Par::Pool] {
                    let err = q
                        .refreshed(a.as_ref(), RefreshMethod::PowerQr, par)
                        .unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::NonFinite, "d = {d} ({i}, {j}) {bad}");
                    let at = format!("({i}, {j})");
                    assert!(
                        err.to_string().contains(&at),
                        "d = {d}: {err} should name {at}"
                    );
                }
            }
        }
    }
}
