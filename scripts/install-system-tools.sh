#!/usr/bin/env bash
# Installs the system tools the test suite calls, only when they are missing, so a second run
# costs nothing:
#   promtool  (Debian's `prometheus`): checks the /metrics scrape and deploy/prometheus/ rules;
#   chromium-headless-shell (Debian's package of that name): the headless browser the demo-page
#             test drives; the automation build Playwright itself runs headless tests on (lighter
#             than the full browser, whose start once died of SIGSEGV in CI).
#
# Usage: scripts/install-system-tools.sh
# Needs root (or sudo) and Debian's package archive the first time only.
set -euo pipefail

# command → Debian package
declare -A wanted=([promtool]=prometheus [chromium-headless-shell]=chromium-headless-shell)
missing=()
for command in "${!wanted[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${wanted[$command]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system tools: promtool and chromium-headless-shell already installed" >&2
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: ${missing[*]} missing and installing needs root" >&2; exit 1; }
  sudo="sudo"
fi
echo "system tools: installing ${missing[*]} (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists may be absent on a fresh machine or image: fetch them only then.
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
  $sudo apt-get update -qq >&2
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
for command in "${!wanted[@]}"; do
  command -v "$command" >/dev/null 2>&1 || { echo "error: $command still missing after installing ${wanted[$command]}" >&2; exit 1; }
done
echo "system tools: installed ${missing[*]}" >&2
