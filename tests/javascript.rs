//! JavaScript actors in a real VM: clones of a golden snapshot taken with
//! the Node worker running load scripts and run them over the ring, driven
//! by the host bridge's worker client, with state in the embedded store
//! (and Redis for the state test). The Python twins are in actors.rs.

use std::time::Instant;

use reflow_host_bridge::state::{Scope, StateStore};
use reflow_integration_tests::calls::{
    check_ledger, get, invoke, map, returned_by_two_clones, runtime, text,
};
use reflow_integration_tests::{kvm_available, warm_node_golden, TestVm, LIMIT};
use reflow_ring::Value;
use reflow_sandbox_core::{ErrorKind, StateOp, StateRequest, WorkerClient, WorkerError};

/// Room for a 16 MiB message each way.
const SHM_MIB: u32 = 40;

/// The issue's example, as users write it.
const GREETER: &str = r#"
const metadata = { component: "Greeter", description: "Greets", inports: ["name"], outports: ["greeting"] };
async function process(context) {
  const name = context.getInput("name", "world");
  await context.state.set("last", name);
  await context.sendOutput("greeting", `hello ${name}`);
}
module.exports = { metadata, process };
"#;

const MULTIPLIER: &str = r#"
module.exports.metadata = {
  name: "Multiplier", description: "Multiplies its input by the configured factor.",
  inports: ["input"], outports: ["output"], tags: ["math"], config: { factor: 2 },
};
module.exports.process = async (context) => {
  const x = context.getInput("input", 0);
  const n = await context.state.increment("calls");
  await context.sendOutput("output", x * context.getConfig().factor);
  return { calls: n };
};
"#;

const SPLITTER: &str = r#"
const __actor_metadata__ = { component: "Splitter", inports: ["items"], outports: ["even", "odd"] };
function process(context) {
  for (const x of context.getInput("items")) context.sendOutputSync(x % 2 === 0 ? "even" : "odd", x);
}
"#;

const IDENTITY: &str = r#"
exports.metadata = { name: "Identity", inports: ["input"], outports: ["output"] };
exports.process = (context) => {
  const data = context.getInput("input");
  if (!Buffer.isBuffer(data)) throw new TypeError("bytes arrive as a Buffer");
  context.sendOutputSync("output", data);
};
"#;

const LODASH: &str = r#"
const _ = require("lodash");
const metadata = { name: "Chunks", inports: ["items"], outports: ["chunks"] };
module.exports = { metadata, process: (c) => ({ chunks: _.chunk(c.getInput("items"), 2) }) };
"#;

#[test]
fn javascript_actors_load_run_stream_keep_state_and_fail_cleanly() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_node_golden(SHM_MIB);
    let restored = Instant::now();
    let vm = TestVm::restore(&dir, config, Box::new(std::io::sink()));
    let shared = vm.shared.clone().expect("a shared region");
    let mut c = WorkerClient::attach(shared.ring_region(), &shared.layout());
    let store = StateStore::embedded();

    // The issue's greeter: default input, state, an awaited output.
    let loaded = c.load("greet", "greet.actor.js", GREETER, LIMIT).unwrap();
    eprintln!(
        "restore to first actor loaded: {:.0} ms",
        restored.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(text(get(&loaded.metadata, "component")), "Greeter");
    assert_eq!(text(get(&loaded.metadata, "description")), "Greets");
    for (inputs, expected) in [
        (map(vec![("name", Value::Str("ada".into()))]), "hello ada"),
        (map(vec![]), "hello world"),
    ] {
        let got = invoke(&mut c, &store, "greet", inputs, map(vec![])).unwrap();
        assert_eq!(
            got,
            (
                vec![("greeting".into(), Value::Str(expected.into()))],
                map(vec![])
            )
        );
    }
    let last = StateRequest {
        op: StateOp::Get,
        key: "last".into(),
        args: vec![],
    };
    let stored = runtime().block_on(store.apply(&Scope::new("test", "greet"), &last));
    assert_eq!(stored, Ok(Value::Str("world".into())));

    // A stateful counter with config (a default, then overridden).
    c.load("mul", "mul.actor.js", MULTIPLIER, LIMIT).unwrap();
    for n in 1..=3i64 {
        let t = Instant::now();
        let config = if n == 1 {
            map(vec![])
        } else {
            map(vec![("factor", Value::Int(3))])
        };
        let got = invoke(
            &mut c,
            &store,
            "mul",
            map(vec![("input", Value::Int(7))]),
            config,
        )
        .unwrap();
        let product = if n == 1 { 14 } else { 21 };
        assert_eq!(
            got,
            (
                vec![("output".into(), Value::Int(product))],
                map(vec![("calls", Value::Int(n))])
            )
        );
        eprintln!(
            "multiplier invocation {n}: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }

    // Several outputs from one invocation (synchronous, top-level forms).
    c.load("split", "split.actor.js", SPLITTER, LIMIT).unwrap();
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

    // Bytes, small and 16 MiB, arrive as Buffers and come back identical.
    c.load("id", "id.actor.js", IDENTITY, LIMIT).unwrap();
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

    // An npm package baked into the image (node/npm-packages.txt).
    c.load("chunks", "chunks.actor.js", LODASH, LIMIT).unwrap();
    let items = Value::List((1..=3).map(Value::Int).collect());
    let (_, done) = invoke(
        &mut c,
        &store,
        "chunks",
        map(vec![("items", items)]),
        map(vec![]),
    )
    .unwrap();
    let chunks = Value::List(vec![
        Value::List(vec![Value::Int(1), Value::Int(2)]),
        Value::List(vec![Value::Int(3)]),
    ]);
    assert_eq!(done, map(vec![("chunks", chunks)]));

    // A throwing actor and a broken script: errors with reasons and
    // stacks; the worker goes on.
    let throwing = "const metadata = { name: \"Boom\" };\nasync function process(context) {\n  throw new RangeError(\"kaput\");\n}\n";
    c.load("boom", "boom.actor.js", throwing, LIMIT).unwrap();
    match invoke(&mut c, &store, "boom", map(vec![]), map(vec![])) {
        Err(WorkerError::Actor(e)) => {
            assert_eq!(e.kind, ErrorKind::Run);
            assert_eq!(e.message, "RangeError: kaput");
            assert!(e.traceback.contains("boom.actor.js:3"), "{e:?}");
            assert!(!e.traceback.contains("/opt/reflow"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    match c.load(
        "broken",
        "broken.actor.js",
        "const metadata = { name: \"X\" };\nfunction process(context {\n}\n",
        LIMIT,
    ) {
        Err(WorkerError::Actor(e)) => {
            assert_eq!(e.kind, ErrorKind::Load);
            assert!(e.message.starts_with("SyntaxError"), "{e}");
            assert!(e.message.contains("broken.actor.js, line 2"), "{e}");
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
const crypto = require("crypto");
const metadata = { name: "Dice", outports: ["roll"] };
function process(context) {
  return { math: Math.random(), crypto: crypto.randomBytes(16).toString("hex"), uuid: crypto.randomUUID() };
}
module.exports = { metadata, process };
"#;

/// Clones of one golden do not share `Math.random` or OpenSSL's stream:
/// the worker reseeds both from the kernel (itself reseeded by the host's
/// handshake) when a script is loaded.
#[test]
fn javascript_clones_draw_different_random_numbers() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_node_golden(SHM_MIB);
    let rolls = returned_by_two_clones(&dir, &config, "dice.actor.js", RANDOM);
    for key in ["math", "crypto", "uuid"] {
        let (a, b) = (get(&rolls[0], key), get(&rolls[1], key));
        assert!(a.is_some(), "{rolls:?}");
        assert_ne!(a, b, "two clones drew the same {key}");
    }
}

const LEDGER: &str = r#"
const metadata = { name: "Ledger", inports: ["item"], outports: ["log"] };
async function process(context) {
  const s = context.state;
  const item = context.getInput("item");
  await s.set("last", item);
  const n = await s.push("items", item);
  const total = await s.increment("total", item.qty);
  const first = n > 2 ? await s.pop("items") : null;
  const kept = await s.expire("last", 60);
  if (item.qty === 0) await s.increment("last");
  return { last: await s.get("last"), n, total, first, kept };
}
module.exports = { metadata, process };
"#;

/// The JS SDK's six state operations reach the host's store through the
/// ring, with the same results from the embedded store and from a real
/// Redis server; a store error rejects in the actor.
#[test]
fn javascript_state_operations_reach_the_embedded_store_and_redis() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_node_golden(SHM_MIB);
    check_ledger(&dir, &config, "ledger.actor.js", LEDGER);
}
