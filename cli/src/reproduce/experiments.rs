//! The experiments: the Theorem-2 dimension sweep (with the Gaussian negative control), the
//! block quadratic at three budgets, the batch-size sweep, and the optimizer variants.

use super::diagnostics::{trace_adam, Trace};
use super::parity::Parity;
use super::problems::{
    LinregBlock, LogregGaussControl, LogregOrthogonal, Problem, SampledLinreg, SoftmaxZipf,
};
use super::runner::{log_grid, tune_and_report, Criterion, Opt, RunSpec, Tuned};
use super::tasks::{mix_seed, TaskKind, TaskParams};
use rayon::prelude::*;

/// The study's size (default and `--quick`).
#[derive(Clone, Debug)]
pub struct Config {
    pub base_seed: u64,
    pub reporting_seeds: usize,
    pub tuning_seeds: usize,
    pub dims: Vec<usize>,
    pub control_dims: Vec<usize>,
    /// The dimension of the variants runs on the Theorem-2 candidates.
    pub variants_dim: usize,
    pub per_decade: usize,
    pub steps_orthogonal: usize,
    pub steps_softmax: usize,
    pub steps_control: usize,
    pub block_budget: usize,
    pub batch_steps: usize,
    pub batch_sizes: Vec<Option<usize>>,
    pub parity: super::parity::ParityConfig,
}

impl Config {
    pub fn default_run() -> Self {
        Self {
            base_seed: 2025,
            reporting_seeds: 10,
            tuning_seeds: 3,
            dims: vec![8, 16, 32, 64, 128, 256, 512, 1024],
            control_dims: vec![8, 16, 32, 64],
            variants_dim: 64,
            per_decade: 5,
            steps_orthogonal: 1000,
            steps_softmax: 600,
            steps_control: 300,
            block_budget: 100,
            batch_steps: 1000,
            batch_sizes: vec![Some(1), Some(2), Some(8), Some(32), Some(128), None],
            parity: super::parity::ParityConfig::default_run(),
        }
    }

    pub fn quick() -> Self {
        Self {
            dims: vec![8, 32, 128],
            control_dims: vec![8, 32],
            variants_dim: 32,
            batch_steps: 400,
            parity: super::parity::ParityConfig::quick(),
            ..Self::default_run()
        }
    }

    /// The full learning-rate grid, 1e-5 .. 1e1.
    pub fn full_grid(&self) -> Vec<f64> {
        log_grid(-5.0, 1.0, self.per_decade)
    }

    fn seeds(&self, tag: u64) -> (Vec<u64>, Vec<u64>) {
        let rep = (0..self.reporting_seeds as u64)
            .map(|s| mix_seed(&[self.base_seed, tag, s]))
            .collect();
        let tun = (0..self.tuning_seeds as u64)
            .map(|s| mix_seed(&[self.base_seed, tag, 1000 + s]))
            .collect();
        (tun, rep)
    }
}

pub const TARGET_CRITERIA: [Criterion; 3] = [
    Criterion::Target(0),
    Criterion::Target(1),
    Criterion::Target(2),
];

/// One dimension of the Theorem-2 sweep.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    pub task: &'static str,
    pub dim: usize,
    pub budget: usize,
    pub tuned: Vec<Tuned>,
}

fn make(task: &str, d: usize, seed: u64) -> Box<dyn Problem> {
    match task {
        "logreg-orthogonal" => Box::new(LogregOrthogonal::new(d, seed)),
        "softmax-zipf" => Box::new(SoftmaxZipf::new(d, seed)),
        _ => Box::new(LogregGaussControl::new(d, seed)),
    }
}

fn instances(task: &str, d: usize, seeds: &[u64]) -> Vec<Box<dyn Problem>> {
    seeds.par_iter().map(|&s| make(task, d, s)).collect()
}

fn refs(v: &[Box<dyn Problem>]) -> Vec<&dyn Problem> {
    v.iter().map(|b| b.as_ref()).collect()
}

/// The Theorem-2 tasks and their budgets.
pub fn theorem2_tasks(cfg: &Config) -> Vec<(&'static str, Vec<usize>, usize, u64)> {
    vec![
        (
            "logreg-orthogonal",
            cfg.dims.clone(),
            cfg.steps_orthogonal,
            1,
        ),
        ("softmax-zipf", cfg.dims.clone(), cfg.steps_softmax, 2),
        (
            "logreg-gauss-control",
            cfg.control_dims.clone(),
            cfg.steps_control,
            3,
        ),
    ]
}

/// The optimizers of the sweep.
pub const SWEEP_OPTS: [Opt; 5] = [
    Opt::ADAM,
    Opt::GN1,
    Opt::GN1_NOMOM,
    Opt::GN_HALF,
    Opt::GN1_FROZEN,
];

/// The dimension sweep of one task: the full grid at the first dimension, then a refinement
/// window of +-3 grid points (+-0.6 decade) around the previous dimension's best rates (every
/// target's).
pub fn sweep(
    cfg: &Config,
    task: &'static str,
    dims: &[usize],
    steps: usize,
    tag: u64,
) -> Vec<SweepPoint> {
    let full = cfg.full_grid();
    let mut grids: Vec<Vec<f64>> = vec![full.clone(); SWEEP_OPTS.len()];
    let mut out = Vec::new();
    let spec = RunSpec {
        steps,
        batch: None,
        budgets: vec![],
        record_every: 1,
        stop_at_last_target: true,
    };
    for &d in dims {
        let (tun, rep) = cfg.seeds(mix_seed(&[tag, d as u64]));
        let ti = instances(task, d, &tun);
        let ri = instances(task, d, &rep);
        let tuned = tune_and_report(
            &refs(&ti),
            &refs(&ri),
            &SWEEP_OPTS,
            &grids,
            &spec,
            &TARGET_CRITERIA,
            mix_seed(&[cfg.base_seed, tag, d as u64]),
        );
        for (o, &opt) in SWEEP_OPTS.iter().enumerate() {
            let idx: Vec<usize> = tuned
                .iter()
                .filter(|t| t.opt == opt)
                .map(|t| full.iter().position(|&x| x == t.lr).unwrap_or(0))
                .collect();
            let lo = idx.iter().min().copied().unwrap_or(0).saturating_sub(3);
            let hi = (idx.iter().max().copied().unwrap_or(0) + 3).min(full.len() - 1);
            grids[o] = full[lo..=hi].to_vec();
        }
        out.push(SweepPoint {
            task,
            dim: d,
            budget: steps,
            tuned,
        });
    }
    out
}

/// Variants (Adam's betas, GN with and without momentum) on one instance family.
#[derive(Clone, Debug)]
pub struct VariantsResult {
    pub task: &'static str,
    pub dim: usize,
    pub tuned: Vec<Tuned>,
}

pub fn variants(
    cfg: &Config,
    task: &'static str,
    d: usize,
    steps: usize,
    tag: u64,
) -> VariantsResult {
    let (tun, rep) = cfg.seeds(mix_seed(&[tag, 0x7A, d as u64]));
    let ti = instances(task, d, &tun);
    let ri = instances(task, d, &rep);
    let opts = Opt::variants();
    let grids = vec![cfg.full_grid(); opts.len()];
    let spec = RunSpec {
        steps,
        batch: None,
        budgets: vec![],
        record_every: 1,
        stop_at_last_target: true,
    };
    let tuned = tune_and_report(
        &refs(&ti),
        &refs(&ri),
        &opts,
        &grids,
        &spec,
        &TARGET_CRITERIA,
        mix_seed(&[cfg.base_seed, tag, 0x7A]),
    );
    VariantsResult {
        task,
        dim: d,
        tuned,
    }
}

/// The block quadratic (identity basis, full batch) at 0.5x, 1x and 2x the budget, with every
/// variant.
pub fn block(cfg: &Config) -> VariantsResult {
    let (tun, rep) = cfg.seeds(0xB10C);
    let ti: Vec<Box<dyn Problem>> = tun
        .iter()
        .map(|&s| Box::new(LinregBlock::new(s)) as Box<dyn Problem>)
        .collect();
    let ri: Vec<Box<dyn Problem>> = rep
        .iter()
        .map(|&s| Box::new(LinregBlock::new(s)) as Box<dyn Problem>)
        .collect();
    let b = cfg.block_budget;
    let opts = Opt::variants();
    let grids = vec![cfg.full_grid(); opts.len()];
    let spec = RunSpec {
        steps: 2 * b,
        batch: None,
        budgets: vec![b / 2, b, 2 * b],
        record_every: 1,
        stop_at_last_target: false,
    };
    let criteria = vec![
        Criterion::Budget(0),
        Criterion::Budget(1),
        Criterion::Budget(2),
        Criterion::Target(0),
        Criterion::Target(1),
        Criterion::Target(2),
    ];
    let tuned = tune_and_report(
        &refs(&ti),
        &refs(&ri),
        &opts,
        &grids,
        &spec,
        &criteria,
        mix_seed(&[cfg.base_seed, 0xB10C]),
    );
    VariantsResult {
        task: "linreg-block",
        dim: 64,
        tuned,
    }
}

/// One batch size of the batch-size sweep.
#[derive(Clone, Debug)]
pub struct BatchPoint {
    pub task: &'static str,
    pub basis: &'static str,
    /// `None`: full batch.
    pub batch: Option<usize>,
    pub tuned: Vec<Tuned>,
    /// Along each reporting seed's Adam run at its tuned rate.
    pub traces: Vec<Trace>,
}

/// The batch-size sweep on `linreg-gauss` (eigenbasis) and `linreg-spread` (identity basis).
pub fn batch_sweep(cfg: &Config) -> Vec<BatchPoint> {
    let params = TaskParams::default();
    let mut out = Vec::new();
    for (kind, eigen, basis, tag) in [
        (TaskKind::LinregGauss, true, "eigen", 0xB1u64),
        (TaskKind::LinregSpread, false, "identity", 0xB2u64),
    ] {
        let (tun, rep) = cfg.seeds(tag);
        let ti: Vec<SampledLinreg> = tun
            .par_iter()
            .map(|&s| SampledLinreg::new(kind, &params, s, eigen))
            .collect();
        let ri: Vec<SampledLinreg> = rep
            .par_iter()
            .map(|&s| SampledLinreg::new(kind, &params, s, eigen))
            .collect();
        let tr: Vec<&dyn Problem> = ti.iter().map(|p| p as &dyn Problem).collect();
        let rr: Vec<&dyn Problem> = ri.iter().map(|p| p as &dyn Problem).collect();
        for &batch in &cfg.batch_sizes {
            let steps = cfg.batch_steps;
            let spec = RunSpec {
                steps,
                batch,
                budgets: vec![steps],
                record_every: if batch.is_some() { 10 } else { 1 },
                stop_at_last_target: false,
            };
            let grids = vec![cfg.full_grid(); Opt::MAIN.len()];
            let seed_tag = mix_seed(&[cfg.base_seed, tag, batch.unwrap_or(0) as u64]);
            let tuned = tune_and_report(
                &tr,
                &rr,
                &Opt::MAIN,
                &grids,
                &spec,
                &[Criterion::Budget(0)],
                seed_tag,
            );
            let adam_lr = tuned
                .iter()
                .find(|t| t.opt == Opt::ADAM)
                .map_or(1e-3, |t| t.lr);
            let traces: Vec<Trace> = ri
                .par_iter()
                .enumerate()
                .map(|(s, p)| {
                    trace_adam(
                        p,
                        adam_lr,
                        steps,
                        batch,
                        mix_seed(&[seed_tag, 0x4E, s as u64]),
                    )
                })
                .collect();
            out.push(BatchPoint {
                task: kind.name(),
                basis,
                batch,
                tuned,
                traces,
            });
        }
    }
    out
}

/// One point of the parity geodesic sweep.
#[derive(Clone, Debug)]
pub struct ParityPoint {
    pub t: f64,
    pub tuned: Vec<Tuned>,
}

/// Sparse parity along the geodesic from the identity (t = 0) to the per-layer eigenbasis.
pub fn parity(cfg: &Config) -> Vec<ParityPoint> {
    let pc = &cfg.parity;
    let (tun, rep) = cfg.seeds(0x9A);
    let spec = RunSpec {
        steps: pc.steps,
        batch: Some(pc.batch),
        budgets: vec![pc.steps],
        record_every: 10,
        stop_at_last_target: false,
    };
    (0..pc.points)
        .map(|k| {
            let t = k as f64 / (pc.points - 1).max(1) as f64;
            let ti: Vec<Parity> = tun.par_iter().map(|&s| Parity::new(pc, s, t)).collect();
            let ri: Vec<Parity> = rep.par_iter().map(|&s| Parity::new(pc, s, t)).collect();
            let tr: Vec<&dyn Problem> = ti.iter().map(|p| p as &dyn Problem).collect();
            let rr: Vec<&dyn Problem> = ri.iter().map(|p| p as &dyn Problem).collect();
            let grids = vec![log_grid(-3.0, 0.6, cfg.per_decade); Opt::MAIN.len()];
            let tuned = tune_and_report(
                &tr,
                &rr,
                &Opt::MAIN,
                &grids,
                &spec,
                &[Criterion::Budget(0), Criterion::Target(0)],
                mix_seed(&[cfg.base_seed, 0x9A, k as u64]),
            );
            ParityPoint { t, tuned }
        })
        .collect()
}
