#!/usr/bin/env bash
# Builds ferrum-serve (release) at an earlier git revision, for `make bench BEFORE=<rev>`: a
# temporary worktree of REV, built with its own target directory under $FERRUM_CACHE (kept, so
# a second run is quick). Prints the binary's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/build-before.sh REV}
commit=$(git rev-parse --verify "$rev^{commit}")
cache=${FERRUM_CACHE:-$HOME/.cache/ferrum-serve}
out="$cache/bench-before/ferrum-serve-${commit:0:12}"
if [ ! -x "$out" ]; then
  tree=$(mktemp -d)
  trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"' EXIT
  git worktree add --detach "$tree" "$commit" >&2
  CARGO_TARGET_DIR="$cache/bench-before/target" cargo build --release --bin ferrum-serve \
    --manifest-path "$tree/Cargo.toml" >&2
  mkdir -p "$(dirname "$out")"
  cp "$cache/bench-before/target/release/ferrum-serve" "$out"
fi
echo "$out"
