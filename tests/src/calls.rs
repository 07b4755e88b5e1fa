//! Driving a worker's actors from a test: values, one tokio runtime for
//! the state stores, and invocations with state in a store.

use std::path::Path;
use std::sync::OnceLock;

use reflow_host_bridge::state::{Scope, StateStore};
use reflow_host_bridge::StoreHandler;
use reflow_ring::Value;
use reflow_sandbox_core::{
    ErrorKind, InvokeHandler, Limits, SandboxVm, Script, StateRequest, WorkerClient, WorkerError,
};
use reflow_vmm::VmConfig;

use crate::redis_server::RedisServer;
use crate::{TestVm, LIMIT};

/// A map value from `(key, value)` pairs.
pub fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// The entry `key` of a map value.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        _ => None,
    }
}

/// A string value's text, or the value's debug form.
pub fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Str(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// One runtime for the state stores of every test in a binary.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().expect("a tokio runtime"))
}

/// A handler that drops outputs and refuses state operations.
pub struct NoState;

impl InvokeHandler for NoState {
    fn output(&mut self, _: &str, _: Value) {}
    fn state(&mut self, _: StateRequest) -> Result<Value, String> {
        Err("no state here".into())
    }
}

/// Invokes `actor` with its state in `store` (scoped to the actor) and
/// returns its streamed outputs and returned map.
pub fn invoke(
    c: &mut WorkerClient<'_>,
    store: &StateStore,
    actor: &str,
    inputs: Value,
    config: Value,
) -> Result<(Vec<(String, Value)>, Value), WorkerError> {
    let scope = Scope::new("test", actor);
    let mut outputs = Vec::new();
    let mut handler = StoreHandler {
        store,
        scope: &scope,
        runtime: runtime().handle(),
        on_output: |port: &str, value: Value| outputs.push((port.to_string(), value)),
    };
    let done = c.invoke(
        actor,
        inputs,
        config,
        &Limits::with_timeout(LIMIT),
        &mut handler,
    )?;
    Ok((outputs, done))
}

/// Loads the script `(file, source)` in two clones of the golden `dir` and
/// returns what one invocation of it returned in each (for showing clones
/// do not share random state).
pub fn returned_by_two_clones(
    dir: &Path,
    config: &VmConfig,
    file: &str,
    source: &str,
) -> Vec<Value> {
    (0..2)
        .map(|_| {
            let vm = TestVm::restore(dir, config.clone(), Box::new(std::io::sink()));
            let shared = vm.shared.clone().expect("a shared region");
            let mut c = WorkerClient::attach(shared.ring_region(), &shared.layout());
            c.load("dice", file, source, LIMIT).unwrap();
            let (_, done) = invoke(
                &mut c,
                &StateStore::embedded(),
                "dice",
                map(vec![]),
                map(vec![]),
            )
            .unwrap();
            vm.power_off();
            done
        })
        .collect()
}

/// Runs the ledger actor `(file, source)` (each SDK's twin: all six state
/// operations on an `item` input with a `qty`, returning `last`, `n`,
/// `total`, `first` and `kept`; a `qty` of 0 increments a map, which must
/// fail) in a clone of `dir`, against the embedded store and a real Redis
/// server: the same results from both.
pub fn check_ledger(dir: &Path, config: &VmConfig, file: &str, source: &str) {
    let vm = TestVm::restore(dir, config.clone(), Box::new(std::io::sink()));
    let shared = vm.shared.clone().expect("a shared region");
    let mut c = WorkerClient::attach(shared.ring_region(), &shared.layout());
    c.load("ledger", file, source, LIMIT).unwrap();
    let redis = RedisServer::start();
    let stores = [
        ("embedded", StateStore::embedded()),
        (
            "redis",
            runtime().block_on(StateStore::redis(&redis.url())).unwrap(),
        ),
    ];
    let item = |qty| map(vec![("qty", Value::Int(qty))]);
    for (name, store) in &stores {
        let mut run = |qty: i64| {
            let inputs = map(vec![("item", item(qty))]);
            invoke(&mut c, store, "ledger", inputs, map(vec![])).map(|(_, done)| done)
        };
        let mut last = None;
        for qty in 1..=3 {
            last = Some(run(qty).unwrap_or_else(|e| panic!("{name}: {e}")));
        }
        assert_eq!(
            last.unwrap(),
            map(vec![
                ("last", item(3)),
                ("n", Value::Int(3)),
                ("total", Value::Int(6)),
                ("first", item(1)),
                ("kept", Value::Bool(true)),
            ]),
            "{name}"
        );
        match run(0) {
            Err(WorkerError::Actor(e)) => {
                assert_eq!(e.kind, ErrorKind::Run, "{name}");
                assert!(e.message.contains("not an integer"), "{name}: {e}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    vm.power_off();
}

/// Runs one message with `inputs` through `actor` (loaded on `vm`), no
/// state, no config, within [`LIMIT`]; its returned outputs.
pub fn run_once(vm: &mut SandboxVm, actor: &str, inputs: Value) -> Result<Value, WorkerError> {
    vm.with_worker(|c| {
        c.invoke(
            actor,
            inputs,
            Value::Map(vec![]),
            &Limits::with_timeout(LIMIT),
            &mut NoState,
        )
    })
}

/// Loads `script` on `vm` as node `"node"` and runs one message with
/// `inputs` (see [`run_once`]); its returned outputs.
pub fn load_and_run(vm: &mut SandboxVm, script: &Script, inputs: Value) -> Value {
    vm.with_worker(|c| c.load("node", &script.name, &script.source, LIMIT))
        .expect("the script loads");
    run_once(vm, "node", inputs).expect("an answer")
}
