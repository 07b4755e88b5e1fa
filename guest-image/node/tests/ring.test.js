'use strict';
const assert = require('assert');
const test = require('node:test');
const zlib = require('zlib');

const { Consumer, Metadata, Producer, RingError, calibrateSpin, readLayout, setSpin, HEADER_LEN, METADATA_LEN } = require('../sdk/reflow/ring');
const { region, shm } = require('./helpers');

test('the addon computes zlib CRC-32 over any TypedArray', () => {
  const { crc32 } = shm();
  assert.strictEqual(crc32(Buffer.from('reflow'), 0), 3581869112);
  const words = new Uint32Array([1, 2, 3]);
  const bytes = Buffer.from(words.buffer);
  assert.strictEqual(crc32(words, 0), crc32(bytes, 0));
  assert.strictEqual(crc32(bytes.subarray(4), crc32(bytes.subarray(0, 4), 0)), crc32(bytes, 0));
  if (zlib.crc32) assert.strictEqual(crc32(bytes, 0), zlib.crc32(bytes));
  assert.throws(() => crc32('text', 0), /TypedArray/);
  assert.throws(() => shm().map(1, 4096), /page size/);
});

test('records round trip in order, wrap around with padding and free their space', () => {
  const r = region();
  const [ring] = readLayout(r);
  const tx = new Producer(r, ring);
  const rx = new Consumer(r, ring);
  const payload = Buffer.alloc(ring.capacity / 3, 7);
  for (let i = 0; i < 20; i++) {
    tx.sendParts(new Metadata(BigInt(i), 0n, 'actor', `p${i}`, 3), [payload.subarray(0, 100 + i), Buffer.from([i])]);
    const rec = rx.recv(1000);
    assert.strictEqual(rec.metadata.messageId, BigInt(i));
    assert.strictEqual(rec.metadata.port, `p${i}`);
    assert.strictEqual(rec.payload.length, 101 + i);
    assert.strictEqual(rec.payload[100 + i], i);
    rx.release(rec);
    // A big record now and then makes the ring wrap.
    tx.sendParts(new Metadata(0n, 0n, '', '', 1), [payload]);
    rx.release(rx.recv(1000));
  }
  assert.strictEqual(rx.tryRecv(), null);
  assert.throws(() => rx.release({ sequence: 99n }), RingError);
});

test('a full ring pushes back; held records keep their space', () => {
  const r = region();
  const [ring] = readLayout(r);
  const tx = new Producer(r, ring);
  const rx = new Consumer(r, ring);
  const big = Buffer.alloc(ring.capacity / 2 - HEADER_LEN - METADATA_LEN);
  tx.trySendParts(new Metadata(), [big]);
  const held = rx.tryRecv();
  tx.trySendParts(new Metadata(), [big]);
  assert.throws(() => tx.trySendParts(new Metadata(), [Buffer.alloc(1)]), /free/);
  rx.release(held);
  rx.release(rx.tryRecv());
  tx.trySendParts(new Metadata(), [Buffer.alloc(1)]);
});

test('hostile records are refused', () => {
  const cases = [
    ['bad magic', (b, at) => { b[at] = 0x58; }, /magic/],
    ['bad version', (b, at) => { b[at + 4] = 9; }, /version/],
    ['bad length', (b, at) => { b.writeUInt32LE(64, at + 16); }, /length/],
    ['bad checksum', (b, at) => { b[at + HEADER_LEN + METADATA_LEN] ^= 1; }, /checksum/],
    ['bad sequence', (b, at) => { b.writeBigUInt64LE(5n, at + 24); }, /sequence/],
    ['long name', (b, at) => { b[at + HEADER_LEN + 16] = 200; }, /(checksum|too long)/],
  ];
  for (const [what, corrupt, expected] of cases) {
    const r = region();
    const [ring] = readLayout(r);
    new Producer(r, ring).trySendParts(new Metadata(), [Buffer.from('payload')]);
    corrupt(r.bytes, ring.data);
    assert.throws(() => new Consumer(r, ring).tryRecv(), expected, what);
  }
  const r = region();
  const [ring] = readLayout(r);
  r.store(r.word(ring.control), ring.capacity * 4);
  assert.throws(() => new Consumer(r, ring).tryRecv(), /out of range/);
  r.bytes[0] = 0;
  assert.throws(() => readLayout(r), /bad magic/);
});

test('the idle spin is calibrated from the cost of a poll', () => {
  const r = region();
  const [ring] = readLayout(r);
  const rx = new Consumer(r, ring);
  const polls = calibrateSpin(rx, 100000);
  assert.ok(polls >= 2000 && polls <= 5e7, String(polls));
  // What the host asks for on LOAD, within bounds.
  assert.ok(Math.abs(setSpin(200) / polls - 4) < 0.01, String(setSpin(200)));
  assert.strictEqual(setSpin(3600e3), setSpin(1000));
  assert.strictEqual(setSpin(-1), 2000);
  setSpin(50);
  new Producer(r, ring).trySendParts(new Metadata(), [Buffer.from('x')]);
  assert.throws(() => calibrateSpin(rx, 10), /not empty/);
});
