'use strict';
// Entry point the agent spawns: node /opt/reflow/run_worker.js <addr> <size>
// (a process worker's jail adds the path to map, /proc/self/fd/3)
// Progress is reported from the first line on (loading the SDK is guest
// kernel work too), so the host sees the step.
const exit = process.exit.bind(process);
const { Progress } = require('./reflow/progress');

const progress = new Progress();
progress.step('load the SDK');
require('./reflow/worker')
  .main(process.argv, progress)
  .catch((e) => {
    console.error(`reflow worker: ${e && e.stack}`);
    progress.failed(`${e && e.stack}`);
    exit(1);
  });
