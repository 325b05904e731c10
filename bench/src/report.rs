//! What a benchmark run found, and its rendering as `docs/benchmarks.md`.
//!
//! Every figure is one [`Row`]: the value of each run, the median reported
//! with min and max, a baseline measured in the same run and the ratio
//! against it, and the target with how far the median is from it.
//! Targets are judged and written down, never asserted: a missed target is a
//! finding, not a failure of the harness.

use crate::machine::Machine;
use crate::stats;
use std::fmt::Write;

/// How a figure's numbers read.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Items per second (readings/s, connections/s ...).
    Rate(&'static str),
    /// Milliseconds.
    Millis,
    /// Seconds.
    Secs,
    /// Bytes, shown in MiB.
    Bytes,
    /// Bytes, shown in KiB.
    KiB,
}

impl Unit {
    /// A value in this unit, human-readable.
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::Rate(what) => format!("{} {what}", thousands(v)),
            Unit::Millis if v < 10.0 => format!("{v:.2} ms"),
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Secs => format!("{v:.2} s"),
            Unit::Bytes => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
            Unit::KiB => format!("{:.1} KiB", v / 1024.0),
        }
    }
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let n = v.round() as i128;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A target from the issue.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The median must reach this value.
    AtLeast(f64),
    /// The median must not exceed this value.
    AtMost(f64),
    /// The median divided by the baseline's median must reach this ratio.
    RatioAtLeast(f64),
}

/// Whether a figure was measured.
#[derive(Debug, Clone)]
pub enum Status {
    /// Measured in every run.
    Measured,
    /// Not measured, and why.
    NotMeasured(String),
    /// Measuring it failed, and how.
    Failed(String),
}

/// One figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// Figure number from the issue, e.g. `2` or `5b`.
    pub id: String,
    /// What is measured.
    pub figure: String,
    /// Its unit.
    pub unit: Unit,
    /// The value of each run.
    pub runs: Vec<f64>,
    /// The baseline's name and median, in the same unit.
    pub baseline: Option<(String, f64)>,
    /// Targets from the issue.
    pub targets: Vec<Target>,
    /// Measured or not.
    pub status: Status,
    /// How it was measured, per-run details, caveats.
    pub notes: Vec<String>,
}

impl Row {
    /// A figure that will be measured.
    pub fn new(id: &str, figure: &str, unit: Unit) -> Self {
        Self {
            id: id.into(),
            figure: figure.into(),
            unit,
            runs: Vec::new(),
            baseline: None,
            targets: Vec::new(),
            status: Status::Measured,
            notes: Vec::new(),
        }
    }

    /// A figure that was not measured, with the reason.
    pub fn not_measured(id: &str, figure: &str, why: &str) -> Self {
        let mut r = Self::new(id, figure, Unit::Secs);
        r.status = Status::NotMeasured(why.into());
        r
    }

    /// Marks the figure failed (keeping the runs that did complete).
    pub fn fail(&mut self, why: impl std::fmt::Display) {
        self.status = Status::Failed(why.to_string());
    }

    /// Median of the runs.
    pub fn median(&self) -> Option<f64> {
        stats::median(&self.runs)
    }

    /// Median divided by the baseline's median.
    pub fn ratio(&self) -> Option<f64> {
        let (_, b) = self.baseline.as_ref()?;
        let m = self.median()?;
        (*b != 0.0).then(|| m / b)
    }

    fn verdict(&self, t: Target) -> String {
        let Some(m) = self.median() else {
            return "not judged (no value)".into();
        };
        let show = |v| self.unit.show(v);
        match t {
            Target::AtLeast(want) if m >= want => format!("≥ {}: **met** ({:.2} × target)", show(want), m / want),
            Target::AtLeast(want) => format!(
                "≥ {}: **missed** by {} ({:.0} % of target; needs {:.1} ×)",
                show(want),
                show(want - m),
                100.0 * m / want,
                want / m.max(f64::MIN_POSITIVE)
            ),
            Target::AtMost(want) if m <= want => format!("≤ {}: **met** ({:.2} × the limit)", show(want), m / want),
            Target::AtMost(want) => format!(
                "≤ {}: **missed** by {} ({:.1} × the limit)",
                show(want),
                show(m - want),
                m / want
            ),
            Target::RatioAtLeast(want) => match self.ratio() {
                None => format!("≥ {want} × baseline: not judged (no baseline)"),
                Some(r) if r >= want => format!("≥ {want} × baseline: **met** ({r:.2} ×)"),
                Some(r) => format!(
                    "≥ {want} × baseline: **missed** ({r:.3} ×, {:.0} % of the required ratio)",
                    100.0 * r / want
                ),
            },
        }
    }
}

/// A whole run's findings.
pub struct Report {
    /// `quick` or `full`.
    pub mode: String,
    /// The command that produced it.
    pub command: String,
    /// Runs per figure.
    pub runs: usize,
    /// Where it ran.
    pub machine: Machine,
    /// Load average and time at the end.
    pub finished: (String, String),
    /// Wall-clock duration of the whole run, seconds.
    pub elapsed_secs: f64,
    /// The figures.
    pub rows: Vec<Row>,
    /// Wall-clock seconds each figure took (set-up included).
    pub timings: Vec<(String, f64)>,
}

/// A ratio, with as many decimals as it needs.
pub fn ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ×")
    } else if x >= 10.0 {
        format!("{x:.1} ×")
    } else {
        format!("{x:.3} ×")
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl Report {
    /// The Markdown document.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "# zonesync benchmarks\n");
        let build = self
            .timings
            .iter()
            .find(|(id, _)| id == "agent build")
            .map_or(0.0, |(_, secs)| *secs);
        let total = if build >= 5.0 {
            format!(
                "{:.0} s in all, {build:.0} s of it rebuilding the agent (gateway profile)",
                self.elapsed_secs
            )
        } else {
            format!("{:.0} s in all", self.elapsed_secs)
        };
        let _ = writeln!(
            s,
            "Written by `{}` ({} mode, {} runs per figure, {total}). Numbers are **reported, not \
             asserted**: nothing here fails a build. Every figure is the median of its runs, with the \
             smallest and largest run beside it, and its ratio against a baseline measured in the same \
             run on the same machine. Everything runs on loopback; every loop in the harness is bounded \
             in count and in time.\n",
            self.command, self.mode, self.runs
        );
        let _ = writeln!(s, "## Machine\n");
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| CPU | {} |", cell(&m.cpu_model));
        let _ = writeln!(s, "| nproc | {} |", m.nproc);
        let _ = writeln!(s, "| memory | {} |", cell(&m.memory));
        let _ = writeln!(s, "| kernel | {} |", cell(&m.kernel));
        let _ = writeln!(s, "| commit | {} |", cell(&m.commit));
        let _ = writeln!(s, "| rustc | {} |", cell(&m.rustc));
        let _ = writeln!(s, "| Mosquitto | {} |", cell(&m.mosquitto));
        let _ = writeln!(s, "| started | {} (load average {}) |", m.started_at, m.loadavg);
        let _ = writeln!(
            s,
            "| finished | {} (load average {}) |",
            self.finished.0, self.finished.1
        );
        let _ = writeln!(
            s,
            "\n**Contention.** This machine has {} cores and was shared: other engineers were compiling \
             the workspace while these figures were taken (see the load averages above). The broker, the \
             publishing and subscribing tools and the code under test all compete for those cores, so \
             absolute figures are pessimistic and vary between runs (min/max); the ratios against \
             baselines taken minutes apart under the same load are the more stable reading.\n",
            m.nproc
        );
        let _ = writeln!(s, "## Figures\n");
        let _ = writeln!(
            s,
            "| # | figure | median | min | max | runs | baseline (median, same run) | ratio | target |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let (median, min, max) = match (&r.status, r.median()) {
                (Status::NotMeasured(why), _) => (format!("not measured: {why}"), String::new(), String::new()),
                (Status::Failed(why), None) => (format!("failed: {why}"), String::new(), String::new()),
                (st, Some(med)) => {
                    let mut m = r.unit.show(med);
                    if let Status::Failed(why) = st {
                        m.push_str(&format!(" (incomplete: {why})"));
                    }
                    (
                        m,
                        stats::min(&r.runs).map(|v| r.unit.show(v)).unwrap_or_default(),
                        stats::max(&r.runs).map(|v| r.unit.show(v)).unwrap_or_default(),
                    )
                }
                (Status::Measured, None) => ("no value".into(), String::new(), String::new()),
            };
            let baseline = r
                .baseline
                .as_ref()
                .map(|(name, v)| format!("{name}: {}", r.unit.show(*v)))
                .unwrap_or_else(|| "–".into());
            let ratio = r.ratio().map(ratio).unwrap_or_else(|| "–".into());
            let targets: Vec<String> = r.targets.iter().map(|t| r.verdict(*t)).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                cell(&r.figure),
                cell(&median),
                cell(&min),
                cell(&max),
                r.runs.len(),
                cell(&baseline),
                ratio,
                cell(&if targets.is_empty() {
                    "–".into()
                } else {
                    targets.join("; ")
                })
            );
        }
        let timings: Vec<String> = self
            .timings
            .iter()
            .map(|(id, secs)| format!("{id}: {secs:.0} s"))
            .collect();
        let _ = writeln!(
            s,
            "\nRatio = median ÷ the baseline's median. Wall-clock time per figure, set-up included, and of the \
             gateway-profile build of the agent that figure 4 measures (a no-op when it is up to date): {}.",
            timings.join(", ")
        );
        let _ = writeln!(s, "\n## How each figure was measured\n");
        for r in &self.rows {
            let _ = writeln!(s, "### {}. {}\n", r.id, r.figure);
            match &r.status {
                Status::NotMeasured(why) => {
                    let _ = writeln!(s, "Not measured: {why}\n");
                }
                Status::Failed(why) => {
                    let _ = writeln!(s, "Measurement failed: {why}\n");
                }
                Status::Measured => {}
            }
            if !r.runs.is_empty() {
                let runs: Vec<String> = r.runs.iter().map(|v| r.unit.show(*v)).collect();
                let _ = writeln!(s, "- runs: {}", runs.join(", "));
            }
            for n in &r.notes {
                let _ = writeln!(s, "- {n}");
            }
            let _ = writeln!(s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_verdicts() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        let mut r = Row::new("2", "ingest", Unit::Rate("readings/s"));
        r.runs = vec![400_000.0, 500_000.0, 450_000.0];
        r.baseline = Some(("broker".into(), 1_000_000.0));
        assert_eq!(r.ratio(), Some(0.45));
        assert!(r
            .verdict(Target::AtLeast(1_000_000.0))
            .contains("**missed** by 550,000 readings/s"));
        assert!(r.verdict(Target::RatioAtLeast(0.4)).contains("met"));
        let mut l = Row::new("5", "p99", Unit::Millis);
        l.runs = vec![7.0];
        assert!(l.verdict(Target::AtMost(5.0)).contains("**missed** by 2.00 ms"));
    }
}
