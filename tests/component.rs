//! Component goldens on real VMs: a snapshot of a clone with its script
//! loaded, made once per script and reused; clones of it answer their
//! first message without running the script's top level again, and each
//! draws its own random numbers (the script's own generators included).

use std::time::{Duration, Instant};

use reflow_integration_tests::calls::{get, load_and_run};
use reflow_integration_tests::{kvm_available, unique, warm_worker_golden, LIMIT};
use reflow_ring::Value;
use reflow_sandbox_core::component::{self, ComponentSettings};
use reflow_sandbox_core::{Language, SandboxVm, Script, VmSpec};

const SHM_MIB: u32 = 40;

fn runtime(language: Language) -> VmSpec {
    let (golden, config) = warm_worker_golden(language, SHM_MIB);
    VmSpec::new(golden, config)
}

fn settings() -> ComponentSettings {
    ComponentSettings {
        load_timeout: LIMIT,
        restore_timeout: LIMIT,
        ..ComponentSettings::default()
    }
}

/// A script unique to this run (so its golden is built here), whose top
/// level counts its runs in a process-wide place and makes a generator
/// with a fixed seed.
fn python_script(nonce: u128) -> Script {
    let source = format!(
        "# run {nonce}\n\
         import builtins, random\n\
         import numpy as np\n\
         builtins.TOP_LEVEL_RUNS = getattr(builtins, 'TOP_LEVEL_RUNS', 0) + 1\n\
         RNG = random.Random(1234)\n\
         @actor(name='Draw', inports=['x'], outports=['runs', 'own', 'random', 'numpy'])\n\
         def draw(context):\n\
         \x20   return {{'runs': builtins.TOP_LEVEL_RUNS, 'own': RNG.random(),\n\
         \x20           'random': random.random(), 'numpy': float(np.random.rand())}}\n"
    );
    Script::inline(Language::Python, "draw.py", &source)
}

/// Loads and runs `script` once on a clone of `spec`; the outputs and the
/// time from the start of the restore to the answer.
fn first_answer(spec: &VmSpec, script: &Script) -> (Value, Duration) {
    let t = Instant::now();
    let mut vm = SandboxVm::restore(spec, LIMIT).expect("a clone");
    let inputs = Value::Map(vec![("x".into(), Value::Int(1))]);
    let done = load_and_run(&mut vm, script, inputs);
    (done, t.elapsed())
}

fn float(v: &Value, key: &str) -> f64 {
    match get(v, key) {
        Some(Value::Float(f)) => *f,
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn python_clones_start_with_the_script_loaded_and_their_own_randomness() {
    if !kvm_available() {
        return;
    }
    let spec = runtime(Language::Python);
    let nonce = unique();
    let script = python_script(nonce);
    // A build of this key that died half-way left its directory behind.
    let leftover = spec.golden.parent().unwrap().join(format!(
        ".component-{}.tmp999999",
        component::key(&spec, &script)
    ));
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("memory.bin"), b"half").unwrap();
    let said = std::sync::Mutex::new(Vec::new());
    let progress = |m: &str| said.lock().unwrap().push(m.to_string());
    let golden = component::ensure(&spec, &script, &settings(), &progress).expect("built");
    assert!(golden.created, "a new script's golden is built");
    assert!(!leftover.exists(), "a dead build's directory was left");
    assert!(
        said.lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("component golden")),
        "the build is reported: {said:?}"
    );
    // Unchanged: found, not rebuilt.
    let again = component::ensure(&spec, &script, &settings(), &|_| {}).unwrap();
    assert_eq!((again.created, &again.key), (false, &golden.key));
    // Changed: another golden.
    let mut changed = script.clone();
    changed.source.push_str("# changed\n");
    let other = component::ensure(&spec, &changed, &settings(), &|_| {}).unwrap();
    assert!(other.created);
    assert_ne!(other.key, golden.key);

    let (a, took_a) = first_answer(&golden.spec, &script);
    let (b, took_b) = first_answer(&golden.spec, &script);
    let (plain, took_plain) = first_answer(&spec, &script);
    eprintln!(
        "restore to first answer: component golden {:.1} / {:.1} ms, runtime golden (load on the clone) {:.1} ms",
        took_a.as_secs_f64() * 1e3,
        took_b.as_secs_f64() * 1e3,
        took_plain.as_secs_f64() * 1e3
    );
    for v in [&a, &b, &plain] {
        assert_eq!(
            get(v, "runs"),
            Some(&Value::Int(1)),
            "top level ran again: {v:?}"
        );
    }
    let fixed = 0.9664535356921388; // random.Random(1234).random()
    for key in ["own", "random", "numpy"] {
        assert_ne!(
            float(&a, key),
            float(&b, key),
            "{key}: two clones drew the same"
        );
    }
    assert_ne!(
        float(&a, "own"),
        fixed,
        "the script's generator was not reseeded"
    );
    assert_ne!(
        float(&b, "own"),
        fixed,
        "the script's generator was not reseeded"
    );
    // A plain load runs the top level in the clone: its generator starts
    // from the script's seed, as the script says.
    assert_eq!(float(&plain, "own"), fixed);

    for g in [golden, again, other] {
        let dir = g.spec.golden.clone();
        drop(g);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn javascript_clones_start_with_the_script_loaded() {
    if !kvm_available() {
        return;
    }
    let spec = runtime(Language::JavaScript);
    let nonce = unique();
    let source = format!(
        "// run {nonce}\n\
         globalThis.topLevelRuns = (globalThis.topLevelRuns || 0) + 1;\n\
         const _ = require('lodash');\n\
         module.exports = {{ metadata: {{ component: 'Draw', inports: ['x'], outports: ['runs', 'lodash', 'math', 'crypto'] }},\n\
         process() {{ return {{ runs: globalThis.topLevelRuns, lodash: _.random(0, 1e9), math: Math.random(),\n\
         crypto: require('crypto').randomBytes(16).toString('hex') }}; }} }};\n"
    );
    let script = Script::inline(Language::JavaScript, "draw.js", &source);
    let golden = component::ensure(&spec, &script, &settings(), &|_| {}).expect("built");
    assert!(golden.created);
    let (a, _) = first_answer(&golden.spec, &script);
    let (b, _) = first_answer(&golden.spec, &script);
    for v in [&a, &b] {
        assert_eq!(
            get(v, "runs"),
            Some(&Value::Int(1)),
            "top level ran again: {v:?}"
        );
    }
    assert_ne!(
        get(&a, "lodash"),
        get(&b, "lodash"),
        "lodash repeated across clones"
    );
    assert_ne!(
        get(&a, "math"),
        get(&b, "math"),
        "Math.random repeated across clones"
    );
    let dir = golden.spec.golden.clone();
    drop(golden);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_script_that_does_not_load_gets_no_golden_and_leaves_nothing() {
    if !kvm_available() {
        return;
    }
    let spec = runtime(Language::Python);
    let script = Script::inline(Language::Python, "broken.py", "def broken(:\n");
    let err = component::ensure(&spec, &script, &settings(), &|_| {}).unwrap_err();
    assert!(matches!(err, component::ComponentError::Load(_)), "{err}");
    let snapshots = spec.golden.parent().unwrap();
    let key = component::key(&spec, &script);
    assert!(!snapshots.join(format!("component-{key}")).exists());
    let leftovers: Vec<_> = std::fs::read_dir(snapshots)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.contains(&key) && n.contains(".tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
