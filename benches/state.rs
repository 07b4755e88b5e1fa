//! The state service: `get` and `set` through the embedded store and
//! through a real Redis server (a private `redis-server` on this host,
//! persistence off), side by side in one run, against the design's target
//! (state get/set < 2 ms with Redis). Host side only: a guest's state call
//! adds a ring round trip each way (see `benches/python.rs`).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_benches::{report, sample};
use reflow_host_bridge::state::{Scope, StateStore};
use reflow_integration_tests::percentile;
use reflow_integration_tests::redis_server::RedisServer;
use reflow_ring::Value;
use reflow_sandbox_core::{StateOp, StateRequest};

/// Operations timed one by one for the percentiles, after criterion's.
const SAMPLES: usize = 20_000;

fn request(op: StateOp, args: Vec<Value>) -> StateRequest {
    StateRequest {
        op,
        key: "bench".into(),
        args,
    }
}

fn state(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let redis = RedisServer::start();
    let stores = [
        ("embedded", StateStore::embedded()),
        (
            "redis",
            rt.block_on(StateStore::redis(&redis.url()))
                .expect("connect"),
        ),
    ];
    let scope = Scope::new("bench", "actor");
    let value = Value::Map(vec![
        ("n".into(), Value::Int(42)),
        ("s".into(), Value::Str("x".repeat(100))),
    ]);
    let set = request(StateOp::Set, vec![value.clone()]);
    let get = request(StateOp::Get, vec![]);
    let mut group = c.benchmark_group("state");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let mut report = Vec::new();
    for (name, store) in &stores {
        for (op, req) in [("set", &set), ("get", &get)] {
            let mut run = || {
                let got = rt.block_on(store.apply(&scope, req)).expect("state op");
                if op == "get" {
                    assert_eq!(got, value);
                }
            };
            group.bench_function(format!("{name}_{op}"), |b| b.iter(&mut run));
            let times = sample(report::samples(SAMPLES), run);
            report.push((name, op, times));
        }
    }
    group.finish();
    let p50_of = |store: &str, which: &str| {
        report
            .iter()
            .find(|(n, op, _)| **n == store && *op == which)
            .map(|(_, _, t)| percentile(t, 0.5).as_secs_f64())
    };
    report::reset("state");
    for (name, op, times) in &report {
        let p50 = percentile(times, 0.5);
        report::record_times("state", &format!("{name} {op}, host side"), times, "");
        println!(
            "state: {name} {op}: p50 {:.1} us, p99 {:.1} us ({} samples); design target < 2 ms: {:.0}x under",
            p50.as_secs_f64() * 1e6,
            percentile(times, 0.99).as_secs_f64() * 1e6,
            times.len(),
            2e-3 / p50.as_secs_f64()
        );
    }
    for which in ["get", "set"] {
        if let (Some(r), Some(e)) = (p50_of("redis", which), p50_of("embedded", which)) {
            println!(
                "state: {which} p50, Redis / embedded (same run): {:.0}x",
                r / e
            );
        }
    }
}

criterion_group!(benches, state);
criterion_main!(benches);
