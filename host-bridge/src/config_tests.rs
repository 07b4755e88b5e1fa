//! `reflow.yaml`: the seed's complete example, defaults, and errors that
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
    assert_eq!(c.python_memory_mib(), Some(1024));
    assert_eq!(c.region_mib(), Some(100));
    assert_eq!(c.redis_url(), Some("redis://localhost:6379"));
    assert_eq!(
        c.python_image(),
        None,
        "a container image name is not a file"
    );
    let mut b = crate::BridgeConfig::default();
    b.pool.preload_count = 0;
    c.apply_pool(&mut b);
    assert_eq!(
        (
            b.pool.preload_count,
            b.pool.max_size,
            b.idle_timeout.as_secs()
        ),
        (5, 20, 300)
    );
    let notes = c.notes().join("\n");
    for key in [
        "sandbox.python.image",
        "sandbox.python.packages",
        "sandbox.python.cpu",
        "sandbox.javascript.image",
        "sandbox.javascript.packages",
        "redis.ttl",
        "redis.max_connections",
        "websocket",
        "shared_memory.max_regions",
    ] {
        assert!(notes.contains(key), "no note for {key}:\n{notes}");
    }
    assert_eq!(c.memory_mib(crate::Language::JavaScript), Some(512));
    let d = c.discovery(Path::new("/w"));
    assert_eq!(d.include, ["**/*.actor.py", "**/*.actor.js"]);
}

#[test]
fn an_empty_file_means_the_defaults() {
    let c = parse("").unwrap();
    assert!(c.workspace.discover_scripts);
    assert_eq!(c.workspace.script_patterns.len(), 4);
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
fn sizes_parse_in_binary_units() {
    assert_eq!(parse_size("512MB"), Ok(512 << 20));
    assert_eq!(parse_size("1GB"), Ok(1 << 30));
    assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("MB").is_err());
    assert!(parse_size("99999999999999GB").is_err());
}
