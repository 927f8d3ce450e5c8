#!/usr/bin/env bash
# Creates (once) a Python venv that holds exactly what a hash-locked requirements file
# pins, and prints its path as the only line on stdout (progress goes to stderr), so that
# callers can do:  venv=$(scripts/python-env.sh requirements/dev.lock)
#
# The venv is keyed by the lock file's content (venv-<first 16 hex of its sha256>), so a
# changed lock gets a fresh venv and an unchanged one is reused. A stamp file is written
# only after a successful install: an interrupted install is redone on the next call.
#
# Usage: scripts/python-env.sh LOCKFILE
# Env:   FERRUM_CACHE (default ~/.cache/ferrum-serve), PYTHON (interpreter, default python3)
set -euo pipefail

if [ $# -ne 1 ] || [ ! -f "$1" ]; then
  echo "usage: $0 LOCKFILE  (a pip lock file with --hash pins)" >&2
  exit 2
fi
lock=$1
python=${PYTHON:-python3}
cache=${FERRUM_CACHE:-$HOME/.cache/ferrum-serve}

lock_hash=$(sha256sum "$lock" | cut -d' ' -f1)
venv="$cache/venv-${lock_hash:0:16}"
stamp="$venv/.ferrum-installed"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_hash" ] && [ -x "$venv/bin/python" ]; then
  echo "python-env: $venv is up to date" >&2
  echo "$venv"
  exit 0
fi

# No valid stamp: whatever is there is a leftover of an interrupted run, so start clean.
mkdir -p "$cache"
rm -rf "$venv"
echo "python-env: creating $venv with $python" >&2
"$python" -m venv "$venv" >&2

echo "python-env: installing $lock into $venv" >&2
# --no-deps: the lock is complete; --require-hashes: every artifact is checked.
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install \
  --require-hashes --no-deps -r "$lock" >&2
echo "$lock_hash" >"$stamp"

echo "$venv"
