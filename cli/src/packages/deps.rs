//! A script's declared `dependencies` (a graph node's script spec) checked
//! against what its image has: a missing one is an error naming it, before
//! any VM starts.

use reflow_sandbox_core::Language;

use super::{spec, Installed, PackagesError};

/// One dependency a component declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub component: String,
    pub language: Language,
    /// As written: a pip requirement or an npm `name@range`.
    pub spec: String,
}

impl Dependency {
    /// A dependency as a graph's script spec declares one (`{"name":
    /// "version spec"}`): a bare version (`1.2.3`) pins it, `*` or nothing
    /// asks for any version, anything else is a range.
    pub fn declared(component: &str, language: Language, name: &str, version: &str) -> Dependency {
        let v = version.trim();
        let spec = match language {
            Language::Python if v.is_empty() || v == "*" => name.to_string(),
            Language::Python if v.starts_with(|c: char| c.is_ascii_digit()) => {
                format!("{name}=={v}")
            }
            Language::Python => format!("{name}{v}"),
            Language::JavaScript if v.is_empty() => name.to_string(),
            Language::JavaScript => format!("{name}@{v}"),
        };
        Dependency {
            component: component.into(),
            language,
            spec,
        }
    }
}

/// Checks `deps` (all of one language) against `installed`: each name must
/// be there, at the version it pins when it pins one exactly (ranges are
/// the resolver's business: pin in the workspace's packages).
pub fn check(deps: &[Dependency], installed: &[Installed]) -> Result<(), PackagesError> {
    for d in deps {
        let missing = |why: String| PackagesError::Missing {
            component: d.component.clone(),
            language: d.language,
            dependency: d.spec.clone(),
            why,
        };
        let bad = |source| PackagesError::Spec {
            origin: format!("the `dependencies` of {}", d.component),
            spec: d.spec.clone(),
            source,
        };
        let (found, pin): (_, Option<String>) = match d.language {
            Language::Python => {
                let name = spec::python_name(&d.spec).map_err(bad)?;
                let found = installed
                    .iter()
                    .find(|i| spec::normalize_python(&i.name) == name);
                (found, spec::python_pin(&d.spec).map(String::from))
            }
            Language::JavaScript => {
                let (name, range) = spec::npm_name(&d.spec).map_err(bad)?;
                let exact = range
                    .strip_prefix('=')
                    .unwrap_or(&range)
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.');
                let found = installed
                    .iter()
                    .find(|i| i.name.to_ascii_lowercase() == name);
                (
                    found,
                    exact.then(|| range.trim_start_matches('=').to_string()),
                )
            }
        };
        match (found, pin) {
            (None, _) => return Err(missing("which its image does not have".into())),
            (Some(i), Some(v)) if i.version != v => {
                return Err(missing(format!(
                    "but its image has {} {}",
                    i.name, i.version
                )))
            }
            _ => {}
        }
    }
    Ok(())
}
