//! The soak test: many messages through a small graph (native -> Python ->
//! JavaScript -> native) while VMs are killed at random, as if they
//! crashed. Every input must get exactly one answer: an output at the end
//! of the chain or an error from the node whose VM died; nothing is lost
//! and nothing is answered twice.
//!
//! `REFLOW_SOAK_MESSAGES` (default 2,000) sets the size and
//! `REFLOW_SOAK_KILL_EVERY_MS` (default 1,500) the mean time between kills;
//! `./dev.sh soak` runs the full 100,000.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::{Bridge, BridgeConfig};
use reflow_integration_tests::graphs::{bridge_for, shown, GraphBuilder};
use reflow_integration_tests::kvm_available;
use reflow_sandbox::{run, RunOptions};
use reflow_sandbox_core::{Language, Limits, PoolConfig};
use serde_json::json;

const DOUBLE: &str = "@actor(name=\"Double\", inports=[\"x\"], outports=[\"y\"])\n\
def double(context):\n    return {\"y\": context.get_input(\"x\") * 2}\n";

const INC: &str = "const metadata = { name: \"Inc\", inports: [\"y\"], outports: [\"z\"] };\n\
function process(context) { return { z: context.getInput(\"y\") + 1 }; }\n\
module.exports = { metadata, process };\n";

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A small, fast pseudo-random sequence (xorshift64*), seeded from the
/// clock: where and when the kills land changes from run to run, and the
/// seed is printed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Kills a VM of the bridge's at random, about every `kill_every` ms,
/// until stopped; the seed is printed.
struct Chaos {
    done: Arc<AtomicBool>,
    kills: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Chaos {
    fn start(bridge: &Bridge, kill_every: u64) -> Chaos {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("chaos: a kill every ~{kill_every} ms, seed {seed:#x}");
        let done = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (bridge, done, kills) = (bridge.clone(), done.clone(), kills.clone());
            std::thread::spawn(move || {
                let mut dice = Dice(seed);
                let mut next = Instant::now() + Duration::from_millis(kill_every);
                while !done.load(Ordering::SeqCst) {
                    if Instant::now() >= next {
                        if bridge.kill_vm(dice.next() as usize) {
                            kills.fetch_add(1, Ordering::SeqCst);
                        }
                        let wait = kill_every / 2 + dice.next() % kill_every;
                        next = Instant::now() + Duration::from_millis(wait);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Chaos {
            done,
            kills,
            thread,
        }
    }

    /// Stops the kills; returns how many VMs were killed.
    fn stop(self) -> usize {
        self.done.store(true, Ordering::SeqCst);
        self.thread.join().expect("the chaos thread");
        self.kills.load(Ordering::SeqCst)
    }
}

/// A bridge for a chaos run: `languages`' pools (2 preloaded, at most
/// `max_size` VMs), a 20 s message limit, state under `namespace`; ready.
fn chaos_bridge(languages: &[Language], max_size: usize, namespace: &str) -> Bridge {
    let config = BridgeConfig {
        pool: PoolConfig {
            preload_count: 2,
            max_size,
            ..PoolConfig::default()
        },
        limits: Limits::with_timeout(Duration::from_secs(20)),
        namespace: namespace.into(),
        ..BridgeConfig::default()
    };
    let bridge = bridge_for(languages, StateStore::embedded(), config);
    bridge.wait_ready(Duration::from_secs(120));
    bridge
}

/// Checks a sink's outputs: each a number `valid` accepts, each larger
/// than the one before (none answered twice, all in the inputs' order).
fn assert_in_order(outputs: &[String], valid: impl Fn(u64) -> bool) {
    let mut last = 0;
    for o in outputs {
        let n = number(o);
        assert!(valid(n), "{o}");
        assert!(n > last, "{o} after {last}: answered twice or out of order");
        last = n;
    }
}

/// Checks that every error is a killed VM's (or a VM the pool could not
/// give while they were being replaced).
fn assert_killed_vm_errors<'a>(errors: impl IntoIterator<Item = &'a String>) {
    for e in errors {
        assert!(
            e.contains("VM stopped while running it") || e.contains("no sandbox for the actor"),
            "an error other than a killed VM: {e}"
        );
    }
}

/// The integer a sink output shows.
fn number(shown: &str) -> u64 {
    shown
        .trim_matches('"')
        .parse()
        .unwrap_or_else(|_| panic!("{shown} is not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_answered_exactly_once_while_vms_are_killed() {
    if !kvm_available() {
        return;
    }
    let messages = env_number("REFLOW_SOAK_MESSAGES", 2_000);
    let kill_every = env_number("REFLOW_SOAK_KILL_EVERY_MS", 1500).max(1);
    let mut g = GraphBuilder::default();
    g.native("numbers", "Range", json!({}))
        .script("double", "Double", DOUBLE, json!({}), None)
        .js_script("inc", "Inc", INC, json!({}), None)
        .native("ok", "Format", json!({}))
        .native("double_failed", "Format", json!({}))
        .native("inc_failed", "Format", json!({}))
        .connect("numbers", "out", "double", "x")
        .connect("double", "y", "inc", "y")
        .connect("inc", "z", "ok", "in")
        .connect("double", "error", "double_failed", "in")
        .connect("inc", "error", "inc_failed", "in")
        .initial("numbers", "count", json!(messages));
    let graph = g.load();
    let bridge = chaos_bridge(&[Language::Python, Language::JavaScript], 6, "soak");

    eprintln!("soak: {messages} messages, a kill every ~{kill_every} ms");
    let chaos = Chaos::start(&bridge, kill_every);
    let options = RunOptions {
        timeout: Some(Duration::from_secs(120 + messages / 50)),
        settle: Duration::from_secs(2),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let outcome = run(&graph, &bridge, &options, |_| {}).await;
    let took = started.elapsed();
    let kills = chaos.stop();
    let outcome = outcome.expect("the soak graph runs to its end");
    bridge.shutdown();

    let ok = shown(&outcome, "ok", "out");
    let double_failed = shown(&outcome, "double_failed", "out");
    let inc_failed = shown(&outcome, "inc_failed", "out");
    eprintln!(
        "soak: {} in {took:.1?}: {} answered by outputs, {} + {} by errors, {kills} VMs killed",
        messages,
        ok.len(),
        double_failed.len(),
        inc_failed.len()
    );
    let answers = ok.len() + double_failed.len() + inc_failed.len();
    assert_eq!(
        answers as u64, messages,
        "every input gets exactly one answer"
    );
    assert_eq!(outcome.failures, double_failed.len() + inc_failed.len());
    // Each output is 2x + 1 for a distinct input x, in the inputs' order.
    assert_in_order(&ok, |z| z % 2 == 1 && (3..=2 * messages + 1).contains(&z));
    assert_killed_vm_errors(double_failed.iter().chain(&inc_failed));
    if kill_every < took.as_millis() as u64 / 4 {
        assert!(kills > 0, "the run was long enough for kills");
    }
}

const IDENTITY: &str = "@actor(name=\"Identity\", inports=[\"x\"], outports=[\"y\"])\n\
def identity(context):\n    return {\"y\": context.get_input(\"x\")}\n";

/// A stream through one pipelined node (many messages in its VM at once)
/// while its VM is killed every few hundred milliseconds: each input is
/// answered exactly once, by its output or by an error, and the outputs
/// come in the inputs' order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_node_answers_each_input_once_in_order_while_its_vm_is_killed() {
    if !kvm_available() {
        return;
    }
    const MESSAGES: u64 = 10_000;
    let mut g = GraphBuilder::default();
    g.native("numbers", "Range", json!({}))
        .script("identity", "Identity", IDENTITY, json!({}), None)
        .native("ok", "Format", json!({}))
        .native("failed", "Format", json!({}))
        .connect("numbers", "out", "identity", "x")
        .connect("identity", "y", "ok", "in")
        .connect("identity", "error", "failed", "in")
        .initial("numbers", "count", json!(MESSAGES));
    let graph = g.load();
    let bridge = chaos_bridge(&[Language::Python], 4, "pipelined");
    let chaos = Chaos::start(&bridge, 400);
    let options = RunOptions {
        timeout: Some(Duration::from_secs(300)),
        settle: Duration::from_secs(2),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let outcome = run(&graph, &bridge, &options, |_| {}).await;
    let took = started.elapsed();
    let kills = chaos.stop();
    let outcome = outcome.expect("the graph runs to its end");
    bridge.shutdown();
    let ok = shown(&outcome, "ok", "out");
    let failed = shown(&outcome, "failed", "out");
    eprintln!(
        "pipelined: {MESSAGES} in {took:.1?}: {} outputs, {} errors, {kills} VMs killed",
        ok.len(),
        failed.len()
    );
    assert_eq!(
        (ok.len() + failed.len()) as u64,
        MESSAGES,
        "every input gets exactly one answer"
    );
    assert_in_order(&ok, |y| (1..=MESSAGES).contains(&y));
    assert_killed_vm_errors(&failed);
    assert!(kills > 0, "no VM was killed during the stream");
    // With a window in flight, a kill answers only the message running:
    // far fewer errors than kills would leave if each took the window.
    assert!(
        failed.len() <= kills,
        "{} errors for {kills} kills: a kill answered more than the message it stopped",
        failed.len()
    );
}
