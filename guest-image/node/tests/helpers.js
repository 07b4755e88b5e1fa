'use strict';
// Test helpers: the reflow_shm addon built with the host's C compiler, and
// in-memory ring regions laid out as the host lays them out.
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { Region, layoutForSize, REGION_MAGIC, LAYOUT_VERSION } = require('../sdk/reflow/ring');

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
  const sab = new SharedArrayBuffer(size);
  const b = Buffer.from(sab);
  REGION_MAGIC.copy(b, 0);
  b.writeUInt32LE(LAYOUT_VERSION, 8);
  b.writeBigUInt64LE(BigInt(size), 16);
  const [h2g, g2h] = layoutForSize(size);
  [h2g.control, h2g.data, h2g.capacity, g2h.control, g2h.data, g2h.capacity].forEach((v, i) =>
    b.writeBigUInt64LE(BigInt(v), 24 + 8 * i));
  return sab;
}

function region(buffer = regionBuffer()) {
  return new Region(buffer, shm().crc32);
}

module.exports = { shm, regionBuffer, region };
