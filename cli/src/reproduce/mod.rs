//! `diagprec reproduce`: the Adam vs Gauss-Newton study (Liu, Bansal, Morwani, Vyas,
//! Alvarez-Melis, Kakade, 2025, "Adam or Gauss-Newton? A Comparative Study in Terms of Basis
//! Alignment and SGD Noise"), driven by the crate's kernels.
//!
//! Four quadrants (basis: identity / GN eigenbasis x noise: full batch / small batch) for Adam,
//! GN^-1 and GN^-1/2 on three seeded tasks ([`tasks`]); every cell's learning rate is tuned on a
//! log grid, over several seeds, and the median is reported ([`runner`]). Then a geodesic sweep
//! from the identity to the eigenbasis, and the second-moment diagnostic ([`diagnostics`]).
//! Outputs: see [`output`] and [`plot`].

pub mod diagnostics;
pub mod output;
pub mod plot;
pub mod runner;
pub mod tasks;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use runner::{
    median, run_one, BasisChoice, Batch, Cell, Instance, Opt, RunResult, Snapshot, StudyConfig,
};
use std::path::PathBuf;
use std::time::Instant;
use tasks::{Task, TaskKind, TaskParams};

/// Options of `diagprec reproduce`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReproduceArgs {
    /// A reduced run (fewer seeds, steps and learning rates) that finishes in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Output folder (created if missing).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Seeds per cell (default 5, quick 3).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Base seed: every task, batch sequence and Monte Carlo draw derives from it.
    #[arg(long, default_value_t = 2025)]
    pub base_seed: u64,
    /// Problem dimension d.
    #[arg(long)]
    pub dim: Option<usize>,
    /// Training samples N.
    #[arg(long)]
    pub samples: Option<usize>,
    /// Steps of the full-batch linreg-gauss runs (small batch: --steps-small).
    #[arg(long)]
    pub steps_full: Option<usize>,
    /// Steps of the full-batch linreg-block runs.
    #[arg(long)]
    pub steps_block: Option<usize>,
    /// Steps of the small-batch linear-regression runs.
    #[arg(long)]
    pub steps_small: Option<usize>,
    /// Small batch size for linear regression.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Only these tasks (comma separated; default: all three).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// linreg-block: block correlations, cycled over the blocks.
    #[arg(long, value_delimiter = ',')]
    pub rhos: Vec<f64>,
    /// linreg-block: block size.
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Label noise standard deviation of the linear tasks.
    #[arg(long)]
    pub noise: Option<f64>,
    /// linreg-gauss: spectrum exponent alpha (lambda_i = i^-alpha).
    #[arg(long)]
    pub gauss_alpha: Option<f64>,
    /// linreg-gauss: draw w* ~ N(0, I) instead of Sigma^{-1/2} N(0, I).
    #[arg(long)]
    pub gauss_isotropic_target: bool,
    /// logreg-imbalanced: exponent of the feature variances.
    #[arg(long)]
    pub logreg_alpha: Option<f64>,
    /// logreg-imbalanced: standard deviation of the true logits x.w*.
    #[arg(long)]
    pub logreg_margin: Option<f64>,
    /// logreg-imbalanced: separable labels y = 1[x.w* > 0].
    #[arg(long)]
    pub logreg_separable: bool,
    /// Steps of the full-batch logistic runs (small batch: 4x).
    #[arg(long)]
    pub steps_logreg: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// The tuned result of one cell.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub cell: Cell,
    pub best_lr: f64,
    /// The best learning rate is the smallest or largest of the grid.
    pub at_grid_edge: bool,
    /// Median over seeds of the final loss at the best learning rate.
    pub final_loss: f64,
    /// Median over seeds (`None` when at least half the seeds never reached the target).
    pub steps_to_target: Option<usize>,
    /// `(step, median, min, max)` over seeds at the best learning rate.
    pub curve: Vec<(usize, f64, f64, f64)>,
    /// Median final loss for every learning rate of the grid.
    pub lr_sweep: Vec<(f64, f64)>,
}

/// Everything the study computed.
#[derive(Clone, Debug)]
pub struct StudyResults {
    pub config: StudyConfig,
    pub params: TaskParams,
    pub tasks: Vec<TaskKind>,
    pub cells: Vec<CellResult>,
    pub geodesic: Vec<(f64, CellResult)>,
    pub second_moment: Vec<diagnostics::SecondMomentRow>,
    pub seconds: f64,
}

fn main_cells(tasks: &[TaskKind]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &task in tasks {
        for basis in [BasisChoice::Identity, BasisChoice::Eigen] {
            for batch in [Batch::Full, Batch::Small] {
                for opt in Opt::ALL {
                    cells.push(Cell {
                        task,
                        basis,
                        batch,
                        opt,
                    });
                }
            }
        }
    }
    cells
}

fn geodesic_cells(points: usize) -> Vec<Cell> {
    (0..points)
        .flat_map(|k| {
            Opt::ALL.into_iter().map(move |opt| Cell {
                task: TaskKind::LinregGauss,
                basis: BasisChoice::Geodesic(k),
                batch: Batch::Small,
                opt,
            })
        })
        .collect()
}

fn summarise(cell: Cell, grid: &[f64], runs: &[Vec<RunResult>]) -> CellResult {
    // runs[lr][seed]
    let lr_sweep: Vec<(f64, f64)> = grid
        .iter()
        .zip(runs)
        .map(|(&lr, seeds)| {
            let finals: Vec<f64> = seeds.iter().map(|r| r.final_loss).collect();
            (lr, median(&finals))
        })
        .collect();
    // Lowest median final loss; ties go to the smaller learning rate.
    let best = lr_sweep
        .iter()
        .enumerate()
        .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1).then(a.0.cmp(&b.0)))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let seeds = &runs[best];
    let mut steps: Vec<usize> = seeds.iter().filter_map(|r| r.steps_to_target).collect();
    steps.sort_unstable();
    let steps_to_target = if 2 * steps.len() > seeds.len() {
        // The median, counting never-reached as +inf (so it is the middle of the sorted list
        // with the missing seeds at the top).
        let mut all: Vec<f64> = seeds
            .iter()
            .map(|r| r.steps_to_target.map_or(f64::INFINITY, |s| s as f64))
            .collect();
        all.sort_by(|a, b| a.total_cmp(b));
        let m = median(&all);
        m.is_finite().then_some(m.round() as usize)
    } else {
        None
    };
    let longest = seeds.iter().map(|r| r.curve.len()).max().unwrap_or(0);
    let reference = seeds
        .iter()
        .find(|r| r.curve.len() == longest)
        .map(|r| r.curve.clone())
        .unwrap_or_default();
    let curve = reference
        .iter()
        .enumerate()
        .map(|(k, &(step, _))| {
            let vals: Vec<f64> = seeds
                .iter()
                .map(|r| r.curve.get(k).map_or(f64::INFINITY, |p| p.1))
                .collect();
            let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            (step, median(&vals), lo, hi)
        })
        .collect();
    CellResult {
        cell,
        best_lr: grid[best],
        at_grid_edge: best == 0 || best + 1 == grid.len(),
        final_loss: lr_sweep[best].1,
        steps_to_target,
        curve,
        lr_sweep,
    }
}

/// Runs the whole study (no files written).
pub fn compute(
    cfg: &StudyConfig,
    params: &TaskParams,
    tasks: &[TaskKind],
    progress: bool,
) -> StudyResults {
    let started = Instant::now();
    let grid = cfg.lr_grid();
    let instances: Vec<Instance> = tasks
        .iter()
        .flat_map(|&k| (0..cfg.seeds).map(move |s| (k, s)))
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(kind, s)| {
            let task = Task::generate(kind, params, cfg.base_seed, s as u64);
            Instance::new(task, s, cfg.geodesic_points)
        })
        .collect();
    let instance = |kind: TaskKind, seed: usize| -> &Instance {
        let k = tasks.iter().position(|&x| x == kind).unwrap();
        &instances[k * cfg.seeds + seed]
    };

    let mut cells = main_cells(tasks);
    let n_main = cells.len();
    if tasks.contains(&TaskKind::LinregGauss) {
        cells.extend(geodesic_cells(cfg.geodesic_points));
    }
    let jobs: Vec<(usize, usize, usize)> = (0..cells.len())
        .flat_map(|c| (0..grid.len()).flat_map(move |l| (0..cfg.seeds).map(move |s| (c, l, s))))
        .collect();
    let bar = if progress {
        let bar =
            ProgressBar::with_draw_target(Some(jobs.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} runs ({eta} left)")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_prefix("reproduce");
        bar
    } else {
        ProgressBar::hidden()
    };
    let results: Vec<RunResult> = jobs
        .par_iter()
        .map(|&(c, l, s)| {
            let cell = cells[c];
            let r = run_one(
                cfg,
                instance(cell.task, s),
                cell,
                grid[l],
                &[],
                &mut Vec::new(),
            );
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();

    let per_cell = grid.len() * cfg.seeds;
    let tuned: Vec<CellResult> = cells
        .iter()
        .enumerate()
        .map(|(c, &cell)| {
            let chunk = &results[c * per_cell..(c + 1) * per_cell];
            let runs: Vec<Vec<RunResult>> = chunk.chunks(cfg.seeds).map(|x| x.to_vec()).collect();
            summarise(cell, &grid, &runs)
        })
        .collect();
    let (main, geo) = tuned.split_at(n_main);
    let geodesic = geo
        .iter()
        .map(|r| {
            let BasisChoice::Geodesic(k) = r.cell.basis else {
                unreachable!()
            };
            (k as f64 / (cfg.geodesic_points - 1) as f64, r.clone())
        })
        .collect();

    // Second-moment diagnostic: small-batch Adam at its tuned rate, seed 0, linear tasks.
    let mut diag_jobs = Vec::new();
    for kind in [TaskKind::LinregBlock, TaskKind::LinregGauss] {
        if !tasks.contains(&kind) {
            continue;
        }
        for (basis, name) in [
            (BasisChoice::Identity, "identity"),
            (BasisChoice::Eigen, "eigen"),
        ] {
            let cell = Cell {
                task: kind,
                basis,
                batch: Batch::Small,
                opt: Opt::Adam,
            };
            let lr = main.iter().find(|r| r.cell == cell).unwrap().best_lr;
            let steps = cfg.steps(kind, Batch::Small);
            let checkpoints = [steps / 10, steps / 4, steps / 2, steps];
            let mut snaps: Vec<Snapshot> = Vec::new();
            run_one(cfg, instance(kind, 0), cell, lr, &checkpoints, &mut snaps);
            for snap in snaps {
                diag_jobs.push((kind, basis, name, snap));
            }
        }
    }
    let second_moment = diag_jobs
        .par_iter()
        .map(|(kind, basis, name, snap)| {
            diagnostics::evaluate(
                instance(*kind, 0),
                *basis,
                name,
                cfg.batch_size_for(*kind),
                cfg.mc_batches,
                cfg.base_seed,
                snap,
            )
        })
        .collect();

    StudyResults {
        config: cfg.clone(),
        params: params.clone(),
        tasks: tasks.to_vec(),
        cells: main.to_vec(),
        geodesic,
        second_moment,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Entry point of `diagprec reproduce`.
pub fn run(args: &ReproduceArgs) -> Result<(), String> {
    run_inner(args).map_err(|e| e.to_string())
}

fn run_inner(args: &ReproduceArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = if args.quick {
        StudyConfig::quick()
    } else {
        StudyConfig::default_run()
    };
    cfg.base_seed = args.base_seed;
    if let Some(s) = args.seeds {
        cfg.seeds = s.max(1);
    }
    if let Some(s) = args.steps_full {
        cfg.steps_full = s.max(10);
    }
    if let Some(s) = args.steps_block {
        cfg.steps_block_full = s.max(10);
    }
    if let Some(s) = args.steps_small {
        cfg.steps_small = s.max(10);
    }
    if let Some(b) = args.batch_size {
        cfg.batch_size = b.max(1);
    }
    if let Some(s) = args.steps_logreg {
        cfg.steps_logreg_full = s.max(10);
    }
    let mut params = TaskParams::default();
    if !args.rhos.is_empty() {
        params.block_rhos = args.rhos.clone();
    }
    if let Some(b) = args.block_size {
        params.block_size = b.max(1);
    }
    if let Some(v) = args.noise {
        params.noise_std = v;
    }
    if let Some(v) = args.gauss_alpha {
        params.gauss_alpha = v;
    }
    if args.gauss_isotropic_target {
        params.gauss_whitened_target = false;
    }
    if let Some(v) = args.logreg_alpha {
        params.logreg_alpha = v;
    }
    if args.logreg_separable {
        params.logreg_separable = true;
    }
    if let Some(v) = args.logreg_margin {
        params.logreg_margin = v;
    }
    let tasks: Vec<TaskKind> = if args.tasks.is_empty() {
        TaskKind::ALL.to_vec()
    } else {
        let mut out = Vec::new();
        for name in &args.tasks {
            let kind = TaskKind::ALL
                .into_iter()
                .find(|k| k.name() == name.as_str())
                .ok_or_else(|| {
                    format!("unknown task {name:?} (linreg-block, linreg-gauss, logreg-imbalanced)")
                })?;
            out.push(kind);
        }
        out
    };
    if let Some(d) = args.dim {
        params.dim = d.max(2);
    }
    if let Some(n) = args.samples {
        params.n_samples = n.max(params.dim * 4);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let results = pool.install(|| compute(&cfg, &params, &tasks, !args.no_progress));
    std::fs::create_dir_all(&args.out)?;
    output::write_all(&args.out, &results)?;
    plot::write_all(&args.out, &results)?;
    print!("{}", output::table(&results));
    Ok(())
}
