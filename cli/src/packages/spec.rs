//! Package specs as a workspace writes them, checked before any tool sees
//! them: only packages from the registry (PyPI, npm), never a path, a URL,
//! a VCS checkout or an editable install, all of which would have to be
//! built on the host (running the package's code) or fetched from
//! anywhere.

/// Why a spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("is empty")]
    Empty,
    #[error(
        "is an option; a workspace lists requirements only (pip's options, -r, -e and \
             --index-url among them, are not taken)"
    )]
    Option,
    #[error(
        "names a path, a URL or a VCS checkout; only registry packages are installed \
             (anything else would be built on the host, running its code)"
    )]
    NotRegistry,
    #[error("does not start with a package name")]
    NoName,
}

/// A package's name as its registry compares names: PEP 503 for Python
/// (lowercase, runs of `-`, `_`, `.` as one `-`), lowercase for npm.
pub fn normalize_python(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
            continue;
        }
        if dash && !out.is_empty() {
            out.push('-');
        }
        dash = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A pip requirement line (PEP 508, registry form): its normalized name.
pub fn python_name(spec: &str) -> Result<String, SpecError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(SpecError::Empty);
    }
    if spec.starts_with('-') {
        return Err(SpecError::Option);
    }
    // `name @ URL` (a direct reference), a path or a URL.
    if spec.contains(['@', '/', '\\']) || spec.starts_with(['.', '~']) {
        return Err(SpecError::NotRegistry);
    }
    let end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(spec.len());
    let name = &spec[..end];
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(SpecError::NoName);
    }
    Ok(normalize_python(name))
}

/// The exact version a pip requirement pins (`name==1.2.3`), if it pins one.
pub fn python_pin(spec: &str) -> Option<&str> {
    let (_, rest) = spec.split_once("==")?;
    let v = rest.split([';', ',', ' ']).next()?.trim();
    (!v.is_empty() && !v.contains('*')).then_some(v)
}

/// An npm spec (`name`, `name@range`, `@scope/name@range`): its name and
/// range (`*` when none is given).
pub fn npm_name(spec: &str) -> Result<(String, String), SpecError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(SpecError::Empty);
    }
    if spec.starts_with('-') {
        return Err(SpecError::Option);
    }
    let (name, range) = match spec.strip_prefix('@') {
        Some(rest) => match rest.split_once('@') {
            Some((n, r)) => (format!("@{n}"), r.to_string()),
            None => (spec.to_string(), "*".to_string()),
        },
        None => match spec.split_once('@') {
            Some((n, r)) => (n.to_string(), r.to_string()),
            None => (spec.to_string(), "*".to_string()),
        },
    };
    npm_check(&name, &range)?;
    Ok((name.to_ascii_lowercase(), range))
}

/// Checks a `package.json` dependency (`name`: `range`) as [`npm_name`]
/// checks a spec.
pub fn npm_check(name: &str, range: &str) -> Result<(), SpecError> {
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
            && !p.starts_with('.')
    };
    let parts: Vec<&str> = match name.strip_prefix('@') {
        Some(scoped) => scoped.split('/').collect(),
        None => vec![name],
    };
    let want = if name.starts_with('@') { 2 } else { 1 };
    if parts.len() != want || !parts.iter().all(|p| valid_part(p)) {
        return Err(if name.contains([':', '/', '\\']) {
            SpecError::NotRegistry
        } else {
            SpecError::NoName
        });
    }
    // A registry range is versions and operators; anything with a colon
    // or a slash (file:, git+https://, github:user/repo, npm: aliases,
    // tarball URLs, paths) is not one.
    if range.is_empty() || range.contains([':', '/', '\\']) || range.starts_with('.') {
        return Err(SpecError::NotRegistry);
    }
    Ok(())
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
