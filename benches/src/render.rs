//! The comparison report: every row of the targets table with the seed's
//! figure, our goal, the median and p99 measured, the ratio to each, and
//! whether the figure is from this run, stale (an earlier run, with its
//! commit, machine and age) or not measured at all.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use thiserror::Error;

use crate::report::{Better, Metric};
use crate::targets::Goal;

/// Why a report cannot be written.
#[derive(Debug, Error, PartialEq)]
pub enum ReportError {
    #[error(
        "{bench} / {metric}: recorded, but it has no target: add its row to \
         benches/src/targets.rs"
    )]
    NoTarget { bench: String, metric: String },
    #[error("{bench} / {metric}: recorded in {got}, but its target is in {want}")]
    Unit {
        bench: String,
        metric: String,
        got: String,
        want: String,
    },
    #[error("no figures to report: run the benches first (./dev.sh bench)")]
    Empty,
}

/// Where a row's figure comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Freshness<'a> {
    /// Measured in the run reported.
    Current(&'a Metric),
    /// Only an earlier run measured it.
    Stale(&'a Metric),
    NotMeasured,
}

/// The figure for `goal`: the newest of the current run, else the newest of
/// any earlier run.
pub fn figure<'a>(goal: &Goal, metrics: &'a [Metric], run: Option<&str>) -> Freshness<'a> {
    let newest = |current: bool| {
        metrics
            .iter()
            .filter(|m| m.bench == goal.bench && m.metric == goal.metric)
            .filter(|m| m.is_current(run) == current)
            .max_by_key(|m| m.stamp.at_unix)
    };
    match (newest(true), newest(false)) {
        (Some(m), _) => Freshness::Current(m),
        (None, Some(m)) => Freshness::Stale(m),
        (None, None) => Freshness::NotMeasured,
    }
}

/// Every recorded figure must have a row, in the row's unit.
pub fn check(metrics: &[Metric], targets: &[Goal]) -> Result<(), ReportError> {
    for m in metrics {
        let goal = crate::targets::find(targets, &m.bench, &m.metric).ok_or_else(|| {
            ReportError::NoTarget {
                bench: m.bench.clone(),
                metric: m.metric.clone(),
            }
        })?;
        if goal.unit != m.unit {
            return Err(ReportError::Unit {
                bench: m.bench.clone(),
                metric: m.metric.clone(),
                got: m.unit.clone(),
                want: goal.unit.into(),
            });
        }
    }
    Ok(())
}

/// A number for a table: whole from 1,000 up, else three significant
/// digits (trailing zeros dropped).
pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a >= 1000.0 {
        return format!("{v:.0}");
    }
    let decimals = if a == 0.0 {
        0
    } else {
        (2 - a.log10().floor() as i32).clamp(0, 12) as usize
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn bound(better: Better, v: f64, unit: &str) -> String {
    let op = if better == Better::Lower { "<=" } else { ">=" };
    format!("{op} {} {unit}", fmt(v))
}

/// Our goal for the median, and for the p99 where the row has one.
fn our_goal(goal: &Goal) -> String {
    let mut ours = bound(goal.better, goal.goal, goal.unit);
    if let Some(p) = goal.goal_p99 {
        let _ = write!(ours, ", p99 {}", bound(goal.better, p, goal.unit));
    }
    ours
}

/// A ratio, bold when the target is missed.
fn ratio(r: f64) -> String {
    if r >= 1.0 {
        format!("{r:.2}")
    } else {
        format!("**{r:.2}**")
    }
}

/// The lowest of a figure's ratios to our goals (median and p99).
pub fn weakest_ratio(goal: &Goal, m: &Metric) -> f64 {
    let median = goal.better.ratio(goal.goal, m.value);
    match (goal.goal_p99, m.p99) {
        (Some(g), Some(p)) => median.min(goal.better.ratio(g, p)),
        _ => median,
    }
}

fn age(now_unix: u64, m: &Metric) -> String {
    let hours = now_unix.saturating_sub(m.stamp.at_unix) as f64 / 3600.0;
    format!(
        "STALE: commit {}, {hours:.1} h ago, on {}",
        m.stamp.commit, m.stamp.machine
    )
}

/// `text` safe in a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn row(md: &mut String, goal: &Goal, fresh: Freshness<'_>, now_unix: u64) {
    let seed = goal
        .seed
        .map_or("-".into(), |s| bound(goal.better, s, goal.unit));
    let ours = our_goal(goal);
    let (m, when) = match fresh {
        Freshness::Current(m) => (m, "this run".to_string()),
        Freshness::Stale(m) => (m, age(now_unix, m)),
        Freshness::NotMeasured => {
            let _ = writeln!(
                md,
                "| {} | {seed} | {ours} | - | - | - | - | not measured | {} |",
                goal.metric, goal.lever
            );
            return;
        }
    };
    let p99 = m
        .p99
        .map_or("-".into(), |p| format!("{} {}", fmt(p), goal.unit));
    let mut vs_goal = ratio(goal.better.ratio(goal.goal, m.value));
    if let (Some(g), Some(p)) = (goal.goal_p99, m.p99) {
        let _ = write!(vs_goal, ", p99 {}", ratio(goal.better.ratio(g, p)));
    }
    let vs_seed = goal
        .seed
        .map_or("-".into(), |s| ratio(goal.better.ratio(s, m.value)));
    let _ = writeln!(
        md,
        "| {} | {seed} | {ours} | {} {} | {p99} | {vs_goal} | {vs_seed} | {when} | {} |",
        goal.metric,
        fmt(m.value),
        goal.unit,
        cell(&m.note)
    );
}

/// The report, in Markdown, of `metrics` against `targets` for `run`, at
/// `now_unix`.
pub fn render(
    metrics: &[Metric],
    targets: &[Goal],
    run: Option<&str>,
    now_unix: u64,
) -> Result<String, ReportError> {
    if metrics.is_empty() {
        return Err(ReportError::Empty);
    }
    check(metrics, targets)?;
    let figures: Vec<(&Goal, Freshness<'_>)> = targets
        .iter()
        .map(|g| (g, figure(g, metrics, run)))
        .collect();
    let count = |f: fn(&Freshness<'_>) -> bool| figures.iter().filter(|(_, x)| f(x)).count();
    let current = count(|f| matches!(f, Freshness::Current(_)));
    let stale = count(|f| matches!(f, Freshness::Stale(_)));
    let missing = count(|f| matches!(f, Freshness::NotMeasured));
    let this_run: Vec<&Metric> = metrics.iter().filter(|m| m.is_current(run)).collect();
    let commits: BTreeSet<&str> = this_run.iter().map(|m| m.stamp.commit.as_str()).collect();
    let machines: BTreeSet<&str> = this_run.iter().map(|m| m.stamp.machine.as_str()).collect();
    let measured_at = this_run.iter().map(|m| m.stamp.at_unix).max();

    let mut md = String::new();
    let _ = writeln!(md, "# Reflow sandbox benchmark report\n");
    let _ = writeln!(
        md,
        "Run `{}`; commit {}; machine: {}; last figure taken {}.\n",
        run.unwrap_or("unknown"),
        list(&commits),
        list(&machines),
        measured_at.map_or("never".into(), |t| format!(
            "{:.1} h before this report",
            now_unix.saturating_sub(t) as f64 / 3600.0
        )),
    );
    let _ = writeln!(
        md,
        "{current} of {} metrics measured in this run, {stale} stale (shown with the run \
         that measured them), {missing} not measured. Every goal comes from \
         `benches/src/targets.rs`: the seed's figure where its table has one, and ours. \
         Ratios say how many times better than the target the figure is: at or above 1 the \
         target is met, below (in bold) it is missed; `vs goal` compares the median and the \
         p99 with ours, `vs seed` the median with the seed's.\n",
        targets.len()
    );
    let mut benches: Vec<&str> = targets.iter().map(|g| g.bench).collect();
    benches.dedup();
    for bench in benches {
        let _ = writeln!(
            md,
            "## {bench}\n\n| metric | seed | our goal | median | p99 | vs goal | vs seed | \
             measured | note |\n|---|---|---|---|---|---|---|---|---|"
        );
        for (g, f) in figures.iter().filter(|(g, _)| g.bench == bench) {
            row(&mut md, g, *f, now_unix);
        }
        md.push('\n');
    }
    let mut weakest: Vec<(&Goal, &Metric, f64)> = figures
        .iter()
        .filter_map(|(g, f)| match f {
            Freshness::Current(m) => Some((*g, *m, weakest_ratio(g, m))),
            _ => None,
        })
        .collect();
    weakest.sort_by(|a, b| a.2.total_cmp(&b.2));
    let _ = writeln!(md, "## Weakest against our goals (this run)\n");
    for (g, m, r) in weakest.iter().take(3) {
        let p99 = m
            .p99
            .map_or(String::new(), |p| format!(", p99 {} {}", fmt(p), g.unit));
        let _ = writeln!(
            md,
            "- {} / {}: {} {}{p99}, against our goal {} ({r:.2}x). What would move it: {}.",
            g.bench,
            g.metric,
            fmt(m.value),
            g.unit,
            our_goal(g),
            g.lever
        );
    }
    Ok(md)
}

fn list(items: &BTreeSet<&str>) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Stamp, FORMAT};

    const ROWS: &[Goal] = &[
        Goal {
            bench: "python",
            metric: "round trip",
            unit: "ms",
            better: Better::Lower,
            seed: Some(5.0),
            goal: 0.02,
            goal_p99: Some(0.2),
            lever: "spin longer",
        },
        Goal {
            bench: "stream",
            metric: "msg/s",
            unit: "msg/s",
            better: Better::Higher,
            seed: Some(10_000.0),
            goal: 50_000.0,
            goal_p99: None,
            lever: "batch answers",
        },
        Goal {
            bench: "memory",
            metric: "density",
            unit: "VMs",
            better: Better::Higher,
            seed: None,
            goal: 1000.0,
            goal_p99: None,
            lever: "no bench yet",
        },
    ];

    fn metric(bench: &str, name: &str, value: f64, run: &str, at_unix: u64) -> Metric {
        Metric {
            format: FORMAT,
            bench: bench.into(),
            metric: name.into(),
            value,
            p99: None,
            unit: ROWS
                .iter()
                .find(|g| g.metric == name)
                .map_or("ms", |g| g.unit)
                .into(),
            note: String::new(),
            stamp: Stamp {
                run: run.into(),
                commit: format!("commit-{run}"),
                at_unix,
                machine: format!("machine-{run}"),
            },
        }
    }

    fn line<'a>(md: &'a str, metric: &str) -> &'a str {
        md.lines()
            .find(|l| l.starts_with(&format!("| {metric} |")))
            .unwrap_or_else(|| panic!("no row for {metric} in:\n{md}"))
    }

    #[test]
    fn figures_of_an_earlier_run_are_marked_stale_never_current() {
        let mut rtt = metric("python", "round trip", 0.024, "new", 7200);
        rtt.p99 = Some(0.1);
        let metrics = [
            rtt,
            metric("python", "round trip", 0.5, "old", 100),
            metric("stream", "msg/s", 30_000.0, "old", 0),
        ];
        let md = render(&metrics, ROWS, Some("new"), 7200).unwrap();
        let rtt = line(&md, "round trip");
        assert!(
            rtt.contains("0.024 ms") && rtt.contains("this run"),
            "{rtt}"
        );
        assert!(rtt.contains("**0.83**, p99 2.00"), "{rtt}");
        let stream = line(&md, "msg/s");
        assert!(
            stream.contains("STALE: commit commit-old, 2.0 h ago, on machine-old"),
            "{stream}"
        );
        assert!(!stream.contains("this run"), "{stream}");
        assert!(line(&md, "density").contains("not measured"));
        assert!(md.contains("1 of 3 metrics measured in this run, 1 stale"));
        assert!(md.contains("commit `commit-new`; machine: `machine-new`"));
        // Only figures of this run compete for the weakest.
        let weakest = &md[md.find("## Weakest").unwrap()..];
        assert!(weakest.contains("round trip") && !weakest.contains("msg/s"));
        assert!(weakest.contains("spin longer"));
    }

    #[test]
    fn a_figure_without_a_target_is_an_error() {
        let metrics = [
            metric("python", "round trip", 0.02, "r", 1),
            metric("python", "something new", 1.0, "r", 1),
        ];
        assert_eq!(
            render(&metrics, ROWS, Some("r"), 1),
            Err(ReportError::NoTarget {
                bench: "python".into(),
                metric: "something new".into()
            })
        );
        // Even when only an earlier run recorded it.
        let metrics = [metric("memory", "rss", 1.0, "old", 1)];
        assert!(matches!(
            render(&metrics, ROWS, Some("r"), 1),
            Err(ReportError::NoTarget { .. })
        ));
    }

    #[test]
    fn a_unit_other_than_the_targets_is_an_error() {
        let mut m = metric("python", "round trip", 20.0, "r", 1);
        m.unit = "us".into();
        assert!(matches!(
            render(&[m], ROWS, Some("r"), 1),
            Err(ReportError::Unit { .. })
        ));
        assert_eq!(render(&[], ROWS, None, 1), Err(ReportError::Empty));
    }

    #[test]
    fn a_note_cannot_break_the_table() {
        let mut m = metric("python", "round trip", 0.02, "r", 1);
        m.note = "refused: a|b\nsecond line".into();
        let md = render(&[m], ROWS, Some("r"), 1).unwrap();
        let row = line(&md, "round trip");
        assert!(row.ends_with("| refused: a\\|b second line |"), "{row}");
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        let cases = [
            (0.0071014, "0.0071"),
            (0.0241, "0.0241"),
            (1.5, "1.5"),
            (79.949, "79.9"),
            (0.0, "0"),
            (2_251_900.4, "2251900"),
            (1000.0, "1000"),
        ];
        for (v, s) in cases {
            assert_eq!(fmt(v), s, "{v}");
        }
    }

    #[test]
    fn the_real_table_reports_every_row() {
        let g = &crate::targets::TARGETS[0];
        let m = metric(g.bench, g.metric, g.goal, "r", 1);
        let m = Metric {
            unit: g.unit.into(),
            ..m
        };
        let md = render(&[m], crate::targets::TARGETS, Some("r"), 1).unwrap();
        for g in crate::targets::TARGETS {
            line(&md, g.metric);
        }
    }
}
