//! Python packages for a derived image: resolved by the host's pip against
//! the packages the base image has (they stay as they are), fetched as
//! wheels for the guest's CPython on manylinux x86_64 only, installed by
//! unpacking (pip installs a wheel without running any of its code), and
//! byte-compiled with the guest's own interpreter (compiling runs no
//! package code either).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tree::{self, io, TreeError};
use super::{Installed, PackagesError};
use crate::packages::spec;

const PIP_HINT: &str = "apt-get install python3-pip; pip 22.2 or newer";

/// The guest's CPython version (`3.11`), from the interpreters in
/// `/usr/lib` of its image.
pub fn guest_version(image: &Path) -> Result<String, PackagesError> {
    let mut found: Vec<String> = tree::list(image, "/usr/lib")?
        .into_iter()
        .filter_map(|n| {
            let v = n.strip_prefix("python3.")?;
            (!v.is_empty() && v.chars().all(|c| c.is_ascii_digit())).then(|| format!("3.{v}"))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| PackagesError::NotAnImage {
        image: image.into(),
        why: "it has no /usr/lib/python3.N".into(),
    })
}

/// Where the guest's pip packages live.
pub fn site(version: &str) -> String {
    format!("/usr/local/lib/python{version}/dist-packages")
}

/// The distributions installed in `image`'s site directory (name as
/// written, version), from their `.dist-info` directories.
pub fn installed(image: &Path, version: &str) -> Result<Vec<Installed>, PackagesError> {
    Ok(tree::list(image, &site(version))?
        .iter()
        .filter_map(|n| dist_info(n))
        .collect())
}

fn dist_info(dir: &str) -> Option<Installed> {
    let stem = dir.strip_suffix(".dist-info")?;
    let (name, version) = stem.split_once('-')?;
    Some(Installed {
        name: name.into(),
        version: version.into(),
    })
}

/// pip's options selecting wheels the guest can load.
fn wheel_target(version: &str) -> Vec<String> {
    let nodot = version.replace('.', "");
    let mut args: Vec<String> = vec![
        "--only-binary=:all:".into(),
        "--implementation".into(),
        "cp".into(),
        "--python-version".into(),
        version.into(),
        "--abi".into(),
        format!("cp{nodot}"),
    ];
    for p in [
        "manylinux2014_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux_2_28_x86_64",
        "linux_x86_64",
    ] {
        args.extend(["--platform".into(), p.into()]);
    }
    args
}

fn pip() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "--disable-pip-version-check",
        "--no-input",
        "--no-color",
    ]);
    cmd
}

/// One wheel of the resolved set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Whether the workspace asked for it (not only a dependency).
    pub requested: bool,
}

/// Resolves `requests` (checked requirement lines) against the base
/// image's `base` distributions, which pin themselves: the wheels to add,
/// with their hashes. Nothing is installed.
pub fn resolve(
    requests: &[String],
    base: &[Installed],
    version: &str,
    work: &Path,
) -> Result<Vec<Pinned>, PackagesError> {
    let (req, constraints, report) = (
        work.join("requirements.txt"),
        work.join("constraints.txt"),
        work.join("report.json"),
    );
    write(&req, &requests.join("\n"))?;
    let pins: Vec<String> = base
        .iter()
        .map(|i| format!("{}=={}", i.name, i.version))
        .collect();
    write(&constraints, &pins.join("\n"))?;
    let out = tree::output(
        pip()
            .args(["install", "--dry-run", "--ignore-installed", "--quiet"])
            .arg("--report")
            .arg(&report)
            .args(wheel_target(version))
            .arg("--target")
            .arg(work.join("unused"))
            .arg("-c")
            .arg(&constraints)
            .arg("-r")
            .arg(&req),
        "pip",
        PIP_HINT,
    )?;
    if !out.status.success() {
        return Err(diagnose(&tree::tail(&out), version));
    }
    let text = std::fs::read_to_string(&report).map_err(io("reading", &report))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| PackagesError::Tool {
        what: "pip's installation report".into(),
        detail: e.to_string(),
    })?;
    let base_names: Vec<(String, &str)> = base
        .iter()
        .map(|i| (spec::normalize_python(&i.name), i.version.as_str()))
        .collect();
    let mut pinned = Vec::new();
    for item in json["install"].as_array().into_iter().flatten() {
        let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let name = field(&item["metadata"]["name"]);
        let version = field(&item["metadata"]["version"]);
        let sha256 = field(&item["download_info"]["archive_info"]["hashes"]["sha256"]);
        if name.is_empty() || version.is_empty() || sha256.is_empty() {
            return Err(PackagesError::Tool {
                what: "pip's installation report".into(),
                detail: format!("an entry without a name, version or sha256: {item}"),
            });
        }
        let norm = spec::normalize_python(&name);
        if base_names.iter().any(|(n, v)| *n == norm && *v == version) {
            continue;
        }
        pinned.push(Pinned {
            name,
            version,
            sha256,
            requested: item["requested"].as_bool().unwrap_or(false),
        });
    }
    pinned.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pinned)
}

/// Turns pip's failure into the error a user can act on: a package with
/// no wheel for the guest, a name the index does not know, or pip's own
/// words (conflicts name their packages).
fn diagnose(detail: &str, version: &str) -> PackagesError {
    let missing = detail.lines().find_map(|l| {
        let wanted = l
            .split("No matching distribution found for ")
            .nth(1)?
            .trim();
        Some((spec::python_name(wanted).ok()?, wanted.to_string()))
    });
    let Some((name, wanted)) = missing else {
        return PackagesError::Resolve {
            language: "Python",
            detail: detail.into(),
        };
    };
    // `pip index versions` reads the index page only (no wheel filter, no
    // download, nothing built).
    let listed = pip()
        .args(["index", "versions", &name])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    match listed {
        Some(versions) => {
            let all: Vec<&str> = versions
                .lines()
                .find_map(|l| l.strip_prefix("Available versions: "))
                .unwrap_or_default()
                .split(", ")
                .collect();
            let mut shown = all[..all.len().min(8)].join(", ");
            if all.len() > 8 {
                shown.push_str(&format!(" and {} older", all.len() - 8));
            }
            PackagesError::NoWheel {
                package: name,
                wanted,
                target: format!("CPython {version} on manylinux x86_64"),
                versions: shown,
            }
        }
        None => PackagesError::NotFound {
            language: "Python",
            registry: "PyPI",
            package: name,
        },
    }
}

/// Installs `pinned` (exact versions, hashes checked, no dependencies:
/// the resolution has them all) into `root`'s site directory.
pub fn install(
    pinned: &[Pinned],
    version: &str,
    root: &Path,
    work: &Path,
) -> Result<(), PackagesError> {
    let (req, layer) = (work.join("pinned.txt"), work.join("layer"));
    let lines: Vec<String> = pinned
        .iter()
        .map(|p| format!("{}=={} --hash=sha256:{}", p.name, p.version, p.sha256))
        .collect();
    write(&req, &lines.join("\n"))?;
    tree::run(
        pip()
            .args(["install", "--quiet", "--no-deps", "--no-compile"])
            .args(["--require-hashes", "--root-user-action=ignore"])
            .args(wheel_target(version))
            .arg("--target")
            .arg(&layer)
            .arg("-r")
            .arg(&req),
        "pip install",
        PIP_HINT,
    )?;
    let _ = std::fs::remove_dir_all(layer.join("bin"));
    let site = root.join(site(version).trim_start_matches('/'));
    tree::merge(&layer, &site)?;
    Ok(())
}

/// Byte-compiles the site directory with the guest's interpreter (the
/// image is read-only: an uncompiled module compiles on every import in
/// every guest). As root in a chroot of the image's files; otherwise the
/// interpreter runs from the tree. Isolated and without `site` (`-I -S`):
/// a package's `.pth` file may hold code, which `site` would run at
/// startup. A failure only warns.
pub fn compile(root: &Path, version: &str) -> Option<String> {
    let site = site(version);
    let python = format!("/usr/bin/python{version}");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let as_root = unsafe { libc::geteuid() } == 0;
    let out = if as_root {
        Command::new("chroot")
            .arg(root)
            .args([
                python.as_str(),
                "-I",
                "-S",
                "-m",
                "compileall",
                "-q",
                "-j",
                "0",
                &site,
            ])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
    } else {
        let tree_site: PathBuf = root.join(site.trim_start_matches('/'));
        Command::new(root.join(python.trim_start_matches('/')))
            .args(["-I", "-S", "-m", "compileall", "-q", "-j", "0", "-s"])
            .arg(root)
            .args(["-p", "/"])
            .arg(&tree_site)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
    };
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(tree::tail(&o)),
        Err(e) => Some(e.to_string()),
    }
}

/// The modules a requested distribution provides (what `import` names):
/// its `top_level.txt`, else the top-level packages and modules its
/// `RECORD` lists.
pub fn import_names(root: &Path, version: &str, p: &Pinned) -> Vec<String> {
    let site = root.join(site(version).trim_start_matches('/'));
    let info = site.join(format!(
        "{}-{}.dist-info",
        p.name.replace('-', "_"),
        p.version
    ));
    let info = if info.is_dir() {
        info
    } else {
        // Wheels spell the directory's name as they like; find it.
        let want = spec::normalize_python(&p.name);
        let found = std::fs::read_dir(&site).ok().and_then(|d| {
            d.flatten().map(|e| e.path()).find(|path| {
                path.file_name()
                    .and_then(|n| dist_info(&n.to_string_lossy()))
                    .is_some_and(|i| spec::normalize_python(&i.name) == want)
            })
        });
        match found {
            Some(f) => f,
            None => return Vec::new(),
        }
    };
    if let Ok(text) = std::fs::read_to_string(info.join("top_level.txt")) {
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.starts_with('_') && !n.contains('/'))
            .map(String::from)
            .collect();
        if !names.is_empty() {
            return names;
        }
    }
    let record = std::fs::read_to_string(info.join("RECORD")).unwrap_or_default();
    let mut names: Vec<String> = record
        .lines()
        .filter_map(|l| {
            let path = l.split(',').next()?;
            let (first, rest) = path.split_once('/').unwrap_or((path, ""));
            if first.starts_with('_') || first.contains(".dist-info") || first.contains(".data") {
                return None;
            }
            if rest.is_empty() {
                first.strip_suffix(".py").map(String::from)
            } else {
                site.join(first)
                    .join("__init__.py")
                    .is_file()
                    .then(|| first.to_string())
            }
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn write(path: &Path, text: &str) -> Result<(), TreeError> {
    std::fs::write(path, format!("{text}\n")).map_err(io("writing", path))
}
