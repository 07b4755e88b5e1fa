"""The Python ring codec on an in-memory region (its agreement with the
Rust codec is tested in a real guest by tests/python.rs)."""

import struct
import time
import unittest

from reflow import ring
from reflow.ring import (
    MIN_CAPACITY, PAGE, REGION_MAGIC, SPIN_SECONDS, Consumer, Full, Metadata, Producer,
    RingError, calibrate_spin, layout_for_size, read_layout, set_spin,
)

SIZE = 3 * PAGE + 2 * MIN_CAPACITY


def region():
    r = memoryview(bytearray(SIZE))
    h2g, g2h = layout_for_size(SIZE)
    r[0:8] = REGION_MAGIC
    struct.pack_into("<IIQ", r, 8, 1, 0, SIZE)
    struct.pack_into("<6Q", r, 24, h2g.control, h2g.data, h2g.capacity,
                     g2h.control, g2h.data, g2h.capacity)
    return r


class RingTest(unittest.TestCase):
    def test_round_trips_with_wraps(self):
        r = region()
        h2g, _ = read_layout(r)
        p, c = Producer(r, h2g), Consumer(r, h2g)
        for i in range(300):
            payload = bytes((i * 7 + j) & 255 for j in range(i * 37 % 5000))
            p.send(Metadata(i, i, "actor", "in", 1), payload)
            rec = c.recv()
            self.assertEqual(rec.metadata.message_id, i)
            self.assertEqual(rec.metadata.actor_id, "actor")
            self.assertEqual(bytes(rec.payload), payload)
            c.release(rec)
        self.assertIsNone(c.try_recv())

    def test_a_payload_in_parts_is_one_checked_record(self):
        r = region()
        h2g, _ = read_layout(r)
        p, c = Producer(r, h2g), Consumer(r, h2g)
        parts = [b"head", memoryview(bytes(range(256)) * 40), bytearray(b""), b"tail"]
        p.send_parts(Metadata(1, 0, "a", "out", 4), parts)
        rec = c.recv()
        self.assertEqual(bytes(rec.payload), b"".join(bytes(x) for x in parts))
        c.release(rec)

    def test_full_ring_refuses_instead_of_dropping(self):
        r = region()
        h2g, _ = read_layout(r)
        p = Producer(r, h2g)
        sent = 0
        with self.assertRaises(Full):
            while True:
                p.try_send(Metadata(sent), bytes(4000))
                sent += 1
        c = Consumer(r, h2g)
        for i in range(sent):
            rec = c.recv()
            self.assertEqual(rec.metadata.message_id, i)
            c.release(rec)

    def test_the_idle_spin_is_calibrated_from_the_cost_of_a_poll(self):
        r = region()
        h2g, _ = read_layout(r)
        c = Consumer(r, h2g)
        before = ring._spin_polls, ring._polls_per_second
        try:
            polls = calibrate_spin(c, 2000)
            self.assertEqual(ring._spin_polls, polls)
            self.assertTrue(2000 <= polls <= 5e7, polls)
            # The count spins about SPIN_SECONDS here too (a loaded host
            # only makes it longer), never a fraction of it.
            started = time.perf_counter()
            for _ in range(polls):
                c.try_recv()
            self.assertGreater(time.perf_counter() - started, SPIN_SECONDS / 4)
            # What the host asks for on LOAD, within bounds.
            self.assertAlmostEqual(set_spin(SPIN_SECONDS * 4) / polls, 4, delta=0.01)
            self.assertEqual(set_spin(3600), set_spin(ring.MAX_SPIN_SECONDS))
            self.assertEqual(set_spin(-1), 2000)
            Producer(r, h2g).send(Metadata(1), b"x")
            with self.assertRaisesRegex(RingError, "not empty"):
                calibrate_spin(c, 10)
        finally:
            ring._spin_polls, ring._polls_per_second = before

    def test_hostile_bytes_are_errors(self):
        r = region()
        h2g, _ = read_layout(r)
        p, c = Producer(r, h2g), Consumer(r, h2g)
        p.send(Metadata(1), b"hello")
        r[h2g.data + 64 + 256] ^= 1  # payload byte: checksum mismatch
        with self.assertRaisesRegex(RingError, "checksum"):
            c.try_recv()
        r2 = region()
        h2g, _ = read_layout(r2)
        struct.pack_into("<Q", r2, h2g.control, 1 << 40)  # head far away
        with self.assertRaisesRegex(RingError, "position"):
            Consumer(r2, h2g).try_recv()
        r3 = region()
        r3[0] = 0
        with self.assertRaisesRegex(RingError, "magic"):
            read_layout(r3)


if __name__ == "__main__":
    unittest.main()


class HeldRecordsTest(unittest.TestCase):
    def test_records_read_past_a_held_one_and_space_returns_in_order(self):
        r = region()
        h2g, _ = read_layout(r)
        p, c = Producer(r, h2g), Consumer(r, h2g)
        p.send(Metadata(1), b"invoke")
        p.send(Metadata(2), b"state reply")
        first = c.recv()
        second = c.recv()
        self.assertEqual((bytes(first.payload), bytes(second.payload)), (b"invoke", b"state reply"))
        c.release(second)
        self.assertEqual(c.tail, 0, "space waits for the older record")
        c.release(first)
        self.assertEqual(c.tail, c.read)
        with self.assertRaises(RingError):
            c.release(first)

    def test_wraps_while_holding(self):
        r = region()
        h2g, _ = read_layout(r)
        p, c = Producer(r, h2g), Consumer(r, h2g)
        for i in range(200):
            p.send(Metadata(i), bytes(3000))
            held = c.recv()
            p.send(Metadata(i + 1000), b"reply")
            reply = c.recv()
            self.assertEqual(reply.metadata.message_id, i + 1000)
            c.release(reply)
            c.release(held)
