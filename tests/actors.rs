//! Python actors in a real VM: clones of a golden snapshot taken with the
//! Python worker running load scripts and run them over the ring, driven by
//! the host bridge's worker client, with state in the host bridge's
//! embedded store (and Redis for the state test).

use std::time::Instant;

use reflow_host_bridge::state::{Scope, StateStore};
use reflow_host_bridge::{ErrorKind, StateOp, StateRequest, WorkerClient, WorkerError};
use reflow_integration_tests::calls::{
    check_ledger, get, invoke, map, returned_by_two_clones, runtime, text,
};
use reflow_integration_tests::{kvm_available, warm_python_golden, TestVm, LIMIT};
use reflow_ring::Value;

/// Room for a 16 MiB message each way.
const SHM_MIB: u32 = 40;

const MULTIPLIER: &str = r#"
@actor(name="Multiplier", inports=["input"], outports=["output"], tags=["math"])
async def process(context):
    """Multiplies its input by the configured factor."""
    x = context.get_input("input", 0)
    factor = context.config.get("factor", 2)
    n = await context.state.increment("calls")
    await context.send_output("output", x * factor)
    return {"calls": n}
"#;

const SPLITTER: &str = r#"
@actor({"component": "Splitter", "inports": ["items"], "outports": ["even", "odd"]})
def split(context):
    for x in context.get_input("items"):
        context.send_output_sync("even" if x % 2 == 0 else "odd", x)
"#;

const IDENTITY: &str = r#"
@actor(name="Identity", inports=["input"], outports=["output"])
def identity(context):
    data = context.get_input("input")
    assert isinstance(data, memoryview), "bytes arrive in place"
    context.send_output_sync("output", data)
"#;

const NUMPY: &str = r#"
import numpy as np

@actor(name="Scale", inports=["input"], outports=["output"])
def scale(context):
    a = np.frombuffer(context.get_input("input"), dtype="<f4")
    assert not a.flags.owndata, "the input is viewed in place"
    context.send_output_sync("output", a * 2)
    context.send_output_sync("output", a[::2])
    return {"sum": float(a.sum())}
"#;

fn f32_bytes(values: impl Iterator<Item = f32>) -> Value {
    Value::Bytes(values.flat_map(f32::to_le_bytes).collect())
}

#[test]
fn python_actors_load_run_stream_keep_state_and_fail_cleanly() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_python_golden(SHM_MIB, "run_worker.py", "worker.ready");
    let restored = Instant::now();
    let vm = TestVm::restore(&dir, config, Box::new(std::io::sink()));
    let shared = vm.shared.clone().expect("a shared region");
    let mut c = WorkerClient::attach(shared.ring_region(), &shared.layout());
    let store = StateStore::embedded();

    // Load, then a stateful counter with config across three messages.
    let loaded = c.load("mul", "mul.actor.py", MULTIPLIER, LIMIT).unwrap();
    assert_eq!(text(get(&loaded.metadata, "component")), "Multiplier");
    assert_eq!(
        text(get(&loaded.metadata, "description")),
        "Multiplies its input by the configured factor."
    );
    eprintln!(
        "restore to first actor loaded: {:.0} ms",
        restored.elapsed().as_secs_f64() * 1e3
    );
    for n in 1..=3i64 {
        let t = Instant::now();
        let got = invoke(
            &mut c,
            &store,
            "mul",
            map(vec![("input", Value::Int(7))]),
            map(vec![("factor", Value::Int(3))]),
        )
        .unwrap();
        assert_eq!(
            got,
            (
                vec![("output".into(), Value::Int(21))],
                map(vec![("calls", Value::Int(n))])
            )
        );
        eprintln!(
            "multiplier invocation {n}: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let calls = StateRequest {
        op: StateOp::Get,
        key: "calls".into(),
        args: vec![],
    };
    let stored = runtime().block_on(store.apply(&Scope::new("test", "mul"), &calls));
    assert_eq!(stored, Ok(Value::Int(3)));

    // Several outputs from one invocation (dict-form decorator, sync).
    c.load("split", "split.actor.py", SPLITTER, LIMIT).unwrap();
    let items = Value::List((1..=4).map(Value::Int).collect());
    let (outputs, _) = invoke(
        &mut c,
        &store,
        "split",
        map(vec![("items", items)]),
        map(vec![]),
    )
    .unwrap();
    let ports: Vec<(&str, &Value)> = outputs.iter().map(|(p, v)| (p.as_str(), v)).collect();
    assert_eq!(
        ports,
        [
            ("odd", &Value::Int(1)),
            ("even", &Value::Int(2)),
            ("odd", &Value::Int(3)),
            ("even", &Value::Int(4))
        ]
    );

    // Bytes, small and 16 MiB, back byte-identical.
    c.load("id", "id.actor.py", IDENTITY, LIMIT).unwrap();
    for len in [16usize, 16 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let t = Instant::now();
        let (outputs, _) = invoke(
            &mut c,
            &store,
            "id",
            map(vec![("input", Value::Bytes(data.clone()))]),
            map(vec![]),
        )
        .unwrap();
        assert_eq!(outputs.len(), 1);
        assert!(
            outputs[0].1 == Value::Bytes(data),
            "{len}-byte payload differs"
        );
        eprintln!(
            "identity of {len} bytes: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }

    // numpy (baked into the image from requirements.txt): input bytes
    // viewed in place, arrays sent through the buffer protocol, a strided
    // one too.
    let t = Instant::now();
    c.load("np", "np.actor.py", NUMPY, LIMIT).unwrap();
    eprintln!(
        "numpy actor loaded (imports numpy) in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let floats = || (0..1024u16).map(|i| f32::from(i) * 0.5);
    let (outputs, done) = invoke(
        &mut c,
        &store,
        "np",
        map(vec![("input", f32_bytes(floats()))]),
        map(vec![]),
    )
    .unwrap();
    assert_eq!(
        outputs,
        vec![
            ("output".into(), f32_bytes(floats().map(|x| x * 2.0))),
            ("output".into(), f32_bytes(floats().step_by(2))),
        ]
    );
    assert_eq!(done, map(vec![("sum", Value::Float(261_888.0))]));

    // A raising actor and a broken script: errors with reasons; the worker
    // goes on.
    let raising = "@actor(name=\"Boom\")\ndef boom(context):\n    raise ValueError(\"kaput\")\n";
    c.load("boom", "boom.actor.py", raising, LIMIT).unwrap();
    match invoke(&mut c, &store, "boom", map(vec![]), map(vec![])) {
        Err(WorkerError::Actor(e)) => {
            assert_eq!(e.kind, ErrorKind::Run);
            assert!(e.message.contains("ValueError: kaput"), "{e}");
            assert!(e.traceback.contains("Traceback"), "{e:?}");
            assert!(e.traceback.contains("boom.actor.py"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    match c.load(
        "broken",
        "broken.actor.py",
        "@actor(name=\"X\")\ndef f(context:\n",
        LIMIT,
    ) {
        Err(WorkerError::Actor(e)) => {
            assert_eq!(e.kind, ErrorKind::Load);
            assert!(e.message.contains("SyntaxError"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let got = invoke(
        &mut c,
        &store,
        "mul",
        map(vec![("input", Value::Int(1))]),
        map(vec![]),
    );
    assert!(got.is_ok(), "the worker survived: {got:?}");

    let outcome = vm.power_off();
    assert_eq!(outcome.exit_code(), 0);
    assert!(outcome.hostile.is_empty(), "{:?}", outcome.hostile);
}

const RANDOM: &str = r#"
import random

@actor(name="Dice", outports=["roll"])
def dice(context):
    return {"roll": random.getrandbits(62)}
"#;

/// Clones of one golden do not share Python's `random` state: the worker
/// reseeds it from the kernel (itself reseeded by the host's handshake)
/// when a script is loaded.
#[test]
fn clones_draw_different_random_numbers() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_python_golden(SHM_MIB, "run_worker.py", "worker.ready");
    let rolls = returned_by_two_clones(&dir, &config, "dice.actor.py", RANDOM);
    let rolls: Vec<_> = rolls
        .iter()
        .map(|done| get(done, "roll").cloned())
        .collect();
    assert!(matches!(rolls[0], Some(Value::Int(_))), "{rolls:?}");
    assert_ne!(rolls[0], rolls[1], "two clones rolled the same number");
}

const LEDGER: &str = r#"
@actor(name="Ledger", inports=["item"], outports=["log"])
async def ledger(context):
    s = context.state
    item = context.get_input("item")
    await s.set("last", item)
    n = await s.push("items", item)
    total = await s.increment("total", item["qty"])
    first = await s.pop("items") if n > 2 else None
    kept = await s.expire("last", 60)
    if item["qty"] == 0:
        await s.increment("last")
    return {"last": await s.get("last"), "n": n, "total": total, "first": first, "kept": kept}
"#;

/// The SDK's six state operations reach the host's store through the ring,
/// with the same results from the embedded store and from a real Redis
/// server; a store error is raised in the actor.
#[test]
fn state_operations_reach_the_embedded_store_and_redis() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_python_golden(SHM_MIB, "run_worker.py", "worker.ready");
    check_ledger(&dir, &config, "ledger.actor.py", LEDGER);
}
