//! Workspace packages as a user meets them: a workspace whose actors need
//! pandas and an npm package runs (its images built once, then taken from
//! the cache), and each way a package request can be wrong is an error
//! naming the package, with nothing half-built left in the cache. Needs
//! the base images (`./dev.sh test` provides them) and PyPI and npm; the
//! run needs /dev/kvm.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{kvm, text};

fn image_var(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} is not set: run the tests with ./dev.sh test"))
}

/// `reflow-sandbox image build DIR` with its own cache at `cache`.
fn build(dir: &Path, cache: &Path) -> (Option<i32>, String) {
    for var in ["REFLOW_PYTHON_IMAGE", "REFLOW_NODE_IMAGE"] {
        image_var(var);
    }
    let out: Output = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
        .args(["image", "build", "--quiet"])
        .arg(dir)
        .env("REFLOW_CACHE_DIR", cache)
        .output()
        .expect("reflow-sandbox runs");
    (out.status.code(), text(&out.stderr))
}

/// What a failed build left under the cache's images (nothing, or a
/// build's temporary directory when cleaning up failed).
fn left(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache.join("images"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(d.path().join(name), body).unwrap();
    }
    d
}

fn refused(files: &[(&str, &str)], wants: &[&str]) {
    let ws = workspace(files);
    let cache = tempfile::tempdir().unwrap();
    let (code, stderr) = build(ws.path(), cache.path());
    assert_eq!(code, Some(1), "{stderr}");
    for want in wants {
        assert!(stderr.contains(want), "no {want:?} in:\n{stderr}");
    }
    assert!(
        left(cache.path()).is_empty(),
        "left {:?}",
        left(cache.path())
    );
}

#[test]
fn a_python_package_without_a_wheel_is_refused_by_name() {
    // docopt has only a source distribution: building it would run its
    // setup.py on the host.
    refused(
        &[("requirements.txt", "docopt==0.6.2\n")],
        &[
            "Python package \"docopt\" (docopt==0.6.2) has no wheel for the guest (CPython 3.",
            "versions on PyPI: 0.6.2",
        ],
    );
}

#[test]
fn misspelt_packages_are_refused_by_name() {
    refused(
        &[(
            "reflow.yaml",
            "workspace:\n  sandbox:\n    python:\n      packages: [\"pandsa-no-such-package-4711\"]\n",
        )],
        &["Python package \"pandsa-no-such-package-4711\" is not on PyPI"],
    );
    refused(
        &[(
            "package.json",
            r#"{"dependencies": {"lodahs-no-such-package-4711": "1.0.0"}}"#,
        )],
        &["JavaScript package \"lodahs-no-such-package-4711\" is not on npm"],
    );
}

#[test]
fn an_npm_package_with_an_install_script_is_refused() {
    // bufferutil compiles a native addon in its install script.
    refused(
        &[(
            "package.json",
            r#"{"dependencies": {"bufferutil": "4.0.8"}}"#,
        )],
        &[
            "bufferutil@4.0.8 (install: node-gyp-build)",
            "never runs here",
        ],
    );
}

#[test]
fn a_path_or_url_is_refused_before_anything_is_fetched() {
    refused(
        &[("requirements.txt", "pandas\n./vendored/mypkg\n")],
        &[
            "requirements.txt:2: \"./vendored/mypkg\"",
            "only registry packages",
        ],
    );
}

#[test]
fn a_dependency_the_image_lacks_is_an_error_before_any_vm_starts() {
    for var in ["REFLOW_KERNEL", "REFLOW_INITRAMFS", "REFLOW_PYTHON_IMAGE"] {
        image_var(var);
    }
    let dir = tempfile::tempdir().unwrap();
    let edge = |n: &str, p: &str| {
        serde_json::json!({"nodeId": n, "portName": p, "portId": p, "expose": false,
                           "portType": {"type": "any"}})
    };
    let graph = serde_json::json!({
        "caseSensitive": false,
        "properties": {"name": "deps"},
        "processes": {"frame": {"id": "frame", "component": "Frame", "metadata": {
            "componentSpec": {"type": "script", "script": {
                "runtime": "python", "source": "inline",
                "code": "import pandas\n@actor(name='Frame', inports=['input'], outports=['output'])\ndef frame(context):\n    return {'output': 1}\n",
                "dependencies": {"numpy": "1.26.4", "pandas": ">=2"}}}}}},
        "connections": [{"from": edge("frame", "input"), "to": edge("frame", "input"), "data": 1}],
    });
    let path = dir.path().join("graph.json");
    std::fs::write(&path, graph.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
        .arg("run")
        .arg(&path)
        .arg("--quiet")
        .env_remove("REDIS_URL")
        .output()
        .expect("reflow-sandbox runs");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Frame (python) depends on \"pandas>=2\", which its image does not have"),
        "{stderr}"
    );
    assert!(!stderr.contains("golden"), "no VM was to start: {stderr}");
}

#[test]
fn a_workspace_with_packages_runs_and_its_images_come_from_the_cache() {
    if !kvm() {
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/packages");
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
            .arg("run")
            .arg(&example)
            .args(["--timeout", "1800"])
            .env_remove("REDIS_URL")
            .output()
            .expect("reflow-sandbox runs");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert_eq!(
            stdout.trim(),
            "label.line: \"summaryCount=8 summaryMean=3.875 summaryMedian=3.5 summaryMax=9\"",
            "{stderr}"
        );
        stderr
    };
    // The first run builds both images unless an earlier run did.
    run();
    let again = run();
    assert!(!again.contains("building the"), "built again:\n{again}");
    assert!(
        !again.contains("creating golden"),
        "a golden again:\n{again}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
        .args(["image", "ls"])
        .output()
        .unwrap();
    let listed = text(&out.stdout);
    assert!(
        listed.contains("python + pandas>=2.2,<4")
            && listed.contains("javascript + camelcase@8.0.0"),
        "{listed}"
    );
}

#[test]
fn byte_compiling_a_layer_runs_none_of_its_code() {
    use reflow_sandbox::packages::{python, tree};
    let base = image_var("REFLOW_PYTHON_IMAGE");
    let root = tempfile::tempdir().unwrap();
    tree::unpack(&base, root.path()).unwrap();
    let version = python::guest_version(&base).unwrap();
    let site = root
        .path()
        .join(python::site(&version).trim_start_matches('/'));
    // A .pth line starting with `import` is run by `site` at startup.
    std::fs::write(
        site.join("evil.pth"),
        "import os; open('/ran-at-startup', 'w').close()\n",
    )
    .unwrap();
    std::fs::write(
        site.join("plain.py"),
        "open('/ran-on-import', 'w').close()\n",
    )
    .unwrap();
    assert_eq!(python::compile(root.path(), &version), None);
    let cache = site.join("__pycache__");
    let compiled: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        compiled.iter().any(|n| n.starts_with("plain.cpython-")),
        "{compiled:?}"
    );
    for marker in ["ran-at-startup", "ran-on-import"] {
        assert!(!root.path().join(marker).exists(), "{marker}");
        assert!(!Path::new("/").join(marker).exists(), "{marker}");
    }
}
