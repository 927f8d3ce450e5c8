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

.PHONY: demo deny doc help run test lint train retrain-clean ort venv fmt clippy image image-train stack-up stack-down k8s-image-tags bench bench-serving bench-explain bench-rollout openapi fuzz soak

# Container images (docs/containers.md): tagged with the commit they are built from. BuildKit is
# required; Debian's docker client has it built in. CA_BUNDLE, when the file exists, is passed as
# a build secret for networks behind an intercepting HTTPS proxy (never stored in the image).
, := ,
DOCKER ?= $(firstword $(wildcard /usr/bin/docker) docker)
IMAGE ?= ferrum-serve
export IMAGE_TAG ?= $(shell git rev-parse --short HEAD)
GIT_COMMIT ?= $(shell git rev-parse HEAD)
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
DOCKER_BUILD = DOCKER_BUILDKIT=1 $(DOCKER) build \
	$(if $(wildcard $(CA_BUNDLE)),--secret id=cabundle$(,)src=$(CA_BUNDLE)) \
	--build-arg GIT_COMMIT=$(GIT_COMMIT) --build-arg IMAGE_TAG=$(IMAGE_TAG)

BENCH_PORT ?= 18480


help:
	@echo "make run    serve the bundled models on :8080 (PORT=... to change)"
	@echo "make test   the whole test suite (what CI runs)"
	@echo "make lint   cargo fmt --check, clippy and doc -D warnings, cargo deny"
	@echo "make train  retrain both models into models/ and manifest.json"
	@echo "make image  build the image $(IMAGE):<short commit> (make image-train: the training image)"
	@echo "make stack-up / stack-down   the local stack (docker-compose: api, feature-store, prometheus)"
	@echo "make demo   image if missing, stack up, the README's entity-id curl vs the training log, stack down"
	@echo "make bench  benchmarks (docs/benchmarks.md): bench-serving (vs FastAPI, HTTP and compute floors) and bench-explain (vs shap)"
	@echo "make bench-rollout  a canary rollout under wrk load (docs/rollouts.md): 0 non-2xx, per-version shares"

ort:
	scripts/fetch-onnxruntime.sh $(ORT_DIR)

venv:
	@scripts/python-env.sh requirements/dev.lock >/dev/null

run: ort
	$(CARGO) run --release --bin ferrum-serve

test:
	scripts/test.sh

lint: fmt clippy doc deny

# Licences, duplicate versions and sources of every dependency (deny.toml), offline.
deny:
	scripts/cargo-deny.sh

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features cuda -- -D warnings

# The crate's docs, private items included (target/doc/ferrum_serve/index.html); a broken
# intra-doc link or malformed doc HTML fails. Private items are documented (this is a service:
# its docs are for whoever works on it), so links to them resolve and are not warned about.
doc:
	RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
	  $(CARGO) doc --no-deps --document-private-items --lib --bin ferrum-feature-store

train:
	venv=$$(scripts/python-env.sh requirements/train.lock) && "$$venv/bin/python" training/train.py

# Retrain from a clean clone of HEAD (committed tree only): the manifest then says
# git_dirty false with a commit in history; models/ must come out byte-identical.
retrain-clean:
	scripts/retrain-clean.sh

image:
	$(DOCKER_BUILD) -t $(IMAGE):$(IMAGE_TAG) .

image-train:
	$(DOCKER_BUILD) --target train -t $(IMAGE)-train:$(IMAGE_TAG) .

stack-up: image
	docker-compose up -d

stack-down:
	docker-compose down

# The container demo in one command (scripts/demo.sh): image if missing, stack up, healthy,
# the README's entity-id curl beside the training log's prediction, stack down.
demo:
	scripts/demo.sh

k8s-image-tags:
	scripts/k8s-set-image-tags.sh $(if $(CANARY),--canary) $(IMAGE_TAG) k8s
bench: bench-serving bench-explain

# Serving throughput and latency against FastAPI and the HTTP/compute floors (bench/run.sh).
# BEFORE=<git rev> also measures that revision's build in the same run (before/after figures).
bench-serving: ort
	bench/run.sh $(if $(BEFORE),--before "$$(bench/build-before.sh $(BEFORE))") $(BENCH_ARGS)

# /explain latency against Python shap on this machine: release build, a server on BENCH_PORT
# (stopped on exit), then bench/explain.py against it.
bench-explain: ort
	$(CARGO) build --release --bin ferrum-serve
	venv=$$(scripts/python-env.sh requirements/dev.lock); \
	$(TARGET_DIR)/release/ferrum-serve --host 127.0.0.1 --port $(BENCH_PORT) --log-format text \
	  >$(TARGET_DIR)/bench-server.log 2>&1 & server=$$!; \
	trap 'kill $$server' EXIT; \
	"$$venv/bin/python" bench/explain.py --url http://127.0.0.1:$(BENCH_PORT) \
	  --json $(TARGET_DIR)/bench-explain.json

# A rollout under wrk load at about half of peak, in poll then explicit mode (bench/rollout.py):
# add version 2, 10% canary, promote, retire version 1; prints non-2xx, socket errors and the
# per-version shares from x-ferrum-version. Not part of `make bench` (it measures no speed).
bench-rollout: ort
	$(CARGO) build --release --bin ferrum-serve
	python3 bench/rollout.py --binary $(TARGET_DIR)/release/ferrum-serve $(BENCH_ARGS)

# The committed OpenAPI document, regenerated from the handlers' annotations.
openapi:
	$(CARGO) run --quiet --example openapi > docs/openapi.json

# Request parsing under libFuzzer (docs/reliability.md). Nightly toolchain; cargo-fuzz is
# installed from crates.io when missing. The corpus stays in fuzz/corpus (not committed).
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz run parse_request -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096

# Soak (docs/reliability.md): SOAK_SECONDS at ~80% of the peak rate; fails on any error or
# RSS growth of 10% or more.
soak: ort
	scripts/soak.sh
