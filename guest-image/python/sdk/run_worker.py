"""Starts the worker: `python3 /opt/reflow/run_worker.py <addr> <size>`
(this file's directory, /opt/reflow, is then on the import path)."""

import sys

from reflow.worker import main

main(sys.argv)
