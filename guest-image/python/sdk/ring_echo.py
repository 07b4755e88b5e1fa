"""Echo service over the ring, in Python: every host->guest record goes
back unchanged (the payload copied straight from slot to slot). A check of
the SDK's ring codec against the host's.

Usage: python3 ring_echo.py <region address> <region size>
Writes /run/reflow/ring_echo.ready once it is polling the ring.
"""

import os
import sys

from reflow.progress import Progress
from reflow.ring import Consumer, Producer, map_region, read_layout


def main():
    progress = Progress()
    progress.step("map region")
    addr, size = int(sys.argv[1], 0), int(sys.argv[2], 0)
    region = memoryview(map_region(addr, size))
    h2g, g2h = read_layout(region)
    rx, tx = Consumer(region, h2g), Producer(region, g2h)
    # Tell the agent (and whoever warms a golden snapshot) we are polling.
    os.makedirs("/run/reflow", exist_ok=True)
    with open("/run/reflow/ring_echo.ready", "w") as f:
        f.write(str(os.getpid()))
    progress.ready()
    while True:
        record = rx.recv(timeout=3600.0)
        if record is None:
            continue
        tx.send(record.metadata, record.payload, timeout=3600.0)
        rx.release(record)


if __name__ == "__main__":
    main()
