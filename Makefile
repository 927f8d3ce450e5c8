# Ferrum Serve: the commands a user needs. `make run` serves the bundled models; `make test`
# runs every check. Both install what they need first (ONNX Runtime from its pinned wheel,
# a hash-locked Python venv), caching it under $(FERRUM_CACHE) so a second run is quick.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export FERRUM_CACHE ?= $(HOME)/.cache/ferrum-serve
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
ORT_DIR := .ort
export ORT_DYLIB_PATH ?= $(CURDIR)/$(ORT_DIR)/libonnxruntime.so

.PHONY: help run test lint train ort venv fmt clippy cargo-test python-test bench

help:
	@echo "make run    serve the bundled models on :8080 (PORT=... to change)"
	@echo "make test   the whole test suite (what CI runs)"
	@echo "make lint   cargo fmt --check and clippy -D warnings"
	@echo "make train  retrain both models into models/ and manifest.json"
	@echo "make bench  benchmark against FastAPI and the HTTP/compute floors (docs/benchmarks.md)"

ort:
	scripts/fetch-onnxruntime.sh $(ORT_DIR)

venv:
	@scripts/python-env.sh requirements/dev.lock >/dev/null

run: ort
	$(CARGO) run --release --bin ferrum-serve

test:
	scripts/test.sh

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features cuda -- -D warnings

train:
	venv=$$(scripts/python-env.sh requirements/train.lock) && "$$venv/bin/python" training/train.py

bench:
	bench/run.sh
