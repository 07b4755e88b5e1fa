//! Discovery: every script actor in a workspace becomes a component, with
//! its metadata read from the script's syntax tree on the host (never by
//! running it: Reflow 0.2.1 runs `python3 -c`/`node -e` on the untrusted
//! files; we do not). A bad script is reported, with its file and line,
//! and skipped; the others are still found.

mod js;
mod metadata;
mod python;
mod source;
mod walk;

use std::path::{Path, PathBuf};

pub use metadata::{ComponentMetadata, Lit, Port, KEYS};
pub use walk::{DiscoveryConfig, WalkError, DEFAULT_EXCLUDE, DEFAULT_INCLUDE};

use reflow_sandbox_core::Language;
use reflow_sandbox_core::Script;

/// A script discovery could not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The script, relative to the workspace root.
    pub file: String,
    /// The line, where there is one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// A discovered component: its metadata and where its script is.
#[derive(Debug, Clone)]
pub struct Component {
    /// The metadata read from the script.
    pub metadata: ComponentMetadata,
    /// The script's path (under the discovery root).
    pub path: PathBuf,
}

impl Component {
    /// The component's script, ready for the host bridge's `Bridge::actor` (read
    /// again now, so it is what the metadata was read from unless it
    /// changed since).
    pub fn script(&self) -> Result<Script, reflow_sandbox_core::ScriptError> {
        let mut script = Script::from_file(&self.path, Some(self.metadata.runtime))?;
        script.inports = self
            .metadata
            .inports
            .iter()
            .map(|p| p.name.clone())
            .collect();
        script.outports = self
            .metadata
            .outports
            .iter()
            .map(|p| p.name.clone())
            .collect();
        Ok(script)
    }
}

/// What discovery found: components (sorted by name) and problems.
#[derive(Debug, Default)]
pub struct Discovery {
    /// The components found, sorted by name.
    pub components: Vec<Component>,
    /// The scripts that could not be used, and why.
    pub problems: Vec<Problem>,
}

/// Finds every script actor under `config.root`.
pub fn discover(config: &DiscoveryConfig) -> Result<Discovery, WalkError> {
    let mut found = Discovery::default();
    for (path, rel) in walk::scripts(config)? {
        match read(&path, &rel) {
            Ok(metadata) => found.components.push(Component { metadata, path }),
            Err(problem) => found.problems.push(problem),
        }
    }
    // Two scripts naming one component: both are reported, neither used.
    let mut names: Vec<&str> = found
        .components
        .iter()
        .map(|c| c.metadata.component.as_str())
        .collect();
    names.sort_unstable();
    let twice: Vec<String> = names
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0].to_string())
        .collect();
    if !twice.is_empty() {
        let (dupes, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut found.components)
            .into_iter()
            .partition(|c| twice.contains(&c.metadata.component));
        for c in dupes {
            found.problems.push(Problem {
                file: c.metadata.file.clone(),
                line: Some(c.metadata.line),
                message: format!(
                    "component \"{}\" is defined by more than one script",
                    c.metadata.component
                ),
            });
        }
        found.components = keep;
    }
    found
        .components
        .sort_by(|a, b| a.metadata.component.cmp(&b.metadata.component));
    found
        .problems
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok(found)
}

/// The metadata of one script file (`rel` is its workspace-relative name).
pub fn read(path: &Path, rel: &str) -> Result<ComponentMetadata, Problem> {
    let problem = |line, message: String| Problem {
        file: rel.to_string(),
        line,
        message,
    };
    let language = Language::of_file(path)
        .ok_or_else(|| problem(None, "not a .py, .js, .mjs or .cjs file".into()))?;
    let len = std::fs::metadata(path)
        .map_err(|e| problem(None, format!("cannot read it: {e}")))?
        .len();
    if len > MAX_SCRIPT_LEN as u64 {
        return Err(problem(
            None,
            format!("{len} bytes; discovery reads scripts of at most {MAX_SCRIPT_LEN}"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| problem(None, format!("cannot read it: {e}")))?;
    let source = String::from_utf8(bytes).map_err(|_| problem(None, "not UTF-8".into()))?;
    parse(source, language, rel)
}

/// The metadata of a script given as text (`rel` names it in problems and
/// gives its namespace), read as [`read`] reads a file's.
pub fn parse(source: String, language: Language, rel: &str) -> Result<ComponentMetadata, Problem> {
    let problem = |line, message: String| Problem {
        file: rel.to_string(),
        line,
        message,
    };
    if source.len() > MAX_SCRIPT_LEN {
        return Err(problem(
            None,
            format!(
                "{} bytes; discovery reads scripts of at most {MAX_SCRIPT_LEN}",
                source.len()
            ),
        ));
    }
    let depth = bracket_depth(&source);
    if depth > MAX_NESTING {
        return Err(problem(
            None,
            format!(
                "brackets nest {depth} deep; scripts may nest {MAX_NESTING} (refused unparsed)"
            ),
        ));
    }
    // The parsers recurse once per nesting level: a thread with room for
    // MAX_NESTING levels of both, whatever the caller's stack.
    let file = rel.to_string();
    let parsed = std::thread::Builder::new()
        .name("discovery-parse".into())
        .stack_size(PARSE_STACK)
        .spawn(move || match language {
            Language::Python => python::find(&source),
            Language::JavaScript => js::find(&source, &file),
        })
        .map_err(|e| problem(None, format!("cannot start a parser thread: {e}")))?
        .join()
        .map_err(|_| problem(None, "the parser failed on this script".into()))?;
    let found = parsed.map_err(|m| problem(Some(m.line), m.message))?;
    metadata::component(found, language, rel.to_string(), namespace(rel))
        .map_err(|m| problem(Some(m.line), m.message))
}

/// Deepest bracket nesting a script may have (counted over the raw text,
/// strings included, so a script can only be refused for more, never
/// crash the host's parsers with a deep one).
pub const MAX_NESTING: usize = 512;

/// Largest script discovery reads. The parsers recurse on nesting that no
/// bracket shows (`!!!!x`, `x => x => ...`, `- - - 1`): at this size the
/// worst such script needs about 100 MB of stack and 250 MB of memory and
/// half a second; at the 4 MiB a script may have to run, 16 times that.
pub const MAX_SCRIPT_LEN: usize = 256 << 10;

/// Stack of the parser thread (reserved, touched only as deep as a script
/// nests): room for the worst [`MAX_SCRIPT_LEN`] script several times over.
const PARSE_STACK: usize = 1 << 30;

/// The deepest nesting of `(`, `[` and `{` in `text`.
fn bracket_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Reflow's namespace of a script: its directories joined with `.`
/// (`default` at the root).
pub fn namespace(rel: &str) -> String {
    let dirs: Vec<&str> = Path::new(rel)
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    if dirs.is_empty() {
        "default".into()
    } else {
        dirs.join(".")
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
