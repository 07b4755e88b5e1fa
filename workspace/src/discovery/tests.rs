//! Discovery over the fixture workspace (`tests/fixtures/workspace`):
//! exact metadata for every supported form, excluded directories skipped,
//! precise errors for broken scripts, and none of them run.

use std::path::PathBuf;

use serde_json::json;

use super::*;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/workspace")
}

fn port(name: &str, ty: &str, required: bool) -> Port {
    Port {
        name: name.into(),
        port_type: ty.into(),
        required,
        description: None,
    }
}

#[test]
fn the_fixture_workspace_is_discovered_exactly() {
    let canary = std::path::Path::new("/tmp/reflow-discovery-canary");
    let _ = std::fs::remove_file(canary);
    let found = discover(&DiscoveryConfig::new(&workspace())).unwrap();
    assert!(!canary.exists(), "discovery ran a script");

    let names: Vec<&str> = found
        .components
        .iter()
        .map(|c| c.metadata.component.as_str())
        .collect();
    assert_eq!(
        names,
        ["Clock", "Counter", "Greeter", "Multiply", "Negate", "Shout", "Tally", "Upper"]
    );
    let get = |n: &str| {
        &found
            .components
            .iter()
            .find(|c| c.metadata.component == n)
            .unwrap()
            .metadata
    };

    let m = get("Multiply");
    assert_eq!(
        m.description,
        "Multiplies x by factor.\n\nThe factor defaults to the node's config."
    );
    assert_eq!(
        m.inports,
        [port("x", "any", true), port("factor", "number", false)]
    );
    assert_eq!(m.outports, [port("product", "any", false)]);
    assert_eq!(m.tags, ["math"]);
    assert_eq!(
        serde_json::Value::Object(m.config.clone()),
        json!({"factor": 2})
    );
    assert_eq!(
        (m.runtime, m.file.as_str(), m.namespace.as_str(), m.line),
        (Language::Python, "math/multiply.actor.py", "math", 4)
    );

    let n = get("Negate");
    assert_eq!(
        (n.description.as_str(), n.namespace.as_str()),
        ("Flips the sign.", "math.actors")
    );
    assert_eq!(n.inports, [port("x", "any", true)]);

    let u = get("Upper");
    assert_eq!(
        (
            u.description.as_str(),
            u.inports.len(),
            u.namespace.as_str()
        ),
        ("Upper-cases text.", 0, "text")
    );

    let g = get("Greeter");
    assert_eq!(
        (g.runtime, g.description.as_str(), g.line),
        (Language::JavaScript, "Greets", 1)
    );
    assert_eq!(g.inports, [port("name", "any", true)]);
    assert_eq!(
        serde_json::Value::Object(g.config.clone()),
        json!({"punctuation": "!", "times": 1, "ratio": -0.5})
    );

    let c = get("Counter");
    assert_eq!(c.inports, [port("tick", "flow", true)]);
    assert_eq!(c.tags, ["state", "js"]);
    assert_eq!(c.namespace, "js.actors");

    // ES modules: `export const metadata`, `export { meta as metadata }`
    // in a .js file with export statements, `export default { metadata }`.
    let clock = get("Clock");
    assert_eq!(
        (
            clock.runtime,
            clock.file.as_str(),
            clock.namespace.as_str(),
            clock.line
        ),
        (Language::JavaScript, "js/esm/clock.actor.mjs", "js.esm", 3)
    );
    assert_eq!(clock.tags, ["esm"]);
    assert_eq!(clock.outports, [port("stamp", "any", false)]);
    let shout = get("Shout");
    assert_eq!(
        (shout.file.as_str(), shout.line),
        ("js/esm/shout.actor.js", 8)
    );
    assert_eq!(
        serde_json::Value::Object(shout.config.clone()),
        json!({"marks": 2})
    );
    let tally = get("Tally");
    assert_eq!(
        (tally.file.as_str(), tally.line),
        ("js/esm/tally.actor.mjs", 4)
    );
    assert_eq!(tally.inports, [port("n", "any", true)]);

    let problems: Vec<String> = found.problems.iter().map(ToString::to_string).collect();
    let want = [
        "broken/computed.actor.py:3: computed metadata: @actor's arguments must be literals (strings, numbers, lists, dicts)",
        "broken/dupe.actor.py:2: inport \"a\" listed twice",
        "broken/nodecorator.actor.py:1: no @actor-decorated function at the top level of the script",
        "broken/runs.actor.py:4: computed metadata: @actor's arguments must be literals (strings, numbers, lists, dicts)",
        "broken/spread.actor.js:2: computed metadata: it must be a literal (strings, numbers, arrays, objects)",
        "broken/export.actor.mjs:1: `export { missing }` names no top-level const",
    ];
    for w in want {
        assert!(
            problems.iter().any(|p| p == w),
            "missing {w:?} in {problems:#?}"
        );
    }
    let starts = [
        "broken/syntax.actor.js:1: syntax error: ",
        "broken/syntax.actor.py:2: syntax error: ",
        "broken/unknown.actor.js:3: unknown metadata key \"inport\"",
    ];
    for s in starts {
        assert!(
            problems.iter().any(|p| p.starts_with(s)),
            "missing {s:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), want.len() + starts.len(), "{problems:#?}");
    assert!(!problems
        .iter()
        .any(|p| p.contains("node_modules") || p.contains("__pycache__")));
}

#[test]
fn patterns_choose_and_exclude_files() {
    let mut config = DiscoveryConfig::new(&workspace());
    config.include = vec!["math/**/*.py".into()];
    config.exclude = vec!["**/actors/**".into()];
    let found = discover(&config).unwrap();
    let names: Vec<&str> = found
        .components
        .iter()
        .map(|c| c.metadata.component.as_str())
        .collect();
    assert_eq!(names, ["Multiply"]);
    config.include = vec!["[".into()];
    assert!(matches!(discover(&config), Err(WalkError::Pattern { .. })));
    config.root = workspace().join("missing");
    config.include = vec!["**".into()];
    assert!(matches!(discover(&config), Err(WalkError::Root { .. })));
}

#[test]
fn docstrings_are_cleaned_as_python_does() {
    use super::python::clean_doc;
    assert_eq!(
        clean_doc("  One.\n\n    Two\n      three\n  "),
        "One.\n\nTwo\n  three"
    );
    assert_eq!(clean_doc("\n\tTabbed\n\t  more\n"), "Tabbed\n  more");
    assert_eq!(clean_doc("x\n\u{3000}y"), "x\ny");
}

#[test]
fn namespaces_follow_directories() {
    assert_eq!(namespace("a.actor.py"), "default");
    assert_eq!(namespace("a/b/c.actor.py"), "a.b");
}

#[test]
fn deep_nesting_is_refused_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let deep = |n: usize| {
        format!(
            "x = {}{}\n@actor(name=\"A\")\ndef f(c): pass\n",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    std::fs::write(dir.path().join("deep.actor.py"), deep(100_000)).unwrap();
    std::fs::write(dir.path().join("ok.actor.py"), deep(MAX_NESTING)).unwrap();
    std::fs::write(
        dir.path().join("deep.actor.js"),
        format!(
            "const metadata = {}1{};",
            "{a:".repeat(50_000),
            "}".repeat(50_000)
        ),
    )
    .unwrap();
    let found = discover(&DiscoveryConfig::new(dir.path())).unwrap();
    let problems: Vec<String> = found.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "deep.actor.js: brackets nest 50000 deep; scripts may nest 512 (refused unparsed)",
            "deep.actor.py: brackets nest 100000 deep; scripts may nest 512 (refused unparsed)",
        ]
    );
    assert_eq!(found.components.len(), 1, "the script at the limit parses");
}

/// Nesting without brackets (prefix operators, arrow and lambda chains)
/// as deep as a script discovery reads can make it: parsed or refused,
/// never a crashed host.
#[test]
fn the_deepest_bracketless_scripts_do_not_crash_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let n = MAX_SCRIPT_LEN - 32;
    let files = [
        ("not.actor.js", format!("const a = {}1;", "!".repeat(n))),
        (
            "arrow.actor.js",
            format!("const a = {}1;", "x=>".repeat(n / 3)),
        ),
        ("minus.actor.py", format!("x = {}1", "-".repeat(n))),
        (
            "lambda.actor.py",
            format!("x = {}1", "lambda:".repeat(n / 7)),
        ),
        ("big.actor.py", " ".repeat(MAX_SCRIPT_LEN + 1)),
    ];
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let found = discover(&DiscoveryConfig::new(dir.path())).unwrap();
    assert!(found.components.is_empty());
    assert_eq!(found.problems.len(), files.len(), "{:#?}", found.problems);
    assert!(found
        .problems
        .iter()
        .any(|p| p.message.contains("discovery reads scripts of at most")));
}
