'use strict';
// Entry point the agent spawns: node /opt/reflow/run_worker.js <addr> <size>
const exit = process.exit.bind(process);
require('./reflow/worker')
  .main(process.argv)
  .catch((e) => {
    console.error(`reflow worker: ${e && e.stack}`);
    exit(1);
  });
