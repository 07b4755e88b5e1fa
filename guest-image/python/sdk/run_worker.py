"""Starts the worker: `python3 /opt/reflow/run_worker.py <addr> <size> [<path>]`
(this file's directory, /opt/reflow, is then on the import path).

Progress is reported from the first line on (the SDK's own imports take
seconds where the guest kernel is emulated), so the host sees the step."""

import sys

from reflow.progress import Progress

progress = Progress()
progress.step("import the SDK")

from reflow.worker import main  # noqa: E402 - after the first report

main(sys.argv, progress)
