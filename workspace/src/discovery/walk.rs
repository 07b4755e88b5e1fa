//! Walking a workspace for script files: include and exclude globs
//! (`**` crosses directories, as in `.gitignore`), excluded directories
//! pruned without being read, symbolic links not followed.

use std::path::{Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};

/// The default patterns (`reflow.yaml`'s `script_patterns` and `excluded_paths`).
pub const DEFAULT_INCLUDE: &[&str] = &[
    "**/*.actor.py",
    "**/*.actor.js",
    "**/*.actor.mjs",
    "**/*.actor.cjs",
    "**/actors/*.py",
    "**/actors/*.js",
    "**/actors/*.mjs",
    "**/actors/*.cjs",
];
/// The default exclude patterns (`excluded_paths`): dependency and cache
/// directories.
pub const DEFAULT_EXCLUDE: &[&str] = &["**/node_modules/**", "**/__pycache__/**"];

/// Where and what to discover.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// The workspace directory to search.
    pub root: PathBuf,
    /// Globs (relative to `root`, `/`-separated) of the files to read.
    pub include: Vec<String>,
    /// Globs of files and directories to skip (directories are not read).
    pub exclude: Vec<String>,
}

impl DiscoveryConfig {
    /// `root` with the default patterns.
    pub fn new(root: &Path) -> DiscoveryConfig {
        DiscoveryConfig {
            root: root.into(),
            include: DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect(),
            exclude: DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Why a workspace cannot be walked.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// An include or exclude pattern is not a valid glob.
    #[error("pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern (or the set's patterns, `, `-joined).
        pattern: String,
        /// The glob parser's error.
        source: globset::Error,
    },
    /// The root is not a directory.
    #[error("workspace {}: {source}", root.display())]
    Root {
        /// The workspace root.
        root: PathBuf,
        /// Why it cannot be used.
        source: std::io::Error,
    },
    /// Reading a directory under the root failed.
    #[error("walking {}: {source}", root.display())]
    Walk {
        /// The workspace root.
        root: PathBuf,
        /// The directory walker's error.
        source: walkdir::Error,
    },
}

fn set(patterns: &[String]) -> Result<GlobSet, WalkError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // `**/x` also matches `x` at the root (globset does so already);
        // literal separators keep `*` inside one directory.
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|source| WalkError::Pattern {
                pattern: p.clone(),
                source,
            })?;
        b.add(glob);
    }
    b.build().map_err(|source| WalkError::Pattern {
        pattern: patterns.join(", "),
        source,
    })
}

/// The matching files: (path, path relative to the root with `/`),
/// sorted.
pub(crate) fn scripts(config: &DiscoveryConfig) -> Result<Vec<(PathBuf, String)>, WalkError> {
    let include = set(&config.include)?;
    let exclude = set(&config.exclude)?;
    if !config.root.is_dir() {
        return Err(WalkError::Root {
            root: config.root.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let rel = |p: &Path| -> String {
        p.strip_prefix(&config.root)
            .unwrap_or(p)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut out = Vec::new();
    let walker = walkdir::WalkDir::new(&config.root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            // A directory is pruned when anything inside it would be excluded.
            e.depth() == 0
                || !e.file_type().is_dir()
                || !exclude.is_match(format!("{}/_", rel(e.path())))
        });
    for entry in walker {
        let entry = entry.map_err(|source| WalkError::Walk {
            root: config.root.clone(),
            source,
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let r = rel(entry.path());
        if include.is_match(&r) && !exclude.is_match(&r) {
            out.push((entry.path().to_path_buf(), r));
        }
    }
    Ok(out)
}
