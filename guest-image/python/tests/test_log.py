"""What actors print: lines to the host, capped per message."""

import sys
import threading
import unittest

from reflow.log import MAX_LINE, GuestLog, LineWriter, install
from reflow.ring import Consumer, Metadata, Producer, read_layout
from reflow.value import decode, encode
from reflow.worker import DONE, ERROR, INVOKE, LOAD, LOADED, LOG, Worker

from test_ring import region


class Sent:
    def __init__(self):
        self.records = []

    def __call__(self, mid, aid, value):
        self.records.append((mid, aid, value))


def line(stream, text, cut=0):
    return {"stream": stream, "line": text, "cut": cut}


class GuestLogTest(unittest.TestCase):
    def setUp(self):
        self.sent = Sent()
        self.log = GuestLog(self.sent)
        self.out = LineWriter(self.log, "stdout")
        self.err = LineWriter(self.log, "stderr")

    def values(self):
        return [v for (_, _, v) in self.sent.records]

    def test_lines_go_out_as_their_newline_is_written_and_partials_at_the_end(self):
        self.log.begin(7, "node")
        print("hello", "world", file=self.out)
        self.err.write("par")
        self.err.write("tial")
        self.assertEqual(self.sent.records, [(7, "node", line("stdout", "hello world"))])
        self.out.write("a\nb\n\nc")
        self.log.end()
        self.assertEqual(self.values()[1:], [
            line("stdout", "a"), line("stdout", "b"), line("stdout", ""),
            line("stdout", "c"), line("stderr", "partial"),
        ])

    def test_past_the_caps_text_is_counted_not_sent(self):
        self.log.set_caps("node", {"lines": 3, "bytes": 1000})
        self.log.begin(1, "node")
        for i in range(100_000):
            print("x" * 99, file=self.out)
        self.log.end()
        self.assertEqual(self.values(), [line("stdout", "x" * 99)] * 3 + [
            {"dropped_lines": 99_997, "dropped_bytes": 99_997 * 100},
        ])
        # The next message has its caps again and no count.
        self.log.begin(2, "node")
        print("again", file=self.out)
        self.log.end()
        self.assertEqual(self.sent.records[-1], (2, "node", line("stdout", "again")))

    def test_the_byte_cap_ends_the_message_s_lines(self):
        self.log.set_caps("node", {"lines": 100, "bytes": 10})
        self.log.begin(1, "node")
        self.out.write("12345678\n123\nx\n")
        self.log.end()
        self.assertEqual(self.values(), [
            line("stdout", "12345678"), {"dropped_lines": 2, "dropped_bytes": 6},
        ])

    def test_long_lines_are_cut_and_the_cut_counted(self):
        self.log.begin(1, "node")
        self.out.write("y" * (MAX_LINE + 10))
        self.out.write("z" * 5 + "\n")
        self.log.end()
        self.assertEqual(self.values(), [line("stdout", "y" * MAX_LINE, 15)])

    def test_text_outside_a_message_is_counted_with_the_next(self):
        print("stray", file=self.out)
        self.log.begin(3, "node")
        self.log.end()
        self.assertEqual(self.values(), [{"dropped_lines": 1, "dropped_bytes": 6}])

    def test_other_threads_lines_are_sent_by_the_message_s_thread(self):
        self.log.begin(1, "node")
        t = threading.Thread(target=lambda: print("from a thread", file=self.out))
        t.start()
        t.join()
        self.assertEqual(self.sent.records, [], "only the message's thread writes the ring")
        self.log.end()
        self.assertEqual(self.values(), [line("stdout", "from a thread")])

    def test_other_threads_text_outside_a_message_is_counted_with_the_next(self):
        t = threading.Thread(target=lambda: print("late", file=self.out))
        t.start()
        t.join()
        self.log.begin(4, "node")
        self.log.end()
        self.assertEqual(self.values(), [{"dropped_lines": 1, "dropped_bytes": 5}])

    def test_bytes_through_buffer_and_bad_caps(self):
        self.log.set_caps("node", {"lines": -1, "bytes": "many"})
        self.log.begin(1, "node")
        self.out.buffer.write("é\n".encode())
        self.out.buffer.write(b"\xff\n")
        self.log.end()
        self.assertEqual(self.values(), [line("stdout", "é"), line("stdout", "\ufffd")])
        with self.assertRaises(TypeError):
            self.out.write(b"bytes")


class WorkerLogTest(unittest.TestCase):
    """Through the worker on a ring: LOG records come before the answer."""

    def test_prints_of_a_load_and_a_message_precede_their_answers(self):
        r = region()
        worker = Worker(r)
        h2g, g2h = read_layout(r)
        tx, rx = Producer(r, h2g), Consumer(r, g2h)
        source = ('print("loading")\n'
                  '@actor(name="P", inports=["i"], outports=["o"])\n'
                  'def p(context):\n'
                  '    import sys\n'
                  '    print("got", context.get_input("i"))\n'
                  '    print("oops", file=sys.stderr)\n'
                  '    if context.get_input("i") == 2:\n'
                  '        raise ValueError("two")\n'
                  '    return {"o": 1}\n')
        saved = sys.stdout, sys.stderr
        install(worker.log)
        try:
            def call(kind, mid, body):
                tx.send(Metadata(mid, 0, "node", "", kind), encode(body))
                worker.serve_one(worker.rx.recv(timeout=5.0))
                got = []
                while (r_ := rx.try_recv()) is not None:
                    got.append((r_.metadata.message_id, r_.metadata.kind, decode(r_.payload)))
                    rx.release(r_)
                return got
            got = call(LOAD, 1, {"name": "p.py", "source": source, "log": {"lines": 10, "bytes": 100}})
            self.assertEqual([(m, k) for (m, k, _) in got], [(1, LOG), (1, LOADED)])
            self.assertEqual(got[0][2], line("stdout", "loading"))
            got = call(INVOKE, 2, {"inputs": {"i": 1}, "config": {}})
            self.assertEqual([(k, v) for (_, k, v) in got], [
                (LOG, line("stdout", "got 1")), (LOG, line("stderr", "oops")), (DONE, {"o": 1}),
            ])
            got = call(INVOKE, 3, {"inputs": {"i": 2}, "config": {}})
            self.assertEqual([k for (_, k, _) in got], [LOG, LOG, ERROR])
        finally:
            sys.stdout, sys.stderr = saved
            worker.close()


if __name__ == "__main__":
    unittest.main()
