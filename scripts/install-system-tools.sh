#!/usr/bin/env bash
# Installs the system tools the test suite calls, only when they are missing, so a second run
# costs nothing: `promtool` (Debian's `prometheus` package) checks the /metrics scrape and the
# alert rules in deploy/prometheus/.
#
# Usage: scripts/install-system-tools.sh
# Needs root (or sudo) and Debian's package archive the first time only.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  echo "system tools: promtool already installed ($(promtool --version 2>&1 | head -n1))" >&2
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: promtool is missing and installing it needs root" >&2; exit 1; }
  sudo="sudo"
fi
echo "system tools: installing promtool (Debian package 'prometheus')" >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists may be absent on a fresh machine or image: fetch them only then.
if ! apt-cache show prometheus >/dev/null 2>&1; then
  $sudo apt-get update -qq >&2
fi
$sudo apt-get install -y -qq --no-install-recommends prometheus >&2
command -v promtool >/dev/null 2>&1 || { echo "error: promtool still missing after installing 'prometheus'" >&2; exit 1; }
echo "system tools: promtool installed ($(promtool --version 2>&1 | head -n1))" >&2
