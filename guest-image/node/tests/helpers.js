'use strict';
// Test helpers: the reflow_shm addon built with the host's C compiler, and
// in-memory ring regions laid out as the host lays them out.
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { Region, writeLayout } = require('../sdk/reflow/ring');

let addon = null;

/** The addon, compiled once per test process. */
function shm() {
  if (addon === null) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reflow-shm-'));
    const out = path.join(dir, 'reflow_shm.node');
    execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-o', out,
      path.join(__dirname, '..', 'addon', 'reflow_shm.c'), '-ldl']);
    addon = require(out);
  }
  return addon;
}

/** A SharedArrayBuffer laid out as a ring region of `size` bytes. */
function regionBuffer(size = 1 << 20) {
  return writeLayout(new SharedArrayBuffer(size));
}

function region(buffer = regionBuffer()) {
  return new Region(buffer, shm().crc32);
}

module.exports = { shm, regionBuffer, region };
