//! `--plot out.svg`: the latency percentile distribution (HdrHistogram style:
//! percentile on a log scale of 1/(1-p), latency in ms).

use super::LoadReport;
use anyhow::{anyhow, Context};
use plotters::prelude::*;
use std::path::Path;

/// The percentile at position `x` of the axis: 0 → 0 %, 1 → 90 %, 2 → 99 %, 3 → 99.9 %.
fn quantile_at(x: f64) -> f64 {
    1.0 - 10f64.powf(-x)
}

fn percent_label(x: &f64) -> String {
    let p = 100.0 * quantile_at(*x);
    let decimals = if *x > 2.0 { (x.ceil() as usize).saturating_sub(2) } else { 0 };
    format!("{p:.decimals$}%")
}

/// The curve's points: (axis position, latency ms).
pub fn curve(report: &LoadReport) -> Vec<(f64, f64)> {
    let h = &report.histogram;
    if h.is_empty() {
        return Vec::new();
    }
    // Up to the percentile that still has a sample behind it, at most 99.9999 %.
    let xmax = (h.len() as f64).log10().clamp(1.0, 6.0);
    let steps = 300;
    (0..=steps)
        .map(|i| {
            let x = xmax * i as f64 / steps as f64;
            (x, h.value_at_quantile(quantile_at(x)) as f64 / 1000.0)
        })
        .collect()
}

pub fn write_svg(report: &LoadReport, path: &Path) -> anyhow::Result<()> {
    let points = curve(report);
    anyhow::ensure!(!points.is_empty(), "--plot: no latencies were recorded, nothing to plot");
    draw(report, &points, path)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("writing the plot {}", path.display()))
}

fn draw(report: &LoadReport, points: &[(f64, f64)], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let xmax = points.last().map(|p| p.0).unwrap_or(1.0);
    let ymax = (report.latency_ms.max.max(points.iter().map(|p| p.1).fold(0.0, f64::max)) * 1.1).max(0.01);
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mode = match report.rate {
        Some(r) => format!("open loop {r} req/s, latency from due time"),
        None => format!("closed loop, {} connections", report.connections),
    };
    let title = format!("seckill load: {} requests, {:.0} req/s, {mode}", report.requests, report.throughput_rps);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_labels((xmax.ceil() as usize) + 1)
        .x_label_formatter(&percent_label)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), BLUE.stroke_width(2)))?
        .label("latency")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let l = &report.latency_ms;
    let marks = [(quantile_x(0.5), l.p50, "p50"), (1.0, l.p90, "p90"), (2.0, l.p99, "p99"), (3.0, l.p99_9, "p99.9")];
    for (x, y, name) in marks.into_iter().filter(|(x, _, _)| *x <= xmax) {
        chart.draw_series(std::iter::once(Circle::new((x, y), 4, RED.filled())))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{name} {y:.2} ms"),
            (x + xmax * 0.01, y - ymax * 0.015),
            ("sans-serif", 14),
        )))?;
    }
    root.present()?;
    Ok(())
}

fn quantile_x(q: f64) -> f64 {
    -(1.0 - q).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_positions_map_to_percentiles() {
        assert_eq!(percent_label(&0.0), "0%");
        assert_eq!(percent_label(&1.0), "90%");
        assert_eq!(percent_label(&2.0), "99%");
        assert_eq!(percent_label(&3.0), "99.9%");
        assert_eq!(percent_label(&4.0), "99.99%");
        assert!((quantile_x(0.99) - 2.0).abs() < 1e-9);
    }
}
