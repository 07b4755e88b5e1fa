'use strict';
// Start-up progress the host watches while it builds a golden snapshot:
// the Python SDK's reflow/progress.py format, in one JSON file,
//
//   {state: "step" | "ready" | "failed", step, detail, error,
//    steps: [{name, secs, user, sys, minflt, majflt}, ...]}
//
// `steps` lists the finished steps with the guest time each took and the
// process's user and system CPU seconds and page faults during it (system
// time and faults are guest kernel work, which some hosts emulate several
// times slower than others). The host gives up only when the file stops
// changing or says "failed", never after a fixed time. Details are written
// at most every THROTTLE_MS (a write is a few system calls).

const fs = require('fs');
const path = require('path');

const PROGRESS_FILE = '/run/reflow/progress';
const THROTTLE_MS = 500;

function usage() {
  const r = process.resourceUsage();
  return [r.userCPUTime / 1e6, r.systemCPUTime / 1e6, r.minorPageFault, r.majorPageFault];
}

const round3 = (x) => Math.round(x * 1000) / 1000;

class Progress {
  constructor(file = PROGRESS_FILE, clock = () => performance.now()) {
    this.file = file;
    this.clock = clock;
    this.steps = [];
    this.stepName = '';
    this.detailText = '';
    this.started = clock();
    this.usage = usage();
    this.written = -Infinity;
    fs.mkdirSync(path.dirname(file), { recursive: true });
  }

  finishStep() {
    if (!this.stepName) return;
    const now = this.clock();
    const u = usage();
    const d = u.map((x, i) => x - this.usage[i]);
    this.steps.push({
      name: this.stepName,
      secs: round3((now - this.started) / 1000),
      user: round3(d[0]),
      sys: round3(d[1]),
      minflt: d[2],
      majflt: d[3],
    });
    this.started = now;
    this.usage = u;
  }

  write(state, error) {
    const body = { state, step: this.stepName, detail: this.detailText, steps: this.steps };
    if (error !== undefined) body.error = String(error).slice(-2000);
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(body));
    fs.renameSync(tmp, this.file);
    this.written = this.clock();
  }

  /** Starts step `name` (ending the one before). */
  step(name, detail = '') {
    this.finishStep();
    this.stepName = name;
    this.detailText = detail;
    this.write('step');
  }

  /** Says how far the current step got; written at most every THROTTLE_MS. */
  detail(text) {
    this.detailText = text;
    if (this.clock() - this.written >= THROTTLE_MS) this.write('step');
  }

  ready() {
    this.finishStep();
    this.stepName = '';
    this.detailText = '';
    this.write('ready');
  }

  failed(error) {
    this.finishStep();
    this.write('failed', error);
  }
}

module.exports = { Progress, PROGRESS_FILE };
