//! `reflow.yaml`: a workspace's configuration (the documented "Complete
//! Configuration Example"), parsed with serde, every key checked. Keys
//! that name something this sandbox does differently are accepted and
//! reported by [`Config::notes`] instead of silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::discovery::{DiscoveryConfig, DEFAULT_EXCLUDE, DEFAULT_INCLUDE};
use reflow_sandbox_core::shape::MAX_VCPUS;
use reflow_sandbox_core::ShapeOverrides;
use reflow_sandbox_core::{IsolationKind, LimitOverrides};

/// The file name looked for in a workspace directory.
pub const FILE_NAME: &str = "reflow.yaml";

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file's path.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape (or has an unknown key).
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file's path.
        path: PathBuf,
        /// The YAML parser's error.
        source: serde_yaml_ng::Error,
    },
    /// A key's value cannot be used.
    #[error("{}: {error}", path.display())]
    Invalid {
        /// The file's path.
        path: PathBuf,
        /// Which key, and what is wrong with it.
        error: KeyError,
    },
}

/// A key whose value cannot be used: which key (`workspace.sandbox.pool`
/// and so on), and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct KeyError {
    /// The key's dotted path, such as `workspace.sandbox.pool.max_size`.
    pub key: String,
    /// What is wrong with its value.
    pub problem: KeyProblem,
}

/// What is wrong with a key's value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyProblem {
    /// A size text does not parse.
    #[error(transparent)]
    Size(#[from] SizeError),
    /// Guest memory (as written) outside what a VM may have.
    #[error("{0} is outside 64MB..3GB")]
    Memory(String),
    /// A vCPU count outside 1..[`MAX_VCPUS`].
    #[error("{0} is outside 1..{MAX_VCPUS}")]
    Vcpus(u8),
    /// CPU time outside 0.01..`most` CPUs.
    #[error("{cpu} is outside 0.01..{most} (at most one CPU per vCPU)")]
    Cpu {
        /// The CPU time given, in CPUs.
        cpu: f64,
        /// The most allowed: the section's vCPUs, else its default.
        most: f64,
    },
    /// An isolation that is neither `vm` nor `process`.
    #[error("{0:?} is not an isolation (vm or process)")]
    Isolation(String),
    /// A message size limit, in bytes.
    #[error("{0} bytes is outside 1B..1GB")]
    LimitSize(u64),
    /// A count limit (outputs, state operations).
    #[error("{0} is outside 1..{MAX_COUNT}")]
    Count(usize),
    /// A per-message timeout, in seconds.
    #[error("{0} is outside 1..{MAX_TIMEOUT_S} seconds")]
    Timeout(u64),
    /// `script_patterns` is empty.
    #[error("is empty: nothing would be found")]
    NoPatterns,
    /// A root image path that is not a file.
    #[error(
        "{} is not a file (give the root image built by guest-image/build-python.sh, \
         or leave the key out)",
        .0.display()
    )]
    NoImage(PathBuf),
    /// A pool `max_size` of 0.
    #[error("must be at least 1")]
    EmptyPool,
    /// A pool's `preload_count` is over its `max_size`.
    #[error("{preload} is more than max_size {max}")]
    PreloadOverMax {
        /// The `preload_count` given.
        preload: usize,
        /// The `max_size` given.
        max: usize,
    },
    /// An `idle_hold_ms` (given) over an hour.
    #[error("{0} ms is over an hour (3600000)")]
    HoldTooLong(u64),
    /// A Redis URL (given) that is not `redis://` or `rediss://`.
    #[error("{0:?} is not a redis:// URL")]
    NotRedis(String),
    /// `shared_memory.enabled: false`, which this sandbox cannot do.
    #[error("cannot be false: every message crosses the shared-memory ring")]
    RingOff,
    /// A shared region size (as written) outside 4MB..1GB.
    #[error("{0} is outside 4MB..1GB")]
    RegionSize(String),
}

impl KeyProblem {
    /// This problem, found at `key`.
    fn at(self, key: impl Into<String>) -> KeyError {
        KeyError {
            key: key.into(),
            problem: self,
        }
    }
}

/// Why a text is not a size (see [`parse_size`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The text (given) has no number (fitting 64 bits) before its unit.
    #[error("{0:?} is not a size like 512MB")]
    NotASize(String),
    /// The number is followed by an unknown unit.
    #[error("unknown unit {unit:?} in {text:?} (B, KB, MB, GB)")]
    UnknownUnit {
        /// The unit as written (upper-cased).
        unit: String,
        /// The whole text.
        text: String,
    },
    /// The size (given as text) overflows 64 bits of bytes.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The `workspace:` section.
    #[serde(default)]
    pub workspace: Workspace,
    /// The graph a workspace runs (relative to the file; default
    /// `graph.json`).
    #[serde(default)]
    pub graph: Option<PathBuf>,
}

/// The `workspace:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    /// Whether to discover script actors in the workspace (default true).
    #[serde(default = "yes")]
    pub discover_scripts: bool,
    /// Globs of the script files to discover (default [`DEFAULT_INCLUDE`];
    /// must not be empty).
    #[serde(default = "include")]
    pub script_patterns: Vec<String>,
    /// Globs of paths never searched (default [`DEFAULT_EXCLUDE`]).
    #[serde(default = "exclude")]
    pub excluded_paths: Vec<String>,
    /// The `sandbox:` section.
    #[serde(default)]
    pub sandbox: Sandbox,
    /// The `redis:` section, where state is kept in Redis.
    #[serde(default)]
    pub redis: Option<Redis>,
    /// The `websocket:` section: accepted and ignored (see [`Config::notes`]).
    #[serde(default)]
    pub websocket: Option<serde_yaml_ng::Value>,
    /// The `shared_memory:` section.
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

/// The `workspace.sandbox:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    /// Settings of the Python runtime.
    #[serde(default)]
    pub python: Option<Language>,
    /// Settings of the JavaScript runtime.
    #[serde(default)]
    pub javascript: Option<Language>,
    /// Settings of every VM pool.
    #[serde(default)]
    pub pool: Option<Pool>,
    /// Limits of every actor's messages.
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
    /// Settings of single actors, by component name.
    #[serde(default)]
    pub actors: BTreeMap<String, ActorSandbox>,
    /// Snapshots of each script's VM with the script loaded.
    #[serde(default)]
    pub component_goldens: Option<ComponentGoldens>,
    /// Sandbox hosts (`reflow-sandbox serve`) to run the script nodes on
    /// instead of this machine's VMs: `http://HOST:PORT` URLs, or one
    /// `redis://` registry the hosts announce themselves in.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The file holding this client's token for `hosts` (relative to the
    /// workspace).
    #[serde(default)]
    pub host_token_file: Option<PathBuf>,
    /// A PEM file whose certificates `https://` hosts are also trusted by
    /// (relative to the workspace).
    #[serde(default)]
    pub host_ca_file: Option<PathBuf>,
}

/// The `workspace.sandbox.component_goldens:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentGoldens {
    /// Whether to make them (default true).
    pub enabled: Option<bool>,
    /// Most disk space they may take together (`8GB` by default); the
    /// least recently used go first.
    pub max_cache_size: Option<String>,
}

impl ComponentGoldens {
    /// The cache bound in bytes, if one is given.
    pub fn max_cache_bytes(&self) -> Option<u64> {
        self.max_cache_size
            .as_deref()
            .and_then(|s| parse_size(s).ok())
    }
}

/// One actor's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSandbox {
    /// This actor's VMs' guest memory (`512MB`), over its language's.
    pub memory: Option<String>,
    /// This actor's VMs' vCPUs, over its language's.
    pub vcpus: Option<u8>,
    /// CPU time each of this actor's VMs may use, in CPUs, over its
    /// language's.
    pub cpu: Option<f64>,
    /// `vm` or `process`: what runs this actor's worker, over its
    /// language's.
    pub isolation: Option<String>,
    /// Limits of this actor's messages, over its language's.
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
}

/// The VM shape a section's `memory`, `vcpus` and `cpu` keys set, checked
/// (`cpu` at most one CPU per vCPU: `vcpus`, else `cpu_most`); errors
/// name the key under `at`.
fn shape(
    at: &str,
    memory: &Option<String>,
    vcpus: Option<u8>,
    cpu: Option<f64>,
    cpu_most: f64,
    isolation: &Option<String>,
) -> Result<ShapeOverrides, KeyError> {
    let isolation = match isolation {
        None => None,
        Some(name) => Some(
            IsolationKind::named(name)
                .ok_or_else(|| KeyProblem::Isolation(name.clone()).at(format!("{at}.isolation")))?,
        ),
    };
    let mem_mib = match memory {
        None => None,
        Some(m) => {
            let key = format!("{at}.memory");
            let bytes = parse_size(m).map_err(|e| KeyProblem::from(e).at(&key))?;
            let mib = u32::try_from(bytes >> 20)
                .ok()
                .filter(|mib| reflow_sandbox_core::shape::MEMORY_MIB.contains(mib))
                .ok_or_else(|| KeyProblem::Memory(m.clone()).at(key))?;
            Some(mib)
        }
    };
    if let Some(n) = vcpus {
        if !(1..=MAX_VCPUS).contains(&n) {
            return Err(KeyProblem::Vcpus(n).at(format!("{at}.vcpus")));
        }
    }
    if let Some(c) = cpu {
        let most = vcpus.map_or(cpu_most, f64::from);
        if !(c >= 0.01 && c <= most) {
            return Err(KeyProblem::Cpu { cpu: c, most }.at(format!("{at}.cpu")));
        }
    }
    Ok(ShapeOverrides {
        mem_mib,
        vcpus,
        cpu,
        isolation,
    })
}

impl Language {
    /// The VM shape this section sets, checked (errors name keys under
    /// `at`); `cpu` is at most `vcpus`, 1 when unset.
    fn shape(&self, at: &str) -> Result<ShapeOverrides, KeyError> {
        shape(at, &self.memory, self.vcpus, self.cpu, 1.0, &self.isolation)
    }
}

impl ActorSandbox {
    /// The VM shape this section sets, checked (errors name keys under
    /// `at`). Its language's vCPUs are not known here: without `vcpus` of
    /// its own, `cpu` may go up to the most vCPUs a VM may have (a share
    /// over the VM's vCPUs is as good as no limit).
    fn shape(&self, at: &str) -> Result<ShapeOverrides, KeyError> {
        let most = f64::from(reflow_sandbox_core::shape::MAX_VCPUS);
        shape(
            at,
            &self.memory,
            self.vcpus,
            self.cpu,
            most,
            &self.isolation,
        )
    }
}

/// A `limits:` section (see [`reflow_sandbox_core::Limits`]): any of its keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Seconds one message may run.
    pub timeout: Option<u64>,
    /// Largest message passed to the actor (1B..1GB).
    pub max_message_size: Option<SizeText>,
    /// Largest single output (1B..1GB).
    pub max_output_size: Option<SizeText>,
    /// Most outputs one message may make.
    pub max_outputs: Option<usize>,
    /// Most bytes all outputs of one message may add up to (1B..1GB).
    pub max_output_total_size: Option<SizeText>,
    /// Most state operations one message may make.
    pub max_state_ops: Option<usize>,
    /// Largest value one state `set` or `push` may store (1B..1GB).
    pub max_state_value_size: Option<SizeText>,
    /// Most lines of printed output one message may log.
    pub max_log_lines: Option<usize>,
    /// Most bytes of printed output one message may log (1B..1GB).
    pub max_log_size: Option<SizeText>,
}

/// A size as written: `16MB`, or a number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeText {
    /// A number of bytes.
    Bytes(u64),
    /// A size with a unit, read by [`parse_size`].
    Text(String),
}

/// Most of any count limit (outputs, state operations per message).
const MAX_COUNT: usize = 10_000_000;
/// Longest per-message timeout, seconds.
const MAX_TIMEOUT_S: u64 = 24 * 3600;

impl LimitsConfig {
    /// The overrides it sets, checked; errors name the key under `at`.
    fn overrides(&self, at: &str) -> Result<LimitOverrides, KeyError> {
        let key = |k: &str| format!("{at}.limits.{k}");
        let size = |k: &str, s: &Option<SizeText>| -> Result<Option<usize>, KeyError> {
            let Some(s) = s else { return Ok(None) };
            let bytes = match s {
                SizeText::Bytes(n) => *n,
                SizeText::Text(t) => parse_size(t).map_err(|e| KeyProblem::from(e).at(key(k)))?,
            };
            if !(1..=1 << 30).contains(&bytes) {
                return Err(KeyProblem::LimitSize(bytes).at(key(k)));
            }
            Ok(Some(bytes as usize))
        };
        let count = |k: &str, n: Option<usize>| -> Result<Option<usize>, KeyError> {
            match n {
                Some(n) if !(1..=MAX_COUNT).contains(&n) => Err(KeyProblem::Count(n).at(key(k))),
                n => Ok(n),
            }
        };
        let timeout = match self.timeout {
            Some(s) if !(1..=MAX_TIMEOUT_S).contains(&s) => {
                return Err(KeyProblem::Timeout(s).at(key("timeout")))
            }
            s => s.map(Duration::from_secs),
        };
        Ok(LimitOverrides {
            timeout,
            max_message_bytes: size("max_message_size", &self.max_message_size)?,
            max_output_bytes: size("max_output_size", &self.max_output_size)?,
            max_outputs: count("max_outputs", self.max_outputs)?,
            max_output_total_bytes: size("max_output_total_size", &self.max_output_total_size)?,
            max_state_ops: count("max_state_ops", self.max_state_ops)?,
            max_state_value_bytes: size("max_state_value_size", &self.max_state_value_size)?,
            max_log_lines: count("max_log_lines", self.max_log_lines)?,
            max_log_bytes: size("max_log_size", &self.max_log_size)?,
        })
    }
}

fn overrides(limits: &Option<LimitsConfig>, at: &str) -> Result<LimitOverrides, KeyError> {
    limits
        .as_ref()
        .map_or(Ok(LimitOverrides::default()), |l| l.overrides(at))
}

/// One language's sandbox.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Language {
    /// A root filesystem image file (built by `guest-image/`), not a
    /// container image name.
    pub image: Option<PathBuf>,
    /// Packages this workspace's actors need beyond the image's: pip
    /// requirement strings (Python; wheels only) or npm `name@version`
    /// specs (JavaScript; install scripts never run). The first run builds
    /// a derived image (the base image plus these), cached by the base
    /// image and the request (see `reflow-sandbox image`).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Guest memory: `256MB`, `1GB` (binary units).
    pub memory: Option<String>,
    /// vCPUs of each VM.
    pub vcpus: Option<u8>,
    /// CPU time each VM may use, in CPUs (`0.5`: half of one), enforced
    /// with the cgroup cpu controller where the host has one.
    pub cpu: Option<f64>,
    /// What runs this language's workers: `vm` (a microVM each, the
    /// default) or `process` (a jailed host process each; see the README's
    /// security model).
    pub isolation: Option<String>,
    /// Limits of this language's actors' messages, over the sandbox's.
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
}

/// The `workspace.sandbox.pool:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Ready clones each pool keeps waiting.
    pub preload_count: Option<usize>,
    /// Most VMs of one pool alive at once (at least 1).
    pub max_size: Option<usize>,
    /// Seconds.
    pub idle_timeout: Option<u64>,
    /// Milliseconds a node's VM stays idle before its vCPUs are held.
    pub idle_hold_ms: Option<u64>,
}

/// The `workspace.redis:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// The server's `redis://` or `rediss://` URL; unset: the embedded store.
    pub url: Option<String>,
    /// First part of every state key (`{namespace}:{node}:{key}`).
    pub namespace: Option<String>,
    /// A default key TTL: accepted and ignored (see [`Config::notes`]).
    pub ttl: Option<u64>,
    /// A connection limit: accepted and ignored (see [`Config::notes`]).
    pub max_connections: Option<u32>,
}

/// The `workspace.shared_memory:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedMemory {
    /// Must not be `false`: every message crosses the shared-memory ring.
    pub enabled: Option<bool>,
    /// A region count limit: accepted and ignored (see [`Config::notes`]).
    pub max_regions: Option<u32>,
    /// Shared region per VM: `40MB`.
    pub region_size: Option<String>,
}

/// Whether an image setting names a file (rather than, as in the documented
/// example, a container image such as `python:3.11-slim`).
fn looks_like_path(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.contains('/') || s.ends_with(".ext4") || s.ends_with(".img")
}

impl Config {
    /// The settings of `language`'s sandbox, when the file has them.
    fn sandbox(&self, language: reflow_sandbox_core::Language) -> Option<&Language> {
        match language {
            reflow_sandbox_core::Language::Python => self.workspace.sandbox.python.as_ref(),
            reflow_sandbox_core::Language::JavaScript => self.workspace.sandbox.javascript.as_ref(),
        }
    }

    /// The packages `language`'s actors need beyond the image's (see
    /// [`Language::packages`]).
    pub fn packages(&self, language: reflow_sandbox_core::Language) -> &[String] {
        self.sandbox(language)
            .map_or(&[], |l| l.packages.as_slice())
    }

    /// The root image of `language`, when the file sets one.
    pub fn image(&self, language: reflow_sandbox_core::Language) -> Option<&Path> {
        let image = self.sandbox(language)?.image.as_deref()?;
        looks_like_path(image).then_some(image)
    }
}

/// A size like `512MB`, `1GB`, `64KiB` or `4096` (bytes), in bytes; `KB`,
/// `MB` and `GB` are binary units, as VM memory sizes usually are.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::NotASize(text.into()))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => {
            return Err(SizeError::UnknownUnit {
                unit: other.into(),
                text: text.into(),
            })
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| SizeError::TooLarge(text.into()))
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
        let invalid = |error| ConfigError::Invalid {
            path: path.into(),
            error,
        };
        config.check().map_err(invalid)?;
        config.check_limits().map_err(invalid)?;
        Ok(config)
    }

    /// Checks every `limits:` section and each language's VM shape.
    fn check_limits(&self) -> Result<(), KeyError> {
        let s = &self.workspace.sandbox;
        overrides(&s.limits, "workspace.sandbox")?;
        for language in [
            reflow_sandbox_core::Language::Python,
            reflow_sandbox_core::Language::JavaScript,
        ] {
            let Some(l) = self.sandbox(language) else {
                continue;
            };
            let at = format!("workspace.sandbox.{language}");
            overrides(&l.limits, &at)?;
            l.shape(&at)?;
        }
        for (name, a) in &s.actors {
            let at = format!("workspace.sandbox.actors.{name}");
            overrides(&a.limits, &at)?;
            a.shape(&at)?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), KeyError> {
        let w = &self.workspace;
        if w.script_patterns.is_empty() {
            return Err(KeyProblem::NoPatterns.at("workspace.script_patterns"));
        }
        if let Some(py) = &w.sandbox.python {
            if let Some(image) = &py.image {
                if looks_like_path(image) && !image.is_file() {
                    return Err(
                        KeyProblem::NoImage(image.clone()).at("workspace.sandbox.python.image")
                    );
                }
            }
        }
        if let Some(pool) = &w.sandbox.pool {
            if pool.max_size == Some(0) {
                return Err(KeyProblem::EmptyPool.at("workspace.sandbox.pool.max_size"));
            }
            if let (Some(preload), Some(max)) = (pool.preload_count, pool.max_size) {
                if preload > max {
                    return Err(KeyProblem::PreloadOverMax { preload, max }
                        .at("workspace.sandbox.pool.preload_count"));
                }
            }
            if let Some(ms) = pool.idle_hold_ms.filter(|ms| *ms > 3_600_000) {
                return Err(KeyProblem::HoldTooLong(ms).at("workspace.sandbox.pool.idle_hold_ms"));
            }
        }
        if let Some(size) = w
            .sandbox
            .component_goldens
            .as_ref()
            .and_then(|c| c.max_cache_size.as_ref())
        {
            parse_size(size).map_err(|e| {
                KeyProblem::from(e).at("workspace.sandbox.component_goldens.max_cache_size")
            })?;
        }
        if let Some(url) = w.redis.as_ref().and_then(|r| r.url.as_deref()) {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(
                    KeyProblem::NotRedis(crate::redact::redact_url(url)).at("workspace.redis.url")
                );
            }
        }
        if let Some(shm) = &w.shared_memory {
            if shm.enabled == Some(false) {
                return Err(KeyProblem::RingOff.at("workspace.shared_memory.enabled"));
            }
            if let Some(size) = &shm.region_size {
                let key = "workspace.shared_memory.region_size";
                let mib = parse_size(size).map_err(|e| KeyProblem::from(e).at(key))? >> 20;
                if !(4..=1024).contains(&mib) {
                    return Err(KeyProblem::RegionSize(size.clone()).at(key));
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

    /// The VM shape the file sets for `language`'s runtime.
    pub fn runtime_shape(&self, language: reflow_sandbox_core::Language) -> ShapeOverrides {
        self.sandbox(language)
            .and_then(|l| l.shape("").ok())
            .unwrap_or_default()
    }

    /// Guest memory of `language`'s VMs in MiB, when set.
    pub fn memory_mib(&self, language: reflow_sandbox_core::Language) -> Option<u32> {
        self.runtime_shape(language).mem_mib
    }

    /// The VM the actor `component` asks for, over its language's.
    pub fn actor_shape(&self, component: &str) -> ShapeOverrides {
        self.workspace
            .sandbox
            .actors
            .get(component)
            .and_then(|a| a.shape("").ok())
            .unwrap_or_default()
    }

    /// `script`, the actor `component`, with the limits and VM shape the
    /// file sets for that actor under its own (a graph node's
    /// `timeoutSeconds` and `memoryMb` win).
    pub fn apply_actor(&self, component: &str, script: &mut reflow_sandbox_core::Script) {
        script.limits = self.actor_limits(component).then(&script.limits);
        script.shape = self.actor_shape(component).then(&script.shape);
    }

    /// The limits the file sets for every actor.
    pub fn limits(&self) -> LimitOverrides {
        overrides(&self.workspace.sandbox.limits, "").unwrap_or_default()
    }

    /// The limits the file sets for `language`'s actors.
    pub fn runtime_limits(&self, language: reflow_sandbox_core::Language) -> LimitOverrides {
        self.sandbox(language)
            .map(|l| overrides(&l.limits, "").unwrap_or_default())
            .unwrap_or_default()
    }

    /// The limits the file sets for the actor `component`.
    pub fn actor_limits(&self, component: &str) -> LimitOverrides {
        self.workspace
            .sandbox
            .actors
            .get(component)
            .map(|a| overrides(&a.limits, "").unwrap_or_default())
            .unwrap_or_default()
    }

    /// vCPUs of `language`'s VMs, when set.
    pub fn vcpus(&self, language: reflow_sandbox_core::Language) -> Option<u8> {
        self.runtime_shape(language).vcpus
    }

    /// CPU time of each of `language`'s VMs (in CPUs), when set.
    pub fn cpu(&self, language: reflow_sandbox_core::Language) -> Option<f64> {
        self.runtime_shape(language).cpu
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

    /// The Redis URL, when set.
    pub fn redis_url(&self) -> Option<&str> {
        self.workspace.redis.as_ref()?.url.as_deref()
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
