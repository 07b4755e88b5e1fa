"""The Python worker: serves actor messages on the ring.

Started by the agent (`spawn /usr/bin/python3 /opt/reflow/run_worker.py
<addr> <size>`) before the golden snapshot is taken, so clones start warm.
Python's `random` is reseeded from the kernel (itself reseeded by the host
when a clone connects) on every LOAD, so clones do not share its state. A
LOAD of a script this VM has loaded before (a clone of a component golden,
snapshotted after loading it) only reseeds: the script is not run again. Protocol (record kinds in the metadata; the
message id ties an invocation's records together; payloads are
`reflow.value` values):

  host -> guest  LOAD    {"name", "source", "log": {"lines", "bytes"},
                          "idle_spin_ms" (optional)}  actor id = the node
  guest -> host  LOADED  {"metadata": {...}}     or ERROR
  host -> guest  INVOKE  {"inputs": {...}, "config": {...}}
  guest -> host  OUTPUT  value, port in the metadata (any number, as sent)
  guest -> host  STATE   {"op", "key", "args"}   host answers STATE_REPLY
  host -> guest  STATE_REPLY {"ok": value} | {"error": message}
  guest -> host  DONE    {returned outputs}      or ERROR
  guest -> host  ERROR   {"kind": load|run|protocol, "message", "traceback"}
  guest -> host  LOG     a printed line, or what was dropped (see reflow/log.py)
  host -> guest  COLLECT {}                      collect garbage now (a pool
                                                 asks while a clone waits)
  guest -> host  DONE    {"ms": float, "heap": 0}

The host may write the next INVOKEs before an invocation ends (a window
of messages in flight); the worker runs them one at a time, in order. Input
bytes arrive as memoryviews over the ring slot (no copy); the INVOKE record
stays held until the invocation ends. An INVOKE read while waiting for a
state reply is copied out and queued, so the ring never fills with held
records the host cannot get past. A script that fails to load or raises is
answered with ERROR; the worker goes on.
"""

import collections
import contextlib
import gc
import inspect
import os
import sys
import time
import traceback

from . import aio, entropy, fpu, log
from .invoke import ActorFailure, invoke, invoke_async, load_script
from .progress import ImportCounter, Progress
from .ring import (
    SPIN_SECONDS, Consumer, Metadata, Producer, calibrate_spin, map_region, read_layout, set_spin,
)
from .value import ValueError_, decode, encode_parts

LOAD, LOADED, INVOKE, OUTPUT, DONE, STATE, STATE_REPLY, ERROR, LOG, COLLECT = range(1, 11)
# The records that answer a message: its printed lines go before them.
ANSWERS = (LOADED, DONE, ERROR)
READY_FILE = "/run/reflow/worker.ready"


class ProtocolError(Exception):
    pass


class RingTransport:
    """An invocation's way to the host: outputs and state round trips."""

    def __init__(self, worker, message_id, actor_id):
        self.worker, self.message_id, self.actor_id = worker, message_id, actor_id

    def send_output(self, port, value):
        self.worker.send(OUTPUT, self.message_id, self.actor_id, value, port)

    def state_call(self, op, key, args):
        self.worker.send(STATE, self.message_id, self.actor_id, {"op": op, "key": key, "args": args})
        while True:
            record = self.worker.rx.recv(timeout=3600.0)
            if record is None:
                raise ProtocolError("no state reply within an hour")
            if record.metadata.kind not in (INVOKE, LOAD):
                break
            # The next message of the host's window: it runs after this one.
            self.worker.queue(record)
        try:
            meta = record.metadata
            if meta.kind != STATE_REPLY or meta.message_id != self.message_id:
                raise ProtocolError(f"expected a state reply, got kind {meta.kind}")
            reply = decode(record.payload)
            if not isinstance(reply, dict):
                raise ProtocolError("malformed state reply")
            if "error" in reply:
                raise RuntimeError(f"state {op} {key!r}: {reply['error']}")
            return _own(reply.get("ok"))
        finally:
            self.worker.rx.release(record)


def _own(v):
    """A copy that does not point into the ring (for values kept after
    their record is released)."""
    if isinstance(v, memoryview):
        return bytes(v)
    if isinstance(v, list):
        return [_own(x) for x in v]
    if isinstance(v, dict):
        return {k: _own(x) for k, x in v.items()}
    return v


class _Queued:
    """A record copied out of the ring (its slot already released)."""

    __slots__ = ("metadata", "payload")

    def __init__(self, record):
        self.metadata, self.payload = record.metadata, memoryview(bytes(record.payload))


class Worker:
    def __init__(self, region):
        h2g, g2h = read_layout(region)
        self.rx, self.tx = Consumer(region, h2g), Producer(region, g2h)
        self.actors = {}
        # Messages read while an invocation waited for a state reply.
        self.queued = collections.deque()
        # Scripts loaded in this VM by (name, source): a component golden's
        # clones find theirs here and skip running it again.
        self.loaded = {}
        self.loop = aio.new_event_loop()
        # What actors print (sys.stdout and sys.stderr once installed).
        self.log = log.GuestLog(lambda mid, aid, value: self.send(LOG, mid, aid, value))

    def queue(self, record):
        """Copies `record` out of the ring, releases it, and queues it to be
        served after the message now running."""
        self.queued.append(_Queued(record))
        self.rx.release(record)

    def release(self, record):
        if not isinstance(record, _Queued):
            self.rx.release(record)

    def send(self, kind, message_id, actor_id, value, port=""):
        if kind in ANSWERS:
            self.log.end()
        meta = Metadata(message_id, 0, actor_id, port, kind)
        self.tx.send_parts(meta, encode_parts(value), timeout=3600.0)

    def error(self, message_id, actor_id, kind, message, trace=""):
        self.send(ERROR, message_id, actor_id, {"kind": kind, "message": message, "traceback": trace})

    def _body(self, record):
        """The record's message (a dict), or None once it has been answered
        as undecodable (and released)."""
        meta = record.metadata
        try:
            body = decode(record.payload)
            if not isinstance(body, dict):
                raise ValueError_("the message body is not a map")
            return body
        except ValueError_ as e:
            self.release(record)
            self.error(meta.message_id, meta.actor_id, "protocol", f"undecodable message: {e}")
            return None

    @contextlib.contextmanager
    def _answering(self, record):
        """Around an invocation: its failure becomes an ERROR answer, and its
        record is released however it ends."""
        meta = record.metadata
        try:
            yield
        except ActorFailure as f:
            self.error(meta.message_id, meta.actor_id, f.kind, f.message, f.trace)
        except (ProtocolError, ValueError_) as e:
            self.error(meta.message_id, meta.actor_id, "protocol", str(e))
        finally:
            self.release(record)

    def serve_one(self, record):
        meta = record.metadata
        body = self._body(record)
        if body is None:
            return
        if meta.kind == LOAD:
            source, name = str(body.get("source", "")), str(body.get("name", "<actor>"))
            self.log.set_caps(meta.actor_id, body.get("log"))
            spin = body.get("idle_spin_ms")
            if isinstance(spin, int) and not isinstance(spin, bool):
                set_spin(spin / 1000)
            self.release(record)
            self.log.begin(meta.message_id, meta.actor_id)
            # Fresh randomness for everything the clone shares with its
            # golden, before the script's top level draws any.
            entropy.reseed()
            fn = self.loaded.get((name, source))
            if fn is None:
                try:
                    fn = load_script(source, name)
                except ActorFailure as f:
                    self.error(meta.message_id, meta.actor_id, f.kind, f.message, f.trace)
                    return
                self.loaded[(name, source)] = fn
                # If this VM becomes a component golden, its clones share
                # the script's own generators too: reseed them as well.
                entropy.add_generators(getattr(fn, "__globals__", {}))
            # else: a clone of a component golden, which loaded this very
            # script before its snapshot; it is not run again.
            self.actors[meta.actor_id] = fn
            self.send(LOADED, meta.message_id, meta.actor_id, {"metadata": fn.__actor_metadata__.to_dict()})
        elif meta.kind == INVOKE:
            fn = self.actors.get(meta.actor_id)
            self.log.begin(meta.message_id, meta.actor_id)
            with self._answering(record):
                if fn is None:
                    raise ActorFailure("run", f"no actor loaded for {meta.actor_id!r}")
                transport = RingTransport(self, meta.message_id, meta.actor_id)
                result = invoke(fn, body.get("inputs") or {}, body.get("config") or {},
                                meta.actor_id, transport, self.loop)
                self.send(DONE, meta.message_id, meta.actor_id, result)
        elif meta.kind == COLLECT:
            self.release(record)
            self.log.begin(meta.message_id, meta.actor_id)
            self.send(DONE, meta.message_id, meta.actor_id, {"ms": collect_garbage(), "heap": 0})
        else:
            self.release(record)
            self.error(meta.message_id, meta.actor_id, "protocol", f"unexpected message kind {meta.kind}")

    async def _serve_async(self, record):
        """An INVOKE of an async actor, awaited inside the running loop."""
        meta = record.metadata
        body = self._body(record)
        if body is None:
            return
        self.log.begin(meta.message_id, meta.actor_id)
        with self._answering(record):
            transport = RingTransport(self, meta.message_id, meta.actor_id)
            result = await invoke_async(self.actors[meta.actor_id], body.get("inputs") or {},
                                        body.get("config") or {}, meta.actor_id, transport)
            self.send(DONE, meta.message_id, meta.actor_id, result)

    def _is_async_invoke(self, record):
        if record.metadata.kind != INVOKE:
            return False
        return inspect.iscoroutinefunction(self.actors.get(record.metadata.actor_id))

    async def _async_session(self, record, stop):
        """Serves INVOKEs of async actors from `record` on inside one run of
        the loop (entering and leaving a running loop costs system calls);
        returns the first record that is something else (or None)."""
        while record is not None and self._is_async_invoke(record):
            await self._serve_async(record)
            if stop is not None and stop.is_set():
                return None
            record = self._next(stop)
        return record

    def _next(self, stop):
        if self.queued:
            return self.queued.popleft()
        return self.rx.recv(timeout=3600.0 if stop is None else 0.05)

    def run(self, stop=None):
        """Serves records until `stop` (a threading.Event, for tests) is
        set. An async actor's invocations run inside one run of the event
        loop while they follow each other (they wait for the next record
        there, blocking: nothing else runs meanwhile, as between runs)."""
        record = None
        while stop is None or not stop.is_set():
            if record is None:
                record = self._next(stop)
            if record is None:
                continue
            if self._is_async_invoke(record):
                record = self.loop.run_until_complete(self._async_session(record, stop))
            else:
                self.serve_one(record)
                record = None

    def close(self):
        self.loop.close()


PRELOAD_FILE = "/opt/reflow/preload.txt"


def preload(names, progress=None):
    """Imports the modules `names` now (the worker starts before the golden
    snapshot, so clones find them imported), reporting each module imported
    on the way to `progress`. Raises PreloadError for the first that fails:
    a golden whose preloads failed would make every clone import them again
    (or fail to), so it must not be written."""
    for name in names:
        counter = None
        if progress is not None:
            progress.step("preload", name)
            counter = ImportCounter(progress, name)
            sys.meta_path.insert(0, counter)
        try:
            __import__(name)
        except BaseException as e:  # noqa: BLE001 - every failure is reported
            raise PreloadError(name, f"{type(e).__name__}: {e}", traceback.format_exc()) from e
        finally:
            if counter is not None:
                sys.meta_path.remove(counter)


class PreloadError(Exception):
    def __init__(self, name, why, trace=""):
        super().__init__(f"cannot preload {name}: {why}")
        self.name, self.why, self.trace = name, why, trace


def preload_list(path=PRELOAD_FILE):
    try:
        with open(path) as f:
            lines = [line.split("#", 1)[0].strip() for line in f]
    except FileNotFoundError:
        return []
    return [line for line in lines if line]


_WARM_UP = """
@actor(name="WarmUp", inports=["input"], outports=["output"])
async def warm_up(context):
    n = await context.state.increment("n")
    await context.send_output("output", context.get_input("input"))
    context.send_output_sync("output", {"n": n, "x": [1.5, None, True, "s"]})
    return {"done": n}
"""


class _LocalTransport:
    """Answers a warm-up invocation in process."""

    def __init__(self):
        self.outputs = []

    def send_output(self, port, value):
        self.outputs.append((port, encode_parts(value)))

    def state_call(self, op, key, args):
        return 1


def warm_up(worker):
    """Runs one actor through load, invoke, outputs and state in process,
    so the lazy first-use work (compiling, the event loop's first run, the
    codec's paths) is done before the golden snapshot rather than in every
    clone's first message. Returns the outputs (for tests)."""
    fn = load_script(_WARM_UP, "<warm-up>")
    transport = _LocalTransport()
    payload = {"input": memoryview(b"warm" * 1024)}
    result = invoke(fn, payload, {}, "warm-up", transport, worker.loop)
    transport.outputs.append(("", encode_parts(result)))
    # The path a run of async invocations takes (see Worker.run).
    worker.loop.run_until_complete(invoke_async(fn, payload, {}, "warm-up", _LocalTransport()))
    return transport.outputs


def freeze_heap():
    """Moves every object the worker made so far out of the collector's reach.

    A clone shares the golden's memory until it writes a page. A full
    collection writes to the header of every object it walks, so the first
    one in a clone (a long stream triggers it) would copy the whole heap of
    the interpreter, the SDK and the preloads, page by page: 157-179 ms on an
    AMD EPYC kvm_pvm host, against half a millisecond once frozen. The
    frozen objects live as long as the worker, which they would anyway.
    Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def collect_garbage():
    """A full collection, as a pool asks of each clone while it waits
    (COLLECT). The golden's heap is frozen (see freeze_heap), so this walks
    only what the clone made itself. Returns its duration in milliseconds."""
    started = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - started) * 1e3


def main(argv, progress=None):
    progress = progress or Progress()
    try:
        preload(preload_list(), progress)
        progress.step("map region")
        # In a VM: guest physical memory through /dev/mem; in a host
        # process's jail: the ring's memfd, /proc/self/fd/3, from offset 0.
        addr, size = int(argv[1], 0), int(argv[2], 0)
        path = argv[3] if len(argv) > 3 else "/dev/mem"
        worker = Worker(memoryview(map_region(addr, size, path)))
        progress.step("warm-up")
        warm_up(worker)
        progress.step("calibrate spin")
        progress.detail(f"{calibrate_spin(worker.rx)} polls spin {SPIN_SECONDS * 1000:.0f} ms")
        progress.step("find generators")
        progress.detail(f"{entropy.find_generators()} to reseed in each clone")
        entropy.reseed()
        progress.step("freeze heap")
        progress.detail(f"{freeze_heap()} objects kept out of collections")
        # From here on, what actors print goes to the host.
        log.install(worker.log)
    except BaseException as e:  # noqa: BLE001 - the host must hear why
        message = str(e) if isinstance(e, PreloadError) else f"{type(e).__name__}: {e}"
        message += f" ({fpu.describe()})"
        trace = e.trace if isinstance(e, PreloadError) else traceback.format_exc()
        print(f"reflow worker: {message}\n{trace}", file=sys.stderr)
        progress.failed(f"{message}\n{trace}")
        sys.exit(1)
    os.makedirs(os.path.dirname(READY_FILE), exist_ok=True)
    with open(READY_FILE, "w") as f:
        f.write(str(os.getpid()))
    progress.ready()
    try:
        worker.run()
    except BaseException:
        # The worker's own end goes to the console, not to an actor's log.
        sys.__stderr__.write(f"reflow worker: {traceback.format_exc()}")
        raise


if __name__ == "__main__":
    main(sys.argv)
