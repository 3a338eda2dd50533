//! The optimizers, one run of one optimizer on one problem, and the protocol that tunes a
//! learning rate on tuning seeds and reports on separate reporting seeds.
//!
//! **Optimizers** ([`Opt`]) differ only in the diagonal `D` of `w <- w - lr D m_hat`:
//! Adam `1 / (sqrt(v_hat) + 1e-8)` (`beta1`, `beta2` chosen per variant) through
//! `diagprec::adam_step_with`, GN^p `(h + 1e-8)^p` through `diagprec::gn_step_with`, with
//! momentum (`beta1 = 0.9`, bias corrected) or without (`m_hat = g`). `gn-1-frozen` keeps the GN
//! diagonal of the starting point for the whole run. Every problem runs in its own coordinates
//! (for a basis `U`: `w~ = U^T w`, see [`super::problems`]), so `m`, `v` and `h` live there.
//!
//! **Metrics.** Full batch: steps to the relative targets `1e-2, 1e-4, 1e-6` of the initial
//! excess loss (the first step at or below `target x L_0`; unreached is +inf), and the relative
//! excess loss after given budgets. Small batch: the mean relative excess loss over the last 10%
//! of the run.
//!
//! **Protocol** ([`tune_and_report`]): every rate of the grid runs on the tuning seeds; a rate's
//! score under a criterion is its worst value over the tuning seeds (it must work on every tuning
//! instance), and the smallest rate whose score is within 10% of the best wins (when no rate
//! reaches the criterion: the lowest median final loss); the winner then runs on the reporting seeds, which are other
//! instances, and only those numbers are reported. Runs are independent jobs seeded from their
//! instance and run with `Par::Seq` kernels, so results do not depend on the thread count.

use super::problems::Problem;
use super::stats::median;
use super::tasks::mix_seed;
use diagprec::{adam_step_with, gn_step_with, AdamConfig, AdamTensor, GnConfig, Isa, Par};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

/// Relative targets of the full-batch metric.
pub const TARGETS: [f64; 3] = [1e-2, 1e-4, 1e-6];

/// Relative losses below this are at the f32 floor of every problem here (no ordering is read
/// from them).
pub const FLOOR: f64 = 1e-11;

/// One diagonal preconditioner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Opt {
    Adam {
        beta1: f64,
        beta2: f64,
    },
    Gn {
        power: f64,
        momentum: bool,
        frozen: bool,
    },
}

impl Opt {
    pub const ADAM: Opt = Opt::Adam {
        beta1: 0.9,
        beta2: 0.999,
    };
    pub const GN1: Opt = Opt::Gn {
        power: -1.0,
        momentum: true,
        frozen: false,
    };
    pub const GN_HALF: Opt = Opt::Gn {
        power: -0.5,
        momentum: true,
        frozen: false,
    };
    pub const GN1_FROZEN: Opt = Opt::Gn {
        power: -1.0,
        momentum: true,
        frozen: true,
    };
    pub const GN1_NOMOM: Opt = Opt::Gn {
        power: -1.0,
        momentum: false,
        frozen: false,
    };
    pub const MAIN: [Opt; 3] = [Opt::ADAM, Opt::GN1, Opt::GN_HALF];

    /// The variants: Adam with `beta1` in {0.9, 0} x `beta2` in {0.95, 0.99, 0.999}; GN^-1 and
    /// GN^-1/2 with and without momentum.
    pub fn variants() -> Vec<Opt> {
        let mut v = Vec::new();
        for beta1 in [0.9, 0.0] {
            for beta2 in [0.95, 0.99, 0.999] {
                v.push(Opt::Adam { beta1, beta2 });
            }
        }
        for power in [-1.0, -0.5] {
            for momentum in [true, false] {
                v.push(Opt::Gn {
                    power,
                    momentum,
                    frozen: false,
                });
            }
        }
        v
    }

    pub fn name(&self) -> String {
        match *self {
            Opt::Adam {
                beta1: 0.9,
                beta2: 0.999,
            } => "adam".into(),
            Opt::Adam { beta1, beta2 } => format!("adam(b1={beta1},b2={beta2})").replace(',', ";"),
            Opt::Gn {
                power,
                momentum,
                frozen,
            } => {
                let p = if power == -1.0 { "gn-1" } else { "gn-1/2" };
                let m = if momentum { "" } else { "-nomom" };
                let f = if frozen { "-frozen" } else { "" };
                format!("{p}{m}{f}")
            }
        }
    }
}

/// What a run measures and for how long.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub steps: usize,
    /// `None`: full batch.
    pub batch: Option<usize>,
    /// Steps at which the relative excess loss is recorded (full batch: the value there; small
    /// batch: the mean over the last 10% of the steps up to it, sampled every `record_every`).
    pub budgets: Vec<usize>,
    pub record_every: usize,
    /// Full batch: stop once the last target is reached (the budgets' losses then read as that
    /// of the stopping point, an upper bound).
    pub stop_at_last_target: bool,
}

/// One run's measurements.
#[derive(Clone, Debug)]
pub struct RunOut {
    pub steps_to: [f64; 3],
    /// Relative excess loss at each budget (+inf when diverged).
    pub at_budget: Vec<f64>,
    /// `(step, relative excess loss)`.
    pub curve: Vec<(usize, f64)>,
}

/// Runs `opt` at `lr` on `problem` from `w = 0` (`seed`: the batch sequence).
pub fn run(problem: &dyn Problem, opt: Opt, lr: f64, spec: &RunSpec, seed: u64) -> RunOut {
    let d = problem.dim();
    let isa = Isa::detect();
    let mut w = vec![0.0f32; d];
    let mut m = vec![0.0f32; d];
    let mut v = vec![0.0f32; d];
    let mut g = vec![0.0f32; d];
    let mut h = vec![0.0f32; d];
    let mut rng = StdRng::seed_from_u64(mix_seed(&[seed, 0xBA7C]));
    let loss0 = problem.excess(&w).max(1e-300);
    let mut steps_to = [f64::INFINITY; 3];
    let mut curve = vec![(0usize, 1.0)];
    let mut at_budget = vec![f64::NAN; spec.budgets.len()];
    let mut window: Vec<(usize, f64)> = Vec::new();
    let mut diverged = false;
    let mut frozen_done = false;
    let mut last_rel = 1.0;
    let mut stopped_at = spec.steps;
    let record = |t: usize,
                  rel: f64,
                  steps_to: &mut [f64; 3],
                  at_budget: &mut Vec<f64>,
                  curve: &mut Vec<(usize, f64)>,
                  window: &mut Vec<(usize, f64)>| {
        for (k, &target) in TARGETS.iter().enumerate() {
            if steps_to[k].is_infinite() && rel <= target {
                steps_to[k] = t as f64;
            }
        }
        curve.push((t, rel));
        window.push((t, rel));
        for (b, &budget) in spec.budgets.iter().enumerate() {
            if t == budget {
                at_budget[b] = if spec.batch.is_none() {
                    rel
                } else {
                    let start = budget - budget / 10;
                    let tail: Vec<f64> = window
                        .iter()
                        .filter(|(s, _)| *s >= start)
                        .map(|p| p.1)
                        .collect();
                    tail.iter().sum::<f64>() / tail.len() as f64
                };
            }
        }
    };
    for t in 1..=spec.steps {
        let full_loss = problem.gradient(&w, spec.batch, &mut rng, &mut g);
        // Full batch: the gradient pass also gives the loss at w_{t-1}.
        if spec.batch.is_none() && t > 1 {
            let rel = full_loss / loss0;
            if !rel.is_finite() || rel > 1e3 {
                diverged = true;
                break;
            }
            last_rel = rel;
            record(
                t - 1,
                rel,
                &mut steps_to,
                &mut at_budget,
                &mut curve,
                &mut window,
            );
            if spec.stop_at_last_target && steps_to[2].is_finite() {
                stopped_at = t - 1;
                break;
            }
        }
        let step = t as u64;
        let ok = match opt {
            Opt::Adam { beta1, beta2 } => {
                let cfg = AdamConfig {
                    lr,
                    beta1,
                    beta2,
                    eps: 1e-8,
                    ..AdamConfig::default()
                };
                adam_step_with(
                    isa,
                    Par::Seq,
                    &cfg,
                    step,
                    AdamTensor {
                        param: &mut w,
                        grad: &g,
                        exp_avg: &mut m,
                        exp_avg_sq: &mut v,
                        max_exp_avg_sq: None,
                    },
                )
            }
            Opt::Gn {
                power,
                momentum,
                frozen,
            } => {
                let due = (t - 1) % problem.gn_every() == 0;
                if !frozen_done || (due && !frozen) {
                    problem.gn_diag(&w, &mut h);
                    frozen_done = true;
                }
                let cfg = GnConfig {
                    lr,
                    power,
                    damping: 1e-8,
                    beta1: 0.9,
                    bias_correction: true,
                    ..GnConfig::default()
                };
                gn_step_with(
                    isa,
                    Par::Seq,
                    &cfg,
                    step,
                    &mut w,
                    &g,
                    if momentum { Some(&mut m) } else { None },
                    &h,
                )
            }
        };
        ok.expect("optimizer step");
        if w.iter().any(|x| !x.is_finite()) {
            diverged = true;
            break;
        }
        if spec.batch.is_some() && (t % spec.record_every == 0 || t == spec.steps) {
            let rel = problem.excess(&w) / loss0;
            if !rel.is_finite() || rel > 1e3 {
                diverged = true;
                break;
            }
            last_rel = rel;
            record(
                t,
                rel,
                &mut steps_to,
                &mut at_budget,
                &mut curve,
                &mut window,
            );
        }
    }
    if spec.batch.is_none() && !diverged && stopped_at == spec.steps {
        let rel = problem.excess(&w) / loss0;
        if rel.is_finite() && rel <= 1e3 {
            last_rel = rel;
            record(
                spec.steps,
                rel,
                &mut steps_to,
                &mut at_budget,
                &mut curve,
                &mut window,
            );
        } else {
            diverged = true;
        }
    }
    if diverged {
        steps_to = [f64::INFINITY; 3];
        at_budget.iter_mut().for_each(|x| *x = f64::INFINITY);
    } else {
        // Budgets after an early stop read as the loss at the stop.
        for x in at_budget.iter_mut() {
            if x.is_nan() {
                *x = last_rel;
            }
        }
    }
    RunOut {
        steps_to,
        at_budget,
        curve,
    }
}

/// A log grid with `per_decade` rates per decade from `10^lo` to `10^hi`.
pub fn log_grid(lo: f64, hi: f64, per_decade: usize) -> Vec<f64> {
    let k0 = (lo * per_decade as f64).round() as i64;
    let k1 = (hi * per_decade as f64).round() as i64;
    (k0..=k1)
        .map(|k| 10f64.powf(k as f64 / per_decade as f64))
        .collect()
}

/// What is tuned: a target's steps, or the loss after a budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Criterion {
    Target(usize),
    Budget(usize),
}

impl Criterion {
    fn value(self, r: &RunOut) -> f64 {
        match self {
            Criterion::Target(k) => r.steps_to[k],
            Criterion::Budget(b) => r.at_budget[b],
        }
    }
}

/// The tuned result of one optimizer under one criterion.
#[derive(Clone, Debug)]
pub struct Tuned {
    pub opt: Opt,
    pub criterion: Criterion,
    pub lr: f64,
    /// The best rate is the smallest or largest of the grid.
    pub at_edge: bool,
    /// One value per reporting seed (steps, +inf when unreached; or the relative loss).
    pub values: Vec<f64>,
}

impl Tuned {
    /// The median over reporting seeds (+inf when at least half are +inf).
    pub fn median(&self) -> f64 {
        median(&self.values)
    }
}

/// Tunes every optimizer for every criterion on `tuning` and reports on `reporting`.
/// `grids[o]` is optimizer `o`'s rate grid.
pub fn tune_and_report(
    tuning: &[&dyn Problem],
    reporting: &[&dyn Problem],
    opts: &[Opt],
    grids: &[Vec<f64>],
    spec: &RunSpec,
    criteria: &[Criterion],
    seed_tag: u64,
) -> Vec<Tuned> {
    let jobs: Vec<(usize, usize, usize)> = opts
        .iter()
        .enumerate()
        .flat_map(|(o, _)| {
            (0..grids[o].len()).flat_map(move |l| (0..tuning.len()).map(move |s| (o, l, s)))
        })
        .collect();
    let tuned_runs: Vec<RunOut> = jobs
        .par_iter()
        .map(|&(o, l, s)| {
            let mut r = run(
                tuning[s],
                opts[o],
                grids[o][l],
                spec,
                mix_seed(&[seed_tag, 0x7E, s as u64]),
            );
            r.curve = Vec::new();
            r
        })
        .collect();
    let at = |o: usize, l: usize| -> &[RunOut] {
        let before: usize = (0..o).map(|k| grids[k].len() * tuning.len()).sum();
        let start = before + l * tuning.len();
        &tuned_runs[start..start + tuning.len()]
    };
    // Final-loss tie-break: the last budget, or the last target's steps.
    let final_of = |r: &RunOut| -> f64 {
        r.at_budget
            .last()
            .copied()
            .unwrap_or_else(|| r.curve.last().map_or(f64::INFINITY, |p| p.1))
    };
    let mut choices: Vec<(usize, Criterion, usize)> = Vec::new();
    for (o, _) in opts.iter().enumerate() {
        for &c in criteria {
            let score = |l: usize| -> (f64, f64) {
                let runs = at(o, l);
                // The worst tuning seed: a rate must work on every tuning instance.
                let worst = runs
                    .iter()
                    .map(|r| c.value(r))
                    .fold(f64::NEG_INFINITY, f64::max);
                let fin: Vec<f64> = runs.iter().map(final_of).collect();
                (worst, median(&fin))
            };
            // The best worst-case score, then the smallest rate within 10% of it (a rate on
            // the edge of divergence on the tuning seeds is not chosen over a safer one that is
            // nearly as fast).
            let scores: Vec<(f64, f64)> = (0..grids[o].len()).map(score).collect();
            let top = scores.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
            let best = if top.is_finite() {
                (0..grids[o].len())
                    .find(|&l| scores[l].0 <= 1.1 * top + 1e-12)
                    .unwrap_or(0)
            } else {
                (0..grids[o].len())
                    .min_by(|&a, &b| scores[a].1.total_cmp(&scores[b].1).then(a.cmp(&b)))
                    .unwrap_or(0)
            };
            choices.push((o, c, best));
        }
    }
    let mut distinct: Vec<(usize, usize)> = choices.iter().map(|&(o, _, l)| (o, l)).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let rjobs: Vec<(usize, usize, usize)> = distinct
        .iter()
        .flat_map(|&(o, l)| (0..reporting.len()).map(move |s| (o, l, s)))
        .collect();
    let reported: Vec<RunOut> = rjobs
        .par_iter()
        .map(|&(o, l, s)| {
            run(
                reporting[s],
                opts[o],
                grids[o][l],
                spec,
                mix_seed(&[seed_tag, 0x4E, s as u64]),
            )
        })
        .collect();
    choices
        .into_iter()
        .map(|(o, c, l)| {
            let k = distinct.iter().position(|&x| x == (o, l)).unwrap();
            let runs = &reported[k * reporting.len()..(k + 1) * reporting.len()];
            Tuned {
                opt: opts[o],
                criterion: c,
                lr: grids[o][l],
                at_edge: l == 0 || l + 1 == grids[o].len(),
                values: runs.iter().map(|r| c.value(r)).collect(),
            }
        })
        .collect()
}

/// The entry of `results` for `opt` and `criterion`.
pub fn find(results: &[Tuned], opt: Opt, criterion: Criterion) -> Option<&Tuned> {
    results
        .iter()
        .find(|t| t.opt == opt && t.criterion == criterion)
}
