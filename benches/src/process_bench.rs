//! The actor bench's process side: the same identity actor in the same
//! worker, run as a jailed host process (`isolation: process`) on the
//! language's image, measured in the same run as its VM side
//! ([`crate::actor_bench`]):
//! - a worker's start to ready (jail, interpreter start, the worker's
//!   preloads), what a pool refill pays off the message path;
//! - first message on a ready worker: load + first answer, what a node's
//!   first message pays when its pool has a ready worker;
//! - identity round trip, 64 B and 4 KiB, p50/p99, and the 64 B p50 over
//!   the VM's of the same run;
//! - sequential identity invocations per second (64 B).

use std::time::{Duration, Instant};

use reflow_integration_tests::{percentile, process_worker, LIMIT};
use reflow_sandbox_core::process::ProcessWorker;
use reflow_sandbox_core::WorkerClient;

use crate::actor_bench::{
    identity, input, round_trips, sequential_rate, Language, RTT_LENS, SEQUENTIAL,
};
use crate::ms;
use crate::report::{self, record};

/// Starts a worker, loads the identity actor and invokes it once;
/// returns (start to ready, load + first invocation).
fn first_message(lang: &Language<'_>) -> (Duration, Duration) {
    let t = Instant::now();
    let worker = process_worker(lang.language, lang.shm_mib);
    let ready = t.elapsed();
    let t = Instant::now();
    {
        let mut c = WorkerClient::attach(worker.ring_region(), &worker.layout());
        c.load("id", lang.identity.0, lang.identity.1, LIMIT)
            .expect("load in a process worker");
        identity(&mut c, &input(64));
    }
    (ready, t.elapsed())
}

/// Identity round trips (64 B and 4 KiB, sorted) and the sequential 64 B
/// rate (with the count it is over) on `worker`.
fn steady(
    lang: &Language<'_>,
    worker: &ProcessWorker,
) -> (Vec<(usize, Vec<Duration>)>, f64, usize) {
    let mut c = WorkerClient::attach(worker.ring_region(), &worker.layout());
    c.load("id", lang.identity.0, lang.identity.1, LIMIT)
        .expect("load in a process worker");
    let rtts = RTT_LENS
        .iter()
        .map(|&len| (len, round_trips(&mut c, len)))
        .collect();
    (rtts, sequential_rate(&mut c, SEQUENTIAL), SEQUENTIAL)
}

/// Runs the process side for `lang` and records its figures;
/// `vm_rtt_64` is the VM side's 64 B identity round trip p50 of this
/// run.
pub fn run(lang: &Language<'_>, vm_rtt_64: Duration) {
    let name = lang.name;
    let (mut readies, mut firsts) = (Vec::new(), Vec::new());
    for _ in 0..report::samples(10) {
        let (ready, first) = first_message(lang);
        readies.push(ready);
        firsts.push(first);
    }
    readies.sort();
    firsts.sort();

    // A fresh worker: a client attaches to a ring no other has used.
    let worker = process_worker(lang.language, lang.shm_mib);
    let (rtts, rate, n) = steady(lang, &worker);
    drop(worker);

    let med = |v: &[Duration]| ms(percentile(v, 0.5));
    report::record_times(
        name,
        "process worker: start to ready",
        &readies,
        "jail, interpreter start and the worker's preloads: what a pool refill pays",
    );
    report::record_times(
        name,
        "process worker: load + first answer on a ready worker",
        &firsts,
        "what a node's first message pays when its pool has a ready worker",
    );
    for (len, times) in &rtts {
        report::record_times(
            name,
            &format!("process worker: identity round trip {len} B"),
            times,
            "message processing, closed loop, the same ring protocol as a VM's",
        );
    }
    let rtt_64 = percentile(&rtts[0].1, 0.5);
    record(
        name,
        "process / VM identity round trip 64 B p50 (same run)",
        rtt_64.as_secs_f64() / vm_rtt_64.as_secs_f64(),
        &format!(
            "process p50 {:.3} ms, VM p50 {:.3} ms",
            ms(rtt_64),
            ms(vm_rtt_64)
        ),
    );
    record(
        name,
        "process worker: sequential 64 B invocations (unbatched)",
        rate,
        "one at a time",
    );
    println!(
        "{name}: process worker: start to ready p50 {:.0} ms (p99 {:.0}), load + first answer \
         p50 {:.1} ms (p99 {:.1}; {} workers)",
        med(&readies),
        ms(percentile(&readies, 0.99)),
        med(&firsts),
        ms(percentile(&firsts, 0.99)),
        firsts.len()
    );
    for (len, times) in &rtts {
        println!(
            "{name}: process worker: identity round trip {len} B: p50 {:.3} ms, p99 {:.3} ms \
             ({} samples)",
            med(times),
            ms(percentile(times, 0.99)),
            times.len()
        );
    }
    println!(
        "{name}: process worker: identity round trip 64 B p50 / VM's: {:.2}x; sequential 64 B \
         identity invocations: {rate:.0} msg/s ({n} messages)",
        rtt_64.as_secs_f64() / vm_rtt_64.as_secs_f64()
    );
}
