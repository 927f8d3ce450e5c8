#!/usr/bin/env bash
# The GPU counterpart of fetch-onnxruntime.sh, for Dockerfile.gpu: ONNX Runtime's library and its
# CUDA execution provider from the pinned `onnxruntime-gpu` wheel on PyPI (same version as the
# CPU wheel, so the same `ort` API level). The wheel and each library are sha256-checked.
# The wheel is 255 MB: the test suite does not run this (no GPU here); see docs/containers.md.
#
# Usage: scripts/fetch-onnxruntime-gpu.sh [DEST_DIR]   (default: .ort-gpu)
# Env:   FERRUM_CACHE (wheel cache, default ~/.cache/ferrum-serve), PYTHON (default python3)
set -euo pipefail

ORT_VERSION=1.31.1
WHEEL=onnxruntime_gpu-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
WHEEL_SHA256=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
# The main library, the provider bridge it loads, and the CUDA provider itself.
LIBS=(
  "libonnxruntime.so.${ORT_VERSION} 5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303"
  "libonnxruntime_providers_shared.so 086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d"
  "libonnxruntime_providers_cuda.so d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137"
)

dest=${1:-.ort-gpu}
cache=${FERRUM_CACHE:-$HOME/.cache/ferrum-serve}/wheels
python=${PYTHON:-python3}
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$cache" "$dest"
if [ ! -f "$cache/$WHEEL" ] || [ "$(sha256_of "$cache/$WHEEL")" != "$WHEEL_SHA256" ]; then
  req=$(mktemp)
  trap 'rm -f "$req"' EXIT
  echo "onnxruntime-gpu==${ORT_VERSION} --hash=sha256:${WHEEL_SHA256}" >"$req"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    --python-version 3.11 --platform manylinux_2_28_x86_64 -d "$cache" -r "$req" >&2
fi
[ "$(sha256_of "$cache/$WHEEL")" = "$WHEEL_SHA256" ] || { echo "error: $WHEEL hash mismatch" >&2; exit 1; }

for entry in "${LIBS[@]}"; do
  read -r lib sha <<<"$entry"
  "$python" - "$cache/$WHEEL" "onnxruntime/capi/$lib" "$dest/$lib.tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(target, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  [ "$(sha256_of "$dest/$lib.tmp")" = "$sha" ] || { echo "error: $lib hash mismatch" >&2; exit 1; }
  mv "$dest/$lib.tmp" "$dest/$lib"
done
ln -sfn "libonnxruntime.so.${ORT_VERSION}" "$dest/libonnxruntime.so.1"
ln -sfn "libonnxruntime.so.${ORT_VERSION}" "$dest/libonnxruntime.so"
echo "onnxruntime-gpu ${ORT_VERSION}: $dest (sha256 verified)" >&2
