//! The VM pool on clones of the warm Python worker golden: preloading,
//! the size cap, refills, fresh clones only, and failures that leave the
//! pool's count right.

use std::time::{Duration, Instant};

use reflow_agent_protocol::request::Request;
use reflow_integration_tests::calls::{run_once, NoState};
use reflow_integration_tests::{kvm_available, warm_python_golden, LIMIT};
use reflow_ring::Value;
use reflow_sandbox_core::{Limits, PoolConfig, PoolError, SandboxError, SandboxVm, VmPool, VmSpec};

const SHM_MIB: u32 = 40;

/// Outputs ignored; no state.
fn spec() -> VmSpec {
    let (golden, config) = warm_python_golden(SHM_MIB, "run_worker.py", "worker.ready");
    VmSpec::new(golden, config)
}

fn config(preload_count: usize, max_size: usize) -> PoolConfig {
    PoolConfig {
        preload_count,
        max_size,
        restore_timeout: LIMIT,
    }
}

/// Waits until the pool's counts are `want` (refills run in the background).
fn settle(pool: &VmPool, want: (usize, usize)) {
    let t = Instant::now();
    while pool.counts() != want {
        assert!(
            t.elapsed() < LIMIT,
            "pool stuck at {:?}, want {want:?}",
            pool.counts()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_pool_preloads_caps_refills_and_lends_fresh_clones() {
    if !kvm_available() {
        return;
    }
    let pool = VmPool::new(spec(), config(2, 3));
    assert_eq!(pool.wait_ready(LIMIT), 2, "{:?}", pool.last_error());
    assert_eq!(pool.counts(), (2, 2));
    let t = Instant::now();
    let mut a = pool.acquire(LIMIT).unwrap();
    let took = t.elapsed();
    eprintln!(
        "a preloaded clone was lent in {:.2} ms",
        took.as_secs_f64() * 1e3
    );
    settle(&pool, (2, 3));
    let mut b = pool.acquire(LIMIT).unwrap();
    let mut c = pool.acquire(LIMIT).unwrap();
    settle(&pool, (0, 3));
    // Full: a fourth waits, then gives up with a clear error.
    match pool.acquire(Duration::from_millis(300)) {
        Err(PoolError::Exhausted { max: 3, .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a fourth VM beyond max_size 3"),
    }
    // Lent clones are live and run actors; a VM's client goes on from
    // call to call.
    for vm in [&mut b, &mut c] {
        let src = "@actor(name=\"Id\", inports=[\"x\"], outports=[\"x\"])\ndef f(context):\n    return {\"x\": context.get_input(\"x\")}\n";
        vm.with_worker(|w| w.load("id", "id.actor.py", src, LIMIT))
            .unwrap();
        for i in 0..3 {
            let inputs = Value::Map(vec![("x".into(), Value::Int(i))]);
            let done = vm
                .with_worker(|w| {
                    w.invoke(
                        "id",
                        inputs,
                        Value::Map(vec![]),
                        &Limits::with_timeout(LIMIT),
                        &mut NoState,
                    )
                })
                .unwrap();
            assert_eq!(done, Value::Map(vec![("x".into(), Value::Int(i))]));
        }
    }
    // A VM that died is still counted until dropped; dropping it frees
    // room, which a refill takes up again.
    a.control()
        .expect("a VM")
        .request(&Request::Poweroff { status: 0 }, LIMIT)
        .unwrap();
    let t = Instant::now();
    while a.is_alive() {
        assert!(t.elapsed() < LIMIT, "the guest did not power off");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(a);
    let d = pool.acquire(LIMIT).expect("room after a VM was dropped");
    assert!(d.is_alive());
    drop((b, c, d));
    settle(&pool, (2, 2));
    pool.shutdown();
    assert_eq!(pool.counts(), (0, 0));
    assert!(matches!(pool.acquire(LIMIT), Err(PoolError::Closed)));
}

#[test]
fn a_failing_restore_is_an_error_and_frees_its_place() {
    if !kvm_available() {
        return;
    }
    let mut bad = spec();
    bad.golden = bad.golden.join("missing");
    let pool = VmPool::new(bad, config(1, 2));
    assert_eq!(pool.wait_ready(LIMIT), 0);
    assert!(pool.last_error().is_some());
    match pool.acquire(LIMIT) {
        // The bridge checks the snapshot before it starts a monitor.
        Err(PoolError::Sandbox(SandboxError::Snapshot(_))) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a VM from a missing snapshot"),
    }
    settle(&pool, (0, 0));
}

/// A held clone (how the pool keeps its ready ones) does not run its guest:
/// its agent answers nothing until the clone is released, then at once.
#[test]
fn a_held_clone_runs_nothing_until_released() {
    if !kvm_available() {
        return;
    }
    let mut vm = SandboxVm::restore(&spec(), LIMIT).unwrap();
    vm.control()
        .expect("a VM")
        .request(&Request::Uptime, LIMIT)
        .unwrap();
    vm.hold().unwrap();
    let gate = vm.gate().expect("a VM");
    let released = std::thread::scope(|s| {
        let control = vm.control().expect("a VM");
        let asked = s.spawn(move || {
            let up = control.request(&Request::Uptime, LIMIT);
            (up, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(700));
        assert!(!asked.is_finished(), "a held guest answered");
        let released = Instant::now();
        gate.release();
        let (up, answered) = asked.join().unwrap();
        up.unwrap();
        answered - released
    });
    eprintln!("answered {released:?} after the release");
    assert!(vm.is_alive());
    // Holding twice, and killing a held clone, are fine too.
    vm.hold().unwrap();
    vm.hold().unwrap();
    assert!(vm.kill().is_some(), "a held clone stops when killed");
}

/// A pool's preparation runs on each clone before it is lent (the clone
/// comes with the script loaded); one that fails is an error, not a
/// clone lent half-prepared.
#[test]
fn clones_are_prepared_before_they_are_lent() {
    if !kvm_available() {
        return;
    }
    let src = "@actor(name=\"Id\", inports=[\"x\"], outports=[\"x\"])\ndef f(context):\n    return {\"x\": context.get_input(\"x\")}\n";
    let prepare: reflow_sandbox_core::pool::Prepare =
        std::sync::Arc::new(move |vm: &mut SandboxVm| {
            vm.with_worker(|w| w.load("prepared", "id.actor.py", src, LIMIT))
                .map(drop)
                .map_err(|e| e.to_string())
        });
    let pool = VmPool::with_prepare(spec(), config(1, 2), prepare);
    assert_eq!(pool.wait_ready(LIMIT), 1, "{:?}", pool.last_error());
    let mut vm = pool.acquire(LIMIT).unwrap();
    let inputs = Value::Map(vec![("x".into(), Value::Int(7))]);
    let done = run_once(&mut vm, "prepared", inputs)
        .expect("the script was loaded before the clone was lent");
    assert_eq!(done, Value::Map(vec![("x".into(), Value::Int(7))]));
    drop(vm);
    pool.shutdown();

    let failing: reflow_sandbox_core::pool::Prepare =
        std::sync::Arc::new(|_: &mut SandboxVm| Err("no thanks".into()));
    let pool = VmPool::with_prepare(spec(), config(0, 1), failing);
    match pool.acquire(LIMIT) {
        Err(PoolError::Prepare(why)) => assert_eq!(why, "no thanks"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a clone whose preparation failed was lent"),
    }
    assert_eq!(pool.counts(), (0, 0), "the failed clone still counts");
}
