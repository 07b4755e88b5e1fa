//! Discovery against the real SDKs: the metadata read on the host from each
//! good Python and JavaScript fixture (without running it) is exactly what
//! the guest's SDK reports when the script loads in a VM. And discovered actors
//! register into a Reflow network.

use std::path::PathBuf;

use reflow_host_bridge::registry::register_script_actors;
use reflow_host_bridge::state::json::to_json;
use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::{Bridge, BridgeConfig};
use reflow_integration_tests::{
    kvm_available, warm_node_golden, warm_python_golden, TestVm, LIMIT,
};
use reflow_sandbox_core::{Language, PoolConfig, VmSpec, WorkerClient};
use reflow_workspace::discovery::{discover, DiscoveryConfig};
use serde_json::{json, Value};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/workspace")
}

/// The guest's metadata with outports' absent `required` made explicit
/// (the SDK leaves it out; discovery says false, Reflow's default).
fn normalized(mut guest: Value) -> Value {
    for port in guest["outports"].as_array_mut().into_iter().flatten() {
        if port.get("required").is_none() {
            port["required"] = json!(false);
        }
    }
    guest
}

#[test]
fn host_metadata_matches_what_the_guest_sdk_reports() {
    if !kvm_available() {
        return;
    }
    let found = discover(&DiscoveryConfig::new(&workspace())).unwrap();
    for (language, count, (dir, config)) in [
        (
            Language::Python,
            3,
            warm_python_golden(40, "run_worker.py", "worker.ready"),
        ),
        (Language::JavaScript, 5, warm_node_golden(40)),
    ] {
        let components: Vec<_> = found
            .components
            .iter()
            .filter(|c| c.metadata.runtime == language)
            .collect();
        assert_eq!(components.len(), count, "{language}");
        let vm = TestVm::restore(&dir, config, Box::new(std::io::sink()));
        let shared = vm.shared.clone().expect("a shared region");
        let mut c = WorkerClient::attach(shared.ring_region(), &shared.layout());
        for component in components {
            let m = &component.metadata;
            let source = std::fs::read_to_string(&component.path).unwrap();
            let loaded = c.load(&m.component, &m.file, &source, LIMIT).unwrap();
            let guest: Value = serde_json::from_str(&to_json(&loaded.metadata).unwrap()).unwrap();
            let host = json!({
                "component": m.component, "description": m.description,
                "inports": m.inports, "outports": m.outports, "tags": m.tags, "config": m.config,
            });
            assert_eq!(normalized(guest), host, "{}", m.file);
        }
        vm.power_off();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_actors_register_into_a_network() {
    let found = discover(&DiscoveryConfig::new(&workspace())).unwrap();
    // A Python runtime whose pool restores nothing until asked: nothing
    // here runs a VM.
    let spec = VmSpec::new(
        "/nonexistent".into(),
        reflow_vmm::VmConfig::new("/nonexistent"),
    );
    let config = BridgeConfig {
        pool: PoolConfig {
            preload_count: 0,
            ..PoolConfig::default()
        },
        ..BridgeConfig::default()
    };
    let bridge = Bridge::new(
        vec![(Language::Python, spec)],
        StateStore::embedded(),
        config,
    );
    let python_only = reflow_workspace::discovery::Discovery {
        components: found
            .components
            .iter()
            .filter(|c| c.metadata.runtime == Language::Python)
            .cloned()
            .collect(),
        problems: Vec::new(),
    };
    let mut network = reflow_network::network::Network::new(reflow_sandbox::run::network_config());
    let names = register_script_actors(&mut network, &bridge, &python_only).unwrap();
    assert_eq!(names, ["Multiply", "Negate", "Upper"]);
    assert_eq!(network.actor_count(), 3);
    network.add_node("m", "Multiply", None).unwrap();
    // A JavaScript actor needs a runtime this bridge lacks: named error.
    let err = register_script_actors(&mut network, &bridge, &found).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Clock: no javascript runtime is configured in this bridge"
    );
    // And a name already registered is refused by Reflow, named too.
    let err = register_script_actors(&mut network, &bridge, &python_only).unwrap_err();
    assert!(err.to_string().starts_with("Multiply: "), "{err}");
}
