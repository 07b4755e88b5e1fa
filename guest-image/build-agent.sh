#!/usr/bin/env bash
# Builds the guest agent as a static x86_64 executable (profile `guest`) and
# prints its path. Its own target dir keeps these flags from invalidating the
# host build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=x86_64-unknown-linux-gnu
# --testing: with the test hooks (`ring-fault`), for the images tests and
# benches boot; in a target dir of its own, so neither build evicts the other.
features=() dir="$root/target/guest" what="static, profile guest"
if [ "${1:-}" = "--testing" ]; then
    features=(--features testing) dir="$root/target/guest-testing" what="static, profile guest, with test hooks"
fi
echo "[agent] building reflow-guest-agent ($what)" >&2
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --manifest-path "$root/Cargo.toml" \
    -p reflow-guest-agent "${features[@]}" --profile guest --target "$target" --target-dir "$dir" >&2
echo "$dir/$target/guest/reflow-guest-agent"
