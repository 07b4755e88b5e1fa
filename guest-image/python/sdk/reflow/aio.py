"""The event loop async actors run on: asyncio's, without a system call for
every turn of the loop.

asyncio polls for I/O on every turn, with a zero timeout while callbacks
are ready. An actor coroutine that awaits only the SDK's operations (which
never suspend) needs a few turns per invocation, and each poll is an
`epoll_wait` system call: emulated kernel work where the guest kernel is
emulated, which made an async identity actor ~27x slower than a sync one.
Here a zero-timeout poll is answered "nothing ready" without asking the
kernel, up to SKIP_POLLS times in a row; a poll that may wait (nothing
else to run) always asks. I/O readiness is seen at most SKIP_POLLS turns
late, never lost, and a loop with nothing ready blocks in the kernel as
before.
"""

import asyncio
import selectors

__all__ = ["new_event_loop", "LazySelector", "SKIP_POLLS"]

SKIP_POLLS = 64


class LazySelector(selectors.DefaultSelector):
    """A selector whose zero-timeout polls mostly skip the system call."""

    def __init__(self):
        super().__init__()
        self.skipped = 0

    def select(self, timeout=None):
        if timeout is not None and timeout <= 0 and self.skipped < SKIP_POLLS:
            self.skipped += 1
            return []
        self.skipped = 0
        return super().select(timeout)


def new_event_loop():
    """A new event loop over a LazySelector."""
    return asyncio.SelectorEventLoop(LazySelector())
