//! GN^-1/2 with the diagonal from the kernels: logistic-free least squares on a linear layer
//! `y = W x + b` whose inputs have very different scales. The Gauss-Newton diagonal of the
//! mean squared error, `h[o][i] = mean_n x_ni^2` (output factor `s = 1`), and the bias's, are
//! accumulated by [`diagprec::gn_diag_linear`] (an EMA, refreshed every few steps by
//! [`diagprec::GaussNewton::refresh`]); the step is `theta -= lr m / (h + damping)^(1/2)`.
//! Prints the loss; exits non-zero unless it falls.
//!
//! `cargo run --example gn_diag` (the dev profile is optimised)

use diagprec::{gn_diag_linear, GaussNewton, GaussNewtonConfig, GnConfig, Samples};

fn unit(i: u64) -> f32 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn main() -> diagprec::Result<()> {
    let (d_in, d_out, n) = (24, 4, 200);
    // Feature i has scale 0.1 .. 10: plain gradient descent would need a tiny step.
    let x: Vec<f32> = (0..n * d_in)
        .map(|k| unit(k as u64) * 0.1 * 100f32.powf((k % d_in) as f32 / (d_in - 1) as f32))
        .collect();
    let w_true: Vec<f32> = (0..d_out * d_in)
        .map(|i| unit(7 << 40 | i as u64))
        .collect();
    let y: Vec<f32> = (0..n * d_out)
        .map(|k| {
            let (s, o) = (k / d_out, k % d_out);
            -0.2 + (0..d_in)
                .map(|i| w_true[o * d_in + i] * x[s * d_in + i])
                .sum::<f32>()
        })
        .collect();

    let mut gn = GaussNewton::new(
        GaussNewtonConfig {
            step: GnConfig {
                lr: 0.05,
                power: -0.5,
                damping: 1e-6,
                beta1: 0.9,
                ..GnConfig::default()
            },
            hessian_beta: 0.9,
            refresh_interval: 5,
        },
        &[d_out * d_in, d_out],
    )?;
    let (mut w, mut b) = (vec![0.0f32; d_out * d_in], vec![0.0f32; d_out]);
    let ones = vec![1.0f32; n * d_out]; // MSE: the output factors are 1
    let mut first = None;
    let mut loss = 0.0;
    for step in 0..300 {
        let (mut gw, mut gb) = (vec![0.0f32; w.len()], vec![0.0f32; d_out]);
        loss = 0.0;
        for s in 0..n {
            let xs = &x[s * d_in..(s + 1) * d_in];
            for o in 0..d_out {
                let pred = b[o]
                    + w[o * d_in..(o + 1) * d_in]
                        .iter()
                        .zip(xs)
                        .map(|(a, b)| a * b)
                        .sum::<f32>();
                let err = pred - y[s * d_out + o];
                loss += (err * err) as f64 / (n * d_out) as f64;
                let g = 2.0 * err / (n * d_out) as f32;
                gb[o] += g;
                for (gw, &xi) in gw[o * d_in..(o + 1) * d_in].iter_mut().zip(xs) {
                    *gw += g * xi;
                }
            }
        }
        first.get_or_insert(loss);
        if gn.needs_refresh() {
            // h of W and of b in one kernel call (tensor 0 is W; tensor 1, b, is filled with it).
            let mut h_bias = vec![0.0f32; d_out];
            let mut h_w = gn.h()[0].clone();
            let beta = gn.refresh_beta();
            h_bias.copy_from_slice(&gn.h()[1]);
            gn_diag_linear(
                Samples::new(&x, n, d_in)?,
                Samples::new(&ones, n, d_out)?,
                beta,
                &mut h_w,
                Some(&mut h_bias),
            )?;
            gn.refresh(|i, h, _| {
                h.copy_from_slice(if i == 0 { &h_w } else { &h_bias });
                Ok(())
            })?;
        }
        gn.step(&mut [&mut w, &mut b], &[&gw, &gb])?;
        if step % 30 == 0 {
            println!("step {step:3}: loss {loss:.6}");
        }
    }
    let first = first.unwrap();
    println!(
        "loss {first:.6} -> {loss:.6} ({} refreshes of h)",
        gn.refreshes()
    );
    if loss >= 0.05 * first {
        eprintln!("the loss did not fall by 20x");
        std::process::exit(1);
    }
    Ok(())
}
