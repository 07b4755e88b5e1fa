//! A script actor's code and what the host knows about it before running
//! it.

use crate::language::Language;
use crate::limits::LimitOverrides;
use crate::shape::ShapeOverrides;
use std::path::{Path, PathBuf};

/// Largest script source accepted.
pub const MAX_SOURCE_LEN: usize = 4 << 20;

/// Why a script cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The script file could not be read.
    #[error("cannot read script {}: {source}", path.display())]
    Read {
        /// The script's path.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The script is larger than [`MAX_SOURCE_LEN`].
    #[error("script {} is {len} bytes; the limit is {MAX_SOURCE_LEN}", path.display())]
    TooLarge {
        /// The script's path.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
    },
    /// The script is not UTF-8 text.
    #[error("script {} is not valid UTF-8", path.display())]
    NotUtf8 {
        /// The script's path.
        path: PathBuf,
    },
    /// No language was given and the file's extension names none.
    #[error("cannot tell the language of {}: script actors are `.py` (Python) or `.js` (JavaScript) files", path.display())]
    UnknownLanguage {
        /// The script's path.
        path: PathBuf,
    },
}

/// A script actor's source.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The language the script is written in.
    pub language: Language,
    /// The name tracebacks show (the file name).
    pub name: String,
    /// The script's source text (at most [`MAX_SOURCE_LEN`] bytes when read
    /// from a file).
    pub source: String,
    /// Declared ports, where the host knows them (the guest's metadata is
    /// authoritative; these only inform Reflow).
    pub inports: Vec<String>,
    /// Declared output ports, where the host knows them (as for `inports`).
    pub outports: Vec<String>,
    /// This actor's own limits, over its runtime's and the bridge's (a
    /// graph's `timeoutSeconds` sets `limits.timeout`).
    pub limits: LimitOverrides,
    /// The VM this actor asks for, over its runtime's (a graph's
    /// `memoryMb` sets `shape.mem_mib`; reflow.yaml's
    /// `workspace.sandbox.actors.<Name>` memory, vcpus and cpu).
    pub shape: ShapeOverrides,
}

impl Script {
    /// A script given as text.
    pub fn inline(language: Language, name: &str, source: &str) -> Script {
        Script {
            language,
            name: name.into(),
            source: source.into(),
            inports: Vec::new(),
            outports: Vec::new(),
            limits: LimitOverrides::default(),
            shape: ShapeOverrides::default(),
        }
    }

    /// The script in `path`; its language from its extension unless
    /// `language` says.
    pub fn from_file(path: &Path, language: Option<Language>) -> Result<Script, ScriptError> {
        let language = language
            .or_else(|| Language::of_file(path))
            .ok_or_else(|| ScriptError::UnknownLanguage { path: path.into() })?;
        let read = |source| ScriptError::Read {
            path: path.into(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_SOURCE_LEN as u64 {
            return Err(ScriptError::TooLarge {
                path: path.into(),
                len,
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        let source =
            String::from_utf8(bytes).map_err(|_| ScriptError::NotUtf8 { path: path.into() })?;
        let name = path
            .file_name()
            .map_or_else(|| "script".into(), |n| n.to_string_lossy().into_owned());
        Ok(Script::inline(language, &name, &source))
    }
}
