'use strict';
// The worker's protocol on an in-memory region: the worker runs on a
// worker thread; the test plays the host.
const assert = require('assert');
const test = require('node:test');
const { Worker: Thread, isMainThread, workerData, parentPort } = require('worker_threads');

const { Consumer, Metadata, Producer, readLayout } = require('../sdk/reflow/ring');
const { decode, encode } = require('../sdk/reflow/value');
const { region, regionBuffer } = require('./helpers');

const [LOAD, LOADED, INVOKE, OUTPUT, DONE, STATE, STATE_REPLY, ERROR, , COLLECT] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

if (!isMainThread) {
  const { Worker } = require('../sdk/reflow/worker');
  const stop = new Int32Array(workerData.stop);
  new Worker(region(workerData.buffer)).run(() => Atomics.load(stop, 0) === 1).then(() => parentPort.postMessage('done'));
} else {
  class Host {
    constructor() {
      const buffer = regionBuffer();
      this.stop = new SharedArrayBuffer(4);
      this.thread = new Thread(__filename, { workerData: { buffer, stop: this.stop } });
      const r = region(buffer);
      const [h2g, g2h] = readLayout(r);
      this.tx = new Producer(r, h2g);
      this.rx = new Consumer(r, g2h);
      this.store = new Map();
    }

    async close() {
      Atomics.store(new Int32Array(this.stop), 0, 1);
      await new Promise((resolve) => this.thread.once('message', resolve));
      await this.thread.terminate();
    }

    /** Sends one message, answers state requests, returns what came back. */
    async call(kind, id, body) {
      this.tx.sendParts(new Metadata(BigInt(id), 0n, 'node', '', kind), [encode(body)]);
      const got = [];
      for (;;) {
        let reply = null;
        const deadline = Date.now() + 10000;
        while (reply === null && Date.now() < deadline) {
          reply = this.rx.tryRecv();
          if (reply === null) await new Promise((resolve) => setTimeout(resolve, 1));
        }
        assert.ok(reply, 'the worker did not answer');
        const { kind: k, port } = reply.metadata;
        let value = decode(reply.payload);
        value = Buffer.isBuffer(value) ? Buffer.from(value) : JSON.parse(JSON.stringify(value));
        this.rx.release(reply);
        if (k === STATE) {
          assert.strictEqual(value.op, 'increment');
          this.store.set(value.key, (this.store.get(value.key) ?? 0) + value.args[0]);
          this.tx.sendParts(new Metadata(BigInt(id), 0n, 'node', '', STATE_REPLY), [encode({ ok: this.store.get(value.key) })]);
          continue;
        }
        got.push([k, port, value]);
        if (k === DONE || k === ERROR || k === LOADED) return got;
      }
    }
  }

  const COUNTER = `
const metadata = { component: "Counter", inports: ["input"], outports: ["output", "size"] };
module.exports = { metadata, async process(context) {
  const n = await context.state.increment("calls");
  const data = context.getInput("input");
  await context.sendOutput("size", data.length);
  await context.sendOutput("output", data);
  return { calls: n };
} };`;

  test('load, invoke with state and outputs, errors; the worker goes on', async () => {
    const host = new Host();
    try {
      const [[k, , loaded]] = await host.call(LOAD, 1, { name: 'counter.js', source: COUNTER });
      assert.strictEqual(k, LOADED);
      assert.strictEqual(loaded.metadata.component, 'Counter');
      for (const n of [1, 2]) {
        const got = await host.call(INVOKE, 1 + n, { inputs: { input: Buffer.from('abcd') }, config: {} });
        assert.deepStrictEqual(got.map(([k2, port]) => [k2, port]), [[OUTPUT, 'size'], [OUTPUT, 'output'], [DONE, '']]);
        assert.strictEqual(got[0][2], 4);
        assert.deepStrictEqual(got[1][2], Buffer.from('abcd'));
        assert.deepStrictEqual(got[2][2], { calls: n });
      }
      const [[e, , syntax]] = await host.call(LOAD, 9, { name: 'bad.js', source: 'const x = ;' });
      assert.strictEqual(e, ERROR);
      assert.strictEqual(syntax.kind, 'load');
      assert.match(syntax.message, /SyntaxError/);
      // The failed load left the counter in place: its code throws here.
      const [[e2, , thrown]] = await host.call(INVOKE, 10, { inputs: {}, config: {} });
      assert.strictEqual(e2, ERROR);
      assert.strictEqual(thrown.kind, 'run');
      assert.match(thrown.message, /^TypeError: Cannot read properties of undefined/);
      assert.match(thrown.traceback, /at Object\.process \(counter\.js:6:\d+\)$/);
      const [[e3, , bad]] = await host.call(99, 11, {});
      assert.strictEqual(e3, ERROR);
      assert.match(bad.message, /unexpected message kind 99/);
    } finally {
      await host.close();
    }
  });
  test('COLLECT runs a full collection, answers with its time and heap, and the worker goes on', async () => {
    const host = new Host();
    try {
      // Garbage only a weak reference still names (V8 keeps a WeakRef's
      // target until the job that made it ends: the worker idles a while).
      const source = `
let ref;
(() => { ref = new WeakRef({ garbage: new Array(1000).fill(1) }); })();
module.exports = { metadata: { component: "Weak", outports: ["freed"] },
  process() { return { freed: ref.deref() === undefined }; } };`;
      const [[k]] = await host.call(LOAD, 1, { name: 'weak.js', source });
      assert.strictEqual(k, LOADED);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const [[d, , collected]] = await host.call(COLLECT, 2, {});
      assert.strictEqual(d, DONE);
      assert.ok(collected.ms >= 0, `ms ${collected.ms}`);
      assert.ok(Number.isInteger(collected.heap) && collected.heap > 0, `heap ${collected.heap}`);
      const got = await host.call(INVOKE, 3, { inputs: {}, config: {} });
      assert.deepStrictEqual(got[got.length - 1], [DONE, '', { freed: true }]);
    } finally {
      await host.close();
    }
  });
  test('a script loaded before is not run again (a component golden\'s clone)', async () => {
    const host = new Host();
    try {
      const source = `
globalThis.runs = (globalThis.runs || 0) + 1;
const runs = globalThis.runs;
module.exports = { metadata: { component: "Once", outports: ["out"] }, process() { return { out: runs }; } };`;
      for (const id of [1, 2]) {
        const [[k]] = await host.call(LOAD, id, { name: 'once.js', source });
        assert.strictEqual(k, LOADED);
      }
      const got = await host.call(INVOKE, 3, { inputs: {}, config: {} });
      assert.deepStrictEqual(got[got.length - 1][2], { out: 1 });
      const [[k]] = await host.call(LOAD, 4, { name: 'once.js', source: `${source}\n` });
      assert.strictEqual(k, LOADED);
      const again = await host.call(INVOKE, 5, { inputs: {}, config: {} });
      assert.deepStrictEqual(again[again.length - 1][2], { out: 2 });
    } finally {
      await host.close();
    }
  });
  test('a window of invocations runs in order past state replies', async () => {
    const host = new Host();
    try {
      await host.call(LOAD, 1, { name: 'counter.js', source: COUNTER });
      // Three INVOKEs written before any answer: the worker reads the second
      // and third while the first waits for its state reply.
      for (const n of [1, 2, 3]) {
        const body = { inputs: { input: Buffer.alloc(n, n) }, config: {} };
        host.tx.sendParts(new Metadata(BigInt(10 + n), 0n, 'node', '', INVOKE), [encode(body)]);
      }
      const answers = [];
      const deadline = Date.now() + 10000;
      while (answers.length < 3) {
        assert.ok(Date.now() < deadline, 'the worker did not answer');
        const reply = host.rx.tryRecv();
        if (reply === null) {
          await new Promise((resolve) => setTimeout(resolve, 1));
          continue;
        }
        const { kind, port, messageId } = reply.metadata;
        let value = decode(reply.payload);
        value = Buffer.isBuffer(value) ? Buffer.from(value) : JSON.parse(JSON.stringify(value));
        host.rx.release(reply);
        if (kind === STATE) {
          host.store.set('calls', (host.store.get('calls') ?? 0) + 1);
          const ok = encode({ ok: host.store.get('calls') });
          host.tx.sendParts(new Metadata(messageId, 0n, 'node', '', STATE_REPLY), [ok]);
        } else if (kind === DONE) {
          answers.push([Number(messageId), value]);
        } else {
          assert.strictEqual(kind, OUTPUT);
          const n = Number(messageId) - 10;
          if (port === 'output') assert.deepStrictEqual(value, Buffer.alloc(n, n));
        }
      }
      assert.deepStrictEqual(answers, [[11, { calls: 1 }], [12, { calls: 2 }], [13, { calls: 3 }]]);
    } finally {
      await host.close();
    }
  });
}
