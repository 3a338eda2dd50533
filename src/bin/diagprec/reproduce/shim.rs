//! TEMPORARY stand-ins for the GN (issue 3) and basis (issue 4) APIs, with their exact
//! signatures, written plainly (scalar loops, faer for eigh). Deleted once the crate has them.

#![allow(dead_code)]

use diagprec::{Error, ErrorKind, Result};
use faer::linalg::solvers::DenseSolveCore;
use faer::{c64, Mat, MatRef, Side};

fn len_err(msg: &str) -> Error {
    Error::new(ErrorKind::Length, msg.to_string())
}

fn check_x(x: &[f32], n_samples: usize, dim: usize, row_stride: usize, h: &[f32]) -> Result<()> {
    if h.len() != dim || row_stride < dim {
        return Err(len_err("h.len() != dim or row_stride < dim"));
    }
    if n_samples > 0 && x.len() < (n_samples - 1) * row_stride + dim {
        return Err(len_err("x too short"));
    }
    if n_samples == 0 {
        return Err(len_err("n_samples == 0"));
    }
    Ok(())
}

fn blend(beta: f32, h: &mut [f32], batch: &[f64]) {
    for (h, &b) in h.iter_mut().zip(batch) {
        *h = if beta == 0.0 {
            b as f32
        } else {
            beta * *h + (1.0 - beta) * b as f32
        };
    }
}

/// `h <- beta h + (1 - beta) (1/N) sum_n w_n x_nj^2`.
pub fn gn_diag_weighted(
    x: &[f32],
    n_samples: usize,
    dim: usize,
    row_stride: usize,
    weights: Option<&[f32]>,
    beta: f32,
    h: &mut [f32],
) -> Result<()> {
    check_x(x, n_samples, dim, row_stride, h)?;
    let mut acc = vec![0.0f64; dim];
    for n in 0..n_samples {
        let w = weights.map_or(1.0, |w| w[n] as f64);
        for (a, &v) in acc.iter_mut().zip(&x[n * row_stride..n * row_stride + dim]) {
            *a += w * (v as f64) * (v as f64);
        }
    }
    acc.iter_mut().for_each(|a| *a /= n_samples as f64);
    blend(beta, h, &acc);
    Ok(())
}

/// Logistic GN diagonal: weights `s (1 - s)`, `s = sigmoid(logit)`.
pub fn gn_diag_logistic(
    x: &[f32],
    n_samples: usize,
    dim: usize,
    row_stride: usize,
    logits: &[f32],
    beta: f32,
    h: &mut [f32],
) -> Result<()> {
    let w: Vec<f32> = logits
        .iter()
        .map(|&z| {
            let s = 1.0 / (1.0 + (-z as f64).exp());
            (s * (1.0 - s)) as f32
        })
        .collect();
    gn_diag_weighted(x, n_samples, dim, row_stride, Some(&w), beta, h)
}

/// `h <- beta h + (1 - beta) diag(U^T X^T W X U) / N`.
#[allow(clippy::too_many_arguments)]
pub fn gn_diag_weighted_in_basis(
    x: &[f32],
    n_samples: usize,
    dim: usize,
    row_stride: usize,
    weights: Option<&[f32]>,
    u: MatRef<'_, f32>,
    beta: f32,
    h: &mut [f32],
) -> Result<()> {
    check_x(x, n_samples, dim, row_stride, h)?;
    let mut acc = vec![0.0f64; dim];
    let mut xr = vec![0.0f64; dim];
    for n in 0..n_samples {
        let w = weights.map_or(1.0, |w| w[n] as f64);
        let row = &x[n * row_stride..n * row_stride + dim];
        for (a, xa) in xr.iter_mut().enumerate() {
            *xa = (0..dim).map(|j| row[j] as f64 * u[(j, a)] as f64).sum();
        }
        for (a, &v) in acc.iter_mut().zip(&xr) {
            *a += w * v * v;
        }
    }
    acc.iter_mut().for_each(|a| *a /= n_samples as f64);
    blend(beta, h, &acc);
    Ok(())
}

/// GN^p step configuration (only the fields the study uses are honoured by the shim).
#[derive(Clone, Copy, Debug)]
pub struct GnConfig {
    pub lr: f64,
    pub power: f64,
    pub damping: f64,
    pub beta1: f64,
    pub bias_correction: bool,
    pub weight_decay: f64,
    pub sophia: Option<()>,
    pub check_finite: bool,
}

impl Default for GnConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            power: -1.0,
            damping: 1e-8,
            beta1: 0.9,
            bias_correction: true,
            weight_decay: 0.0,
            sophia: None,
            check_finite: false,
        }
    }
}

/// `m <- beta1 m + (1 - beta1) g; theta -= lr * m_hat * (h + damping)^power`.
pub fn gn_step(
    cfg: &GnConfig,
    step: u64,
    param: &mut [f32],
    grad: &[f32],
    exp_avg: Option<&mut [f32]>,
    h: &[f32],
) -> Result<()> {
    let n = param.len();
    if grad.len() != n || h.len() != n {
        return Err(len_err("length mismatch"));
    }
    let bc1 = if cfg.bias_correction {
        1.0 - cfg.beta1.powi(step as i32)
    } else {
        1.0
    };
    match exp_avg {
        Some(m) => {
            for i in 0..n {
                m[i] = (cfg.beta1 as f32) * m[i] + (1.0 - cfg.beta1 as f32) * grad[i];
                let d = ((h[i] as f64) + cfg.damping).powf(cfg.power);
                param[i] -= (cfg.lr / bc1 * m[i] as f64 * d) as f32;
            }
        }
        None => {
            for i in 0..n {
                let d = ((h[i] as f64) + cfg.damping).powf(cfg.power);
                param[i] -= (cfg.lr * grad[i] as f64 * d) as f32;
            }
        }
    }
    Ok(())
}

/// A dense orthonormal basis `U` (d x d).
#[derive(Clone, Debug)]
pub struct DenseBasis {
    u: Mat<f32>,
}

impl DenseBasis {
    pub fn identity(d: usize) -> Self {
        Self {
            u: Mat::identity(d, d),
        }
    }

    pub fn new(u: Mat<f32>) -> Result<Self> {
        if u.nrows() != u.ncols() {
            return Err(len_err("U must be square"));
        }
        Ok(Self { u })
    }

    /// Eigenvectors of a symmetric matrix, eigenvalues descending.
    pub fn from_symmetric(a: MatRef<'_, f32>) -> Result<(Self, Vec<f32>)> {
        let d = a.nrows();
        let a64 = Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (a[(i, j)] as f64 + a[(j, i)] as f64));
        let evd = a64
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| Error::new(ErrorKind::InvalidArgument, "eigh failed"))?;
        let s = evd.S().column_vector();
        let u = evd.U();
        let mut vals = Vec::with_capacity(d);
        let mut out = Mat::<f32>::zeros(d, d);
        for k in 0..d {
            let src = d - 1 - k;
            vals.push(s[src] as f32);
            for i in 0..d {
                out[(i, k)] = u[(i, src)] as f32;
            }
        }
        Ok((Self { u: out }, vals))
    }

    pub fn dim(&self) -> usize {
        self.u.nrows()
    }

    pub fn matrix(&self) -> MatRef<'_, f32> {
        self.u.as_ref()
    }

    /// `out = U^T g`.
    pub fn rotate_into(&self, g: &[f32], out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        if g.len() != d || out.len() != d {
            return Err(len_err("length mismatch"));
        }
        for (a, o) in out.iter_mut().enumerate() {
            *o = (0..d).map(|j| self.u[(j, a)] * g[j]).sum();
        }
        Ok(())
    }

    /// `out = U g_rot`.
    pub fn rotate_out(&self, g_rot: &[f32], out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        if g_rot.len() != d || out.len() != d {
            return Err(len_err("length mismatch"));
        }
        for (j, o) in out.iter_mut().enumerate() {
            *o = (0..d).map(|a| self.u[(j, a)] * g_rot[a]).sum();
        }
        Ok(())
    }
}

/// The geodesic `U(t) = U0 expm(t logm(U0^T U1))` (columns of `U1` matched to `U0` first).
#[derive(Clone, Debug)]
pub struct Geodesic {
    u0: Mat<f64>,
    vecs: Mat<c64>,
    vecs_inv: Mat<c64>,
    angles: Vec<f64>,
}

impl Geodesic {
    pub fn new(u0: MatRef<'_, f32>, u1: MatRef<'_, f32>) -> Result<Self> {
        let d = u0.nrows();
        let u0 = Mat::<f64>::from_fn(d, d, |i, j| u0[(i, j)] as f64);
        let u1 = Mat::<f64>::from_fn(d, d, |i, j| u1[(i, j)] as f64);
        let mut r = u0.transpose() * &u1;
        // Match columns: greedy permutation by largest |r_ij|, then signs, then det = +1.
        let mut perm = vec![usize::MAX; d];
        let mut used = vec![false; d];
        let mut entries: Vec<(f64, usize, usize)> = (0..d)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| (r[(i, j)].abs(), i, j))
            .collect();
        entries.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, i, j) in entries {
            if perm[i] == usize::MAX && !used[j] {
                perm[i] = j;
                used[j] = true;
            }
        }
        let mut rp = Mat::<f64>::from_fn(d, d, |i, k| r[(i, perm[k])]);
        for k in 0..d {
            if rp[(k, k)] < 0.0 {
                for i in 0..d {
                    rp[(i, k)] = -rp[(i, k)];
                }
            }
        }
        if rp.as_ref().determinant() < 0.0 {
            let k = (0..d)
                .min_by(|&a, &b| rp[(a, a)].abs().total_cmp(&rp[(b, b)].abs()))
                .unwrap_or(0);
            for i in 0..d {
                rp[(i, k)] = -rp[(i, k)];
            }
        }
        r = rp;
        let evd = r
            .eigen()
            .map_err(|_| Error::new(ErrorKind::InvalidArgument, "eigen failed"))?;
        let vecs = evd.U().to_owned();
        let vecs_inv = vecs.partial_piv_lu().inverse();
        let angles = (0..d)
            .map(|k| {
                let z = evd.S().column_vector()[k];
                z.im.atan2(z.re)
            })
            .collect();
        Ok(Self {
            u0,
            vecs,
            vecs_inv,
            angles,
        })
    }

    pub fn at(&self, t: f64) -> Result<DenseBasis> {
        let d = self.u0.nrows();
        let mut scaled = self.vecs.clone();
        for k in 0..d {
            let a = t * self.angles[k];
            let e = c64::new(a.cos(), a.sin());
            for i in 0..d {
                scaled[(i, k)] *= e;
            }
        }
        let p = &scaled * &self.vecs_inv;
        let re = Mat::<f64>::from_fn(d, d, |i, j| p[(i, j)].re);
        let mut u = &self.u0 * &re;
        // Re-orthonormalise (modified Gram-Schmidt, f64).
        for j in 0..d {
            for k in 0..j {
                let dot: f64 = (0..d).map(|i| u[(i, j)] * u[(i, k)]).sum();
                for i in 0..d {
                    let v = u[(i, k)];
                    u[(i, j)] -= dot * v;
                }
            }
            let norm = (0..d).map(|i| u[(i, j)] * u[(i, j)]).sum::<f64>().sqrt();
            for i in 0..d {
                u[(i, j)] /= norm;
            }
        }
        DenseBasis::new(Mat::from_fn(d, d, |i, j| u[(i, j)] as f32))
    }
}
