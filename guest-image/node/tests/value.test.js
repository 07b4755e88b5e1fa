'use strict';
const assert = require('assert');
const test = require('node:test');

const { decode, encode, encodeParts, ValueError, BIG } = require('../sdk/reflow/value');

test('values round trip with JavaScript types', () => {
  const v = { n: null, t: true, f: false, i: -42, big: 2n ** 60n, x: 1.5, nan: NaN, s: 'héllo', b: Buffer.from([0, 1, 255]), l: [1, 'a', [2]], m: { k: {} } };
  const back = decode(encode(v));
  assert.deepStrictEqual(back, { ...v, big: 2n ** 60n });
  assert.ok(Number.isNaN(back.nan));
  assert.strictEqual(decode(encode(undefined)), null);
  assert.deepStrictEqual(decode(encode(new Map([['a', 1]]))), { a: 1 });
  assert.deepStrictEqual(decode(encode(new Set([1, 2]))), [1, 2]);
  assert.deepStrictEqual(decode(encode(new Uint16Array([1, 2]))), Buffer.from([1, 0, 2, 0]));
  assert.strictEqual(decode(encode(-0)), -0);
  const proto = decode(encode(JSON.parse('{"__proto__": 5}')));
  assert.strictEqual(Object.getPrototypeOf(proto), Object.prototype);
  assert.strictEqual(proto.__proto__, 5);
});

test('the wire format is reflow-ring\'s', () => {
  // A map {"a": 1}: tag 8, count, key, tag 3, i64.
  assert.deepStrictEqual([...encode({ a: 1 })], [8, 1, 0, 0, 0, 1, 0, 0, 0, 97, 3, 1, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepStrictEqual([...encode(0.5)], [4, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f]);
  assert.deepStrictEqual([...encode('é')], [5, 2, 0, 0, 0, 0xc3, 0xa9]);
});

test('decoded bytes are views of the input; big bytes are encoded by reference', () => {
  const input = encode({ b: Buffer.alloc(10, 3) });
  const out = decode(input);
  assert.strictEqual(out.b.buffer, input.buffer);
  const big = Buffer.alloc(BIG, 1);
  const parts = encodeParts([big, 'x']);
  assert.ok(parts.includes(big), 'the big buffer is a part itself');
});

test('what the format cannot carry, and hostile bytes, are refused', () => {
  assert.throws(() => encode(() => 1), ValueError);
  assert.throws(() => encode(Symbol('s')), ValueError);
  assert.throws(() => encode(new Date()), /cannot send a Date/);
  assert.throws(() => encode(2n ** 64n), /64 bits/);
  assert.throws(() => encode(new Map([[1, 2]])), /keys are strings/);
  let deep = [];
  for (let i = 0; i < 70; i++) deep = [deep];
  assert.throws(() => encode(deep), /deeper/);
  const cyclic = {};
  cyclic.self = cyclic;
  assert.throws(() => encode(cyclic), /deeper/);
  for (const [bytes, re] of [
    [[9], /unknown value tag/], [[3, 1], /ends early/], [[5, 255, 255, 255, 255], /ends early/],
    [[7, 255, 255, 255, 0], /ends early/], [[5, 1, 0, 0, 0, 0xff], /not UTF-8/],
    [[8, 2, 0, 0, 0, 1, 0, 0, 0, 97, 0, 1, 0, 0, 0, 97, 0], /twice/], [[0, 0], /follow/],
  ]) {
    assert.throws(() => decode(Buffer.from(bytes)), re, JSON.stringify(bytes));
  }
  let nested = Buffer.alloc(0);
  for (let i = 0; i < 100; i++) nested = Buffer.concat([Buffer.from([7, 1, 0, 0, 0]), nested]);
  assert.throws(() => decode(Buffer.concat([nested, Buffer.from([0])])), /deeper/);
});
