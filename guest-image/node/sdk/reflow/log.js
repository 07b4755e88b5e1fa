'use strict';
// What an actor prints reaches the host as LOG records of the message that
// printed it, one record per line, capped per message (the Python SDK's
// reflow/log.py, same records):
//
//   guest -> host  LOG  {stream: 'stdout'|'stderr', line, cut}
//   guest -> host  LOG  {dropped_lines, dropped_bytes}
//
// `install` routes process.stdout.write and process.stderr.write (so
// console.log, console.error and the rest) to a GuestLog; the worker does
// so just before it is ready, so the golden snapshot has it. A line goes
// out when its newline is written (or when the message ends); a line
// longer than MAX_LINE characters is cut and the cut counted. Past a
// message's caps (lines, bytes: sent by the host in LOAD) text is only
// counted, without system calls, so a script printing 100 MB in a loop
// costs the host a bounded number of records and one count. Text printed
// outside a message (a timer firing after its message returned) is counted
// as dropped. Writes to file descriptors 1 and 2 directly (fs.writeSync)
// bypass this and go to the VM's console, which the host discards.

const MAX_LINE = 4096;
const DEFAULT_CAPS = [1000, 64 * 1024];

function count(v, fallback) {
  return Number.isInteger(v) && v >= 0 ? v : fallback;
}

function newlines(s) {
  let n = 0;
  for (let at = s.indexOf('\n'); at >= 0; at = s.indexOf('\n', at + 1)) n++;
  return n;
}

class GuestLog {
  /** `send(messageId, actorId, value)` writes a LOG record. */
  constructor(send) {
    this.send = send;
    this.caps = new Map();
    this.current = null;
    this.linesLeft = 0;
    this.bytesLeft = 0;
    this.droppedLines = 0;
    this.droppedBytes = 0;
    // Per stream: the line being written, and the characters cut from it.
    this.partial = { stdout: { text: '', cut: 0 }, stderr: { text: '', cut: 0 } };
  }

  /** The host's caps for `actorId` (LOAD's `log: {lines, bytes}`). */
  setCaps(actorId, caps) {
    const c = caps !== null && typeof caps === 'object' ? caps : {};
    this.caps.set(actorId, [count(c.lines, DEFAULT_CAPS[0]), count(c.bytes, DEFAULT_CAPS[1])]);
  }

  /** Message `messageId` of `actorId` starts: its lines go to the host. */
  begin(messageId, actorId) {
    this.current = [messageId, actorId];
    [this.linesLeft, this.bytesLeft] = this.caps.get(actorId) ?? DEFAULT_CAPS;
  }

  /** The message ends: its unfinished lines go out, then what was dropped. */
  end() {
    if (this.current === null) return;
    for (const stream of ['stdout', 'stderr']) {
      const p = this.partial[stream];
      if (p.text.length > 0 || p.cut > 0) this.emit(stream);
    }
    if (this.droppedLines > 0 || this.droppedBytes > 0) {
      this.send(this.current[0], this.current[1], {
        dropped_lines: this.droppedLines, dropped_bytes: this.droppedBytes,
      });
      this.droppedLines = 0;
      this.droppedBytes = 0;
    }
    this.current = null;
  }

  write(stream, s) {
    if (this.current === null || this.linesLeft <= 0) {
      this.drop(s);
      return;
    }
    let start = 0;
    for (;;) {
      const nl = s.indexOf('\n', start);
      if (nl < 0) {
        this.add(stream, start === 0 ? s : s.slice(start));
        return;
      }
      this.add(stream, s.slice(start, nl));
      this.emit(stream);
      start = nl + 1;
      if (this.linesLeft <= 0) {
        this.drop(s.slice(start));
        return;
      }
    }
  }

  drop(s) {
    this.droppedBytes += s.length;
    this.droppedLines += newlines(s);
  }

  add(stream, piece) {
    if (piece.length === 0) return;
    const p = this.partial[stream];
    const room = MAX_LINE - p.text.length;
    if (piece.length > room) {
      p.cut += piece.length - room;
      piece = piece.slice(0, room);
    }
    p.text += piece;
  }

  emit(stream) {
    const p = this.partial[stream];
    const { text, cut } = p;
    p.text = '';
    p.cut = 0;
    const size = text.length + 1;
    if (this.linesLeft <= 0 || size > this.bytesLeft) {
      this.linesLeft = 0;
      this.droppedLines += 1;
      this.droppedBytes += size + cut;
      return;
    }
    this.linesLeft -= 1;
    this.bytesLeft -= size;
    this.send(this.current[0], this.current[1], { stream, line: text, cut });
  }
}

/** A stream's `write(chunk[, encoding][, callback])`, to `log`. */
function writer(log, stream) {
  return function write(chunk, encoding, callback) {
    const done = typeof encoding === 'function' ? encoding : callback;
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    log.write(stream, text);
    // At once, with no error: queueing a callback per write would hold
    // memory for every line of a print loop until it returns.
    if (typeof done === 'function') done(null);
    return true;
  };
}

/** Makes `log` the destination of process.stdout and process.stderr. */
function install(log) {
  for (const [stream, name] of [[process.stdout, 'stdout'], [process.stderr, 'stderr']]) {
    stream.write = writer(log, name);
    // The guest's console is a terminal; a log line is not: no colours
    // from console.log's inspection of values.
    stream.isTTY = false;
    stream.getColorDepth = () => 1;
    stream.hasColors = () => false;
  }
}

module.exports = { GuestLog, MAX_LINE, install, writer };
