//! CSV files and the plain-text table.
//!
//! - `summary.csv`: `task,basis,batch,optimizer,best_lr,final_loss,steps_to_target`, one row per
//!   cell; `final_loss` is the median over seeds (at the best rate) of the mean excess training
//!   loss over the last 10% of steps; `steps_to_target` is the median first step whose loss is
//!   below `target x` the initial loss (empty when most seeds never got there).
//! - `curves.csv`: `task,basis,batch,optimizer,lr,step,loss_median,loss_min,loss_max`.
//! - `lr_sweep.csv`: `task,basis,batch,optimizer,lr,final_loss` (median over seeds, every rate).
//! - `interpolation.csv`: `task,t,optimizer,best_lr,final_loss` (geodesic sweep, small batch).
//! - `second_moment.csv`: see [`super::diagnostics`].

use super::diagnostics;
use super::runner::{BasisChoice, Batch, Opt};
use super::tasks::TaskKind;
use super::{CellResult, StudyResults};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

pub const SUMMARY_HEADER: &str = "task,basis,batch,optimizer,best_lr,final_loss,steps_to_target";
pub const CURVES_HEADER: &str = "task,basis,batch,optimizer,lr,step,loss_median,loss_min,loss_max";
pub const LR_SWEEP_HEADER: &str = "task,basis,batch,optimizer,lr,final_loss";
pub const INTERPOLATION_HEADER: &str = "task,t,optimizer,best_lr,final_loss";

fn cell_key(r: &CellResult) -> String {
    format!(
        "{},{},{},{}",
        r.cell.task.name(),
        r.cell.basis.name(),
        r.cell.batch.name(),
        r.cell.opt.name()
    )
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(text.as_bytes())?;
    f.flush()
}

/// Writes every CSV file into `dir`.
pub fn write_all(dir: &Path, res: &StudyResults) -> std::io::Result<()> {
    let mut s = String::new();
    writeln!(s, "{SUMMARY_HEADER}").unwrap();
    for r in &res.cells {
        writeln!(
            s,
            "{},{:.4e},{:.6e},{}",
            cell_key(r),
            r.best_lr,
            r.final_loss,
            r.steps_to_target.map_or(String::new(), |v| v.to_string())
        )
        .unwrap();
    }
    write_file(&dir.join("summary.csv"), &s)?;

    let mut s = String::new();
    writeln!(s, "{CURVES_HEADER}").unwrap();
    for r in &res.cells {
        for &(step, med, lo, hi) in &r.curve {
            writeln!(
                s,
                "{},{:.4e},{},{:.6e},{:.6e},{:.6e}",
                cell_key(r),
                r.best_lr,
                step,
                med,
                lo,
                hi
            )
            .unwrap();
        }
    }
    write_file(&dir.join("curves.csv"), &s)?;

    let mut s = String::new();
    writeln!(s, "{LR_SWEEP_HEADER}").unwrap();
    for r in res.cells.iter().chain(res.geodesic.iter().map(|g| &g.1)) {
        for &(lr, loss) in &r.lr_sweep {
            writeln!(s, "{},{:.4e},{:.6e}", cell_key(r), lr, loss).unwrap();
        }
    }
    write_file(&dir.join("lr_sweep.csv"), &s)?;

    let mut s = String::new();
    writeln!(s, "{INTERPOLATION_HEADER}").unwrap();
    for (t, r) in &res.geodesic {
        writeln!(
            s,
            "{},{:.4},{},{:.4e},{:.6e}",
            r.cell.task.name(),
            t,
            r.cell.opt.name(),
            r.best_lr,
            r.final_loss
        )
        .unwrap();
    }
    write_file(&dir.join("interpolation.csv"), &s)?;

    let mut s = String::new();
    writeln!(s, "{}", diagnostics::HEADER).unwrap();
    for row in &res.second_moment {
        writeln!(s, "{}", row.csv()).unwrap();
    }
    write_file(&dir.join("second_moment.csv"), &s)
}

/// The final loss of one cell.
pub fn lookup(
    res: &StudyResults,
    task: TaskKind,
    basis: BasisChoice,
    batch: Batch,
    opt: Opt,
) -> f64 {
    res.cells
        .iter()
        .find(|r| {
            r.cell.task == task
                && r.cell.basis == basis
                && r.cell.batch == batch
                && r.cell.opt == opt
        })
        .map_or(f64::NAN, |r| r.final_loss)
}

/// The claims of the paper as checked on this run: `(claim, holds, numbers)`.
pub fn claims(res: &StudyResults) -> Vec<(String, bool, String)> {
    use BasisChoice::{Eigen, Identity};
    let mut out = Vec::new();
    let l = |t, b, n, o| lookup(res, t, b, n, o);
    let has = |t| res.tasks.contains(&t);
    // 1. Full batch, identity basis, linreg-block: Adam beats both GN variants.
    if has(TaskKind::LinregBlock) {
        let t = TaskKind::LinregBlock;
        let (a, g1, gh) = (
            l(t, Identity, Batch::Full, Opt::Adam),
            l(t, Identity, Batch::Full, Opt::Gn1),
            l(t, Identity, Batch::Full, Opt::GnHalf),
        );
        out.push((
            "full batch, identity basis, linreg-block: adam < gn-1 and adam < gn-1/2".to_string(),
            a < g1 && a < gh,
            format!("adam {a:.3e}, gn-1 {g1:.3e}, gn-1/2 {gh:.3e}"),
        ));
    }
    // 2. Full batch, eigenbasis, linear regression: GN^-1 is best.
    for t in [TaskKind::LinregBlock, TaskKind::LinregGauss] {
        if !has(t) {
            continue;
        }
        let (a, g1, gh) = (
            l(t, Eigen, Batch::Full, Opt::Adam),
            l(t, Eigen, Batch::Full, Opt::Gn1),
            l(t, Eigen, Batch::Full, Opt::GnHalf),
        );
        out.push((
            format!("full batch, eigenbasis, {}: gn-1 best", t.name()),
            g1 < a && g1 < gh,
            format!("adam {a:.3e}, gn-1 {g1:.3e}, gn-1/2 {gh:.3e}"),
        ));
    }
    // 3. Full batch, eigenbasis, logistic regression: Adam beats both (the paper's Figure 1).
    if has(TaskKind::LogregImbalanced) {
        let t = TaskKind::LogregImbalanced;
        let (a, g1, gh) = (
            l(t, Eigen, Batch::Full, Opt::Adam),
            l(t, Eigen, Batch::Full, Opt::Gn1),
            l(t, Eigen, Batch::Full, Opt::GnHalf),
        );
        out.push((
            "full batch, eigenbasis, logreg-imbalanced: adam < gn-1 and adam < gn-1/2".into(),
            a < g1 && a < gh,
            format!("adam {a:.3e}, gn-1 {g1:.3e}, gn-1/2 {gh:.3e}"),
        ));
    }
    // 4. Small batch: Adam is closer to GN^-1/2 than to GN^-1 (log scale).
    for &t in &res.tasks {
        for b in [Identity, Eigen] {
            let (a, g1, gh) = (
                l(t, b, Batch::Small, Opt::Adam),
                l(t, b, Batch::Small, Opt::Gn1),
                l(t, b, Batch::Small, Opt::GnHalf),
            );
            let (dh, d1) = ((a / gh).log10().abs(), (a / g1).log10().abs());
            out.push((
                format!(
                    "small batch, {} basis, {}: |log adam/gn-1/2| < |log adam/gn-1|",
                    b.name(),
                    t.name()
                ),
                dh < d1,
                format!(
                    "{dh:.2} vs {d1:.2} decades (adam {a:.3e}, gn-1 {g1:.3e}, gn-1/2 {gh:.3e})"
                ),
            ));
        }
    }
    out
}

/// The plain-text report printed on stdout.
pub fn table(res: &StudyResults) -> String {
    let mut s = String::new();
    let c = &res.config;
    writeln!(
        s,
        "diagprec reproduce: Adam vs Gauss-Newton (d = {}, N = {}, {} seeds, {} learning rates \
         10^{}..10^{}, {:.1} s)",
        res.params.dim,
        res.params.n_samples,
        c.seeds,
        c.lr_grid().len(),
        c.lr_min_exp,
        c.lr_max_exp,
        res.seconds
    )
    .unwrap();
    writeln!(
        s,
        "final excess training loss (median over seeds, mean of the last 10% of steps) at the \
         best learning rate; * = best in the row, ! = best rate at the grid edge\n"
    )
    .unwrap();
    writeln!(
        s,
        "{:<18} {:<8} {:<5} {:>22} {:>22} {:>22}",
        "task", "basis", "batch", "adam (lr)", "gn-1 (lr)", "gn-1/2 (lr)"
    )
    .unwrap();
    for &task in &res.tasks {
        for basis in [BasisChoice::Identity, BasisChoice::Eigen] {
            for batch in [Batch::Full, Batch::Small] {
                let rows: Vec<&CellResult> = Opt::ALL
                    .iter()
                    .map(|&o| {
                        res.cells
                            .iter()
                            .find(|r| {
                                r.cell.task == task
                                    && r.cell.basis == basis
                                    && r.cell.batch == batch
                                    && r.cell.opt == o
                            })
                            .expect("every cell ran")
                    })
                    .collect();
                let best = rows
                    .iter()
                    .map(|r| r.final_loss)
                    .fold(f64::INFINITY, f64::min);
                let cells: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        format!(
                            "{}{:.2e} ({:.0e}){}",
                            if r.final_loss == best { "*" } else { " " },
                            r.final_loss,
                            r.best_lr,
                            if r.at_grid_edge { "!" } else { " " }
                        )
                    })
                    .collect();
                writeln!(
                    s,
                    "{:<18} {:<8} {:<5} {:>22} {:>22} {:>22}",
                    task.name(),
                    basis.name(),
                    batch.name(),
                    cells[0],
                    cells[1],
                    cells[2]
                )
                .unwrap();
            }
        }
    }
    writeln!(
        s,
        "\ngeodesic sweep identity -> eigenbasis (linreg-gauss, small batch):"
    )
    .unwrap();
    writeln!(
        s,
        "{:>6} {:>12} {:>12} {:>12}",
        "t", "adam", "gn-1", "gn-1/2"
    )
    .unwrap();
    for chunk in res.geodesic.chunks(3) {
        writeln!(
            s,
            "{:>6.2} {:>12.3e} {:>12.3e} {:>12.3e}",
            chunk[0].0, chunk[0].1.final_loss, chunk[1].1.final_loss, chunk[2].1.final_loss
        )
        .unwrap();
    }
    writeln!(s, "\nsecond moment (small-batch Adam, seed 0): v/h spread, corr(v, h), E[(u.g)^2] measured/predicted").unwrap();
    for r in &res.second_moment {
        writeln!(
            s,
            "{:<13} {:<8} step {:>5}: v/h max/min {:>8.2}, corr {:.3}, measured/predicted {:.3} \
             [{:.3}, {:.3}] (MC rel. s.e. <= {:.3}), noise share {:.2}",
            r.task,
            r.basis,
            r.step,
            r.v_over_h_spread,
            r.corr_v_h,
            r.measured_over_predicted_median,
            r.measured_over_predicted_min,
            r.measured_over_predicted_max,
            r.mc_rel_stderr_max,
            r.noise_share
        )
        .unwrap();
    }
    writeln!(s, "\nclaims:").unwrap();
    for (claim, holds, numbers) in claims(res) {
        writeln!(
            s,
            "  [{}] {claim}: {numbers}",
            if holds { "holds" } else { "FAILS" }
        )
        .unwrap();
    }
    s
}
