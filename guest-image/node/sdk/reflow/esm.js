'use strict';
// ES module actors (`.mjs`, or a `.js` script with `import`/`export`
// statements). Node can import a module only from a file, so the source is
// written to a private directory on the guest's tmpfs (part of the VM's
// memory, gone with the VM) whose `node_modules` links to the image's
// packages, and imported from there: its bare `import`s resolve as a
// CommonJS actor's `require()`s do.

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { pathToFileURL } = require('url');

// V8's messages when CommonJS meets module syntax.
const MODULE_SYNTAX = [
  'Cannot use import statement outside a module',
  "Unexpected token 'export'",
  'Cannot use \'import.meta\' outside a module',
  'await is only valid in async functions and the top level bodies of modules',
];

/** Whether compiling a script as CommonJS failed on ES module syntax. */
function isModuleSyntax(e) {
  return e instanceof SyntaxError && MODULE_SYNTAX.some((m) => e.message.includes(m));
}

/** Whether `filename` names an ES module (`.mjs`) or a CommonJS script (`.cjs`) outright. */
function declaredKind(filename) {
  if (filename.endsWith('.mjs')) return 'module';
  if (filename.endsWith('.cjs')) return 'commonjs';
  return null;
}

/**
 * Writes `source` as a module file under `dir` (created private, with
 * `node_modules` linked to `modulesHome`'s) and returns its path; the same
 * name and source give the same file.
 */
function moduleFile(source, filename, dir, modulesHome) {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const link = path.join(dir, 'node_modules');
  try {
    fs.symlinkSync(path.join(modulesHome, 'node_modules'), link);
  } catch (e) {
    if (e.code !== 'EEXIST') throw e;
  }
  const hash = crypto.createHash('sha256').update(filename).update('\0').update(source).digest('hex');
  const base = path.basename(filename).replace(/\.[cm]?js$/, '').replace(/[^A-Za-z0-9._-]/g, '_');
  const file = path.join(dir, `${base}-${hash.slice(0, 16)}.mjs`);
  if (!fs.existsSync(file)) fs.writeFileSync(file, source, { mode: 0o600 });
  return file;
}

/** Imports the module file `file`; resolves to its namespace. */
function importFile(file) {
  return import(pathToFileURL(file).href);
}

/** `text` with the module file's path and URL replaced by the script's name. */
function renamed(text, file, filename) {
  return String(text).split(pathToFileURL(file).href).join(filename).split(file).join(filename);
}

/**
 * A module namespace as the exports the loader looks in: `metadata` and
 * `process` exported by name, or an exported default that is the process
 * function or an object holding both.
 */
function actorExports(ns) {
  const def = ns.default;
  const holder = def !== null && typeof def === 'object' ? def : {};
  let fn = ns.process;
  if (fn === undefined) fn = typeof def === 'function' ? def : holder.process;
  return {
    metadata: ns.metadata ?? holder.metadata,
    __actor_metadata__: ns.__actor_metadata__ ?? holder.__actor_metadata__,
    process: fn,
  };
}

/** Where module actors are written: `REFLOW_ESM_DIR`, else a directory in the temporary one. */
const ESM_DIR = process.env.REFLOW_ESM_DIR || path.join(os.tmpdir(), 'reflow-esm');

module.exports = { ESM_DIR, actorExports, declaredKind, importFile, isModuleSyntax, moduleFile, renamed };
