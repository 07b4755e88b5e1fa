//! Bench figures for the comparison report: each bench records its key
//! medians (with the target they are held to) as JSON lines under
//! `target/bench-metrics/`, and `bench-report` turns the lines of one run
//! into `target/bench-report.md`.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

/// A figure's target: the design's performance table, or one of ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub value: f64,
    pub better: Better,
    /// "design" or "ours".
    pub source: String,
}

impl Target {
    pub fn design(value: f64, better: Better) -> Option<Target> {
        Some(Target {
            value,
            better,
            source: "design".into(),
        })
    }

    pub fn ours(value: f64, better: Better) -> Option<Target> {
        Some(Target {
            value,
            better,
            source: "ours".into(),
        })
    }

    /// How many times better than the target `value` is (above 1: met).
    pub fn ratio(&self, value: f64) -> f64 {
        match self.better {
            Better::Lower => self.value / value,
            Better::Higher => value / self.value,
        }
    }
}

/// One recorded figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub bench: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    pub target: Option<Target>,
    #[serde(default)]
    pub note: String,
    /// When, from which tree and in which run it was measured (figures
    /// written before stamps existed have none, and count as stale).
    #[serde(default)]
    pub stamp: Option<Stamp>,
}

/// Where a figure comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The bench run: `REFLOW_BENCH_RUN` (`./dev.sh bench` sets one for all
    /// its benches), else one of this bench process's own.
    pub run: String,
    /// `git describe --always --dirty` of the tree measured.
    pub commit: String,
    /// Seconds since the Unix epoch.
    pub at_unix: u64,
}

/// The environment variable that names the bench run.
pub const RUN_ENV: &str = "REFLOW_BENCH_RUN";

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This process's stamp (computed once).
pub fn stamp() -> Stamp {
    static RUN: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    let (run, commit) = RUN.get_or_init(|| {
        let run = std::env::var(RUN_ENV)
            .unwrap_or_else(|_| format!("{}-{}", now_unix(), std::process::id()));
        let commit = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        (run, commit)
    });
    Stamp {
        run: run.clone(),
        commit: commit.clone(),
        at_unix: now_unix(),
    }
}

/// The run the report is about: `REFLOW_BENCH_RUN` when set, else the run
/// of the most recently measured figure.
pub fn current_run(metrics: &[Metric]) -> Option<String> {
    std::env::var(RUN_ENV).ok().or_else(|| {
        metrics
            .iter()
            .filter_map(|m| m.stamp.as_ref())
            .max_by_key(|s| s.at_unix)
            .map(|s| s.run.clone())
    })
}

impl Metric {
    /// Whether the figure was measured in `run` (a figure without a stamp
    /// never was).
    pub fn is_current(&self, run: Option<&str>) -> bool {
        matches!((&self.stamp, run), (Some(s), Some(r)) if s.run == r)
    }
}

/// Where the figures go: `$CARGO_TARGET_DIR/bench-metrics`, else the
/// workspace's `target/bench-metrics`.
pub fn dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench-metrics")
}

/// Forgets `bench`'s figures of an earlier run.
pub fn reset(bench: &str) {
    let _ = std::fs::remove_file(dir().join(format!("{bench}.jsonl")));
}

/// Records one figure of `bench` (a failure to write is reported, not
/// fatal: the bench's own output still has the figure).
pub fn record(
    bench: &str,
    metric: &str,
    value: f64,
    unit: &str,
    target: Option<Target>,
    note: &str,
) {
    let m = Metric {
        bench: bench.into(),
        metric: metric.into(),
        value,
        unit: unit.into(),
        target,
        note: note.into(),
        stamp: Some(stamp()),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir())?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir().join(format!("{bench}.jsonl")))?;
        writeln!(
            f,
            "{}",
            serde_json::to_string(&m).map_err(std::io::Error::other)?
        )
    };
    if let Err(e) = write() {
        eprintln!("report: cannot record {metric}: {e}");
    }
}

/// Every recorded figure, in bench-file order.
pub fn load() -> Vec<Metric> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The `name` field (`Rss:`, `MemAvailable:`) of a /proc text in KiB.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// Host RSS and PSS of this process and its descendants (each sandbox VM
/// runs in a monitor process of its own, which forks into a PID namespace),
/// in KiB.
pub fn memory_kib() -> (u64, u64) {
    let parents = reflow_integration_tests::processes();
    let mut pids = vec![std::process::id()];
    let mut at = 0;
    while at < pids.len() {
        let parent = pids[at];
        pids.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        at += 1;
    }
    pids.iter().fold((0, 0), |(rss, pss), pid| {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        (
            rss + kib_field(&rollup, "Rss:").unwrap_or(0),
            pss + kib_field(&rollup, "Pss:").unwrap_or(0),
        )
    })
}

/// "golden snapshot N min old": restores used to slow down as their golden
/// aged (docs/snapshots.md), so figures that restore say how old theirs
/// was, to show they no longer do.
pub fn golden_age(dir: &std::path::Path) -> String {
    let age = std::fs::metadata(dir.join("state.bin"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    match age {
        Some(a) => format!("golden snapshot {:.0} min old", a.as_secs_f64() / 60.0),
        None => "golden snapshot of unknown age".into(),
    }
}

/// A `/proc/meminfo` field in KiB.
pub fn meminfo_kib(name: &str) -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(run: Option<&str>, at_unix: u64) -> Metric {
        Metric {
            bench: "b".into(),
            metric: "m".into(),
            value: 1.0,
            unit: "ms".into(),
            target: None,
            note: String::new(),
            stamp: run.map(|run| Stamp {
                run: run.into(),
                commit: "abc".into(),
                at_unix,
            }),
        }
    }

    #[test]
    fn only_figures_of_the_current_run_are_current() {
        let figures = [
            metric(Some("old"), 10),
            metric(Some("new"), 20),
            metric(None, 0),
        ];
        std::env::remove_var(RUN_ENV);
        let run = current_run(&figures);
        assert_eq!(run.as_deref(), Some("new"));
        let current: Vec<bool> = figures
            .iter()
            .map(|m| m.is_current(run.as_deref()))
            .collect();
        assert_eq!(current, [false, true, false]);
        assert!(!figures[1].is_current(None));
    }

    #[test]
    fn old_lines_without_a_stamp_still_load() {
        let line = r#"{"bench":"b","metric":"m","value":1.0,"unit":"ms","target":null}"#;
        let m: Metric = serde_json::from_str(line).unwrap();
        assert_eq!(m.stamp, None);
        assert!(!m.is_current(Some("any")));
    }

    #[test]
    fn ratios_say_how_far_past_the_target() {
        assert_eq!(Target::design(5.0, Better::Lower).unwrap().ratio(1.0), 5.0);
        assert_eq!(
            Target::design(10.0, Better::Higher).unwrap().ratio(5.0),
            0.5
        );
    }
}
