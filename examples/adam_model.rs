//! Adam over a model's tensors: a two-tensor linear model `y = W x + b` fitted to a synthetic
//! linear target with [`diagprec::Adam`] (one call steps every tensor; the kernels run on the
//! crate's pool). Prints the loss and exits non-zero unless it falls.
//!
//! `cargo run --example adam_model` (the dev profile is optimised)

use diagprec::{Adam, AdamConfig};

/// A deterministic value in [-0.5, 0.5).
fn unit(i: u64) -> f32 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn main() -> diagprec::Result<()> {
    let (d_in, d_out, n) = (32, 8, 256);
    let x: Vec<f32> = (0..n * d_in).map(|i| unit(i as u64)).collect();
    let w_true: Vec<f32> = (0..d_out * d_in)
        .map(|i| 2.0 * unit(1 << 32 | i as u64))
        .collect();
    // Targets y = W_true x (+ a bias of 0.3).
    let y: Vec<f32> = (0..n * d_out)
        .map(|k| {
            let (s, o) = (k / d_out, k % d_out);
            0.3 + (0..d_in)
                .map(|i| w_true[o * d_in + i] * x[s * d_in + i])
                .sum::<f32>()
        })
        .collect();

    let (mut w, mut b) = (vec![0.0f32; d_out * d_in], vec![0.0f32; d_out]);
    let mut adam = Adam::new(
        AdamConfig {
            lr: 0.05,
            ..AdamConfig::default()
        },
        &[w.len(), b.len()],
    )?;
    let (mut gw, mut gb) = (vec![0.0f32; w.len()], vec![0.0f32; b.len()]);
    let mut first = None;
    let mut loss = 0.0;
    for epoch in 0..200 {
        // Forward and backward of the mean squared error, written out.
        gw.fill(0.0);
        gb.fill(0.0);
        loss = 0.0;
        for s in 0..n {
            for o in 0..d_out {
                let row = &w[o * d_in..(o + 1) * d_in];
                let xs = &x[s * d_in..(s + 1) * d_in];
                let pred = b[o] + row.iter().zip(xs).map(|(a, b)| a * b).sum::<f32>();
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
        adam.step(&mut [&mut w, &mut b], &[&gw, &gb])?;
        if epoch % 20 == 0 {
            println!("epoch {epoch:3}: loss {loss:.6}");
        }
    }
    let first = first.unwrap();
    println!(
        "loss {first:.6} -> {loss:.6} after {} steps",
        adam.steps_taken()
    );
    if loss >= 0.01 * first {
        eprintln!("the loss did not fall by 100x");
        std::process::exit(1);
    }
    Ok(())
}
