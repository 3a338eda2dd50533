//! TEMPORARY entry point (the lead's clap CLI replaces it on merge).
mod reproduce;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reproduce the Adam vs Gauss-Newton study.
    Reproduce(reproduce::ReproduceArgs),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Reproduce(args) => reproduce::run(args),
    }
}
