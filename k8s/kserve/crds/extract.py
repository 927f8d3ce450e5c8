#!/usr/bin/env python3
"""Keeps only what the tests validate against from KServe's CustomResourceDefinitions: each
served version's `openAPIV3Schema`, with its group, version and kind, and without the
`description` texts (prose, not constraints: about two thirds of the bytes).

Reads the CRDs from a KServe git checkout or bare clone at a tag (README.md names the one
kept here) and writes one JSON file per CRD version next to this script:

    k8s/kserve/crds/extract.py /path/to/kserve.git v0.20.0

Nothing else of the CRD is kept (printer columns, conversion, subresources): the schema is
what the API server checks a manifest's fields against.
"""

import json
import subprocess
import sys
from pathlib import Path

import yaml

CRDS = [
    "config/crd/full/serving.kserve.io_servingruntimes.yaml",
    "config/crd/full/serving.kserve.io_inferenceservices.yaml",
]
# Keywords whose value is a schema, or a list or map of schemas (JSON Schema as CRDs use it).
SCHEMA = {"items", "additionalProperties", "not"}
SCHEMA_LISTS = {"allOf", "anyOf", "oneOf"}
SCHEMA_MAPS = {"properties", "patternProperties"}


def without_descriptions(schema):
    """The schema with every `description` keyword dropped; property *names* are left alone
    (a field may well be called `description`)."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in SCHEMA:
            out[key] = without_descriptions(value)
        elif key in SCHEMA_LISTS:
            out[key] = [without_descriptions(v) for v in value]
        elif key in SCHEMA_MAPS:
            out[key] = {name: without_descriptions(v) for name, v in value.items()}
        else:
            out[key] = value
    return out


def git_show(repo, tag, path):
    return subprocess.run(["git", "--git-dir", str(repo), "show", f"{tag}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def main(repo, tag):
    repo = Path(repo)
    git_dir = repo / ".git" if (repo / ".git").exists() else repo
    commit = subprocess.run(["git", "--git-dir", str(git_dir), "rev-list", "-n1", tag],
                            check=True, capture_output=True, text=True).stdout.strip()
    out_dir = Path(__file__).resolve().parent
    for path in CRDS:
        crd = yaml.safe_load(git_show(git_dir, tag, path))
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            kept = {
                "source": {"repository": "https://github.com/kserve/kserve", "tag": tag,
                           "commit": commit, "path": path},
                "apiVersion": f"{spec['group']}/{version['name']}",
                "kind": spec["names"]["kind"],
                "scope": spec["scope"],
                "openAPIV3Schema": without_descriptions(version["schema"]["openAPIV3Schema"]),
            }
            name = f"{spec['names']['plural']}.{spec['group']}_{version['name']}.json"
            # One token a line, no indentation: diffs of a new KServe version stay line by line
            # without the ~1 MB that indentation would add to the InferenceService schema.
            text = json.dumps(kept, indent=0, sort_keys=True, separators=(",", ":"))
            (out_dir / name).write_text(text + "\n")
            print(f"{name}: {(out_dir / name).stat().st_size} bytes", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} KSERVE_GIT_DIR TAG")
    main(*sys.argv[1:])
