//! The bridge's settings: pools, idle timeout and hold, limits, state
//! namespace; and how a workspace's `reflow.yaml` sets them.

use std::collections::HashMap;
use std::time::Duration;

use reflow_sandbox_core::limits::{LimitOverrides, Limits};
use reflow_sandbox_core::pool::PoolConfig;
use reflow_sandbox_core::{ComponentSettings, Language, Script};
use reflow_workspace::Config;

/// Limits and sizes (defaults as documented in docs/configuration.md).
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Per pool (a runtime, or a VM shape some actor asks for): ready
    /// clones kept, most VMs alive, restore limit.
    pub pool: PoolConfig,
    /// A node whose VM served no message for this long gives the VM back
    /// (it gets a fresh one on its next message; its state stays in the
    /// store).
    pub idle_timeout: Duration,
    /// A node whose VM served no message for this long holds the VM's
    /// vCPUs (it costs no host CPU) until its next message, which releases
    /// them.
    pub idle_hold: Duration,
    /// What one message may do (time, sizes, counts), for every actor.
    pub limits: Limits,
    /// Each runtime's own limits, over `limits` (an actor's own, in its
    /// [`Script`], go over these).
    pub runtime_limits: HashMap<Language, LimitOverrides>,
    /// Longest a node waits for a VM when the pool is at `max_size`.
    pub acquire_timeout: Duration,
    /// First part of every state key: `{namespace}:{node id}:{key}`.
    pub namespace: String,
    /// How each script's component golden (a snapshot taken with the
    /// script loaded, so a node's first message on a fresh VM skips the
    /// load) is made and cached; `None`: no component goldens, every new
    /// VM loads its script.
    pub components: Option<ComponentSettings>,
    /// Whether nodes count their messages in the bridge's metrics (on by
    /// default; off only to measure what counting costs). Pool and VM
    /// metrics are kept either way.
    pub metrics: bool,
}

impl BridgeConfig {
    /// The limits of one message of `script`: the bridge's, then its
    /// runtime's, then its own.
    pub fn limits_for(&self, script: &Script) -> Limits {
        let runtime = self
            .runtime_limits
            .get(&script.language)
            .copied()
            .unwrap_or_default();
        self.limits.with(&runtime.then(&script.limits))
    }
}

impl Default for BridgeConfig {
    fn default() -> BridgeConfig {
        BridgeConfig {
            pool: PoolConfig::default(),
            idle_timeout: Duration::from_secs(300),
            idle_hold: Duration::from_millis(20),
            limits: Limits::default(),
            runtime_limits: HashMap::new(),
            acquire_timeout: Duration::from_secs(120),
            namespace: "reflow".into(),
            components: Some(ComponentSettings::default()),
            metrics: true,
        }
    }
}

impl BridgeConfig {
    /// The pool settings and the Redis namespace of `config`, over these.
    pub fn apply_pool(&mut self, config: &Config) {
        if let Some(p) = &config.workspace.sandbox.pool {
            if let Some(n) = p.preload_count {
                self.pool.preload_count = n;
            }
            if let Some(n) = p.max_size {
                self.pool.max_size = n;
            }
            if let Some(s) = p.idle_timeout {
                self.idle_timeout = Duration::from_secs(s);
            }
            if let Some(ms) = p.idle_hold_ms {
                self.idle_hold = Duration::from_millis(ms);
            }
        }
        if let Some(c) = &config.workspace.sandbox.component_goldens {
            if c.enabled == Some(false) {
                self.components = None;
            } else if let Some(max) = c.max_cache_bytes() {
                let settings = self.components.get_or_insert_with(Default::default);
                settings.max_cache_bytes = max;
            }
        }
        if let Some(ns) = config
            .workspace
            .redis
            .as_ref()
            .and_then(|r| r.namespace.clone())
        {
            self.namespace = ns;
        }
    }

    /// The limits of `config` over these: the sandbox-wide ones over the
    /// defaults, each language's as its runtime's.
    pub fn apply_limits(&mut self, config: &Config) {
        self.limits = self.limits.with(&config.limits());
        for language in [Language::Python, Language::JavaScript] {
            let own = config.runtime_limits(language);
            if own != LimitOverrides::default() {
                self.runtime_limits.insert(language, own);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use reflow_sandbox_core::{Language, Script};
    use reflow_workspace::Config;

    use super::BridgeConfig;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("reflow.yaml")).unwrap()
    }

    #[test]
    fn pool_settings_and_namespace_come_from_the_workspace() {
        let c = parse(
            "workspace:\n  sandbox:\n    pool:\n      preload_count: 5\n      max_size: 20\n      \
             idle_timeout: 300\n      idle_hold_ms: 5\n  redis:\n    namespace: team\n",
        );
        let mut b = BridgeConfig::default();
        b.pool.preload_count = 0;
        b.apply_pool(&c);
        assert!(b.components.is_some(), "on unless turned off");
        assert_eq!(
            (
                b.pool.preload_count,
                b.pool.max_size,
                b.idle_timeout.as_secs(),
                b.namespace.as_str()
            ),
            (5, 20, 300, "team")
        );
        assert_eq!(b.idle_hold, std::time::Duration::from_millis(5));
    }

    #[test]
    fn component_goldens_can_be_bounded_or_turned_off() {
        let mut b = BridgeConfig::default();
        b.apply_pool(&parse(
            "workspace:\n  sandbox:\n    component_goldens:\n      max_cache_size: 2GB\n",
        ));
        assert_eq!(
            b.components.as_ref().map(|c| c.max_cache_bytes),
            Some(2 << 30)
        );
        b.apply_pool(&parse(
            "workspace:\n  sandbox:\n    component_goldens:\n      enabled: false\n",
        ));
        assert!(b.components.is_none());
        let bad = Config::parse(
            "workspace:\n  sandbox:\n    component_goldens:\n      max_cache_size: lots\n",
            Path::new("reflow.yaml"),
        );
        let e = bad.unwrap_err().to_string();
        assert!(e.contains("component_goldens.max_cache_size"), "{e}");
    }

    #[test]
    fn limits_come_from_the_sandbox_each_language_and_each_actor() {
        let c = parse(
            "workspace:\n  sandbox:\n    limits:\n      timeout: 10\n      max_outputs: 50\n    \
             python:\n      vcpus: 2\n      cpu: 1.5\n      limits:\n        max_message_size: 1MB\n        \
             timeout: 20\n    actors:\n      Scale:\n        limits:\n          max_state_value_size: 4096\n          \
             max_state_ops: 7\n",
        );
        let mut b = BridgeConfig::default();
        b.apply_limits(&c);
        assert_eq!(b.limits.timeout.as_secs(), 10);
        assert_eq!(b.limits.max_outputs, 50);
        assert!(!b.runtime_limits.contains_key(&Language::JavaScript));
        let mut script = Script::inline(Language::Python, "s.py", "");
        script.limits = c.actor_limits("Scale");
        let l = b.limits_for(&script);
        assert_eq!(
            (
                l.timeout.as_secs(),
                l.max_message_bytes,
                l.max_outputs,
                l.max_state_ops,
                l.max_state_value_bytes
            ),
            (20, 1 << 20, 50, 7, 4096)
        );
        let js = Script::inline(Language::JavaScript, "s.js", "");
        assert_eq!(b.limits_for(&js).timeout.as_secs(), 10);
    }
}
