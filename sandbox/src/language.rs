//! The script languages and how each one's worker starts in its image.

use std::path::Path;

/// The script languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python 3.
    Python,
    /// JavaScript on Node.
    JavaScript,
}

/// Each of V8's two young-generation semi-spaces, in MiB, in every Node
/// worker (see [`Language::interpreter_flags`]): at most twice this of a
/// clone's memory holds young objects.
pub const NODE_SEMI_SPACE_MIB: u32 = 8;

impl Language {
    /// The language a script file is written in, from its name
    /// (`*.py`; `*.js`, `*.mjs` and `*.cjs`).
    pub fn of_file(path: &Path) -> Option<Language> {
        match path.extension()?.to_str()? {
            "py" => Some(Language::Python),
            "js" | "mjs" | "cjs" => Some(Language::JavaScript),
            _ => None,
        }
    }

    /// The file name extension of the language's scripts (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Language::Python => "py",
            Language::JavaScript => "js",
        }
    }

    /// The language named `name` as Reflow's `ScriptSpec.runtime` says it.
    pub fn named(name: &str) -> Option<Language> {
        match name {
            "python" | "python3" => Some(Language::Python),
            "nodejs" | "node" | "javascript" => Some(Language::JavaScript),
            _ => None,
        }
    }
}

impl Language {
    /// The program in the language's image that runs its scripts.
    pub fn interpreter(self) -> &'static str {
        match self {
            Language::Python => "/usr/bin/python3",
            Language::JavaScript => "/usr/bin/node",
        }
    }

    /// The interpreter's flags before the script. Node runs V8 without
    /// background threads (`--single-threaded`: no concurrent compiler or
    /// parallel GC): with one vCPU they only add thread wake-ups, each
    /// emulated guest kernel work where the kernel is emulated (a warm
    /// message's guest-side work measured 31 us with it, 124 us without).
    /// Its young generation has one size, [`NODE_SEMI_SPACE_MIB`] per
    /// semi-space: V8 otherwise shrinks it while a node idles and grows it
    /// again when messages come fast, and every page it grows into is a
    /// guest page fault (emulated kernel work on `kvm_pvm` hosts; the
    /// stream bench's JavaScript node at 5000 msg/s had a p50 of 137-274
    /// ms with V8's sizing, 0.2 ms with this one, on an AMD EPYC host).
    pub fn interpreter_flags(self) -> &'static [&'static str] {
        match self {
            Language::Python => &[],
            Language::JavaScript => &[
                "--single-threaded",
                "--min-semi-space-size=8",
                "--max-semi-space-size=8",
            ],
        }
    }

    /// The worker script under `/opt/reflow` the agent starts.
    pub fn worker(self) -> &'static str {
        match self {
            Language::Python => "run_worker.py",
            Language::JavaScript => "run_worker.js",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_files_name_their_language() {
        for (file, language) in [
            ("a.actor.py", Some(Language::Python)),
            ("a.actor.js", Some(Language::JavaScript)),
            ("a.actor.mjs", Some(Language::JavaScript)),
            ("dir/a.cjs", Some(Language::JavaScript)),
            ("a.ts", None),
            ("Makefile", None),
        ] {
            assert_eq!(Language::of_file(Path::new(file)), language, "{file}");
        }
    }

    #[test]
    fn node_gets_one_young_generation_size() {
        let flags = Language::JavaScript.interpreter_flags();
        for bound in ["min", "max"] {
            let flag = format!("--{bound}-semi-space-size={NODE_SEMI_SPACE_MIB}");
            assert!(flags.contains(&flag.as_str()), "{flag} in {flags:?}");
        }
    }
}
