//! SOAP on a matrix: fits `W` (`rows x cols`) in the least-squares problem
//! `min ||W A - B||^2 / n` whose inputs `A` have correlated features of very different scales
//! (an ill-conditioned problem), with [`diagprec::Soap`], and with Adam alongside (same learning
//! rate and steps; on this small problem both reach about 3e-5 after 300 steps). Prints both
//! losses; exits non-zero unless SOAP's loss falls by 10x.
//!
//! `cargo run --example soap_matrix` (the dev profile is optimised)

use diagprec::{Adam, AdamConfig, Soap, SoapConfig};

fn unit(i: u64) -> f32 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x94d0_49bb_1331_11eb;
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

/// Loss and gradient of `||W A - B||^2 / n` (`A`: `cols x n`, `B`: `rows x n`, row-major).
fn loss_grad(
    w: &[f32],
    a: &[f32],
    b: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
) -> (f64, Vec<f32>) {
    let mut g = vec![0.0f32; rows * cols];
    let mut loss = 0.0f64;
    for s in 0..n {
        for r in 0..rows {
            let pred: f32 = (0..cols).map(|c| w[r * cols + c] * a[c * n + s]).sum();
            let err = pred - b[r * n + s];
            loss += (err * err) as f64 / n as f64;
            for c in 0..cols {
                g[r * cols + c] += 2.0 * err * a[c * n + s] / n as f32;
            }
        }
    }
    (loss, g)
}

fn main() -> diagprec::Result<()> {
    let (rows, cols, n) = (12, 16, 128);
    // Input features with scales from 0.05 to 5, mixed by a fixed rotation-like combination.
    let raw: Vec<f32> = (0..cols * n).map(|i| unit(i as u64)).collect();
    let a: Vec<f32> = (0..cols * n)
        .map(|k| {
            let (c, s) = (k / n, k % n);
            let scale = 0.05 * 100f32.powf(c as f32 / (cols - 1) as f32);
            scale * (raw[c * n + s] + 0.5 * raw[((c + 1) % cols) * n + s])
        })
        .collect();
    let w_true: Vec<f32> = (0..rows * cols).map(|i| unit(1 << 40 | i as u64)).collect();
    let b: Vec<f32> = (0..rows * n)
        .map(|k| {
            let (r, s) = (k / n, k % n);
            (0..cols).map(|c| w_true[r * cols + c] * a[c * n + s]).sum()
        })
        .collect();

    let lr = 0.02;
    let steps = 300;
    let mut soap = Soap::new(
        SoapConfig {
            adam: AdamConfig {
                lr,
                beta1: 0.95,
                beta2: 0.95,
                ..AdamConfig::default()
            },
            ..SoapConfig::default()
        },
        rows,
        cols,
    )?;
    let mut adam = Adam::new(
        AdamConfig {
            lr,
            ..AdamConfig::default()
        },
        &[rows * cols],
    )?;
    let (mut w_soap, mut w_adam) = (vec![0.0f32; rows * cols], vec![0.0f32; rows * cols]);
    let first = loss_grad(&w_soap, &a, &b, rows, cols, n).0;
    for step in 1..=steps {
        let (ls, gs) = loss_grad(&w_soap, &a, &b, rows, cols, n);
        soap.step(&mut w_soap, &gs)?;
        let (la, ga) = loss_grad(&w_adam, &a, &b, rows, cols, n);
        adam.step(&mut [&mut w_adam], &[&ga])?;
        if step == 1 || step % 50 == 0 {
            println!("step {step:3}: loss SOAP {ls:.6}  Adam {la:.6}");
        }
    }
    let soap_loss = loss_grad(&w_soap, &a, &b, rows, cols, n).0;
    let adam_loss = loss_grad(&w_adam, &a, &b, rows, cols, n).0;
    println!("after {steps} steps: SOAP {first:.4} -> {soap_loss:.6}, Adam -> {adam_loss:.6}");
    if soap_loss >= 0.1 * first {
        eprintln!("SOAP's loss did not fall by 10x");
        std::process::exit(1);
    }
    Ok(())
}
