//! Shared pieces of the Reflow sandbox benchmarks (see `benches/*.rs`).

pub mod actor_bench;
pub mod probe;
pub mod report;

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
    match script {
        Some(script) => {
            let bridge = reflow_integration_tests::graphs::bridge_for(
                &[script.language],
                reflow_host_bridge::state::StateStore::embedded(),
                reflow_host_bridge::BridgeConfig::default(),
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
