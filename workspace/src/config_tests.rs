//! `reflow.yaml`: the documented complete example, defaults, and errors that
//! name the key.

use std::path::Path;

use super::*;

const SEED_EXAMPLE: &str = r#"
workspace:
  discover_scripts: true
  script_patterns:
    - "**/*.actor.py"
    - "**/*.actor.js"
  excluded_paths:
    - "**/node_modules/**"
    - "**/__pycache__/**"
  sandbox:
    python:
      image: "python:3.11-slim"
      packages: ["numpy", "pandas", "scikit-learn"]
      memory: "1GB"
      cpu: 1.0
    javascript:
      image: "node:20-alpine"
      packages: ["lodash", "moment"]
      memory: "512MB"
      cpu: 0.5
    pool:
      preload_count: 5
      max_size: 20
      idle_timeout: 300
  redis:
    url: "redis://localhost:6379"
    namespace: "reflow"
    ttl: 3600
    max_connections: 100
  websocket:
    port: 8080
    max_frame_size: "10MB"
    ping_interval: 30
    compression: true
  shared_memory:
    enabled: true
    max_regions: 100
    region_size: "100MB"
"#;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("reflow.yaml")).map_err(|e| e.to_string())
}

#[test]
fn the_seed_example_loads_with_notes_for_what_differs() {
    let c = parse(SEED_EXAMPLE).unwrap();
    assert_eq!(
        c.memory_mib(reflow_sandbox_core::Language::Python),
        Some(1024)
    );
    assert_eq!(c.region_mib(), Some(100));
    assert_eq!(c.redis_url(), Some("redis://localhost:6379"));
    assert_eq!(
        c.image(reflow_sandbox_core::Language::Python),
        None,
        "a container image name is not a file"
    );
    let pool = c.workspace.sandbox.pool.as_ref().unwrap();
    assert_eq!(
        (pool.preload_count, pool.max_size, pool.idle_timeout),
        (Some(5), Some(20), Some(300))
    );
    assert_eq!(
        c.packages(reflow_sandbox_core::Language::Python),
        ["numpy", "pandas", "scikit-learn"]
    );
    let notes = c.notes().join("\n");
    for key in [
        "sandbox.python.image",
        "sandbox.javascript.image",
        "redis.ttl",
        "redis.max_connections",
        "websocket",
        "shared_memory.max_regions",
    ] {
        assert!(notes.contains(key), "no note for {key}:\n{notes}");
    }
    assert_eq!(
        c.memory_mib(reflow_sandbox_core::Language::JavaScript),
        Some(512)
    );
    let d = c.discovery(Path::new("/w"));
    assert_eq!(d.include, ["**/*.actor.py", "**/*.actor.js"]);
}

#[test]
fn an_empty_file_means_the_defaults() {
    let c = parse("").unwrap();
    assert!(c.workspace.discover_scripts);
    assert_eq!(c.workspace.script_patterns.len(), 8);
    assert!(c.notes().is_empty());
    assert_eq!(c.graph, None);
}

#[test]
fn mistakes_name_their_key() {
    let cases = [
        (
            "workspace:\n  sandbox:\n    pool:\n      preload: 3\n",
            "unknown field `preload`",
        ),
        ("workspace:\n  discover: true\n", "unknown field `discover`"),
        (
            "workspace:\n  sandbox:\n    pool:\n      max_size: -1\n",
            "max_size",
        ),
        (
            "workspace:\n  sandbox:\n    python:\n      memory: 10XB\n",
            "workspace.sandbox.python.memory: unknown unit",
        ),
        (
            "workspace:\n  sandbox:\n    python:\n      memory: 8GB\n",
            "workspace.sandbox.python.memory: 8GB is outside",
        ),
        (
            "workspace:\n  sandbox:\n    python:\n      cpu: 0\n",
            "workspace.sandbox.python.cpu",
        ),
        (
            "workspace:\n  sandbox:\n    python:\n      image: /nope/rootfs.ext4\n",
            "workspace.sandbox.python.image: /nope/rootfs.ext4 is not a file",
        ),
        (
            "workspace:\n  sandbox:\n    pool:\n      preload_count: 9\n      max_size: 2\n",
            "preload_count: 9 is more than max_size 2",
        ),
        (
            "workspace:\n  sandbox:\n    pool:\n      idle_hold_ms: 3600001\n",
            "idle_hold_ms: 3600001 ms is over an hour",
        ),
        (
            "workspace:\n  redis:\n    url: localhost:6379\n",
            "workspace.redis.url",
        ),
        (
            "workspace:\n  shared_memory:\n    enabled: false\n",
            "workspace.shared_memory.enabled",
        ),
        (
            "workspace:\n  script_patterns: []\n",
            "workspace.script_patterns: is empty",
        ),
        (
            "workspace:\n  sandbox:\n    python:\n      cpu: 1.5\n",
            "workspace.sandbox.python.cpu: 1.5 is outside 0.01..1",
        ),
        (
            "workspace:\n  sandbox:\n    javascript:\n      vcpus: 40\n",
            "workspace.sandbox.javascript.vcpus: 40 is outside 1..32",
        ),
        (
            "workspace:\n  sandbox:\n    limits:\n      timeout: 0\n",
            "workspace.sandbox.limits.timeout: 0 is outside",
        ),
        (
            "workspace:\n  sandbox:\n    python:\n      limits:\n        max_output_size: 2TB\n",
            "workspace.sandbox.python.limits.max_output_size: unknown unit",
        ),
        (
            "workspace:\n  sandbox:\n    actors:\n      Scale:\n        limits:\n          max_outputs: 0\n",
            "workspace.sandbox.actors.Scale.limits.max_outputs: 0 is outside",
        ),
        (
            "workspace:\n  sandbox:\n    javascript:\n      memory: 16MB\n",
            "workspace.sandbox.javascript.memory: 16MB is outside 64MB..3GB",
        ),
        (
            "workspace:\n  sandbox:\n    actors:\n      Big:\n        memory: 4GB\n",
            "workspace.sandbox.actors.Big.memory: 4GB is outside",
        ),
        (
            "workspace:\n  sandbox:\n    actors:\n      Big:\n        vcpus: 0\n",
            "workspace.sandbox.actors.Big.vcpus: 0 is outside 1..32",
        ),
        (
            "workspace:\n  sandbox:\n    actors:\n      Big:\n        vcpus: 2\n        cpu: 2.5\n",
            "workspace.sandbox.actors.Big.cpu: 2.5 is outside 0.01..2",
        ),
        (
            "workspace:\n  sandbox:\n    actors:\n      Big:\n        cpus: 1\n",
            "unknown field `cpus`",
        ),
        (
            "workspace:\n  sandbox:\n    python:\n      isolation: container\n",
            "workspace.sandbox.python.isolation: \"container\" is not an isolation (vm or process)",
        ),
        (
            "workspace:\n  sandbox:\n    actors:\n      Big:\n        isolation: Process\n",
            "workspace.sandbox.actors.Big.isolation: \"Process\" is not an isolation",
        ),
        (
            "workspace:\n  sandbox:\n    limits:\n      max_outptus: 3\n",
            "unknown field `max_outptus`",
        ),
        ("workspace: [1, 2\n", "reflow.yaml"),
    ];
    for (text, want) in cases {
        match parse(text) {
            Ok(_) => panic!("accepted {text:?}"),
            Err(e) => assert!(e.contains(want), "{text:?}: {e:?} does not say {want:?}"),
        }
    }
}

#[test]
fn limits_come_from_the_sandbox_each_language_and_each_actor() {
    let c = parse(
        "workspace:\n  sandbox:\n    limits:\n      timeout: 10\n      max_outputs: 50\n      \
         max_output_total_size: 64MB\n    \
         python:\n      vcpus: 2\n      cpu: 1.5\n      limits:\n        max_message_size: 1MB\n        \
         timeout: 20\n    actors:\n      Scale:\n        limits:\n          max_state_value_size: 4096\n          \
         max_state_ops: 7\n          max_log_lines: 20\n          max_log_size: 2KB\n",
    )
    .unwrap();
    assert_eq!(c.limits().timeout, Some(std::time::Duration::from_secs(10)));
    assert_eq!(c.limits().max_outputs, Some(50));
    assert_eq!(c.limits().max_output_total_bytes, Some(64 << 20));
    assert_eq!(
        c.runtime_limits(reflow_sandbox_core::Language::JavaScript),
        reflow_sandbox_core::LimitOverrides::default()
    );
    let own = c.runtime_limits(reflow_sandbox_core::Language::Python);
    assert_eq!(
        (own.timeout, own.max_message_bytes),
        (Some(std::time::Duration::from_secs(20)), Some(1 << 20))
    );
    let actor = c.actor_limits("Scale");
    assert_eq!(
        (actor.max_state_ops, actor.max_state_value_bytes),
        (Some(7), Some(4096))
    );
    assert_eq!(
        (actor.max_log_lines, actor.max_log_bytes),
        (Some(20), Some(2048))
    );
    assert_eq!(c.vcpus(reflow_sandbox_core::Language::Python), Some(2));
    assert_eq!(c.cpu(reflow_sandbox_core::Language::Python), Some(1.5));
    assert_eq!(
        c.actor_limits("Other"),
        reflow_sandbox_core::LimitOverrides::default()
    );
}

#[test]
fn sizes_parse_in_binary_units() {
    assert_eq!(parse_size("512MB"), Ok(512 << 20));
    assert_eq!(parse_size("1GB"), Ok(1 << 30));
    assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("MB"), Err(SizeError::NotASize("MB".into())));
    assert!(matches!(
        parse_size("99999999999999GB"),
        Err(SizeError::TooLarge(_))
    ));
    assert_eq!(
        parse_size("2TB").unwrap_err().to_string(),
        "unknown unit \"TB\" in \"2TB\" (B, KB, MB, GB)"
    );
}

#[test]
fn a_bad_value_is_a_typed_error_at_its_key() {
    let text =
        "workspace:\n  sandbox:\n    actors:\n      Big:\n        vcpus: 2\n        cpu: 2.5\n";
    match Config::parse(text, Path::new("reflow.yaml")) {
        Err(ConfigError::Invalid { error, .. }) => assert_eq!(
            error,
            KeyError {
                key: "workspace.sandbox.actors.Big.cpu".into(),
                problem: KeyProblem::Cpu {
                    cpu: 2.5,
                    most: 2.0
                },
            }
        ),
        other => panic!("{other:?}"),
    }
    let e = parse("workspace:\n  sandbox:\n    python:\n      memory: 10XB\n").unwrap_err();
    assert_eq!(
        e,
        "reflow.yaml: workspace.sandbox.python.memory: unknown unit \"XB\" in \"10XB\" (B, KB, MB, GB)"
    );
}

#[test]
fn an_actor_may_ask_for_its_own_vm_shape() {
    let c = parse(
        "workspace:\n  sandbox:\n    python:\n      memory: 512MB\n    actors:\n      Big:\n        \
         memory: 1GB\n        vcpus: 2\n        cpu: 1.5\n      Slow:\n        cpu: 0.25\n",
    )
    .unwrap();
    assert_eq!(
        c.memory_mib(reflow_sandbox_core::Language::Python),
        Some(512)
    );
    let big = c.actor_shape("Big");
    assert_eq!(
        (big.mem_mib, big.vcpus, big.cpu),
        (Some(1024), Some(2), Some(1.5))
    );
    let slow = c.actor_shape("Slow");
    assert_eq!(
        (slow.mem_mib, slow.vcpus, slow.cpu),
        (None, None, Some(0.25))
    );
    assert!(c.actor_shape("Other").is_empty());
}

#[test]
fn a_language_or_an_actor_may_run_as_a_process() {
    use reflow_sandbox_core::{IsolationKind, Language};
    let c = parse(
        "workspace:\n  sandbox:\n    javascript:\n      isolation: process\n    actors:\n      \
         Trusted:\n        isolation: process\n      Strict:\n        isolation: vm\n",
    )
    .unwrap();
    assert_eq!(
        c.runtime_shape(Language::JavaScript).isolation,
        Some(IsolationKind::Process)
    );
    assert_eq!(c.runtime_shape(Language::Python).isolation, None);
    assert_eq!(
        c.actor_shape("Trusted").isolation,
        Some(IsolationKind::Process)
    );
    assert_eq!(c.actor_shape("Strict").isolation, Some(IsolationKind::Vm));
    assert_eq!(c.actor_shape("Other").isolation, None);
}

#[test]
fn script_nodes_may_run_on_sandbox_hosts() {
    let c = parse(
        "workspace:\n  sandbox:\n    hosts: [\"http://a:8080\", \"http://b:8080\"]\n    \
         host_token_file: secrets/token\n    host_ca_file: fleet-ca.pem\n",
    )
    .unwrap();
    assert_eq!(
        c.workspace.sandbox.hosts,
        ["http://a:8080", "http://b:8080"]
    );
    assert_eq!(
        c.workspace.sandbox.host_token_file.as_deref(),
        Some(Path::new("secrets/token"))
    );
    assert_eq!(
        c.workspace.sandbox.host_ca_file.as_deref(),
        Some(Path::new("fleet-ca.pem"))
    );
    assert!(parse("workspace:\n  sandbox:\n    hosts: http://a\n").is_err());
    assert!(parse("").unwrap().workspace.sandbox.hosts.is_empty());
}
