"""Loading an actor script and calling it, with errors as data."""

import inspect
import traceback

from . import aio
from .actor import ActorError, actor, find_actor
from .context import ActorContext

__all__ = ["load_script", "invoke", "invoke_async", "ActorFailure"]


class ActorFailure(Exception):
    """An actor failed; `kind` is "load" or "run", `trace` the traceback."""

    def __init__(self, kind, message, trace=""):
        super().__init__(message)
        self.kind, self.message, self.trace = kind, message, trace

    @classmethod
    def raised(cls, kind, e):
        """The failure for exception `e`, being handled now (its traceback
        is taken), in the script's `kind` step ("load" or "run")."""
        return cls(kind, f"{type(e).__name__}: {e}", traceback.format_exc())


def load_script(source, filename="<actor>"):
    """Runs a script's top level and returns its `@actor` function."""
    # `actor` is there without an import, as Reflow scripts expect.
    namespace = {"__name__": "__reflow_actor__", "__file__": filename, "actor": actor}
    try:
        code = compile(source, filename, "exec")
        exec(code, namespace)
        return find_actor(namespace)
    except ActorError as e:
        raise ActorFailure("load", str(e)) from None
    # The script is untrusted: even `sys.exit()` at its top level is an
    # error to report, not the worker's end.
    except (Exception, SystemExit) as e:
        raise ActorFailure.raised("load", e) from None


def _context(fn, payload, config, actor_id, transport):
    meta = fn.__actor_metadata__
    defaults = dict(meta.config)
    defaults.update(config)
    return ActorContext(payload, defaults, actor_id, transport, meta.outport_names())


def _outputs(result):
    """The outputs an actor returned, checked."""
    if result is None:
        return {}
    if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
        raise ActorFailure("run", f"the actor returned {type(result).__name__}; return a dict of outputs or None")
    return result


def invoke(fn, payload, config, actor_id, transport, loop=None):
    """Calls `fn` with a context; returns the dict of returned outputs
    (streamed ones went through the transport)."""
    context = _context(fn, payload, config, actor_id, transport)
    own_loop = None
    try:
        result = fn(context)
        if inspect.isawaitable(result):
            if loop is None:
                loop = own_loop = aio.new_event_loop()
            result = loop.run_until_complete(result)
    except (Exception, SystemExit) as e:
        raise ActorFailure.raised("run", e) from None
    finally:
        if own_loop is not None:
            own_loop.close()
    return _outputs(result)


async def invoke_async(fn, payload, config, actor_id, transport):
    """`invoke` for an async actor, awaited in a running loop."""
    context = _context(fn, payload, config, actor_id, transport)
    try:
        result = await fn(context)
    except (Exception, SystemExit) as e:
        raise ActorFailure.raised("run", e) from None
    return _outputs(result)
