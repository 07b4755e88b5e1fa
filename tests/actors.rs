//! Python actors in a real VM: the Python worker, started in the guest,
//! loads scripts and runs them over the ring, with the test playing the
//! host (state kept in a map here; the host bridge owns it later).
//!
//! The VM boots rather than being restored from a warm golden snapshot:
//! clones of a snapshot taken with the worker running sometimes never
//! reconnect their agent (see `tests/python.rs`, the ignored test).

use std::collections::HashMap;
use std::time::Instant;

use reflow_integration_tests::{kvm_available, python_vm_config, start_python, TestVm, LIMIT};
use reflow_ring::{Consumer, Metadata, Producer, Value};

const LOAD: u32 = 1;
const LOADED: u32 = 2;
const INVOKE: u32 = 3;
const OUTPUT: u32 = 4;
const DONE: u32 = 5;
const STATE: u32 = 6;
const STATE_REPLY: u32 = 7;
const ERROR: u32 = 8;

/// Room for a 16 MiB message each way.
const SHM_MIB: u32 = 40;

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Str(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// The host end of a worker's ring.
struct Host<'a> {
    tx: Producer<'a>,
    rx: Consumer<'a>,
    next_id: u64,
    state: HashMap<String, Value>,
}

impl Host<'_> {
    /// Sends one message and returns what came back, ending with LOADED,
    /// DONE or ERROR; answers state requests on the way.
    fn call(&mut self, kind: u32, actor: &str, body: Value) -> Vec<(u32, String, Value)> {
        let id = self.next_id;
        self.next_id += 1;
        let meta = |kind| Metadata {
            message_id: id,
            actor_id: actor.into(),
            kind,
            ..Metadata::default()
        };
        self.tx
            .send(&meta(kind), &body.encode().unwrap(), LIMIT)
            .unwrap();
        let mut got = Vec::new();
        loop {
            let rec = self.rx.recv(LIMIT).unwrap().expect("the worker answers");
            assert_eq!(rec.metadata.message_id, id);
            let (kind, port) = (rec.metadata.kind, rec.metadata.port.clone());
            let value = Value::decode(&rec.to_vec()).expect("a valid value from the guest");
            self.rx.release(rec).unwrap();
            if kind == STATE {
                let reply = self.state_op(&value);
                self.tx
                    .send(&meta(STATE_REPLY), &reply.encode().unwrap(), LIMIT)
                    .unwrap();
                continue;
            }
            got.push((kind, port, value));
            if matches!(kind, LOADED | DONE | ERROR) {
                return got;
            }
        }
    }

    fn state_op(&mut self, req: &Value) -> Value {
        let key = text(get(req, "key"));
        let args = match get(req, "args") {
            Some(Value::List(a)) => a.clone(),
            _ => vec![],
        };
        let ok = match text(get(req, "op")).as_str() {
            "get" => self.state.get(&key).cloned().unwrap_or(Value::None),
            "set" => {
                self.state
                    .insert(key, args.first().cloned().unwrap_or(Value::None));
                Value::None
            }
            "increment" => {
                let by = match args.first() {
                    Some(Value::Int(i)) => *i,
                    _ => 1,
                };
                let n = match self.state.get(&key) {
                    Some(Value::Int(i)) => i + by,
                    _ => by,
                };
                self.state.insert(key, Value::Int(n));
                Value::Int(n)
            }
            op => return map(vec![("error", Value::Str(format!("unsupported op {op}")))]),
        };
        map(vec![("ok", ok)])
    }

    fn load(&mut self, actor: &str, source: &str) -> (u32, Value) {
        let got = self.call(
            LOAD,
            actor,
            map(vec![
                ("name", Value::Str(format!("{actor}.actor.py"))),
                ("source", Value::Str(source.into())),
            ]),
        );
        let (kind, _, v) = got.last().unwrap().clone();
        (kind, v)
    }

    fn invoke(&mut self, actor: &str, inputs: Value, config: Value) -> Vec<(u32, String, Value)> {
        self.call(
            INVOKE,
            actor,
            map(vec![("inputs", inputs), ("config", config)]),
        )
    }
}

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

#[test]
fn python_actors_load_run_stream_keep_state_and_fail_cleanly() {
    if !kvm_available() {
        return;
    }
    let mut vm = TestVm::boot(python_vm_config(SHM_MIB), Box::new(std::io::sink()));
    let started = Instant::now();
    start_python(&mut vm.control, "run_worker.py", SHM_MIB, "worker.ready").expect("worker");
    eprintln!(
        "worker started (cold interpreter) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let restored = Instant::now();
    let shared = vm.shared.clone().expect("a shared region");
    let layout = shared.layout();
    let region = shared.ring_region();
    let mut host = Host {
        tx: Producer::new(region, layout.host_to_guest),
        rx: Consumer::new(region, layout.guest_to_host),
        next_id: 1,
        state: HashMap::new(),
    };

    // Load, then a stateful counter with config across three messages.
    let (kind, loaded) = host.load("mul", MULTIPLIER);
    assert_eq!(kind, LOADED, "{loaded:?}");
    let meta = get(&loaded, "metadata").unwrap();
    assert_eq!(text(get(meta, "component")), "Multiplier");
    assert_eq!(
        text(get(meta, "description")),
        "Multiplies its input by the configured factor."
    );
    eprintln!(
        "first actor loaded in {:.0} ms",
        restored.elapsed().as_secs_f64() * 1e3
    );
    for n in 1..=3i64 {
        let t = Instant::now();
        let got = host.invoke(
            "mul",
            map(vec![("input", Value::Int(7))]),
            map(vec![("factor", Value::Int(3))]),
        );
        assert_eq!(
            got,
            vec![
                (OUTPUT, "output".into(), Value::Int(21)),
                (DONE, String::new(), map(vec![("calls", Value::Int(n))])),
            ]
        );
        eprintln!(
            "multiplier invocation {n}: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    assert_eq!(host.state.get("calls"), Some(&Value::Int(3)));

    // Several outputs from one invocation (dict-form decorator, sync).
    assert_eq!(host.load("split", SPLITTER).0, LOADED);
    let items = Value::List((1..=4).map(Value::Int).collect());
    let got = host.invoke("split", map(vec![("items", items)]), map(vec![]));
    let ports: Vec<(&str, &Value)> = got.iter().map(|(_, p, v)| (p.as_str(), v)).collect();
    assert_eq!(
        ports[..4],
        [
            ("odd", &Value::Int(1)),
            ("even", &Value::Int(2)),
            ("odd", &Value::Int(3)),
            ("even", &Value::Int(4))
        ]
    );
    assert_eq!(got.last().unwrap().0, DONE);

    // Bytes, small and 16 MiB, back byte-identical.
    assert_eq!(host.load("id", IDENTITY).0, LOADED);
    for len in [16usize, 16 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let t = Instant::now();
        let got = host.invoke(
            "id",
            map(vec![("input", Value::Bytes(data.clone()))]),
            map(vec![]),
        );
        assert_eq!(got.len(), 2, "{:?}", got.last());
        assert!(got[0].2 == Value::Bytes(data), "{len}-byte payload differs");
        eprintln!(
            "identity of {len} bytes: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }

    // A raising actor and a broken script: errors with reasons; the worker
    // goes on.
    let raising = "@actor(name=\"Boom\")\ndef boom(context):\n    raise ValueError(\"kaput\")\n";
    assert_eq!(host.load("boom", raising).0, LOADED);
    let got = host.invoke("boom", map(vec![]), map(vec![]));
    let (kind, _, err) = got.last().unwrap();
    assert_eq!(*kind, ERROR);
    assert_eq!(text(get(err, "kind")), "run");
    assert!(text(get(err, "message")).contains("ValueError: kaput"));
    assert!(text(get(err, "traceback")).contains("Traceback"));
    let (kind, err) = host.load("broken", "@actor(name=\"X\")\ndef f(context:\n");
    assert_eq!(kind, ERROR);
    assert_eq!(text(get(&err, "kind")), "load");
    assert!(
        text(get(&err, "message")).contains("SyntaxError"),
        "{err:?}"
    );
    let got = host.invoke("mul", map(vec![("input", Value::Int(1))]), map(vec![]));
    assert_eq!(got.last().unwrap().0, DONE, "the worker survived");

    let outcome = vm.power_off();
    assert_eq!(outcome.exit_code(), 0);
    assert!(outcome.hostile.is_empty(), "{:?}", outcome.hostile);
}
