//! # Geodesic interpolation between two bases on the orthogonal group
//!
//! `U(t) = U0 expm(t logm(U0^T U1))`. Everything is computed in f64 from the f32
//! inputs, and the result rounded to f32 at the end.
//!
//! 1. Both endpoints are orthonormalised in f64 (Bjorck iterations `X <- X (3I - X^T X) / 2`
//!    until `max |X^T X - I| < 1e-13`), so `R = U0^T U1` is orthogonal to rounding.
//! 2. **Column matching** (eigenbases are defined up to column order and signs): columns of `U1`
//!    are assigned to columns of `U0` greedily by decreasing `|R_ij|` (a global greedy
//!    assignment), then each matched column's sign is chosen so `R_ii >= 0`. This makes the path
//!    the short one between the two *sets of eigenvectors*.
//! 3. **Determinant**: if `det R < 0` after matching (no rotation reaches `R`), the matched
//!    column of `U1` with the smallest `R_ii` is negated (again an eigenvector sign).
//!    [`Geodesic::matched_end`] is `U1` after steps 2 and 3; `U(1)` reproduces it.
//! 4. **Logarithm** (faer has no real `logm`): for orthogonal `R`, `C = (R + R^T)/2` and
//!    `S = (R - R^T)/2` commute, and on each eigenspace of `C` with eigenvalue `cos(theta)`,
//!    `S = sin(theta) J` with `J` a complex structure. So with `C = V diag(c) V^T` (faer's
//!    self-adjoint eigendecomposition) and `S~ = V^T S V`:
//!    `log R = V M V^T`, `M_ij = S~_ij (f(c_i) + f(c_j)) / 2`, `f(c) = theta / sin(theta)`,
//!    `theta = atan2(sqrt((1 - c)(1 + c)), c)` (`f -> 1` as `theta -> 0`).
//!    **Eigenvalue -1** (`theta` near pi, where `f` blows up): the indices with
//!    `1 + c_i < 1e-6` form a cluster (extended to even size: such eigenvalues come in pairs).
//!    On it, `K = S~` restricted is `sin(delta) J` with `theta = pi - delta`; with the
//!    eigendecomposition `K^T K = W diag(sigma^2) W^T`, the log there is
//!    `K W diag((pi - asin(sigma)) / sigma) W^T` for `sigma > 1e-7`, and `pi J0` on the null
//!    space of `K` (eigenvalue -1 to within 1e-7: below that, `K`'s direction is rounding noise;
//!    treating it as exactly -1 costs at most 1e-7 in angle), with `J0` pairing consecutive null vectors
//!    (`J0 w_2k = w_2k+1`). Cross terms between the cluster and the rest are zero (they are for
//!    an exactly orthogonal `R`). `M` is made exactly skew: `M <- (M - M^T) / 2`.
//! 5. **Exponential** of the skew `L = log R`: with `L^T L = W diag(w^2) W^T` (symmetric PSD),
//!    `expm(t L) = W (diag(cos(t w)) + (W^T L W) diag(sin(t w) / w)) W^T` (the even and odd
//!    terms of the series; `sin(t w)/w -> t` at `w = 0`).
//! 6. `U(t) = U0 expm(t L)` is re-orthonormalised (Bjorck, f64) and rounded to f32. `t = 0`
//!    gives `U0`, `t = 1` the matched `U1`, to rounding (tested to 1e-5 for d up to 512).
//!
//! Cost: `new` is a few f64 GEMMs and two f64 eigendecompositions of size d; each `at(t)` is
//! four f64 GEMMs of size d.
//!
//! **Reference**: [`crate::reference::geodesic_match`] and [`crate::reference::geodesic_at`]
//! (`tests/basis.rs`).

use super::{orthonormality_error, DenseBasis, ORTHONORMAL_TOLERANCE};
use crate::dispatch::{with_faer_par, Par};
use crate::error::{Error, ErrorKind, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use std::f64::consts::PI;

/// The geodesic from `U0` to (the column-matched) `U1`; see the module docs.
#[derive(Clone, Debug)]
pub struct Geodesic {
    /// `U0 W` (f64).
    u0w: Mat<f64>,
    w: Mat<f64>,
    /// `W^T L W`.
    lw: Mat<f64>,
    omega: Vec<f64>,
    matched_end: Mat<f32>,
    permutation: Vec<usize>,
    signs: Vec<f32>,
}

fn mul(par: Par, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let mut out = Mat::<f64>::zeros(a.nrows(), b.ncols());
    let flops = 2.0 * (a.nrows() * a.ncols() * b.ncols()) as f64;
    with_faer_par(par, flops, |fp| {
        matmul(out.as_mut(), Accum::Replace, a, b, 1.0, fp)
    })?;
    Ok(out)
}

/// Bjorck iterations `X <- X (3I - X^T X) / 2` until `max |X^T X - I| < 1e-13` (at most 8);
/// [`ErrorKind::InvalidArgument`] when they have not brought `max |X^T X - I|` below `1e-10`
/// (an input too far from orthogonal for the iteration to converge), so no caller ever gets a
/// matrix that is not orthonormal.
pub(crate) fn orthonormalize(par: Par, mut x: Mat<f64>) -> Result<Mat<f64>> {
    let d = x.ncols();
    for iteration in 0..=8 {
        let mut gram = mul(par, x.transpose(), x.as_ref())?;
        let mut err = 0.0f64;
        for j in 0..d {
            for i in 0..d {
                let e = gram[(i, j)] - if i == j { 1.0 } else { 0.0 };
                // NaN sticks (f64::max would drop it and report convergence).
                if e.is_nan() || e.abs() > err {
                    err = e.abs();
                }
                // 3I - G, halved.
                gram[(i, j)] = if i == j {
                    1.5 - 0.5 * gram[(i, j)]
                } else {
                    -0.5 * gram[(i, j)]
                };
            }
        }
        if err < 1e-13 {
            break;
        }
        if iteration == 8 {
            if err.is_nan() || err > 1e-10 {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "the orthonormalisation did not converge: max |X^T X - I| = {err:e} after 8 iterations"
                    ),
                ));
            }
            break;
        }
        x = mul(par, x.as_ref(), gram.as_ref())?;
    }
    Ok(x)
}

/// The largest `|t|` [`Geodesic::at`] accepts: `sin(t w) / w` of an angle `w` that is rounding
/// noise grows with `t` until the product is no longer a rotation that re-orthonormalisation can
/// repair (at `t = 1e30` the fuzzer found `max |U^T U - I| = 8.7e-3`; `tests/basis.rs` checks
/// `|t| <= 1024` at d = 9 and 64). No use extrapolates anywhere near this far.
pub const MAX_INTERPOLATION_T: f64 = 1024.0;

fn to_f64(u: MatRef<'_, f32>) -> Mat<f64> {
    Mat::from_fn(u.nrows(), u.ncols(), |i, j| u[(i, j)] as f64)
}

fn check_endpoint(name: &str, u: MatRef<'_, f32>) -> Result<()> {
    let err = orthonormality_error(u)?;
    if err.is_nan() || err > ORTHONORMAL_TOLERANCE {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{name} is not orthonormal: max |U^T U - I| = {err:e}"),
        ));
    }
    Ok(())
}

/// Checks `t` finite with `|t| <= MAX_INTERPOLATION_T`.
pub(crate) fn check_t(t: f64) -> Result<()> {
    if t.is_finite() && t.abs() <= MAX_INTERPOLATION_T {
        Ok(())
    } else {
        Err(Error::hyperparameter(format!(
            "t = {t:e} is not finite with |t| <= {MAX_INTERPOLATION_T}"
        )))
    }
}

/// `theta / sin(theta)` for `cos(theta) = c`.
fn theta_over_sin(c: f64) -> f64 {
    let c = c.clamp(-1.0, 1.0);
    let s = ((1.0 - c) * (1.0 + c)).sqrt();
    let theta = s.atan2(c);
    if s < 1e-8 {
        1.0 + theta * theta / 6.0
    } else {
        theta / s
    }
}

/// Below this `sin(pi - theta)`, a plane is treated as a rotation by exactly pi.
const SIGMA_NULL: f64 = 1e-7;

/// The real logarithm of an orthogonal matrix with determinant +1 (module docs, step 4).
fn log_orthogonal(par: Par, r: &Mat<f64>) -> Result<Mat<f64>> {
    let d = r.nrows();
    let c = Mat::from_fn(d, d, |i, j| 0.5 * (r[(i, j)] + r[(j, i)]));
    let s = Mat::from_fn(d, d, |i, j| 0.5 * (r[(i, j)] - r[(j, i)]));
    let (v, cvals) = super::refresh::eigh_descending(c.as_ref(), par)?;
    let st = mul(
        par,
        mul(par, v.transpose(), s.as_ref())?.as_ref(),
        v.as_ref(),
    )?;
    let mut p = cvals.iter().filter(|&&x| 1.0 + x < 1e-6).count();
    if p % 2 == 1 && p < d {
        p += 1;
    }
    let regular = d - p;
    let f: Vec<f64> = cvals.iter().map(|&x| theta_over_sin(x)).collect();
    let mut m = Mat::<f64>::zeros(d, d);
    for j in 0..regular {
        for i in 0..regular {
            m[(i, j)] = st[(i, j)] * 0.5 * (f[i] + f[j]);
        }
    }
    if p > 0 {
        let k = Mat::from_fn(p, p, |i, j| st[(regular + i, regular + j)]);
        let ktk = mul(par, k.transpose(), k.as_ref())?;
        let (w, sig2) = super::refresh::eigh_descending(ktk.as_ref(), par)?;
        let sigma: Vec<f64> = sig2.iter().map(|&x| x.max(0.0).sqrt()).collect();
        let mut q = sigma.iter().filter(|&&x| x > SIGMA_NULL).count();
        if (p - q) % 2 == 1 {
            q -= 1;
        }
        // K W_b diag((pi - asin s)/s) W_b^T
        let wb_scaled = Mat::from_fn(p, q, |i, j| {
            w[(i, j)] * (PI - sigma[j].min(1.0).asin()) / sigma[j]
        });
        let kw = mul(par, k.as_ref(), wb_scaled.as_ref())?;
        let wb = w.as_ref().subcols(0, q);
        let mut block = mul(par, kw.as_ref(), wb.transpose())?;
        // pi J0 on the null space, J0 w_2k = w_2k+1, J0 w_2k+1 = -w_2k.
        let mut pair = q;
        while pair + 1 < p {
            for i in 0..p {
                for j in 0..p {
                    let (a, b) = (w[(i, pair)], w[(i, pair + 1)]);
                    let (aj, bj) = (w[(j, pair)], w[(j, pair + 1)]);
                    block[(i, j)] += PI * (b * aj - a * bj);
                }
            }
            pair += 2;
        }
        for j in 0..p {
            for i in 0..p {
                m[(regular + i, regular + j)] = block[(i, j)];
            }
        }
    }
    let m = Mat::from_fn(d, d, |i, j| 0.5 * (m[(i, j)] - m[(j, i)]));
    mul(
        par,
        mul(par, v.as_ref(), m.as_ref())?.as_ref(),
        v.transpose(),
    )
}

/// `diag(cos(t w)) + (W^T L W) diag(sin(t w) / w)`: `expm(t L) = W X W^T`.
fn middle(lw: &Mat<f64>, omega: &[f64], t: f64) -> Mat<f64> {
    let d = omega.len();
    let sinc: Vec<f64> = omega
        .iter()
        .map(|&w| {
            if w * t.abs() < 1e-12 {
                t
            } else {
                (t * w).sin() / w
            }
        })
        .collect();
    Mat::from_fn(d, d, |i, j| {
        let diag = if i == j { (t * omega[i]).cos() } else { 0.0 };
        diag + lw[(i, j)] * sinc[j]
    })
}

impl Geodesic {
    /// The geodesic from `u0` to `u1` (both `d x d` orthonormal to
    /// [`super::ORTHONORMAL_TOLERANCE`]), after column matching and the determinant fix.
    pub fn new(u0: MatRef<'_, f32>, u1: MatRef<'_, f32>) -> Result<Self> {
        Self::new_with(Par::Pool, u0, u1)
    }

    /// [`Geodesic::new`] with explicit parallelism.
    pub fn new_with(par: Par, u0: MatRef<'_, f32>, u1: MatRef<'_, f32>) -> Result<Self> {
        check_endpoint("U0", u0)?;
        check_endpoint("U1", u1)?;
        let d = u0.nrows();
        if u1.nrows() != d {
            return Err(Error::length(format!(
                "U0 is {d} x {d} but U1 is {} x {}",
                u1.nrows(),
                u1.ncols()
            )));
        }
        let a = orthonormalize(par, to_f64(u0))?;
        let b = orthonormalize(par, to_f64(u1))?;
        let r = mul(par, a.transpose(), b.as_ref())?;
        // Global greedy assignment by |R_ij|.
        let mut entries: Vec<(f64, u32, u32)> = Vec::new();
        entries
            .try_reserve_exact(d * d)
            .map_err(|_| Error::new(ErrorKind::Allocation, "no memory to match columns"))?;
        for j in 0..d {
            for i in 0..d {
                entries.push((r[(i, j)].abs(), i as u32, j as u32));
            }
        }
        entries.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));
        let mut permutation = vec![usize::MAX; d];
        let mut taken = vec![false; d];
        let mut left = d;
        for &(_, i, j) in &entries {
            let (i, j) = (i as usize, j as usize);
            if permutation[i] == usize::MAX && !taken[j] {
                permutation[i] = j;
                taken[j] = true;
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        let mut signs: Vec<f32> = (0..d)
            .map(|i| {
                if r[(i, permutation[i])] < 0.0 {
                    -1.0
                } else {
                    1.0
                }
            })
            .collect();
        let mut rm = Mat::from_fn(d, d, |i, j| r[(i, permutation[j])] * signs[j] as f64);
        if d > 0 && rm.as_ref().determinant() < 0.0 {
            let worst = (0..d)
                .min_by(|&x, &y| rm[(x, x)].total_cmp(&rm[(y, y)]))
                .unwrap_or(0);
            signs[worst] = -signs[worst];
            rm.col_mut(worst).iter_mut().for_each(|x| *x = -*x);
        }
        let matched_end = Mat::from_fn(d, d, |i, j| u1[(i, permutation[j])] * signs[j]);
        let l = log_orthogonal(par, &rm)?;
        let ltl = mul(par, l.transpose(), l.as_ref())?;
        let (w, w2) = super::refresh::eigh_descending(ltl.as_ref(), par)?;
        let omega = w2.iter().map(|&x| x.max(0.0).sqrt()).collect();
        let lw = mul(
            par,
            mul(par, w.transpose(), l.as_ref())?.as_ref(),
            w.as_ref(),
        )?;
        let u0w = mul(par, a.as_ref(), w.as_ref())?;
        Ok(Self {
            u0w,
            w,
            lw,
            omega,
            matched_end,
            permutation,
            signs,
        })
    }

    /// `d`.
    pub fn dim(&self) -> usize {
        self.w.nrows()
    }

    /// `U1` after column matching and the determinant fix: column `i` is
    /// `signs[i] * U1[:, permutation[i]]`. `at(1.0)` reproduces it.
    pub fn matched_end(&self) -> MatRef<'_, f32> {
        self.matched_end.as_ref()
    }

    /// Column `i` of the matched end is column `permutation()[i]` of `U1` ...
    pub fn permutation(&self) -> &[usize] {
        &self.permutation
    }

    /// ... times `signs()[i]` (+1 or -1).
    pub fn signs(&self) -> &[f32] {
        &self.signs
    }

    /// The rotation angles of `logm(U0^T U1)` (each plane's angle appears twice), descending.
    pub fn angles(&self) -> &[f64] {
        &self.omega
    }

    /// `U(t)`, re-orthonormalised; `t` finite with `|t| <=` [`MAX_INTERPOLATION_T`] (values
    /// outside [0, 1] extrapolate).
    pub fn at(&self, t: f64) -> Result<DenseBasis> {
        self.at_with(Par::Pool, t)
    }

    /// [`Geodesic::at`] with explicit parallelism.
    pub fn at_with(&self, par: Par, t: f64) -> Result<DenseBasis> {
        check_t(t)?;
        let d = self.dim();
        let x = middle(&self.lw, &self.omega, t);
        let y = mul(
            par,
            mul(par, self.u0w.as_ref(), x.as_ref())?.as_ref(),
            self.w.transpose(),
        )?;
        let y = orthonormalize(par, y)?;
        Ok(DenseBasis::new_unchecked(Mat::from_fn(d, d, |i, j| {
            y[(i, j)] as f32
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthonormalize_refuses_what_it_cannot_bring_to_orthonormal() {
        // Near orthogonal: converges. Singular values of 1e6: the iteration diverges, and the
        // result is an error rather than a matrix that is not orthonormal.
        let near = Mat::from_fn(4, 4, |i, j| if i == j { 1.0 + 1e-3 } else { 1e-4 });
        let q = orthonormalize(Par::Seq, near).unwrap();
        let gram = mul(Par::Seq, q.transpose(), q.as_ref()).unwrap();
        for i in 0..4 {
            for j in 0..4 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((gram[(i, j)] - want).abs() < 1e-12);
            }
        }
        let far = Mat::from_fn(4, 4, |i, j| if i == j { 1e6 } else { 0.0 });
        let err = orthonormalize(Par::Seq, far).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    /// `Q B Q^T` with `B` block-diagonal rotations by `angles` (one 2 x 2 block each), padded
    /// with ones.
    fn rotation(d: usize, angles: &[f64], seed: u64) -> (Mat<f64>, Mat<f64>) {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let a = Mat::from_fn(d, d, |_, _| next());
        let sym = Mat::from_fn(d, d, |i, j| a[(i, j)] + a[(j, i)]);
        let (q, _) = super::super::refresh::eigh_descending(sym.as_ref(), Par::Seq).unwrap();
        let mut b = Mat::<f64>::identity(d, d);
        for (k, &th) in angles.iter().enumerate() {
            let (i, j) = (2 * k, 2 * k + 1);
            b[(i, i)] = th.cos();
            b[(j, j)] = th.cos();
            b[(i, j)] = -th.sin();
            b[(j, i)] = th.sin();
        }
        let r = mul(
            Par::Seq,
            mul(Par::Seq, q.as_ref(), b.as_ref()).unwrap().as_ref(),
            q.transpose(),
        )
        .unwrap();
        (r, q)
    }

    #[test]
    fn log_then_exp_reproduces_rotations_near_and_at_pi() {
        let cases: [&[f64]; 5] = [
            &[0.3, 1.2],
            &[PI, 0.5],
            &[PI, PI],
            &[PI - 1e-4, PI - 1e-9, 1e-7],
            &[PI - 1e-3, PI - 2e-3, PI, 2.0],
        ];
        for (c, angles) in cases.iter().enumerate() {
            let d = 2 * angles.len() + 1;
            let (r, _) = rotation(d, angles, 7 + c as u64);
            let l = log_orthogonal(Par::Seq, &r).unwrap();
            for i in 0..d {
                for j in 0..d {
                    assert!((l[(i, j)] + l[(j, i)]).abs() < 1e-12, "skew");
                }
            }
            let ltl = mul(Par::Seq, l.transpose(), l.as_ref()).unwrap();
            let (w, w2) = super::super::refresh::eigh_descending(ltl.as_ref(), Par::Seq).unwrap();
            let omega: Vec<f64> = w2.iter().map(|&x| x.max(0.0).sqrt()).collect();
            let lw = mul(
                Par::Seq,
                mul(Par::Seq, w.transpose(), l.as_ref()).unwrap().as_ref(),
                w.as_ref(),
            )
            .unwrap();
            let e = mul(
                Par::Seq,
                mul(Par::Seq, w.as_ref(), middle(&lw, &omega, 1.0).as_ref())
                    .unwrap()
                    .as_ref(),
                w.transpose(),
            )
            .unwrap();
            let mut worst = 0.0f64;
            for i in 0..d {
                for j in 0..d {
                    worst = worst.max((e[(i, j)] - r[(i, j)]).abs());
                }
            }
            assert!(worst < 1e-6, "case {c}: expm(logm(R)) off by {worst:e}");
            let mut sorted: Vec<f64> = angles.iter().flat_map(|&a| [a, a]).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            for (k, a) in sorted.iter().enumerate() {
                assert!(
                    (omega[k] - a).abs() < 1e-6,
                    "case {c}: angle {} vs {a}",
                    omega[k]
                );
            }
        }
    }
}
