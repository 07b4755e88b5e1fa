//! Python actors in a real VM: the actor suite (tests/src/actor_suite.rs,
//! run for JavaScript by javascript.rs) with the Python scripts, on clones
//! of a golden snapshot taken with the Python worker running; x87 long
//! double arithmetic in a clone; and the golden's frozen heap.

use std::time::Instant;

use reflow_host_bridge::state::StateStore;
use reflow_integration_tests::actor_suite::{self, SHM_MIB};
use reflow_integration_tests::calls::{get, invoke, map};
use reflow_integration_tests::python_scripts::PYTHON;
use reflow_integration_tests::{kvm_available, warm_worker_golden, TestVm, LIMIT};
use reflow_ring::Value;
use reflow_sandbox_core::{Language, WorkerClient};

#[test]
fn python_actors_load_run_stream_keep_state_and_fail_cleanly() {
    actor_suite::actors_load_run_stream_keep_state_and_fail_cleanly(&PYTHON);
}

#[test]
fn python_clones_draw_different_random_numbers() {
    actor_suite::clones_draw_different_random_numbers(&PYTHON);
}

#[test]
fn python_state_operations_reach_the_embedded_store_and_redis() {
    actor_suite::state_operations_reach_the_embedded_store_and_redis(&PYTHON);
}

/// Long-double arithmetic as numpy does it in the guest, and numpy's
/// `finfo(longdouble)`: x87 extended precision depends on the FPU control
/// word and on the guest kernel saving and restoring x87 state (with
/// `noxsave` where the kernel is emulated, and across the snapshot).
const X87: &str = r#"
import sys
PREIMPORTED = "numpy" in sys.modules
import numpy as np
from reflow import fpu

@actor(name="X87", inports=[], outports=[])
def x87(context):
    ld = np.longdouble
    fi = np.finfo(ld)
    values = [ld(-1) / ld(10), ld(1) / ld(3), np.sqrt(ld(2)), fi.eps, fi.max, fi.tiny]
    return {
        "preimported": PREIMPORTED,
        "fcw": fpu.x87_control_word(),
        "finfo": [int(fi.nmant), int(fi.nexp), int(fi.machep), int(fi.minexp), int(fi.maxexp)],
        "values": [v.tobytes()[:10] for v in values],
    }
"#;

/// `op` on the host's x87 unit in this process: `a / b` or `sqrt(a)`, as
/// the 80-bit extended value's bytes.
fn host_x87(a: i32, b: Option<i32>) -> Vec<u8> {
    let mut out = [0u8; 10];
    match b {
        // SAFETY: loads two i32s from live locals, divides on the x87 stack
        // and pops the result into `out` (10 bytes); the stack is left empty.
        Some(b) => unsafe {
            std::arch::asm!(
                "fild dword ptr [{a}]",
                "fidiv dword ptr [{b}]",
                "fstp tbyte ptr [{out}]",
                a = in(reg) &a,
                b = in(reg) &b,
                out = in(reg) out.as_mut_ptr(),
                options(nostack),
            )
        },
        // SAFETY: as above, with fsqrt.
        None => unsafe {
            std::arch::asm!(
                "fild dword ptr [{a}]",
                "fsqrt",
                "fstp tbyte ptr [{out}]",
                a = in(reg) &a,
                out = in(reg) out.as_mut_ptr(),
                options(nostack),
            )
        },
    }
    out.to_vec()
}

/// The x87 control word of this host thread.
fn host_fcw() -> u16 {
    let mut cw = 0u16;
    // SAFETY: fnstcw stores two bytes into a live local.
    unsafe { std::arch::asm!("fnstcw word ptr [{p}]", p = in(reg) &mut cw, options(nostack)) };
    cw
}

/// An 80-bit extended value's bytes from its biased exponent and mantissa.
fn extended(exponent: u16, mantissa: u64) -> Vec<u8> {
    let mut v = mantissa.to_le_bytes().to_vec();
    v.extend(exponent.to_le_bytes());
    v
}

#[test]
fn x87_long_double_in_a_clone_matches_the_host_and_numpy_is_preloaded() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_worker_golden(Language::Python, SHM_MIB);
    let vm = TestVm::restore(&dir, config, Box::new(std::io::sink()));
    let shared = vm.shared.clone().expect("a shared region");
    let mut c = WorkerClient::attach(shared.ring_region(), &shared.layout());
    let store = StateStore::embedded();
    let t = Instant::now();
    c.load("x87", "x87.actor.py", X87, LIMIT).unwrap();
    eprintln!(
        "numpy actor loaded in a clone in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let (_, done) = invoke(&mut c, &store, "x87", map(vec![]), map(vec![])).unwrap();
    assert_eq!(
        get(&done, "preimported"),
        Some(&Value::Bool(true)),
        "numpy must be imported in the golden already"
    );
    assert_eq!(
        get(&done, "fcw"),
        Some(&Value::Int(i64::from(host_fcw()))),
        "the worker's x87 control word in a clone"
    );
    // x87 extended: 64-bit significand (63 stored fraction bits), 15-bit
    // exponent, eps 2^-63; under a 53-bit precision control numpy would
    // not recognise the type at all.
    let ints = |xs: &[i64]| Value::List(xs.iter().map(|&x| Value::Int(x)).collect());
    assert_eq!(
        get(&done, "finfo"),
        Some(&ints(&[63, 15, -63, -16382, 16384])),
        "np.finfo(np.longdouble) in the guest"
    );
    let expected = [
        host_x87(-1, Some(10)),
        host_x87(1, Some(3)),
        host_x87(2, None),
        extended(16383 - 63, 1 << 63),
        extended(0x7ffe, u64::MAX),
        extended(1, 1 << 63),
    ];
    // The host's own x87 must agree with the format before it judges.
    assert_eq!(
        host_x87(-1, Some(10)),
        extended(0xbffb, 0xcccc_cccc_cccc_cccd)
    );
    let got = match get(&done, "values") {
        Some(Value::List(items)) => items.clone(),
        other => panic!("values: {other:?}"),
    };
    let names = ["-1/10", "1/3", "sqrt(2)", "eps", "max", "tiny"];
    assert_eq!(got.len(), names.len());
    for ((name, got), want) in names.iter().zip(&got).zip(&expected) {
        assert_eq!(
            got,
            &Value::Bytes(want.clone()),
            "{name} as an 80-bit long double"
        );
    }
    vm.power_off();
}

/// Reports the worker's frozen heap and times the clone's first and second
/// full collections.
const COLLECTOR: &str = r#"
import gc, time

@actor(name="Collector")
def collector(context):
    times = []
    for _ in range(2):
        t = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - t)
    return {"frozen": gc.get_freeze_count(), "old": len(gc.get_objects(generation=2)),
            "first_us": int(times[0] * 1e6), "second_us": int(times[1] * 1e6)}
"#;

/// The golden's worker freezes its heap (interpreter, SDK, preloads) before
/// the snapshot, so a full collection in a clone walks only what the actor
/// made instead of writing to every object the clone shares with the golden
/// (copying the whole heap, page by page, in the middle of a stream).
#[test]
fn a_clones_full_collection_leaves_the_goldens_heap_alone() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_worker_golden(Language::Python, SHM_MIB);
    let vm = TestVm::restore(&dir, config, Box::new(std::io::sink()));
    let shared = vm.shared.clone().expect("a shared region");
    let mut c = WorkerClient::attach(shared.ring_region(), &shared.layout());
    let store = StateStore::embedded();
    c.load("gc", "gc.actor.py", COLLECTOR, LIMIT).unwrap();
    let (_, done) = invoke(&mut c, &store, "gc", map(vec![]), map(vec![])).unwrap();
    let int = |key| match get(&done, key) {
        Some(Value::Int(n)) => *n,
        other => panic!("{key}: {other:?}"),
    };
    let (frozen, old) = (int("frozen"), int("old"));
    eprintln!(
        "a clone's worker: {frozen} objects frozen, {old} left to collect; full collections \
         {} us then {} us",
        int("first_us"),
        int("second_us")
    );
    // numpy alone makes thousands of tracked objects; what the actor's load
    // and call left is a small fraction of them.
    assert!(frozen > 1000, "the golden froze {frozen} objects");
    assert!(
        old < frozen / 4,
        "{old} objects outside the frozen heap, {frozen} in it"
    );
    vm.power_off();
}
