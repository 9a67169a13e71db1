//! The SVG chart of the headline ratios: for each figure, Ringway (default mode) divided by each peer,
//! median of the per-round ratios. Rendered with plotters' SVG backend and its built-in text metrics, so
//! it needs no font on the machine that draws it (text is left to the SVG viewer).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::summary::MetricSummary;
use crate::targets::{HEADLINE, PEERS};

/// Figures shown in the chart, with their short axis labels.
const SHOWN: [(&str, &str); 10] = [
    ("bulk1_gbps", "1 stream"),
    ("bulk8_gbps", "8 streams"),
    ("bulk1_cpu_s_per_gib", "CPU/GiB 1s"),
    ("bulk8_cpu_s_per_gib", "CPU/GiB 8s"),
    ("ka_rps", "keep-alive"),
    ("ka_cpu_us_per_req", "CPU/request"),
    ("close_cps", "conn/s"),
    ("close_cpu_us_per_conn", "CPU/conn"),
    ("c1_p50_us", "c=1 p50"),
    ("idle_kib_per_conn", "idle memory"),
];

const COLORS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// Room above the highest bar, so the legend never covers one.
const LEGEND_HEADROOM: f64 = 1.4;
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 560;

/// The ratio of the headline Ringway target to `peer` for `key`, if measured.
fn ratio(summaries: &[MetricSummary], key: &str, peer: &str) -> Option<f64> {
    summaries
        .iter()
        .find(|m| m.key == key)?
        .ratios
        .get(HEADLINE)?
        .get(peer)?
        .median
}

/// Draws the chart to `path`.
pub fn draw(summaries: &[MetricSummary], title: &str, path: &Path) -> anyhow::Result<()> {
    let mut top: f64 = 1.5;
    for (key, _) in SHOWN {
        for peer in PEERS {
            if let Some(r) = ratio(summaries, key, peer) {
                top = top.max(r * LEGEND_HEADROOM);
            }
        }
    }
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).context("drawing the chart")?;
    let groups = SHOWN.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..groups, 0f64..top)
        .context("drawing the chart")?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(SHOWN.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 && i < SHOWN.len() {
                SHOWN[i].1.to_string()
            } else {
                String::new()
            }
        })
        .y_desc("Ringway ÷ peer (rates: higher is better; CPU, latency, memory: lower is better)")
        .draw()
        .context("drawing the chart")?;
    let bar = 0.8 / PEERS.len() as f64;
    for (p, peer) in PEERS.iter().enumerate() {
        let color = COLORS[p % COLORS.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = SHOWN
            .iter()
            .enumerate()
            .filter_map(|(g, (key, _))| {
                let r = ratio(summaries, key, peer)?;
                let x0 = g as f64 + 0.1 + p as f64 * bar;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + bar * 0.9, r)],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)
            .context("drawing the chart")?
            .label(format!("÷ {peer}"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1.0), (groups, 1.0)],
            BLACK.stroke_width(1),
        ))
        .context("drawing the chart")?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .context("drawing the chart")?;
    root.present().context("writing the chart")?;
    Ok(())
}
