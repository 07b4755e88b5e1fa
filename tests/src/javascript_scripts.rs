//! The JavaScript actor suite's scripts and checks (see
//! [`crate::actor_suite`]), shared by the VM suite (tests/javascript.rs)
//! and the process suite (tests/process.rs).

use reflow_ring::Value;
use reflow_sandbox_core::{ActorError, Language};

use crate::actor_suite::{ActorLang, Worker};
use crate::calls::{get, map, text};
use crate::LIMIT;

/// The documented example, as users write it.
pub const GREETER: &str = r#"
const metadata = { component: "Greeter", description: "Greets", inports: ["name"], outports: ["greeting"] };
async function process(context) {
  const name = context.getInput("name", "world");
  await context.state.set("last", name);
  await context.sendOutput("greeting", `hello ${name}`);
}
module.exports = { metadata, process };
"#;

pub const MULTIPLIER: &str = r#"
module.exports.metadata = {
  name: "Multiplier", description: "Multiplies its input by the configured factor.",
  inports: ["input"], outports: ["output"], tags: ["math"], config: { factor: 2 },
};
module.exports.process = async (context) => {
  const x = context.getInput("input", 0);
  const n = await context.state.increment("calls");
  await context.sendOutput("output", x * context.getConfig().factor);
  return { calls: n };
};
"#;

/// The synchronous, top-level forms.
pub const SPLITTER: &str = r#"
const __actor_metadata__ = { component: "Splitter", inports: ["items"], outports: ["even", "odd"] };
function process(context) {
  for (const x of context.getInput("items")) context.sendOutputSync(x % 2 === 0 ? "even" : "odd", x);
}
"#;

/// Bytes arrive as Buffers.
pub const IDENTITY: &str = r#"
exports.metadata = { name: "Identity", inports: ["input"], outports: ["output"] };
exports.process = (context) => {
  const data = context.getInput("input");
  if (!Buffer.isBuffer(data)) throw new TypeError("bytes arrive as a Buffer");
  context.sendOutputSync("output", data);
};
"#;

/// An npm package baked into the image (node/npm-packages.txt).
pub const LODASH: &str = r#"
const _ = require("lodash");
const metadata = { name: "Chunks", inports: ["items"], outports: ["chunks"] };
module.exports = { metadata, process: (c) => ({ chunks: _.chunk(c.getInput("items"), 2) }) };
"#;

/// An ES module (`.mjs`): `import` of an image package and a builtin,
/// `export const metadata`, a default-exported process, module state
/// kept between messages, and state through the context.
pub const MODULE: &str = r#"
import _ from "lodash";
import { createHash } from "node:crypto";

let calls = 0;
export const metadata = { component: "Digest", inports: ["items"], outports: ["chunks"] };
export default async function process(context) {
  calls += 1;
  const items = context.getInput("items");
  return {
    chunks: _.chunk(items, 2),
    sha: createHash("sha256").update(JSON.stringify(items)).digest("hex").slice(0, 8),
    calls,
    stored: await context.state.increment("n"),
  };
}
"#;

/// A `.js` file that is a module by its syntax alone.
pub const MODULE_BY_SYNTAX: &str = r#"
const meta = { name: "Loud", inports: ["text"], outports: ["loud"] };
export function process(context) { return { loud: `${context.getInput("text")}!` }; }
export { meta as metadata };
"#;

pub const THROWING: &str = "const metadata = { name: \"Boom\" };\nasync function process(context) {\n  throw new RangeError(\"kaput\");\n}\n";

pub const BROKEN: &str = "const metadata = { name: \"X\" };\nfunction process(context {\n}\n";

pub const RANDOM: &str = r#"
const crypto = require("crypto");
const _ = require("lodash");
const metadata = { name: "Dice", outports: ["roll"] };
function process(context) {
  return {
    math: Math.random(),
    crypto: crypto.randomBytes(16).toString("hex"),
    uuid: crypto.randomUUID(),
    lodash: _.random(0, 2 ** 52),
    shuffle: _.shuffle([...Array(20).keys()]).join(","),
  };
}
module.exports = { metadata, process };
"#;

pub const LEDGER: &str = r#"
const metadata = { name: "Ledger", inports: ["item"], outports: ["log"] };
async function process(context) {
  const s = context.state;
  const item = context.getInput("item");
  await s.set("last", item);
  const n = await s.push("items", item);
  const total = await s.increment("total", item.qty);
  const first = n > 2 ? await s.pop("items") : null;
  const kept = await s.expire("last", 60);
  if (item.qty === 0) await s.increment("last");
  return { last: await s.get("last"), n, total, first, kept };
}
module.exports = { metadata, process };
"#;

pub const JAVASCRIPT: ActorLang = ActorLang {
    language: Language::JavaScript,
    opening,
    splitter: SPLITTER,
    identity: IDENTITY,
    packages,
    raising: THROWING,
    check_raised,
    broken: BROKEN,
    check_broken,
    random: RANDOM,
    check_draws,
    ledger: LEDGER,
};

/// The documented greeter: default input, state, an awaited output; then a
/// stateful counter with config (a default, then overridden).
fn opening(w: &mut Worker<'_>) {
    w.load_first("greet", GREETER, "Greeter", "Greets");
    for (inputs, expected) in [
        (map(vec![("name", Value::Str("ada".into()))]), "hello ada"),
        (map(vec![]), "hello world"),
    ] {
        let got = w.invoke("greet", inputs, map(vec![])).unwrap();
        assert_eq!(
            got,
            (
                vec![("greeting".into(), Value::Str(expected.into()))],
                map(vec![])
            )
        );
    }
    assert_eq!(w.stored("greet", "last"), Ok(Value::Str("world".into())));
    w.load("mul", MULTIPLIER).unwrap();
    w.multiply([None, Some(3), Some(3)]);
}

/// The image's npm package, from CommonJS and from ES modules.
fn packages(w: &mut Worker<'_>) {
    w.load("chunks", LODASH).unwrap();
    let items = Value::List((1..=3).map(Value::Int).collect());
    let (_, done) = w
        .invoke("chunks", map(vec![("items", items.clone())]), map(vec![]))
        .unwrap();
    let chunks = Value::List(vec![
        Value::List(vec![Value::Int(1), Value::Int(2)]),
        Value::List(vec![Value::Int(3)]),
    ]);
    assert_eq!(done, map(vec![("chunks", chunks.clone())]));

    let loaded = w
        .client
        .load("digest", "digest.actor.mjs", MODULE, LIMIT)
        .unwrap();
    assert_eq!(text(get(&loaded.metadata, "component")), "Digest");
    for calls in 1..=2 {
        let (_, done) = w
            .invoke("digest", map(vec![("items", items.clone())]), map(vec![]))
            .unwrap();
        assert_eq!(get(&done, "chunks"), Some(&chunks));
        assert_eq!(get(&done, "calls"), Some(&Value::Int(calls)));
        assert_eq!(get(&done, "stored"), Some(&Value::Int(calls)));
        assert_eq!(get(&done, "sha"), Some(&Value::Str("a615eeae".into())));
    }
    w.load("loud", MODULE_BY_SYNTAX).unwrap();
    let (_, done) = w
        .invoke(
            "loud",
            map(vec![("text", Value::Str("hi".into()))]),
            map(vec![]),
        )
        .unwrap();
    assert_eq!(done, map(vec![("loud", Value::Str("hi!".into()))]));
    // A module's syntax error names the script, never where the worker
    // wrote it.
    let err = w
        .client
        .load(
            "bad",
            "bad.actor.mjs",
            "export const metadata = {;\n",
            LIMIT,
        )
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("SyntaxError") && message.contains("bad.actor.mjs"),
        "{message}"
    );
    assert!(
        !message.contains("reflow-esm") && !message.contains("file://"),
        "{message}"
    );
}

/// Thrown errors come with stacks.
fn check_raised(e: &ActorError) {
    assert_eq!(e.message, "RangeError: kaput");
    assert!(e.traceback.contains("boom.actor.js:3"), "{e:?}");
    assert!(!e.traceback.contains("/opt/reflow"), "{e:?}");
}

fn check_broken(e: &ActorError) {
    assert!(e.message.starts_with("SyntaxError"), "{e}");
    assert!(e.message.contains("broken.actor.js, line 2"), "{e}");
}

/// Neither `Math.random` (also as lodash captured it when the golden's
/// preload loaded it) nor OpenSSL's stream is shared.
fn check_draws(rolls: &[Value]) {
    for key in ["math", "crypto", "uuid", "lodash", "shuffle"] {
        let (a, b) = (get(&rolls[0], key), get(&rolls[1], key));
        assert!(a.is_some(), "{rolls:?}");
        assert_ne!(a, b, "two clones drew the same {key}");
    }
}
