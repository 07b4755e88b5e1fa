use super::*;

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

fn config(yaml: &str) -> Config {
    let d = dir_with(&[("reflow.yaml", yaml)]);
    Config::load(&d.path().join("reflow.yaml")).unwrap()
}

const YAML: &str =
    "workspace:\n  sandbox:\n    python:\n      packages: [\"pandas>=2\", numpy]\n    \
                    javascript:\n      packages: [\"camelcase@8.0.0\"]\n";

#[test]
fn a_request_joins_reflow_yaml_with_the_files_next_to_it_once_each() {
    let d = dir_with(&[
        (
            "requirements.txt",
            "# data\npandas>=2\nrequests==2.32.3  # http\n\n",
        ),
        (
            "package.json",
            r#"{"name": "w", "dependencies": {"dayjs": "^1.11.0", "camelcase": "8.0.0"}}"#,
        ),
    ]);
    let c = config(YAML);
    let py = Request::of(d.path(), &c, Language::Python).unwrap();
    assert_eq!(py.specs, ["pandas>=2", "numpy", "requests==2.32.3"]);
    let js = Request::of(d.path(), &c, Language::JavaScript).unwrap();
    assert_eq!(js.specs, ["camelcase@8.0.0", "dayjs@^1.11.0"]);
}

#[test]
fn no_packages_anywhere_is_an_empty_request_and_the_base_image() {
    let d = dir_with(&[]);
    let r = Request::of(d.path(), &Config::default(), Language::Python).unwrap();
    assert!(r.specs.is_empty());
    let base = d.path().join("base.ext4");
    let got = derive(&base, &r, d.path(), &|_| panic!("nothing to build")).unwrap();
    assert_eq!(got, base);
}

#[test]
fn bad_specs_are_errors_naming_where_they_are() {
    let d = dir_with(&[("requirements.txt", "numpy\n-e ./local\n")]);
    let e = Request::of(d.path(), &Config::default(), Language::Python)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("requirements.txt:2: \"-e ./local\""), "{e}");
    let d = dir_with(&[(
        "package.json",
        r#"{"dependencies": {"x": "git+https://example.org/x.git"}}"#,
    )]);
    let e = Request::of(d.path(), &Config::default(), Language::JavaScript)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("package.json dependencies") && e.contains("registry"),
        "{e}"
    );
    let d = dir_with(&[("package.json", r#"{"dependencies": ["x"]}"#)]);
    let e = Request::of(d.path(), &Config::default(), Language::JavaScript).unwrap_err();
    assert!(matches!(e, PackagesError::PackageJson { .. }), "{e}");
}

#[test]
fn the_key_follows_the_base_image_and_the_request() {
    let d = dir_with(&[("a.ext4", "a"), ("b.ext4", "b")]);
    let r = |specs: &[&str]| Request {
        language: Language::Python,
        specs: specs.iter().map(|s| s.to_string()).collect(),
    };
    let (a, b) = (d.path().join("a.ext4"), d.path().join("b.ext4"));
    let k = r(&["pandas"]).key(&a).unwrap();
    assert_eq!(k, r(&["pandas"]).key(&a).unwrap());
    assert_ne!(k, r(&["pandas"]).key(&b).unwrap());
    assert_ne!(k, r(&["pandas==3"]).key(&a).unwrap());
    std::fs::write(&a, "changed").unwrap();
    assert_ne!(k, r(&["pandas"]).key(&a).unwrap());
}

#[test]
fn dependencies_must_be_installed_at_the_version_they_pin() {
    let have = [
        Installed {
            name: "NumPy".into(),
            version: "1.26.4".into(),
        },
        Installed {
            name: "camelcase".into(),
            version: "8.0.0".into(),
        },
    ];
    let dep = |language, spec: &str| Dependency {
        component: "C".into(),
        language,
        spec: spec.into(),
    };
    let ok = |l, s: &str| check(&[dep(l, s)], &have);
    assert!(ok(Language::Python, "numpy").is_ok());
    assert!(ok(Language::Python, "numpy==1.26.4").is_ok());
    assert!(
        ok(Language::Python, "numpy>=2").is_ok(),
        "ranges are not checked"
    );
    let e = ok(Language::Python, "numpy==2.0.0")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"numpy==2.0.0\", but its image has NumPy 1.26.4"),
        "{e}"
    );
    let e = ok(Language::Python, "pandas").unwrap_err().to_string();
    assert!(
        e.starts_with("C (python) depends on \"pandas\", which its image does not have")
            && e.contains("workspace.sandbox.python.packages"),
        "{e}"
    );
    assert!(ok(Language::JavaScript, "camelcase@8.0.0").is_ok());
    assert!(ok(Language::JavaScript, "camelcase@^8").is_ok());
    assert!(ok(Language::JavaScript, "camelcase@7.0.1").is_err());
    assert!(ok(Language::JavaScript, "dayjs").is_err());
    let e = ok(Language::JavaScript, "x@file:../x")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("the `dependencies` of C:"), "{e}");
}

#[test]
fn a_graphs_declared_dependencies_read_as_specs() {
    let d = |l, n, v| Dependency::declared("C", l, n, v).spec;
    assert_eq!(d(Language::Python, "pandas", "2.2.3"), "pandas==2.2.3");
    assert_eq!(d(Language::Python, "pandas", ">=2"), "pandas>=2");
    assert_eq!(d(Language::Python, "pandas", "*"), "pandas");
    assert_eq!(d(Language::JavaScript, "dayjs", "^1.11"), "dayjs@^1.11");
    assert_eq!(d(Language::JavaScript, "dayjs", ""), "dayjs");
}
