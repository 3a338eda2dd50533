//! The study runner (issue 5). Being written on its own branch.

use std::path::PathBuf;

/// Options of `diagprec reproduce`.
#[derive(clap::Args, Debug)]
pub struct ReproduceArgs {
    /// A short run (under 30 s) for tests.
    #[arg(long)]
    pub quick: bool,
    /// Where to write the CSV files and plots.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
}

pub fn run(_args: &ReproduceArgs) -> Result<(), String> {
    Err("the study runner is not built yet (issue 5)".into())
}
