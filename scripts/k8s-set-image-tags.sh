#!/usr/bin/env bash
# Points the Kubernetes manifests at an image tag: the stable track (the API, the feature store
# and the drift-report CronJob, which all run the same image, and the KServe runtime in
# kserve/) or, with --canary, the canary Deployment only. Tags are commits (`make image` tags
# ferrum-serve:<short commit>), never `latest`: anything else is refused.
#
# Usage: scripts/k8s-set-image-tags.sh [--canary] TAG [K8S_DIR]   (default TAG dir: k8s)
#   make k8s-image-tags            # stable = this commit
#   make k8s-image-tags CANARY=1   # canary = this commit
set -euo pipefail

track=stable
if [ "${1:-}" = --canary ]; then track=canary; shift; fi
tag=${1:?usage: $0 [--canary] TAG [K8S_DIR]}
dir=${2:-k8s}
if ! [[ $tag =~ ^[0-9a-f]{7,40}$ ]]; then
  echo "error: '$tag' is not a commit id (7-40 hex digits); image tags are commits" >&2
  exit 2
fi

canary_file=$dir/api-canary-deployment.yaml
if [ "$track" = canary ]; then
  files=("$canary_file")
else
  files=()
  for f in "$dir"/*.yaml "$dir"/kserve/*.yaml; do
    if [ -f "$f" ] && [ "$f" != "$canary_file" ]; then files+=("$f"); fi
  done
fi
changed=0
for f in "${files[@]}"; do
  if grep -Eq '^\s*image: ferrum-serve:' "$f"; then
    sed -E -i "s#^(\s*image: ferrum-serve):[^[:space:]]+#\1:$tag#" "$f"
    changed=$((changed + 1))
  fi
done
[ "$changed" -gt 0 ] || { echo "error: no ferrum-serve image found for the $track track in $dir" >&2; exit 1; }
echo "k8s: $track track -> ferrum-serve:$tag ($changed files)" >&2
