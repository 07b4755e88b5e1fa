//! A `SandboxActor` driven the way Reflow's dispatch loop drives it (its
//! behavior called with an `ActorContext`), without a network: message
//! conversion both ways, streamed packets, and idle VMs given back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reflow_actor::message::Message;
use reflow_actor::{Actor, ActorConfig, ActorContext, ActorLoad, MemoryState};
use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::{Bridge, BridgeConfig, SandboxActor};
use reflow_integration_tests::graphs::bridge;
use reflow_integration_tests::{cpu_ticks, kvm_available, unique};
use reflow_sandbox_core::{Language, PoolConfig, Script};

const ECHO: &str = r#"
import math

@actor(name="Echo", inports=["input"], outports=["output", "special"])
def echo(context):
    data = context.get_input("input")
    context.send_output_sync("special", [math.nan, math.inf])
    context.send_output_sync("special", -math.inf)
    return {"output": bytes(data), "size": len(data)}
"#;

async fn call(
    actor: &SandboxActor,
    payload: HashMap<String, Message>,
) -> (
    anyhow::Result<HashMap<String, Message>>,
    Vec<HashMap<String, Message>>,
) {
    let ctx = ActorContext::new(
        payload,
        actor.get_outports(),
        Arc::new(parking_lot::Mutex::new(MemoryState::default())),
        ActorConfig::default(),
        Arc::new(ActorLoad::new(0)),
    );
    let result = (actor.get_behavior())(ctx).await;
    let streamed = actor.get_outports().1.try_iter().collect();
    (result, streamed)
}

/// A pool that keeps one clone ready and grows to `max_size`.
fn pool(max_size: usize) -> PoolConfig {
    PoolConfig {
        preload_count: 1,
        max_size,
        ..PoolConfig::default()
    }
}

/// A bridge over the embedded store set up by `config`, and the Python
/// actor `source` (named `file`) on it.
fn python_actor(config: BridgeConfig, file: &str, source: &str) -> (Bridge, SandboxActor) {
    let bridge = bridge(StateStore::embedded(), config);
    let actor = bridge
        .actor(Script::inline(Language::Python, file, source))
        .unwrap();
    (bridge, actor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_convert_faithfully_and_idle_vms_are_given_back() {
    if !kvm_available() {
        return;
    }
    let config = BridgeConfig {
        pool: pool(4),
        idle_timeout: Duration::from_secs(1),
        ..BridgeConfig::default()
    };
    let (bridge, actor) = python_actor(config, "echo.actor.py", ECHO);
    assert!(!actor.has_vm(), "a VM is taken on the first message");
    assert_eq!(actor.outport_names(), ["error"]);

    let bytes: Vec<u8> = (0..=255).collect();
    let input = HashMap::from([("input".to_string(), Message::Bytes(Arc::new(bytes.clone())))]);
    let (result, streamed) = call(&actor, input).await;
    let result = result.unwrap();
    assert!(
        matches!(&result["output"], Message::Bytes(b) if **b == bytes),
        "bytes stay bytes"
    );
    assert!(matches!(result["size"], Message::Integer(256)));
    assert_eq!(streamed.len(), 2, "{streamed:?}");
    // Inside a structure NaN and infinities become null (JSON); alone they
    // stay floats.
    match &streamed[0]["special"] {
        Message::Array(items) => assert_eq!(
            serde_json::Value::from(items.as_ref().clone()[0].clone()),
            serde_json::Value::Null
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(streamed[1]["special"], Message::Float(x) if x == f64::NEG_INFINITY));
    assert!(actor.has_vm());

    // A packet of nothing but Reflow's routing placeholders is no input.
    let (result, streamed) = call(
        &actor,
        HashMap::from([("input".to_string(), Message::Optional(None))]),
    )
    .await;
    assert!(result.unwrap().is_empty() && streamed.is_empty());

    // An input that cannot cross: an error on `error`, and an Err.
    let (result, streamed) = call(
        &actor,
        HashMap::from([(
            "input".to_string(),
            Message::Encoded(Arc::new(vec![1, 2, 3])),
        )]),
    )
    .await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("cannot pass the input on port \"input\""),
        "{err}"
    );
    assert!(
        matches!(&streamed[..], [p] if matches!(&p["error"], Message::Error(e) if e.as_str() == err)),
        "{streamed:?}"
    );

    // Idle for longer than idle_timeout: the VM goes back.
    let t = Instant::now();
    while actor.has_vm() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the idle VM was kept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and the next message gets a fresh one.
    let input = HashMap::from([("input".to_string(), Message::Bytes(Arc::new(vec![7])))]);
    let (result, _) = call(&actor, input).await;
    assert!(matches!(result.unwrap()["size"], Message::Integer(1)));
    assert!(actor.has_vm());
    bridge.shutdown();
}

/// With component goldens on (the default), a script's nodes take clones
/// that have the script loaded once its golden is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_take_clones_of_their_scripts_component_golden() {
    if !kvm_available() {
        return;
    }
    let config = BridgeConfig {
        pool: pool(4),
        ..BridgeConfig::default()
    };
    // Unique to this run, so its golden is made here.
    let nonce = unique();
    let source = format!(
        "# {nonce}\nimport builtins\nbuiltins.RUNS = getattr(builtins, 'RUNS', 0) + 1\n\
         @actor(name='Runs', inports=['input'], outports=['runs'])\n\
         def runs(context):\n    return {{'runs': builtins.RUNS}}\n"
    );
    let (bridge, actor) = python_actor(config, "runs.actor.py", &source);
    assert_eq!(bridge.wait_components(Duration::from_secs(600)), 1);
    let pools = bridge.component_pools();
    assert_eq!(pools.len(), 1);
    let pool = &pools[0];
    assert_eq!(pool.wait_ready(Duration::from_secs(120)), 1);
    let t = Instant::now();
    while pool.counts() != (1, 1) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{:?}",
            pool.counts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let input = HashMap::from([("input".to_string(), Message::Integer(1))]);
    let (result, _) = call(&actor, input).await;
    let result = result.unwrap();
    assert!(matches!(result["runs"], Message::Integer(1)), "{result:?}");
    let (ready, live) = pool.counts();
    assert!(
        live > ready,
        "the node's VM did not come from the component pool"
    );
    bridge.shutdown();
    let dir = pool.spec().golden.clone();
    drop((actor, pools, bridge));
    let _ = std::fs::remove_dir_all(dir);
}

const IDENTITY: &str = r#"
@actor(name="Identity", inports=["input"], outports=["output"])
def identity(context):
    return {"output": context.get_input("input")}
"#;

/// Waits (at most 30 s) until `ready` says so.
async fn until(what: &str, ready: impl Fn() -> bool) {
    let t = Instant::now();
    while !ready() {
        assert!(t.elapsed() < Duration::from_secs(30), "never {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Driven by its own dispatch loop (as in a network), a node idle for
/// `idle_hold` holds its VM: the VM then uses no CPU, and the node's next
/// message releases it and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_holds_its_vm_and_its_next_message_wakes_it() {
    if !kvm_available() {
        return;
    }
    let config = BridgeConfig {
        pool: pool(2),
        idle_hold: Duration::from_millis(50),
        ..BridgeConfig::default()
    };
    let (bridge, actor) = python_actor(config, "identity.actor.py", IDENTITY);
    tokio::spawn(actor.create_process(ActorConfig::default(), None));
    let (inports, outports) = (actor.get_inports().0, actor.get_outports().1);
    for i in 0..3 {
        let t = Instant::now();
        inports
            .send_async(HashMap::from([("input".to_string(), Message::Integer(i))]))
            .await
            .unwrap();
        match outports.recv_timeout(Duration::from_secs(60)) {
            Ok(out) => assert!(
                matches!(out.get("output"), Some(Message::Integer(n)) if *n == i),
                "{out:?}"
            ),
            Err(e) => panic!("message {i} got no answer: {e}"),
        }
        eprintln!("message {i} answered in {:?}", t.elapsed());
        until("held", || actor.is_vm_held()).await;
        let pid = actor.vm_monitor_pid().expect("a VM");
        let before = cpu_ticks(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = cpu_ticks(pid) - before;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert!(
            used * 100 <= hz * 2,
            "the held VM used {used} ticks of CPU in a second ({hz} a second)"
        );
        assert!(actor.is_vm_held());
    }
    bridge.shutdown();
}
