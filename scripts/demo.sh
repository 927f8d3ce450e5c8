#!/usr/bin/env bash
# `make demo`: the README's container demo in one command. Builds the image for this commit if
# it is missing (make image), brings the compose stack up (feature store, API, Prometheus),
# waits until the API is healthy, sends the README's entity-id request, prints the answer beside
# the training log's prediction for that entity, and brings the stack down again (also on
# failure). Exits 0 only if the two are identical.
#
# Usage: scripts/demo.sh
# Env:   IMAGE_TAG (default: the short commit), API_PORT (8080), PROMETHEUS_PORT (9090),
#        DEMO_PROJECT (compose project name, default ferrum-demo), ENTITY (breast-cancer-1),
#        TRAINING_LOG (models/breast-cancer/1/training_log.json), DOCKER (default: Debian's
#        /usr/bin/docker if present, else docker), HEALTH_TIMEOUT (seconds, default 180).
set -euo pipefail
cd "$(dirname "$0")/.."

export IMAGE_TAG=${IMAGE_TAG:-$(git rev-parse --short HEAD)}
export API_PORT=${API_PORT:-8080} PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
project=${DEMO_PROJECT:-ferrum-demo}
entity=${ENTITY:-breast-cancer-1}
training_log=${TRAINING_LOG:-models/breast-cancer/1/training_log.json}
health_timeout=${HEALTH_TIMEOUT:-180}
docker=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || echo docker )}
image=ferrum-serve:$IMAGE_TAG
step() { printf '==> demo: %s\n' "$*" >&2; }

# Docker Compose v2 (the `docker compose` plugin) if present, else v1 (`docker-compose`).
if "$docker" compose version >/dev/null 2>&1; then
  compose=("$docker" compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "error: neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed" >&2
  exit 1
fi
compose+=(-p "$project" -f docker-compose.yml)

if "$docker" image inspect "$image" >/dev/null 2>&1; then
  step "image $image is there"
else
  step "building $image (make image)"
  make image DOCKER="$docker" IMAGE_TAG="$IMAGE_TAG"
fi

down() {
  step "bringing the stack down"
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
}
trap down EXIT
step "bringing the stack up (${compose[*]} up -d; API on 127.0.0.1:$API_PORT)"
"${compose[@]}" up -d

step "waiting until the API is healthy (up to $health_timeout s)"
deadline=$((SECONDS + health_timeout))
while :; do
  api=$("${compose[@]}" ps -q api)
  health=$([ -n "$api" ] && "$docker" inspect -f '{{.State.Health.Status}}' "$api" 2>/dev/null || echo starting)
  [ "$health" = healthy ] && break
  if [ "$SECONDS" -ge "$deadline" ] || [ "$health" = unhealthy ]; then
    echo "error: the API is $health after $health_timeout s" >&2
    "${compose[@]}" logs --tail 30 >&2 || true
    exit 1
  fi
  sleep 1
done

request="{\"entity_ids\": [\"$entity\"]}"
step "curl -s localhost:$API_PORT/predict -H 'content-type: application/json' -d '$request'"
answer=$(curl -sS "http://127.0.0.1:$API_PORT/predict" -H 'content-type: application/json' -d "$request")

python3 - "$answer" "$training_log" "$entity" <<'PY'
import json
import sys

answer, log_path, entity = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    served = json.loads(answer)["predictions"][0]
except (ValueError, KeyError, IndexError, TypeError):
    sys.exit(f"error: the API did not answer a prediction: {answer}")
rows = [r for r in json.load(open(log_path))["rows"] if r["entity_id"] == entity]
if not rows:
    sys.exit(f"error: {entity} is not in {log_path}")
logged = rows[0]["prediction"]
print(f"served by the stack ({entity}):  {json.dumps(served, sort_keys=True)}")
print(f"training log ({log_path}): {json.dumps(logged, sort_keys=True)}")
if served != logged:
    sys.exit("error: the served prediction differs from the training log's")
print("identical")
PY
