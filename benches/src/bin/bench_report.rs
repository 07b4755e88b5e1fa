//! Writes `target/bench-report.md` from the figures the benches recorded
//! (`./dev.sh bench` runs every bench, then this): one table of metric,
//! target, our median and ratio, the machine it ran on, and the three
//! weakest figures against their targets.

use std::fmt::Write as _;

use reflow_benches::report::{self, Better, Metric};
use reflow_vmm::host::HostKind;

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|m| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

fn fmt(v: f64) -> String {
    if v == 0.0 || (0.01..1e6).contains(&v.abs()) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

fn target_cell(m: &Metric) -> String {
    match &m.target {
        Some(t) => format!(
            "{} {} {} ({})",
            if t.better == Better::Lower { "<" } else { ">" },
            fmt(t.value),
            m.unit,
            t.source
        ),
        None => "-".into(),
    }
}

fn main() {
    let metrics = report::load();
    if metrics.is_empty() {
        eprintln!(
            "bench-report: no figures under {}: run the benches first (./dev.sh bench)",
            report::dir().display()
        );
        std::process::exit(1);
    }
    let host = match HostKind::detect() {
        HostKind::Native => "bare-metal (hardware-assisted) KVM",
        HostKind::EmulatedKernel => "nested kvm_pvm: guest kernel code is emulated",
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = report::meminfo_kib("MemTotal:").unwrap_or(0) as f64 / (1 << 20) as f64;
    let run = report::current_run(&metrics);
    let (current, stale): (Vec<Metric>, Vec<Metric>) = metrics
        .into_iter()
        .partition(|m| m.is_current(run.as_deref()));
    let metrics = current;
    let commit = metrics
        .iter()
        .find_map(|m| m.stamp.as_ref().map(|s| s.commit.clone()))
        .unwrap_or_else(|| "unknown".into());
    let mut md = String::new();
    let _ = writeln!(md, "# Reflow sandbox benchmark report\n");
    let _ = writeln!(
        md,
        "Machine: {} ({cores} cores, {mem_gib:.0} GiB); {host}.\n\nEvery figure is a median \
         unless its name says otherwise, measured by `./dev.sh bench` in one run; ratios are \
         target / ours for lower-is-better figures and ours / target for higher-is-better ones, \
         so above 1 the target is met.\n\nRun `{}`, commit `{commit}`; figures of earlier runs \
         are listed apart, as stale.\n",
        cpu_model(),
        run.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        md,
        "| bench | metric | target | ours | ratio | note |\n|---|---|---|---|---|---|"
    );
    for m in &metrics {
        let ratio = m
            .target
            .as_ref()
            .map_or("-".into(), |t| format!("{:.2}", t.ratio(m.value)));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} {} | {ratio} | {} |",
            m.bench,
            m.metric,
            target_cell(m),
            fmt(m.value),
            m.unit,
            m.note
        );
    }
    let mut weakest: Vec<&Metric> = metrics.iter().filter(|m| m.target.is_some()).collect();
    weakest.sort_by(|a, b| {
        let r = |m: &Metric| m.target.as_ref().map_or(f64::MAX, |t| t.ratio(m.value));
        r(a).total_cmp(&r(b))
    });
    let _ = writeln!(md, "\n## Weakest against their targets\n");
    for m in weakest.iter().take(3) {
        let t = m.target.as_ref().expect("filtered");
        let _ = writeln!(
            md,
            "- {} / {}: {} {} against {} ({:.2}x)",
            m.bench,
            m.metric,
            fmt(m.value),
            m.unit,
            target_cell(m),
            t.ratio(m.value)
        );
    }
    if !stale.is_empty() {
        let _ = writeln!(
            md,
            "\n## Stale: figures of earlier runs, not measured in this one\n"
        );
        for m in &stale {
            let from = m.stamp.as_ref().map_or("a run before stamps".into(), |st| {
                let hours = report::now_unix().saturating_sub(st.at_unix) as f64 / 3600.0;
                format!("commit {}, {hours:.1} h ago", st.commit)
            });
            let _ = writeln!(
                md,
                "- {} / {}: {} {} (stale: {from})",
                m.bench,
                m.metric,
                fmt(m.value),
                m.unit
            );
        }
    }
    let _ = writeln!(md, "\n## Not measured in this run\n");
    let recorded = |bench: &str| metrics.iter().any(|m| m.bench == bench);
    let mut missing: Vec<String> = Vec::new();
    for bench in [
        "boot",
        "restore",
        "ring",
        "python",
        "javascript",
        "state",
        "graph",
        "memory",
    ] {
        if !recorded(bench) {
            missing.push(format!(
                "{bench}: no figures (the bench did not run, or found no /dev/kvm)"
            ));
        }
    }
    if missing.is_empty() {
        missing.push("nothing: every bench recorded its figures".into());
    }
    for m in missing {
        let _ = writeln!(md, "- {m}");
    }
    let dir = report::dir();
    let target = dir.canonicalize().unwrap_or(dir);
    let out = target
        .parent()
        .map_or_else(|| "bench-report.md".into(), |t| t.join("bench-report.md"));
    match std::fs::write(&out, &md) {
        Ok(()) => {
            print!("{md}");
            eprintln!("bench-report: wrote {}", out.display());
        }
        Err(e) => {
            eprintln!("bench-report: cannot write {}: {e}", out.display());
            std::process::exit(1);
        }
    }
}
