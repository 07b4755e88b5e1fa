'use strict';
// The Node worker: serves actor messages on the ring, with the Python
// worker's protocol (see worker.py; record kinds in the metadata, the
// message id ties an invocation's records together, payloads are
// `reflow.value` values):
//
//   host -> guest  LOAD    {name, source, log: {lines, bytes}, idle_spin_ms?}
//                                                        actor id = the node
//   guest -> host  LOADED  {metadata: {...}}       or ERROR
//   host -> guest  INVOKE  {inputs, config}
//   guest -> host  OUTPUT  value, port in the metadata (any number)
//   guest -> host  STATE   {op, key, args}         host answers STATE_REPLY
//   host -> guest  STATE_REPLY {ok: value} | {error: message}
//   guest -> host  DONE    {returned outputs}      or ERROR
//   guest -> host  ERROR   {kind: load|run|protocol, message, traceback}
//   guest -> host  LOG     a printed line, or what was dropped (see reflow/log.js)
//   host -> guest  COLLECT {}                      collect garbage now (a pool
//                                                  asks while a clone waits)
//   guest -> host  DONE    {ms, heap: used heap bytes after}
//
// Started by the agent (`spawn /usr/bin/node /opt/reflow/run_worker.js
// <addr> <size>`) before the golden snapshot is taken, so clones start
// warm. On every LOAD, OpenSSL's generator is reseeded from the kernel
// (itself reseeded by the host when a clone connects) and Math.random gets
// a fresh source, so clones do not share random streams: Math.random is
// one function for the worker's life, installed before anything is
// preloaded, so a module that captured it when it loaded (lodash's
// `_.random`, `_.shuffle`, `_.sample`) draws from the fresh source too.
// Not covered (docs/images.md): a generator a preloaded module seeded
// itself from Math.random or crypto at import, and `crypto.randomUUID`'s
// entropy cache if something called it before the golden. Input bytes arrive
// as Buffers over the ring slot (no copy), valid during the invocation.
// The host may write the next INVOKEs before an invocation ends (a window of
// messages in flight); they run one at a time, in order. An INVOKE read
// while waiting for a state reply is copied out and queued, so the ring
// never fills with held records the host cannot get past.

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const v8 = require('v8');
const vm = require('vm');
const { createRequire } = require('module');

const { ActorFailure, invoke, load } = require('./invoke');
const log = require('./log');
const { Consumer, Metadata, Producer, Region, calibrateSpin, readLayout, setSpin, writeLayout } = require('./ring');
const { Progress } = require('./progress');
const { ValueError, decode, encodeParts } = require('./value');

const [LOAD, LOADED, INVOKE, OUTPUT, DONE, STATE, STATE_REPLY, ERROR, LOG, COLLECT] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
// The records that answer a message: its printed lines go before them.
const ANSWERS = new Set([LOADED, DONE, ERROR]);
const READY_FILE = '/run/reflow/worker.ready';
const HOUR_MS = 3600e3;

class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** A copy that does not point into the ring (for values kept after their record is released). */
function own(v) {
  if (Buffer.isBuffer(v)) return Buffer.from(v);
  if (Array.isArray(v)) return v.map(own);
  if (v !== null && typeof v === 'object') {
    for (const k of Object.keys(v)) v[k] = own(v[k]);
  }
  return v;
}

/** An invocation's way to the host: outputs and state round trips. */
class RingTransport {
  constructor(worker, messageId, actorId) {
    this.worker = worker;
    this.messageId = messageId;
    this.actorId = actorId;
  }

  sendOutput(port, value) {
    this.worker.send(OUTPUT, this.messageId, this.actorId, value, port);
  }

  stateCall(op, key, args) {
    this.worker.send(STATE, this.messageId, this.actorId, { op, key, args });
    let record;
    for (;;) {
      record = this.worker.rx.recv(HOUR_MS);
      if (record === null) throw new ProtocolError('no state reply within an hour');
      if (record.metadata.kind !== INVOKE && record.metadata.kind !== LOAD) break;
      // The next message of the host's window: it runs after this one.
      this.worker.queue(record);
    }
    try {
      const meta = record.metadata;
      if (meta.kind !== STATE_REPLY || meta.messageId !== this.messageId) {
        throw new ProtocolError(`expected a state reply, got kind ${meta.kind}`);
      }
      const reply = decode(record.payload);
      if (reply === null || typeof reply !== 'object' || Array.isArray(reply)) {
        throw new ProtocolError('malformed state reply');
      }
      if ('error' in reply) throw new Error(`state ${op} ${JSON.stringify(key)}: ${reply.error}`);
      return own(reply.ok === undefined ? null : reply.ok);
    } finally {
      this.worker.rx.release(record);
    }
  }
}

/** Where Math.random draws from: V8's own until the first LOAD. */
let mathSource = Math.random;

/** The one Math.random: whoever captured it draws from `mathSource`. */
function stableMathRandom() {
  return mathSource();
}

/** Installs the stable Math.random (before anything is preloaded). */
function installMathRandom() {
  Math.random = stableMathRandom;
}

/** A fresh source behind Math.random (and behind every captured copy). */
function reseedMathRandom() {
  mathSource = freshMathRandom();
  Math.random = stableMathRandom;
}

/** Math.random from OpenSSL's (reseeded) generator: 53 random bits a call. */
function freshMathRandom() {
  const pool = new Uint32Array(1024);
  let at = pool.length;
  return function random() {
    if (at + 2 > pool.length) {
      crypto.randomFillSync(pool);
      at = 0;
    }
    const hi = pool[at++] >>> 5;
    const lo = pool[at++] >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  };
}

/**
 * V8's full collection, got once (in the golden) from a context of its own,
 * so actors' globals stay as Node's (no `gc` among them).
 */
const fullGc = (() => {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc');
})();

/**
 * A full collection (COLLECT): a clone's first one copies most of V8's heap
 * out of the golden's pages (half a second where the guest kernel is
 * emulated), so a pool has it done while the clone waits, not in the middle
 * of a stream. Returns its duration in milliseconds and the used heap after.
 */
function collectGarbage() {
  const started = performance.now();
  fullGc();
  return { ms: performance.now() - started, heap: v8.getHeapStatistics().used_heap_size };
}

class Worker {
  /** `region` is a ring Region; `reseed` reseeds OpenSSL (the addon's). */
  constructor(region, reseed = () => false) {
    const [h2g, g2h] = readLayout(region);
    this.rx = new Consumer(region, h2g);
    this.tx = new Producer(region, g2h);
    this.actors = new Map();
    /** Messages read while an invocation waited for a state reply. */
    this.queued = [];
    /** Scripts loaded in this VM by name and source (see LOAD). */
    this.loaded = new Map();
    this.reseed = reseed;
    /** What actors print (process.stdout and stderr once installed). */
    this.log = new log.GuestLog((mid, aid, value) => this.send(LOG, mid, aid, value));
  }

  /** Copies `record` out of the ring, releases it, and queues it. */
  queue(record) {
    this.queued.push({ metadata: record.metadata, payload: Buffer.from(record.payload), queued: true });
    this.rx.release(record);
  }

  release(record) {
    if (record.queued !== true) this.rx.release(record);
  }

  send(kind, messageId, actorId, value, port = '') {
    if (ANSWERS.has(kind)) this.log.end();
    const meta = new Metadata(messageId, 0n, actorId, port, kind);
    this.tx.sendParts(meta, encodeParts(value), HOUR_MS);
  }

  error(messageId, actorId, kind, message, trace = '') {
    this.send(ERROR, messageId, actorId, { kind, message, traceback: trace });
  }

  /** Serves one record; resolves when its answer is sent. */
  async serveOne(record) {
    const meta = record.metadata;
    let body;
    try {
      body = decode(record.payload);
      if (body === null || typeof body !== 'object' || Array.isArray(body) || Buffer.isBuffer(body)) {
        throw new ValueError('the message body is not a map');
      }
    } catch (e) {
      this.release(record);
      this.error(meta.messageId, meta.actorId, 'protocol', `undecodable message: ${e.message}`);
      return;
    }
    if (meta.kind === LOAD) {
      const source = String(body.source ?? '');
      const name = String(body.name ?? '<actor>');
      this.log.setCaps(meta.actorId, body.log);
      if (typeof body.idle_spin_ms === 'number') setSpin(body.idle_spin_ms);
      this.release(record);
      this.log.begin(meta.messageId, meta.actorId);
      this.reseed();
      reseedMathRandom();
      // A clone of a component golden finds the script it loaded before
      // its snapshot: it is not run again (its randomness is fresh above).
      const key = `${name}\0${source}`;
      let actor = this.loaded.get(key);
      if (actor === undefined) {
        try {
          actor = await load(source, name);
        } catch (f) {
          if (!(f instanceof ActorFailure)) throw f;
          this.error(meta.messageId, meta.actorId, f.kind, f.message, f.trace);
          return;
        }
        this.loaded.set(key, actor);
      }
      this.actors.set(meta.actorId, actor);
      this.send(LOADED, meta.messageId, meta.actorId, { metadata: actor.metadata });
    } else if (meta.kind === INVOKE) {
      this.log.begin(meta.messageId, meta.actorId);
      try {
        const actor = this.actors.get(meta.actorId);
        if (actor === undefined) throw new ActorFailure('run', `no actor loaded for ${JSON.stringify(meta.actorId)}`);
        const transport = new RingTransport(this, meta.messageId, meta.actorId);
        const result = await invoke(actor, body.inputs ?? {}, body.config ?? {}, meta.actorId, transport);
        this.send(DONE, meta.messageId, meta.actorId, result);
      } catch (e) {
        if (e instanceof ActorFailure) this.error(meta.messageId, meta.actorId, e.kind, e.message, e.trace);
        else this.error(meta.messageId, meta.actorId, 'protocol', String(e && e.message));
      } finally {
        this.release(record);
      }
    } else if (meta.kind === COLLECT) {
      this.release(record);
      this.log.begin(meta.messageId, meta.actorId);
      this.send(DONE, meta.messageId, meta.actorId, collectGarbage());
    } else {
      this.release(record);
      this.error(meta.messageId, meta.actorId, 'protocol', `unexpected message kind ${meta.kind}`);
    }
  }

  /** Serves records until `stop()` (for tests) returns true. */
  async run(stop = null) {
    while (stop === null || !stop()) {
      const record = this.queued.length > 0 ? this.queued.shift() : this.rx.recv(stop === null ? HOUR_MS : 50);
      if (record !== null) await this.serveOne(record);
      else if (stop !== null) await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

const PRELOAD_FILE = '/opt/reflow/preload.txt';
const MODULES_HOME = process.env.REFLOW_NODE_MODULES_HOME || '/usr/local/lib';

function preloadList(file = PRELOAD_FILE) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (_) {
    return [];
  }
  return text.split('\n').map((l) => l.split('#')[0].trim()).filter(Boolean);
}

class PreloadError extends Error {
  constructor(name, why) {
    super(`cannot preload ${name}: ${why}`);
    this.name = 'PreloadError';
    this.module = name;
  }
}

/**
 * Requires the modules `names` now (the worker starts before the golden
 * snapshot, so clones find them loaded), each a step of `progress`.
 * Throws PreloadError for the first that fails: a golden whose preloads
 * failed would make every clone load them again (or fail to), so it must
 * not be written.
 */
function preload(names, progress) {
  const req = createRequire(path.join(MODULES_HOME, 'reflow-actor.js'));
  for (const name of names) {
    if (progress) progress.step('preload', name);
    try {
      req(name);
    } catch (e) {
      throw new PreloadError(name, `${e.name}: ${e.message.split('\n')[0]}`);
    }
  }
}

const WARM_UP = `
const metadata = { component: "WarmUp", inports: ["input"], outports: ["output"] };
async function process(context) {
  const n = await context.state.increment("n");
  await context.sendOutput("output", context.getInput("input"));
  context.sendOutputSync("output", { n, x: [1.5, null, true, "s"] });
  return { done: n };
}
module.exports = { metadata, process };
`;

/**
 * Serves `rounds` messages of a built-in actor (load, then invocations with
 * outputs and a state round trip) through a Worker on an in-memory region,
 * playing the host in the same thread, so V8 has compiled and optimized
 * the whole path (ring, codec, SDK) before the golden snapshot rather than
 * in every clone's first thousand messages (where the guest kernel is
 * emulated, compiling costs milliseconds a message). Resolves to the kinds
 * of the records the last message produced (for tests).
 */
async function warmUp(crc32, rounds = 4000, progress = undefined) {
  const region = new Region(writeLayout(new ArrayBuffer(1 << 20)), crc32);
  const worker = new Worker(region);
  const [h2g, g2h] = readLayout(region);
  const tx = new Producer(region, h2g);
  const rx = new Consumer(region, g2h);
  const inputs = [Buffer.alloc(64, 'warm'), Buffer.alloc(4096, 'warm'), 'text', 42, { k: [1, 2.5] }];
  let kinds = [];
  const serve = async (kind, id, body, reply) => {
    tx.sendParts(new Metadata(BigInt(id), 0n, 'warm-up', '', kind), encodeParts(body));
    if (reply !== undefined) {
      tx.sendParts(new Metadata(BigInt(id), 0n, 'warm-up', '', STATE_REPLY), encodeParts({ ok: reply }));
    }
    await worker.serveOne(worker.rx.recv(1000));
    kinds = [];
    for (let r = rx.tryRecv(); r !== null; r = rx.tryRecv()) {
      kinds.push(r.metadata.kind);
      decode(r.payload);
      rx.release(r);
    }
  };
  await serve(LOAD, 0, { name: '<warm-up>', source: WARM_UP });
  for (let i = 1; i <= rounds; i++) {
    await serve(INVOKE, i, { inputs: { input: inputs[i % inputs.length] }, config: { s: 'x' } }, i);
    if (progress && i % 50 === 0) progress.detail(`${i}/${rounds} messages`);
  }
  // The polls are optimized code by now: time them for the idle spin.
  if (progress) progress.step('calibrate spin');
  calibrateSpin(worker.rx, Math.max(rounds * 50, 1000));
  return kinds;
}

async function main(argv, progress = new Progress()) {
  // A script's stray timer or promise must not end the worker.
  process.on('uncaughtException', (e) => console.error(`reflow worker: uncaught: ${e && e.stack}`));
  process.on('unhandledRejection', (e) => console.error(`reflow worker: unhandled rejection: ${e && e.stack}`));
  const exit = process.exit.bind(process);
  process.exit = (code) => {
    throw new Error(`process.exit(${code === undefined ? '' : code}) is not available to actors`);
  };
  // Keeps the event loop alive while an invocation awaits a promise that
  // nothing will settle (the host's time limit ends that one).
  setInterval(() => {}, 1 << 30);
  let worker;
  installMathRandom();
  try {
    // Before anything allocates much: freed memory stays for the clones
    // (see the addon's keepMemory).
    if (!require('../reflow_shm.node').keepMemory()) progress.detail('malloc tuning refused');
    preload(preloadList(), progress);
    progress.step('map region');
    const shm = require('../reflow_shm.node');
    // In a VM: guest physical memory through /dev/mem; in a host
    // process's jail: the ring's memfd, /proc/self/fd/3, from offset 0.
    const addr = Number(argv[2]);
    const size = Number(argv[3]);
    const mapped = argv.length > 4 ? shm.map(addr, size, argv[4]) : shm.map(addr, size);
    worker = new Worker(new Region(mapped, shm.crc32), shm.reseed);
    progress.step('warm-up');
    await warmUp(shm.crc32, 4000, progress);
  } catch (e) {
    const message = e instanceof PreloadError ? e.message : `${e && e.stack}`;
    console.error(`reflow worker: ${message}`);
    progress.failed(message);
    exit(1);
  }
  fs.mkdirSync(path.dirname(READY_FILE), { recursive: true });
  fs.writeFileSync(READY_FILE, String(process.pid));
  // From here on, what actors print goes to the host.
  log.install(worker.log);
  progress.ready();
  await worker.run();
}

module.exports = {
  LOG, Worker, main, warmUp, preload, preloadList, PreloadError, freshMathRandom, installMathRandom, reseedMathRandom,
};
