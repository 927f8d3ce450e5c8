#!/usr/bin/env bash
# Retrains the models from a clean checkout of HEAD, so the committed manifest.json names a
# commit in history with `git_dirty: false`, and checks that every file under models/ comes out
# byte for byte as committed (training is deterministic: training/README.md). Only
# manifest.json is copied back (its git_commit, git_dirty and training_seconds change); commit
# it afterwards. The manifest then names the commit before that one, which holds exactly the
# code and models it describes.
#
# Usage: scripts/retrain-clean.sh   (from a work tree with nothing uncommitted)
# Env:   FERRUM_CACHE (the hash-locked training venv is cached there)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "$(git status --porcelain)" ]; then
  echo "error: uncommitted changes in the work tree; commit them first, so the manifest's" \
    "commit holds them:" >&2
  git status --short >&2
  exit 1
fi
head=$(git rev-parse HEAD)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "retrain-clean: a clean clone of $head" >&2
git clone --quiet --shared --no-checkout "$PWD" "$work/repo"
git -C "$work/repo" checkout --quiet --detach "$head"
venv=$(scripts/python-env.sh requirements/train.lock)
echo "retrain-clean: training in $work/repo" >&2
(cd "$work/repo" && PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" training/train.py)

# Every model file exactly as committed (and nothing new), compared by content hash.
changed=$(git -C "$work/repo" status --porcelain --untracked-files=all -- . ':!manifest.json')
if [ -n "$changed" ]; then
  echo "error: retraining changed more than manifest.json:" >&2
  echo "$changed" >&2
  exit 1
fi
(cd "$work/repo" && find models -type f -print0 | sort -z | xargs -0 sha256sum) >"$work/clone.sha256"
(find models -type f -print0 | sort -z | xargs -0 sha256sum) >"$work/tree.sha256"
cmp -s "$work/clone.sha256" "$work/tree.sha256" ||
  { echo "error: models/ differs from the clone's:" >&2; diff "$work/tree.sha256" "$work/clone.sha256" >&2; exit 1; }

python3 - "$work/repo/manifest.json" "$head" <<'PY'
import json
import sys

manifest = json.load(open(sys.argv[1]))
if manifest["git_commit"] != sys.argv[2] or manifest["git_dirty"] is not False:
    sys.exit(f"error: the retrained manifest says {manifest['git_commit']} "
             f"dirty={manifest['git_dirty']}, expected {sys.argv[2]} clean")
PY
cp "$work/repo/manifest.json" manifest.json
echo "retrain-clean: models/ identical ($(wc -l <"$work/tree.sha256") files, sha256 compared);" \
  "manifest.json now names $head, git_dirty false. Commit it:" >&2
echo "  git commit -m 'manifest.json: trained from a clean checkout of ${head:0:12}' manifest.json" >&2
git --no-pager diff --stat -- manifest.json >&2
