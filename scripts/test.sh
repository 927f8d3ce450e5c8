#!/usr/bin/env bash
# The whole test suite: what `make test` and CI run. Installs what it needs first, then
# format, lint and doc checks, the dependency policy (cargo deny: deny.toml), Rust unit and integration tests (CPU build and `cuda` build), and
# the Python reference checks against the real server binary, then the container stage
# (scripts/container-tests.sh: images built and run with a real Docker engine).
set -euo pipefail
cd "$(dirname "$0")/.."

export FERRUM_CACHE=${FERRUM_CACHE:-$HOME/.cache/ferrum-serve}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}
cargo=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-target}

step() { printf '\n==> %s\n' "$*"; }

step "ONNX Runtime library (pinned wheel, sha256-checked)"
scripts/fetch-onnxruntime.sh .ort

step "Python venv (hash-locked)"
venv=$(scripts/python-env.sh requirements/dev.lock)
# The S3-compatible server tests/remote_repository.rs starts on loopback.
export MOTO_SERVER=$venv/bin/moto_server

step "System tools (promtool for the metrics tests, chromium-headless-shell for the demo-page test)"
scripts/install-system-tools.sh

step "cargo fmt --check"
$cargo fmt --all -- --check

step "cargo clippy -D warnings (CPU and cuda builds)"
$cargo clippy --all-targets -- -D warnings
$cargo clippy --all-targets --features cuda -- -D warnings

step "cargo doc -D warnings (every intra-doc link resolves, every doc comment's HTML is well formed)"
make --no-print-directory doc CARGO="$cargo"

step "cargo deny check licenses bans sources (deny.toml; offline)"
scripts/cargo-deny.sh

step "cargo test (CPU build)"
# --no-fail-fast: a failing test binary does not hide the ones after it; cargo lists every
# failed binary at the end and still exits non-zero.
$cargo test --all-targets --no-fail-fast

step "cargo test (cuda build: no GPU here, so the CPU fallback path)"
$cargo test --features cuda --test execution_provider

step "Python checks against the real server"
$cargo build --bins
# CI sets an absolute CARGO_TARGET_DIR (.ci/run); a relative one is under the repository.
case $target_dir in /*) bin_dir=$target_dir/debug ;; *) bin_dir=$PWD/$target_dir/debug ;; esac
export FERRUM_SERVE_BIN=$bin_dir/ferrum-serve
export FERRUM_FEATURE_STORE_BIN=$bin_dir/ferrum-feature-store
"$venv/bin/python" -m pytest tests/python -q -p no:cacheprovider --ignore=tests/python/containers

step "Demo page in headless Chromium (playwright-core, no browser download)"
npm ci --prefix tests/browser --no-audit --no-fund --silent
(cd tests/browser && ARTIFACTS="$PWD/../../test-artifacts" node --test)

step "Containers: image, training image, compose stack, Kubernetes manifests (real Docker)"
scripts/container-tests.sh
