#!/usr/bin/env bash
# Builds the Python guest root filesystem: Debian bookworm packages (from
# python/packages.txt, with their dependencies) installed by mmdebstrap, our
# SDK (python/sdk/, installed under /opt/reflow),
# pruned of documentation and package caches, packed as a read-only ext4
# image (no journal) that the VM gets as /dev/vda. Not squashfs:
# decompression is guest kernel work, which some hosts emulate instruction
# by instruction (and the kernel's zstd picks a BMI2 code path those
# emulators cannot run); virtio-blk reads of a plain image are host copies. Cached outside the
# repository, keyed by the hash of its inputs (this script,
# python/packages.txt and the SDK files); a second run with the same inputs
# returns at once.
#
# Usage: guest-image/build-python.sh [--path-only]
#   (no flag)    build if needed; print the image path on the last stdout line
#   --path-only  print the cached path if it exists, else exit 1
#
# Environment:
#   XDG_CACHE_HOME / HOME   cache root: ${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox
#   REFLOW_DEBIAN_MIRROR    Debian mirror (default: the host's apt sources)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
packages_file="$here/python/packages.txt"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox/images"

log() { printf '[python-image] %s\n' "$*" >&2; }
die() { printf '[python-image] error: %s\n' "$*" >&2; exit 1; }

key="$( {
    cat "$here/build-python.sh" "$packages_file"
    (cd "$here/python" && find sdk -type f ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum)
} | sha256sum | cut -c1-16)"
out_dir="$cache_root/python-$key"
image="$out_dir/rootfs.ext4"

if [ "${1:-}" = "--path-only" ]; then
    [ -f "$image" ] || exit 1
    echo "$image"
    exit 0
fi
if [ -f "$image" ]; then
    log "cached: $image ($(du -h --apparent-size "$image" | cut -f1))"
    echo "$image"
    exit 0
fi

ensure_packages() {
    local missing=()
    for p in mmdebstrap e2fsprogs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
    log "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

[ "$(id -u)" -eq 0 ] || die "building the root filesystem needs root (mmdebstrap installs packages into a chroot)"
ensure_packages
packages="$(grep -v '^\s*#' "$packages_file" | grep -v '^\s*$' | paste -sd, -)"
[ -n "$packages" ] || die "$packages_file lists no packages"

work="$(mktemp -d "${TMPDIR:-/tmp}/reflow-python-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
log "installing $packages (Debian bookworm) with mmdebstrap"
mirror=()
[ -n "${REFLOW_DEBIAN_MIRROR:-}" ] && mirror=("$REFLOW_DEBIAN_MIRROR")
mmdebstrap --variant=custom --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$work/rootfs.tar" "${mirror[@]}" >"$work/mmdebstrap.log" 2>&1 ||
    { tail -20 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed (log above)"; }
log "pruning and packing"
mkdir "$work/root"
tar -C "$work/root" -xpf "$work/rootfs.tar"
rm -rf "$work/root"/var/cache/apt/* "$work/root"/var/lib/apt/lists/* \
    "$work/root"/var/log/* "$work/root"/usr/share/doc "$work/root"/usr/share/man
mkdir -p "$work/root/opt/reflow"
cp -a "$here/python/sdk/." "$work/root/opt/reflow/"
find "$work/root/opt/reflow" -name __pycache__ -prune -exec rm -rf {} +
# The image is read-only: compile the standard library and the SDK now, or
# every import compiles from source in every guest.
chroot "$work/root" /usr/bin/python3 -m compileall -q -j 0 /usr/lib/python3.11 /opt/reflow >/dev/null 2>&1 ||
    log "warning: some standard library modules did not byte-compile"
# Where the agent mounts tmpfs and the pseudo filesystems.
mkdir -p "$work/root"/{dev,proc,sys,tmp,run}
"$work/root/usr/bin/python3" --version >/dev/null 2>&1 ||
    chroot "$work/root" /usr/bin/python3 --version >/dev/null ||
    die "the image's python3 does not run"
mkdir -p "$out_dir.tmp"
size_kib=$(( $(du -sk "$work/root" | cut -f1) * 5 / 4 + 16384 ))
truncate -s "${size_kib}k" "$out_dir.tmp/rootfs.ext4"
mkfs.ext4 -q -F -L reflow-python -O ^has_journal -m 0 -E root_owner=0:0 \
    -d "$work/root" "$out_dir.tmp/rootfs.ext4" "${size_kib}k" >&2
rm -rf "$out_dir"
mv "$out_dir.tmp" "$out_dir"
log "built in $(( $(date +%s) - started )) s: $image ($(du -h --apparent-size "$image" | cut -f1) image, \
$(du -sh "$work/root" | cut -f1) of files, python $(chroot "$work/root" /usr/bin/python3 -c 'import sys; print(sys.version.split()[0])'))"
echo "$image"
