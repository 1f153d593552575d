//! latency.svg: the latency distributions of the `plain` and `limits`
//! scenarios at a glance, one panel per regime (cold/paced, warm), one box
//! plot per case (berth, crun, runc, each also "+ limits": quartile box,
//! median line, whiskers to the fastest and slowest run) with every
//! successful run drawn over it as a dot.
//!
//! Drawn with plotters' SVG backend alone (no default features): no font
//! or bitmap backends and so no system libraries (freetype, fontconfig) to
//! build against; an SVG viewer lays out the text itself, plotters only
//! estimates its size for the layout.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::latency::{Case, Sample};
use super::{Regime, Tool};

const PANEL_WIDTH: u32 = 560;
const HEIGHT: u32 = 420;

fn color_of(tool: Tool) -> RGBColor {
    match tool {
        Tool::Berth => RGBColor(0xd6, 0x27, 0x28),
        Tool::BerthBaseline => RGBColor(0xff, 0x7f, 0x0e),
        Tool::Crun => RGBColor(0x1f, 0x77, 0xb4),
        Tool::Runc => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

/// The SVG text of the plot; None when there are no successful samples.
pub(super) fn latency_svg(samples: &[Sample]) -> Result<Option<String>> {
    // regime -> case -> milliseconds of the runs that exited 0
    let mut panels: BTreeMap<Regime, BTreeMap<Case, Vec<f32>>> = BTreeMap::new();
    for sample in samples.iter().filter(|sample| sample.ok()) {
        panels
            .entry(sample.regime)
            .or_default()
            .entry(sample.case)
            .or_default()
            .push(sample.millis() as f32);
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let mut svg = String::new();
    {
        let width = PANEL_WIDTH * panels.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (width, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).context("drawing the plot")?;
        let areas = root.split_evenly((1, panels.len()));
        for (area, (regime, cases)) in areas.iter().zip(&panels) {
            draw_panel(area, *regime, cases)?;
        }
        root.present().context("drawing the plot")?;
    }
    Ok(Some(svg))
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    regime: Regime,
    cases: &BTreeMap<Case, Vec<f32>>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let labels: Vec<String> = cases.keys().map(|case| case.label()).collect();
    let top = cases
        .values()
        .flatten()
        .copied()
        .fold(0.0f32, f32::max)
        .max(1.0)
        * 1.1;
    let title = match regime {
        Regime::Cold => "cold/paced: start to exit, ms",
        Regime::Warm => "warm/back-to-back: start to exit, ms",
    };
    // Each case gets three segments of the x axis: its box spans the
    // middle one, its whiskers and dots sit at that segment's centre, and
    // only that centre is labelled.
    let slots = cases.len() * 3;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d((0..slots).into_segmented(), 0f32..top)
        .map_err(|err| anyhow::anyhow!("drawing the plot: {err}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(slots)
        .x_label_formatter(&|value| match value {
            SegmentValue::CenterOf(slot) if slot % 3 == 1 => {
                labels.get(slot / 3).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .y_desc("ms")
        .draw()
        .map_err(|err| anyhow::anyhow!("drawing the plot: {err}"))?;
    for (index, (case, values)) in cases.iter().enumerate() {
        let color = color_of(case.tool);
        let slot = index * 3 + 1;
        let centre = SegmentValue::CenterOf(slot);
        let [min, q1, median, q3, max] = five_numbers(values);
        // Box from the lower to the upper quartile, a line at the median,
        // whiskers to the smallest and largest run (plotters' own Boxplot
        // draws them to the 1.5 IQR fences even where no run is, even
        // below zero).
        let (left, right) = (SegmentValue::Exact(slot), SegmentValue::Exact(slot + 1));
        let lines = [
            vec![(centre.clone(), min), (centre.clone(), q1)],
            vec![(centre.clone(), q3), (centre.clone(), max)],
            vec![(left.clone(), median), (right.clone(), median)],
        ];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(left, q1), (right, q3)],
                color.mix(0.15).filled(),
            )))
            .map_err(|err| anyhow::anyhow!("drawing the plot: {err}"))?;
        chart
            .draw_series(
                lines
                    .into_iter()
                    .map(|line| PathElement::new(line, color.stroke_width(2))),
            )
            .map_err(|err| anyhow::anyhow!("drawing the plot: {err}"))?;
        chart
            .draw_series(
                values
                    .iter()
                    .map(|value| Circle::new((centre.clone(), *value), 2, color.mix(0.5).filled())),
            )
            .map_err(|err| anyhow::anyhow!("drawing the plot: {err}"))?;
    }
    Ok(())
}

/// min, lower quartile, median, upper quartile, max (quartiles
/// interpolated linearly between the sorted values); `values` not empty.
fn five_numbers(values: &[f32]) -> [f32; 5] {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let at = |fraction: f32| {
        let position = fraction * (sorted.len() - 1) as f32;
        let below = position.floor() as usize;
        let above = position.ceil() as usize;
        sorted[below] + (sorted[above] - sorted[below]) * (position - below as f32)
    };
    [at(0.0), at(0.25), at(0.5), at(0.75), at(1.0)]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::Scenario;

    fn sample(regime: Regime, scenario: Scenario, tool: Tool, millis: u64) -> Sample {
        Sample {
            regime,
            round: 0,
            case: Case { scenario, tool },
            id: String::new(),
            exit_code: 0,
            elapsed: Duration::from_millis(millis),
            leftover: false,
        }
    }

    /// Well-formed XML as far as tags go: every element opened is closed,
    /// in order.
    fn tags_balance(svg: &str) -> bool {
        let mut open: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let Some(end) = rest[start..].find('>') else {
                return false;
            };
            let tag = &rest[start + 1..start + end];
            rest = &rest[start + end + 1..];
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            let name = tag.trim_start_matches('/').split_whitespace().next();
            let Some(name) = name else { return false };
            if tag.starts_with('/') {
                if open.pop().as_deref() != Some(name) {
                    return false;
                }
            } else {
                open.push(name.to_owned());
            }
        }
        open.is_empty()
    }

    /// The trimmed contents of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|rest| {
                let body = &rest[rest.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn every_case_of_every_regime_is_drawn() {
        let mut samples = Vec::new();
        for regime in [Regime::Cold, Regime::Warm] {
            for scenario in [Scenario::Plain, Scenario::Limits] {
                for (tool, base) in [(Tool::Berth, 20), (Tool::Crun, 25), (Tool::Runc, 40)] {
                    for i in 0..7 {
                        samples.push(sample(regime, scenario, tool, base + i * 3));
                    }
                }
            }
        }
        let svg = latency_svg(&samples).unwrap().unwrap();
        assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(tags_balance(&svg));
        let texts = texts(&svg);
        for label in [
            "berth",
            "crun",
            "runc",
            "berth + limits",
            "crun + limits",
            "runc + limits",
        ] {
            // An x label in each of the two panels.
            let count = texts.iter().filter(|text| *text == label).count();
            assert_eq!(count, 2, "label {label} in {texts:?}");
        }
        assert!(texts.iter().any(|text| text.starts_with("cold/paced")));
        assert!(texts
            .iter()
            .any(|text| text.starts_with("warm/back-to-back")));
        // One dot per sample.
        assert_eq!(svg.matches("<circle").count(), samples.len());
        assert!(!tags_balance("<svg><g></svg>"));
    }

    #[test]
    fn five_numbers_interpolate() {
        assert_eq!(
            five_numbers(&[4.0, 1.0, 3.0, 2.0, 5.0]),
            [1.0, 2.0, 3.0, 4.0, 5.0]
        );
        assert_eq!(five_numbers(&[2.0, 1.0]), [1.0, 1.25, 1.5, 1.75, 2.0]);
        assert_eq!(five_numbers(&[7.0]), [7.0; 5]);
    }

    #[test]
    fn no_successful_run_no_plot() {
        let mut failed = sample(Regime::Cold, Scenario::Plain, Tool::Berth, 5);
        failed.exit_code = 1;
        assert!(latency_svg(&[failed]).unwrap().is_none());
    }
}
