//! SVG plots (plotters, SVG backend only: text is written as SVG `<text>`, no fonts needed).
//!
//! - `scaling.svg`: log-log, median steps to 1e-4 of the initial loss against the dimension, one
//!   panel per Theorem-2 task, one line per optimizer (unreached points are left out).
//! - `batch.svg`: cos(adam, gn-1/2) and cos(adam, gn-1) against the batch size (log x; the full
//!   batch drawn at 4096), one panel per task.

use super::experiments::SWEEP_OPTS;
use super::runner::{find, Criterion};
use super::stats::median;
use super::StudyResults;
use plotters::prelude::*;
use std::path::Path;

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn colour(k: usize) -> RGBColor {
    [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
    ][k % 5]
}

fn scaling(dir: &Path, res: &StudyResults) -> PlotResult {
    let path = dir.join("scaling.svg");
    let root = SVGBackend::new(&path, (1500, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "full batch, eigenbasis: median steps to 1e-4 of the initial loss",
        ("sans-serif", 20),
    )?;
    let tasks = ["logreg-orthogonal", "softmax-zipf", "logreg-gauss-control"];
    let panels = root.split_evenly((1, 3));
    for (area, task) in panels.iter().zip(tasks) {
        let pts: Vec<_> = res.sweeps.iter().filter(|p| p.task == task).collect();
        let dmax = pts.iter().map(|p| p.dim).max().unwrap_or(16).max(16) as f64;
        let dmin = pts.iter().map(|p| p.dim).min().unwrap_or(8).max(1) as f64;
        let ymax = pts.iter().map(|p| p.budget).max().unwrap_or(1000) as f64 * 2.0;
        let mut chart = ChartBuilder::on(area)
            .caption(task, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (dmin * 0.8..dmax * 1.25).log_scale(),
                (1.0..ymax).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("dimension")
            .y_desc("steps")
            .draw()?;
        for (k, opt) in SWEEP_OPTS.iter().enumerate() {
            let line: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|p| {
                    let m = find(&p.tuned, *opt, Criterion::Target(1))?.median();
                    m.is_finite().then_some((p.dim as f64, m.max(1.0)))
                })
                .collect();
            let c = colour(k);
            chart
                .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?
                .label(opt.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn batch(dir: &Path, res: &StudyResults) -> PlotResult {
    let path = dir.join("batch.svg");
    let root = SVGBackend::new(&path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "along Adam's trajectory: cosine of its update with GN's (full batch at 4096)",
        ("sans-serif", 20),
    )?;
    let tasks = ["linreg-gauss", "linreg-spread"];
    let panels = root.split_evenly((1, 2));
    for (area, task) in panels.iter().zip(tasks) {
        let pts: Vec<_> = res.batch.iter().filter(|p| p.task == task).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{task} ({})", pts.first().map_or("", |p| p.basis)),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((0.8f64..6000.0).log_scale(), -0.1f64..1.05)?;
        chart
            .configure_mesh()
            .x_desc("batch size")
            .y_desc("cosine")
            .draw()?;
        for (k, (name, pick)) in [
            ("cos(adam, gn-1/2)", 0usize),
            ("cos(adam, gn-1)", 1),
            ("noise share", 2),
        ]
        .into_iter()
        .enumerate()
        {
            let line: Vec<(f64, f64)> = pts
                .iter()
                .map(|p| {
                    let v: Vec<f64> = p
                        .traces
                        .iter()
                        .map(|t| match pick {
                            0 => t.cos_half,
                            1 => t.cos_one,
                            _ => t.noise_share,
                        })
                        .collect();
                    (p.batch.map_or(4096.0, |b| b as f64), median(&v))
                })
                .collect();
            let c = colour(k + if k == 0 { 2 } else { 0 });
            chart
                .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Writes the plots of the parts that ran.
pub fn write_all(dir: &Path, res: &StudyResults) -> PlotResult {
    if !res.sweeps.is_empty() {
        scaling(dir, res)?;
    }
    if !res.batch.is_empty() {
        batch(dir, res)?;
    }
    Ok(())
}
