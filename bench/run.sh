#!/usr/bin/env bash
# `make bench`: installs what the benchmark needs (wrk and h2load from Debian, ONNX Runtime from the pinned
# wheel, the hash-locked FastAPI venv), builds the release server and the floor examples, then
# runs bench/run.py (every server and load in one run, one table with the ratios). Never part of
# the test command: numbers on shared 2-core machines are noisy; compare ratios from one run.
# Extra arguments go to bench/run.py (e.g. --duration 4).
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRUM_CACHE=${FERRUM_CACHE:-$HOME/.cache/ferrum-serve}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}
cargo=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-target}

# wrk for HTTP/1.1 loads; h2load (nghttp2-client) for gRPC and the same REST body over h2c.
if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
  echo "bench: installing wrk and h2load (Debian packages)" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk nghttp2-client >&2
fi
scripts/fetch-onnxruntime.sh .ort
venv=$(scripts/python-env.sh bench/requirements.lock)
$cargo build --release --bin ferrum-serve --example http_floor --example compute_floor
# The typed models (the CNN served as named tensors), built once with the dev venv's converters.
typed="$FERRUM_CACHE/bench-typed-models-$(sha256sum tests/typed_models/build.py requirements/dev.lock | sha256sum | cut -c1-12)"
if [ ! -f "$typed/cnn/1/model.onnx" ]; then
  dev_venv=$(scripts/python-env.sh requirements/dev.lock)
  rm -rf "$typed.tmp" && mkdir -p "$typed.tmp"
  "$dev_venv/bin/python" tests/typed_models/build.py "$typed.tmp" >&2
  rm -rf "$typed" && mv "$typed.tmp" "$typed"
fi
exec "$venv/bin/python" bench/run.py \
  --ferrum "$target_dir/release/ferrum-serve" --examples "$target_dir/release/examples" \
  --typed-models "$typed" "$@"
