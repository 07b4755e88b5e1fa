//! The actor suite, once per language: tests/actors.rs runs it for Python
//! and tests/javascript.rs for JavaScript, each with its own scripts and
//! the checks that really differ between the languages ([`ActorLang`]).
//! Clones of the language's warm worker golden load the scripts and run
//! them over the ring, driven by the host bridge's worker client, with
//! state in the host bridge's embedded store (and Redis for the state
//! test).

use std::time::Instant;

use reflow_host_bridge::state::{Scope, StateError, StateStore};
use reflow_ring::Value;
use reflow_sandbox_core::{
    ActorError, ErrorKind, Language, Loaded, StateOp, StateRequest, WorkerClient, WorkerError,
};

use crate::calls::{check_ledger, get, invoke, map, returned_by_two_clones, runtime, text};
use crate::{kvm_available, warm_worker_golden, TestVm, LIMIT};

/// Room for a 16 MiB message each way.
pub const SHM_MIB: u32 = 40;

/// One language's actor scripts and the checks that differ between
/// languages. Every script is loaded as `<id>.actor.<extension>`.
pub struct ActorLang {
    pub language: Language,
    /// Loads the first actors (the first one with [`Worker::load_first`])
    /// and checks them, leaving the multiplier loaded as `mul`: `input`
    /// times the configured `factor` (default 2) on `output`, returning
    /// `calls`, its invocations counted in its state.
    pub opening: fn(&mut Worker<'_>),
    /// Sends each of its `items` to `even` or `odd`, synchronously.
    pub splitter: &'static str,
    /// Sends its `input` bytes back on `output`, synchronously.
    pub identity: &'static str,
    /// Loads an actor that uses a package baked into the image and checks
    /// what it gives.
    pub packages: fn(&mut Worker<'_>),
    /// An actor that raises (throws) on every invocation.
    pub raising: &'static str,
    /// Checks the error of [`ActorLang::raising`] beyond its kind.
    pub check_raised: fn(&ActorError),
    /// A script with a syntax error on line 2.
    pub broken: &'static str,
    /// Checks the error loading [`ActorLang::broken`] beyond its kind.
    pub check_broken: fn(&ActorError),
    /// An actor (`Dice`) that returns random draws.
    pub random: &'static str,
    /// Checks what the random actor returned in each of two clones.
    pub check_draws: fn(&[Value]),
    /// The SDK's twin of the ledger actor [`check_ledger`] runs.
    pub ledger: &'static str,
}

impl ActorLang {
    /// The file name the script of actor `id` is loaded as.
    pub fn file(&self, id: &str) -> String {
        format!("{id}.actor.{}", self.language.extension())
    }
}

/// A worker in a clone, as the suite drives it: the language's scripts,
/// a client and an embedded store.
pub struct Worker<'a> {
    lang: &'a ActorLang,
    restored: Instant,
    pub client: WorkerClient<'a>,
    pub store: StateStore,
}

impl Worker<'_> {
    /// Loads `source` as the actor `id`.
    pub fn load(&mut self, id: &str, source: &str) -> Result<Loaded, WorkerError> {
        self.client.load(id, &self.lang.file(id), source, LIMIT)
    }

    /// Loads the test's first actor (timed from the restore) and checks
    /// the component and description its metadata declares.
    pub fn load_first(&mut self, id: &str, source: &str, component: &str, description: &str) {
        let loaded = self.load(id, source).unwrap();
        eprintln!(
            "restore to first actor loaded: {:.0} ms",
            self.restored.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(text(get(&loaded.metadata, "component")), component);
        assert_eq!(text(get(&loaded.metadata, "description")), description);
    }

    /// Invokes `id` with its state in the embedded store.
    pub fn invoke(
        &mut self,
        id: &str,
        inputs: Value,
        config: Value,
    ) -> Result<(Vec<(String, Value)>, Value), WorkerError> {
        invoke(&mut self.client, &self.store, id, inputs, config)
    }

    /// Invokes the multiplier `mul` on 7 three times, with `factors[n]`
    /// configured in invocation `n` (`None`: no config, the default 2),
    /// checking the product and the count of calls it returns.
    pub fn multiply(&mut self, factors: [Option<i64>; 3]) {
        for (n, factor) in (1..=3i64).zip(factors) {
            let t = Instant::now();
            let config = match factor {
                Some(f) => map(vec![("factor", Value::Int(f))]),
                None => map(vec![]),
            };
            let got = self
                .invoke("mul", map(vec![("input", Value::Int(7))]), config)
                .unwrap();
            assert_eq!(
                got,
                (
                    vec![("output".into(), Value::Int(7 * factor.unwrap_or(2)))],
                    map(vec![("calls", Value::Int(n))])
                )
            );
            eprintln!(
                "multiplier invocation {n}: {:.2} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }

    /// The value of `key` in the state of actor `id`.
    pub fn stored(&self, id: &str, key: &str) -> Result<Value, StateError> {
        let get = StateRequest {
            op: StateOp::Get,
            key: key.into(),
            args: vec![],
        };
        runtime().block_on(self.store.apply(&Scope::new("test", id), &get))
    }
}

/// The actor error in `got`, which must be one of `kind`.
fn actor_error<T: std::fmt::Debug>(got: Result<T, WorkerError>, kind: ErrorKind) -> ActorError {
    match got {
        Err(WorkerError::Actor(e)) => {
            assert_eq!(e.kind, kind);
            e
        }
        other => panic!("{other:?}"),
    }
}

/// Actors load, run with config and state, stream several outputs, pass
/// bytes (small and 16 MiB) back identical, use the image's packages, and
/// fail with reasons (raised and syntax errors) after which the worker
/// goes on.
pub fn actors_load_run_stream_keep_state_and_fail_cleanly(lang: &ActorLang) {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_worker_golden(lang.language, SHM_MIB);
    let restored = Instant::now();
    let vm = TestVm::restore(&dir, config, Box::new(std::io::sink()));
    let shared = vm.shared.clone().expect("a shared region");
    let mut w = Worker {
        lang,
        restored,
        client: WorkerClient::attach(shared.ring_region(), &shared.layout()),
        store: StateStore::embedded(),
    };
    run_suite(&mut w);
    drop(w);
    let outcome = vm.power_off();
    assert_eq!(outcome.exit_code(), 0);
    assert!(outcome.hostile.is_empty(), "{:?}", outcome.hostile);
}

/// [`actors_load_run_stream_keep_state_and_fail_cleanly`] with the worker
/// run as a jailed host process (`isolation: process`) on the language's
/// image: the same scripts, checks and answers.
pub fn process_actors_load_run_stream_keep_state_and_fail_cleanly(lang: &ActorLang) {
    let restored = Instant::now();
    let worker = crate::process_worker(lang.language, SHM_MIB);
    let alive = || worker.is_alive();
    let mut w = Worker {
        lang,
        restored,
        client: WorkerClient::attach(worker.ring_region(), &worker.layout()).with_liveness(&alive),
        store: StateStore::embedded(),
    };
    run_suite(&mut w);
    drop(w);
    assert!(worker.is_alive(), "the worker went on to the end");
}

/// The suite's steps, on a worker that has just started (in a clone or a
/// process).
fn run_suite(w: &mut Worker<'_>) {
    let lang = w.lang;
    (lang.opening)(w);

    // A full collection, as a pool has each clone do while it waits; the
    // worker goes on serving after it (everything below).
    let collected = w.client.collect("pool", LIMIT).unwrap();
    eprintln!("a full collection in the clone: {collected:?}");
    match lang.language {
        Language::Python => assert_eq!(collected.heap, 0, "CPython reports no heap size"),
        Language::JavaScript => {
            assert!(collected.heap > 1 << 20, "V8's heap: {collected:?}");
            // The worker's `gc` is its own: actors' globals have none.
            let probe = "module.exports = { metadata: { component: \"Gc\", outports: [\"gc\"] }, \
                         process() { return { gc: typeof gc }; } };";
            w.load("gc", probe).unwrap();
            let (_, returned) = w.invoke("gc", map(vec![]), map(vec![])).unwrap();
            assert_eq!(text(get(&returned, "gc")), "undefined");
            // One young-generation size, whatever the node's pace.
            let probe = "const v8 = require('v8'); \
                         module.exports = { metadata: { component: \"Young\", outports: [] }, \
                         process() { return { size: v8.getHeapSpaceStatistics() \
                         .find((s) => s.space_name === 'new_space').space_size }; } };";
            w.load("young", probe).unwrap();
            let (_, returned) = w.invoke("young", map(vec![]), map(vec![])).unwrap();
            // Node 24's V8 counts both semi-spaces in the new space.
            let semi = i64::from(reflow_sandbox_core::language::NODE_SEMI_SPACE_MIB) << 20;
            assert_eq!(
                get(&returned, "size"),
                Some(&Value::Int(2 * semi)),
                "{returned:?}"
            );
        }
    }

    // Several outputs from one invocation.
    w.load("split", lang.splitter).unwrap();
    let items = Value::List((1..=4).map(Value::Int).collect());
    let (outputs, _) = w
        .invoke("split", map(vec![("items", items)]), map(vec![]))
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
    w.load("id", lang.identity).unwrap();
    for len in [16usize, 16 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let t = Instant::now();
        let input = map(vec![("input", Value::Bytes(data.clone()))]);
        let (outputs, _) = w.invoke("id", input, map(vec![])).unwrap();
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

    (lang.packages)(w);

    // A raising actor and a broken script: errors with reasons; the worker
    // goes on.
    w.load("boom", lang.raising).unwrap();
    let raised = actor_error(w.invoke("boom", map(vec![]), map(vec![])), ErrorKind::Run);
    (lang.check_raised)(&raised);
    let broken = actor_error(w.load("broken", lang.broken), ErrorKind::Load);
    (lang.check_broken)(&broken);
    let got = w.invoke("mul", map(vec![("input", Value::Int(1))]), map(vec![]));
    assert!(got.is_ok(), "the worker survived: {got:?}");
}

/// Clones of one golden do not share random state: the worker reseeds it
/// from the kernel (itself reseeded by the host's handshake) when a script
/// is loaded.
pub fn clones_draw_different_random_numbers(lang: &ActorLang) {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_worker_golden(lang.language, SHM_MIB);
    let draws = returned_by_two_clones(&dir, &config, &lang.file("dice"), lang.random);
    (lang.check_draws)(&draws);
}

/// The SDK's six state operations reach the host's store through the ring,
/// with the same results from the embedded store and from a real Redis
/// server; a store error is raised (rejects) in the actor.
pub fn state_operations_reach_the_embedded_store_and_redis(lang: &ActorLang) {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_worker_golden(lang.language, SHM_MIB);
    check_ledger(&dir, &config, &lang.file("ledger"), lang.ledger);
}
