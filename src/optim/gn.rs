use crate::dispatch::{Isa, Par};
use crate::error::{self, Error, ErrorKind, Result};
use crate::kernels::gn::step::{all_finite, check_gn_step, gn_step_with, GnConfig};

/// A [`GaussNewton`] optimizer's configuration: the step ([`GnConfig`]: power, damping,
/// momentum, Sophia clipping) and how the diagonal `h` is refreshed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussNewtonConfig {
    /// The GN^p step.
    pub step: GnConfig,
    /// EMA decay of `h` in [0, 1): `h <- beta h + (1 - beta) h_batch` (Sophia's `beta2`).
    pub hessian_beta: f64,
    /// Refresh `h` every `k >= 1` steps (Sophia's `k`; 1 = every step).
    pub refresh_interval: u64,
}

impl Default for GaussNewtonConfig {
    /// [`GnConfig::default`], `hessian_beta = 0.99`, `refresh_interval = 10` (Sophia's values).
    fn default() -> Self {
        Self {
            step: GnConfig::default(),
            hessian_beta: 0.99,
            refresh_interval: 10,
        }
    }
}

impl GaussNewtonConfig {
    /// Checks every hyperparameter against its range.
    pub fn validate(&self) -> Result<()> {
        self.step.validate()?;
        error::check_half_open("hessian_beta", self.hessian_beta, 0.0, 1.0)?;
        if self.refresh_interval == 0 {
            return Err(Error::hyperparameter(
                "refresh_interval = 0: h must be refreshed every k >= 1 steps",
            ));
        }
        Ok(())
    }
}

/// A diagonal Gauss-Newton optimizer over a fixed list of tensors: owns `h` (the running GN
/// diagonal, one buffer per tensor), the momentum `m` (when `beta1 > 0`) and the step count.
///
/// Each iteration: if [`needs_refresh`](Self::needs_refresh) (steps `0, k, 2k, ...` taken),
/// call [`refresh`](Self::refresh) with a closure that runs one of the `gn_diag_*` kernels on
/// each tensor's `h` with the `beta` it is given; then [`step`](Self::step). The first refresh
/// replaces `h` (it is passed `beta = 0`), later ones blend with `hessian_beta`, so `h` carries
/// no zero-initialisation bias. Before any refresh `h = 0` and the step is `m_hat / damping^-p`.
///
/// ```
/// use diagprec::{gn_diag_weighted, GaussNewton, GaussNewtonConfig, Samples};
/// let data = vec![1.0_f32, 2.0, 3.0, 4.0];
/// let x = Samples::new(&data, 2, 2).unwrap(); // 2 samples x 2 features
/// let mut opt = GaussNewton::new(GaussNewtonConfig::default(), &[2]).unwrap();
/// assert!(opt.needs_refresh());
/// opt.refresh(|_, h, beta| gn_diag_weighted(x, None, beta, h)).unwrap();
/// assert_eq!(opt.h()[0], vec![5.0, 10.0]);
/// let mut w = vec![0.0_f32; 2];
/// opt.step(&mut [&mut w[..]], &[&[5.0, 10.0][..]]).unwrap();
/// assert!((w[0] + 1.0).abs() < 1e-3 && (w[1] + 1.0).abs() < 1e-3);
/// ```
#[derive(Clone, Debug)]
pub struct GaussNewton {
    config: GaussNewtonConfig,
    steps_taken: u64,
    refreshes: u64,
    h: Vec<Vec<f32>>,
    exp_avg: Vec<Vec<f32>>,
}

impl GaussNewton {
    /// An optimizer for tensors of the given lengths, with `h = 0` and `m = 0`.
    pub fn new(config: GaussNewtonConfig, lengths: &[usize]) -> Result<Self> {
        config.validate()?;
        let zeros = || lengths.iter().map(|&n| vec![0.0; n]).collect::<Vec<_>>();
        Ok(Self {
            config,
            steps_taken: 0,
            refreshes: 0,
            h: zeros(),
            exp_avg: if config.step.beta1 > 0.0 {
                zeros()
            } else {
                Vec::new()
            },
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GaussNewtonConfig {
        &self.config
    }

    /// Steps applied so far (a skipped non-finite step does not count).
    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// Refreshes applied so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes
    }

    /// Whether `h` is due for a refresh before the next step (every `refresh_interval` steps,
    /// starting before the first).
    pub fn needs_refresh(&self) -> bool {
        self.steps_taken
            .is_multiple_of(self.config.refresh_interval)
    }

    /// The running GN diagonals, one per tensor.
    pub fn h(&self) -> &[Vec<f32>] {
        &self.h
    }

    /// The momentum buffers (empty without momentum).
    pub fn exp_avg(&self) -> &[Vec<f32>] {
        &self.exp_avg
    }

    /// The EMA decay the next refresh uses: 0 for the first, `hessian_beta` after.
    pub fn refresh_beta(&self) -> f32 {
        if self.refreshes == 0 {
            0.0
        } else {
            self.config.hessian_beta as f32
        }
    }

    /// Updates every tensor's `h`: calls `update(index, h, beta)` for each tensor, which should
    /// run a `gn_diag_*` kernel (they fuse the EMA with that `beta`). Stops at the first error
    /// (tensors before it keep their update; the refresh count does not advance).
    pub fn refresh(
        &mut self,
        mut update: impl FnMut(usize, &mut [f32], f32) -> Result<()>,
    ) -> Result<()> {
        let beta = self.refresh_beta();
        for (i, h) in self.h.iter_mut().enumerate() {
            update(i, h, beta)?;
        }
        self.refreshes += 1;
        Ok(())
    }

    /// Applies one GN^p step to every tensor. All tensors are checked (and, with
    /// `check_finite`, scanned) before any is written; on error nothing changes.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<()> {
        let n = self.h.len();
        if params.len() != n || grads.len() != n {
            return Err(Error::new(
                ErrorKind::Length,
                format!(
                    "the optimizer holds {n} tensors, got {} params and {} grads",
                    params.len(),
                    grads.len()
                ),
            ));
        }
        let step = self.steps_taken + 1;
        let cfg = &self.config.step;
        let momentum = !self.exp_avg.is_empty();
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            check_gn_step(
                cfg,
                step,
                p.len(),
                g.len(),
                momentum.then(|| self.exp_avg[i].len()),
                self.h[i].len(),
            )
            .map_err(|e| Error::new(e.kind(), format!("tensor {i}: {}", e.message())))?;
        }
        let isa = Isa::detect();
        if cfg.check_finite {
            for (g, h) in grads.iter().zip(&self.h) {
                if !(all_finite(isa, Par::Pool, g)? && all_finite(isa, Par::Pool, h)?) {
                    return Err(Error::new(
                        ErrorKind::NonFinite,
                        "grad or h holds NaN or Inf: step skipped, nothing written",
                    ));
                }
            }
        }
        let unchecked = GnConfig {
            check_finite: false,
            ..*cfg
        };
        let mut moments = self.exp_avg.iter_mut();
        for ((p, g), h) in params.iter_mut().zip(grads).zip(&self.h) {
            let m = if momentum {
                moments.next().map(|m| m.as_mut_slice())
            } else {
                None
            };
            gn_step_with(isa, Par::Pool, &unchecked, step, p, g, m, h)?;
        }
        self.steps_taken = step;
        Ok(())
    }
}
