"""schemathesis against the real server, driven by the OpenAPI document it serves.

Every check schemathesis has (`--checks all`: server errors, status codes, content types,
response schemas, negative data rejected, positive data accepted, ...) over every operation in
`/openapi.json`, a bounded number of examples per operation with a fixed seed, so the run is
reproducible and takes well under two minutes. It must end with zero failures and zero errors.

One setting is ours: 422 counts as accepting schema-valid data. The document describes a row
as "an object of numbers or an array of numbers" for every model, since `/models/{name}/...`
serves models with different feature lists; a schema-valid row the named model cannot take
(a feature it does not have, the wrong length, a value beyond float32) is a documented 422,
as are `entity_ids` while no feature store is configured.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """
[parameters]
# A model and version that exist, so requests reach parsing and inference instead of a 404
# (the coverage phase still tries other names).
"path.name" = "diabetes"
"path.version" = "1"

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "422"]
"""

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"))


def test_schemathesis_finds_no_failures(server, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    st = Path(sys.executable).with_name("st")
    command = [
        str(st), "--config-file", str(config), "run", server.url("/openapi.json"),
        "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", "8",
        "--workers", "2", "--request-timeout", "60", "--no-color",
        "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml"),
    ]
    before = len(server.logs)  # readiness polls before the run answered 503, as they should
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Every operation was exercised, and nothing failed or errored.
    junit = (tmp_path / "junit.xml").read_text()
    assert 'failures="0"' in junit and 'errors="0"' in junit, junit[:2000]
    for operation in ["POST /predict", "POST /models/{name}/versions/{version}/explain",
                      "GET /health/ready", "GET /manifest", "GET /metrics"]:
        assert f'name="{operation}"' in junit, junit[:2000]
    # (schemathesis leaves out the document's own URL, /openapi.json: tests/openapi.rs checks it)
    # 26 operations (the repository index by GET and POST, load, unload among them) and the
    # stateful phase
    assert junit.count("<testcase ") == 27, junit
    # The server itself logged no panic and no 5xx.
    logs = server.log_text()
    assert "panicked" not in logs
    events = [json.loads(line) for line in server.logs[before:] if line.startswith("{")]
    statuses = [e["status"] for e in events if isinstance(e.get("status"), int)]
    assert len(statuses) > 500, len(statuses)
    assert 200 in statuses  # the examples reached inference
    assert not [s for s in statuses if s >= 500], [e for e in events if e.get("status", 0) >= 500][:5]
