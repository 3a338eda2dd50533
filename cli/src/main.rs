//! The `diagprec` command line.
//!
//! * `diagprec bench`: the throughput report, each kernel's rate beside the machine's own limit
//!   (bandwidth or GEMM rate) measured in the same run, as a ratio.
//! * `diagprec reproduce`: the Adam-vs-Gauss-Newton study, driven by the crate's kernels.

mod bench;
mod reproduce;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "SIMD kernels for diagonal preconditioners: benchmarks and the study"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; the study's options are the large variant
enum Command {
    /// Throughput report: each kernel's rate beside the machine's measured limit, as a ratio.
    Bench(bench::BenchArgs),
    /// Reproduce the Adam vs Gauss-Newton study (basis x batch noise) with the crate's kernels.
    Reproduce(reproduce::ReproduceArgs),
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Bench(args) => bench::run(&args),
        Command::Reproduce(args) => reproduce::run(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("diagprec: {message}");
            ExitCode::FAILURE
        }
    }
}
