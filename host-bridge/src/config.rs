//! `reflow.yaml`: a workspace's configuration (the seed's "Complete
//! Configuration Example"), parsed with serde, every key checked. Keys
//! that name something this sandbox does differently are accepted and
//! reported by [`Config::notes`] instead of silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::discovery::{DiscoveryConfig, DEFAULT_EXCLUDE, DEFAULT_INCLUDE};

/// The file name looked for in a workspace directory.
pub const FILE_NAME: &str = "reflow.yaml";

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub workspace: Workspace,
    /// The graph a workspace runs (relative to the file; default
    /// `graph.json`).
    #[serde(default)]
    pub graph: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    #[serde(default = "yes")]
    pub discover_scripts: bool,
    #[serde(default = "include")]
    pub script_patterns: Vec<String>,
    #[serde(default = "exclude")]
    pub excluded_paths: Vec<String>,
    #[serde(default)]
    pub sandbox: Sandbox,
    #[serde(default)]
    pub redis: Option<Redis>,
    #[serde(default)]
    pub websocket: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub shared_memory: Option<SharedMemory>,
}

impl Default for Workspace {
    fn default() -> Workspace {
        Workspace {
            discover_scripts: true,
            script_patterns: include(),
            excluded_paths: exclude(),
            sandbox: Sandbox::default(),
            redis: None,
            websocket: None,
            shared_memory: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn include() -> Vec<String> {
    DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect()
}
fn exclude() -> Vec<String> {
    DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    #[serde(default)]
    pub python: Option<Language>,
    #[serde(default)]
    pub javascript: Option<Language>,
    #[serde(default)]
    pub pool: Option<Pool>,
}

/// One language's sandbox.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Language {
    /// A root filesystem image file (built by `guest-image/`), not a
    /// container image name.
    pub image: Option<PathBuf>,
    #[serde(default)]
    pub packages: Vec<String>,
    /// Guest memory: `256MB`, `1GB` (binary units).
    pub memory: Option<String>,
    pub cpu: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub preload_count: Option<usize>,
    pub max_size: Option<usize>,
    /// Seconds.
    pub idle_timeout: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub url: Option<String>,
    pub namespace: Option<String>,
    pub ttl: Option<u64>,
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedMemory {
    pub enabled: Option<bool>,
    pub max_regions: Option<u32>,
    /// Shared region per VM: `40MB`.
    pub region_size: Option<String>,
}

/// Whether an image setting names a file (rather than, as in the seed's
/// example, a container image such as `python:3.11-slim`).
fn looks_like_path(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.contains('/') || s.ends_with(".ext4") || s.ends_with(".img")
}

impl Config {
    /// The settings of `language`'s sandbox, when the file has them.
    fn sandbox(&self, language: crate::Language) -> Option<&Language> {
        match language {
            crate::Language::Python => self.workspace.sandbox.python.as_ref(),
            crate::Language::JavaScript => self.workspace.sandbox.javascript.as_ref(),
        }
    }

    /// The Python root image, when the file sets one.
    pub fn python_image(&self) -> Option<&Path> {
        self.image(crate::Language::Python)
    }

    /// The root image of `language`, when the file sets one.
    pub fn image(&self, language: crate::Language) -> Option<&Path> {
        let image = self.sandbox(language)?.image.as_deref()?;
        looks_like_path(image).then_some(image)
    }
}

/// A size like `512MB`, `1GB`, `64KiB` or `4096` (bytes), in bytes; `KB`,
/// `MB` and `GB` are binary units, as VM memory sizes usually are.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512MB"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (B, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks `text` (read from `path`).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
                path: path.into(),
                source,
            })?
        };
        config
            .check()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.into(),
                key,
                message,
            })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let w = &self.workspace;
        if w.script_patterns.is_empty() {
            return Err((
                "workspace.script_patterns",
                "is empty: nothing would be found".into(),
            ));
        }
        if let Some(py) = &w.sandbox.python {
            if let Some(m) = &py.memory {
                let mib = parse_size(m).map_err(|e| ("workspace.sandbox.python.memory", e))? >> 20;
                if !(64..=3072).contains(&mib) {
                    return Err((
                        "workspace.sandbox.python.memory",
                        format!("{m} is outside 64MB..3GB"),
                    ));
                }
            }
            if let Some(cpu) = py.cpu {
                if !(cpu > 0.0 && cpu <= 64.0) {
                    return Err((
                        "workspace.sandbox.python.cpu",
                        format!("{cpu} is outside (0, 64]"),
                    ));
                }
            }
            if let Some(image) = &py.image {
                if looks_like_path(image) && !image.is_file() {
                    return Err((
                        "workspace.sandbox.python.image",
                        format!(
                            "{} is not a file (give the root image built by \
                             guest-image/build-python.sh, or leave the key out)",
                            image.display()
                        ),
                    ));
                }
            }
        }
        if let Some(pool) = &w.sandbox.pool {
            if pool.max_size == Some(0) {
                return Err((
                    "workspace.sandbox.pool.max_size",
                    "must be at least 1".into(),
                ));
            }
            if let (Some(p), Some(m)) = (pool.preload_count, pool.max_size) {
                if p > m {
                    return Err((
                        "workspace.sandbox.pool.preload_count",
                        format!("{p} is more than max_size {m}"),
                    ));
                }
            }
        }
        if let Some(url) = w.redis.as_ref().and_then(|r| r.url.as_deref()) {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err((
                    "workspace.redis.url",
                    format!("{url:?} is not a redis:// URL"),
                ));
            }
        }
        if let Some(shm) = &w.shared_memory {
            if shm.enabled == Some(false) {
                return Err((
                    "workspace.shared_memory.enabled",
                    "cannot be false: every message crosses the shared-memory ring".into(),
                ));
            }
            if let Some(size) = &shm.region_size {
                let mib =
                    parse_size(size).map_err(|e| ("workspace.shared_memory.region_size", e))? >> 20;
                if !(4..=1024).contains(&mib) {
                    return Err((
                        "workspace.shared_memory.region_size",
                        format!("{size} is outside 4MB..1GB"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// What the sandbox does differently from what some keys ask, one line
    /// each (for the user to see; the run goes on).
    pub fn notes(&self) -> Vec<String> {
        let w = &self.workspace;
        let mut notes = Vec::new();
        for (lang, l) in [
            ("python", &w.sandbox.python),
            ("javascript", &w.sandbox.javascript),
        ] {
            let Some(l) = l else { continue };
            if let Some(image) = l.image.as_ref().filter(|i| !looks_like_path(i)) {
                notes.push(format!(
                    "workspace.sandbox.{lang}.image: {:?} looks like a container image name; those do \
                     not apply here (the image built by guest-image/ is used)",
                    image.display().to_string()
                ));
            }
            if !l.packages.is_empty() {
                notes.push(format!(
                    "workspace.sandbox.{lang}.packages: packages are baked into the image when it is \
                     built (guest-image/python/requirements.txt, guest-image/node/npm-packages.txt), not installed at run time"
                ));
            }
            if l.cpu.is_some() {
                notes.push(format!(
                    "workspace.sandbox.{lang}.cpu: CPU shares are not enforced yet (each VM has one vCPU)"
                ));
            }
        }
        if let Some(r) = &w.redis {
            if r.ttl.is_some() {
                notes.push(
                    "workspace.redis.ttl: keys get no default TTL; actors call state.expire".into(),
                );
            }
            if r.max_connections.is_some() {
                notes.push("workspace.redis.max_connections: one multiplexed connection serves every actor".into());
            }
        }
        if w.websocket.is_some() {
            notes.push(
                "workspace.websocket: there is no WebSocket server here; the key is ignored".into(),
            );
        }
        if w.shared_memory
            .as_ref()
            .and_then(|s| s.max_regions)
            .is_some()
        {
            notes.push("workspace.shared_memory.max_regions: one region per VM; sandbox.pool.max_size bounds them".into());
        }
        notes
    }

    /// Discovery settings rooted at `root`.
    pub fn discovery(&self, root: &Path) -> DiscoveryConfig {
        DiscoveryConfig {
            root: root.into(),
            include: self.workspace.script_patterns.clone(),
            exclude: self.workspace.excluded_paths.clone(),
        }
    }

    /// Guest memory of Python VMs in MiB, when set.
    pub fn python_memory_mib(&self) -> Option<u32> {
        self.memory_mib(crate::Language::Python)
    }

    /// Guest memory of `language`'s VMs in MiB, when set.
    pub fn memory_mib(&self, language: crate::Language) -> Option<u32> {
        let m = self.sandbox(language)?.memory.as_ref()?;
        parse_size(m).ok().map(|b| (b >> 20) as u32)
    }

    /// Shared region per VM in MiB, when set.
    pub fn region_mib(&self) -> Option<u32> {
        let s = self
            .workspace
            .shared_memory
            .as_ref()?
            .region_size
            .as_ref()?;
        parse_size(s).ok().map(|b| (b >> 20) as u32)
    }

    /// The pool settings, over `base`.
    pub fn apply_pool(&self, base: &mut crate::BridgeConfig) {
        if let Some(p) = &self.workspace.sandbox.pool {
            if let Some(n) = p.preload_count {
                base.pool.preload_count = n;
            }
            if let Some(n) = p.max_size {
                base.pool.max_size = n;
            }
            if let Some(s) = p.idle_timeout {
                base.idle_timeout = Duration::from_secs(s);
            }
        }
        if let Some(ns) = self
            .workspace
            .redis
            .as_ref()
            .and_then(|r| r.namespace.clone())
        {
            base.namespace = ns;
        }
    }

    /// The Redis URL, when set.
    pub fn redis_url(&self) -> Option<&str> {
        self.workspace.redis.as_ref()?.url.as_deref()
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
