"""Start-up progress the host can watch while it builds a golden snapshot.

The worker (and any script the host starts before a snapshot) reports what
it is doing in one small JSON file, `/run/reflow/progress`, which the host
reads over the agent's control channel:

  {"state": "step" | "ready" | "failed",
   "step": current step, "detail": what within it (changes = progress),
   "error": why it failed (state "failed"),
   "steps": [{"name", "secs", "user", "sys", "minflt", "majflt"}, ...]}

`steps` lists the finished steps with the guest time each took and the
process's user and system CPU time and page faults during it: system time
and faults are guest kernel work, which some hosts emulate several times
slower than others, so these say where a slow golden spends its time.

The host gives up only when the file stops changing (a stalled guest) or
says "failed", never after a fixed time. Writes are throttled (a write is
a few system calls), so reporting costs nothing next to the work reported.
"""

import json
import os
import time

try:
    import resource
except ImportError:  # pragma: no cover - the image's Python has it
    resource = None

PROGRESS_FILE = "/run/reflow/progress"
# Longest a changed detail waits before it is written.
THROTTLE_SECS = 0.5


def _usage():
    """(user, sys, minflt, majflt) of this process so far."""
    if resource is not None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_majflt
    t = os.times()
    return t.user, t.system, 0, 0


class Progress:
    """Reports steps, details within them, then ready or failed."""

    def __init__(self, path=PROGRESS_FILE, clock=time.monotonic):
        self.path, self.clock = path, clock
        self.steps = []
        self.step_name, self.detail_text = "", ""
        self.started, self.usage = clock(), _usage()
        self.written = float("-inf")
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def _finish_step(self):
        if not self.step_name:
            return
        now, usage = self.clock(), _usage()
        user, sys_, minflt, majflt = (b - a for a, b in zip(self.usage, usage))
        self.steps.append({
            "name": self.step_name, "secs": round(now - self.started, 3),
            "user": round(user, 3), "sys": round(sys_, 3),
            "minflt": int(minflt), "majflt": int(majflt),
        })
        self.started, self.usage = now, usage

    def _write(self, state, error=None):
        body = {"state": state, "step": self.step_name, "detail": self.detail_text,
                "steps": self.steps}
        if error is not None:
            body["error"] = error[-2000:]
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(body, separators=(",", ":")))
        os.replace(tmp, self.path)
        self.written = self.clock()

    def step(self, name, detail=""):
        """Starts step `name` (ending the one before)."""
        self._finish_step()
        self.step_name, self.detail_text = name, detail
        self._write("step")

    def detail(self, text):
        """Says how far the current step got; written at most every
        THROTTLE_SECS."""
        self.detail_text = text
        if self.clock() - self.written >= THROTTLE_SECS:
            self._write("step")

    def ready(self):
        self._finish_step()
        self.step_name, self.detail_text = "", ""
        self._write("ready")

    def failed(self, error):
        self._finish_step()
        self._write("failed", error)


class ImportCounter:
    """A meta path finder that finds nothing and reports every import it
    sees as progress (`numpy: 87 modules, numpy.core.getlimits`): importing
    a big package is one step that can take minutes where the guest kernel
    is emulated, and its module count shows it is moving."""

    def __init__(self, progress, label):
        self.progress, self.label, self.count = progress, label, 0

    def find_spec(self, name, path=None, target=None):
        self.count += 1
        self.progress.detail(f"{self.label}: {self.count} modules, {name}")
        return None
