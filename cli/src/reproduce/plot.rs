//! SVG plots (plotters, SVG backend only: text is written as SVG `<text>`, no fonts needed).
//!
//! - `curves-<task>.svg`: 2 x 2 panels (rows: identity / eigen basis; columns: full / small
//!   batch), median excess loss over seeds against steps at each optimizer's best rate, log scale.
//! - `interpolation.svg`: final loss against the geodesic parameter `t` (identity -> eigenbasis).

use super::runner::{BasisChoice, Batch, Opt};
use super::tasks::TaskKind;
use super::StudyResults;
use plotters::prelude::*;
use std::path::Path;

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn colour(opt: Opt) -> RGBColor {
    match opt {
        Opt::Adam => RGBColor(31, 119, 180),
        Opt::Gn1 => RGBColor(214, 39, 40),
        Opt::GnHalf => RGBColor(44, 160, 44),
    }
}

/// Positive finite values clamped into a plottable log range.
fn y_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (1e-12, 1.0);
    }
    let lo = lo.max(hi * 1e-16);
    (lo / 2.0, hi * 2.0)
}

fn clamp(v: f64, lo: f64) -> f64 {
    if v.is_finite() && v > lo {
        v
    } else {
        lo
    }
}

fn curves(dir: &Path, res: &StudyResults, task: TaskKind) -> PlotResult {
    let path = dir.join(format!("curves-{}.svg", task.name()));
    let root = SVGBackend::new(&path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "{}: excess training loss (median over seeds, best lr)",
            task.name()
        ),
        ("sans-serif", 22),
    )?;
    let panels = root.split_evenly((2, 2));
    let layout = [
        (BasisChoice::Identity, Batch::Full),
        (BasisChoice::Identity, Batch::Small),
        (BasisChoice::Eigen, Batch::Full),
        (BasisChoice::Eigen, Batch::Small),
    ];
    for (area, (basis, batch)) in panels.iter().zip(layout) {
        let cells: Vec<_> = res
            .cells
            .iter()
            .filter(|r| r.cell.task == task && r.cell.basis == basis && r.cell.batch == batch)
            .collect();
        let (lo, hi) = y_range(cells.iter().flat_map(|r| r.curve.iter().map(|p| p.1)));
        let steps = cells
            .iter()
            .flat_map(|r| r.curve.last().map(|p| p.0))
            .max()
            .unwrap_or(1)
            .max(1);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} basis, {} batch", basis.name(), batch.name()),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..steps as f64, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("excess loss")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()?;
        for r in cells {
            let c = colour(r.cell.opt);
            chart
                .draw_series(LineSeries::new(
                    r.curve.iter().map(|p| (p.0 as f64, clamp(p.1, lo))),
                    c.stroke_width(2),
                ))?
                .label(format!("{} (lr {:.0e})", r.cell.opt.name(), r.best_lr))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn interpolation(dir: &Path, res: &StudyResults) -> PlotResult {
    let path = dir.join("interpolation.svg");
    let root = SVGBackend::new(&path, (800, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = y_range(res.geodesic.iter().map(|g| g.1.final_loss));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "linreg-gauss, small batch: final loss along the geodesic identity (t=0) -> eigenbasis (t=1)",
            ("sans-serif", 16),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..1f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("t")
        .y_desc("final excess loss")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    for opt in Opt::ALL {
        let c = colour(opt);
        let pts: Vec<(f64, f64)> = res
            .geodesic
            .iter()
            .filter(|g| g.1.cell.opt == opt)
            .map(|g| (g.0, clamp(g.1.final_loss, lo)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(opt.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes every plot into `dir`.
pub fn write_all(dir: &Path, res: &StudyResults) -> PlotResult {
    for &task in &res.tasks {
        curves(dir, res, task)?;
    }
    if res.geodesic.is_empty() {
        return Ok(());
    }
    interpolation(dir, res)
}
