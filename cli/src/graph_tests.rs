//! Graph files that must load, and the precise errors of ones that must
//! not.

use serde_json::{json, Value};

use super::GraphFile;
use reflow_sandbox_core::{Language, ShapeOverrides, VmShape};

/// A way to break the good graph, and what the error must say.
type Case = (Box<dyn Fn(&mut Value)>, &'static str);

fn edge(node: &str, port: &str) -> Value {
    json!({"nodeId": node, "portName": port, "portId": port, "expose": false,
           "portType": {"type": "any"}})
}

fn conn(a: &str, ap: &str, b: &str, bp: &str) -> Value {
    json!({"from": edge(a, ap), "to": edge(b, bp)})
}

fn script_node(id: &str, script: Value) -> Value {
    json!({"id": id, "component": "Mul",
           "metadata": {"componentSpec": {"type": "script", "script": script}, "factor": 2}})
}

fn good() -> Value {
    json!({
        "caseSensitive": true,
        "properties": {"name": "g"},
        "processes": {
            "n": {"id": "n", "component": "Range"},
            "m": script_node("m", json!({"runtime": "python", "source": "file", "path": "mul.actor.py", "timeoutSeconds": 5, "memoryMb": 320})),
            "f": {"id": "f", "component": "Format"},
        },
        "connections": [
            {"from": edge("n", "count"), "to": edge("n", "count"), "data": 3},
            conn("n", "out", "m", "input"),
            conn("m", "output", "f", "in"),
        ],
    })
}

/// Loads `graph` from a directory that also holds `mul.actor.py`.
fn load(graph: &Value) -> Result<GraphFile, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mul.actor.py"),
        "@actor(name='Mul')\ndef f(c): pass\n",
    )
    .unwrap();
    let path = dir.path().join("g.json");
    std::fs::write(&path, graph.to_string()).unwrap();
    GraphFile::load(&path).map_err(|e| e.to_string())
}

#[test]
fn a_good_graph_loads_with_its_scripts_and_sinks() {
    let g = load(&good()).unwrap();
    assert_eq!(g.sinks, ["f"]);
    let mul = &g.scripts["Mul"];
    assert_eq!(mul.name, "mul.actor.py");
    assert!(mul.source.starts_with("@actor"));
    assert_eq!(mul.limits.timeout, Some(std::time::Duration::from_secs(5)));
    assert_eq!(mul.shape.mem_mib, Some(320));
}

#[test]
fn a_node_chooses_its_scripts_isolation() {
    use reflow_sandbox_core::IsolationKind;
    assert_eq!(load(&good()).unwrap().scripts["Mul"].shape.isolation, None);
    for (said, kind) in [
        ("process", IsolationKind::Process),
        ("vm", IsolationKind::Vm),
    ] {
        let mut g = good();
        g["processes"]["m"]["metadata"]["isolation"] = json!(said);
        let mul = &load(&g).unwrap().scripts["Mul"];
        assert_eq!(mul.shape.isolation, Some(kind), "{said}");
        // The rest of its shape is the spec's.
        assert_eq!(mul.shape.mem_mib, Some(320));
    }
}

#[test]
fn a_script_of_its_own_size_gets_a_runtime_of_that_size_and_no_unused_one() {
    use crate::setup::{shapes, Sizes};
    let default = Sizes::default_for(Language::Python);
    let big = Sizes {
        shape: VmShape {
            mem_mib: 320,
            ..default.shape
        },
        ..default
    };
    // Mul alone asks for 320 MiB: no pool of the runtime's own size.
    let g = load(&good()).unwrap();
    assert_eq!(shapes(&g, Sizes::default_for), [(Language::Python, big)]);
    // With a script of the runtime's size beside it, that size first.
    let mut graph = good();
    graph["processes"]["z"] = json!({"id": "z", "component": "Zero", "metadata": {
        "componentSpec": {"type": "script", "script": {"runtime": "python", "code": "x"}}}});
    let g = load(&graph).unwrap();
    assert_eq!(
        shapes(&g, Sizes::default_for),
        [(Language::Python, default), (Language::Python, big)]
    );
    // Every node a process: no VM size at all.
    graph["processes"]["m"]["metadata"]["isolation"] = json!("process");
    graph["processes"]["z"]["metadata"]["isolation"] = json!("process");
    let g = load(&graph).unwrap();
    let kinds: Vec<_> = shapes(&g, Sizes::default_for)
        .iter()
        .map(|(_, s)| s.shape.isolation)
        .collect();
    use reflow_sandbox_core::IsolationKind::Process;
    assert_eq!(kinds, [Process, Process]);
    let g = load(&good()).unwrap();
    // A runtime already of that size serves it: one VM size in all.
    let big = |l| {
        Sizes::default_for(l).with(&ShapeOverrides {
            mem_mib: Some(320),
            ..ShapeOverrides::default()
        })
    };
    assert_eq!(
        shapes(&g, big),
        vec![(Language::Python, big(Language::Python))]
    );
}

#[test]
fn bad_graphs_are_refused_with_the_reason() {
    let cases: Vec<Case> = vec![
        (
            Box::new(|g| g["properties"] = json!({})),
            "`properties.name` must be a string",
        ),
        (
            Box::new(|g| g["processes"] = json!({})),
            "it has no processes",
        ),
        (
            Box::new(|g| g["connections"][1] = conn("n", "out", "ghost", "in")),
            "names node \"ghost\", which is not among the processes",
        ),
        (
            Box::new(|g| g["processes"]["f"]["component"] = json!("Nope")),
            "component \"Nope\" is neither a script",
        ),
        (
            Box::new(|g| g["connections"][2] = conn("m", "output", "f", "input")),
            "node \"f\" (Format) has no inport \"input\"; its inport is \"in\"",
        ),
        (
            Box::new(|g| g["connections"][1] = conn("n", "output", "m", "input")),
            "node \"n\" (Range) has no outport \"output\"",
        ),
        (
            Box::new(|g| {
                g["processes"]["m"] = script_node(
                    "m",
                    json!({"runtime": "ruby", "source": "file", "path": "x.rb"}),
                )
            }),
            "runtime \"ruby\" is not available",
        ),
        (
            Box::new(|g| {
                g["processes"]["m"] = script_node(
                    "m",
                    json!({"runtime": "python", "source": "file", "path": "missing.py"}),
                )
            }),
            "cannot read script",
        ),
        (
            Box::new(|g| g["processes"]["m"] = script_node("m", json!({"runtime": "python"}))),
            "an inline script needs its `code`",
        ),
        (
            Box::new(|g| {
                g["processes"]["m"] = script_node(
                    "m",
                    json!({"runtime": "python", "code": "x", "timeoutSeconds": 0}),
                )
            }),
            "`timeoutSeconds` must be at least 1",
        ),
        (
            Box::new(|g| {
                g["processes"]["m"] = script_node(
                    "m",
                    json!({"runtime": "python", "code": "x", "memoryMb": 16}),
                )
            }),
            "`memoryMb` 16 is outside 64..3072",
        ),
        (
            Box::new(|g| g["caseSensitive"] = json!("yes")),
            "is not a Reflow graph",
        ),
        (
            Box::new(|g| g["processes"]["m"]["metadata"]["isolation"] = json!("container")),
            "node \"m\": `isolation` is \"container\"; it must be \"vm\" or \"process\"",
        ),
        (
            Box::new(|g| g["processes"]["f"]["metadata"] = json!({"isolation": "process"})),
            "node \"f\": `isolation` chooses what runs a script; \"Format\" is a built-in",
        ),
        (
            Box::new(|g| {
                let mut other = g["processes"]["m"].clone();
                other["id"] = json!("m2");
                other["metadata"]["isolation"] = json!("process");
                g["processes"]["m2"] = other;
            }),
            "nodes \"m\" and \"m2\" give component \"Mul\" different isolation",
        ),
    ];
    for (break_it, want) in cases {
        let mut g = good();
        break_it(&mut g);
        match load(&g) {
            Ok(_) => panic!("loaded a graph that should fail with {want:?}"),
            Err(e) => assert!(e.contains(want), "{e:?} does not say {want:?}"),
        }
    }
}
