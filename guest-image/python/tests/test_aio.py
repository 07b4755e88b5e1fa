"""The actors' event loop: zero-timeout polls skip the system call, I/O is
still seen, and a loop with nothing ready still blocks in the kernel."""

import asyncio
import os
import unittest

from reflow import aio


class CountingSelector(aio.LazySelector):
    def __init__(self):
        super().__init__()
        self.real = 0

    def select(self, timeout=None):
        if not (timeout is not None and timeout <= 0 and self.skipped < aio.SKIP_POLLS):
            self.real += 1
        return super().select(timeout)


class LoopTest(unittest.TestCase):
    def setUp(self):
        self.selector = CountingSelector()
        self.loop = asyncio.SelectorEventLoop(self.selector)

    def tearDown(self):
        self.loop.close()

    def test_a_coroutine_that_never_suspends_makes_no_poll(self):
        async def actor():
            await asyncio.sleep(0)
            return 42

        before = self.selector.real
        for _ in range(10):
            self.assertEqual(self.loop.run_until_complete(actor()), 42)
        self.assertEqual(self.selector.real, before, "no system call for ready turns")

    def test_io_is_seen_while_callbacks_keep_the_loop_busy(self):
        r, w = os.pipe()
        try:
            got = self.loop.create_future()
            self.loop.add_reader(r, lambda: got.done() or got.set_result(os.read(r, 1)))

            async def busy():
                os.write(w, b"x")
                turns = 0
                while not got.done():
                    await asyncio.sleep(0)
                    turns += 1
                return turns

            turns = self.loop.run_until_complete(busy())
            self.assertEqual(got.result(), b"x")
            self.assertLessEqual(turns, aio.SKIP_POLLS + 2)
            self.loop.remove_reader(r)
        finally:
            os.close(r)
            os.close(w)

    def test_a_loop_with_nothing_ready_waits_in_the_kernel(self):
        before = self.selector.real
        self.loop.run_until_complete(asyncio.sleep(0.01))
        self.assertGreater(self.selector.real, before)

    def test_invoke_runs_an_async_actor_on_a_loop_of_its_own(self):
        from reflow.invoke import invoke, load_script

        fn = load_script('@actor(name="A", outports=["o"])\nasync def a(context):\n    return {"o": 1}\n')

        class Transport:
            def send_output(self, port, value):
                pass

            def state_call(self, op, key, args):
                return None

        self.assertEqual(invoke(fn, {}, {}, "a", Transport()), {"o": 1})


if __name__ == "__main__":
    unittest.main()
