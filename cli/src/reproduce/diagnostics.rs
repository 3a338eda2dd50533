//! Second-moment diagnostic (small batches, linear regression with Gaussian inputs).
//!
//! 1. Along a small-batch Adam run, compare Adam's bias-corrected `v_i` with the GN diagonal
//!    `h_i = u_i^T A u_i` in the same basis: the spread of `v_i / h_i` (max / min) and the
//!    Pearson correlation of `v` and `h`. If `v` were proportional to `h`, Adam would be exactly
//!    GN^-1/2 with a rescaled learning rate.
//! 2. Check the theory at the run's parameters `w`: for `x ~ N(0, Sigma)`,
//!    `y = x.w* + N(0, sigma^2)`, and `g` the mean gradient of `B` fresh samples,
//!    `E[(u_i.g)^2] = (1 + 1/B) (u_i.grad L)^2 + (2L/B) u_i^T Sigma u_i`, with the population
//!    loss `L = ((w - w*)^T Sigma (w - w*) + sigma^2) / 2` and `grad L = Sigma (w - w*)`.
//!    The left side is a Monte Carlo mean over `mc_batches` fresh batches (population samples,
//!    not the training set), reported as measured / predicted per coordinate with its standard
//!    error.

use super::runner::{BasisChoice, Instance, Snapshot};
use super::tasks::{mix_seed, Task};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// One row of `second_moment.csv`.
#[derive(Clone, Debug)]
pub struct SecondMomentRow {
    pub task: &'static str,
    pub basis: &'static str,
    pub batch_size: usize,
    pub step: usize,
    pub excess_loss: f64,
    pub population_loss: f64,
    pub v_over_h_min: f64,
    pub v_over_h_max: f64,
    pub v_over_h_spread: f64,
    pub corr_v_h: f64,
    pub mc_batches: usize,
    pub measured_over_predicted_median: f64,
    pub measured_over_predicted_min: f64,
    pub measured_over_predicted_max: f64,
    pub mc_rel_stderr_max: f64,
    pub noise_share: f64,
}

pub const HEADER: &str = "task,basis,batch_size,step,excess_loss,population_loss,\
v_over_h_min,v_over_h_max,v_over_h_spread,corr_v_h,mc_batches,\
measured_over_predicted_median,measured_over_predicted_min,measured_over_predicted_max,\
mc_rel_stderr_max,noise_share";

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// The basis columns `u_i` as an f64 matrix (column `i` = `u_i`).
fn basis_columns(inst: &Instance, basis: BasisChoice) -> Vec<Vec<f64>> {
    let d = inst.task.dim;
    match &inst.prepared(basis).basis {
        None => (0..d)
            .map(|i| (0..d).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
            .collect(),
        Some(b) => {
            let u = b.matrix();
            (0..d)
                .map(|i| (0..d).map(|j| u[(j, i)] as f64).collect())
                .collect()
        }
    }
}

fn sym_mul(s: &faer::Mat<f64>, x: &[f64]) -> Vec<f64> {
    let d = x.len();
    (0..d)
        .map(|i| (0..d).map(|j| s[(i, j)] * x[j]).sum())
        .collect()
}

/// Evaluates one snapshot of an Adam run in `basis`.
pub fn evaluate(
    inst: &Instance,
    basis: BasisChoice,
    basis_name: &'static str,
    batch_size: usize,
    mc_batches: usize,
    base_seed: u64,
    snap: &Snapshot,
) -> SecondMomentRow {
    let task: &Task = &inst.task;
    let d = task.dim;
    let h = &inst.prepared(basis).h;
    let ratios: Vec<f64> = snap
        .v_hat
        .iter()
        .zip(h)
        .map(|(&v, &h)| v / h as f64)
        .collect();
    let rmin = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
    let rmax = ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let h64: Vec<f64> = h.iter().map(|&x| x as f64).collect();
    let corr = pearson(&snap.v_hat, &h64);

    // Theory at w.
    let cols = basis_columns(inst, basis);
    let delta: Vec<f64> = snap
        .w
        .iter()
        .zip(&task.w_star)
        .map(|(&a, &b)| a as f64 - b)
        .collect();
    let grad = sym_mul(&task.sigma, &delta);
    let quad: f64 = delta.iter().zip(&grad).map(|(a, b)| a * b).sum();
    let pop_loss = 0.5 * (quad + task.noise_std * task.noise_std);
    let bf = batch_size as f64;
    let mut predicted = vec![0.0; d];
    let mut noise_share = 0.0;
    for (i, u) in cols.iter().enumerate() {
        let ug: f64 = u.iter().zip(&grad).map(|(a, b)| a * b).sum();
        let su = sym_mul(&task.sigma, u);
        let usu: f64 = u.iter().zip(&su).map(|(a, b)| a * b).sum();
        let noise = 2.0 * pop_loss / bf * usu;
        predicted[i] = (1.0 + 1.0 / bf) * ug * ug + noise;
        noise_share += noise / predicted[i] / d as f64;
    }

    // Monte Carlo over fresh population batches.
    let tag = match basis {
        BasisChoice::Identity => 1,
        BasisChoice::Eigen => 2,
        BasisChoice::Geodesic(k) => 10 + k as u64,
    };
    let mut rng = StdRng::seed_from_u64(mix_seed(&[
        base_seed,
        0x5EC0,
        inst.seed_index as u64,
        tag,
        snap.step as u64,
    ]));
    let w64: Vec<f64> = snap.w.iter().map(|&x| x as f64).collect();
    let mut sum = vec![0.0; d];
    let mut sum_sq = vec![0.0; d];
    let mut z = vec![0.0; d];
    let mut x = vec![0.0; d];
    let mut g = vec![0.0; d];
    for _ in 0..mc_batches {
        g.iter_mut().for_each(|v| *v = 0.0);
        for _ in 0..batch_size {
            z.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
            for (i, xi) in x.iter_mut().enumerate() {
                *xi = (0..d).map(|j| task.sigma_sqrt[(i, j)] * z[j]).sum();
            }
            let eps: f64 = rng.sample(StandardNormal);
            let y: f64 =
                x.iter().zip(&task.w_star).map(|(a, b)| a * b).sum::<f64>() + task.noise_std * eps;
            let resid: f64 = x.iter().zip(&w64).map(|(a, b)| a * b).sum::<f64>() - y;
            for (gi, &xi) in g.iter_mut().zip(&x) {
                *gi += resid * xi / bf;
            }
        }
        for (i, u) in cols.iter().enumerate() {
            let ug: f64 = u.iter().zip(&g).map(|(a, b)| a * b).sum();
            let sq = ug * ug;
            sum[i] += sq;
            sum_sq[i] += sq * sq;
        }
    }
    let mf = mc_batches as f64;
    let mut ratio_mp = Vec::with_capacity(d);
    let mut rel_se_max: f64 = 0.0;
    for i in 0..d {
        let mean = sum[i] / mf;
        let var = (sum_sq[i] / mf - mean * mean).max(0.0);
        rel_se_max = rel_se_max.max((var / mf).sqrt() / mean);
        ratio_mp.push(mean / predicted[i]);
    }
    let med = super::runner::median(&ratio_mp);
    SecondMomentRow {
        task: task.kind.name(),
        basis: basis_name,
        batch_size,
        step: snap.step,
        excess_loss: snap.loss,
        population_loss: pop_loss,
        v_over_h_min: rmin,
        v_over_h_max: rmax,
        v_over_h_spread: rmax / rmin,
        corr_v_h: corr,
        mc_batches,
        measured_over_predicted_median: med,
        measured_over_predicted_min: ratio_mp.iter().cloned().fold(f64::INFINITY, f64::min),
        measured_over_predicted_max: ratio_mp.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        mc_rel_stderr_max: rel_se_max,
        noise_share,
    }
}

impl SecondMomentRow {
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{:.6e},{:.6e},{:.6e},{:.6e},{:.6e},{:.6},{},{:.6},{:.6},{:.6},{:.6},{:.6}",
            self.task,
            self.basis,
            self.batch_size,
            self.step,
            self.excess_loss,
            self.population_loss,
            self.v_over_h_min,
            self.v_over_h_max,
            self.v_over_h_spread,
            self.corr_v_h,
            self.mc_batches,
            self.measured_over_predicted_median,
            self.measured_over_predicted_min,
            self.measured_over_predicted_max,
            self.mc_rel_stderr_max,
            self.noise_share
        )
    }
}
