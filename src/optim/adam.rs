use crate::error::{Error, ErrorKind, Result};
use crate::kernels::adam::{adam_step_multi, AdamConfig, AdamTensor};

/// Adam/AdamW over a fixed list of parameter tensors, owning `m`, `v` (and `vmax` with amsgrad).
///
/// ```
/// use diagprec::{Adam, AdamConfig};
/// let mut params = vec![vec![1.0_f32; 5], vec![-2.0_f32; 3]];
/// let mut opt = Adam::new(AdamConfig::adamw(1e-2), &[5, 3]).unwrap();
/// let grads = vec![vec![0.5_f32; 5], vec![-0.25_f32; 3]];
/// let mut views: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
/// let grad_views: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
/// opt.step(&mut views, &grad_views).unwrap();
/// assert_eq!(opt.steps_taken(), 1);
/// assert!(params[0][0] < 1.0 && params[1][0] > -2.0);
/// ```
#[derive(Clone, Debug)]
pub struct Adam {
    config: AdamConfig,
    steps_taken: u64,
    exp_avg: Vec<Vec<f32>>,
    exp_avg_sq: Vec<Vec<f32>>,
    max_exp_avg_sq: Vec<Vec<f32>>,
}

impl Adam {
    /// An optimizer for tensors of the given lengths, with zeroed state.
    pub fn new(config: AdamConfig, lengths: &[usize]) -> Result<Self> {
        config.validate()?;
        let zeros = || lengths.iter().map(|&n| vec![0.0; n]).collect::<Vec<_>>();
        Ok(Self {
            config,
            steps_taken: 0,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            max_exp_avg_sq: if config.amsgrad { zeros() } else { Vec::new() },
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Steps applied so far (a skipped non-finite step does not count).
    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// First moments, one buffer per tensor.
    pub fn exp_avg(&self) -> &[Vec<f32>] {
        &self.exp_avg
    }

    /// Second moments, one buffer per tensor.
    pub fn exp_avg_sq(&self) -> &[Vec<f32>] {
        &self.exp_avg_sq
    }

    /// Applies one step to every tensor. On error nothing changes, the step count included.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<()> {
        let n = self.exp_avg.len();
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
        let mut vmax = self
            .max_exp_avg_sq
            .iter_mut()
            .map(Some)
            .chain(std::iter::repeat_with(|| None));
        let mut tensors: Vec<AdamTensor<'_>> = params
            .iter_mut()
            .zip(grads)
            .zip(self.exp_avg.iter_mut().zip(self.exp_avg_sq.iter_mut()))
            .map(|((param, grad), (m, v))| AdamTensor {
                param,
                grad,
                exp_avg: m,
                exp_avg_sq: v,
                max_exp_avg_sq: vmax.next().flatten().map(|x| x.as_mut_slice()),
            })
            .collect();
        adam_step_multi(&self.config, self.steps_taken + 1, &mut tensors)?;
        self.steps_taken += 1;
        Ok(())
    }
}
