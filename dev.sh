#!/usr/bin/env bash
# One entry point for newcomers, CI and performance work.
#
#   ./dev.sh demo    set everything up, then run examples/pipeline: a Reflow graph of native
#                    Rust actors, a Python and a JavaScript actor, each in its own microVM
#   ./dev.sh vm-demo set everything up, boot a microVM, talk to its agent, restore a clone
#   ./dev.sh test    set everything up, then fmt + clippy + the whole test suite (what CI runs)
#   ./dev.sh bench   set everything up, run every benchmark, write target/bench-report.md
#   ./dev.sh bench --quick   a few minutes: the latency and throughput benches, fewer samples
#   ./dev.sh bench [--quick] NAME...   only the benches named (benches/NAME.rs)
#   ./dev.sh fuzz [target] [seconds]   run the cargo-fuzz targets (nightly; 60 s each by default)
#   ./dev.sh soak [messages] [ms]      the full soak test: 100000 messages, a VM killed every ~1500 ms
#   ./dev.sh setup   only set up: apt packages (redis-server), guest kernel, agent, initramfs,
#                    Python and Node images, cargo build
#
# Setup is idempotent and cached under ${XDG_CACHE_HOME:-~/.cache}/reflow-sandbox,
# keyed by the hash of every input: the first run builds the guest kernel
# (about 5-10 minutes on 2 cores), later runs take seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'dev.sh: error: %s\n' "$*" >&2; exit 1; }

# Installs the Debian/Ubuntu packages named that are missing (as root).
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
    step "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# Packs the agent binary $1 into an initramfs (cached) and prints its path.
initramfs() {
    target/release/reflow-guest-image \
        --cache-dir "${REFLOW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox}" \
        initramfs --agent "$1" | tail -n 1
}

# After setup: tests and benches boot an agent with its test hooks; the
# release initramfs stays in REFLOW_RELEASE_INITRAMFS (a test checks it has none).
with_test_hooks() {
    step "guest agent with test hooks (ring-fault) and its initramfs, for tests and benches"
    REFLOW_RELEASE_INITRAMFS="$REFLOW_INITRAMFS"
    REFLOW_INITRAMFS="$(initramfs "$(guest-image/build-agent.sh --testing | tail -n 1)")"
    export REFLOW_INITRAMFS REFLOW_RELEASE_INITRAMFS
    echo "initramfs with test hooks: $REFLOW_INITRAMFS" >&2
}

setup() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
    # redis-server: the state service's tests start a private one;
    # openssl: the serve tests make a TLS certificate with it.
    apt_install redis-server openssl
    [ -e /dev/kvm ] || echo "dev.sh: warning: /dev/kvm is absent; VMs cannot boot on this machine" >&2
    step "guest kernel (cached by the hash of source version, config and patches)"
    REFLOW_KERNEL="$(kernels/build.sh | tail -n 1)"
    step "guest agent (static) and initramfs (cached by content hash)"
    local agent
    agent="$(guest-image/build-agent.sh | tail -n 1)"
    cargo build --quiet --release -p reflow-guest-image -p reflow-vmm -p reflow-sandbox
    REFLOW_INITRAMFS="$(initramfs "$agent")"
    step "Python root filesystem (Debian packages via mmdebstrap; cached by the hash of its inputs)"
    REFLOW_PYTHON_IMAGE="$(guest-image/build-python.sh | tail -n 1)"
    step "Node root filesystem (Node 24 LTS, npm packages, our addon and JS SDK; cached by the hash of its inputs)"
    REFLOW_NODE_IMAGE="$(guest-image/build-node.sh | tail -n 1)"
    export REFLOW_KERNEL REFLOW_INITRAMFS REFLOW_PYTHON_IMAGE REFLOW_NODE_IMAGE
    echo "kernel:       $REFLOW_KERNEL" >&2
    echo "initramfs:    $REFLOW_INITRAMFS" >&2
    echo "python image: $REFLOW_PYTHON_IMAGE" >&2
    echo "node image:   $REFLOW_NODE_IMAGE" >&2
}

demo() {
    setup
    step "running examples/pipeline/graph.json: Range (native) -> Scale (Python, in a microVM) -> Offset (JavaScript, in a microVM) -> Format (native)"
    echo "(the first run creates the Python and Node workers' golden snapshots once: about a minute each on an Intel kvm_pvm host, 4-5 minutes each on an AMD one; each step is shown as it runs)" >&2
    target/release/reflow-sandbox run examples/pipeline/graph.json
}

vm_demo() {
    setup
    step "booting a microVM: our monitor, our kernel, the agent as PID 1"
    local start end
    start=$(date +%s%N)
    target/release/reflow-vmm --kernel "$REFLOW_KERNEL" --initrd "$REFLOW_INITRAMFS" \
        --no-input --request uptime --request "poweroff 0"
    end=$(date +%s%N)
    local ms=$(( (end - start) / 1000000 ))
    printf '\ndemo: the guest booted, answered over vsock and powered off in %d.%03d s (host wall time)\n' \
        $((ms / 1000)) $((ms % 1000))
    step "restoring a clone from the golden snapshot (created on first use by booting once)"
    target/release/reflow-vmm --kernel "$REFLOW_KERNEL" --initrd "$REFLOW_INITRAMFS" --golden \
        --request "random 16" --request "poweroff 0"
}

test_all() {
    setup
    with_test_hooks
    step "cargo fmt --check"
    cargo fmt --all -- --check
    step "cargo clippy --all-targets -- -D warnings"
    cargo clippy --quiet --workspace --all-targets -- -D warnings
    step "Python SDK unit tests (host python3)"
    command -v python3 >/dev/null || die "python3 not found: install it (apt-get install python3)"
    PYTHONPATH=guest-image/python/sdk python3 -W error::ResourceWarning -m unittest discover \
        -s guest-image/python/tests -t guest-image/python/tests
    step "JavaScript SDK unit tests (host node)"
    command -v node >/dev/null || apt_install nodejs
    node --test guest-image/node/tests/
    step "cargo test (boots real guests on /dev/kvm)"
    cargo test --workspace -- --nocapture --test-threads=2
}

bench() {
    local quick="" only=()
    for arg in "$@"; do
        case "$arg" in
            --quick) quick=1 ;;
            -*) die "unknown bench option $arg (./dev.sh bench [--quick] [bench...])" ;;
            *) [ -f "benches/$arg.rs" ] || die "no bench $arg (benches/*.rs)"; only+=(--bench "$arg") ;;
        esac
    done
    setup
    with_test_hooks
    # One run id for every bench: the report shows figures of other runs as
    # stale. A preset one joins that run (to re-run a bench into it).
    REFLOW_BENCH_RUN="${REFLOW_BENCH_RUN:-$(date -u +%Y%m%dT%H%M%SZ)}"
    export REFLOW_BENCH_RUN
    if [ -n "$quick" ]; then
        # A developer's loop: fewer samples; unless benches are named, the
        # latency and throughput ones (boot, component, compute, idle and
        # memory keep their last figures, which the report shows as stale).
        export REFLOW_BENCH_QUICK=1
        [ ${#only[@]} -gt 0 ] || only=(--bench restore --bench ring --bench python
            --bench javascript --bench state --bench graph --bench stream)
        step "cargo bench, quick: ${only[*]}"
        cargo bench -p reflow-benches "${only[@]}" -- --quick
    elif [ ${#only[@]} -gt 0 ]; then
        step "cargo bench ${only[*]} (the others keep their last figures, shown as stale)"
        cargo bench -p reflow-benches "${only[@]}"
    else
        step "cargo bench (every bench; each records its figures under target/bench-metrics/)"
        cargo bench -p reflow-benches
    fi
    step "comparison report: target/bench-report.md"
    cargo run --quiet --release -p reflow-benches --bin bench-report
}

soak() {
    setup
    local messages="${1:-100000}" kill_every="${2:-1500}"
    step "soak: $messages messages through native -> Python -> JavaScript -> native, a VM killed every ~$kill_every ms"
    REFLOW_SOAK_MESSAGES="$messages" REFLOW_SOAK_KILL_EVERY_MS="$kill_every" \
        cargo test --release -p reflow-integration-tests --test soak -- --nocapture
}

fuzz() {
    local targets=(ring_consumer vsock_packet control_frame value_decode descriptor_chain guest_messages)
    local only="${1:-}" seconds="${2:-60}"
    if [ -n "$only" ]; then
        printf '%s\n' "${targets[@]}" | grep -qx "$only" || die "unknown fuzz target $only (${targets[*]})"
        targets=("$only")
    fi
    command -v rustup >/dev/null || die "rustup not found: fuzzing needs a nightly toolchain"
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        step "installing the nightly toolchain (libFuzzer needs it)"
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        step "installing cargo-fuzz"
        cargo install cargo-fuzz --locked
    fi
    for t in "${targets[@]}"; do
        step "fuzzing $t for $seconds s (corpus: fuzz/corpus/$t)"
        cargo +nightly fuzz run -O "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048
    done
}

case "${1:-}" in
    demo) demo ;;
    vm-demo) vm_demo ;;
    test) test_all ;;
    bench) shift; bench "$@" ;;
    fuzz) shift; fuzz "$@" ;;
    soak) shift; soak "$@" ;;
    setup) setup ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
