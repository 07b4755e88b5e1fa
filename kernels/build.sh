#!/usr/bin/env bash
# Builds the Reflow sandbox guest kernel (an uncompressed x86_64 `vmlinux`) from
# Debian's linux-source-6.1 with our config fragment and patches, and caches it
# outside the repository, keyed by the hash of (source version, config, patches,
# this script). A second run with the same inputs returns at once.
#
# Usage: kernels/build.sh [--path-only]
#   (no flag)    build if needed; print the vmlinux path on the last stdout line
#   --path-only  print the cached path if it exists, else exit 1 (builds nothing)
#
# Environment:
#   XDG_CACHE_HOME / HOME   cache root: ${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox
#   REFLOW_KERNEL_JOBS      parallel make jobs (default: nproc)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fragment="$here/microvm-x86_64.config"
patches=("$here"/patches/*.patch)
source_pkg="linux-source-6.1"
source_tar="/usr/src/linux-source-6.1.tar.xz"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox/kernels"
jobs="${REFLOW_KERNEL_JOBS:-$(nproc)}"

log() { printf '[kernel] %s\n' "$*" >&2; }
die() { printf '[kernel] error: %s\n' "$*" >&2; exit 1; }

source_version() {
    dpkg-query -W -f='${Version}' "$source_pkg" 2>/dev/null || true
}

cache_key() {
    local version="$1"
    {
        printf 'source=%s %s\n' "$source_pkg" "$version"
        cat "$fragment" "${patches[@]}" "$here/build.sh"
    } | sha256sum | cut -c1-16
}

ensure_packages() {
    local wanted=("$source_pkg" bc flex bison libelf-dev make gcc xz-utils patch)
    local missing=()
    for p in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
    log "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

version="$(source_version)"
if [ "${1:-}" = "--path-only" ]; then
    [ -n "$version" ] || exit 1
    out="$cache_root/$(cache_key "$version")/vmlinux"
    [ -f "$out" ] || exit 1
    echo "$out"
    exit 0
fi

ensure_packages
version="$(source_version)"
[ -f "$source_tar" ] || die "$source_tar not found after installing $source_pkg"
key="$(cache_key "$version")"
dest="$cache_root/$key"
if [ -f "$dest/vmlinux" ]; then
    log "cached: $dest/vmlinux ($source_pkg $version)"
    echo "$dest/vmlinux"
    exit 0
fi

work="$cache_root/build-$key"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
log "building $source_pkg $version with $jobs jobs (about 10 minutes on 2 cores); cache key $key"
log "extracting $source_tar"
tar -C "$work" -xf "$source_tar"
src="$work/linux-source-6.1"
for p in "${patches[@]}"; do
    log "applying $(basename "$p")"
    patch -d "$src" -p1 --quiet --forward < "$p" >&2 || die "patch $(basename "$p") does not apply to $version"
done

log "configuring: tinyconfig + $(basename "$fragment")"
make -C "$src" ARCH=x86_64 tinyconfig >/dev/null
(cd "$src" && ./scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null)
make -C "$src" ARCH=x86_64 olddefconfig >/dev/null
# Every line of the fragment must survive olddefconfig: a dependency we forgot
# would otherwise silently drop an option.
bad=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*) opt="${line%%=*}" ;;
        "# CONFIG_"*" is not set") opt="${line#\# }"; opt="${opt%% *}" ;;
        *) continue ;;
    esac
    if [[ "$line" == \#* ]]; then
        if grep -q "^$opt=" "$src/.config"; then log "config: $opt wanted off, is $(grep "^$opt=" "$src/.config")"; bad=1; fi
    elif ! grep -qx "$line" "$src/.config"; then
        log "config: wanted $line, got: $(grep -E "^(# )?$opt[= ]" "$src/.config" || echo 'absent')"
        bad=1
    fi
done < "$fragment"
[ "$bad" -eq 0 ] || die "config fragment does not apply cleanly (see above)"

log "compiling vmlinux (full log: $work/build.log)"
count=0
last=0
set +e
make -C "$src" ARCH=x86_64 -j"$jobs" vmlinux 2>&1 | tee "$work/build.log" | while IFS= read -r line; do
    case "$line" in
        *" CC "*|*" AS "*|*" LD "*|*" AR "*)
            count=$((count + 1))
            now=$(date +%s)
            if [ $((now - last)) -ge 15 ]; then
                last=$now
                log "$count objects built, $((now - started)) s elapsed"
            fi
            ;;
    esac
done
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    tail -n 40 "$work/build.log" >&2
    die "kernel build failed (exit $status)"
fi

mkdir -p "$dest.tmp"
cp "$src/vmlinux" "$dest.tmp/vmlinux"
cp "$src/.config" "$dest.tmp/config"
printf '%s %s\n' "$source_pkg" "$version" > "$dest.tmp/source"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
log "built in $(( $(date +%s) - started )) s: $dest/vmlinux ($(du -h "$dest/vmlinux" | cut -f1))"
echo "$dest/vmlinux"
