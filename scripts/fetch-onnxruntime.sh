#!/usr/bin/env bash
# Puts ONNX Runtime's shared library where the server loads it, without any download
# outside PyPI: the library ships inside the pinned `onnxruntime` wheel. The wheel and the
# library are both checked against pinned sha256 values, so every build (host, CI, Docker)
# loads the very same bytes. Idempotent: a verified library already in place is kept.
#
# Usage: scripts/fetch-onnxruntime.sh [DEST_DIR]   (default: .ort)
# Env:   FERRUM_CACHE (wheel cache, default ~/.cache/ferrum-serve), PYTHON (default python3)
set -euo pipefail

ORT_VERSION=1.31.1
WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
LIB=libonnxruntime.so.${ORT_VERSION}
LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3

dest=${1:-.ort}
cache=${FERRUM_CACHE:-$HOME/.cache/ferrum-serve}/wheels
python=${PYTHON:-python3}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$dest/$LIB" ] && [ "$(sha256_of "$dest/$LIB")" = "$LIB_SHA256" ]; then
  echo "onnxruntime ${ORT_VERSION}: $dest/$LIB already verified" >&2
  exit 0
fi

mkdir -p "$cache" "$dest"
if [ ! -f "$cache/$WHEEL" ] || [ "$(sha256_of "$cache/$WHEEL")" != "$WHEEL_SHA256" ]; then
  req=$(mktemp)
  trap 'rm -f "$req"' EXIT
  echo "onnxruntime==${ORT_VERSION} --hash=sha256:${WHEEL_SHA256}" >"$req"
  # The platform and interpreter are pinned so that the same wheel file is chosen on any
  # host, whatever its own Python; --require-hashes makes pip refuse anything else.
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    --python-version 3.11 --platform manylinux_2_28_x86_64 -d "$cache" -r "$req" >&2
fi
[ "$(sha256_of "$cache/$WHEEL")" = "$WHEEL_SHA256" ] || { echo "error: $WHEEL hash mismatch" >&2; exit 1; }

"$python" - "$cache/$WHEEL" "onnxruntime/capi/$LIB" "$dest/$LIB" <<'PY'
import shutil, sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(target + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
[ "$(sha256_of "$dest/$LIB.tmp")" = "$LIB_SHA256" ] || { echo "error: $LIB hash mismatch" >&2; exit 1; }
mv "$dest/$LIB.tmp" "$dest/$LIB"
# The SONAME and the unversioned name, for loaders and linkers that look for either.
ln -sfn "$LIB" "$dest/libonnxruntime.so.1"
ln -sfn "$LIB" "$dest/libonnxruntime.so"
echo "onnxruntime ${ORT_VERSION}: $dest/$LIB (sha256 verified)" >&2
