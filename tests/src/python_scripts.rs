//! The Python actor suite's scripts and checks (see [`crate::actor_suite`]),
//! shared by the VM suite (tests/actors.rs) and the process suite
//! (tests/process.rs).

use std::time::Instant;

use reflow_ring::Value;
use reflow_sandbox_core::{ActorError, Language};

use crate::actor_suite::{ActorLang, Worker};
use crate::calls::{get, map};

pub const MULTIPLIER: &str = r#"
@actor(name="Multiplier", inports=["input"], outports=["output"], tags=["math"])
async def process(context):
    """Multiplies its input by the configured factor."""
    x = context.get_input("input", 0)
    factor = context.config.get("factor", 2)
    n = await context.state.increment("calls")
    await context.send_output("output", x * factor)
    return {"calls": n}
"#;

/// The dict-form decorator, synchronous.
pub const SPLITTER: &str = r#"
@actor({"component": "Splitter", "inports": ["items"], "outports": ["even", "odd"]})
def split(context):
    for x in context.get_input("items"):
        context.send_output_sync("even" if x % 2 == 0 else "odd", x)
"#;

pub const IDENTITY: &str = r#"
@actor(name="Identity", inports=["input"], outports=["output"])
def identity(context):
    data = context.get_input("input")
    assert isinstance(data, memoryview), "bytes arrive in place"
    context.send_output_sync("output", data)
"#;

pub const NUMPY: &str = r#"
import numpy as np

@actor(name="Scale", inports=["input"], outports=["output"])
def scale(context):
    a = np.frombuffer(context.get_input("input"), dtype="<f4")
    assert not a.flags.owndata, "the input is viewed in place"
    context.send_output_sync("output", a * 2)
    context.send_output_sync("output", a[::2])
    return {"sum": float(a.sum())}
"#;

pub const RAISING: &str =
    "@actor(name=\"Boom\")\ndef boom(context):\n    raise ValueError(\"kaput\")\n";

pub const BROKEN: &str = "@actor(name=\"X\")\ndef f(context:\n";

pub const RANDOM: &str = r#"
import random
import numpy as np

@actor(name="Dice", outports=["roll"])
def dice(context):
    return {"roll": random.getrandbits(62), "numpy": float(np.random.rand())}
"#;

pub const LEDGER: &str = r#"
@actor(name="Ledger", inports=["item"], outports=["log"])
async def ledger(context):
    s = context.state
    item = context.get_input("item")
    await s.set("last", item)
    n = await s.push("items", item)
    total = await s.increment("total", item["qty"])
    first = await s.pop("items") if n > 2 else None
    kept = await s.expire("last", 60)
    if item["qty"] == 0:
        await s.increment("last")
    return {"last": await s.get("last"), "n": n, "total": total, "first": first, "kept": kept}
"#;

pub const PYTHON: ActorLang = ActorLang {
    language: Language::Python,
    opening,
    splitter: SPLITTER,
    identity: IDENTITY,
    packages: numpy,
    raising: RAISING,
    check_raised,
    broken: BROKEN,
    check_broken,
    random: RANDOM,
    check_draws,
    ledger: LEDGER,
};

/// Load, then a stateful counter with config across three messages.
fn opening(w: &mut Worker<'_>) {
    let description = "Multiplies its input by the configured factor.";
    w.load_first("mul", MULTIPLIER, "Multiplier", description);
    w.multiply([Some(3); 3]);
    assert_eq!(w.stored("mul", "calls"), Ok(Value::Int(3)));
}

fn f32_bytes(values: impl Iterator<Item = f32>) -> Value {
    Value::Bytes(values.flat_map(f32::to_le_bytes).collect())
}

/// numpy (baked into the image from requirements.txt): input bytes viewed
/// in place, arrays sent through the buffer protocol, a strided one too.
fn numpy(w: &mut Worker<'_>) {
    let t = Instant::now();
    w.load("np", NUMPY).unwrap();
    eprintln!(
        "numpy actor loaded (imports numpy) in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let floats = || (0..1024u16).map(|i| f32::from(i) * 0.5);
    let input = map(vec![("input", f32_bytes(floats()))]);
    let (outputs, done) = w.invoke("np", input, map(vec![])).unwrap();
    assert_eq!(
        outputs,
        vec![
            ("output".into(), f32_bytes(floats().map(|x| x * 2.0))),
            ("output".into(), f32_bytes(floats().step_by(2))),
        ]
    );
    assert_eq!(done, map(vec![("sum", Value::Float(261_888.0))]));
}

fn check_raised(e: &ActorError) {
    assert!(e.message.contains("ValueError: kaput"), "{e}");
    assert!(e.traceback.contains("Traceback"), "{e:?}");
    assert!(e.traceback.contains("boom.actor.py"), "{e:?}");
}

fn check_broken(e: &ActorError) {
    assert!(e.message.contains("SyntaxError"), "{e}");
}

/// Neither Python's `random` state nor numpy's global generator (seeded
/// when the golden's preload imported numpy) is shared.
fn check_draws(draws: &[Value]) {
    for key in ["roll", "numpy"] {
        let (a, b) = (get(&draws[0], key), get(&draws[1], key));
        assert!(
            matches!(a, Some(Value::Int(_) | Value::Float(_))),
            "{draws:?}"
        );
        assert_ne!(a, b, "two clones drew the same {key}");
    }
}
