//! Writes `target/bench-report.md` from the figures the benches recorded
//! (`./dev.sh bench` runs the benches, then this): every row of
//! `benches/src/targets.rs` with the seed's figure, our goal, median, p99,
//! ratios and where the figure comes from, and the three weakest figures
//! against our goals. A recorded figure without a target is an error.

use reflow_benches::{render, report, targets};

fn main() {
    let (metrics, left_out) = report::load();
    if left_out > 0 {
        eprintln!(
            "bench-report: {left_out} lines under {} are of an older format and left out",
            report::dir().display()
        );
    }
    let run = report::current_run(&metrics);
    let md = match render::render(
        &metrics,
        targets::TARGETS,
        run.as_deref(),
        report::now_unix(),
    ) {
        Ok(md) => md,
        Err(e) => {
            eprintln!("bench-report: {e} ({})", report::dir().display());
            std::process::exit(1);
        }
    };
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
