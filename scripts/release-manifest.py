#!/usr/bin/env python3
"""Stamps a release onto manifest.json: which commit the image was built from and its tag.

The image build runs it (standard library only) so that the manifest inside the image, which
`/manifest` serves, names the build as well as the training run:

    python3 scripts/release-manifest.py manifest.json OUT --git-commit SHA --image-tag TAG

It adds one top-level key, `release: {"git_commit", "image_tag"}`, and writes the file the way
training does (sorted keys, indent 2, trailing newline). Nothing else changes, so every model's
sha256 and the training provenance stay as committed.
"""

import argparse
import json
import re
import sys
from pathlib import Path


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--git-commit", required=True)
    parser.add_argument("--image-tag", required=True)
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[0-9a-f]{7,40}|unknown", args.git_commit):
        parser.error(f"--git-commit {args.git_commit!r} is not a commit id")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", args.image_tag):
        parser.error(f"--image-tag {args.image_tag!r} is not a valid image tag")
    manifest = json.loads(args.manifest.read_text())
    manifest["release"] = {"git_commit": args.git_commit, "image_tag": args.image_tag}
    args.out.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
