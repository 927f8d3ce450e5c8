#!/usr/bin/env bash
# Dependency policy check (deny.toml): licences, bans (duplicate versions, crates we refuse) and
# sources (crates.io only). Offline: `licenses bans sources` read only Cargo.lock, the
# downloaded crates and the licence texts, never the advisory database; `--frozen` (= `--locked
# --offline`) keeps cargo metadata on the local index and Cargo.lock, and cargo-deny from
# fetching anything.
# Advisories need the network (the RustSec database) and are not part of this check.
#
# cargo-deny is installed from crates.io when missing, at a pinned version, under
# $FERRUM_CACHE/tools (kept between runs on the same machine; a fresh machine compiles it once,
# a few minutes).
#
# Usage: scripts/cargo-deny.sh [--install-only]
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
root=${FERRUM_CACHE:-$HOME/.cache/ferrum-serve}/tools/cargo-deny-$CARGO_DENY_VERSION
bin=$root/bin/cargo-deny

if ! [ -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION\$"; then
  echo "cargo-deny $CARGO_DENY_VERSION: installing from crates.io into $root" >&2
  # Its own temporary build directory: a CARGO_TARGET_DIR meant for the project would otherwise
  # collect cargo-deny's build too.
  env -u CARGO_TARGET_DIR "${CARGO:-cargo}" install --locked --quiet \
    --version "$CARGO_DENY_VERSION" --root "$root" cargo-deny
fi
[ "${1:-}" = "--install-only" ] && exit 0

"$bin" --version >&2
"$bin" --frozen check licenses bans sources
