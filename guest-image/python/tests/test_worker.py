"""The worker's protocol on an in-memory region; the test plays the host
while the worker runs on a thread."""

import gc
import random
import threading
import unittest
import weakref

from reflow import ring
from reflow.ring import Consumer, Metadata, Producer, read_layout
from reflow.value import decode, encode
from reflow.worker import (
    COLLECT, DONE, ERROR, INVOKE, LOAD, LOADED, OUTPUT, STATE, STATE_REPLY, PreloadError, Worker,
    freeze_heap, preload, preload_list, warm_up,
)
from reflow.progress import ImportCounter, Progress

from test_ring import region

COUNTER = '''
@actor(name="Counter", inports=["input"], outports=["output", "size"])
async def process(context):
    n = await context.state.increment("calls")
    data = context.get_input("input")
    await context.send_output("size", len(data))
    await context.send_output("output", data)
    return {"calls": n}
'''


class Host:
    def __init__(self):
        r = region()
        self.worker = Worker(r)
        h2g, g2h = read_layout(r)
        self.tx, self.rx = Producer(r, h2g), Consumer(r, g2h)
        self.store = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,))
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.worker.close()

    def call(self, kind, mid, body):
        """Sends one message; answers state requests; returns what came back."""
        self.tx.send(Metadata(mid, 0, "node", "", kind), encode(body))
        got = []
        while True:
            reply = self.rx.recv(timeout=10.0)
            assert reply is not None, "the worker did not answer"
            kind_, port = reply.metadata.kind, reply.metadata.port
            value = decode(reply.payload)
            value = bytes(value) if isinstance(value, memoryview) else value
            self.rx.release(reply)
            if kind_ == STATE:
                op, key, args = value["op"], value["key"], value["args"]
                assert op == "increment", op
                self.store[key] = self.store.get(key, 0) + args[0]
                self.tx.send(Metadata(mid, 0, "node", "", STATE_REPLY), encode({"ok": self.store[key]}))
                continue
            got.append((kind_, port, value))
            if kind_ in (LOADED, DONE, ERROR):
                return got


class WorkerTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()

    def tearDown(self):
        self.host.close()

    def test_load_then_invocations_stream_outputs_and_keep_state(self):
        got = self.host.call(LOAD, 1, {"name": "counter.py", "source": COUNTER})
        self.assertEqual(got[-1][0], LOADED)
        self.assertEqual(got[-1][2]["metadata"]["component"], "Counter")
        for n in (1, 2):
            got = self.host.call(INVOKE, 10 + n, {"inputs": {"input": b"\x00\x01\x02"}, "config": {}})
            self.assertEqual(got, [
                (OUTPUT, "size", 3),
                (OUTPUT, "output", b"\x00\x01\x02"),
                (DONE, "", {"calls": n}),
            ])

    def test_a_window_of_invocations_runs_in_order_past_state_replies(self):
        self.host.call(LOAD, 1, {"name": "counter.py", "source": COUNTER})
        # Three INVOKEs written before any answer: the worker reads the
        # second and third while the first waits for its state reply.
        for n in (1, 2, 3):
            body = {"inputs": {"input": bytes([n]) * n}, "config": {}}
            self.host.tx.send(Metadata(10 + n, 0, "node", "", INVOKE), encode(body))
        answers = []
        while len(answers) < 3:
            reply = self.host.rx.recv(timeout=10.0)
            self.assertIsNotNone(reply, "the worker did not answer")
            meta, value = reply.metadata, decode(reply.payload)
            value = bytes(value) if isinstance(value, memoryview) else value
            self.host.rx.release(reply)
            if meta.kind == STATE:
                self.host.store["calls"] = self.host.store.get("calls", 0) + 1
                reply_body = encode({"ok": self.host.store["calls"]})
                self.host.tx.send(Metadata(meta.message_id, 0, "node", "", STATE_REPLY), reply_body)
            elif meta.kind == DONE:
                answers.append((meta.message_id, value))
            else:
                self.assertEqual(meta.kind, OUTPUT)
                if meta.port == "output":
                    n = meta.message_id - 10
                    self.assertEqual(value, bytes([n]) * n)
        self.assertEqual(answers, [(11, {"calls": 1}), (12, {"calls": 2}), (13, {"calls": 3})])
        self.assertFalse(self.host.worker.queued)

    def test_async_invocations_in_a_row_share_one_run_of_the_loop(self):
        loop, runs = self.host.worker.loop, []
        real = loop.run_until_complete

        def counted(coro):
            runs.append(coro)
            return real(coro)

        loop.run_until_complete = counted
        sync = '@actor(name="Sync", outports=["o"])\ndef s(context):\n    return {"o": "sync"}\n'
        self.host.call(LOAD, 1, {"name": "counter.py", "source": COUNTER})
        self.host.tx.send(Metadata(2, 0, "sync", "", LOAD), encode({"name": "sync.py", "source": sync}))
        loaded = self.host.rx.recv(timeout=10.0)
        self.assertEqual((loaded.metadata.kind, loaded.metadata.actor_id), (LOADED, "sync"))
        self.host.rx.release(loaded)
        # Three async INVOKEs, a sync one, two async again: written at once.
        plan = ["node", "node", "node", "sync", "node", "node"]
        for i, actor_id in enumerate(plan):
            body = {"inputs": {"input": b"ab"}, "config": {}}
            self.host.tx.send(Metadata(10 + i, 0, actor_id, "", INVOKE), encode(body))
        done = []
        while len(done) < len(plan):
            reply = self.host.rx.recv(timeout=10.0)
            self.assertIsNotNone(reply, "the worker did not answer")
            meta, value = reply.metadata, decode(reply.payload)
            self.host.rx.release(reply)
            if meta.kind == STATE:
                self.host.store["calls"] = self.host.store.get("calls", 0) + 1
                ok = encode({"ok": self.host.store["calls"]})
                self.host.tx.send(Metadata(meta.message_id, 0, meta.actor_id, "", STATE_REPLY), ok)
            elif meta.kind in (DONE, ERROR):
                self.assertEqual(meta.kind, DONE, value)
                done.append((meta.message_id, value))
        self.assertEqual([m for m, _ in done], list(range(10, 16)))
        self.assertEqual([v for _, v in done], [
            {"calls": 1}, {"calls": 2}, {"calls": 3}, {"o": "sync"}, {"calls": 4}, {"calls": 5},
        ])
        self.assertEqual(len(runs), 2, "one run of the loop per run of async invocations")

    def test_errors_are_answered_and_the_worker_goes_on(self):
        got = self.host.call(LOAD, 1, {"name": "bad.py", "source": "def x(:"})
        self.assertEqual((got[-1][0], got[-1][2]["kind"]), (ERROR, "load"))
        got = self.host.call(INVOKE, 2, {"inputs": {}})
        self.assertIn("no actor loaded", got[-1][2]["message"])
        got = self.host.call(LOAD, 3, {"name": "boom.py", "source": '@actor(name="B")\ndef b(c):\n    1/0\n'})
        self.assertEqual(got[-1][0], LOADED)
        got = self.host.call(INVOKE, 4, {"inputs": {}})
        self.assertEqual(got[-1][2]["kind"], "run")
        self.assertIn("ZeroDivisionError", got[-1][2]["traceback"])
        got = self.host.call(LOAD, 5, {"name": "counter.py", "source": COUNTER})
        self.assertEqual(got[-1][0], LOADED)


    def test_collect_frees_unreachable_cycles_and_the_worker_goes_on(self):
        class Node:
            pass

        gc.disable()
        try:
            a, b = Node(), Node()
            a.other, b.other = b, a
            alive = weakref.ref(a)
            del a, b
            self.assertIsNotNone(alive(), "a cycle outlives its last reference without a collection")
            got = self.host.call(COLLECT, 1, {})
        finally:
            gc.enable()
        kind, _, value = got[-1]
        self.assertEqual(kind, DONE)
        self.assertIsNone(alive(), "COLLECT ran a full collection")
        self.assertGreaterEqual(value["ms"], 0.0)
        self.assertEqual(value["heap"], 0)
        got = self.host.call(LOAD, 2, {"name": "counter.py", "source": COUNTER})
        self.assertEqual(got[-1][0], LOADED)

    def test_load_sets_the_idle_spin_the_host_asks_for(self):
        before = ring._spin_polls, ring._polls_per_second
        try:
            ring._polls_per_second = 1e6
            got = self.host.call(LOAD, 1, {"name": "counter.py", "source": COUNTER, "idle_spin_ms": 70})
            self.assertEqual(got[-1][0], LOADED)
            self.assertEqual(ring._spin_polls, 70000)
            # Not a number: ignored (the spin stays as it was).
            got = self.host.call(LOAD, 2, {"name": "counter.py", "source": COUNTER, "idle_spin_ms": "x"})
            self.assertEqual(got[-1][0], LOADED)
            self.assertEqual(ring._spin_polls, 70000)
        finally:
            ring._spin_polls, ring._polls_per_second = before

    def test_a_script_loaded_before_is_not_run_again_but_its_generators_are_reseeded(self):
        # What a clone of a component golden sees: the golden loaded the
        # script (as another actor id) before its snapshot.
        source = (
            "import random\n"
            "RUNS = globals().setdefault('RUNS', 0) + 1\n"
            "RNG = random.Random(7)\n"
            "@actor(name='Once', outports=['out'])\n"
            "def once(c):\n"
            "    return {'out': [RUNS, RNG.random()]}\n"
        )
        fixed = random.Random(7).random()
        got = self.host.call(LOAD, 1, {"name": "once.py", "source": source})
        self.assertEqual(got[-1][0], LOADED)
        got = self.host.call(LOAD, 2, {"name": "once.py", "source": source})
        self.assertEqual(got[-1][0], LOADED)
        runs, drawn = self.host.call(INVOKE, 3, {"inputs": {}})[-1][2]["out"]
        self.assertEqual(runs, 1, "the top level ran again")
        self.assertNotEqual(drawn, fixed, "the script's generator was not reseeded")
        # Another source is loaded anew.
        got = self.host.call(LOAD, 4, {"name": "once.py", "source": source + "\n"})
        self.assertEqual(got[-1][0], LOADED)


class WarmUpTest(unittest.TestCase):
    def test_the_warm_up_actor_runs_in_process(self):
        worker = Worker(region())
        try:
            outputs = warm_up(worker)
        finally:
            worker.close()
        self.assertEqual([port for port, _ in outputs], ["output", "output", ""])
        self.assertEqual(len(b"".join(outputs[0][1])), 1 + 4 + 4096)
        self.assertEqual(decode(b"".join(outputs[2][1])), {"done": 1})


class FreezeHeapTest(unittest.TestCase):
    def tearDown(self):
        gc.unfreeze()

    def test_every_object_made_so_far_is_kept_out_of_collections(self):
        kept = [[i] for i in range(1000)]
        frozen = freeze_heap()
        self.assertEqual(frozen, gc.get_freeze_count())
        self.assertGreater(frozen, len(kept))
        # Nothing made before the freeze is left for the collector to walk.
        self.assertFalse(any(gc.get_objects(generation) for generation in range(3)
                             if generation != 0))
        tracked = {id(o) for o in gc.get_objects()}
        self.assertFalse(any(id(o) in tracked for o in kept))


class PreloadTest(unittest.TestCase):
    def test_modules_are_imported_with_progress_and_a_failure_raises(self):
        import json
        import os
        import sys
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "preload.txt")
            with open(path, "w") as f:
                f.write("# comment\nxml.dom.minidom  # inline\n\nno_such_module_xyz\n")
            names = preload_list(path)
            self.assertEqual(names, ["xml.dom.minidom", "no_such_module_xyz"])
            progress = Progress(os.path.join(d, "progress"))
            progress.written = float("inf")  # only steps are written
            for name in [n for n in list(sys.modules) if n.startswith("xml")]:
                del sys.modules[name]
            with self.assertRaises(PreloadError) as cm:
                preload(names, progress)
            self.assertIn("xml.dom.minidom", sys.modules)
            self.assertEqual(cm.exception.name, "no_such_module_xyz")
            self.assertIn("ModuleNotFoundError", str(cm.exception))
            # The first preload counted the modules it imported.
            self.assertEqual(progress.steps[0]["name"], "preload")
            self.assertEqual(progress.step_name, "preload")
            self.assertEqual(progress.detail_text, "no_such_module_xyz: 1 modules, no_such_module_xyz")
            self.assertFalse(any(isinstance(f, ImportCounter) for f in sys.meta_path))
            with open(progress.path) as f:
                body = json.load(f)
            self.assertEqual((body["state"], body["detail"]), ("step", "no_such_module_xyz"))
        self.assertEqual(preload_list("/nonexistent/preload.txt"), [])


class ProgressTest(unittest.TestCase):
    def test_steps_are_timed_and_the_end_is_written(self):
        import json
        import os
        import tempfile
        now = [10.0]
        with tempfile.TemporaryDirectory() as d:
            p = Progress(os.path.join(d, "run", "progress"), clock=lambda: now[0])

            def read():
                with open(p.path) as f:
                    return json.load(f)

            p.step("start")
            self.assertEqual(read(), {"state": "step", "step": "start", "detail": "", "steps": []})
            now[0] = 10.2
            p.detail("a")  # under the throttle: not written yet
            self.assertEqual(read()["detail"], "")
            now[0] = 10.6
            p.detail("b")
            self.assertEqual(read()["detail"], "b")
            now[0] = 12.0
            p.step("warm-up")
            body = read()
            self.assertEqual([s["name"] for s in body["steps"]], ["start"])
            self.assertEqual(body["steps"][0]["secs"], 2.0)
            for key in ("user", "sys", "minflt", "majflt"):
                self.assertGreaterEqual(body["steps"][0][key], 0)
            p.failed("boom")
            body = read()
            self.assertEqual((body["state"], body["error"]), ("failed", "boom"))
            self.assertEqual([s["name"] for s in body["steps"]], ["start", "warm-up"])
            p.ready()
            self.assertEqual(read()["state"], "ready")
            self.assertFalse(os.path.exists(p.path + ".tmp"))


class FpuTest(unittest.TestCase):
    def test_the_control_word_is_read(self):
        from reflow import fpu
        self.assertEqual(fpu.x87_control_word(), fpu.DEFAULT_X87_CONTROL_WORD)
        self.assertEqual(fpu.describe(), "x87 control word 0x37f")


if __name__ == "__main__":
    unittest.main()
