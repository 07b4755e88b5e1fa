'use strict';
// A JavaScript actor's metadata and its `process` function, found in what
// the script defines. The forms users write (the host's discovery reads the
// same ones from the syntax tree):
//
//   const metadata = { component: "Greeter", inports: ["name"], outports: ["greeting"] };
//   async function process(context) { ... }
//   module.exports = { metadata, process };
//
// or `module.exports.metadata = ...` / `exports.metadata = ...`, with
// `__actor_metadata__` in place of `metadata` in any of them, and the
// top-level `metadata` and `process` without exports. Ports are names or
// objects `{name, type, required, description}`; inports are required and
// ports untyped (`any`) by default, as Reflow has them. Mistakes (unknown
// keys, duplicate ports, wrong types) throw ActorError naming the key.

const KEYS = ['name', 'component', 'description', 'inports', 'outports', 'tags', 'config'];
const PORT_KEYS = ['name', 'type', 'required', 'description'];

/** A script's actor definition is wrong. */
class ActorError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ActorError';
  }
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function ports(value, key, required) {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new ActorError(`metadata: "${key}" must be a list of port names`);
  const singular = key.slice(0, -1);
  const out = [];
  const seen = new Set();
  for (const item of value) {
    let port;
    if (typeof item === 'string') {
      port = { name: item, type: 'any' };
    } else if (isObject(item) && typeof item.name === 'string') {
      const unknown = Object.keys(item).filter((k) => !PORT_KEYS.includes(k));
      if (unknown.length) {
        throw new ActorError(`metadata: ${key} port "${item.name}" has unknown keys ${JSON.stringify(unknown.sort())}`);
      }
      port = { name: item.name, type: String(item.type ?? 'any') };
      if ('description' in item) port.description = String(item.description);
      if ('required' in item) port.required = Boolean(item.required);
    } else {
      throw new ActorError(`metadata: every entry of "${key}" must be a name or {name: ...}, not ${JSON.stringify(item)}`);
    }
    if (!port.name) throw new ActorError(`metadata: an entry of "${key}" has an empty name`);
    if (seen.has(port.name)) throw new ActorError(`metadata: ${singular} "${port.name}" listed twice`);
    seen.add(port.name);
    if (required && !('required' in port)) port.required = true;
    out.push(port);
  }
  return out;
}

/** Checks a metadata object; returns the Reflow component metadata. */
function checkMetadata(fields) {
  if (!isObject(fields)) throw new ActorError('metadata must be an object');
  const unknown = Object.keys(fields).filter((k) => !KEYS.includes(k));
  if (unknown.length) {
    throw new ActorError(`metadata: unknown keys ${JSON.stringify(unknown.sort())} (known: ${JSON.stringify([...KEYS].sort())})`);
  }
  if ('name' in fields && 'component' in fields && fields.name !== fields.component) {
    throw new ActorError('metadata: give "name" or "component", not two different ones');
  }
  const component = fields.component ?? fields.name;
  if (typeof component !== 'string' || !component) {
    throw new ActorError('metadata: "name"/"component" must be a non-empty string');
  }
  const description = fields.description ?? '';
  if (typeof description !== 'string') throw new ActorError('metadata: "description" must be a string');
  const tags = fields.tags ?? [];
  if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) {
    throw new ActorError('metadata: "tags" must be a list of strings');
  }
  const config = fields.config ?? {};
  if (!isObject(config)) throw new ActorError('metadata: "config" must be an object of defaults');
  return {
    component,
    description,
    inports: ports(fields.inports, 'inports', true),
    outports: ports(fields.outports, 'outports', false),
    tags: [...tags],
    config: { ...config },
  };
}

/**
 * The actor a loaded script defines: `exports` is its module.exports,
 * `locals` its top-level `metadata`, `__actor_metadata__` and `process`
 * (undefined where it has none). Returns {metadata, process}.
 */
function findActor(exports, locals) {
  const exp = exports !== null && (typeof exports === 'object' || typeof exports === 'function') ? exports : {};
  const pick = (...candidates) => candidates.find((c) => c !== undefined && c !== null);
  const meta = pick(exp.metadata, exp.__actor_metadata__, locals.metadata, locals.__actor_metadata__,
    typeof exports === 'function' ? exports.metadata : undefined);
  if (meta === undefined) {
    throw new ActorError('the script defines no metadata (const metadata = {...}; module.exports = { metadata, process })');
  }
  let fn = pick(exp.process, locals.process);
  if (fn === undefined && typeof exports === 'function') fn = exports;
  if (typeof fn !== 'function') {
    throw new ActorError('the script defines no process(context) function (module.exports = { metadata, process })');
  }
  return { metadata: checkMetadata(meta), process: fn };
}

module.exports = { ActorError, checkMetadata, findActor, KEYS };
