//! Non-convex: a one-hidden-layer ReLU network on sparse parity, with per-layer Kronecker bases.
//!
//! Inputs `x` uniform in `{-1, 1}^n`, label `y = prod_{i in S} x_i` over a hidden set `S` of
//! `k` coordinates; model `f(x) = a . relu(W [x; 1])` (`W`: `m x (n + 1)`, the last column the
//! hidden bias; `a`: `m`), logistic loss
//! `softplus(-y f)`; fresh mini-batches of `B` samples every step; the reported loss is the mean
//! loss on a fixed evaluation set of 512 samples.
//!
//! **Bases.** The GN of a layer `z = W x` factors as `E[Lambda delta delta^T] (x) E[x x^T]`
//! (K-FAC; `delta = a o relu'(W x)`, `Lambda = s(f)(1 - s(f))`), and of the output layer as
//! `E[Lambda r r^T]` (`r = relu(W x)`). The eigenbases of these factors, estimated once at the
//! initial point on 4096 samples (`DenseBasis`), give the per-layer eigenbasis: a
//! `KroneckerBasis (Q_L, Q_R)` for `W` and a `DenseBasis` for `a`. (For uniform `+-1` inputs
//! `E[x x^T] = I` (the bias column included), so `Q_R` is an arbitrary rotation of a flat
//! spectrum; the informative factor is `Q_L`.) Points of the geodesic from the identity to this basis come from
//! `Geodesic::at` applied to each factor.
//!
//! **GN diagonal** in the basis, refreshed every 10 steps on a fixed set of 256 samples:
//! `h_W = S^T ((X Q_R) o (X Q_R)) / N` with `s_nc = Lambda_n (Q_L^T delta_n)_c^2`
//! (`gn_diag_linear_with`), `h_a` from `gn_diag_weighted_in_basis_with` on the hidden activations
//! with weights `Lambda_n`.

use super::problems::Problem;
use super::tasks::{mix_seed, sigmoid, softplus};
use diagprec::{
    gn_diag_linear_with, gn_diag_weighted_in_basis_with, DenseBasis, Geodesic, Isa, KroneckerBasis,
    Par, RefreshMethod, Samples,
};
use faer::Mat;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Sizes of the parity experiment.
#[derive(Clone, Debug)]
pub struct ParityConfig {
    pub bits: usize,
    pub support: usize,
    pub hidden: usize,
    pub batch: usize,
    pub steps: usize,
    /// Points of the geodesic (t = k / (points - 1)).
    pub points: usize,
}

impl ParityConfig {
    pub fn default_run() -> Self {
        Self {
            bits: 8,
            support: 3,
            hidden: 32,
            batch: 32,
            steps: 1500,
            points: 3,
        }
    }
    pub fn quick() -> Self {
        Self {
            steps: 600,
            ..Self::default_run()
        }
    }
}

/// One parity instance in a basis (the identity at `t = 0`, the per-layer eigenbasis at 1).
#[derive(Clone, Debug)]
pub struct Parity {
    n: usize,
    m: usize,
    support: Vec<usize>,
    /// Initial parameters in the original coordinates: `W` (row-major) then `a`.
    w0: Vec<f32>,
    eval: Vec<f32>,
    gn_set: Vec<f32>,
    kron: KroneckerBasis,
    out_basis: DenseBasis,
}

/// `count` inputs of `n` entries: `n - 1` random signs and a constant 1 (the hidden bias).
fn bits(rng: &mut StdRng, count: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(count * n);
    for _ in 0..count {
        for _ in 0..n - 1 {
            out.push(if rng.random::<bool>() { 1.0 } else { -1.0 });
        }
        out.push(1.0);
    }
    out
}

impl Parity {
    /// The instance of `seed` in the basis at geodesic parameter `t`.
    pub fn new(cfg: &ParityConfig, seed: u64, t: f64) -> Self {
        // The last input is a constant 1: the hidden layer's bias (without it a ReLU network's
        // odd part is linear and cannot fit an odd parity).
        let (n, m) = (cfg.bits + 1, cfg.hidden);
        let mut rng = StdRng::seed_from_u64(mix_seed(&[seed, 0x9A]));
        let mut idx: Vec<usize> = (0..cfg.bits).collect();
        for i in 0..cfg.support {
            let j = rng.random_range(i..cfg.bits);
            idx.swap(i, j);
        }
        let support = idx[..cfg.support].to_vec();
        let mut w0 = Vec::with_capacity(m * n + m);
        for _ in 0..m * n {
            w0.push((rng.sample::<f64, _>(StandardNormal) / (n as f64).sqrt()) as f32);
        }
        for _ in 0..m {
            w0.push((rng.sample::<f64, _>(StandardNormal) / (m as f64).sqrt()) as f32);
        }
        let eval = bits(&mut rng, 512, n);
        let gn_set = bits(&mut rng, 256, n);
        let stats = bits(&mut rng, 4096, n);
        let mut p = Self {
            n,
            m,
            support,
            w0,
            eval,
            gn_set,
            kron: KroneckerBasis::identity(m, n),
            out_basis: DenseBasis::identity(m),
        };
        // GN factors at the initial point.
        let w0 = p.w0.clone();
        let (wm, a) = w0.split_at(m * n);
        let mut left = Mat::<f32>::zeros(m, m);
        let mut right = Mat::<f32>::zeros(n, n);
        let mut outer = Mat::<f32>::zeros(m, m);
        let count = stats.len() / n;
        for x in stats.chunks(n) {
            let (z, f) = forward(wm, a, x, m, n);
            let s = sigmoid(f);
            let lam = (s * (1.0 - s)) as f32;
            let delta: Vec<f32> = (0..m)
                .map(|j| if z[j] > 0.0 { a[j] } else { 0.0 })
                .collect();
            let r: Vec<f32> = z.iter().map(|&v| v.max(0.0)).collect();
            for i in 0..m {
                for j in 0..m {
                    left[(i, j)] += lam * delta[i] * delta[j] / count as f32;
                    outer[(i, j)] += lam * r[i] * r[j] / count as f32;
                }
            }
            for i in 0..n {
                for j in 0..n {
                    right[(i, j)] += x[i] * x[j] / count as f32;
                }
            }
        }
        let eig = |a: &Mat<f32>, d: usize| -> DenseBasis {
            DenseBasis::identity(d)
                .refreshed(a.as_ref(), RefreshMethod::Eigh, Par::Seq)
                .expect("eigh of a GN factor")
                .0
        };
        let along = |target: DenseBasis, d: usize| -> DenseBasis {
            if t == 1.0 {
                return target;
            }
            let id = Mat::<f32>::identity(d, d);
            Geodesic::new_with(Par::Seq, id.as_ref(), target.matrix())
                .expect("geodesic")
                .at_with(Par::Seq, t)
                .expect("geodesic point")
        };
        if t > 0.0 {
            p.kron = KroneckerBasis::from_bases(along(eig(&left, m), m), along(eig(&right, n), n));
            p.out_basis = along(eig(&outer, m), m);
        }
        p
    }

    fn label(&self, x: &[f32]) -> f64 {
        self.support.iter().map(|&i| x[i] as f64).product()
    }

    /// Original-coordinate parameters `w0 + U w~` (the run starts at `w~ = 0`).
    fn original(&self, w: &[f32]) -> Vec<f32> {
        let (m, n) = (self.m, self.n);
        let mut out = self.w0.clone();
        let mut work = vec![0.0f32; self.kron.workspace_len()];
        let (ow, oa) = out.split_at_mut(m * n);
        self.kron
            .rotate_out_with(Par::Seq, &w[..m * n], ow, &mut work, true)
            .expect("rotate");
        self.out_basis
            .rotate_out_with(Par::Seq, &w[m * n..], oa, true)
            .expect("rotate");
        out
    }

    fn mean_loss(&self, wo: &[f32], xs: &[f32]) -> f64 {
        let (m, n) = (self.m, self.n);
        let (wm, a) = wo.split_at(m * n);
        let count = xs.len() / n;
        xs.chunks(n)
            .map(|x| {
                let (_, f) = forward(wm, a, x, m, n);
                softplus(-self.label(x) * f)
            })
            .sum::<f64>()
            / count as f64
    }
}

fn forward(wm: &[f32], a: &[f32], x: &[f32], m: usize, n: usize) -> (Vec<f32>, f64) {
    let z: Vec<f32> = (0..m)
        .map(|j| {
            wm[j * n..(j + 1) * n]
                .iter()
                .zip(x)
                .map(|(p, q)| p * q)
                .sum()
        })
        .collect();
    let f: f64 = z
        .iter()
        .zip(a)
        .map(|(&zj, &aj)| (zj.max(0.0) * aj) as f64)
        .sum();
    (z, f)
}

impl Problem for Parity {
    fn dim(&self) -> usize {
        self.m * self.n + self.m
    }
    fn excess(&self, w: &[f32]) -> f64 {
        self.mean_loss(&self.original(w), &self.eval)
    }
    fn gradient(&self, w: &[f32], batch: Option<usize>, rng: &mut StdRng, g: &mut [f32]) -> f64 {
        let (m, n) = (self.m, self.n);
        let wo = self.original(w);
        let (wm, a) = wo.split_at(m * n);
        let bs = batch.unwrap_or(self.eval.len() / n);
        let xs = match batch {
            Some(b) => bits(rng, b, n),
            None => self.eval.clone(),
        };
        let mut gfull = vec![0.0f32; m * n + m];
        for x in xs.chunks(n) {
            let (z, f) = forward(wm, a, x, m, n);
            let y = self.label(x);
            let r = (-y * sigmoid(-y * f)) as f32 / bs as f32;
            for j in 0..m {
                if z[j] > 0.0 {
                    gfull[m * n + j] += r * z[j];
                    let c = r * a[j];
                    for (gi, &xi) in gfull[j * n..(j + 1) * n].iter_mut().zip(x) {
                        *gi += c * xi;
                    }
                }
            }
        }
        let mut work = vec![0.0f32; self.kron.workspace_len()];
        let (gw, ga) = g.split_at_mut(m * n);
        self.kron
            .rotate_into_with(Par::Seq, &gfull[..m * n], gw, &mut work, false)
            .expect("rotate");
        self.out_basis
            .rotate_into_with(Par::Seq, &gfull[m * n..], ga, false)
            .expect("rotate");
        if batch.is_none() {
            self.mean_loss(&wo, &self.eval)
        } else {
            f64::NAN
        }
    }
    fn gn_diag(&self, w: &[f32], h: &mut [f32]) {
        let (m, n) = (self.m, self.n);
        let wo = self.original(w);
        let (wm, a) = wo.split_at(m * n);
        let count = self.gn_set.len() / n;
        let ql = self.kron.left().matrix();
        let qr = self.kron.right().matrix();
        let mut s = vec![0.0f32; count * m];
        let mut xr = vec![0.0f32; count * n];
        let mut hid = vec![0.0f32; count * m];
        let mut lam = vec![0.0f32; count];
        for (k, x) in self.gn_set.chunks(n).enumerate() {
            let (z, f) = forward(wm, a, x, m, n);
            let sg = sigmoid(f);
            lam[k] = (sg * (1.0 - sg)) as f32;
            for c in 0..m {
                let mut v = 0.0f32;
                for j in 0..m {
                    if z[j] > 0.0 {
                        v += ql[(j, c)] * a[j];
                    }
                }
                s[k * m + c] = lam[k] * v * v;
                hid[k * m + c] = z[c].max(0.0);
            }
            for b in 0..n {
                xr[k * n + b] = (0..n).map(|i| qr[(i, b)] * x[i]).sum();
            }
        }
        let isa = Isa::detect();
        let (hw, ha) = h.split_at_mut(m * n);
        gn_diag_linear_with(
            isa,
            Par::Seq,
            Samples::new(&xr, count, n).unwrap(),
            Samples::new(&s, count, m).unwrap(),
            0.0,
            hw,
            None,
        )
        .expect("GN diagonal of the hidden layer");
        gn_diag_weighted_in_basis_with(
            isa,
            Par::Seq,
            Samples::strided(&hid, count, m, m).unwrap(),
            Some(&lam),
            self.out_basis.matrix(),
            0.0,
            ha,
        )
        .expect("GN diagonal of the output layer");
    }
    fn gn_every(&self) -> usize {
        10
    }
}
