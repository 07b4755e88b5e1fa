'use strict';
// Loading a JavaScript actor script and calling it, with errors as data.

const path = require('path');
const util = require('util');
const vm = require('vm');
const { createRequire } = require('module');

const { ActorError, findActor } = require('./actor');
const { ActorContext } = require('./context');
const esm = require('./esm');

// Where actors' `require()` looks for packages: the image's npm packages
// are under /usr/local/lib/node_modules.
const MODULES_HOME = process.env.REFLOW_NODE_MODULES_HOME || '/usr/local/lib';
const SDK_DIR = __dirname;
const PARAMS = ['exports', 'require', 'module', '__filename', '__dirname'];
// Appended to every script (after a newline, so a last-line comment cannot
// swallow it): hands the top-level bindings to the loader, for scripts that
// define `metadata` and `process` without exporting them.
const EPILOGUE =
  '\n;return { metadata: typeof metadata === "undefined" ? undefined : metadata, ' +
  '__actor_metadata__: typeof __actor_metadata__ === "undefined" ? undefined : __actor_metadata__, ' +
  'process: typeof process === "function" ? process : undefined };';

/** An actor failed; `kind` is "load" or "run", `trace` the stack. */
class ActorFailure extends Error {
  constructor(kind, message, trace = '') {
    super(message);
    this.name = 'ActorFailure';
    this.kind = kind;
    this.trace = trace;
  }
}

/** "Name: message" for an Error, or what was thrown otherwise. */
function describe(e) {
  if (e instanceof Error || (e && typeof e === 'object' && typeof e.message === 'string' && e.name)) {
    return `${e.name}: ${e.message}`;
  }
  return `thrown: ${util.inspect(e, { depth: 2, breakLength: Infinity })}`;
}

/** The error's stack without the SDK's and Node's own frames. */
function stackOf(e) {
  if (!(e && typeof e.stack === 'string')) return '';
  return e.stack
    .split('\n')
    .filter((line) => !(line.includes(SDK_DIR) || line.includes('node:internal') || line.includes('(node:')))
    .join('\n');
}

/** Where a syntax error is, from V8's "file:line" first stack line. */
function syntaxPlace(e, filename) {
  const first = typeof e.stack === 'string' ? e.stack.split('\n', 1)[0] : '';
  const m = first.match(/:(\d+)$/);
  return m && first.startsWith(filename) ? ` (${filename}, line ${m[1]})` : '';
}

/** Runs a CommonJS script's top level; returns its actor {metadata, process}. */
function loadScript(source, filename = '<actor>') {
  let body;
  try {
    body = vm.compileFunction(source + EPILOGUE, PARAMS, { filename });
  } catch (e) {
    const failure = new ActorFailure('load', describe(e) + (e instanceof SyntaxError ? syntaxPlace(e, filename) : ''), stackOf(e));
    failure.moduleSyntax = esm.isModuleSyntax(e);
    throw failure;
  }
  const module = { exports: {}, filename, id: filename, loaded: false };
  const req = createRequire(path.join(MODULES_HOME, 'reflow-actor.js'));
  try {
    const locals = body.call(module.exports, module.exports, req, module, filename, MODULES_HOME);
    module.loaded = true;
    return findActor(module.exports, locals || {});
  } catch (e) {
    if (e instanceof ActorError) throw new ActorFailure('load', e.message);
    // The script is untrusted: anything its top level throws is reported.
    throw new ActorFailure('load', describe(e), stackOf(e));
  }
}

/**
 * Loads an actor script; resolves to its actor {metadata, process}. A
 * `.mjs` file is an ES module, a `.cjs` file CommonJS; any other loads as
 * CommonJS unless it has module syntax (`import`/`export` statements,
 * top-level `await`), as Node's own detection does.
 */
async function load(source, filename = '<actor>') {
  const kind = esm.declaredKind(filename);
  if (kind !== 'module') {
    try {
      return loadScript(source, filename);
    } catch (f) {
      if (kind === 'commonjs' || !(f instanceof ActorFailure && f.moduleSyntax)) throw f;
    }
  }
  return loadModule(source, filename);
}

/** Imports an ES module actor; resolves to its actor {metadata, process}. */
async function loadModule(source, filename) {
  const file = esm.moduleFile(source, filename, esm.ESM_DIR, MODULES_HOME);
  let ns;
  try {
    ns = await esm.importFile(file);
  } catch (e) {
    // The script is untrusted: whatever its import or top level throws is
    // reported, under the script's name rather than the file's.
    const message = esm.renamed(describe(e), file, filename);
    // Node 18 puts the place of a module's syntax error first in its stack;
    // later ones do not say it (the host's discovery does, with the line).
    const place = e instanceof SyntaxError
      ? syntaxPlace({ stack: esm.renamed(e.stack, file, filename) }, filename) || ` (${filename})`
      : '';
    throw new ActorFailure('load', message + place, esm.renamed(stackOf(e), file, filename));
  }
  try {
    return findActor(esm.actorExports(ns), {});
  } catch (e) {
    if (e instanceof ActorError) throw new ActorFailure('load', e.message);
    throw e;
  }
}

function isPlainObject(v) {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Calls the actor with a context; resolves to the object of returned
 * outputs (streamed ones went through the transport).
 */
async function invoke(actor, payload, config, actorId, transport) {
  const context = new ActorContext(
    payload,
    { ...actor.metadata.config, ...config },
    actorId,
    transport,
    actor.metadata.outports.map((p) => p.name),
  );
  let result;
  try {
    result = actor.process(context);
    if (result !== null && typeof result === 'object' && typeof result.then === 'function') result = await result;
  } catch (e) {
    throw new ActorFailure('run', describe(e), stackOf(e));
  }
  if (result === undefined || result === null) return {};
  if (result instanceof Map) result = Object.fromEntries(result);
  if (!isPlainObject(result)) {
    const kind = Array.isArray(result) ? 'an array' : typeof result === 'object' ? `a ${result.constructor?.name ?? 'object'}` : `a ${typeof result}`;
    throw new ActorFailure('run', `the actor returned ${kind}; return an object of outputs or nothing`);
  }
  return result;
}

module.exports = { load, loadScript, invoke, ActorFailure };
