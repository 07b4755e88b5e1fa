"""What an actor prints reaches the host as LOG records of the message
that printed it, one record per line, capped per message.

`install` replaces `sys.stdout` and `sys.stderr` with line writers (the
worker does so just before it is ready, so the golden snapshot has them).
A line goes to the host when its newline is written (or when the message
ends); a line longer than MAX_LINE characters is cut and the cut counted.
Past a message's caps (lines or bytes, sent by the host in LOAD), text is
only counted: printing stays cheap in the guest, without system calls, so
a script that prints 100 MB in a loop costs the host a bounded number of
records and one count. The count of what was dropped goes to the host
before the message's answer:

  guest -> host  LOG  {"stream": "stdout"|"stderr", "line": str, "cut": int}
  guest -> host  LOG  {"dropped_lines": int, "dropped_bytes": int}

Text printed outside a message (a background thread once its message has
ended) is counted as dropped. Other threads' lines during a message are
queued and sent by the worker's thread (the ring has one writer), at most
a message's line cap of them. Bytes written through `sys.stdout.buffer`
are decoded as UTF-8. Output written to file descriptors 1 and 2 directly
(`os.write`, a C library's printf, a child process) bypasses this and goes
to the VM's console, which the host discards.
"""

import io
import threading

MAX_LINE = 4096
DEFAULT_CAPS = (1000, 64 * 1024)


class GuestLog:
    """One worker's printed output. `send(message_id, actor_id, value)`
    writes a LOG record."""

    def __init__(self, send):
        self._send = send
        self._owner = threading.get_ident()
        self._lock = threading.Lock()
        self.caps = {}
        self.current = None
        self.lines_left = self.bytes_left = 0
        self.dropped_lines = self.dropped_bytes = 0
        # Per stream: the pieces of the line being written, their length,
        # and the characters cut from it.
        self._partial = {"stdout": [[], 0, 0], "stderr": [[], 0, 0]}
        # Other threads' text, and what they dropped (lines, characters):
        # both under the lock, merged by the message's thread.
        self._foreign = []
        self._foreign_dropped = [0, 0]

    def set_caps(self, actor_id, caps):
        """The host's caps for `actor_id` (from LOAD's "log": {"lines", "bytes"})."""
        lines, size = DEFAULT_CAPS
        if isinstance(caps, dict):
            lines = _count(caps.get("lines"), lines)
            size = _count(caps.get("bytes"), size)
        self.caps[actor_id] = (lines, size)

    def begin(self, message_id, actor_id):
        """Message `message_id` of `actor_id` starts: its lines go to the host."""
        self.current = (message_id, actor_id)
        self._owner = threading.get_ident()
        self.lines_left, self.bytes_left = self.caps.get(actor_id, DEFAULT_CAPS)

    def end(self):
        """The running message ends: its unfinished lines and other threads'
        queued ones are sent, then the count of what was dropped."""
        if self.current is None:
            return
        self._drain_foreign()
        for stream, partial in self._partial.items():
            if partial[1] or partial[2]:
                self._emit(stream, partial)
        if self.dropped_lines or self.dropped_bytes:
            self._send(*self.current, {"dropped_lines": self.dropped_lines, "dropped_bytes": self.dropped_bytes})
            self.dropped_lines = self.dropped_bytes = 0
        self.current = None

    def write(self, stream, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        if threading.get_ident() != self._owner:
            self._write_foreign(stream, s)
            return n
        if self._foreign:
            self._drain_foreign()
        if self.current is None or self.lines_left <= 0:
            self._drop(s)
            return n
        partial = self._partial[stream]
        start = 0
        while True:
            nl = s.find("\n", start)
            if nl < 0:
                self._add(partial, s[start:] if start else s)
                return n
            self._add(partial, s[start:nl])
            self._emit(stream, partial)
            start = nl + 1
            if self.lines_left <= 0:
                self._drop(s[start:])
                return n

    def _drop(self, s):
        self.dropped_bytes += len(s)
        self.dropped_lines += s.count("\n")

    @staticmethod
    def _add(partial, piece):
        if not piece:
            return
        room = MAX_LINE - partial[1]
        if len(piece) > room:
            partial[2] += len(piece) - room
            piece = piece[:room]
        if piece:
            partial[0].append(piece)
            partial[1] += len(piece)

    def _emit(self, stream, partial):
        line, cut = "".join(partial[0]), partial[2]
        partial[0], partial[1], partial[2] = [], 0, 0
        size = len(line) + 1
        if self.lines_left <= 0 or size > self.bytes_left:
            self.lines_left = 0
            self.dropped_lines += 1
            self.dropped_bytes += size + cut
            return
        self.lines_left -= 1
        self.bytes_left -= size
        self._send(*self.current, {"stream": stream, "line": line, "cut": cut})

    def _write_foreign(self, stream, s):
        with self._lock:
            if self.current is None or len(self._foreign) >= self.caps.get(self.current[1], DEFAULT_CAPS)[0]:
                self._foreign_dropped[0] += s.count("\n")
                self._foreign_dropped[1] += len(s)
            else:
                self._foreign.append((stream, s))

    def _drain_foreign(self):
        with self._lock:
            foreign, self._foreign = self._foreign, []
            (lines, chars), self._foreign_dropped = self._foreign_dropped, [0, 0]
        self.dropped_lines += lines
        self.dropped_bytes += chars
        for stream, s in foreign:
            self.write(stream, s)


def _count(v, default):
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else default


class LineWriter(io.TextIOBase):
    """`sys.stdout` or `sys.stderr` in the guest: text to the GuestLog."""

    def __init__(self, log, name):
        super().__init__()
        self._log, self._name = log, name
        self.buffer = _BytesWriter(self)

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "replace"

    @property
    def name(self):
        return f"<{self._name}>"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, s):
        return self._log.write(self._name, s)

    def flush(self):
        pass


class _BytesWriter(io.RawIOBase):
    """`sys.stdout.buffer`: bytes, decoded as UTF-8."""

    def __init__(self, text):
        super().__init__()
        self._text = text

    def writable(self):
        return True

    def write(self, b):
        self._text.write(bytes(b).decode("utf-8", "replace"))
        return len(b)


def install(log):
    """Makes `log` the destination of `sys.stdout` and `sys.stderr`."""
    import sys

    sys.stdout = LineWriter(log, "stdout")
    sys.stderr = LineWriter(log, "stderr")
