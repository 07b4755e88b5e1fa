#!/usr/bin/env bash
# One entry point for newcomers, CI and performance work.
#
#   ./dev.sh demo    set everything up, boot a microVM, print the agent's ready line and timing
#   ./dev.sh test    set everything up, then fmt + clippy + the whole test suite (what CI runs)
#   ./dev.sh bench   set everything up, then the criterion benchmarks
#   ./dev.sh setup   only set up: apt packages, guest kernel, agent, initramfs, cargo build
#
# Setup is idempotent and cached under ${XDG_CACHE_HOME:-~/.cache}/reflow-sandbox,
# keyed by the hash of every input: the first run builds the guest kernel
# (about 5-10 minutes on 2 cores), later runs take seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'dev.sh: error: %s\n' "$*" >&2; exit 1; }

setup() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
    [ -e /dev/kvm ] || echo "dev.sh: warning: /dev/kvm is absent; VMs cannot boot on this machine" >&2
    step "guest kernel (cached by the hash of source version, config and patches)"
    REFLOW_KERNEL="$(kernels/build.sh | tail -n 1)"
    step "guest agent (static) and initramfs (cached by content hash)"
    local agent
    agent="$(guest-image/build-agent.sh | tail -n 1)"
    cargo build --quiet --release -p reflow-guest-image -p reflow-vmm
    REFLOW_INITRAMFS="$(target/release/reflow-guest-image initramfs --agent "$agent" | tail -n 1)"
    export REFLOW_KERNEL REFLOW_INITRAMFS
    echo "kernel:    $REFLOW_KERNEL" >&2
    echo "initramfs: $REFLOW_INITRAMFS" >&2
}

demo() {
    setup
    step "booting a microVM: our monitor, our kernel, the agent as PID 1"
    local start end
    start=$(date +%s%N)
    target/release/reflow-vmm --kernel "$REFLOW_KERNEL" --initrd "$REFLOW_INITRAMFS" \
        --no-input --append 'reflow.cmd="uptime; poweroff 0"'
    end=$(date +%s%N)
    local ms=$(( (end - start) / 1000000 ))
    printf '\ndemo: the guest booted, reported ready and powered off in %d.%03d s (host wall time)\n' \
        $((ms / 1000)) $((ms % 1000))
    step "restoring a clone from the golden snapshot (created on first use by booting once)"
    target/release/reflow-vmm --kernel "$REFLOW_KERNEL" --initrd "$REFLOW_INITRAMFS" --golden \
        --request "random 16" --request "poweroff 0"
}

test_all() {
    setup
    step "cargo fmt --check"
    cargo fmt --all -- --check
    step "cargo clippy --all-targets -- -D warnings"
    cargo clippy --quiet --workspace --all-targets -- -D warnings
    step "cargo test (boots real guests on /dev/kvm)"
    cargo test --workspace -- --nocapture --test-threads=2
}

bench() {
    setup
    step "cargo bench"
    cargo bench -p reflow-benches
}

case "${1:-}" in
    demo) demo ;;
    test) test_all ;;
    bench) bench ;;
    setup) setup ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
