"""Per-clone randomness.

A golden snapshot freezes every random generator that exists in it, so
every clone restored from it would draw the same numbers: the `random`
module's, numpy's global `np.random` (seeded when the preload imported
numpy), and any generator object a preloaded module keeps. The rule is
general rather than a list: when the golden is made, `find_generators()`
walks every loaded module's top-level names and records each generator
object it finds (`random.Random` and its subclasses, numpy's
`RandomState` and `Generator`); at every LOAD, in the clone, `reseed()`
gives each a fresh seed from the kernel, which the host reseeded when the
clone connected. Generators created after LOAD seed themselves from that
kernel (numpy's `default_rng()`, `random.Random()`), and `os.urandom`,
`secrets` and `uuid.uuid4` read the kernel on every call.

Not covered (documented in docs/images.md): generators held only inside
other objects or closures of a preloaded module, and the interpreter's
string hash seed (`PYTHONHASHSEED`), fixed when the golden's interpreter
started.
"""

import os
import random
import struct
import sys

_found = []


def _kind(obj):
    """Which kind of generator `obj` is, or None (`SystemRandom` reads the
    kernel on every call and has no state to reseed)."""
    if isinstance(obj, random.SystemRandom):
        return None
    if isinstance(obj, random.Random):
        return "random"
    t = type(obj)
    if str(getattr(t, "__module__", "")).startswith("numpy.random"):
        if t.__name__ == "RandomState":
            return "numpy-legacy"
        if t.__name__ == "Generator":
            return "numpy"
    return None


def find_generators(modules=None):
    """Records every generator object held at top level by a loaded module
    (each object once); returns how many."""
    modules = list(sys.modules.values()) if modules is None else modules
    _found.clear()
    for module in modules:
        try:
            add_generators(vars(module))
        except TypeError:
            continue
    return len(_found)


def add_generators(namespace):
    """Records the generators a namespace holds at top level (each object
    once), beside those found before: a loaded script's, when a component
    golden is made after loading it, so its clones reseed them too."""
    seen = {id(obj) for _, obj in _found}
    for obj in list(namespace.values()):
        kind = _kind(obj)
        if kind is not None and id(obj) not in seen:
            seen.add(id(obj))
            _found.append((kind, obj))


def _reseed(kind, obj, seed):
    if kind == "random":
        obj.seed(seed)
    elif kind == "numpy-legacy":
        obj.seed(list(struct.unpack("8I", seed)))
    elif kind == "numpy":
        bits = obj.bit_generator
        bits.state = type(bits)(int.from_bytes(seed, "little")).state


def reseed():
    """Gives the `random` module and every recorded generator a fresh seed,
    32 bytes each from one read of the kernel's generator (every system
    call is emulated kernel work on some hosts). The golden calls it once
    too, so a clone's first call finds its code paths warm."""
    pool = os.urandom(32 * (len(_found) + 1))
    random.seed(pool[:32])
    for i, (kind, obj) in enumerate(_found, 1):
        _reseed(kind, obj, pool[32 * i : 32 * (i + 1)])
