'use strict';
// `ActorContext`: what a JavaScript actor's process(context) gets. As in
// the Python SDK, the context does not talk to the host itself: a transport
// does (the worker's ring transport in the guest, a fake one in tests),
// offering `sendOutput(port, value)` and `stateCall(op, key, args)`.

function jsonValue(value, what) {
  const check = (v, depth) => {
    if (depth > 64) throw new TypeError(`${what} nests deeper than 64`);
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new TypeError(`${what} must be JSON (state values are stored as JSON): ${v} is not`);
      return;
    }
    if (Array.isArray(v)) return v.forEach((x) => check(x, depth + 1));
    if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
      return Object.values(v).forEach((x) => check(x, depth + 1));
    }
    throw new TypeError(`${what} must be JSON (state values are stored as JSON): a ${typeof v === 'object' ? v.constructor?.name ?? 'object' : typeof v} is not`);
  };
  check(value, 0);
  return value;
}

/**
 * The actor's persistent state, owned by the host (the guest has no
 * network). Every method returns a promise; the `*Sync` twins serve
 * synchronous actors.
 */
class ActorState {
  constructor(transport) {
    this._transport = transport;
  }

  _call(op, key, ...args) {
    if (typeof key !== 'string' || !key) throw new TypeError('state keys are non-empty strings');
    return this._transport.stateCall(op, key, args);
  }

  getSync(key) {
    return this._call('get', key);
  }

  setSync(key, value) {
    this._call('set', key, jsonValue(value, 'a state value'));
  }

  incrementSync(key, amount = 1) {
    if (!Number.isSafeInteger(amount)) throw new TypeError('increment amounts are integers');
    return this._call('increment', key, amount);
  }

  pushSync(key, value) {
    return this._call('push', key, jsonValue(value, 'a list item'));
  }

  popSync(key) {
    return this._call('pop', key);
  }

  expireSync(key, ttlSeconds) {
    if (typeof ttlSeconds !== 'number' || !(ttlSeconds > 0) || !Number.isFinite(ttlSeconds)) {
      throw new RangeError('expire needs a positive number of seconds');
    }
    return this._call('expire', key, ttlSeconds);
  }
}

// The promise-returning forms: a state call completes before it returns
// (the worker waits for the host's reply on the ring), so each settles at
// once; errors reject.
for (const op of ['get', 'set', 'increment', 'push', 'pop', 'expire']) {
  const sync = ActorState.prototype[`${op}Sync`];
  ActorState.prototype[op] = function stateOp(...args) {
    try {
      return Promise.resolve(sync.apply(this, args));
    } catch (e) {
      return Promise.reject(e);
    }
  };
}

/** One invocation's inputs, configuration, state and output ports. */
class ActorContext {
  constructor(payload, config, actorId, transport, outports = null) {
    this.payload = { ...payload };
    this.config = { ...config };
    this.actorId = actorId;
    this.state = new ActorState(transport);
    this._transport = transport;
    this._outports = outports;
  }

  getInput(port, dflt = undefined) {
    return Object.prototype.hasOwnProperty.call(this.payload, port) ? this.payload[port] : dflt;
  }

  getPayload() {
    return this.payload;
  }

  getConfig() {
    return this.config;
  }

  getState() {
    return this.state;
  }

  _checkPort(port) {
    if (typeof port !== 'string') throw new TypeError('output ports are named by strings');
    if (this._outports !== null && !this._outports.includes(port)) {
      throw new RangeError(`unknown outport "${port}" (declared: ${this._outports.join(', ') || 'none'})`);
    }
  }

  /** Emits one output now; several per invocation are fine. */
  sendOutputSync(port, value) {
    this._checkPort(port);
    this._transport.sendOutput(port, value);
  }

  sendOutput(port, value) {
    try {
      this.sendOutputSync(port, value);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Alias of `sendOutputSync`, the name the documented API uses. */
  send(port, message) {
    this.sendOutputSync(port, message);
  }
}

module.exports = { ActorContext, ActorState };
