#!/usr/bin/env bash
# Builds the guest agent as a static x86_64 executable (profile `guest`) and
# prints its path. Its own target dir keeps these flags from invalidating the
# host build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=x86_64-unknown-linux-gnu
echo "[agent] building reflow-guest-agent (static, profile guest)" >&2
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --manifest-path "$root/Cargo.toml" \
    -p reflow-guest-agent --profile guest --target "$target" --target-dir "$root/target/guest" >&2
echo "$root/target/guest/$target/guest/reflow-guest-agent"
