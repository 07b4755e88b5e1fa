//! npm packages for a derived image: fetched by the host's npm with
//! install scripts off (npm unpacks tarballs and runs nothing), refused
//! when a package needs a script or a native build to work (the guest has
//! no compiler and the host runs no package code), and added to the base
//! image's `/usr/local/lib/node_modules` next to the packages already
//! there.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tree::{self, io, TreeError};
use super::{Installed, PackagesError};

/// Where the guest's npm packages live.
pub const MODULES: &str = "/usr/local/lib/node_modules";

const NPM_HINT: &str = "apt-get install npm";

/// The packages installed at the top of `image`'s node_modules (their
/// versions from their package.json).
pub fn installed(image: &Path) -> Result<Vec<Installed>, PackagesError> {
    let mut names = Vec::new();
    for n in tree::list(image, MODULES)? {
        if n.starts_with('.') {
            continue;
        }
        if n.starts_with('@') {
            for inner in tree::list(image, &format!("{MODULES}/{n}"))? {
                names.push(format!("{n}/{inner}"));
            }
        } else {
            names.push(n);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let text = tree::cat(image, &format!("{MODULES}/{name}/package.json"))?;
            let version = serde_json::from_slice::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["version"].as_str().map(String::from))
                .unwrap_or_default();
            Ok(Installed { name, version })
        })
        .collect()
}

/// One package of the resolved set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// Its place under node_modules (`camelcase`, `a/node_modules/b`).
    pub path: String,
    pub version: String,
    pub integrity: String,
}

/// Fetches `deps` (name, range) with npm into `work/npm`, scripts off;
/// refuses packages that need an install script or a native build.
/// Returns the resolved set.
pub fn fetch(deps: &[(String, String)], work: &Path) -> Result<Vec<Pinned>, PackagesError> {
    let dir = work.join("npm");
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let manifest = serde_json::json!({
        "name": "reflow-workspace-packages",
        "private": true,
        "dependencies": deps
            .iter()
            .map(|(n, r)| (n.clone(), serde_json::Value::from(r.as_str())))
            .collect::<serde_json::Map<_, _>>(),
    });
    let file = dir.join("package.json");
    std::fs::write(&file, manifest.to_string()).map_err(io("writing", &file))?;
    let out = tree::output(
        Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&dir)
            .args(["--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev"])
            .args(["--no-bin-links", "--loglevel=error", "--no-update-notifier"]),
        "npm install",
        NPM_HINT,
    )?;
    if !out.status.success() {
        return Err(diagnose(&tree::tail(&out)));
    }
    let modules = dir.join("node_modules");
    let scripted = needs_scripts(&modules)?;
    if !scripted.is_empty() {
        return Err(PackagesError::InstallScripts { packages: scripted });
    }
    let lock = modules.join(".package-lock.json");
    let text = std::fs::read_to_string(&lock).map_err(io("reading", &lock))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| PackagesError::Tool {
        what: "npm's lock file".into(),
        detail: e.to_string(),
    })?;
    let mut pinned: Vec<Pinned> = json["packages"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(path, p)| {
            Some(Pinned {
                path: path.strip_prefix("node_modules/")?.into(),
                version: p["version"].as_str()?.into(),
                integrity: p["integrity"].as_str().unwrap_or_default().into(),
            })
        })
        .collect();
    pinned.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(pinned)
}

fn diagnose(detail: &str) -> PackagesError {
    // npm: "404 Not Found - GET https://registry.npmjs.org/<name>" (a
    // scoped name's slash written %2f).
    let missing = detail.lines().find_map(|l| {
        let (_, url) = l.split_once("404 Not Found - GET ")?;
        let name = url.split_whitespace().next()?.rsplit_once(".org/")?.1;
        Some(name.replace("%2f", "/").replace("%2F", "/"))
    });
    match missing {
        Some(package) => PackagesError::NotFound {
            language: "JavaScript",
            registry: "npm",
            package,
        },
        None => PackagesError::Resolve {
            language: "JavaScript",
            detail: detail.into(),
        },
    }
}

/// Every package under `modules` (nested ones too) that npm would have
/// run a script for: `preinstall`, `install`, `postinstall`, or a
/// `binding.gyp` (npm runs `node-gyp rebuild` for it): name@version and
/// the script.
fn needs_scripts(modules: &Path) -> Result<Vec<(String, String)>, TreeError> {
    let mut found = Vec::new();
    for dir in package_dirs(modules)? {
        let file = dir.join("package.json");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let id = format!(
            "{}@{}",
            json["name"].as_str().unwrap_or("?"),
            json["version"].as_str().unwrap_or("?")
        );
        let script = ["preinstall", "install", "postinstall"]
            .iter()
            .find_map(|s| Some(format!("{s}: {}", json["scripts"][*s].as_str()?)))
            .or_else(|| {
                (dir.join("binding.gyp").is_file() || json["gypfile"] == true)
                    .then(|| "a native addon (binding.gyp: node-gyp rebuild)".to_string())
            });
        if let Some(script) = script {
            found.push((id, script));
        }
    }
    found.sort();
    Ok(found)
}

/// The package directories under a node_modules directory, nested ones
/// included.
fn package_dirs(modules: &Path) -> Result<Vec<PathBuf>, TreeError> {
    let mut out = Vec::new();
    let mut todo = vec![modules.to_path_buf()];
    while let Some(m) = todo.pop() {
        let Ok(listing) = std::fs::read_dir(&m) else {
            continue;
        };
        for entry in listing {
            let entry = entry.map_err(io("reading", &m))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if name.starts_with('@') {
                todo.push(path);
                continue;
            }
            todo.push(path.join("node_modules"));
            out.push(path);
        }
    }
    Ok(out)
}

/// Adds the fetched packages to `root`'s node_modules. One the base image
/// has already at the same version is kept as it is; at another version,
/// it is an error naming both.
pub fn install(work: &Path, root: &Path, base: &[Installed]) -> Result<(), PackagesError> {
    let modules = work.join("npm").join("node_modules");
    let target = root.join(MODULES.trim_start_matches('/'));
    for dir in package_dirs(&modules)? {
        // Only the top level: nested node_modules travel with their parent.
        let Ok(rel) = dir.strip_prefix(&modules) else {
            continue;
        };
        let name = rel.to_string_lossy().into_owned();
        if name.contains("node_modules") {
            continue;
        }
        if let Some(have) = base.iter().find(|i| i.name == name) {
            let want = std::fs::read_to_string(dir.join("package.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["version"].as_str().map(String::from))
                .unwrap_or_default();
            if want == have.version {
                continue;
            }
            return Err(PackagesError::Conflict {
                package: name,
                wanted: want,
                base: have.version.clone(),
            });
        }
        let dst = target.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        tree::merge(&dir, &dst)?;
    }
    Ok(())
}
