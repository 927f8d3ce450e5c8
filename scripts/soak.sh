#!/usr/bin/env bash
# Soak test (`make soak`; not in CI): a release server, its peak /predict rate measured with
# wrk, then SOAK_SECONDS (default 600) at ~80% of that peak. Prints RSS at start and end and
# the error count; fails on any error or on RSS growth of 10% or more.
#
#   SOAK_SECONDS=60 make soak
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SOAK_SECONDS:-600}
port=${SOAK_PORT:-18490}
connections=${SOAK_CONNECTIONS:-16}
threads=${SOAK_THREADS:-2}
target_dir=${CARGO_TARGET_DIR:-target}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}
work=$(mktemp -d)

if ! command -v wrk >/dev/null; then
  echo "wrk is missing: installing Debian's package" >&2
  apt-get install -y wrk >/dev/null
fi

cargo build --release --bin ferrum-serve
"$target_dir/release/ferrum-serve" --host 127.0.0.1 --port "$port" --log-format text \
  >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null

python3 - "$work/body.json" <<'PY'
import json, sys
rows = json.load(open("models/breast-cancer/1/training_log.json"))["rows"]
json.dump({"instances": [rows[0]["features"]]}, open(sys.argv[1], "w"))
PY
export SOAK_BODY=$work/body.json
url="http://127.0.0.1:$port/predict"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$server/status"; }
rate_of() { awk '/^Requests\/sec/ {print $2}' "$1"; }
errors_of() {
  awk '/Non-2xx or 3xx responses/ {n += $NF}
       /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10}
       END {print n + 0}' "$1"
}

echo "==> peak: 15 s, $connections connections, no pause"
SOAK_DELAY_MS=0 wrk -t"$threads" -c"$connections" -d15s -s bench/soak.lua "$url" | tee "$work/peak.txt"
peak=$(rate_of "$work/peak.txt")
target=$(awk -v p="$peak" 'BEGIN {printf "%.0f", p * 0.8}')
# wrk's pause is whole milliseconds per connection, so the soak uses enough connections for a
# ~10 ms cycle (pause + latency) at the target rate, then calibrates the pause for 10 s: the
# achieved rate gives the latency, and the pause becomes cycle - latency.
soak_connections=$(awk -v t="$target" -v c="$connections" 'BEGIN {n = int(t / 100 + 0.5); print (n < c ? c : n)}')
delay_ms=$(awk -v c="$soak_connections" -v t="$target" 'BEGIN {printf "%d", c * 1000 / t}')
SOAK_DELAY_MS=$delay_ms wrk -t"$threads" -c"$soak_connections" -d10s -s bench/soak.lua "$url" >"$work/calibrate.txt"
calibrated=$(rate_of "$work/calibrate.txt")
delay_ms=$(awk -v c="$soak_connections" -v t="$target" -v r="$calibrated" -v d="$delay_ms" \
  'BEGIN {latency = c * 1000 / r - d; d = c * 1000 / t - latency; printf "%d", (d < 1 ? 1 : d + 0.5)}')
echo "peak ${peak} req/s; soak target ${target} req/s: ${soak_connections} connections, pause ${delay_ms} ms (calibration run: ${calibrated} req/s)"

rss_start=$(rss_kib)
echo "==> soak: ${seconds} s; RSS at start ${rss_start} KiB"
SOAK_DELAY_MS=$delay_ms wrk -t"$threads" -c"$soak_connections" -d"${seconds}s" --latency \
  -s bench/soak.lua "$url" | tee "$work/soak.txt"
rss_end=$(rss_kib)
rate=$(rate_of "$work/soak.txt")
errors=$(errors_of "$work/soak.txt")
growth=$(awk -v a="$rss_start" -v b="$rss_end" 'BEGIN {printf "%.1f", (b - a) * 100 / a}')
percent=$(awk -v r="$rate" -v p="$peak" 'BEGIN {printf "%.0f", r * 100 / p}')
echo
echo "soak: ${seconds} s at ${rate} req/s (${percent}% of the ${peak} req/s peak)"
echo "RSS: start ${rss_start} KiB, end ${rss_end} KiB, growth ${growth}%"
echo "errors: ${errors}"
if [ "$errors" -ne 0 ]; then echo "FAIL: errors during the soak" >&2; exit 1; fi
if awk -v g="$growth" 'BEGIN {exit !(g >= 10)}'; then echo "FAIL: RSS grew ${growth}%" >&2; exit 1; fi
echo "PASS"
