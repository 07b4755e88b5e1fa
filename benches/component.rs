//! Component goldens against the load path, side by side in one run, and
//! a 3-hour-old golden against a new one:
//!
//! - restore to the first answer of a Python actor: a clone of its
//!   component golden (the script loaded before the snapshot) against a
//!   clone of the runtime golden that loads the script first;
//! - the pool path: acquire a preloaded (held) clone, load, first answer,
//!   from a pool of each;
//! - restore to ready from the runtime golden against a copy of it made to
//!   look 3 hours old (`reflow_vmm::snapshot::age`).
//!
//! Samples interleaved; medians and p99s to `target/bench-report.md`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_benches::{kvm_available, median, ms, p99, report};
use reflow_integration_tests::calls::{load_and_run, run_once};
use reflow_integration_tests::{warm_worker_golden, LIMIT};
use reflow_ring::Value;
use reflow_sandbox_core::component::{self, ComponentSettings};
use reflow_sandbox_core::{Language, PoolConfig, SandboxVm, Script, VmPool, VmSpec};
use reflow_vmm::snapshot::age::{aged_copy, CLOCK_SHIFT_ENV};

const SAMPLES: usize = 30;

/// An identity actor whose module does a little work at its top level,
/// as real ones do (imports, constants).
const IDENTITY: &str = r#"
import json, statistics
import numpy as np

SCALE = np.arange(16, dtype=np.float64)
NAMES = {i: f"n{i}" for i in range(256)}

@actor(name="Identity", inports=["x"], outports=["x"])
def identity(context):
    return {"x": context.get_input("x")}
"#;

/// Loads the script on `vm` and runs one message.
fn load_and_answer(vm: &mut SandboxVm, script: &Script) {
    load_and_run(vm, script, Value::Map(vec![("x".into(), Value::Int(1))]));
}

/// Runs one message on `vm`, whose script is loaded.
fn answer(vm: &mut SandboxVm) {
    let inputs = Value::Map(vec![("x".into(), Value::Int(1))]);
    run_once(vm, "node", inputs).expect("answers");
}

fn record(metric: &str, times: &[Duration], note: &str) {
    report::record_times("component", metric, times, note);
}

fn components(_: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let (golden, config) = warm_worker_golden(Language::Python, 40);
    let runtime = VmSpec::new(golden.clone(), config.clone());
    let script = Script::inline(Language::Python, "identity.py", IDENTITY);
    let settings = ComponentSettings {
        load_timeout: LIMIT,
        restore_timeout: LIMIT,
        ..ComponentSettings::default()
    };
    let t = Instant::now();
    let made = component::ensure(&runtime, &script, &settings, &|m| {
        println!("component: {m}")
    })
    .expect("a component golden");
    if made.created {
        println!(
            "component: golden built in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let comp = made.spec.clone();
    // The first restore of each in a process checks its memory digest.
    for spec in [&runtime, &comp] {
        let mut vm = SandboxVm::restore(spec, LIMIT).expect("a clone");
        load_and_answer(&mut vm, &script);
    }
    let note = format!(
        "Python identity actor importing numpy; {} of each, interleaved; {}",
        report::samples(SAMPLES),
        report::golden_age(&golden)
    );

    // Restore to ready, and to the first answer.
    let (mut by_load, mut by_comp) = (Vec::new(), Vec::new());
    let (mut ready_runtime, mut ready_comp) = (Vec::new(), Vec::new());
    for _ in 0..report::samples(SAMPLES) {
        for (spec, into, ready) in [
            (&runtime, &mut by_load, &mut ready_runtime),
            (&comp, &mut by_comp, &mut ready_comp),
        ] {
            let t = Instant::now();
            let mut vm = SandboxVm::restore(spec, LIMIT).expect("a clone");
            ready.push(vm.ready_after());
            load_and_answer(&mut vm, &script);
            into.push(t.elapsed());
        }
    }
    record("restore to ready, runtime golden", &ready_runtime, &note);
    record("restore to ready, component golden", &ready_comp, &note);
    println!(
        "component: restore to ready: runtime golden median {:.1} ms, component golden median \
         {:.1} ms",
        ms(median(ready_runtime)),
        ms(median(ready_comp))
    );
    record(
        "restore to first answer, runtime golden + load",
        &by_load,
        &note,
    );
    record("restore to first answer, component golden", &by_comp, &note);
    println!(
        "component: restore to first answer: runtime golden + load median {:.1} ms (p99 {:.1}), \
         component golden median {:.1} ms (p99 {:.1}); ratio {:.2}",
        ms(median(by_load.clone())),
        ms(p99(by_load.clone())),
        ms(median(by_comp.clone())),
        ms(p99(by_comp.clone())),
        ms(median(by_comp)) / ms(median(by_load)).max(1e-9)
    );

    // The pool path: a held, preloaded clone is lent, then load and answer.
    let pool_config = PoolConfig {
        preload_count: 1,
        max_size: 2,
        restore_timeout: LIMIT,
    };
    // As the host bridge makes them: a component pool loads the script on
    // each clone before lending it (the node's LOAD then finds it loaded).
    let preload = {
        let script = script.clone();
        move |vm: &mut SandboxVm| {
            vm.with_worker(|c| c.load("pool-preload", &script.name, &script.source, LIMIT))
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
    let pools = [
        VmPool::new(runtime.clone(), pool_config.clone()),
        VmPool::with_prepare(comp.clone(), pool_config, std::sync::Arc::new(preload)),
    ];
    let (mut pool_load, mut pool_comp) = (Vec::new(), Vec::new());
    // The component clone's first answer, step by step: acquire (release
    // the held clone), LOAD (found loaded: reseed only), first invocation;
    // and a second invocation for comparison.
    let mut steps: [Vec<Duration>; 4] = Default::default();
    for _ in 0..report::samples(SAMPLES) {
        for (i, (pool, into)) in pools
            .iter()
            .zip([&mut pool_load, &mut pool_comp])
            .enumerate()
        {
            assert_eq!(pool.wait_ready(LIMIT), 1, "{:?}", pool.last_error());
            let t = Instant::now();
            let mut vm = pool.acquire(LIMIT).expect("a pooled clone");
            let acquired = t.elapsed();
            vm.with_worker(|c| c.load("node", &script.name, &script.source, LIMIT))
                .expect("loads");
            let loaded = t.elapsed();
            answer(&mut vm);
            let answered = t.elapsed();
            into.push(answered);
            if i == 1 {
                answer(&mut vm);
                let again = t.elapsed() - answered;
                for (step, d) in
                    steps
                        .iter_mut()
                        .zip([acquired, loaded - acquired, answered - loaded, again])
                {
                    step.push(d);
                }
            }
        }
    }
    let [acquire, load, first, second] = steps.map(median);
    println!(
        "component: pooled component clone, medians: acquire {:.2} ms, LOAD (reseed only) {:.2} ms, \
         first invocation {:.2} ms, second invocation {:.2} ms",
        ms(acquire),
        ms(load),
        ms(first),
        ms(second)
    );
    for p in &pools {
        p.shutdown();
    }
    record(
        "pool acquire to first answer, runtime golden + load",
        &pool_load,
        &note,
    );
    record(
        "pool acquire to first answer, component golden",
        &pool_comp,
        &note,
    );
    println!(
        "component: pool acquire to first answer: runtime golden + load median {:.1} ms \
         (p99 {:.1}), component golden median {:.1} ms (p99 {:.1})",
        ms(median(pool_load.clone())),
        ms(p99(pool_load)),
        ms(median(pool_comp.clone())),
        ms(p99(pool_comp))
    );

    // A 3-hour-old golden: restore to agent ready.
    let age = Duration::from_secs(3 * 3600);
    let aged_dir = golden
        .parent()
        .expect("a cache directory")
        .join(format!(".aged-bench-{}", std::process::id()));
    aged_copy(&golden, &aged_dir, age).expect("an aged copy");
    let aged = VmSpec::new(aged_dir.clone(), config);
    let restore = |spec: &VmSpec, shift: Duration| {
        std::env::set_var(CLOCK_SHIFT_ENV, shift.as_secs().to_string());
        let vm = SandboxVm::restore(spec, LIMIT).expect("a clone");
        std::env::remove_var(CLOCK_SHIFT_ENV);
        vm.ready_after()
    };
    restore(&aged, age);
    let (mut fresh, mut old) = (Vec::new(), Vec::new());
    for _ in 0..report::samples(SAMPLES) {
        fresh.push(restore(&runtime, Duration::ZERO));
        old.push(restore(&aged, age));
    }
    let _ = std::fs::remove_dir_all(&aged_dir);
    record("restore to ready, golden as made", &fresh, &note);
    record(
        "restore to ready, golden made to look 3 hours old",
        &old,
        &note,
    );
    println!(
        "component: restore to ready: golden as made median {:.1} ms (p99 {:.1}), 3 hours old \
         median {:.1} ms (p99 {:.1}); ratio {:.2}",
        ms(median(fresh.clone())),
        ms(p99(fresh.clone())),
        ms(median(old.clone())),
        ms(p99(old.clone())),
        ms(median(old)) / ms(median(fresh)).max(1e-9)
    );
}

criterion_group!(benches, components);
criterion_main!(benches);
