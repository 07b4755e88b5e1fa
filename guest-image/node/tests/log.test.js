'use strict';
// What actors print: lines to the host, capped per message.
const assert = require('assert');
const test = require('node:test');

const { GuestLog, MAX_LINE, writer } = require('../sdk/reflow/log');
const { Consumer, Metadata, Producer, readLayout } = require('../sdk/reflow/ring');
const { decode, encode } = require('../sdk/reflow/value');
const { LOG, Worker } = require('../sdk/reflow/worker');
const { region } = require('./helpers');

const line = (stream, text, cut = 0) => ({ stream, line: text, cut });

function logged() {
  const sent = [];
  const log = new GuestLog((mid, aid, value) => sent.push([mid, aid, value]));
  return { log, sent, values: () => sent.map((s) => s[2]) };
}

test('lines go out as their newline is written, partial ones at the end', () => {
  const { log, sent, values } = logged();
  log.begin(7n, 'node');
  log.write('stdout', 'hello world\n');
  log.write('stderr', 'par');
  log.write('stderr', 'tial');
  assert.deepStrictEqual(sent, [[7n, 'node', line('stdout', 'hello world')]]);
  log.write('stdout', 'a\nb\n\nc');
  log.end();
  assert.deepStrictEqual(values().slice(1), [
    line('stdout', 'a'), line('stdout', 'b'), line('stdout', ''), line('stdout', 'c'), line('stderr', 'partial'),
  ]);
});

test('past the caps text is counted, not sent', () => {
  const { log, sent, values } = logged();
  log.setCaps('node', { lines: 3, bytes: 1000 });
  log.begin(1n, 'node');
  const write = writer(log, 'stdout');
  for (let i = 0; i < 100000; i++) write(`${'x'.repeat(99)}\n`);
  log.end();
  assert.deepStrictEqual(values(), [
    line('stdout', 'x'.repeat(99)), line('stdout', 'x'.repeat(99)), line('stdout', 'x'.repeat(99)),
    { dropped_lines: 99997, dropped_bytes: 99997 * 100 },
  ]);
  log.begin(2n, 'node');
  write(Buffer.from('again\n'));
  log.end();
  assert.deepStrictEqual(sent[sent.length - 1], [2n, 'node', line('stdout', 'again')]);
});

test('the byte cap ends the message\'s lines; long lines are cut', () => {
  const { log, values } = logged();
  log.setCaps('node', { lines: 100, bytes: 10 });
  log.begin(1n, 'node');
  log.write('stdout', '12345678\n123\nx\n');
  log.end();
  assert.deepStrictEqual(values(), [line('stdout', '12345678'), { dropped_lines: 2, dropped_bytes: 6 }]);
  const other = logged();
  other.log.setCaps('node', { lines: 'many', bytes: -1 });
  other.log.begin(1n, 'node');
  other.log.write('stdout', 'y'.repeat(MAX_LINE + 10));
  other.log.write('stdout', 'zzzzz\n');
  other.log.end();
  assert.deepStrictEqual(other.values(), [line('stdout', 'y'.repeat(MAX_LINE), 15)]);
});

test('text outside a message is counted with the next', () => {
  const { log, values } = logged();
  log.write('stdout', 'stray\n');
  log.begin(3n, 'node');
  log.end();
  assert.deepStrictEqual(values(), [{ dropped_lines: 1, dropped_bytes: 6 }]);
});

test('through the worker, a load\'s and a message\'s lines precede their answers', async () => {
  const r = region();
  const worker = new Worker(r);
  const [h2g, g2h] = readLayout(r);
  const tx = new Producer(r, h2g);
  const rx = new Consumer(r, g2h);
  // The actor's console writes to the worker's log, as after install().
  const source = `
    const say = globalThis.__reflowTestSay;
    say('stdout', 'loading\\n');
    module.exports = {
      metadata: { component: 'P', inports: ['i'], outports: ['o'] },
      process(context) {
        say('stdout', 'got ' + context.getInput('i') + '\\n');
        say('stderr', 'oops\\n');
        if (context.getInput('i') === 2) throw new Error('two');
        return { o: 1 };
      },
    };`;
  globalThis.__reflowTestSay = (stream, text) => writer(worker.log, stream)(text);
  const call = async (kind, mid, body) => {
    tx.sendParts(new Metadata(BigInt(mid), 0n, 'node', '', kind), [encode(body)]);
    await worker.serveOne(worker.rx.recv(5000));
    const got = [];
    for (let rec = rx.tryRecv(); rec !== null; rec = rx.tryRecv()) {
      got.push([Number(rec.metadata.messageId), rec.metadata.kind, decode(rec.payload)]);
      rx.release(rec);
    }
    return got;
  };
  try {
    let got = await call(1, 1, { name: 'p.js', source, log: { lines: 10, bytes: 100 } });
    assert.deepStrictEqual(got.map(([m, k]) => [m, k]), [[1, LOG], [1, 2]]);
    assert.deepStrictEqual(got[0][2], line('stdout', 'loading'));
    got = await call(3, 2, { inputs: { i: 1 }, config: {} });
    assert.deepStrictEqual(got.map(([, k, v]) => [k, v]), [
      [LOG, line('stdout', 'got 1')], [LOG, line('stderr', 'oops')], [5, { o: 1 }],
    ]);
    got = await call(3, 3, { inputs: { i: 2 }, config: {} });
    assert.deepStrictEqual(got.map(([, k]) => k), [LOG, LOG, 8]);
  } finally {
    delete globalThis.__reflowTestSay;
  }
});


