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

impl Better {
    /// How many times better than `target` the figure `value` is (at or
    /// above 1: met).
    pub fn ratio(self, target: f64, value: f64) -> f64 {
        match self {
            Better::Lower => target / value,
            Better::Higher => value / target,
        }
    }
}

/// The format of the lines this code writes; lines of another format
/// (older benches) are left out of the report.
pub const FORMAT: u32 = 2;

/// One recorded figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    #[serde(default)]
    pub format: u32,
    pub bench: String,
    pub metric: String,
    /// The median, or the figure when it is one number.
    pub value: f64,
    /// The 99th percentile, for figures with a distribution.
    #[serde(default)]
    pub p99: Option<f64>,
    pub unit: String,
    #[serde(default)]
    pub note: String,
    /// When, from which tree, on which machine and in which run it was
    /// measured.
    pub stamp: Stamp,
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
    /// The CPU, cores, memory and kind of KVM ([`machine`]).
    pub machine: String,
}

/// The environment variable that names the bench run.
pub const RUN_ENV: &str = "REFLOW_BENCH_RUN";

/// The environment variable `./dev.sh bench --quick` sets: benches take
/// fewer samples (a developer's loop of a few minutes, not the report's).
pub const QUICK_ENV: &str = "REFLOW_BENCH_QUICK";

/// Whether this is a quick run.
pub fn is_quick() -> bool {
    std::env::var_os(QUICK_ENV).is_some()
}

/// `full` samples, or a fifth of them (at least 3) in a quick run.
pub fn samples(full: usize) -> usize {
    if is_quick() {
        (full / 5).max(3)
    } else {
        full
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The machine measured: CPU model, cores, memory and the kind of KVM.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|m| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = meminfo_kib("MemTotal:").unwrap_or(0) as f64 / (1 << 20) as f64;
    let kvm = match reflow_vmm::host::HostKind::detect() {
        reflow_vmm::host::HostKind::Native => "bare-metal (hardware-assisted) KVM",
        reflow_vmm::host::HostKind::EmulatedKernel => "nested kvm_pvm (guest kernel code emulated)",
    };
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, {kvm}")
}

/// This process's stamp (run, commit and machine computed once).
pub fn stamp() -> Stamp {
    static RUN: std::sync::OnceLock<(String, String, String)> = std::sync::OnceLock::new();
    let (run, commit, machine) = RUN.get_or_init(|| {
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
        (run, commit, machine())
    });
    Stamp {
        run: run.clone(),
        commit: commit.clone(),
        at_unix: now_unix(),
        machine: machine.clone(),
    }
}

/// The run the report is about: `REFLOW_BENCH_RUN` when set, else the run
/// of the most recently measured figure.
pub fn current_run(metrics: &[Metric]) -> Option<String> {
    std::env::var(RUN_ENV).ok().or_else(|| {
        metrics
            .iter()
            .max_by_key(|m| m.stamp.at_unix)
            .map(|m| m.stamp.run.clone())
    })
}

impl Metric {
    /// Whether the figure was measured in `run`.
    pub fn is_current(&self, run: Option<&str>) -> bool {
        run == Some(self.stamp.run.as_str())
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

/// Records one figure of `bench` (the median, or the figure when it is one
/// number), held to its row in [`crate::targets`]. A failure to write is
/// reported, not fatal: the bench's own output still has the figure.
pub fn record(bench: &str, metric: &str, value: f64, note: &str) {
    write_metric(bench, metric, unit_of(bench, metric), value, None, note);
}

/// Records the median and p99 of `times` in the unit of the metric's row
/// (`s`, `ms` or `us`).
pub fn record_times(bench: &str, metric: &str, times: &[std::time::Duration], note: &str) {
    if times.is_empty() {
        eprintln!("report: {bench} / {metric}: no samples, nothing recorded");
        return;
    }
    let mut sorted = times.to_vec();
    sorted.sort();
    let unit = unit_of(bench, metric);
    let scale = match unit {
        "s" => 1.0,
        "us" => 1e6,
        _ => 1e3,
    };
    let at = |p| reflow_integration_tests::percentile(&sorted, p).as_secs_f64() * scale;
    write_metric(bench, metric, unit, at(0.5), Some(at(0.99)), note);
}

/// The unit of `(bench, metric)`'s row, or "?" (said on stderr) when the
/// table has none.
fn unit_of(bench: &str, metric: &str) -> &'static str {
    match crate::targets::goal(bench, metric) {
        Some(g) => g.unit,
        None => {
            eprintln!(
                "report: {bench} / {metric} has no row in benches/src/targets.rs: the report \
                 will refuse it until it has a target"
            );
            "?"
        }
    }
}

fn write_metric(bench: &str, metric: &str, unit: &str, value: f64, p99: Option<f64>, note: &str) {
    let m = Metric {
        format: FORMAT,
        bench: bench.into(),
        metric: metric.into(),
        value,
        p99,
        unit: unit.into(),
        note: note.into(),
        stamp: stamp(),
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

/// Every recorded figure of this format, in bench-file order, and how many
/// lines were left out (another format, or unreadable).
pub fn load() -> (Vec<Metric>, usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut left_out = 0;
    let mut metrics = Vec::new();
    for f in &files {
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
            match serde_json::from_str::<Metric>(line) {
                Ok(m) if m.format == FORMAT => metrics.push(m),
                _ => left_out += 1,
            }
        }
    }
    (metrics, left_out)
}

/// The `name` field (`Rss:`, `MemAvailable:`) of a /proc text in KiB.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| kib_line(l, name))
}

/// The value of a /proc line `name   N kB`, in KiB.
pub(crate) fn kib_line(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// `pid` and every process under it (a VM's monitor forks into a PID
/// namespace of its own).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let parents = reflow_integration_tests::processes();
    let mut pids = vec![pid];
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
    pids
}

/// Host RSS and PSS of this process and its descendants (each sandbox VM
/// runs in a monitor process of its own, which forks into a PID namespace),
/// in KiB.
pub fn memory_kib() -> (u64, u64) {
    process_tree(std::process::id())
        .iter()
        .fold((0, 0), |(rss, pss), pid| {
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

    #[test]
    fn old_lines_are_left_out_and_new_ones_round_trip() {
        // Before stamps, and stamped but before this format: both left out.
        let unstamped = r#"{"bench":"b","metric":"m","value":1.0,"unit":"ms","target":null}"#;
        assert!(serde_json::from_str::<Metric>(unstamped).is_err());
        let older = r#"{"bench":"b","metric":"m","value":1.0,"unit":"ms","stamp":
            {"run":"r","commit":"c","at_unix":1,"machine":"x"}}"#;
        assert_ne!(
            serde_json::from_str::<Metric>(older).unwrap().format,
            FORMAT
        );
        let m = Metric {
            format: FORMAT,
            bench: "b".into(),
            metric: "m".into(),
            value: 1.0,
            p99: Some(2.0),
            unit: "ms".into(),
            note: String::new(),
            stamp: stamp(),
        };
        let back: Metric = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    fn stamped(run: &str, at_unix: u64) -> Metric {
        Metric {
            format: FORMAT,
            bench: "b".into(),
            metric: "m".into(),
            value: 1.0,
            p99: None,
            unit: "ms".into(),
            note: String::new(),
            stamp: Stamp {
                run: run.into(),
                commit: "abc".into(),
                at_unix,
                machine: "x".into(),
            },
        }
    }

    #[test]
    fn only_figures_of_the_current_run_are_current() {
        let figures = [stamped("old", 10), stamped("new", 20)];
        std::env::remove_var(RUN_ENV);
        let run = current_run(&figures);
        assert_eq!(run.as_deref(), Some("new"));
        let current: Vec<bool> = figures
            .iter()
            .map(|m| m.is_current(run.as_deref()))
            .collect();
        assert_eq!(current, [false, true]);
        assert!(!figures[1].is_current(None));
    }

    #[test]
    fn ratios_say_how_far_past_the_target() {
        assert_eq!(Better::Lower.ratio(5.0, 1.0), 5.0);
        assert_eq!(Better::Higher.ratio(10.0, 5.0), 0.5);
    }
}
