'use strict';
// Message values on the ring: the tagged format of `reflow-ring`'s value.rs
// (see there for the layout), as the Python SDK's value.py has it.
//
// Decoding returns byte strings as Buffers over the input (no copy);
// integers as numbers, or BigInts beyond 2^53. Encoding takes null and
// undefined (None), booleans, numbers (integral ones within 2^53 as
// integers, others as floats), BigInts (64-bit integers), strings, Buffers,
// TypedArrays, DataViews and ArrayBuffers (bytes), arrays and Sets (lists),
// and plain objects and Maps with string keys (maps).

const MAX_DEPTH = 64;
const [NONE, FALSE, TRUE, INT, FLOAT, STR, BYTES, LIST, MAP] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
// Byte strings at least this long are not copied while encoding: they stay
// references to the caller's buffer until written into the ring slot.
const BIG = 4096;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Bytes that are not a value, or a value the format cannot carry. */
class ValueError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ValueError';
  }
}

/** A growing byte sink that keeps large byte strings by reference. */
class Parts {
  constructor() {
    this.parts = [];
    this.small = Buffer.allocUnsafe(256);
    this.len = 0;
  }

  room(n) {
    if (this.len + n <= this.small.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.small.length * 2, this.len + n));
    this.small.copy(grown, 0, 0, this.len);
    this.small = grown;
  }

  byte(b) {
    this.room(1);
    this.small[this.len++] = b;
  }

  u32(n) {
    if (n > 0xffffffff) throw new ValueError(`${n} bytes do not fit the format`);
    this.room(4);
    this.small.writeUInt32LE(n, this.len);
    this.len += 4;
  }

  i64(n) {
    this.room(8);
    this.small.writeBigInt64LE(n, this.len);
    this.len += 8;
  }

  f64(x) {
    this.room(8);
    this.small.writeDoubleLE(x, this.len);
    this.len += 8;
  }

  str(s) {
    const max = Buffer.byteLength(s);
    this.u32(max);
    this.room(max);
    this.len += this.small.write(s, this.len, 'utf8');
  }

  bytes(view) {
    this.u32(view.length);
    if (view.length >= BIG) {
      this.flush();
      this.parts.push(view);
    } else {
      this.room(view.length);
      this.small.set(view, this.len);
      this.len += view.length;
    }
  }

  flush() {
    if (this.len > 0) {
      this.parts.push(this.small.subarray(0, this.len));
      this.small = Buffer.allocUnsafe(256);
      this.len = 0;
    }
  }

  finish() {
    if (this.len > 0 || this.parts.length === 0) this.flush();
    if (this.parts.length === 0) this.parts.push(Buffer.alloc(0));
    return this.parts;
  }
}

/** The bytes of a binary value as a Uint8Array over the same memory, or null. */
function byteView(v) {
  if (v instanceof Uint8Array) return v;
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && v instanceof SharedArrayBuffer)) {
    return new Uint8Array(v);
  }
  return null;
}

function isPlainObject(v) {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function typeName(v) {
  if (v === null) return 'null';
  if (typeof v !== 'object') return typeof v;
  return (v.constructor && v.constructor.name) || 'object';
}

function encodeInto(v, out, depth) {
  if (depth > MAX_DEPTH) throw new ValueError(`values nest deeper than ${MAX_DEPTH}`);
  switch (typeof v) {
    case 'undefined':
      out.byte(NONE);
      return;
    case 'boolean':
      out.byte(v ? TRUE : FALSE);
      return;
    case 'number':
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) {
        out.byte(INT);
        out.i64(BigInt(v));
      } else {
        out.byte(FLOAT);
        out.f64(v);
      }
      return;
    case 'bigint':
      if (v < I64_MIN || v > I64_MAX) throw new ValueError(`integer ${v} does not fit in 64 bits`);
      out.byte(INT);
      out.i64(v);
      return;
    case 'string':
      out.byte(STR);
      out.str(v);
      return;
    case 'object':
      break;
    default:
      throw new ValueError(`cannot send a ${typeof v}`);
  }
  if (v === null) {
    out.byte(NONE);
    return;
  }
  const bytes = byteView(v);
  if (bytes !== null) {
    out.byte(BYTES);
    out.bytes(bytes);
  } else if (Array.isArray(v) || v instanceof Set) {
    const items = Array.isArray(v) ? v : [...v];
    out.byte(LIST);
    out.u32(items.length);
    for (const item of items) encodeInto(item, out, depth + 1);
  } else if (v instanceof Map) {
    out.byte(MAP);
    out.u32(v.size);
    for (const [k, item] of v) {
      if (typeof k !== 'string') throw new ValueError(`map keys are strings, not ${typeName(k)}`);
      out.str(k);
      encodeInto(item, out, depth + 1);
    }
  } else if (isPlainObject(v)) {
    const keys = Object.keys(v);
    out.byte(MAP);
    out.u32(keys.length);
    for (const k of keys) {
      out.str(k);
      encodeInto(v[k], out, depth + 1);
    }
  } else {
    throw new ValueError(`cannot send a ${typeName(v)}`);
  }
}

/**
 * The encoding of `value` as a list of byte buffers to write one after
 * another: small items packed together, byte strings of `BIG` bytes or more
 * left as views of the caller's buffer (copied once, into the ring slot).
 */
function encodeParts(value) {
  const out = new Parts();
  encodeInto(value, out, 0);
  return out.finish();
}

/** The encoding of `value` as one Buffer. */
function encode(value) {
  return Buffer.concat(encodeParts(value));
}

class Reader {
  constructor(view) {
    this.view = view;
    this.buf = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
    this.at = 0;
  }

  need(n) {
    if (this.at + n > this.buf.length) throw new ValueError(`value ends early at byte ${this.at}`);
  }

  u32() {
    this.need(4);
    const n = this.buf.readUInt32LE(this.at);
    this.at += 4;
    return n;
  }

  text(what) {
    const n = this.u32();
    this.need(n);
    const at = this.at;
    this.at += n;
    try {
      return utf8.decode(this.buf.subarray(at, at + n));
    } catch (_) {
      throw new ValueError(`${what} at byte ${at} is not UTF-8`);
    }
  }

  value(depth) {
    this.need(1);
    const tag = this.buf[this.at++];
    switch (tag) {
      case NONE:
        return null;
      case FALSE:
        return false;
      case TRUE:
        return true;
      case INT: {
        this.need(8);
        const n = this.buf.readBigInt64LE(this.at);
        this.at += 8;
        return n >= -9007199254740991n && n <= 9007199254740991n ? Number(n) : n;
      }
      case FLOAT: {
        this.need(8);
        const x = this.buf.readDoubleLE(this.at);
        this.at += 8;
        return x;
      }
      case STR:
        return this.text('string');
      case BYTES: {
        const n = this.u32();
        this.need(n);
        const chunk = this.buf.subarray(this.at, this.at + n);
        this.at += n;
        return chunk;
      }
      case LIST:
      case MAP: {
        if (depth >= MAX_DEPTH) throw new ValueError(`values nest deeper than ${MAX_DEPTH}`);
        const n = this.u32();
        if (n > this.buf.length - this.at) throw new ValueError(`value ends early at byte ${this.at}`);
        if (tag === LIST) {
          const items = new Array(n);
          for (let i = 0; i < n; i++) items[i] = this.value(depth + 1);
          return items;
        }
        const entries = {};
        for (let i = 0; i < n; i++) {
          const key = this.text('map key');
          if (Object.prototype.hasOwnProperty.call(entries, key)) {
            throw new ValueError(`map key ${JSON.stringify(key)} appears twice`);
          }
          const item = this.value(depth + 1);
          if (key === '__proto__') {
            // A key like any other, not the object's prototype.
            Object.defineProperty(entries, key, { value: item, enumerable: true, writable: true, configurable: true });
          } else {
            entries[key] = item;
          }
        }
        return entries;
      }
      default:
        throw new ValueError(`unknown value tag 0x${tag.toString(16).padStart(2, '0')} at byte ${this.at - 1}`);
    }
  }
}

/** Decodes exactly one value from a Uint8Array; byte strings stay views of it. */
function decode(view) {
  const r = new Reader(view);
  const value = r.value(0);
  if (r.at !== r.buf.length) throw new ValueError(`${r.buf.length - r.at} bytes follow the value`);
  return value;
}

module.exports = { encode, encodeParts, decode, ValueError, MAX_DEPTH, BIG };
