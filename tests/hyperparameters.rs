//! Hyperparameters that are finite in f64 but not representable as the f32 coefficients the
//! kernels use are refused (`InvalidHyperparameter`) and nothing is written; the boundary values
//! next to them are accepted and give finite results.

use diagprec::{adam_step, gn_step, AdamConfig, ErrorKind, GnConfig};

fn adam_outcome(cfg: AdamConfig, grad: f32) -> (Result<(), ErrorKind>, Vec<f32>) {
    let mut param = vec![1.0f32; 5];
    let grad = vec![grad; 5];
    let (mut m, mut v) = (vec![0.0f32; 5], vec![0.0f32; 5]);
    let r = adam_step(&cfg, 1, &mut param, &grad, &mut m, &mut v, None).map_err(|e| e.kind());
    (r, param)
}

#[test]
fn adam_refuses_coefficients_that_leave_f32() {
    let cases = [
        (
            "lr = 1e39",
            AdamConfig {
                lr: 1e39,
                ..AdamConfig::default()
            },
        ),
        (
            "eps = 1e-46",
            AdamConfig {
                eps: 1e-46,
                ..AdamConfig::default()
            },
        ),
        (
            "weight_decay = 1e39",
            AdamConfig {
                weight_decay: 1e39,
                ..AdamConfig::adamw(1e-3)
            },
        ),
        (
            "inv_grad_scale = 1e39",
            AdamConfig {
                inv_grad_scale: 1e39,
                check_finite: true,
                ..AdamConfig::default()
            },
        ),
        (
            "inv_grad_scale = 1e-46",
            AdamConfig {
                inv_grad_scale: 1e-46,
                ..AdamConfig::default()
            },
        ),
        (
            "lr / (1 - beta1) = 3e39",
            AdamConfig {
                lr: 3e38,
                beta1: 0.9,
                ..AdamConfig::default()
            },
        ),
        (
            "1 - lr wd = -1e39",
            AdamConfig {
                lr: 1e20,
                weight_decay: 1e19,
                ..AdamConfig::adamw(1.0)
            },
        ),
    ];
    for (what, cfg) in cases {
        let (r, param) = adam_outcome(cfg, 0.0);
        assert_eq!(r, Err(ErrorKind::InvalidHyperparameter), "{what}");
        assert!(param.iter().all(|&p| p == 1.0), "{what}: param written");
    }
}

#[test]
fn adam_accepts_the_representable_edges() {
    let cases = [
        AdamConfig {
            eps: f32::from_bits(1) as f64,
            ..AdamConfig::default()
        },
        AdamConfig {
            lr: 1e30,
            ..AdamConfig::default()
        },
        AdamConfig {
            inv_grad_scale: 1e30,
            ..AdamConfig::default()
        },
    ];
    for cfg in cases {
        let (r, param) = adam_outcome(cfg, 0.0);
        assert_eq!(r, Ok(()), "{cfg:?}");
        assert!(param.iter().all(|p| p.is_finite()), "{cfg:?}: {param:?}");
    }
}

fn gn_outcome(cfg: GnConfig) -> (Result<(), ErrorKind>, Vec<f32>) {
    let mut param = vec![1.0f32; 5];
    let grad = vec![0.5f32; 5];
    let h = vec![0.0f32; 5];
    let r = gn_step(&cfg, 1, &mut param, &grad, None, &h).map_err(|e| e.kind());
    (r, param)
}

#[test]
fn gn_refuses_coefficients_that_leave_f32() {
    let cases = [
        (
            "damping = 1e-46",
            GnConfig {
                damping: 1e-46,
                ..GnConfig::default()
            },
        ),
        (
            "damping = 1e-39, power -1",
            GnConfig {
                damping: 1e-39,
                ..GnConfig::default()
            },
        ),
        (
            "damping = 1e-46, power -1/2",
            GnConfig {
                damping: 1e-46,
                power: -0.5,
                ..GnConfig::default()
            },
        ),
        (
            "lr = 1e39",
            GnConfig {
                lr: 1e39,
                ..GnConfig::default()
            },
        ),
        (
            "weight_decay = 1e39",
            GnConfig {
                weight_decay: 1e39,
                ..GnConfig::default()
            },
        ),
    ];
    for (what, cfg) in cases {
        let (r, param) = gn_outcome(cfg);
        assert_eq!(r, Err(ErrorKind::InvalidHyperparameter), "{what}");
        assert!(param.iter().all(|&p| p == 1.0), "{what}: param written");
    }
}

#[test]
fn gn_accepts_the_representable_edges() {
    // damping^-1 = 1e37 is finite in f32: the step is large but finite.
    let (r, param) = gn_outcome(GnConfig {
        damping: 1e-37,
        lr: 1e-3,
        ..GnConfig::default()
    });
    assert_eq!(r, Ok(()));
    assert!(param.iter().all(|p| p.is_finite()), "{param:?}");
}

#[test]
fn gn_refuses_powers_outside_the_supported_range() {
    // Found by the gn fuzz target: power = 3.4e38 gave NaN where the exact step is finite.
    for power in [4.5, -5.0, 3.4e38, f64::NAN] {
        let (r, param) = gn_outcome(GnConfig {
            power,
            ..GnConfig::default()
        });
        assert_eq!(r, Err(ErrorKind::InvalidHyperparameter), "power {power}");
        assert!(param.iter().all(|&p| p == 1.0));
    }
    let (r, _) = gn_outcome(GnConfig {
        power: 4.0,
        damping: 1e-2,
        ..GnConfig::default()
    });
    assert_eq!(r, Ok(()));
}

#[test]
fn refresh_from_a_statistic_too_large_for_f32_is_an_error_not_a_panic() {
    // Found by the basis fuzz target: finite entries whose products overflow f32 gave NaN
    // vectors, and the column matching indexed out of bounds.
    let d = 3;
    let basis = diagprec::DenseBasis::identity(d);
    let a = faer::Mat::<f32>::from_fn(d, d, |i, j| if i == j { 3e38 } else { -3e38 });
    match basis.refreshed(
        a.as_ref(),
        diagprec::RefreshMethod::Eigh,
        diagprec::Par::Seq,
    ) {
        Ok((refreshed, _)) => {
            let u = refreshed.matrix();
            assert!((0..d).all(|i| (0..d).all(|j| u[(i, j)].is_finite())));
        }
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::NonFinite | ErrorKind::InvalidArgument),
            "{e:?}"
        ),
    }
}
