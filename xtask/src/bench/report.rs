//! Statistics and the summary: the latency tables are rendered here, the
//! other scenarios bring their own sections.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::latency::{
    Case, Sample, BERTH_LIMIT_FLAGS, CPU_PERIOD_US, CPU_QUOTA_US, MEMORY_LIMIT_BYTES, WARM_BURST,
};
use super::system::stdout_lines;
use super::{Regime, Scenario, Section, Settings, Tool};

/// The plot of the latency samples ([`super::plot`]), beside summary.md.
pub(super) const LATENCY_PLOT: &str = "latency.svg";

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Stats {
    pub(super) min: f64,
    pub(super) median: f64,
    pub(super) p95: f64,
    pub(super) max: f64,
}

impl Stats {
    pub(super) fn of(values: &[f64]) -> Option<Stats> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Stats {
            min: *sorted.first()?,
            median: median_of_sorted(&sorted)?,
            p95: nearest_rank(&sorted, 0.95)?,
            max: *sorted.last()?,
        })
    }
}

pub(super) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    median_of_sorted(&sorted)
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The smallest value with at least `fraction` of the values at or below it.
fn nearest_rank(sorted: &[f64], fraction: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// Median over rounds of `case / against` from the same round: both ran
/// within a second or two of each other, so drift in the machine's load
/// cancels out.
fn paired_ratio(samples: &[&Sample], case: Case, against: Case) -> Option<f64> {
    let of = |which: Case| {
        samples
            .iter()
            .filter(move |sample| sample.case == which && sample.ok())
            .map(|sample| (sample.round, sample.millis()))
    };
    median_paired_ratio(of(case), of(against))
}

/// Median over rounds of `values / baseline`, both given as (round, value)
/// of the runs that succeeded; rounds missing on either side are skipped.
pub(super) fn median_paired_ratio(
    values: impl IntoIterator<Item = (usize, f64)>,
    baseline: impl IntoIterator<Item = (usize, f64)>,
) -> Option<f64> {
    let baseline: BTreeMap<usize, f64> = baseline.into_iter().collect();
    let ratios: Vec<f64> = values
        .into_iter()
        .filter_map(|(round, value)| Some(value / baseline.get(&round)?))
        .collect();
    median(&ratios)
}

#[derive(Debug, Default)]
pub(super) struct ProbeTable {
    rows: Vec<(String, String)>,
}

impl ProbeTable {
    pub(super) fn add(&mut self, what: String, result: String) {
        self.rows.push((what, result));
    }
}

/// The summary, assembled while the stage runs.
#[derive(Debug, Default)]
pub(super) struct Report {
    preamble: String,
    pub(super) probes: ProbeTable,
    pub(super) cases: Vec<Case>,
    pub(super) skipped: BTreeMap<Case, String>,
    pub(super) commands: Vec<(Case, String)>,
    /// Every measured latency run.
    pub(super) samples: Vec<Sample>,
    /// Throughput and network, in the order they ran.
    pub(super) scenario_sections: Vec<Section>,
}

impl Report {
    pub(super) fn section(&mut self, text: String) {
        self.preamble.push_str(&text);
    }

    pub(super) fn host_facts(&mut self, settings: &Settings, berth: &Path) {
        let read = |path: &str| {
            fs::read_to_string(path)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or_else(
                || "?".to_owned(),
                |kib| format!("{:.1}", kib / 1024.0 / 1024.0),
            );
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let version = |program: &str| {
            stdout_lines(Command::new(program).arg("--version"))
                .into_iter()
                .next()
                .unwrap_or_else(|| format!("{program}: absent"))
        };
        let loadavg = read("/proc/loadavg");
        let loadavg: Vec<&str> = loadavg.split(' ').take(3).collect();
        let baseline = settings
            .baseline_berth
            .as_ref()
            .map(|path| format!("; berth-baseline {}", path.display()))
            .unwrap_or_default();
        let _ = write!(
            self.preamble,
            "# berth bench\n\n\
             - host: {} {} {}; {cpus} CPUs; {memory_gib} GiB; loadavg at start {}\n\
             - {}; {}; berth {}{baseline}\n\
             - settings: {} measured runs per case and regime, {} warm-up, cold gap {} ms; scenarios {}; regimes {}; throughput {} containers x {} round(s){}\n",
            read("/proc/sys/kernel/ostype"),
            read("/proc/sys/kernel/osrelease"),
            std::env::consts::ARCH,
            loadavg.join(" "),
            version("crun"),
            version("runc"),
            berth.display(),
            settings.runs,
            settings.warmup,
            settings.gap.as_millis(),
            settings.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>().join(","),
            settings.regimes.iter().map(|r| r.name()).collect::<Vec<_>>().join(","),
            settings.count,
            settings.rounds,
            if settings.quick { " (--quick)" } else { "" },
        );
    }

    pub(super) fn render(&self, settings: &Settings) -> String {
        let mut out = self.preamble.clone();
        if !self.probes.rows.is_empty() {
            out.push_str("\n## Probes (one untimed run each)\n\n| probe | result |\n|---|---|\n");
            for (what, result) in &self.probes.rows {
                let _ = writeln!(out, "| {what} | {} |", result.replace('|', "\\|"));
            }
        }
        out.push('\n');
        if !self.cases.is_empty() {
            self.render_latency(settings, &mut out);
        }
        for section in &self.scenario_sections {
            out.push_str(&section.markdown);
        }
        out
    }

    fn render_latency(&self, settings: &Settings, out: &mut String) {
        for &regime in &settings.regimes {
            let of_regime: Vec<&Sample> = self
                .samples
                .iter()
                .filter(|sample| sample.regime == regime)
                .collect();
            let _ = match regime {
                Regime::Cold => writeln!(
                    out,
                    "## Latency, cold/paced (ms): cases interleaved round-robin, order rotated each round; before every run no stray process and {} ms idle\n",
                    settings.gap.as_millis()
                ),
                Regime::Warm => writeln!(
                    out,
                    "## Latency, warm/back-to-back (ms): bursts of {WARM_BURST} back-to-back runs per case, each after {} unmeasured lead-in run(s), bursts rotated round-robin over the cases; paired ratio: run i of a burst vs crun's run i in the same round\n",
                    settings.warmup.max(1)
                ),
            };
            self.render_table(out, &of_regime);
        }
        let _ = write!(
            out,
            "\"+ limits\": berth `{}`; crun/runc with linux.resources memory.limit {MEMORY_LIMIT_BYTES}, cpu quota {CPU_QUOTA_US} period {CPU_PERIOD_US}. Ratios are against crun in the same scenario. Raw samples: samples.tsv; plot of the distributions: [{LATENCY_PLOT}]({LATENCY_PLOT}).\n\nCommands (ID unique per run; crun/runc `run` creates, starts, waits for and deletes; cold: `state ID` checked afterwards, untimed):\n\n",
            BERTH_LIMIT_FLAGS.join(" ")
        );
        for (case, command) in &self.commands {
            let _ = writeln!(out, "    {}: {command}", case.label());
        }
        out.push('\n');
    }

    fn render_table(&self, out: &mut String, samples: &[&Sample]) {
        out.push_str("| case | ok/runs | min | median | p95 | max | median / crun median | median of paired ratios vs crun |\n|---|---|---|---|---|---|---|---|\n");
        let stats_of = |case: Case| {
            let values: Vec<f64> = samples
                .iter()
                .filter(|sample| sample.case == case && sample.ok())
                .map(|sample| sample.millis())
                .collect();
            Stats::of(&values)
        };
        let mut rows: Vec<Case> = self.cases.clone();
        rows.extend(self.skipped.keys().copied());
        rows.sort();
        for case in rows {
            if let Some(reason) = self.skipped.get(&case) {
                let _ = writeln!(out, "| {} | {reason} | | | | | | |", case.label());
                continue;
            }
            let of_case: Vec<&&Sample> = samples
                .iter()
                .filter(|sample| sample.case == case)
                .collect();
            let ok = of_case.iter().filter(|sample| sample.ok()).count();
            let leftovers = of_case.iter().filter(|sample| sample.leftover).count();
            let ok_text = if leftovers > 0 {
                format!("{ok}/{} ({leftovers} left state behind!)", of_case.len())
            } else {
                format!("{ok}/{}", of_case.len())
            };
            let Some(stats) = stats_of(case) else {
                let _ = writeln!(out, "| {} | {ok_text} | | | | | | |", case.label());
                continue;
            };
            let ratio = stats_of(case.baseline()).map_or("-".to_owned(), |crun| {
                format!("{:.2}x", stats.median / crun.median)
            });
            let paired = paired_ratio(samples, case, case.baseline())
                .map_or("-".to_owned(), |ratio| format!("{ratio:.2}x"));
            let _ = writeln!(
                out,
                "| {} | {ok_text} | {:.2} | {:.2} | {:.2} | {:.2} | {ratio} | {paired} |",
                case.label(),
                stats.min,
                stats.median,
                stats.p95,
                stats.max
            );
        }
        // What the limits cost each tool: the cgroup setup berth must not let dominate.
        let mut costs = Vec::new();
        for tool in [Tool::Berth, Tool::BerthBaseline, Tool::Crun, Tool::Runc] {
            let plain = stats_of(Case {
                scenario: Scenario::Plain,
                tool,
            });
            let limits = stats_of(Case {
                scenario: Scenario::Limits,
                tool,
            });
            if let (Some(plain), Some(limits)) = (plain, limits) {
                costs.push(format!(
                    "{} {:+.2} ms ({:.2}x)",
                    tool.name(),
                    limits.median - plain.median,
                    limits.median / plain.median
                ));
            }
        }
        if !costs.is_empty() {
            let _ = writeln!(
                out,
                "\nCost of the limits (median with limits minus median without): {}",
                costs.join(", ")
            );
        }
        // The same berth before and after a change (issue 7: within 10%).
        let mut versus_baseline = Vec::new();
        for scenario in [Scenario::Plain, Scenario::Limits] {
            let berth = Case {
                scenario,
                tool: Tool::Berth,
            };
            let baseline = berth.with_tool(Tool::BerthBaseline);
            if let (Some(now), Some(before)) = (stats_of(berth), stats_of(baseline)) {
                let paired = paired_ratio(samples, berth, baseline)
                    .map_or("-".to_owned(), |ratio| format!("{ratio:.2}x"));
                versus_baseline.push(format!(
                    "{}: {:.2}x (medians {:.2} / {:.2} ms), paired {paired}",
                    berth.label(),
                    now.median / before.median,
                    now.median,
                    before.median
                ));
            }
        }
        if !versus_baseline.is_empty() {
            let _ = writeln!(
                out,
                "\nberth / berth-baseline (target <= 1.10x): {}",
                versus_baseline.join("; ")
            );
        }
        out.push('\n');
    }
}

pub(super) fn write_samples(path: &Path, samples: &[Sample]) -> Result<()> {
    let mut text = String::from("regime\tround\ttool\tscenario\tid\texit_code\tmicros\tleftover\n");
    for sample in samples {
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            sample.regime.name(),
            sample.round,
            sample.case.tool.name(),
            sample.case.scenario.name(),
            sample.id,
            sample.exit_code,
            sample.elapsed.as_micros(),
            u8::from(sample.leftover)
        );
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn median_and_nearest_rank_p95() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let stats = Stats::of(&values).unwrap();
        assert_eq!(stats.min, 1.0);
        assert_eq!(stats.median, 10.5);
        assert_eq!(stats.p95, 19.0);
        assert_eq!(stats.max, 20.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(nearest_rank(&[5.0], 0.95), Some(5.0));
    }

    #[test]
    fn paired_ratio_uses_rounds_where_both_succeeded() {
        let sample = |round, tool, millis: u64, exit_code| Sample {
            regime: Regime::Cold,
            round,
            case: Case {
                scenario: Scenario::Plain,
                tool,
            },
            id: String::new(),
            exit_code,
            elapsed: Duration::from_millis(millis),
            leftover: false,
        };
        let samples = [
            sample(0, Tool::Crun, 10, 0),
            sample(0, Tool::Berth, 20, 0),
            sample(1, Tool::Crun, 20, 0),
            sample(1, Tool::Berth, 20, 0),
            sample(2, Tool::Crun, 10, 1),
            sample(2, Tool::Berth, 90, 0),
        ];
        let refs: Vec<&Sample> = samples.iter().collect();
        let berth = Case {
            scenario: Scenario::Plain,
            tool: Tool::Berth,
        };
        assert_eq!(paired_ratio(&refs, berth, berth.baseline()), Some(1.5));
    }
}
