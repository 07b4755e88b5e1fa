use super::*;

#[test]
fn python_names_are_compared_as_pypi_compares_them() {
    assert_eq!(normalize_python("Scikit_Learn"), "scikit-learn");
    assert_eq!(normalize_python("zope.interface"), "zope-interface");
    assert_eq!(normalize_python("a-_.b"), "a-b");
    assert_eq!(python_name("pandas>=2,<4").unwrap(), "pandas");
    assert_eq!(
        python_name("  Requests[socks]==2.32.3 ").unwrap(),
        "requests"
    );
    assert_eq!(
        python_name("tomli; python_version < '3.11'").unwrap(),
        "tomli"
    );
    assert_eq!(python_pin("numpy==1.26.4"), Some("1.26.4"));
    assert_eq!(
        python_pin("numpy==1.26.4; sys_platform == 'linux'"),
        Some("1.26.4")
    );
    assert_eq!(python_pin("numpy>=1.26"), None);
    assert_eq!(python_pin("numpy==1.*"), None);
}

#[test]
fn python_specs_that_would_build_or_fetch_elsewhere_are_refused() {
    for (spec, want) in [
        ("", SpecError::Empty),
        ("-e .", SpecError::Option),
        ("--index-url https://example.org/simple", SpecError::Option),
        ("-r other.txt", SpecError::Option),
        ("./mypkg", SpecError::NotRegistry),
        ("/abs/path/pkg.whl", SpecError::NotRegistry),
        ("pkg @ https://example.org/pkg.whl", SpecError::NotRegistry),
        ("git+https://github.com/u/r", SpecError::NotRegistry),
        ("==1.0", SpecError::NoName),
    ] {
        assert_eq!(python_name(spec), Err(want), "{spec:?}");
    }
}

#[test]
fn npm_specs_give_name_and_range() {
    assert_eq!(npm_name("lodash").unwrap(), ("lodash".into(), "*".into()));
    assert_eq!(
        npm_name("camelcase@8.0.0").unwrap(),
        ("camelcase".into(), "8.0.0".into())
    );
    assert_eq!(
        npm_name("@types/node@^22").unwrap(),
        ("@types/node".into(), "^22".into())
    );
    assert_eq!(
        npm_name("@scope/pkg").unwrap(),
        ("@scope/pkg".into(), "*".into())
    );
    assert!(npm_check("dayjs", ">=1.11 <2 || ~1.10.0").is_ok());
}

#[test]
fn npm_specs_from_anywhere_but_the_registry_are_refused() {
    for (spec, want) in [
        ("", SpecError::Empty),
        ("--global", SpecError::Option),
        ("x@file:../x", SpecError::NotRegistry),
        ("x@git+https://github.com/u/x.git", SpecError::NotRegistry),
        ("x@github:u/x", SpecError::NotRegistry),
        ("x@npm:lodash@4", SpecError::NotRegistry),
        ("x@https://example.org/x.tgz", SpecError::NotRegistry),
        ("./local", SpecError::NotRegistry),
        ("@scope", SpecError::NoName),
        ("x@", SpecError::NotRegistry),
    ] {
        assert_eq!(npm_name(spec), Err(want), "{spec:?}");
    }
}
