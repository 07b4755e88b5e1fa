"""`ActorContext`: what an actor function gets.

The context does not talk to the host itself: a transport does (the
worker's ring transport in the guest, a fake one in tests). It must offer
``send_output(port, value)`` (emit one output now) and
``state_call(op, key, args)`` (a state operation the host performs in the
actor's namespace, returning its result).
"""

import json
import math

__all__ = ["ActorContext", "ActorState"]

_STATE_OPS = ("get", "set", "increment", "push", "pop", "expire")


def _json_value(value, what):
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serializable (state values are stored as JSON): {e}") from None
    return value


class ActorState:
    """The actor's persistent state, owned by the host (the guest has no
    network). Every method is a coroutine; the ``*_sync`` twins serve
    synchronous actor functions."""

    def __init__(self, transport):
        self._transport = transport

    def _call(self, op, key, *args):
        if not isinstance(key, str) or not key:
            raise TypeError("state keys are non-empty strings")
        return self._transport.state_call(op, key, list(args))

    def get_sync(self, key):
        return self._call("get", key)

    def set_sync(self, key, value):
        self._call("set", key, _json_value(value, "a state value"))

    def increment_sync(self, key, amount=1):
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError("increment amounts are integers")
        return self._call("increment", key, amount)

    def push_sync(self, key, value):
        return self._call("push", key, _json_value(value, "a list item"))

    def pop_sync(self, key):
        return self._call("pop", key)

    def expire_sync(self, key, ttl_seconds):
        if not isinstance(ttl_seconds, (int, float)) or isinstance(ttl_seconds, bool) or ttl_seconds <= 0 \
                or not math.isfinite(ttl_seconds):
            raise ValueError("expire needs a positive number of seconds")
        return self._call("expire", key, ttl_seconds)

    async def get(self, key):
        return self.get_sync(key)

    async def set(self, key, value):
        self.set_sync(key, value)

    async def increment(self, key, amount=1):
        return self.increment_sync(key, amount)

    async def push(self, key, value):
        return self.push_sync(key, value)

    async def pop(self, key):
        return self.pop_sync(key)

    async def expire(self, key, ttl_seconds):
        return self.expire_sync(key, ttl_seconds)


class ActorContext:
    """One invocation's inputs, configuration, state and output ports."""

    def __init__(self, payload, config, actor_id, transport, outports=None):
        self.payload = dict(payload)
        self.config = dict(config)
        self.actor_id = actor_id
        self.state = ActorState(transport)
        self._transport = transport
        self._outports = list(outports) if outports is not None else None

    def get_input(self, port, default=None):
        return self.payload.get(port, default)

    def get_payload(self):
        return self.payload

    def get_config(self):
        return self.config

    def get_state(self):
        return self.state

    def _check_port(self, port):
        if not isinstance(port, str):
            raise TypeError("output ports are named by strings")
        if self._outports is not None and port not in self._outports:
            raise ValueError(f'unknown outport "{port}" (declared: {", ".join(self._outports) or "none"})')

    def send_output_sync(self, port, value):
        """Emits one output now; several per invocation are fine."""
        self._check_port(port)
        self._transport.send_output(port, value)

    async def send_output(self, port, value):
        self.send_output_sync(port, value)

    def send(self, port, message):
        """Alias of `send_output_sync`, the name the documented API uses."""
        self.send_output_sync(port, message)
