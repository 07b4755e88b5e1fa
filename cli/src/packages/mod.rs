//! Workspace packages: what a workspace asks for beyond the base images
//! (reflow.yaml's `workspace.sandbox.<language>.packages`, a
//! `requirements.txt` or `package.json` next to it), the derived image
//! that has them (the base image's files plus the packages, packed as one
//! read-only image, so the guest is unchanged), and checking a script's
//! declared `dependencies` against what its image has.
//!
//! A derived image is cached under `images/` of the cache, keyed by the
//! base image and the request; its `manifest.json` records the exact
//! resolved set (versions and hashes). A build is written under a `.`
//! name and renamed into place when whole, so a failed build leaves
//! nothing in the cache. No package code runs on the host: Python takes
//! wheels only (installing a wheel unpacks it), npm runs with scripts off
//! and packages that need a script are refused.

pub mod deps;
pub mod node;
pub mod python;
pub mod spec;
pub mod tree;

use std::path::{Path, PathBuf};
use std::time::Instant;

use reflow_sandbox_core::{GuestImages, Language};
use reflow_workspace::config::Config;
use sha2::{Digest, Sha256};

pub use deps::{check, Dependency};
use tree::{io, TreeError};

/// Why a workspace's packages cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    #[error("{origin}: {spec:?} {source}")]
    Spec {
        origin: String,
        spec: String,
        source: spec::SpecError,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a JSON object with a `dependencies` object of name: version range", path.display())]
    PackageJson { path: PathBuf },
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("{what}: {detail}")]
    Tool { what: String, detail: String },
    #[error("{} is not a guest root image: {why}", image.display())]
    NotAnImage { image: PathBuf, why: String },
    #[error(
        "Python package {package:?} ({wanted}) has no wheel for the guest ({target}); the guest \
         has no compiler and building a source distribution would run its code on the host \
         (versions on PyPI: {versions}). Pick a version with a wheel or another package"
    )]
    NoWheel {
        package: String,
        wanted: String,
        target: String,
        versions: String,
    },
    #[error("{language} package {package:?} is not on {registry} (is the name right?)")]
    NotFound {
        language: &'static str,
        registry: &'static str,
        package: String,
    },
    #[error("resolving the {language} packages failed:\n{detail}")]
    Resolve {
        language: &'static str,
        detail: String,
    },
    #[error(
        "these npm packages need a script to install, which never runs here (not on the host, \
         and the guest has no compiler): {}. Use a pure-JavaScript package instead",
        packages.iter().map(|(p, s)| format!("{p} ({s})")).collect::<Vec<_>>().join(", ")
    )]
    InstallScripts { packages: Vec<(String, String)> },
    #[error("npm package {package:?} {wanted} is wanted, but the base image has {base}; ask for {package}@{base}")]
    Conflict {
        package: String,
        wanted: String,
        base: String,
    },
    #[error("{component} ({language}) depends on {dependency:?}, {why}; add it to the workspace's packages (reflow.yaml `workspace.sandbox.{language}.packages`)")]
    Missing {
        component: String,
        language: Language,
        dependency: String,
        why: String,
    },
}

/// A distribution or package an image has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
}

/// What a workspace asks for, for one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub language: Language,
    /// Python: requirement lines; JavaScript: `name@range`. Each once.
    pub specs: Vec<String>,
}

impl Request {
    /// The packages of `language` that the workspace at `root` (with
    /// `config`) asks for: reflow.yaml's list, then `requirements.txt`
    /// (Python) or `package.json`'s `dependencies` (JavaScript) next to
    /// it. Every spec is checked.
    pub fn of(root: &Path, config: &Config, language: Language) -> Result<Request, PackagesError> {
        let key = format!("reflow.yaml workspace.sandbox.{language}.packages");
        let mut found: Vec<(String, String)> = config
            .packages(language)
            .iter()
            .map(|s| (key.clone(), s.clone()))
            .collect();
        match language {
            Language::Python => found.extend(requirements_txt(&root.join("requirements.txt"))?),
            Language::JavaScript => found.extend(package_json(&root.join("package.json"))?),
        }
        let mut specs: Vec<String> = Vec::new();
        for (origin, s) in found {
            let checked = match language {
                Language::Python => spec::python_name(&s).map(|_| s.trim().to_string()),
                Language::JavaScript => {
                    spec::npm_name(&s).map(|(name, range)| format!("{name}@{range}"))
                }
            };
            let s = checked.map_err(|source| PackagesError::Spec {
                origin,
                spec: s.clone(),
                source,
            })?;
            if !specs.contains(&s) {
                specs.push(s);
            }
        }
        Ok(Request { language, specs })
    }

    /// The cache key of the image derived from `base` for this request.
    pub fn key(&self, base: &Path) -> Result<String, PackagesError> {
        let meta = std::fs::metadata(base).map_err(io("reading", base))?;
        let canonical = base.canonicalize().map_err(io("reading", base))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut h = Sha256::new();
        h.update(format!(
            "derived image v{FORMAT} by {}\nlanguage={}\nbase={} {} {mtime}\n",
            env!("CARGO_PKG_VERSION"),
            self.language,
            canonical.display(),
            meta.len(),
        ));
        for s in &self.specs {
            h.update(format!("spec={s}\n"));
        }
        Ok(hex::encode(&h.finalize()[..8]))
    }
}

/// The format of a derived image's directory (bump when what is built
/// changes, so older builds are never used).
const FORMAT: u32 = 2;

/// The text of `path`, `None` when there is no such file.
fn optional_file(path: &Path) -> Result<Option<String>, PackagesError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PackagesError::Read {
            path: path.into(),
            source,
        }),
    }
}

fn requirements_txt(path: &Path) -> Result<Vec<(String, String)>, PackagesError> {
    let Some(text) = optional_file(path)? else {
        return Ok(Vec::new());
    };
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = l.split(" #").next().unwrap_or_default().trim();
            (!l.is_empty() && !l.starts_with('#'))
                .then(|| (format!("requirements.txt:{}", i + 1), l.to_string()))
        })
        .collect())
}

fn package_json(path: &Path) -> Result<Vec<(String, String)>, PackagesError> {
    let Some(text) = optional_file(path)? else {
        return Ok(Vec::new());
    };
    let bad = || PackagesError::PackageJson { path: path.into() };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad())?;
    let Some(deps) = json.get("dependencies") else {
        return Ok(Vec::new());
    };
    let deps = deps.as_object().ok_or_else(bad)?;
    deps.iter()
        .map(|(name, range)| {
            let range = range.as_str().ok_or_else(bad)?;
            spec::npm_check(name, range).map_err(|source| PackagesError::Spec {
                origin: "package.json dependencies".into(),
                spec: format!("{name}: {range}"),
                source,
            })?;
            Ok((
                "package.json dependencies".into(),
                format!("{name}@{range}"),
            ))
        })
        .collect()
}

/// The packages `image` (a root image of `language`) has.
pub fn installed(image: &Path, language: Language) -> Result<Vec<Installed>, PackagesError> {
    match language {
        Language::Python => python::installed(image, &python::guest_version(image)?),
        Language::JavaScript => node::installed(image),
    }
}

/// Gives each language of `languages` the image with the workspace's
/// packages (the workspace at `root` with `config`; none for a bare graph
/// file), building it on first use, then checks each of `dependencies`
/// against its language's image. A language without an image is left
/// alone (starting its runtime says what is missing).
pub fn prepare(
    images: &mut GuestImages,
    workspace: Option<(&Path, &Config)>,
    languages: &[Language],
    dependencies: &[Dependency],
    cache_root: &Path,
    say: &dyn Fn(&str),
) -> Result<(), PackagesError> {
    for &language in languages {
        let slot = match language {
            Language::Python => Some(&mut images.python),
            Language::JavaScript => images.node.as_mut(),
        };
        let Some(image) = slot else { continue };
        if let Some((root, config)) = workspace {
            let request = Request::of(root, config, language)?;
            *image = derive(image, &request, cache_root, &|m| {
                say(&format!("{language} packages: {m}"))
            })?;
        }
        let deps: Vec<Dependency> = dependencies
            .iter()
            .filter(|d| d.language == language)
            .cloned()
            .collect();
        if !deps.is_empty() {
            check(&deps, &installed(image, language)?)?;
        }
    }
    Ok(())
}

/// What the derived image in cache directory `dir` was built for (its
/// language and request), from its manifest; `None` for any other entry.
pub fn describe(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    let m: serde_json::Value = serde_json::from_str(&text).ok()?;
    let request: Vec<&str> = m["request"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let base = Path::new(m["base"].as_str()?);
    let base = base.parent().and_then(|p| p.file_name()).map_or_else(
        || base.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Some(format!(
        "{} + {} (base {base}; {} package(s) added)",
        m["language"].as_str()?,
        request.join(", "),
        m["added"].as_array().map_or(0, Vec::len)
    ))
}

/// The image with `request`'s packages over `base`: `base` itself when the
/// request is empty, else the derived image, built on first use (a minute
/// or so; `progress` hears each step) and cached.
pub fn derive(
    base: &Path,
    request: &Request,
    cache_root: &Path,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, PackagesError> {
    if request.specs.is_empty() {
        return Ok(base.into());
    }
    let lang = request.language;
    let name = format!(
        "{}-ws-{}",
        image_prefix(request.language),
        request.key(base)?
    );
    let images = cache_root.join("images");
    let done = images.join(&name);
    let image = done.join("rootfs.ext4");
    if image.is_file() && done.join("manifest.json").is_file() {
        return Ok(image);
    }
    let started = Instant::now();
    progress(&format!(
        "building the {lang} image with this workspace's packages ({}), once: later runs use it from the cache",
        request.specs.join(", ")
    ));
    let building = Building::new(images.join(format!(".{name}.{}", std::process::id())))?;
    let (root, work) = (building.0.join("root"), building.0.join("work"));
    for d in [&root, &work] {
        std::fs::create_dir_all(d).map_err(io("creating", d))?;
    }
    let (added, preload) = match request.language {
        Language::Python => build_python(base, request, &root, &work, progress)?,
        Language::JavaScript => build_node(base, request, &root, &work, progress)?,
    };
    if !preload.is_empty() {
        let file = root.join("opt/reflow/preload.txt");
        let mut text = std::fs::read_to_string(&file).map_err(io("reading", &file))?;
        text.push_str("# The workspace's packages (reflow-sandbox added these).\n");
        for p in &preload {
            text.push_str(p);
            text.push('\n');
        }
        std::fs::write(&file, text).map_err(io("writing", &file))?;
    }
    progress("packing the image");
    let label = format!("reflow-{}", image_prefix(request.language));
    let bytes = tree::pack(&root, &label, &building.0.join("rootfs.ext4"))?;
    let manifest = serde_json::json!({
        "format": FORMAT,
        "language": lang.to_string(),
        "base": base,
        "request": request.specs,
        "added": added,
        "preload": preload,
    });
    let file = building.0.join("manifest.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&manifest).unwrap_or_default(),
    )
    .map_err(io("writing", &file))?;
    for d in [&root, &work] {
        std::fs::remove_dir_all(d).map_err(io("removing", d))?;
    }
    building.commit(&done)?;
    progress(&format!(
        "built in {:.0} s: {} ({} MiB; {} package(s) added)",
        started.elapsed().as_secs_f64(),
        image.display(),
        bytes >> 20,
        added.len()
    ));
    Ok(image)
}

/// The cache name's prefix of `language`'s images (as the base builds
/// name theirs).
fn image_prefix(language: Language) -> &'static str {
    match language {
        Language::Python => "python",
        Language::JavaScript => "node",
    }
}

type Built = (Vec<serde_json::Value>, Vec<String>);

fn build_python(
    base: &Path,
    request: &Request,
    root: &Path,
    work: &Path,
    progress: &dyn Fn(&str),
) -> Result<Built, PackagesError> {
    let version = python::guest_version(base)?;
    let base_has = &python::installed(base, &version)?;
    progress(&format!(
        "resolving with pip: wheels for CPython {version} on manylinux x86_64, beside the image's {}",
        base_has
            .iter()
            .map(|i| format!("{} {}", i.name, i.version))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let pinned = python::resolve(&request.specs, base_has, &version, work)?;
    let added: Vec<serde_json::Value> = pinned
        .iter()
        .map(|p| serde_json::json!({"name": p.name, "version": p.version, "sha256": p.sha256}))
        .collect();
    progress("unpacking the base image");
    tree::unpack(base, root)?;
    if !pinned.is_empty() {
        progress(&format!(
            "installing {} wheel(s): {}",
            pinned.len(),
            pinned
                .iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        python::install(&pinned, &version, root, work)?;
        progress("byte-compiling them with the guest's Python");
        if let Some(why) = python::compile(root, &version) {
            progress(&format!(
                "warning: some modules did not byte-compile (they compile on import):\n{why}"
            ));
        }
    }
    let preload = pinned
        .iter()
        .filter(|p| p.requested)
        .flat_map(|p| python::import_names(root, &version, p))
        .collect();
    Ok((added, preload))
}

fn build_node(
    base: &Path,
    request: &Request,
    root: &Path,
    work: &Path,
    progress: &dyn Fn(&str),
) -> Result<Built, PackagesError> {
    let base_has = &node::installed(base)?;
    let deps: Vec<(String, String)> = request
        .specs
        .iter()
        .filter_map(|s| spec::npm_name(s).ok())
        .collect();
    progress("fetching with npm (install scripts off)");
    let pinned = node::fetch(&deps, work)?;
    let added: Vec<serde_json::Value> = pinned
        .iter()
        .map(
            |p| serde_json::json!({"path": p.path, "version": p.version, "integrity": p.integrity}),
        )
        .collect();
    progress("unpacking the base image");
    tree::unpack(base, root)?;
    progress(&format!("adding {} package(s)", pinned.len()));
    node::install(work, root, base_has)?;
    let preload = deps
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|n| !base_has.iter().any(|i| i.name == *n))
        .collect();
    Ok((added, preload))
}

/// A build's directory: removed when dropped, unless committed.
struct Building(PathBuf, bool);

impl Building {
    fn new(dir: PathBuf) -> Result<Building, TreeError> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        Ok(Building(dir, false))
    }

    /// Renames the build to `done`; where another build got there first,
    /// keeps that one.
    fn commit(mut self, done: &Path) -> Result<(), TreeError> {
        match std::fs::rename(&self.0, done) {
            Ok(()) => {
                self.1 = true;
                Ok(())
            }
            Err(_) if done.join("rootfs.ext4").is_file() => Ok(()),
            Err(e) => Err(io("renaming into", done)(e)),
        }
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
