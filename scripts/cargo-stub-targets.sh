#!/usr/bin/env bash
# Writes an empty stand-in for every target Cargo.toml declares (src/main.rs, src/lib.rs, and
# each [[bin]], [[bench]], [[test]], [[example]] at its `path` or the path cargo infers from its
# name), so `cargo build` can compile every dependency before the real sources are copied. The
# Dockerfile's dependency layer runs it: that layer then only changes with Cargo.toml/Cargo.lock.
# Existing files are left alone.
#
# Usage: scripts/cargo-stub-targets.sh [CARGO_TOML]   (default: ./Cargo.toml)
set -euo pipefail

manifest=${1:-Cargo.toml}
root=$(dirname "$manifest")

stub() { # PATH KIND
  local file="$root/$1"
  [ -e "$file" ] && return 0
  mkdir -p "$(dirname "$file")"
  if [ "$2" = lib ]; then : >"$file"; else echo 'fn main() {}' >"$file"; fi
}

stub src/main.rs bin
stub src/lib.rs lib
# One line per declared target: "<kind> <path-or-empty> <name-or-empty>".
awk '
  function flush() { if (kind != "") print kind, (path == "" ? "-" : path), (name == "" ? "-" : name) }
  /^\[\[(bin|bench|test|example)\]\][ \t]*$/ { flush(); kind = $0; gsub(/[\[\] \t]/, "", kind); path = ""; name = ""; next }
  /^\[lib\][ \t]*$/ { flush(); kind = "lib"; path = ""; name = ""; next }
  /^\[/ { flush(); kind = ""; next }
  kind != "" && /^[ \t]*path[ \t]*=/ { v = $0; sub(/^[^=]*=[ \t]*"/, "", v); sub(/".*/, "", v); path = v }
  kind != "" && /^[ \t]*name[ \t]*=/ { v = $0; sub(/^[^=]*=[ \t]*"/, "", v); sub(/".*/, "", v); name = v }
  END { flush() }
' "$manifest" | while read -r kind path name; do
  if [ "$path" = - ]; then
    case $kind in
      lib) path=src/lib.rs ;;
      bin) path=src/bin/$name.rs ;;
      bench) path=benches/$name.rs ;;
      test) path=tests/$name.rs ;;
      example) path=examples/$name.rs ;;
    esac
  fi
  stub "$path" "$kind"
done
