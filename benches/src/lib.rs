//! Shared pieces of the Reflow sandbox benchmarks (see `benches/*.rs`).

pub mod actor_bench;
pub mod probe;
pub mod process_bench;
pub mod render;
pub mod report;
pub mod smaps;
pub mod targets;

pub use reflow_integration_tests::{guest_images, kvm_available, GuestImages, TestVm};

use std::time::Duration;

use reflow_vmm::{AgentReady, VmConfig, VmOutcome};

/// The actor to put in a graph's middle: `script` on a bridge of its own
/// (ready within `ready`; shut it down after its measurement, so that no
/// idle VM of one measurement runs during the next), or the native `Add`
/// when there is no script.
pub fn middle_actor(
    script: Option<reflow_sandbox_core::Script>,
    ready: Duration,
) -> (
    Option<reflow_host_bridge::Bridge>,
    std::sync::Arc<dyn reflow_actor::Actor>,
) {
    middle_actor_with(script, ready, reflow_host_bridge::BridgeConfig::default())
}

/// As [`middle_actor`], a script's bridge configured by `config`.
pub fn middle_actor_with(
    script: Option<reflow_sandbox_core::Script>,
    ready: Duration,
    config: reflow_host_bridge::BridgeConfig,
) -> (
    Option<reflow_host_bridge::Bridge>,
    std::sync::Arc<dyn reflow_actor::Actor>,
) {
    match script {
        Some(script) => {
            let bridge = reflow_integration_tests::graphs::bridge_for(
                &[script.language],
                reflow_host_bridge::state::StateStore::embedded(),
                config,
            );
            bridge.wait_ready(ready);
            let actor = bridge.actor(script).expect("the script's actor");
            (Some(bridge), std::sync::Arc::new(actor))
        }
        None => (
            None,
            std::sync::Arc::new(reflow_sandbox::natives::native("Add").expect("Add")),
        ),
    }
}

/// A bridge whose `language` workers run as jailed host processes
/// (`isolation: process`) on the language's image, of the runtime's
/// default sizes, configured by `config`. Call within a tokio runtime.
pub fn process_bridge(
    language: reflow_sandbox_core::Language,
    config: reflow_host_bridge::BridgeConfig,
) -> reflow_host_bridge::Bridge {
    use reflow_sandbox_core::Language;
    let sizes = reflow_sandbox::setup::Sizes::default_for(language);
    let image = match language {
        Language::Python => reflow_integration_tests::python_image(),
        Language::JavaScript => reflow_integration_tests::node_image(),
    };
    let spec =
        reflow_sandbox_core::VmSpec::process(language, image, sizes.shape.mem_mib, sizes.shm_mib);
    reflow_host_bridge::Bridge::new(
        vec![(language, spec)],
        reflow_host_bridge::state::StateStore::embedded(),
        config,
    )
}

/// Runs `actor`'s behavior once on `inputs` (as a caller that invokes the
/// behavior itself) and returns what it answered with.
pub fn invoke_once(
    rt: &tokio::runtime::Runtime,
    actor: &dyn reflow_actor::Actor,
    inputs: std::collections::HashMap<String, reflow_actor::message::Message>,
) -> std::collections::HashMap<String, reflow_actor::message::Message> {
    let ctx = reflow_actor::ActorContext::new(
        inputs,
        actor.get_outports(),
        std::sync::Arc::new(parking_lot::Mutex::new(reflow_actor::MemoryState::default())),
        reflow_actor::ActorConfig::default(),
        std::sync::Arc::new(reflow_actor::ActorLoad::new(0)),
    );
    rt.block_on(actor.get_behavior()(ctx)).expect("an answer")
}

/// The seconds an actor reported it took, as its `took` output.
pub fn took(
    outputs: &std::collections::HashMap<String, reflow_actor::message::Message>,
) -> Duration {
    match outputs.get("took") {
        Some(reflow_actor::message::Message::Float(s)) if s.is_finite() && *s >= 0.0 => {
            Duration::from_secs_f64(*s)
        }
        other => panic!("the actor answered {other:?}, not its time"),
    }
}

/// `n` runs of `f`, each timed on its own, sorted: the samples a report's
/// percentiles come from, taken apart from criterion's runs so that none
/// of its warm-up is in them.
pub fn sample(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// `config` with its `idle_hold` from `REFLOW_IDLE_HOLD_MS` when that is
/// set (milliseconds), to measure other holds than the default.
pub fn idle_hold_from_env(
    mut config: reflow_host_bridge::BridgeConfig,
) -> reflow_host_bridge::BridgeConfig {
    if let Some(ms) = std::env::var("REFLOW_IDLE_HOLD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.idle_hold = Duration::from_millis(ms);
    }
    config
}

/// The benches' tokio runtime: two workers, like the CI machine's cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Boots the agent-only guest once, powering off as soon as the agent's
/// control channel is ready, and returns when it was ready and the whole
/// outcome.
pub fn boot_to_ready(images: &GuestImages) -> (AgentReady, VmOutcome) {
    let mut config = VmConfig::new(&images.kernel);
    config.initrd = Some(images.initramfs.clone());
    boot_config_to_ready(config)
}

/// Boots `config` once (no golden), powering off as soon as the agent's
/// control channel is ready; returns when it was ready and the outcome.
pub fn boot_config_to_ready(mut config: VmConfig) -> (AgentReady, VmOutcome) {
    config.timeout = Some(Duration::from_secs(900));
    let outcome = TestVm::boot(config, Box::new(std::io::sink())).power_off();
    let ready = outcome.ready.unwrap_or_else(|| {
        panic!(
            "agent never became ready ({:?}); console tail:\n{}",
            outcome.stop,
            outcome.console_tail.join("\n")
        )
    });
    (ready, outcome)
}

/// The median of a set of durations (the upper one for an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The 99th percentile of a set of durations (nearest rank).
pub fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99).div_ceil(100) - 1]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
