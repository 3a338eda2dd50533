//! `diagprec reproduce`: the Adam vs Gauss-Newton study (Liu, Bansal, Morwani, Vyas,
//! Alvarez-Melis, Kakade, 2025, "Adam or Gauss-Newton? A Comparative Study in Terms of Basis
//! Alignment and SGD Noise"), driven by the crate's kernels.
//!
//! Experiments ([`experiments`]): the Theorem-2 dimension sweep on candidate instances with an
//! exact, fixed eigenbasis ([`problems`]) and the Gaussian negative control; the block quadratic
//! in the identity basis at three budgets; the batch-size sweep with Adam's update compared to
//! GN's along its own trajectory ([`diagnostics`]); Adam and GN variants; sparse parity with a
//! one-hidden-layer network along the identity-to-eigenbasis geodesic ([`parity`]). Every rate
//! is tuned on tuning seeds and reported on separate seeds ([`runner`]); verdicts come from
//! bootstrap intervals ([`stats`]). Outputs: [`output`], [`plot`].

pub mod diagnostics;
pub mod experiments;
pub mod output;
pub mod parity;
pub mod plot;
pub mod problems;
pub mod runner;
pub mod stats;
pub mod tasks;

use experiments::{BatchPoint, Config, ParityPoint, SweepPoint, VariantsResult};
use std::path::PathBuf;
use std::time::Instant;

/// Options of `diagprec reproduce`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReproduceArgs {
    /// A reduced run (dimensions 8, 32, 128; shorter small-batch and parity runs).
    #[arg(long)]
    pub quick: bool,
    /// Output folder (created if missing).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Reporting seeds (default 10; tuning seeds are separate).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Base seed: every instance, batch sequence and bootstrap derives from it.
    #[arg(long, default_value_t = 2025)]
    pub base_seed: u64,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Only these parts (comma separated: theorem2, block, batch, variants, parity; default all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

/// Everything the study computed.
#[derive(Clone, Debug)]
pub struct StudyResults {
    pub config: Config,
    pub sweeps: Vec<SweepPoint>,
    pub variants: Vec<VariantsResult>,
    pub block: Option<VariantsResult>,
    pub batch: Vec<BatchPoint>,
    pub parity: Vec<ParityPoint>,
    pub seconds: f64,
}

/// The parts of the study.
pub const PARTS: [&str; 5] = ["theorem2", "block", "batch", "variants", "parity"];

/// Runs the study (no files written).
pub fn compute(cfg: &Config, parts: &[String], progress: bool) -> StudyResults {
    let started = Instant::now();
    let has = |p: &str| parts.iter().any(|x| x == p);
    let note = |what: &str| {
        if progress {
            eprintln!(
                "reproduce: {what} ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    };
    let mut sweeps = Vec::new();
    if has("theorem2") {
        for (task, dims, steps, tag) in experiments::theorem2_tasks(cfg) {
            note(&format!("theorem-2 sweep, {task}"));
            sweeps.extend(experiments::sweep(cfg, task, &dims, steps, tag));
        }
    }
    let mut variants = Vec::new();
    if has("variants") {
        note("variants");
        variants.push(experiments::variants(
            cfg,
            "logreg-orthogonal",
            cfg.variants_dim,
            cfg.steps_orthogonal,
            1,
        ));
        variants.push(experiments::variants(
            cfg,
            "softmax-zipf",
            cfg.variants_dim,
            cfg.steps_softmax,
            2,
        ));
    }
    let block = has("block").then(|| {
        note("linreg-block");
        experiments::block(cfg)
    });
    let batch = if has("batch") {
        note("batch-size sweep");
        experiments::batch_sweep(cfg)
    } else {
        Vec::new()
    };
    let parity = if has("parity") {
        note("sparse parity");
        experiments::parity(cfg)
    } else {
        Vec::new()
    };
    note("done");
    StudyResults {
        config: cfg.clone(),
        sweeps,
        variants,
        block,
        batch,
        parity,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Entry point of `diagprec reproduce`.
pub fn run(args: &ReproduceArgs) -> Result<(), String> {
    run_inner(args).map_err(|e| e.to_string())
}

fn run_inner(args: &ReproduceArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = if args.quick {
        Config::quick()
    } else {
        Config::default_run()
    };
    cfg.base_seed = args.base_seed;
    if let Some(s) = args.seeds {
        cfg.reporting_seeds = s.max(2);
    }
    let parts: Vec<String> = if args.only.is_empty() {
        PARTS.iter().map(|s| s.to_string()).collect()
    } else {
        for p in &args.only {
            if !PARTS.contains(&p.as_str()) {
                return Err(format!("unknown part {p:?} (one of {})", PARTS.join(", ")).into());
            }
        }
        args.only.clone()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let results = pool.install(|| compute(&cfg, &parts, !args.no_progress));
    std::fs::create_dir_all(&args.out)?;
    output::write_all(&args.out, &results)?;
    plot::write_all(&args.out, &results)?;
    print!("{}", output::summary(&results));
    Ok(())
}
