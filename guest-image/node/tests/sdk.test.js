'use strict';
const assert = require('assert');
const test = require('node:test');

const { ActorFailure, invoke, loadScript } = require('../sdk/reflow/invoke');
const { freshMathRandom, installMathRandom, reseedMathRandom, warmUp } = require('../sdk/reflow/worker');
const { shm } = require('./helpers');

class FakeTransport {
  constructor() {
    this.outputs = [];
    this.state = new Map();
  }

  sendOutput(port, value) {
    this.outputs.push([port, value]);
  }

  stateCall(op, key, args) {
    if (op === 'increment') this.state.set(key, (this.state.get(key) ?? 0) + args[0]);
    else if (op === 'set') this.state.set(key, args[0]);
    return this.state.get(key) ?? null;
  }
}

const GREETER = `
const metadata = { component: "Greeter", description: "Greets", inports: ["name"], outports: ["greeting"] };
async function process(context) {
  const name = context.getInput("name", "world");
  await context.state.set("last", name);
  await context.sendOutput("greeting", \`hello \${name}\`);
}
module.exports = { metadata, process };
`;

test('the documented greeter loads and runs', async () => {
  const actor = loadScript(GREETER, 'greeter.actor.js');
  assert.deepStrictEqual(actor.metadata, {
    component: 'Greeter', description: 'Greets',
    inports: [{ name: 'name', type: 'any', required: true }],
    outports: [{ name: 'greeting', type: 'any' }], tags: [], config: {},
  });
  const t = new FakeTransport();
  assert.deepStrictEqual(await invoke(actor, { name: 'ada' }, {}, 'n', t), {});
  assert.deepStrictEqual(t.outputs, [['greeting', 'hello ada']]);
  assert.strictEqual(t.state.get('last'), 'ada');
  await invoke(actor, {}, {}, 'n', t);
  assert.deepStrictEqual(t.outputs[1], ['greeting', 'hello world']);
});

test('every form of metadata and process the discovery reads', async () => {
  const forms = [
    'module.exports.metadata = { name: "A", outports: ["o"] };\nmodule.exports.process = (c) => ({ o: 1 });',
    'exports.metadata = { name: "A", outports: ["o"] };\nexports.process = function (c) { return { o: 1 }; };',
    'const __actor_metadata__ = { component: "A", outports: ["o"] };\nfunction process(c) { return { o: 1 }; }',
    'const metadata = { name: "A", outports: ["o"] };\nfunction process(c) { return new Map([["o", 1]]); } // last line comment',
    'module.exports = { metadata: { name: "A", outports: ["o"] }, process: async (c) => ({ o: 1 }) };',
  ];
  for (const source of forms) {
    const actor = loadScript(source, 'form.js');
    assert.strictEqual(actor.metadata.component, 'A', source);
    assert.deepStrictEqual(await invoke(actor, {}, {}, 'n', new FakeTransport()), { o: 1 }, source);
  }
});

test('config defaults merge, sync twins work, Buffers arrive and outports are checked', async () => {
  const actor = loadScript(`
const metadata = { name: "C", inports: ["data"], outports: ["out", "size"], config: { factor: 2, label: "x" } };
function process(context) {
  const data = context.getInput("data");
  context.sendOutputSync("size", data.length);
  context.send("out", context.getConfig().factor * context.state.incrementSync("n"));
  return { out: context.config.label };
}
module.exports = { metadata, process };`, 'c.js');
  const t = new FakeTransport();
  const result = await invoke(actor, { data: Buffer.from('abc') }, { label: 'y' }, 'n', t);
  assert.deepStrictEqual(result, { out: 'y' });
  assert.deepStrictEqual(t.outputs, [['size', 3], ['out', 2]]);
  const bad = loadScript('module.exports = { metadata: { name: "B", outports: ["o"] }, process: (c) => c.sendOutputSync("nope", 1) };', 'b.js');
  await assert.rejects(invoke(bad, {}, {}, 'n', t), (f) => f instanceof ActorFailure && f.kind === 'run' && /unknown outport "nope"/.test(f.message));
  const state = loadScript('module.exports = { metadata: { name: "S" }, process: async (c) => { await c.state.set("k", { when: new Date() }); } };', 's.js');
  await assert.rejects(invoke(state, {}, {}, 'n', t), /must be JSON/);
});

test('load and run failures are reported with where they happened', async () => {
  const load = (source) => {
    try {
      loadScript(source, 'bad.actor.js');
    } catch (f) {
      assert.ok(f instanceof ActorFailure);
      assert.strictEqual(f.kind, 'load');
      return f;
    }
    assert.fail('loaded');
  };
  assert.match(load('const metadata = {;\n').message, /^SyntaxError: .*\(bad\.actor\.js, line 1\)$/);
  assert.match(load('\n\nthrow new TypeError("top")').message, /^TypeError: top$/);
  assert.match(load('\n\nthrow new TypeError("top")').trace, /bad\.actor\.js:3/);
  assert.match(load('function process(c) {}').message, /no metadata/);
  assert.match(load('const metadata = { name: "A" };').message, /no process/);
  assert.match(load('const metadata = { name: "A", colour: 1 }; function process() {}').message, /unknown keys \["colour"\]/);
  assert.match(load('const metadata = { name: "A", inports: ["x", "x"] }; function process() {}').message, /inport "x" listed twice/);
  assert.match(load('process.exitCode = 0; throw "str"').message, /^thrown: 'str'$/);

  const run = loadScript(`const metadata = { name: "R" };
async function process(context) {
  await null;
  throw new RangeError("bad " + context.getInput("x"));
}`, 'run.actor.js');
  const failure = await invoke(run, { x: 1 }, {}, 'n', new FakeTransport()).catch((f) => f);
  assert.strictEqual(failure.kind, 'run');
  assert.strictEqual(failure.message, 'RangeError: bad 1');
  assert.match(failure.trace, /run\.actor\.js:4/);
  assert.doesNotMatch(failure.trace, /sdk[/\\]reflow/, 'the SDK\'s own frames are left out');
  const arr = loadScript('module.exports = { metadata: { name: "A" }, process: () => [1] };', 'a.js');
  await assert.rejects(invoke(arr, {}, {}, 'n', new FakeTransport()), /returned an array/);
});

test('require finds Node\'s modules; Math.random gets a fresh source', async () => {
  const actor = loadScript('const path = require("path"); module.exports = { metadata: { name: "P", outports: ["o"] }, process: () => ({ o: path.join("a", "b") }) };', 'p.js');
  assert.deepStrictEqual(await invoke(actor, {}, {}, 'n', new FakeTransport()), { o: 'a/b' });
  const a = freshMathRandom();
  const b = freshMathRandom();
  const xs = Array.from({ length: 2000 }, a);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  assert.notDeepStrictEqual(xs.slice(0, 4), Array.from({ length: 4 }, b));
  assert.ok(Math.abs(xs.reduce((s, x) => s + x, 0) / xs.length - 0.5) < 0.05);
});

test('a Math.random captured before LOAD draws from the fresh source after it', () => {
  const crypto = require('crypto');
  const [original, fill] = [Math.random, crypto.randomFillSync];
  try {
    installMathRandom();
    const captured = Math.random; // as lodash keeps it when it loads
    crypto.randomFillSync = (buf) => buf.fill(0); // the fresh source's bytes, made visible
    reseedMathRandom();
    assert.strictEqual(Math.random, captured);
    assert.deepStrictEqual(Array.from({ length: 3 }, captured), [0, 0, 0]);
  } finally {
    [Math.random, crypto.randomFillSync] = [original, fill];
  }
});

test('the warm-up serves a stateful actor through a worker on an in-memory ring', async () => {
  // OUTPUT, STATE, OUTPUT, OUTPUT, DONE: the state round trip is answered.
  assert.deepStrictEqual(await warmUp(shm().crc32, 7), [6, 4, 4, 5]);
});

test('the warm-up reports its progress; a failed preload throws and names the module', async () => {
  const fs = require('fs');
  const os = require('os');
  const path = require('path');
  const { Progress } = require('../sdk/reflow/progress');
  const { preload, PreloadError } = require('../sdk/reflow/worker');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reflow-progress-'));
  let now = 0;
  const p = new Progress(path.join(dir, 'run', 'progress'), () => now);
  const read = () => JSON.parse(fs.readFileSync(p.file, 'utf8'));
  p.step('warm-up');
  now = 600;
  await warmUp(shm().crc32, 100, p);
  assert.deepStrictEqual(read().step, 'calibrate spin');
  assert.deepStrictEqual(read().steps.map((s) => s.name), ['warm-up']);
  assert.strictEqual(read().steps[0].secs, 0.6);
  for (const k of ['user', 'sys', 'minflt', 'majflt']) assert.ok(read().steps[0][k] >= 0, k);
  now = 700;
  p.detail('ignored'); // within the throttle
  assert.strictEqual(read().detail, '');
  assert.throws(() => preload(['path', 'no-such-module-xyz'], p), (e) => e instanceof PreloadError
    && e.module === 'no-such-module-xyz' && /cannot preload no-such-module-xyz: Error: Cannot find module/.test(e.message));
  p.failed('boom');
  assert.deepStrictEqual([read().state, read().error, read().detail], ['failed', 'boom', 'no-such-module-xyz']);
  p.ready();
  assert.strictEqual(read().state, 'ready');
  assert.ok(!fs.existsSync(`${p.file}.tmp`));
  fs.rmSync(dir, { recursive: true });
});

test('the addon sets glibc malloc to keep freed memory for the clones', () => {
  // Run in a child: the setting is process-wide.
  const { execFileSync } = require('child_process');
  const addon = require.resolve('./helpers');
  const out = execFileSync(process.execPath, ['-e', `
    const { shm } = require(${JSON.stringify(addon)});
    process.stdout.write(String(shm().keepMemory()));
  `]).toString();
  assert.strictEqual(out, 'true');
});
