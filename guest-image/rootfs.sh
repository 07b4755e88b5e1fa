# Shared steps of the language root filesystem builds (build-python.sh,
# build-node.sh): sourced, not run. The caller sets `tag` (log prefix) and
# `cache_root` (${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox/images).
#
#   rootfs_log / rootfs_die      messages on stderr, prefixed [$tag]
#   rootfs_host_packages P...    installs missing host packages (as root)
#   rootfs_debian FILE DIR       unpacks the Debian bookworm packages listed
#                                in FILE (and their dependencies) into DIR,
#                                without documentation; the package download
#                                is cached by the list's hash, so changing
#                                only the SDK does not fetch Debian again
#   rootfs_prune DIR             drops caches and logs, adds the mount points
#   rootfs_pack DIR LABEL OUT    packs DIR as a read-only ext4 image (no
#                                journal) at OUT/rootfs.ext4, atomically
#
# Environment: REFLOW_DEBIAN_MIRROR   Debian mirror (default: mmdebstrap's)

rootfs_log() { printf '[%s] %s\n' "$tag" "$*" >&2; }
rootfs_die() { printf '[%s] error: %s\n' "$tag" "$*" >&2; exit 1; }

rootfs_host_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || rootfs_die "missing packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
    rootfs_log "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

rootfs_debian() {
    local list="$1" root="$2" packages key tarball
    [ "$(id -u)" -eq 0 ] || rootfs_die "building a root filesystem needs root (mmdebstrap installs packages into a chroot)"
    rootfs_host_packages mmdebstrap e2fsprogs
    packages="$(grep -v '^\s*#' "$list" | grep -v '^\s*$' | paste -sd, -)"
    [ -n "$packages" ] || rootfs_die "$list lists no packages"
    key="$(printf '%s\n%s\n' "$packages" "${REFLOW_DEBIAN_MIRROR:-}" | sha256sum | cut -c1-16)"
    tarball="$cache_root/debian-$key.tar"
    if [ ! -f "$tarball" ]; then
        local mirror=()
        [ -n "${REFLOW_DEBIAN_MIRROR:-}" ] && mirror=("$REFLOW_DEBIAN_MIRROR")
        rootfs_log "installing $packages (Debian bookworm) with mmdebstrap"
        mkdir -p "$cache_root"
        # (mmdebstrap writes a tarball for a name ending in .tar)
        mmdebstrap --variant=custom --include="$packages" \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            bookworm "$tarball.tmp.tar" "${mirror[@]}" >"$root.mmdebstrap.log" 2>&1 ||
            { tail -20 "$root.mmdebstrap.log" >&2; rootfs_die "mmdebstrap failed (log above)"; }
        mv "$tarball.tmp.tar" "$tarball"
    else
        rootfs_log "Debian packages cached: $tarball"
    fi
    mkdir -p "$root"
    tar -C "$root" -xpf "$tarball"
}

rootfs_prune() {
    local root="$1"
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* \
        "$root"/var/log/* "$root"/usr/share/doc "$root"/usr/share/man
    # Where the agent mounts tmpfs and the pseudo filesystems.
    mkdir -p "$root"/{dev,proc,sys,tmp,run}
}

rootfs_pack() {
    local root="$1" label="$2" out_dir="$3" size_kib
    mkdir -p "$out_dir.tmp"
    size_kib=$(( $(du -sk "$root" | cut -f1) * 5 / 4 + 16384 ))
    truncate -s "${size_kib}k" "$out_dir.tmp/rootfs.ext4"
    mkfs.ext4 -q -F -L "$label" -O ^has_journal -m 0 -E root_owner=0:0 \
        -d "$root" "$out_dir.tmp/rootfs.ext4" "${size_kib}k" >&2
    rm -rf "$out_dir"
    mv "$out_dir.tmp" "$out_dir"
}
