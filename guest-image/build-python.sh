#!/usr/bin/env bash
# Builds the Python guest root filesystem: Debian bookworm packages (from
# python/packages.txt, with their dependencies) installed by mmdebstrap, our
# SDK (python/sdk/, installed under /opt/reflow, with python/preload.txt:
# the modules the worker imports before the golden snapshot), pip packages from a
# requirements file (python/requirements.txt by default; wheels fetched on
# the host for the guest's CPython 3.11),
# pruned of documentation and package caches, packed as a read-only ext4
# image (no journal) that the VM gets as /dev/vda. Not squashfs:
# decompression is guest kernel work, which some hosts emulate instruction
# by instruction (and the kernel's zstd picks a BMI2 code path those
# emulators cannot run); virtio-blk reads of a plain image are host copies. Cached outside the
# repository, keyed by the hash of its inputs (this script,
# python/packages.txt, the requirements and the SDK files); a second run
# with the same inputs returns at once.
#
# Usage: guest-image/build-python.sh [--requirements FILE] [--path-only]
#   (no flag)            build if needed; print the image path on the last
#                        stdout line
#   --requirements FILE  pip packages to bake in (default
#                        python/requirements.txt; an empty file: none)
#   --path-only          print the cached path if it exists, else exit 1
#
# Environment:
#   XDG_CACHE_HOME / HOME   cache root: ${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox
#   REFLOW_DEBIAN_MIRROR    Debian mirror (default: the host's apt sources)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lang=python
# shellcheck source=lib.sh
. "$here/lib.sh"
image_options --requirements "requirements file" "$here/python/requirements.txt" "$@"
pip_packages="$listed"
image_key sdk -type f ! -name '*.pyc'
image_exit_if_built

image_build_start
rootfs_debian "$packages_file" "$work/root"
log "adding the SDK and packing"
rootfs_prune "$work/root"
if [ -n "$pip_packages" ]; then
    host_pip
    log "fetching pip wheels: $(echo $pip_packages)"
    wheel_target=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux_2_28_x86_64 --platform any)
    printf '%s\n' "$pip_packages" >"$work/requirements.txt"
    python3 -m pip download --quiet --disable-pip-version-check "${wheel_target[@]}" \
        --dest "$work/wheels" -r "$work/requirements.txt" >&2 ||
        die "pip could not fetch wheels for: $(echo $pip_packages)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-index \
        --find-links "$work/wheels" "${wheel_target[@]}" --no-compile \
        --target "$work/root/usr/local/lib/python3.11/dist-packages" \
        -r "$work/requirements.txt" >&2 || die "pip could not install the wheels"
    rm -rf "$work/root/usr/local/lib/python3.11/dist-packages/bin"
fi
mkdir -p "$work/root/opt/reflow"
cp -a "$here/python/sdk/." "$work/root/opt/reflow/"
cp "$here/python/preload.txt" "$work/root/opt/reflow/preload.txt"
find "$work/root/opt/reflow" -name __pycache__ -prune -exec rm -rf {} +
# The image is read-only: compile the standard library and the SDK now, or
# every import compiles from source in every guest. Isolated and without
# site (-I -S): a wheel's .pth file may hold code that site would run.
compile_dirs=(/usr/lib/python3.11 /opt/reflow)
[ -d "$work/root/usr/local/lib/python3.11" ] && compile_dirs+=(/usr/local/lib/python3.11)
chroot "$work/root" /usr/bin/python3 -I -S -m compileall -q -j 0 "${compile_dirs[@]}" >/dev/null 2>&1 ||
    log "warning: some standard library modules did not byte-compile"
"$work/root/usr/bin/python3" --version >/dev/null 2>&1 ||
    chroot "$work/root" /usr/bin/python3 --version >/dev/null ||
    die "the image's python3 does not run"
rootfs_pack "$work/root" reflow-python "$out_dir"
image_built "python $(chroot "$work/root" /usr/bin/python3 -c 'import sys; print(sys.version.split()[0])')"
