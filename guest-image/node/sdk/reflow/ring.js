'use strict';
// The host<->guest message ring in JavaScript: the layout and record format
// of the `reflow-ring` crate (ring/src/layout.rs and record.rs), as the
// Python SDK's ring.py has them.
//
// A region is an ArrayBuffer over the shared memory (the reflow_shm addon
// maps /dev/mem into one). Records are read in place: `Consumer.recv()`
// returns a record whose `payload` is a Uint8Array over the ring slot, valid
// until `release()`. Everything the other side wrote is checked (magic,
// version, lengths, positions, sequence, CRC-32); a violation throws
// RingError. Positions are read and written with Atomics on 64-bit words.

const REGION_MAGIC = Buffer.from('RFLWSHM1');
const LAYOUT_VERSION = 1;
const PAGE = 4096;
const HEAD = 0;
const TAIL = 64;
const MIN_CAPACITY = 16 * PAGE;
const MAGIC = Buffer.from('RFLW');
const VERSION = 1;
const FLAG_PADDING = 1;
const HEADER_LEN = 64;
const METADATA_LEN = 256;
const ALIGN = 64;
const NAME_MAX = 111;

/** The other side broke the ring protocol (or the ring is full). */
class RingError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RingError';
  }
}

/** No room for the record now; try again later (backpressure). */
class Full extends RingError {
  constructor(message) {
    super(message);
    this.name = 'Full';
  }
}

function recordLen(size) {
  return Math.ceil((HEADER_LEN + METADATA_LEN + size) / ALIGN) * ALIGN;
}

function layoutForSize(size) {
  const capacity = Math.floor(Math.floor(Math.max(size - 3 * PAGE, 0) / 2) / PAGE) * PAGE;
  if (capacity < MIN_CAPACITY) throw new RingError(`a ${size}-byte region is too small for two rings`);
  const h2g = { control: PAGE, data: 2 * PAGE, capacity };
  const g2hControl = h2g.data + capacity;
  return [h2g, { control: g2hControl, data: g2hControl + PAGE, capacity }];
}

/** The region: byte, DataView and 64-bit word views of one ArrayBuffer. */
class Region {
  constructor(buffer, crc32) {
    this.buffer = buffer;
    this.bytes = Buffer.from(buffer);
    this.words = new BigUint64Array(buffer, 0, Math.floor(buffer.byteLength / 8));
    this.crc32 = crc32;
  }

  get length() {
    return this.bytes.length;
  }

  word(offset) {
    if (offset % 8) throw new RingError(`ring position at unaligned offset 0x${offset.toString(16)}`);
    return offset / 8;
  }

  load(index) {
    const v = Atomics.load(this.words, index);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RingError('ring position beyond 2^53');
    return Number(v);
  }

  store(index, value) {
    Atomics.store(this.words, index, BigInt(value));
  }
}

/** Checks the region header the host wrote; returns [hostToGuest, guestToHost]. */
function readLayout(region) {
  const b = region.bytes;
  if (!b.subarray(0, 8).equals(REGION_MAGIC)) throw new RingError('not a ring region (bad magic)');
  const version = b.readUInt32LE(8);
  if (version !== LAYOUT_VERSION) throw new RingError(`ring layout version ${version} is not supported`);
  const size = Number(b.readBigUInt64LE(16));
  if (size !== b.length) throw new RingError('region size differs from the mapping');
  const [h2g, g2h] = layoutForSize(size);
  const expected = [h2g.control, h2g.data, h2g.capacity, g2h.control, g2h.data, g2h.capacity];
  for (let i = 0; i < 6; i++) {
    if (Number(b.readBigUInt64LE(24 + 8 * i)) !== expected[i]) {
      throw new RingError('ring table differs from the standard layout');
    }
  }
  return [h2g, g2h];
}

/** Writes the region header the host writes into `buffer` (tests, warm-up). */
function writeLayout(buffer) {
  const b = Buffer.from(buffer);
  REGION_MAGIC.copy(b, 0);
  b.writeUInt32LE(LAYOUT_VERSION, 8);
  b.writeBigUInt64LE(BigInt(b.length), 16);
  const [h2g, g2h] = layoutForSize(b.length);
  [h2g.control, h2g.data, h2g.capacity, g2h.control, g2h.data, g2h.capacity].forEach((v, i) =>
    b.writeBigUInt64LE(BigInt(v), 24 + 8 * i));
  return buffer;
}

class Metadata {
  constructor(messageId = 0n, timestampNs = 0n, actorId = '', port = '', kind = 0) {
    this.messageId = BigInt(messageId);
    this.timestampNs = BigInt(timestampNs);
    this.actorId = actorId;
    this.port = port;
    this.kind = kind;
  }

  /** Writes the 256 metadata bytes at `at` of `bytes`. */
  encodeInto(bytes, at) {
    bytes.fill(0, at, at + METADATA_LEN);
    bytes.writeBigUInt64LE(this.messageId, at);
    bytes.writeBigUInt64LE(this.timestampNs, at + 8);
    for (const [off, value] of [[16, this.actorId], [128, this.port]]) {
      const n = Buffer.byteLength(value);
      if (n > NAME_MAX) throw new RingError(`name of ${n} bytes is over the ${NAME_MAX}-byte limit`);
      bytes[at + off] = n;
      bytes.write(value, at + off + 1, 'utf8');
    }
    bytes.writeUInt32LE(this.kind, at + 240);
  }

  static decode(m) {
    const names = [];
    for (const off of [16, 128]) {
      const n = m[off];
      if (n > NAME_MAX) throw new RingError('metadata name too long');
      try {
        names.push(utf8.decode(m.subarray(off + 1, off + 1 + n)));
      } catch (_) {
        throw new RingError('metadata name is not UTF-8');
      }
    }
    return new Metadata(m.readBigUInt64LE(0), m.readBigUInt64LE(8), names[0], names[1], m.readUInt32LE(240));
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// Polls of an empty ring before sleeping: about SPIN_MS. Longer than the
// host's default idle hold (20 ms): a node's VM idle that long is held by
// the host (its vCPUs stop, so the spin costs nothing more) while its
// worker still spins, and the next message releases it into a worker that
// sees the record on its next poll. A sleeping worker instead wakes through
// a guest timer interrupt, emulated guest kernel work where the guest
// kernel is emulated (a 1 ms sleep took 7 ms, p50, on an AMD EPYC kvm_pvm
// host; see ring.py). A count, not a clock: a clock read is a system call
// there (15-50 us), and a restored clone's wall clock jumps when the agent
// sets it (a spin bounded by `Date.now()` ended early in clones of an older
// golden). `calibrateSpin` sets the count from the measured cost of a poll
// (the worker calibrates during its warm-up, before the golden snapshot).
const SPIN_MS = 50;
// The longest spin a host may ask for (`setSpin`): past it, sleeping.
const MAX_SPIN_MS = 1000;
let spinPolls = 20000;
// Polls a millisecond measured by `calibrateSpin` (0 before: tests, tools).
let pollsPerMs = 0;
// Longest sleep between polls of an idle ring once the spin is spent (a VM
// nobody holds), in milliseconds (every wake-up is guest kernel work; see
// ring.py).
const MAX_SLEEP_MS = 10;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Spins, then sleeps growing; `wait()` is false once `timeoutMs` passed. */
class Backoff {
  constructor(timeoutMs) {
    this.timeoutMs = timeoutMs;
    this.polls = 0;
    this.started = -1;
    this.sleepMs = 0.02;
  }

  wait() {
    if (this.polls < spinPolls) {
      this.polls += 1;
      return true;
    }
    // Sleeping: the monotonic clock (not the wall clock the agent sets).
    const now = performance.now();
    if (this.started < 0) this.started = now;
    if (now - this.started > this.timeoutMs) return false;
    Atomics.wait(sleeper, 0, 0, this.sleepMs);
    this.sleepMs = Math.min(this.sleepMs * 2, MAX_SLEEP_MS);
    return true;
  }
}

/**
 * Sets how many polls of an empty ring make SPIN_MS, timing `polls` polls
 * of `consumer` (whose ring must be empty) five times and keeping the
 * fastest: the first rounds run before V8 has optimized the loop, and a
 * count calibrated on them would spin for a fraction of SPIN_MS. Returns
 * the count.
 */
function calibrateSpin(consumer, polls = 200000) {
  let best = Infinity;
  for (let round = 0; round < 5; round++) {
    const started = performance.now();
    for (let i = 0; i < polls; i++) {
      if (consumer.tryRecv() !== null) throw new RingError('calibrating on a ring that is not empty');
    }
    best = Math.min(best, performance.now() - started);
  }
  pollsPerMs = polls / Math.max(best, 1e-3);
  return setSpin(SPIN_MS);
}

/**
 * Spins about `ms` (at most MAX_SPIN_MS) before sleeping, as the host asks
 * on LOAD (past its idle hold). Returns the count of polls; before
 * `calibrateSpin`, the count stays as it is.
 */
function setSpin(ms) {
  if (pollsPerMs > 0) {
    const spin = Math.min(Math.max(ms, 0), MAX_SPIN_MS);
    spinPolls = Math.round(Math.min(Math.max(pollsPerMs * spin, 2000), 5e7));
  }
  return spinPolls;
}

class Producer {
  constructor(region, ring) {
    this.region = region;
    this.ring = ring;
    this.head = 0;
    this.sequence = 0n;
    this.headWord = region.word(ring.control + HEAD);
    this.tailWord = region.word(ring.control + TAIL);
  }

  tail() {
    const tail = this.region.load(this.tailWord);
    if (tail > this.head || this.head - tail > this.ring.capacity) {
      throw new RingError('consumer position out of range');
    }
    return tail;
  }

  /** Appends one record whose payload is `parts` (Uint8Arrays) one after another, or throws Full. */
  trySendParts(meta, parts) {
    const { capacity: cap, data } = this.ring;
    const bytes = this.region.bytes;
    let size = 0;
    for (const p of parts) size += p.length;
    const length = recordLen(size);
    if (length > cap) throw new RingError(`a ${length}-byte record does not fit a ${cap}-byte ring`);
    let free = cap - (this.head - this.tail());
    const pos = this.head % cap;
    const toEnd = cap - pos;
    if (length > toEnd) {
      if (toEnd > free) throw new Full(`${toEnd} bytes needed, ${free} free`);
      const at = data + pos;
      bytes.fill(0, at, at + HEADER_LEN);
      MAGIC.copy(bytes, at);
      bytes[at + 4] = VERSION;
      bytes[at + 5] = FLAG_PADDING;
      bytes.writeUInt32LE(toEnd, at + 16);
      this.head += toEnd;
      this.region.store(this.headWord, this.head);
      free -= toEnd;
    }
    if (length > free) throw new Full(`${length} bytes needed, ${free} free`);
    const at = data + (this.head % cap);
    const body = at + HEADER_LEN;
    meta.encodeInto(bytes, body);
    let crc = this.region.crc32(bytes.subarray(body, body + METADATA_LEN), 0);
    let atPart = body + METADATA_LEN;
    for (const part of parts) {
      bytes.set(part, atPart);
      crc = this.region.crc32(part, crc);
      atPart += part.length;
    }
    bytes.fill(0, at, at + HEADER_LEN);
    MAGIC.copy(bytes, at);
    bytes[at + 4] = VERSION;
    bytes.writeUInt32LE(size, at + 8);
    bytes.writeUInt32LE(crc, at + 12);
    bytes.writeUInt32LE(length, at + 16);
    bytes.writeBigUInt64LE(this.sequence, at + 24);
    this.head += length;
    this.sequence += 1n;
    this.region.store(this.headWord, this.head);
  }

  /** `trySendParts`, waiting with back-off while the ring is full. */
  sendParts(meta, parts, timeoutMs = 60000) {
    const backoff = new Backoff(timeoutMs);
    for (;;) {
      try {
        return this.trySendParts(meta, parts);
      } catch (e) {
        if (!(e instanceof Full) || !backoff.wait()) throw e;
      }
    }
  }
}

/**
 * Reads records in order. Several may be held at once (an invocation's
 * record stays held while the state replies that follow it are read);
 * space goes back to the producer as the oldest held records are released.
 */
class Consumer {
  constructor(region, ring) {
    this.region = region;
    this.ring = ring;
    this.tail = 0;
    this.read = 0;
    this.readSequence = 0n;
    // Records read and not yet given back: {sequence, length, released}.
    this.held = [];
    this.headWord = region.word(ring.control + HEAD);
    this.tailWord = region.word(ring.control + TAIL);
  }

  /** The next record (checked, payload in place) or null. */
  tryRecv() {
    const { capacity: cap, data } = this.ring;
    const b = this.region.bytes;
    for (;;) {
      const head = this.region.load(this.headWord);
      if (head < this.read || head - this.tail > cap) throw new RingError('producer position out of range');
      const avail = head - this.read;
      if (avail === 0) return null;
      if (avail < HEADER_LEN) throw new RingError('partial record header published');
      const pos = this.read % cap;
      const toEnd = cap - pos;
      const at = data + pos;
      if (b.compare(MAGIC, 0, 4, at, at + 4) !== 0) {
        throw new RingError(`bad record magic ${JSON.stringify(b.toString('latin1', at, at + 4))}`);
      }
      if (b[at + 4] !== VERSION) throw new RingError(`record version ${b[at + 4]} is not supported`);
      const flags = b[at + 5];
      const size = b.readUInt32LE(at + 8);
      const crc = b.readUInt32LE(at + 12);
      const length = b.readUInt32LE(at + 16);
      const sequence = b.readBigUInt64LE(at + 24);
      if (flags & FLAG_PADDING) {
        if (size !== 0 || length !== toEnd || length % ALIGN || flags & ~FLAG_PADDING) {
          throw new RingError('malformed padding record');
        }
        if (length > avail) throw new RingError('padding runs past the published data');
        this.read += toEnd;
        if (this.held.length === 0) {
          this.tail = this.read;
          this.region.store(this.tailWord, this.tail);
        } else {
          this.held.push({ sequence: null, length: toEnd, released: true });
        }
        continue;
      }
      if (flags || recordLen(size) !== length) {
        throw new RingError(`record length ${length} is invalid for a ${size}-byte payload`);
      }
      if (length > toEnd || length > avail) throw new RingError('record runs past the published data or the ring end');
      if (sequence !== this.readSequence) {
        throw new RingError(`record out of sequence: expected ${this.readSequence}, found ${sequence}`);
      }
      const body = at + HEADER_LEN;
      const metaRaw = b.subarray(body, body + METADATA_LEN);
      const payload = b.subarray(body + METADATA_LEN, body + METADATA_LEN + size);
      const computed = this.region.crc32(payload, this.region.crc32(metaRaw, 0));
      if (computed !== crc) {
        throw new RingError(`record checksum mismatch (stored 0x${hex(crc)}, computed 0x${hex(computed)})`);
      }
      const record = { metadata: Metadata.decode(metaRaw), payload, sequence, length };
      this.read += length;
      this.readSequence += 1n;
      this.held.push({ sequence, length, released: false });
      return record;
    }
  }

  /** Gives a record's space back (once every older one is released). */
  release(record) {
    const entry = this.held.find((e) => e.sequence === record.sequence && !e.released);
    if (!entry) throw new RingError('released a record that is not held');
    entry.released = true;
    let moved = false;
    while (this.held.length > 0 && this.held[0].released) {
      this.tail += this.held.shift().length;
      moved = true;
    }
    if (moved) this.region.store(this.tailWord, this.tail);
  }

  /** The next record, waiting with back-off; null after `timeoutMs`. */
  recv(timeoutMs = 60000) {
    const backoff = new Backoff(timeoutMs);
    for (;;) {
      const r = this.tryRecv();
      if (r !== null) return r;
      if (!backoff.wait()) return null;
    }
  }
}

function hex(n) {
  return n.toString(16).padStart(8, '0');
}

module.exports = {
  Region,
  readLayout,
  writeLayout,
  layoutForSize,
  Metadata,
  Producer,
  Consumer,
  RingError,
  Full,
  calibrateSpin,
  setSpin,
  recordLen,
  HEADER_LEN,
  METADATA_LEN,
  REGION_MAGIC,
  LAYOUT_VERSION,
  PAGE,
};
