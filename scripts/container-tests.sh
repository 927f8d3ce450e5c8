#!/usr/bin/env bash
# The container stage of the test suite (scripts/test.sh calls it): builds the image and the
# training image with a real Docker engine and checks them, the compose stack and the
# Kubernetes and KServe manifests (tests/python/containers/: test_containers.py, test_stack.py,
# test_k8s.py, test_kserve.py).
#
# It installs what it needs (docker.io, docker-compose, debootstrap, iptables) when missing,
# starts dockerd when none runs (and stops it at the end only then), makes local stand-ins for
# the base images when their tags are missing (scripts/docker-base-images.sh: no registry is
# reachable here), and removes every container and network it started, also on failure.
#
# Usage: scripts/container-tests.sh [PYTEST_ARGS...]
# Env:   FERRUM_CACHE, DOCKER (default: Debian's /usr/bin/docker, which has BuildKit built in),
#        CA_BUNDLE (default: the host's bundle, passed as the optional `cabundle` build secret)
set -euo pipefail
cd "$(dirname "$0")/.."

export FERRUM_CACHE=${FERRUM_CACHE:-$HOME/.cache/ferrum-serve}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
step() { printf '\n==> containers: %s\n' "$*"; }
elapsed() { echo $(($(date +%s) - $1)); }
timings=()

# --- tools ---------------------------------------------------------------------------------------
need=()
[ -x /usr/bin/docker ] || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v iptables >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run (a parallel session, unattended upgrades) may hold the lock: wait for it.
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER_BUILDKIT=1
# docker-compose (v1) talks to the daemon itself; point it at Debian's client for `exec`.
export COMPOSE_DOCKER_CLI_BUILD=0

# --- the daemon ----------------------------------------------------------------------------------
started_dockerd=""
work=$(mktemp -d)
cleanup() {
  local rc=$?
  if [ -n "${FERRUM_COMPOSE_PROJECT:-}" ]; then
    docker-compose -p "$FERRUM_COMPOSE_PROJECT" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  # Containers the tests started are labelled; remove any a failed test left behind.
  if "$DOCKER" info >/dev/null 2>&1; then
    "$DOCKER" ps -aq --filter "label=ferrum-test-run=$run_id" | xargs -r "$DOCKER" rm -f >/dev/null 2>&1 || true
  fi
  if [ -n "$started_dockerd" ]; then
    kill "$started_dockerd" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
  exit "$rc"
}
run_id="$$-$(date +%s)"
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! "$DOCKER" info >/dev/null 2>&1; then
  step "starting dockerd"
  dockerd >"$work/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 300); do
    "$DOCKER" info >/dev/null 2>&1 && break
    kill -0 "$started_dockerd" 2>/dev/null || { cat "$work/dockerd.log" >&2; exit 1; }
    sleep 0.1
  done
  "$DOCKER" info >/dev/null
fi

# --- base images ---------------------------------------------------------------------------------
step "base images (local stand-ins when the tags are missing)"
t=$(date +%s)
scripts/docker-base-images.sh
timings+=("base images: $(elapsed "$t") s")

# --- builds --------------------------------------------------------------------------------------
export FERRUM_GIT_COMMIT=$(git rev-parse HEAD)
export FERRUM_IMAGE_TAG=$(git rev-parse --short HEAD)
export FERRUM_IMAGE=ferrum-serve:$FERRUM_IMAGE_TAG
export FERRUM_TRAIN_IMAGE=ferrum-serve-train:$FERRUM_IMAGE_TAG
export FERRUM_PROMETHEUS_IMAGE=ferrum-prometheus:bookworm
secret=()
[ -f "$ca_bundle" ] && secret=(--secret "id=cabundle,src=$ca_bundle")
build() {
  "$DOCKER" build --progress=plain "${secret[@]}" \
    --build-arg GIT_COMMIT="$FERRUM_GIT_COMMIT" --build-arg IMAGE_TAG="$FERRUM_IMAGE_TAG" "$@" \
    >"$work/build.log" 2>&1 || { tail -n 60 "$work/build.log" >&2; return 1; }
}

step "image $FERRUM_IMAGE"
t=$(date +%s)
build -t "$FERRUM_IMAGE" .
timings+=("image build: $(elapsed "$t") s")

step "training image $FERRUM_TRAIN_IMAGE"
t=$(date +%s)
build --target train -t "$FERRUM_TRAIN_IMAGE" .
timings+=("training image build: $(elapsed "$t") s")

step "prometheus image $FERRUM_PROMETHEUS_IMAGE"
t=$(date +%s)
"$DOCKER" build --progress=plain -f deploy/compose/prometheus.Dockerfile -t "$FERRUM_PROMETHEUS_IMAGE" \
  deploy/compose >"$work/build.log" 2>&1 || { tail -n 60 "$work/build.log" >&2; exit 1; }
timings+=("prometheus image build: $(elapsed "$t") s")

# --- what this tree has: the demo's entity-id and /metrics steps need the feature-store and
# observability work. Decided from the sources, not the image, so a tree that has them but an
# image that lacks them fails instead of passing quietly.
bins=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
  python3 -c 'import json,sys; print(" ".join(t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "bin" in t["kind"]))')
export FERRUM_TREE_HAS_FEATURE_STORE=0 FERRUM_TREE_HAS_METRICS=0
[[ " $bins " == *" ferrum-feature-store "* ]] && FERRUM_TREE_HAS_FEATURE_STORE=1
grep -rqs '"/metrics"' src && FERRUM_TREE_HAS_METRICS=1
markers=()
[ "$FERRUM_TREE_HAS_FEATURE_STORE" = 1 ] || markers+=("not needs_feature_store")
[ "$FERRUM_TREE_HAS_METRICS" = 1 ] || markers+=("not needs_metrics")
select=()
if [ ${#markers[@]} -gt 0 ]; then
  joined=$(printf ' and %s' "${markers[@]}")
  select=(-m "${joined# and }")
  printf '\nNOT RUN on this tree (it lacks the code they test; they run once it is merged in):\n' >&2
  [ "$FERRUM_TREE_HAS_FEATURE_STORE" = 1 ] ||
    echo "  - needs_feature_store: no ferrum-feature-store binary target (entity-id curl, feature-store service and probes)" >&2
  [ "$FERRUM_TREE_HAS_METRICS" = 1 ] ||
    echo "  - needs_metrics: no /metrics route in src/ (Prometheus target up, metrics scraped)" >&2
fi

# --- checks --------------------------------------------------------------------------------------
step "pytest: images, stack, Kubernetes manifests"
venv=$(scripts/python-env.sh requirements/dev.lock)
export FERRUM_COMPOSE_PROJECT=ferrum-test-$$
export FERRUM_TEST_RUN=$run_id
export FERRUM_CONTAINER_REPORT=$work/report.txt
t=$(date +%s)
status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${select[@]}" \
  tests/python/containers "$@" || status=$?
timings+=("container checks: $(elapsed "$t") s")

step "timings and sizes"
printf '  %s\n' "${timings[@]}"
if [ -f "$FERRUM_CONTAINER_REPORT" ]; then sed 's/^/  /' "$FERRUM_CONTAINER_REPORT"; fi
exit "$status"
