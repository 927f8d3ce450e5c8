#!/usr/bin/env bash
# Measures what drift monitoring costs /predict: two release servers, one with drift on (by
# default with a 100 ms recomputation interval, far more often than the server's 15 s default,
# to make any interference visible; DRIFT_INTERVAL_MS=15000 measures the default) and one with
# it off, measured alternately (A B A B ...) with the same client, since
# run-to-run noise on a shared 2-core machine is larger than the effect being measured.
#
# Usage: scripts/bench-drift-overhead.sh [REQUESTS] [CONCURRENCY] [ROWS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}
concurrency=${2:-1}
rows=${3:-1}
rounds=${4:-3}
target_dir=${CARGO_TARGET_DIR:-target}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}

cargo build --release --bins --examples >&2
bin=$target_dir/release/ferrum-serve
client=$target_dir/release/examples/predict_latency

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start() { # $1 = log file, rest = flags; prints the port
  local log=$1; shift
  "$bin" --host 127.0.0.1 --port 0 --log-format json "$@" >"$log" 2>&1 &
  pids+=($!)
  local port=""
  for _ in $(seq 200); do
    port=$(grep -o '"address":"127.0.0.1:[0-9]*"' "$log" | head -n1 | grep -o '[0-9]*"$' | tr -d '"') || true
    if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; then
      echo "$port"; return
    fi
    sleep 0.05
  done
  echo "server did not get ready; see $log" >&2; exit 1
}

logs=$(mktemp -d)
# ON_WINDOW_ROWS=0 turns the "on" server's drift off too: an A/A control of the set-up itself.
on=$(start "$logs/on.log" --drift-window-rows "${ON_WINDOW_ROWS:-2000}" --drift-min-rows 200 --drift-interval-ms "${DRIFT_INTERVAL_MS:-100}")
off=$(start "$logs/off.log" --drift-window-rows 0)
measure() { echo "round $1 drift=$2 $("$client" "http://127.0.0.1:$3" "$requests" "$concurrency" "$rows")"; }
for round in $(seq "$rounds"); do
  # Alternate which goes first, so neither always runs on a freshly idle machine.
  if [ $((round % 2)) -eq 1 ]; then
    measure "$round" on "$on"; measure "$round" off "$off"
  else
    measure "$round" off "$off"; measure "$round" on "$on"
  fi
done
echo "drift computations on the 'on' server:"
curl -s "http://127.0.0.1:$on/metrics" | grep -E '^ferrum_drift_(computation_duration_seconds_(sum|count)|rows_total|dropped_rows_total)' || true
