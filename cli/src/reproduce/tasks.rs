//! Seeded generators of the sampled problems (the linear regressions of the batch-size sweep and
//! the Gaussian logistic negative control); the population problems of the other experiments
//! are in [`super::problems`].
//!
//! Every task holds a finite training set `X` (N x d, row-major f32) and labels `y`, the
//! population input covariance `Sigma` (so fresh samples can be drawn for the second-moment
//! check), and the exact minimiser of the training loss, so that the reported loss is the
//! *excess* training loss `L(w) - min L` (which goes to 0, so log-scale comparisons are
//! meaningful).
//!
//! - `linreg-spread`: `x ~ N(0, Sigma)`, `Sigma = D^1/2 K D^1/2` with `D = diag(i^-alpha)` and
//!   `K = blockdiag((1 - rho_j) I + rho_j 11^T)`: the identity is not an eigenbasis and the GN
//!   diagonal in it, `D`, is spread over three decades. `y = x.w* + noise`.
//! - `linreg-gauss`: `x ~ N(0, Sigma)`, `Sigma = Q diag(lambda) Q^T` with `lambda_i = i^-alpha`
//!   (power law) and `Q` a random rotation, `y = x.w* + noise`.
//! - `logreg-gauss-control`: `x = Q diag(s) z`, `z ~ N(0, I)`, feature scales `s_i = i^-alpha/2`
//!   (imbalanced), `Q` a random rotation (the hidden basis), labels `y ~ Bernoulli(sigmoid(x.w*))`
//!   with a large `w*` (confident predictions: the GN weights `s(1 - s)` shrink during training).

use faer::Mat;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// The study's problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    LinregSpread,
    LinregGauss,
    LogregGaussControl,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::LinregSpread => "linreg-spread",
            TaskKind::LinregGauss => "linreg-gauss",
            TaskKind::LogregGaussControl => "logreg-gauss-control",
        }
    }

    pub fn is_linear(self) -> bool {
        !matches!(self, TaskKind::LogregGaussControl)
    }

    fn tag(self) -> u64 {
        match self {
            TaskKind::LinregSpread => 1,
            TaskKind::LinregGauss => 2,
            TaskKind::LogregGaussControl => 3,
        }
    }
}

/// Sizes and shapes of the tasks (the defaults are the study's; all can be changed).
#[derive(Clone, Debug)]
pub struct TaskParams {
    pub dim: usize,
    pub n_samples: usize,
    /// `linreg-spread`: the block correlations of `K`, cycled over blocks of `block_size`.
    pub block_rhos: Vec<f64>,
    pub block_size: usize,
    /// `linreg-gauss`: spectrum exponent (`lambda_i = i^-alpha`).
    pub gauss_alpha: f64,
    /// Label noise standard deviation (linear tasks).
    pub noise_std: f64,
    /// `logreg-imbalanced`: exponent of the feature variances and the norm of `w*`.
    pub logreg_alpha: f64,
    pub logreg_margin: f64,
    /// `linreg-gauss`: draw `w* = Sigma^{-1/2} xi`, `xi ~ N(0, I)`, so that every eigendirection
    /// carries the same share of the initial loss (otherwise `w* ~ N(0, I)`).
    pub gauss_whitened_target: bool,
    /// `logreg-imbalanced`: deterministic labels `y = 1[x.w* > 0]` (separable data: the infimum
    /// of the loss is 0, approached as `|w| -> inf`).
    pub logreg_separable: bool,
    /// `logreg-imbalanced`: training samples (the linear tasks use `n_samples`).
    pub logreg_samples: usize,
}

impl Default for TaskParams {
    fn default() -> Self {
        Self {
            dim: 32,
            n_samples: 4096,
            block_rhos: vec![0.5],
            block_size: 4,
            gauss_alpha: 2.0,
            noise_std: 0.5,
            logreg_alpha: 2.0,
            logreg_margin: 8.0,
            gauss_whitened_target: true,
            logreg_separable: false,
            logreg_samples: 2048,
        }
    }
}

/// A generated task instance.
#[derive(Clone, Debug)]
pub struct Task {
    pub kind: TaskKind,
    pub dim: usize,
    pub n_samples: usize,
    /// Training inputs, `n_samples x dim`, row-major.
    pub x: Vec<f32>,
    /// Training labels (real targets, or 0/1 for logistic regression).
    pub y: Vec<f32>,
    /// Population input covariance and a square root (`x = sigma_sqrt z`).
    pub sigma: Mat<f64>,
    pub noise_std: f64,
    pub w_star: Vec<f64>,
    /// Training GN matrix of linear regression, `A = X^T X / N`, and `b = X^T y / N`.
    pub a: Mat<f64>,
    pub b: Vec<f64>,
    /// Minimiser of the training loss and the minimum.
    pub w_hat: Vec<f64>,
    pub min_loss: f64,
}

/// splitmix64: derives independent seeds from a base seed and tags.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for &p in parts {
        s ^= p.wrapping_add(0x9E37_79B9_7F4A_7C15);
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        s = z ^ (z >> 31);
    }
    s
}

fn normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

/// A Haar-random rotation (modified Gram-Schmidt on a Gaussian matrix, f64).
pub fn random_rotation(d: usize, rng: &mut StdRng) -> Mat<f64> {
    let mut q = Mat::<f64>::from_fn(d, d, |_, _| normal(rng));
    for j in 0..d {
        for k in 0..j {
            let dot: f64 = (0..d).map(|i| q[(i, j)] * q[(i, k)]).sum();
            for i in 0..d {
                let v = q[(i, k)];
                q[(i, j)] -= dot * v;
            }
        }
        let norm = (0..d).map(|i| q[(i, j)] * q[(i, j)]).sum::<f64>().sqrt();
        for i in 0..d {
            q[(i, j)] /= norm;
        }
    }
    q
}

pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + e^z)`, stable.
pub fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

impl Task {
    /// Generates the task for `(base_seed, seed_index)`; the same arguments give the same task.
    pub fn generate(kind: TaskKind, p: &TaskParams, base_seed: u64, seed_index: u64) -> Task {
        let mut rng = StdRng::seed_from_u64(mix_seed(&[base_seed, kind.tag(), seed_index]));
        let d = p.dim;
        let (sigma, sigma_sqrt) = match kind {
            TaskKind::LinregSpread => {
                let mut s = Mat::<f64>::zeros(d, d);
                let mut r = Mat::<f64>::zeros(d, d);
                let mut start = 0;
                let mut blk = 0;
                while start < d {
                    let k = p.block_size.min(d - start);
                    let rho = p.block_rhos[blk % p.block_rhos.len()];
                    // (1 - rho) I + rho 11^T = R R^T with R = sqrt(1-rho) I + c 11^T,
                    // (sqrt(1-rho) + k c)^2 = 1 + (k-1) rho.
                    let a = (1.0 - rho).sqrt();
                    let c = ((1.0 + (k as f64 - 1.0) * rho).sqrt() - a) / k as f64;
                    for i in 0..k {
                        for j in 0..k {
                            s[(start + i, start + j)] = if i == j { 1.0 } else { rho };
                            r[(start + i, start + j)] = if i == j { a + c } else { c };
                        }
                    }
                    start += k;
                    blk += 1;
                }
                // Sigma = D^1/2 K D^1/2, x = D^1/2 R z.
                let sd: Vec<f64> = (0..d)
                    .map(|i| ((i + 1) as f64).powf(-p.gauss_alpha / 2.0))
                    .collect();
                let s = Mat::<f64>::from_fn(d, d, |i, j| sd[i] * s[(i, j)] * sd[j]);
                let r = Mat::<f64>::from_fn(d, d, |i, j| sd[i] * r[(i, j)]);
                (s, r)
            }
            TaskKind::LinregGauss | TaskKind::LogregGaussControl => {
                let alpha = if kind == TaskKind::LinregGauss {
                    p.gauss_alpha
                } else {
                    p.logreg_alpha
                };
                let q = random_rotation(d, &mut rng);
                let lambda: Vec<f64> = (0..d).map(|i| ((i + 1) as f64).powf(-alpha)).collect();
                let s = Mat::<f64>::from_fn(d, d, |i, j| {
                    (0..d).map(|k| q[(i, k)] * lambda[k] * q[(j, k)]).sum()
                });
                // Symmetric square root Q diag(sqrt(lambda)) Q^T.
                let r = Mat::<f64>::from_fn(d, d, |i, j| {
                    (0..d)
                        .map(|k| q[(i, k)] * lambda[k].sqrt() * q[(j, k)])
                        .sum()
                });
                (s, r)
            }
        };
        let w_star: Vec<f64> = match kind {
            TaskKind::LogregGaussControl => {
                // A margin-sized w* spread evenly (in the metric Sigma) over the hidden basis:
                // w* = p.logreg_margin * Sigma^{-1/2} u / sqrt(d) for a random unit u, so that
                // x.w* ~ N(0, margin^2).
                let u: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
                let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
                let inv_sqrt = sym_inverse_sqrt(&sigma);
                (0..d)
                    .map(|i| {
                        p.logreg_margin * (0..d).map(|j| inv_sqrt[(i, j)] * u[j]).sum::<f64>()
                            / norm
                    })
                    .collect()
            }
            TaskKind::LinregGauss | TaskKind::LinregSpread if p.gauss_whitened_target => {
                let xi: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
                let inv_sqrt = sym_inverse_sqrt(&sigma);
                (0..d)
                    .map(|i| (0..d).map(|j| inv_sqrt[(i, j)] * xi[j]).sum())
                    .collect()
            }
            _ => (0..d).map(|_| normal(&mut rng)).collect(),
        };
        let n = if kind.is_linear() {
            p.n_samples
        } else {
            p.logreg_samples
        };
        let mut x = vec![0.0f32; n * d];
        let mut y = vec![0.0f32; n];
        let mut z = vec![0.0f64; d];
        let mut xr = vec![0.0f64; d];
        for row in 0..n {
            z.iter_mut().for_each(|v| *v = normal(&mut rng));
            for (i, xi) in xr.iter_mut().enumerate() {
                *xi = (0..d).map(|j| sigma_sqrt[(i, j)] * z[j]).sum();
            }
            for (o, &v) in x[row * d..(row + 1) * d].iter_mut().zip(&xr) {
                *o = v as f32;
            }
            let xs = &x[row * d..(row + 1) * d];
            let margin: f64 = xs.iter().zip(&w_star).map(|(&a, &b)| a as f64 * b).sum();
            y[row] = match kind {
                TaskKind::LogregGaussControl => {
                    let u: f64 = rng.random();
                    let p_one = if p.logreg_separable {
                        if margin > 0.0 {
                            1.0
                        } else {
                            0.0
                        }
                    } else {
                        sigmoid(margin)
                    };
                    if u < p_one {
                        1.0
                    } else {
                        0.0
                    }
                }
                _ => (margin + p.noise_std * normal(&mut rng)) as f32,
            };
        }
        let mut task = Task {
            kind,
            dim: d,
            n_samples: n,
            x,
            y,
            sigma,
            noise_std: p.noise_std,
            w_star,
            a: Mat::zeros(d, d),
            b: vec![0.0; d],
            w_hat: vec![0.0; d],
            min_loss: 0.0,
        };
        task.a = task.weighted_gram(None);
        task.b = (0..d)
            .map(|j| {
                (0..n)
                    .map(|r| task.x[r * d + j] as f64 * task.y[r] as f64)
                    .sum::<f64>()
                    / n as f64
            })
            .collect();
        if kind.is_linear() {
            task.w_hat = solve_spd(&task.a, &task.b);
            let w_hat = task.w_hat.clone();
            task.min_loss = task.raw_loss_f64(&w_hat);
        } else if p.logreg_separable {
            // No minimiser: the excess loss is the loss itself (infimum 0).
            task.w_hat = vec![0.0; d];
            task.min_loss = 0.0;
        } else {
            task.w_hat = task.logistic_minimiser();
            let w_hat = task.w_hat.clone();
            task.min_loss = task.raw_loss_f64(&w_hat);
        }
        task
    }

    /// Row `r` of `X`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.x[r * self.dim..(r + 1) * self.dim]
    }

    fn margin(&self, r: usize, w: &[f64]) -> f64 {
        self.row(r).iter().zip(w).map(|(&a, &b)| a as f64 * b).sum()
    }

    /// `X^T diag(weights) X / N` in f64 (the GN matrix; `None`: unit weights).
    pub fn weighted_gram(&self, weights: Option<&[f64]>) -> Mat<f64> {
        let d = self.dim;
        let mut g = Mat::<f64>::zeros(d, d);
        for r in 0..self.n_samples {
            let w = weights.map_or(1.0, |w| w[r]);
            let row = self.row(r);
            for i in 0..d {
                let xi = w * row[i] as f64;
                for j in 0..=i {
                    g[(i, j)] += xi * row[j] as f64;
                }
            }
        }
        let n = self.n_samples as f64;
        for i in 0..d {
            for j in 0..=i {
                let v = g[(i, j)] / n;
                g[(i, j)] = v;
                g[(j, i)] = v;
            }
        }
        g
    }

    /// The training loss (not the excess) in f64.
    fn raw_loss_f64(&self, w: &[f64]) -> f64 {
        let n = self.n_samples;
        let total: f64 = (0..n)
            .map(|r| {
                let z = self.margin(r, w);
                match self.kind {
                    TaskKind::LogregGaussControl => softplus(z) - self.y[r] as f64 * z,
                    _ => 0.5 * (z - self.y[r] as f64).powi(2),
                }
            })
            .sum();
        total / n as f64
    }

    /// Excess training loss `L(w) - min L` (f64; exact quadratic form for linear regression).
    pub fn excess_loss(&self, w: &[f32]) -> f64 {
        let d = self.dim;
        if self.kind.is_linear() {
            let delta: Vec<f64> = w
                .iter()
                .zip(&self.w_hat)
                .map(|(&a, &b)| a as f64 - b)
                .collect();
            let mut q = 0.0;
            for i in 0..d {
                let ad: f64 = (0..d).map(|j| self.a[(i, j)] * delta[j]).sum();
                q += delta[i] * ad;
            }
            0.5 * q
        } else {
            let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
            (self.raw_loss_f64(&w64) - self.min_loss).max(0.0)
        }
    }

    /// Newton's method in f64 for the logistic minimiser (data are not separable: N >> d and
    /// labels are drawn from a logistic model).
    fn logistic_minimiser(&self) -> Vec<f64> {
        let d = self.dim;
        let n = self.n_samples;
        let mut w = vec![0.0f64; d];
        for _ in 0..100 {
            let mut grad = vec![0.0f64; d];
            let mut weights = vec![0.0f64; n];
            for (r, weight) in weights.iter_mut().enumerate() {
                let s = sigmoid(self.margin(r, &w));
                *weight = (s * (1.0 - s)).max(1e-300);
                let resid = s - self.y[r] as f64;
                for (g, &xv) in grad.iter_mut().zip(self.row(r)) {
                    *g += resid * xv as f64 / n as f64;
                }
            }
            let h = self.weighted_gram(Some(&weights));
            let step = solve_spd(&h, &grad);
            // Backtracking on the loss keeps Newton globally convergent.
            let loss0 = self.raw_loss_f64(&w);
            let mut t = 1.0;
            loop {
                let cand: Vec<f64> = w.iter().zip(&step).map(|(a, s)| a - t * s).collect();
                if self.raw_loss_f64(&cand) <= loss0 || t < 1e-8 {
                    w = cand;
                    break;
                }
                t *= 0.5;
            }
            let gnorm: f64 = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
            if gnorm < 1e-13 {
                break;
            }
        }
        w
    }
}

/// Solves `A x = b` for symmetric positive definite `A` (Cholesky, f64).
pub fn solve_spd(a: &Mat<f64>, b: &[f64]) -> Vec<f64> {
    let d = b.len();
    let mut l = Mat::<f64>::zeros(d, d);
    for j in 0..d {
        let mut s = a[(j, j)];
        for k in 0..j {
            s -= l[(j, k)] * l[(j, k)];
        }
        let ljj = s.max(1e-300).sqrt();
        l[(j, j)] = ljj;
        for i in j + 1..d {
            let mut s = a[(i, j)];
            for k in 0..j {
                s -= l[(i, k)] * l[(j, k)];
            }
            l[(i, j)] = s / ljj;
        }
    }
    let mut y = vec![0.0; d];
    for i in 0..d {
        let s: f64 = (0..i).map(|k| l[(i, k)] * y[k]).sum();
        y[i] = (b[i] - s) / l[(i, i)];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| l[(k, i)] * x[k]).sum();
        x[i] = (y[i] - s) / l[(i, i)];
    }
    x
}

/// `Sigma^{-1/2}` of a symmetric positive definite matrix (f64 eigh).
pub fn sym_inverse_sqrt(a: &Mat<f64>) -> Mat<f64> {
    let d = a.nrows();
    let evd = a
        .self_adjoint_eigen(faer::Side::Lower)
        .expect("eigh of a covariance");
    let s = evd.S().column_vector();
    let u = evd.U();
    Mat::from_fn(d, d, |i, j| {
        (0..d)
            .map(|k| u[(i, k)] * u[(j, k)] / s[k].max(1e-300).sqrt())
            .sum()
    })
}
