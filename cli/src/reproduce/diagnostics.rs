//! What Adam's preconditioner looks like along its own small-batch trajectory (linear
//! regression with Gaussian inputs).
//!
//! At every 10th step of the second half of an Adam run (its tuned rate, the same batches as its
//! reporting run), with `m_hat`, `v_hat` Adam's bias-corrected moments after the step and `h` the
//! GN diagonal in the run's basis:
//! - `cos(adam, gn-1/2)`: the cosine between Adam's update `m_hat / (sqrt(v_hat) + eps)` and the
//!   update GN^-1/2 would take from the same `m_hat`, `m_hat (h + lambda)^-1/2`; likewise
//!   `cos(adam, gn-1)` with `(h + lambda)^-1`;
//! - `corr(v, h)`: the Pearson correlation of `v_hat` and `h` over coordinates;
//! - the noise share: for `x ~ N(0, Sigma)`, `y = x.w* + N(0, sigma^2)` and a batch of `B`,
//!   `E[(u_i.g)^2] = (1 + 1/B)(u_i.grad L)^2 + (2L/B) u_i^T Sigma u_i` (population loss `L`,
//!   `grad L = Sigma (w - w*)`); the share is the mean over coordinates of the second term over
//!   the whole (0 for a full batch).
//!
//! Each quantity is averaged over the trace points.

use super::problems::{Problem, SampledLinreg};
use super::tasks::mix_seed;
use diagprec::{adam_step_with, AdamConfig, AdamTensor, Isa, Par};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Averages along one Adam run.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub cos_half: f64,
    pub cos_one: f64,
    pub corr_v_h: f64,
    pub noise_share: f64,
    /// `max h / min h` (the spread of the GN diagonal in the basis).
    pub h_spread: f64,
}

pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt().max(1e-300)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let ab: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let aa: f64 = a.iter().map(|x| x * x).sum();
    let bb: f64 = b.iter().map(|x| x * x).sum();
    ab / (aa * bb).sqrt().max(1e-300)
}

/// Runs Adam (`beta1 = 0.9`, `beta2 = 0.999`) and records the averages above. `seed` is the run
/// seed of [`super::runner::run`], so the batches are those of the reporting run.
pub fn trace_adam(
    p: &SampledLinreg,
    lr: f64,
    steps: usize,
    batch: Option<usize>,
    seed: u64,
) -> Trace {
    let task = &p.task;
    let d = task.dim;
    let isa = Isa::detect();
    let cfg = AdamConfig {
        lr,
        ..AdamConfig::default()
    };
    let mut rng = StdRng::seed_from_u64(mix_seed(&[seed, 0xBA7C]));
    let (mut w, mut m, mut v, mut g) = (
        vec![0.0f32; d],
        vec![0.0f32; d],
        vec![0.0f32; d],
        vec![0.0f32; d],
    );
    let h: Vec<f64> = p.h.iter().map(|&x| x as f64).collect();
    // u_i^T Sigma u_i.
    let sigma_diag: Vec<f64> = (0..d)
        .map(|i| match &p.basis {
            None => task.sigma[(i, i)],
            Some(b) => {
                let u = b.matrix();
                let mut s = 0.0;
                for a in 0..d {
                    for c in 0..d {
                        s += u[(a, i)] as f64 * task.sigma[(a, c)] * u[(c, i)] as f64;
                    }
                }
                s
            }
        })
        .collect();
    let mut acc = Trace::default();
    let mut count: f64 = 0.0;
    for t in 1..=steps {
        p.gradient(&w, batch, &mut rng, &mut g);
        adam_step_with(
            isa,
            Par::Seq,
            &cfg,
            t as u64,
            AdamTensor {
                param: &mut w,
                grad: &g,
                exp_avg: &mut m,
                exp_avg_sq: &mut v,
                max_exp_avg_sq: None,
            },
        )
        .expect("adam step");
        if w.iter().any(|x| !x.is_finite()) {
            break;
        }
        if t <= steps / 2 || t % 10 != 0 {
            continue;
        }
        let bc1 = 1.0 - cfg.beta1.powi(t as i32);
        let bc2 = 1.0 - cfg.beta2.powi(t as i32);
        let m_hat: Vec<f64> = m.iter().map(|&x| x as f64 / bc1).collect();
        let v_hat: Vec<f64> = v.iter().map(|&x| x as f64 / bc2).collect();
        let adam: Vec<f64> = m_hat
            .iter()
            .zip(&v_hat)
            .map(|(a, b)| a / (b.sqrt() + 1e-8))
            .collect();
        let half: Vec<f64> = m_hat
            .iter()
            .zip(&h)
            .map(|(a, b)| a / (b + 1e-8).sqrt())
            .collect();
        let one: Vec<f64> = m_hat.iter().zip(&h).map(|(a, b)| a / (b + 1e-8)).collect();
        acc.cos_half += cosine(&adam, &half);
        acc.cos_one += cosine(&adam, &one);
        acc.corr_v_h += pearson(&v_hat, &h);
        // Population noise share at w.
        let wo = p.original(&w);
        let delta: Vec<f64> = wo
            .iter()
            .zip(&task.w_star)
            .map(|(&a, &b)| a as f64 - b)
            .collect();
        let grad: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| task.sigma[(i, j)] * delta[j]).sum())
            .collect();
        let quad: f64 = delta.iter().zip(&grad).map(|(a, b)| a * b).sum();
        let pop = 0.5 * (quad + task.noise_std * task.noise_std);
        let mut grad_rot = vec![0.0f32; d];
        let gf: Vec<f32> = grad.iter().map(|&x| x as f32).collect();
        p.rotate_in(&gf, &mut grad_rot);
        let share = match batch {
            None => 0.0,
            Some(b) => {
                let bf = b as f64;
                (0..d)
                    .map(|i| {
                        let s = grad_rot[i] as f64;
                        let noise = 2.0 * pop / bf * sigma_diag[i];
                        noise / ((1.0 + 1.0 / bf) * s * s + noise)
                    })
                    .sum::<f64>()
                    / d as f64
            }
        };
        acc.noise_share += share;
        count += 1.0;
    }
    let c = count.max(1.0);
    let hmax = h.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let hmin = h.iter().cloned().fold(f64::INFINITY, f64::min);
    Trace {
        cos_half: acc.cos_half / c,
        cos_one: acc.cos_one / c,
        corr_v_h: acc.corr_v_h / c,
        noise_share: acc.noise_share / c,
        h_spread: hmax / hmin,
    }
}
