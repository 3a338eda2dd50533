//! The problems, each in the coordinates the optimizers run in (for a basis `U`, `w~ = U^T w`:
//! the gradient is evaluated at `w = U w~` and rotated in, so `m`, `v` and `h` live in the
//! basis). Every problem reports the *excess* loss `L(w) - min L` in f64.
//!
//! - [`LogregOrthogonal`] (Theorem-2 candidate): one-hot features `x = Q e_k`, `k ~ Zipf(1)` over
//!   `d` features, a label rate `q_k` per feature. The GN `sum_k p_k s(1-s)(w.Q e_k) Q e_k e_k^T
//!   Q^T` has the eigenbasis `Q` at every `w`, so the eigenbasis is exact and fixed; in it the
//!   problem separates: `L = sum_k p_k (softplus(w~_k) - q_k w~_k)`, `h_k = p_k s(1-s)(w~_k)`.
//!   The run uses these eigen-coordinates directly (the rotation by `Q` is an exact change of
//!   variables).
//! - [`SoftmaxZipf`] (Theorem-2 candidate): softmax regression with a bias only, `C` classes with
//!   Zipf(1) frequencies `pi`; `L(b) = KL(pi || softmax(b))`; the basis is the eigenbasis of the
//!   GN at the optimum, `diag(pi) - pi pi^T`, fixed (`DenseBasis`, f32, up to 1024 x 1024); the
//!   GN diagonal in it comes from `gn_diag_softmax_in_kronecker_with` at the current logits. The
//!   GN's null direction (the constant vector: softmax is shift invariant) is projected out of
//!   the gradient for every optimizer.
//! - [`LogregGaussControl`]: logistic regression with Gaussian inputs (negative control, see
//!   docs/study.md), in the fixed eigenbasis of `X^T X / N`, the GN diagonal refreshed every 10
//!   steps with `gn_diag_weighted_in_basis_with`.
//! - [`LinregBlock`]: the population quadratic `(w - w*)^T Sigma (w - w*) / 2` with
//!   `Sigma = blockdiag((1 - rho_j) I + rho_j 11^T)` over blocks of different sizes and `w*`
//!   constant within each block (equal gradient magnitude within a block), identity basis;
//!   `h = diag(Sigma) = 1`.
//! - [`SampledLinreg`]: linear regression on a sampled training set ([`super::tasks::Task`]),
//!   full batch (`A w - b`) or mini-batches drawn with replacement, in the identity or the
//!   eigenbasis of `A = X^T X / N`; `h = diag(U^T A U)` from the GN diagonal kernels.

use super::tasks::{mix_seed, sigmoid, softplus, Task, TaskKind, TaskParams};
use diagprec::{
    gn_diag_softmax_in_kronecker_with, gn_diag_weighted_in_basis_with, gn_diag_weighted_with,
    DenseBasis, GnEstimator, Isa, Par, RefreshMethod, Samples,
};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A problem in the optimizers' coordinates.
pub trait Problem: Sync + Send {
    fn dim(&self) -> usize;
    /// Excess loss at `w`.
    fn excess(&self, w: &[f32]) -> f64;
    /// The gradient at `w` into `g` (full batch when `batch` is `None`); returns the excess loss
    /// at `w` for a full batch (NaN for a mini-batch).
    fn gradient(&self, w: &[f32], batch: Option<usize>, rng: &mut StdRng, g: &mut [f32]) -> f64;
    /// The GN diagonal in the problem's basis at `w`.
    fn gn_diag(&self, w: &[f32], h: &mut [f32]);
    /// Steps between two refreshes of the GN diagonal.
    fn gn_every(&self) -> usize {
        1
    }
}

/// Zipf(1) counts of `n` draws over `k` outcomes.
fn zipf_counts(k: usize, n: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut cdf = Vec::with_capacity(k);
    let mut acc = 0.0;
    for i in 0..k {
        acc += 1.0 / (i + 1) as f64;
        cdf.push(acc);
    }
    let mut counts = vec![0usize; k];
    for _ in 0..n {
        let u: f64 = rng.random::<f64>() * acc;
        let i = cdf.partition_point(|&c| c < u).min(k - 1);
        counts[i] += 1;
    }
    counts
}

/// Theorem-2 candidate: orthogonal-support logistic regression in its exact eigenbasis.
#[derive(Clone, Debug)]
pub struct LogregOrthogonal {
    /// Feature frequencies (smoothed empirical, Zipf(1)).
    pub p: Vec<f64>,
    /// Per-feature label rates (smoothed empirical).
    pub q: Vec<f64>,
    loss_star: Vec<f64>,
}

impl LogregOrthogonal {
    /// `d` features, `32 d` samples; label rates `sigmoid(3 xi_k)`, `xi_k ~ N(0, 1)`.
    pub fn new(d: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(mix_seed(&[seed, 0x10, d as u64]));
        let n = 32 * d;
        let counts = zipf_counts(d, n, &mut rng);
        let mut p = Vec::with_capacity(d);
        let mut q = Vec::with_capacity(d);
        for &c in &counts {
            let xi: f64 = rng.sample(StandardNormal);
            let rate = sigmoid(3.0 * xi);
            let ones = (0..c).filter(|_| rng.random::<f64>() < rate).count();
            p.push((c as f64 + 0.5) / (n as f64 + 0.5 * d as f64));
            q.push((ones as f64 + 0.5) / (c as f64 + 1.0));
        }
        let loss_star = q
            .iter()
            .map(|&qk| {
                let z = (qk / (1.0 - qk)).ln();
                softplus(z) - qk * z
            })
            .collect();
        Self { p, q, loss_star }
    }
}

impl Problem for LogregOrthogonal {
    fn dim(&self) -> usize {
        self.p.len()
    }
    fn excess(&self, w: &[f32]) -> f64 {
        w.iter()
            .enumerate()
            .map(|(k, &wk)| {
                let z = wk as f64;
                self.p[k] * (softplus(z) - self.q[k] * z - self.loss_star[k])
            })
            .sum()
    }
    fn gradient(&self, w: &[f32], _batch: Option<usize>, _rng: &mut StdRng, g: &mut [f32]) -> f64 {
        for (k, (gk, &wk)) in g.iter_mut().zip(w).enumerate() {
            *gk = (self.p[k] * (sigmoid(wk as f64) - self.q[k])) as f32;
        }
        self.excess(w)
    }
    fn gn_diag(&self, w: &[f32], h: &mut [f32]) {
        for (k, (hk, &wk)) in h.iter_mut().zip(w).enumerate() {
            let s = sigmoid(wk as f64);
            *hk = (self.p[k] * s * (1.0 - s)) as f32;
        }
    }
}

/// Theorem-2 candidate: bias-only softmax regression with Zipf class frequencies, in the fixed
/// eigenbasis of the GN at the optimum.
#[derive(Clone, Debug)]
pub struct SoftmaxZipf {
    pub pi: Vec<f64>,
    pub basis: DenseBasis,
    /// The basis column along the constant vector (the GN's null direction).
    null: usize,
    one: Mat<f32>,
}

impl SoftmaxZipf {
    /// `c` classes, frequencies from `32 c` Zipf(1) draws (add-1/2 smoothing).
    pub fn new(c: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(mix_seed(&[seed, 0x20, c as u64]));
        let n = 32 * c;
        let counts = zipf_counts(c, n, &mut rng);
        let pi: Vec<f64> = counts
            .iter()
            .map(|&k| (k as f64 + 0.5) / (n as f64 + 0.5 * c as f64))
            .collect();
        let gn = Mat::<f32>::from_fn(c, c, |i, j| {
            ((if i == j { pi[i] } else { 0.0 }) - pi[i] * pi[j]) as f32
        });
        let (basis, _) = DenseBasis::identity(c)
            .refreshed(gn.as_ref(), RefreshMethod::Eigh, Par::Seq)
            .expect("eigenbasis of the softmax GN");
        let u = basis.matrix();
        let null = (0..c)
            .max_by(|&a, &b| {
                let sa: f32 = (0..c).map(|i| u[(i, a)]).sum::<f32>().abs();
                let sb: f32 = (0..c).map(|i| u[(i, b)]).sum::<f32>().abs();
                sa.total_cmp(&sb)
            })
            .unwrap_or(0);
        Self {
            pi,
            basis,
            null,
            one: Mat::<f32>::identity(1, 1),
        }
    }

    fn logits(&self, w: &[f32]) -> Vec<f32> {
        let mut b = vec![0.0f32; w.len()];
        self.basis
            .rotate_out_with(Par::Seq, w, &mut b, false)
            .expect("rotate");
        b
    }

    fn probs(b: &[f32]) -> Vec<f64> {
        let mx = b.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = b.iter().map(|&z| (z as f64 - mx).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    fn kl(&self, p: &[f64]) -> f64 {
        self.pi
            .iter()
            .zip(p)
            .map(|(&a, &b)| a * (a / b).ln())
            .sum::<f64>()
            .max(0.0)
    }
}

impl Problem for SoftmaxZipf {
    fn dim(&self) -> usize {
        self.pi.len()
    }
    fn excess(&self, w: &[f32]) -> f64 {
        self.kl(&Self::probs(&self.logits(w)))
    }
    fn gradient(&self, w: &[f32], _batch: Option<usize>, _rng: &mut StdRng, g: &mut [f32]) -> f64 {
        let p = Self::probs(&self.logits(w));
        let full: Vec<f32> = p
            .iter()
            .zip(&self.pi)
            .map(|(a, b)| (a - b) as f32)
            .collect();
        self.basis
            .rotate_into_with(Par::Seq, &full, g, false)
            .expect("rotate");
        g[self.null] = 0.0;
        self.kl(&p)
    }
    fn gn_diag(&self, w: &[f32], h: &mut [f32]) {
        let b = self.logits(w);
        let c = self.pi.len();
        gn_diag_softmax_in_kronecker_with(
            Isa::detect(),
            Par::Seq,
            Samples::new(&[1.0], 1, 1).unwrap(),
            Samples::new(&b, 1, c).unwrap(),
            GnEstimator::Exact,
            0,
            self.basis.matrix(),
            self.one.as_ref(),
            0.0,
            h,
            None,
        )
        .expect("softmax GN diagonal");
    }
}

/// Negative control: Gaussian-input logistic regression in the fixed eigenbasis of `X^T X / N`.
#[derive(Clone, Debug)]
pub struct LogregGaussControl {
    pub task: Task,
    pub basis: DenseBasis,
}

impl LogregGaussControl {
    pub fn new(d: usize, seed: u64) -> Self {
        let params = TaskParams {
            dim: d,
            logreg_samples: 32 * d,
            ..TaskParams::default()
        };
        let task = Task::generate(TaskKind::LogregGaussControl, &params, seed, d as u64);
        let a = Mat::<f32>::from_fn(d, d, |i, j| task.a[(i, j)] as f32);
        let (basis, _) = DenseBasis::identity(d)
            .refreshed(a.as_ref(), RefreshMethod::Eigh, Par::Seq)
            .expect("eigenbasis of X^T X / N");
        Self { task, basis }
    }

    fn original(&self, w: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; w.len()];
        self.basis
            .rotate_out_with(Par::Seq, w, &mut out, false)
            .expect("rotate");
        out
    }
}

impl Problem for LogregGaussControl {
    fn dim(&self) -> usize {
        self.task.dim
    }
    fn excess(&self, w: &[f32]) -> f64 {
        self.task.excess_loss(&self.original(w))
    }
    fn gradient(&self, w: &[f32], _batch: Option<usize>, _rng: &mut StdRng, g: &mut [f32]) -> f64 {
        let task = &self.task;
        let (n, d) = (task.n_samples, task.dim);
        let wo = self.original(w);
        let x = MatRef::from_row_major_slice(&task.x, n, d);
        let mut r = vec![0.0f32; n];
        {
            let z = MatMut::from_column_major_slice_mut(&mut r, n, 1);
            let wc = MatRef::from_column_major_slice(&wo, d, 1);
            matmul(z, Accum::Replace, x, wc, 1.0f32, faer::Par::Seq);
        }
        for (zr, &y) in r.iter_mut().zip(&task.y) {
            *zr = sigmoid(*zr as f64) as f32 - y;
        }
        let mut gfull = vec![0.0f32; d];
        {
            let rr = MatRef::from_column_major_slice(&r, n, 1);
            let gm = MatMut::from_column_major_slice_mut(&mut gfull, d, 1);
            matmul(
                gm,
                Accum::Replace,
                x.transpose(),
                rr,
                1.0 / n as f32,
                faer::Par::Seq,
            );
        }
        self.basis
            .rotate_into_with(Par::Seq, &gfull, g, false)
            .expect("rotate");
        task.excess_loss(&wo)
    }
    fn gn_diag(&self, w: &[f32], h: &mut [f32]) {
        let task = &self.task;
        let wo = self.original(w);
        let weights: Vec<f32> = (0..task.n_samples)
            .map(|r| {
                let z: f64 = task
                    .row(r)
                    .iter()
                    .zip(&wo)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                let s = sigmoid(z);
                (s * (1.0 - s)) as f32
            })
            .collect();
        gn_diag_weighted_in_basis_with(
            Isa::detect(),
            Par::Seq,
            Samples::strided(&task.x, task.n_samples, task.dim, task.dim).unwrap(),
            Some(&weights),
            self.basis.matrix(),
            0.0,
            h,
        )
        .expect("GN diagonal");
    }
    fn gn_every(&self) -> usize {
        10
    }
}

/// The block quadratic as the paper's identity-basis argument assumes it.
#[derive(Clone, Debug)]
pub struct LinregBlock {
    /// Block sizes and correlations (unit diagonal everywhere).
    pub sizes: Vec<usize>,
    pub rhos: Vec<f64>,
    pub w_star: Vec<f64>,
}

impl LinregBlock {
    /// Blocks of 32, 16, 8, 8 with `rho = 0.999, 0.9, 0.5, 0` (d = 64): unit diagonal, so the
    /// GN diagonal in the identity basis is all ones and blind to the blocks, while the
    /// curvature along each block's `1` vector, `1 + (k - 1) rho`, is 32, 14.5, 4.5 and 1.
    /// `w* = a_j 1` per block (equal gradient magnitude within a block), `a_j = +-10^u`,
    /// `u ~ U(-1, 1)` (magnitudes that differ across blocks, so that one sign step cannot land
    /// on `w*`).
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(mix_seed(&[seed, 0x30]));
        let sizes = vec![32, 16, 8, 8];
        let rhos = vec![0.999, 0.9, 0.5, 0.0];
        let mut w_star = Vec::new();
        for &k in &sizes {
            let u: f64 = rng.random_range(-1.0..1.0);
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            let a = sign * 10f64.powf(u);
            w_star.extend(std::iter::repeat_n(a, k));
        }
        Self {
            sizes,
            rhos,
            w_star,
        }
    }

    /// `Sigma delta`.
    fn sigma_mul(&self, delta: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; delta.len()];
        let mut start = 0;
        for (&k, &rho) in self.sizes.iter().zip(&self.rhos) {
            let r = start..start + k;
            let sum: f64 = delta[r.clone()].iter().sum();
            for i in r {
                out[i] = (1.0 - rho) * delta[i] + rho * sum;
            }
            start += k;
        }
        out
    }
}

impl Problem for LinregBlock {
    fn dim(&self) -> usize {
        self.w_star.len()
    }
    fn excess(&self, w: &[f32]) -> f64 {
        let delta: Vec<f64> = w
            .iter()
            .zip(&self.w_star)
            .map(|(&a, &b)| a as f64 - b)
            .collect();
        let sd = self.sigma_mul(&delta);
        0.5 * delta.iter().zip(&sd).map(|(a, b)| a * b).sum::<f64>()
    }
    fn gradient(&self, w: &[f32], _batch: Option<usize>, _rng: &mut StdRng, g: &mut [f32]) -> f64 {
        let delta: Vec<f64> = w
            .iter()
            .zip(&self.w_star)
            .map(|(&a, &b)| a as f64 - b)
            .collect();
        let sd = self.sigma_mul(&delta);
        for (gi, &v) in g.iter_mut().zip(&sd) {
            *gi = v as f32;
        }
        0.5 * delta.iter().zip(&sd).map(|(a, b)| a * b).sum::<f64>()
    }
    fn gn_diag(&self, _w: &[f32], h: &mut [f32]) {
        h.iter_mut().for_each(|x| *x = 1.0);
    }
}

/// Linear regression on a sampled training set, in the identity or the eigenbasis of `A`.
#[derive(Clone, Debug)]
pub struct SampledLinreg {
    pub task: Task,
    pub basis: Option<DenseBasis>,
    /// `diag(U^T A U)`.
    pub h: Vec<f32>,
}

impl SampledLinreg {
    pub fn new(kind: TaskKind, params: &TaskParams, seed: u64, eigen: bool) -> Self {
        let task = Task::generate(kind, params, seed, 0);
        let d = task.dim;
        let basis = eigen.then(|| {
            let a = Mat::<f32>::from_fn(d, d, |i, j| task.a[(i, j)] as f32);
            DenseBasis::identity(d)
                .refreshed(a.as_ref(), RefreshMethod::Eigh, Par::Seq)
                .expect("eigenbasis of A")
                .0
        });
        let mut h = vec![0.0f32; d];
        let isa = Isa::detect();
        match &basis {
            None => gn_diag_weighted_with(
                isa,
                Par::Seq,
                Samples::strided(&task.x, task.n_samples, d, d).unwrap(),
                None,
                0.0,
                &mut h,
            ),
            Some(b) => gn_diag_weighted_in_basis_with(
                isa,
                Par::Seq,
                Samples::strided(&task.x, task.n_samples, d, d).unwrap(),
                None,
                b.matrix(),
                0.0,
                &mut h,
            ),
        }
        .expect("GN diagonal");
        Self { task, basis, h }
    }

    /// `w = U w~`.
    pub fn original(&self, w: &[f32]) -> Vec<f32> {
        match &self.basis {
            None => w.to_vec(),
            Some(b) => {
                let mut out = vec![0.0f32; w.len()];
                b.rotate_out_with(Par::Seq, w, &mut out, false)
                    .expect("rotate");
                out
            }
        }
    }

    /// `g~ = U^T g`.
    pub fn rotate_in(&self, g: &[f32], out: &mut [f32]) {
        match &self.basis {
            None => out.copy_from_slice(g),
            Some(b) => b.rotate_into_with(Par::Seq, g, out, false).expect("rotate"),
        }
    }
}

impl Problem for SampledLinreg {
    fn dim(&self) -> usize {
        self.task.dim
    }
    fn excess(&self, w: &[f32]) -> f64 {
        self.task.excess_loss(&self.original(w))
    }
    fn gradient(&self, w: &[f32], batch: Option<usize>, rng: &mut StdRng, g: &mut [f32]) -> f64 {
        let task = &self.task;
        let d = task.dim;
        let wo = self.original(w);
        let mut gfull = vec![0.0f32; d];
        let loss = match batch {
            None => {
                for (i, gi) in gfull.iter_mut().enumerate() {
                    let aw: f64 = (0..d).map(|j| task.a[(i, j)] * wo[j] as f64).sum();
                    *gi = (aw - task.b[i]) as f32;
                }
                task.excess_loss(&wo)
            }
            Some(bs) => {
                let mut acc = vec![0.0f64; d];
                for _ in 0..bs {
                    let r = rng.random_range(0..task.n_samples);
                    let x = task.row(r);
                    let z: f64 = x.iter().zip(&wo).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let resid = z - task.y[r] as f64;
                    for (a, &xv) in acc.iter_mut().zip(x) {
                        *a += resid * xv as f64;
                    }
                }
                for (gi, a) in gfull.iter_mut().zip(&acc) {
                    *gi = (a / bs as f64) as f32;
                }
                f64::NAN
            }
        };
        self.rotate_in(&gfull, g);
        loss
    }
    fn gn_diag(&self, _w: &[f32], h: &mut [f32]) {
        h.copy_from_slice(&self.h);
    }
}
