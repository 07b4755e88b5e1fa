'use strict';
// ES module actors: loaded from a private directory whose node_modules
// links to the packages home, as in the image (both temporary here).
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const test = require('node:test');

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'reflow-modules-'));
process.env.REFLOW_NODE_MODULES_HOME = home;
process.env.REFLOW_ESM_DIR = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'reflow-esm-')), 'esm');
// A package in the packages home, as npm installs them in the image.
const pkg = path.join(home, 'node_modules', 'shouty');
fs.mkdirSync(pkg, { recursive: true });
fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: 'shouty', main: 'index.js' }));
fs.writeFileSync(path.join(pkg, 'index.js'), 'module.exports = (s) => s.toUpperCase();');

const { ActorFailure, invoke, load } = require('../sdk/reflow/invoke');

const noTransport = { sendOutput() {}, stateCall() { return null; } };

async function run(actor, inputs) {
  return invoke(actor, inputs, {}, 'n', noTransport);
}

test('an .mjs actor: export const metadata and a default process, importing a builtin and a package', async () => {
  const actor = await load(`
import { format } from 'node:util';
import shout from 'shouty';
export const metadata = { component: "Clock", inports: ["tick"], outports: ["stamp"] };
export default async function process(context) {
  return { stamp: shout(format("tick %s", context.getInput("tick"))) };
}`, 'js/clock.actor.mjs');
  assert.strictEqual(actor.metadata.component, 'Clock');
  assert.deepStrictEqual(await run(actor, { tick: 3 }), { stamp: 'TICK 3' });
});

test('a .js actor with export statements loads as a module; CommonJS still loads as before', async () => {
  const esmActor = await load(`
const meta = { component: "Shout", inports: ["text"], outports: ["loud"] };
export function process(context) { return { loud: context.getInput("text") + "!" }; }
export { meta as metadata };`, 'shout.actor.js');
  assert.deepStrictEqual(await run(esmActor, { text: 'hi' }), { loud: 'hi!' });
  const cjs = await load('module.exports = { metadata: { name: "C", outports: ["o"] }, process: () => ({ o: typeof require }) };', 'c.actor.js');
  assert.deepStrictEqual(await run(cjs, {}), { o: 'function' });
});

test('export default { metadata, process } keeps module state between messages', async () => {
  const actor = await load(`
let total = 0;
export default {
  metadata: { component: "Tally", inports: ["n"], outports: ["total"] },
  process(context) { total += Number(context.getInput("n")); return { total }; },
};`, 'tally.actor.mjs');
  assert.deepStrictEqual(await run(actor, { n: 2 }), { total: 2 });
  assert.deepStrictEqual(await run(actor, { n: 3 }), { total: 5 });
});

test('top-level await is module syntax', async () => {
  const actor = await load(`
const ready = await Promise.resolve(7);
export const metadata = { name: "Await", outports: ["o"] };
export const process = () => ({ o: ready });`, 'await.actor.js');
  assert.deepStrictEqual(await run(actor, {}), { o: 7 });
});

async function failure(source, name) {
  try {
    await load(source, name);
  } catch (f) {
    assert.ok(f instanceof ActorFailure, `${f}`);
    assert.strictEqual(f.kind, 'load');
    return f;
  }
  assert.fail('the script loaded');
}

test('load failures name the script, never the file it was written to', async () => {
  const syntax = await failure('export const metadata = {\n  name: "S",\n  outports: [,\n};', 'bad.actor.mjs');
  assert.match(syntax.message, /^SyntaxError: .*\(bad\.actor\.mjs(, line \d+)?\)$/);
  const thrown = await failure('export const metadata = { name: "T", outports: ["o"] };\nthrow new Error("no config");\nexport const process = () => ({});', 'throws.actor.mjs');
  assert.strictEqual(thrown.message, 'Error: no config');
  assert.match(thrown.trace, /throws\.actor\.mjs:2/);
  assert.doesNotMatch(thrown.trace + thrown.message, /reflow-esm|file:\/\//);
  const missing = await failure('import x from "no-such-package";\nexport const metadata = { name: "M", outports: ["o"] };\nexport default () => ({});', 'missing.actor.mjs');
  assert.match(missing.message, /no-such-package/);
  assert.doesNotMatch(missing.message, /reflow-esm/);
  const noProcess = await failure('export const metadata = { name: "N", outports: ["o"] };', 'none.actor.mjs');
  assert.match(noProcess.message, /no process\(context\) function/);
});

test('a .cjs script is CommonJS: module syntax in it is a syntax error, not a module', async () => {
  const f = await failure('export const metadata = { name: "X", outports: ["o"] };\nexport default () => ({});', 'x.actor.cjs');
  assert.match(f.message, /^SyntaxError: Unexpected token 'export'/);
});
