//! A golden snapshot's age does not reach its clones: a copy of the Python
//! worker's golden made to look 3 hours old (its saved host clock moved
//! back, and clones handed a wall clock 3 hours ahead of the one in their
//! memory, as a 3-hour-old golden's clones are) restores like the original,
//! and its clones' monotonic clock goes on from the snapshot.
//!
//! One test in its own binary: the clock shift is an environment variable
//! the monitor processes inherit, set and unset between restores.

use std::time::Duration;

use reflow_agent_protocol::request::Request;
use reflow_integration_tests::{kvm_available, warm_worker_golden, LIMIT};
use reflow_sandbox_core::{Language, SandboxVm, VmSpec};
use reflow_vmm::snapshot::age::{aged_copy, saved_guest_clock, CLOCK_SHIFT_ENV};

const AGE: Duration = Duration::from_secs(3 * 3600);
const ROUNDS: usize = 7;

/// Restores a clone of `spec` with the wall clock shifted by `shift`:
/// host time from the restore to a ready agent, and the guest's uptime
/// when its agent said hello less the kvmclock the snapshot saved, in
/// seconds (the guest's uptime starts a little after its kvmclock, so a
/// clone that has barely run shows a small negative figure).
fn restore(spec: &VmSpec, shift: Duration) -> (Duration, f64) {
    std::env::set_var(CLOCK_SHIFT_ENV, shift.as_secs().to_string());
    let mut vm = SandboxVm::restore(spec, LIMIT).expect("a clone");
    std::env::remove_var(CLOCK_SHIFT_ENV);
    let uptime = Duration::from_millis(vm.control().expect("a VM").hello().uptime_ms);
    let saved = saved_guest_clock(&spec.golden).unwrap();
    (vm.ready_after(), uptime.as_secs_f64() - saved.as_secs_f64())
}

/// How far a clone's wall clock (restored with the clock shifted by
/// `shift`) stands ahead of the host's, in seconds.
fn wall_clock_ahead(spec: &VmSpec, shift: Duration) -> f64 {
    std::env::set_var(CLOCK_SHIFT_ENV, shift.as_secs().to_string());
    let mut vm = SandboxVm::restore(spec, LIMIT).expect("a clone");
    std::env::remove_var(CLOCK_SHIFT_ENV);
    let date = Request::Run {
        program: "/bin/date".into(),
        args: vec!["+%s".into()],
    };
    let guest: f64 = vm
        .control()
        .expect("a VM")
        .request(&date, LIMIT)
        .expect("date runs in the guest")
        .trim()
        .parse()
        .expect("seconds");
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    guest - host
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn a_three_hour_old_golden_restores_like_a_new_one() {
    if !kvm_available() {
        return;
    }
    let (golden, config) = warm_worker_golden(Language::Python, 40);
    let fresh = VmSpec::new(golden.clone(), config.clone());
    let aged_dir = golden
        .parent()
        .unwrap()
        .join(format!(".aged-{}", std::process::id()));
    aged_copy(&golden, &aged_dir, AGE).expect("an aged copy");
    let aged = VmSpec::new(aged_dir.clone(), config);
    // Warm both (the first restore in a process checks the memory digest),
    // and see that the old golden's clones are told the time 3 hours
    // ahead of what their memory holds, as an old golden's would be.
    for (spec, shift) in [(&fresh, Duration::ZERO), (&aged, AGE)] {
        restore(spec, shift);
        let ahead = wall_clock_ahead(spec, shift);
        assert!(
            (ahead - shift.as_secs_f64()).abs() < 120.0,
            "the clone's wall clock is {ahead:.0} s ahead of the host's, not {shift:?}"
        );
    }
    let (mut ready, mut jumps) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for _ in 0..ROUNDS {
        for (i, (spec, shift)) in [(&fresh, Duration::ZERO), (&aged, AGE)]
            .into_iter()
            .enumerate()
        {
            let (took, jump) = restore(spec, shift);
            ready[i].push(took);
            jumps[i].push(jump);
        }
    }
    let _ = std::fs::remove_dir_all(&aged_dir);
    let [r_fresh, r_aged] = ready.map(median);
    eprintln!(
        "restore to ready, medians of {ROUNDS}: fresh golden {:.1} ms, 3 hours old {:.1} ms \
         (ratio {:.2}); guest uptime at the agent's hello less the saved clock, s: \
         fresh {:.3?}, old {:.3?}",
        r_fresh.as_secs_f64() * 1e3,
        r_aged.as_secs_f64() * 1e3,
        r_aged.as_secs_f64() / r_fresh.as_secs_f64(),
        jumps[0],
        jumps[1],
    );
    // The clone's monotonic clock goes on from the snapshot whatever its
    // age: an old golden's clones stand where a new one's do (the guest
    // time the restore took, milliseconds apart), not hours further. How
    // long the restores took is the restore bench's business; the figures
    // above are for the record.
    let mid = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let jump = mid(&jumps[1]) - mid(&jumps[0]);
    eprintln!(
        "the old golden's clones' clocks stood {:.1} ms from the new one's",
        jump * 1e3
    );
    assert!(
        jump.abs() < 0.5,
        "an old golden's clone's clock moved {jump:.3} s further than a new one's"
    );
}
