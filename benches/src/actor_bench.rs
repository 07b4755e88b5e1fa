//! The actor bench of one language, on clones of its warm worker golden
//! (the worker started and warm before the snapshot), driven through the
//! host bridge's worker client, as the host bridge drives them.
//!
//! Reported, medians unless said otherwise:
//! - first message on a freshly restored clone: restore to the identity
//!   actor's first answer (restore, agent handshake, LOAD, INVOKE), and its
//!   parts: restore-to-ready and load + first invocation on a ready clone
//!   (what a pre-warmed pool pays);
//! - identity round trip, 64 B and 4 KiB payloads, p50/p99;
//! - sequential identity invocations per second (64 B);
//! - the same in a process worker, in the same run
//!   ([`crate::process_bench`]).
//!
//! Side by side with the design's targets (message processing < 5 ms,
//! 10,000 msg/s).

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use reflow_integration_tests::{percentile, TestVm, LIMIT};
use reflow_ring::Value;
use reflow_sandbox_core::{InvokeHandler, Limits, StateRequest, WorkerClient};
use reflow_vmm::VmConfig;

use crate::ms;
use crate::report::{self, record};

/// One language's actor bench: its name (the criterion group and the
/// report's bench), its warm worker golden and an identity actor.
pub struct Language<'a> {
    pub name: &'a str,
    /// The worker's language (for the process side).
    pub language: reflow_sandbox_core::Language,
    /// The ring's region, MiB, of the golden's clones and of the process
    /// side's workers.
    pub shm_mib: u32,
    /// The golden snapshot directory and the config to restore it with.
    pub golden: (std::path::PathBuf, VmConfig),
    /// The identity actor's file name and source.
    pub identity: (&'a str, &'a str),
    /// The same identity as an async actor (file name, source): its
    /// invocations are measured interleaved with the sync one's.
    pub async_identity: (&'a str, &'a str),
    /// A warm worker golden whose shared region holds a 64 MiB message
    /// each way ([`BIG_SHM_MIB`]).
    pub big_golden: (std::path::PathBuf, VmConfig),
}

/// The shared region (MiB) of the golden for 64 MiB messages.
pub const BIG_SHM_MIB: u32 = 160;

/// The large message's size.
const BIG: usize = 64 << 20;

/// 64 MiB through the identity actor and back, on a clone whose region
/// holds it; the round trips, the first left out. Each payload is built
/// before its clock starts.
fn big_payload(lang: &Language<'_>) -> Vec<Duration> {
    let (dir, config) = &lang.big_golden;
    let vm = TestVm::restore(dir, config.clone(), Box::new(std::io::sink()));
    let mut times = Vec::new();
    {
        let shared = vm.shared.clone().expect("a shared region");
        let mut c = WorkerClient::attach(shared.ring_region(), &shared.layout());
        c.load("id", lang.identity.0, lang.identity.1, LIMIT)
            .expect("load");
        // Limits large enough for the message and its echo.
        let limits = Limits {
            max_message_bytes: 2 * BIG,
            max_output_bytes: 2 * BIG,
            max_output_total_bytes: 2 * BIG,
            ..Limits::with_timeout(LIMIT)
        };
        for i in 0..=report::samples(10) {
            let payload = input(BIG);
            let mut sink = Sink::default();
            let t = Instant::now();
            c.invoke("id", payload, Value::Map(vec![]), &limits, &mut sink)
                .expect("a 64 MiB identity invocation");
            if i > 0 {
                times.push(t.elapsed());
            }
            assert_eq!(sink.0, 1, "one output per invocation");
        }
    }
    vm.power_off();
    times.sort();
    times
}

/// Counts outputs; refuses state (the identity actor has none).
#[derive(Default)]
struct Sink(usize);

impl InvokeHandler for Sink {
    fn output(&mut self, _: &str, _: Value) {
        self.0 += 1;
    }
    fn state(&mut self, _: StateRequest) -> Result<Value, String> {
        Err("no state in this bench".into())
    }
}

pub(crate) fn input(len: usize) -> Value {
    Value::Map(vec![("input".into(), Value::Bytes(vec![7; len]))])
}

/// The payload sizes of the identity round trips.
pub(crate) const RTT_LENS: [usize; 2] = [64, 4096];

/// How many 64 B identity messages the sequential rate is over.
pub(crate) const SEQUENTIAL: usize = 5000;

/// Identity round trips of `len` bytes on `c`, after 50 to warm up.
pub(crate) fn round_trips(c: &mut WorkerClient<'_>, len: usize) -> Vec<Duration> {
    let payload = input(len);
    for _ in 0..50 {
        identity(c, &payload);
    }
    crate::sample(report::samples(2000), || identity(c, &payload))
}

/// 64 B identity messages per second on `c`, one after another, over `n`.
pub(crate) fn sequential_rate(c: &mut WorkerClient<'_>, n: usize) -> f64 {
    let payload = input(64);
    let t = Instant::now();
    for _ in 0..n {
        identity(c, &payload);
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// One identity invocation; panics unless exactly one output came back.
pub(crate) fn identity(c: &mut WorkerClient<'_>, payload: &Value) {
    identity_as(c, "id", payload)
}

/// One invocation of the identity loaded as `actor`.
fn identity_as(c: &mut WorkerClient<'_>, actor: &str, payload: &Value) {
    let mut sink = Sink::default();
    c.invoke(
        actor,
        payload.clone(),
        Value::Map(vec![]),
        &Limits::with_timeout(LIMIT),
        &mut sink,
    )
    .expect("identity invocation");
    assert_eq!(sink.0, 1, "one output per invocation");
}

/// Restores a clone, loads the identity actor and invokes it once; returns
/// (restore to ready, load + first invocation).
fn first_message(lang: &Language<'_>) -> (Duration, Duration) {
    let (dir, config) = &lang.golden;
    // From before the restore call: mapping, device rebuild and state load
    // are counted.
    let t = Instant::now();
    let vm = TestVm::restore(dir, config.clone(), Box::new(std::io::sink()));
    let ready = t.elapsed();
    let t = Instant::now();
    {
        let shared = vm.shared.clone().expect("a shared region");
        let mut c = WorkerClient::attach(shared.ring_region(), &shared.layout());
        c.load("id", lang.identity.0, lang.identity.1, LIMIT)
            .expect("load");
        identity(&mut c, &input(64));
    }
    let first = t.elapsed();
    vm.power_off();
    (ready, first)
}

/// Runs the bench for `lang` and records its figures.
pub fn run(c: &mut Criterion, lang: &Language<'_>) {
    let (dir, config) = &lang.golden;
    let name = lang.name;
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(5));

    let mut readies = Vec::new();
    let mut firsts = Vec::new();
    let mut totals = Vec::new();
    group.bench_function("restore_to_first_answer", |b| {
        b.iter_custom(|iters| {
            let mut sum = Duration::ZERO;
            for _ in 0..iters {
                let (ready, first) = first_message(lang);
                readies.push(ready);
                firsts.push(first);
                totals.push(ready + first);
                sum += ready + first;
            }
            sum
        })
    });

    // Steady state on one clone.
    let vm = TestVm::restore(dir, config.clone(), Box::new(std::io::sink()));
    let shared = vm.shared.clone().expect("a shared region");
    let mut client = WorkerClient::attach(shared.ring_region(), &shared.layout());
    client
        .load("id", lang.identity.0, lang.identity.1, LIMIT)
        .expect("load");
    let mut rtts = Vec::new();
    for len in RTT_LENS {
        let times = round_trips(&mut client, len);
        let payload = input(len);
        group.bench_function(format!("identity_round_trip_{len}B"), |b| {
            b.iter(|| identity(&mut client, &payload))
        });
        rtts.push((len, times));
    }
    group.finish();

    let n = SEQUENTIAL;
    let rate = sequential_rate(&mut client, n);

    // Sync against async on the same clone, in alternating blocks (a
    // node's VM runs one actor: its invocations follow each other; the
    // blocks cancel drift), the first of each block left out.
    client
        .load("aid", lang.async_identity.0, lang.async_identity.1, LIMIT)
        .expect("load the async identity");
    let payload = input(64);
    let (mut sync_times, mut async_times) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        for (actor, times) in [("id", &mut sync_times), ("aid", &mut async_times)] {
            for i in 0..101 {
                let t = Instant::now();
                identity_as(&mut client, actor, &payload);
                if i > 0 {
                    times.push(t.elapsed());
                }
            }
        }
    }
    sync_times.sort();
    async_times.sort();
    vm.power_off();

    for v in [&mut readies, &mut firsts, &mut totals] {
        v.sort();
    }
    let med = |v: &[Duration]| ms(percentile(v, 0.5));
    report::reset(name);
    let age = report::golden_age(dir);
    report::record_times(
        name,
        "restore to first answer (fresh clone, identity actor)",
        &totals,
        &format!("restore + handshake + load + first invocation; {age}"),
    );
    report::record_times(
        name,
        &format!("restore to agent ready ({name} worker golden)"),
        &readies,
        &age,
    );
    report::record_times(
        name,
        "pre-warmed instantiation: load + first answer on a ready clone",
        &firsts,
        "what a pool's ready clone pays",
    );
    for (len, times) in &rtts {
        report::record_times(
            name,
            &format!("identity round trip {len} B"),
            times,
            "message processing, closed loop",
        );
    }
    record(
        name,
        "sequential 64 B invocations (unbatched)",
        rate,
        "one at a time",
    );
    println!(
        "{name}: first message on a freshly restored clone: restore to first answer {:.0} ms \
         (restore-to-ready {:.0} ms + load and first invocation {:.1} ms; {} clones)",
        med(&totals),
        med(&readies),
        med(&firsts),
        totals.len()
    );
    for (len, times) in &rtts {
        let p50 = ms(percentile(times, 0.5));
        println!(
            "{name}: identity round trip {len} B: p50 {p50:.3} ms, p99 {:.3} ms ({} samples); \
             design target < 5 ms: {:.0}x under",
            ms(percentile(times, 0.99)),
            times.len(),
            5.0 / p50
        );
    }
    println!(
        "{name}: sequential 64 B identity invocations: {rate:.0} msg/s ({n} messages); \
         design target 10,000 msg/s: ratio {:.2}",
        rate / 10_000.0
    );
    let big = big_payload(lang);
    let big_ms = med(&big);
    let gbs = BIG as f64 / (big_ms / 2.0 / 1e3) / 1e9;
    println!(
        "{name}: 64 MiB through the identity actor: round trip p50 {big_ms:.1} ms, p99 {:.1} ms \
         = {gbs:.2} GB/s each way ({} round trips)",
        ms(percentile(&big, 0.99)),
        big.len()
    );
    let actor = if name == "python" {
        "a Python actor"
    } else {
        "a JavaScript actor"
    };
    record(
        name,
        &format!("64 MiB through {actor}"),
        gbs,
        &format!(
            "each way: 64 MiB over half the round trip (p50 {big_ms:.1} ms); 3 copies per \
             round trip: host encode into the ring, the worker's output encode, host decode"
        ),
    );
    let (sync_p50, async_p50) = (med(&sync_times), med(&async_times));
    record(
        name,
        "async identity round trip 64 B / sync (alternating blocks)",
        async_p50 / sync_p50,
        &format!("async p50 {async_p50:.3} ms, sync {sync_p50:.3} ms"),
    );
    println!(
        "{name}: identity round trip 64 B, async actor p50 {async_p50:.3} ms (p99 {:.3}) against \
         sync p50 {sync_p50:.3} ms (p99 {:.3}), alternating blocks of 100: {:.2}x",
        ms(percentile(&async_times, 0.99)),
        ms(percentile(&sync_times, 0.99)),
        async_p50 / sync_p50
    );
    let vm_rtt_64 = percentile(&rtts[0].1, 0.5);
    crate::process_bench::run(lang, vm_rtt_64);
}
