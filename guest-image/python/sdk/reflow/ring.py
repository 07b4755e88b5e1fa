"""The host<->guest message ring, in Python: the same layout and record
format as the `reflow-ring` crate (see ring/src/layout.rs and record.rs).

A region is a `memoryview` over the shared memory (an mmap of /dev/mem in
the guest). Records are read in place: `Consumer.recv()` returns a `Record`
whose `payload` is a memoryview over the ring slot, valid until `release()`.
Everything the other side wrote is checked (magic, version, lengths,
positions, sequence, CRC-32) and a violation raises `RingError`.
"""

import mmap
import os
import struct
import sys
import time
import zlib

if sys.byteorder != "little":
    raise ImportError("the ring's positions are little-endian native words")

REGION_MAGIC = b"RFLWSHM1"
LAYOUT_VERSION = 1
PAGE = 4096
HEAD, TAIL = 0, 64
MIN_CAPACITY = 16 * PAGE

MAGIC = b"RFLW"
VERSION = 1
FLAG_PADDING = 1
HEADER_LEN = 64
METADATA_LEN = 256
ALIGN = 64
NAME_MAX = 111


class RingError(Exception):
    """The other side broke the ring protocol (or the ring is full)."""


class Full(RingError):
    """No room for the record now; try again later (backpressure)."""


def record_len(size):
    return (HEADER_LEN + METADATA_LEN + size + ALIGN - 1) // ALIGN * ALIGN


class Ring:
    """One ring's place in the region: control page, data area, capacity."""

    def __init__(self, control, data, capacity):
        self.control, self.data, self.capacity = control, data, capacity


def layout_for_size(size):
    capacity = (max(size - 3 * PAGE, 0) // 2) // PAGE * PAGE
    if capacity < MIN_CAPACITY:
        raise RingError(f"a {size}-byte region is too small for two rings")
    h2g = Ring(PAGE, 2 * PAGE, capacity)
    g2h = Ring(h2g.data + capacity, h2g.data + capacity + PAGE, capacity)
    return h2g, g2h


def read_layout(region):
    """Checks the region header the host wrote; returns (host->guest,
    guest->host) rings."""
    if bytes(region[0:8]) != REGION_MAGIC:
        raise RingError("not a ring region (bad magic)")
    version, _, size = struct.unpack_from("<IIQ", region, 8)
    if version != LAYOUT_VERSION:
        raise RingError(f"ring layout version {version} is not supported")
    if size != len(region):
        raise RingError("region size differs from the mapping")
    h2g, g2h = layout_for_size(size)
    expected = [h2g.control, h2g.data, h2g.capacity, g2h.control, g2h.data, g2h.capacity]
    if list(struct.unpack_from("<6Q", region, 24)) != expected:
        raise RingError("ring table differs from the standard layout")
    return h2g, g2h


def map_region(addr, size, path="/dev/mem"):
    """Maps `size` bytes at `addr` of `path`: guest physical memory in a VM,
    the ring's memfd (`/proc/self/fd/3`) in a process worker's jail."""
    fd = os.open(path, os.O_RDWR | os.O_SYNC)
    try:
        m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=addr)
    finally:
        os.close(fd)
    return m


class Metadata:
    __slots__ = ("message_id", "timestamp_ns", "actor_id", "port", "kind")

    def __init__(self, message_id=0, timestamp_ns=0, actor_id="", port="", kind=0):
        self.message_id, self.timestamp_ns = message_id, timestamp_ns
        self.actor_id, self.port, self.kind = actor_id, port, kind

    def encode(self):
        m = bytearray(METADATA_LEN)
        struct.pack_into("<QQ", m, 0, self.message_id, self.timestamp_ns)
        for at, value in ((16, self.actor_id), (128, self.port)):
            b = value.encode()
            if len(b) > NAME_MAX:
                raise RingError(f"name of {len(b)} bytes is over the {NAME_MAX}-byte limit")
            m[at] = len(b)
            m[at + 1 : at + 1 + len(b)] = b
        struct.pack_into("<I", m, 240, self.kind)
        return m

    @classmethod
    def decode(cls, m):
        message_id, timestamp_ns = struct.unpack_from("<QQ", m, 0)
        names = []
        for at in (16, 128):
            n = m[at]
            if n > NAME_MAX:
                raise RingError("metadata name too long")
            try:
                names.append(bytes(m[at + 1 : at + 1 + n]).decode())
            except UnicodeDecodeError:
                raise RingError("metadata name is not UTF-8") from None
        (kind,) = struct.unpack_from("<I", m, 240)
        return cls(message_id, timestamp_ns, names[0], names[1], kind)


class Record:
    """A received record; `payload` is a memoryview into the ring."""

    __slots__ = ("metadata", "payload", "sequence", "length")

    def __init__(self, metadata, payload, sequence, length):
        self.metadata, self.payload, self.sequence, self.length = metadata, payload, sequence, length


# How long an idle worker spins before it sleeps, in seconds, as a count of
# polls (`calibrate_spin` measures what a poll costs during the golden's
# warm-up). Longer than the host's default idle hold (20 ms): a node's VM
# idle that long is held by the host (its vCPUs stop, so the spin costs
# nothing more) while its worker still spins, and the next message releases
# it into a worker that sees the record on its next poll. A sleeping worker
# instead wakes through a guest timer interrupt, which is emulated guest
# kernel work on kvm_pvm hosts: a 1 ms sleep took 7 ms (p50) on an AMD EPYC
# one. A count, not a clock: a golden snapshot's worker resumes in a clone
# whose clock may differ from the one it read before the snapshot, and a
# spin bounded by time could then hold the only vCPU for as long as the
# clocks disagree (nothing else in the guest would run, not even the agent).
SPIN_SECONDS = 0.050
# The longest spin a host may ask for (`set_spin`): past it, sleeping.
MAX_SPIN_SECONDS = 1.0
# Polls a second measured by `calibrate_spin` (None before: tests, tools).
_polls_per_second = None
# Polls before sleeping until `calibrate_spin` has run.
_spin_polls = 2000
# Longest sleep between polls of an idle ring once the spin is spent (a
# VM nobody holds). Every wake-up is guest kernel work; 10 ms bounds that
# cost at ~10 % of a vCPU on hosts that emulate it at ~1 ms a wake-up.
MAX_SLEEP = 0.010


def calibrate_spin(consumer, polls=20000):
    """Sets how many polls of an empty ring make SPIN_SECONDS, timing
    `polls` polls of `consumer` (whose ring must be empty) five times and
    keeping the fastest round (the others met interrupts or a busy host).
    Returns the count."""
    global _polls_per_second
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(polls):
            if consumer.try_recv() is not None:
                raise RingError("calibrating on a ring that is not empty")
        best = min(best, time.perf_counter() - started)
    _polls_per_second = polls / max(best, 1e-6)
    return set_spin(SPIN_SECONDS)


def set_spin(seconds):
    """Spins about `seconds` (at most MAX_SPIN_SECONDS) before sleeping, as
    the host asks on LOAD (past its idle hold). Returns the count of polls;
    before `calibrate_spin`, the count stays as it is."""
    global _spin_polls
    if _polls_per_second is not None:
        seconds = min(max(seconds, 0.0), MAX_SPIN_SECONDS)
        _spin_polls = round(min(max(_polls_per_second * seconds, 2000), 5e7))
    return _spin_polls


class _Backoff:
    """Spins the calibrated count of polls, then sleeps growing up to
    MAX_SLEEP. The clock is read only once sleeping (a clock read may be a
    system call), so `timeout` counts from the first sleep."""

    def __init__(self, timeout):
        self.polls, self.sleep, self.timeout, self.started = 0, 20e-6, timeout, None

    def wait(self):
        """Waits a little; False once `timeout` has passed."""
        if self.polls < _spin_polls:
            self.polls += 1
            return True
        now = time.monotonic()
        if self.started is None:
            self.started = now
        elif now - self.started > self.timeout:
            return False
        time.sleep(self.sleep)
        self.sleep = min(self.sleep * 2, MAX_SLEEP)
        return True


def _word(region, offset):
    """The 8-byte position at `offset` as a one-item memoryview: indexing it
    loads or stores all 8 bytes at once (one aligned `mov` on x86), where
    struct's little-endian codecs move one byte at a time and the other
    side could read a half-written position."""
    if offset % 8:
        raise RingError(f"ring position at unaligned offset {offset:#x}")
    return region[offset : offset + 8].cast("Q")


class Producer:
    def __init__(self, region, ring):
        self.region, self.ring = region, ring
        self.head, self.sequence = 0, 0
        self.head_word = _word(region, ring.control + HEAD)
        self.tail_word = _word(region, ring.control + TAIL)

    def _tail(self):
        tail = self.tail_word[0]
        if tail > self.head or self.head - tail > self.ring.capacity:
            raise RingError("consumer position out of range")
        return tail

    def _publish(self):
        self.head_word[0] = self.head

    def try_send(self, meta, payload):
        """Appends one record or raises Full."""
        self.try_send_parts(meta, [payload])

    def try_send_parts(self, meta, parts):
        """Appends one record whose payload is the byte buffers `parts`
        one after another, each copied straight into the slot; or raises
        Full."""
        cap = self.ring.capacity
        parts = [memoryview(p).cast("B") for p in parts]
        size = sum(len(p) for p in parts)
        length = record_len(size)
        if length > cap:
            raise RingError(f"a {length}-byte record does not fit a {cap}-byte ring")
        meta_bytes = meta.encode()
        free = cap - (self.head - self._tail())
        pos = self.head % cap
        to_end = cap - pos
        if length > to_end:
            if to_end > free:
                raise Full(f"{to_end} bytes needed, {free} free")
            pad = bytearray(HEADER_LEN)
            pad[0:4], pad[4], pad[5] = MAGIC, VERSION, FLAG_PADDING
            struct.pack_into("<I", pad, 16, to_end)
            at = self.ring.data + pos
            self.region[at : at + HEADER_LEN] = pad
            self.head += to_end
            self._publish()
            free -= to_end
        if length > free:
            raise Full(f"{length} bytes needed, {free} free")
        at = self.ring.data + self.head % cap
        body = at + HEADER_LEN
        self.region[body : body + METADATA_LEN] = meta_bytes
        crc = zlib.crc32(meta_bytes)
        at_part = body + METADATA_LEN
        for part in parts:
            self.region[at_part : at_part + len(part)] = part
            crc = zlib.crc32(part, crc)
            at_part += len(part)
        header = bytearray(HEADER_LEN)
        header[0:4], header[4] = MAGIC, VERSION
        struct.pack_into("<IIIxxxxQ", header, 8, size, crc, length, self.sequence)
        self.region[at : at + HEADER_LEN] = header
        self.head += length
        self.sequence += 1
        self._publish()

    def send(self, meta, payload, timeout=60.0):
        self.send_parts(meta, [payload], timeout)

    def send_parts(self, meta, parts, timeout=60.0):
        """`try_send_parts`, waiting with back-off while the ring is full."""
        backoff = _Backoff(timeout)
        while True:
            try:
                return self.try_send_parts(meta, parts)
            except Full:
                if not backoff.wait():
                    raise


class Consumer:
    """Reads records in order. Several may be held at once (a worker keeps
    an invocation's record, whose payload it reads in place, while it reads
    the state replies that follow); space goes back to the producer as the
    oldest held records are released."""

    def __init__(self, region, ring):
        self.region, self.ring = region, ring
        self.tail, self.sequence = 0, 0
        # Where the next record is read, and the records read but not yet
        # given back: [sequence, length, released].
        self.read, self.read_sequence = 0, 0
        self.held = []
        self.head_word = _word(region, ring.control + HEAD)
        self.tail_word = _word(region, ring.control + TAIL)

    def try_recv(self):
        """The next record (checked, payload in place) or None."""
        cap = self.ring.capacity
        while True:
            head = self.head_word[0]
            if head < self.read or head - self.tail > cap:
                raise RingError("producer position out of range")
            avail = head - self.read
            if avail == 0:
                return None
            if avail < HEADER_LEN:
                raise RingError("partial record header published")
            pos = self.read % cap
            to_end = cap - pos
            at = self.ring.data + pos
            h = self.region[at : at + HEADER_LEN]
            if bytes(h[0:4]) != MAGIC:
                raise RingError(f"bad record magic {bytes(h[0:4])!r}")
            if h[4] != VERSION:
                raise RingError(f"record version {h[4]} is not supported")
            flags = h[5]
            size, crc, length, sequence = struct.unpack_from("<IIIxxxxQ", h, 8)
            if flags & FLAG_PADDING:
                if size != 0 or length != to_end or length % ALIGN or flags & ~FLAG_PADDING:
                    raise RingError("malformed padding record")
                if length > avail:
                    raise RingError("padding runs past the published data")
                self.read += to_end
                if not self.held:
                    self.tail = self.read
                    self.tail_word[0] = self.tail
                else:
                    self.held.append([None, to_end, True])
                continue
            if flags or record_len(size) != length:
                raise RingError(f"record length {length} is invalid for a {size}-byte payload")
            if length > to_end or length > avail:
                raise RingError("record runs past the published data or the ring end")
            if sequence != self.read_sequence:
                raise RingError(f"record out of sequence: expected {self.read_sequence}, found {sequence}")
            body = at + HEADER_LEN
            meta_raw = self.region[body : body + METADATA_LEN]
            payload = self.region[body + METADATA_LEN : body + METADATA_LEN + size]
            computed = zlib.crc32(payload, zlib.crc32(meta_raw))
            if computed != crc:
                raise RingError(f"record checksum mismatch (stored {crc:#010x}, computed {computed:#010x})")
            record = Record(Metadata.decode(meta_raw), payload, sequence, length)
            self.read += length
            self.read_sequence += 1
            self.held.append([sequence, length, False])
            return record

    def release(self, record):
        """Gives a record's space back (once every older one is released)."""
        for entry in self.held:
            if entry[0] == record.sequence and not entry[2]:
                entry[2] = True
                break
        else:
            raise RingError("released a record that is not held")
        moved = False
        while self.held and self.held[0][2]:
            self.tail += self.held.pop(0)[1]
            moved = True
        if moved:
            self.tail_word[0] = self.tail

    def recv(self, timeout=60.0):
        """The next record, waiting with back-off; None after `timeout`."""
        backoff = _Backoff(timeout)
        while True:
            r = self.try_recv()
            if r is not None:
                return r
            if not backoff.wait():
                return None
