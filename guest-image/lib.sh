# The shared start and end of the language image builds (build-python.sh,
# build-node.sh): sourced, not run. The caller sets `here` (this folder)
# and `lang` (python or node: the folder of its packages.txt, preload.txt
# and SDK). Sources rootfs.sh with `tag` ($lang-image) and `cache_root`
# set, and defines log and die (rootfs_log, rootfs_die) and:
#
#   image_options FLAG NOUN DEFAULT ARG...
#       parses the script's arguments: `--path-only` and `FLAG FILE` (the
#       list of packages to bake in, DEFAULT without it, "no NOUN at FILE"
#       where it is missing); sets path_only, list_file and listed (the
#       list's lines without comments, blank lines and surrounding blanks)
#   image_key FIND_ARG...
#       sets key (the hash of the inputs: the build script, lib.sh,
#       rootfs.sh, $lang/packages.txt, $lang/preload.txt, $listed and the
#       sha256sum of each file `find FIND_ARG...` lists in $lang/), out_dir
#       and image
#   image_exit_if_built
#       with --path-only: prints the image path and exits (1 where it is
#       not built); else prints a built image's path and exits, if any
#   image_build_start
#       sets work (a temporary folder, removed on exit) and started
#   image_built WHAT
#       logs the build time, the image's and the files' sizes and WHAT,
#       and prints the image path
#
# Environment: XDG_CACHE_HOME / HOME   cache root: ${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox

packages_file="$here/$lang/packages.txt"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox/images"
tag=$lang-image
# shellcheck source=rootfs.sh
. "$here/rootfs.sh"
log() { rootfs_log "$@"; }
die() { rootfs_die "$@"; }

image_options() {
    local flag="$1" noun="$2"
    list_file="$3"
    shift 3
    path_only=false
    while [ $# -gt 0 ]; do
        case "$1" in
            --path-only) path_only=true ;;
            "$flag")
                [ $# -ge 2 ] || die "$flag needs a file"
                list_file="$2"; shift ;;
            *) die "unknown argument: $1 (see the usage at the top of $0)" ;;
        esac
        shift
    done
    [ -f "$list_file" ] || die "no $noun at $list_file"
    listed="$(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$list_file" | grep -v '^$' || true)"
}

# Makes sure the host's python3 has pip (it fetches wheels).
host_pip() {
    python3 -m pip --version >/dev/null 2>&1 && return 0
    log "installing python3-pip with apt-get (pip fetches the wheels)"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2; } ||
        die "fetching wheels needs pip on the host (apt-get install python3-pip)"
}

image_key() {
    key="$( {
        cat "$here/build-$lang.sh" "$here/lib.sh" "$here/rootfs.sh" "$packages_file" "$here/$lang/preload.txt"
        printf '%s\n' "$listed"
        (cd "$here/$lang" && find "$@" | LC_ALL=C sort | xargs sha256sum)
    } | sha256sum | cut -c1-16)"
    out_dir="$cache_root/$lang-$key"
    image="$out_dir/rootfs.ext4"
}

image_exit_if_built() {
    if $path_only; then
        [ -f "$image" ] || exit 1
        echo "$image"
        exit 0
    fi
    if [ -f "$image" ]; then
        log "cached: $image ($(du -h --apparent-size "$image" | cut -f1))"
        echo "$image"
        exit 0
    fi
}

image_build_start() {
    work="$(mktemp -d "${TMPDIR:-/tmp}/reflow-$lang-image.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    started=$(date +%s)
}

image_built() {
    log "built in $(( $(date +%s) - started )) s: $image ($(du -h --apparent-size "$image" | cut -f1) image, \
$(du -sh "$work/root" | cut -f1) of files, $1)"
    echo "$image"
}
