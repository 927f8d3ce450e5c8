"""`make demo` (scripts/demo.sh) end to end with a real Docker engine: the image for this commit
is there (scripts/container-tests.sh built it), the stack comes up healthy, the README's
entity-id request is answered with exactly the training log's prediction, both are printed,
the exit status is 0 and the stack is gone afterwards. A control run against a training log
whose prediction was altered must exit non-zero, so a demo that compares nothing cannot pass.
"""

import json
import os
import subprocess

import pytest

from dockerlib import REPO, docker, env, free_port

ENTITY = "breast-cancer-1"


def logged_prediction(path):
    rows = json.loads(path.read_text())["rows"]
    return next(r["prediction"] for r in rows if r["entity_id"] == ENTITY)


def demo(project, training_log=None):
    e = {**os.environ, "IMAGE_TAG": env("FERRUM_IMAGE_TAG"), "API_PORT": str(free_port()),
         "PROMETHEUS_PORT": str(free_port()), "DEMO_PROJECT": project}
    if training_log:
        e["TRAINING_LOG"] = str(training_log)
    return subprocess.run(["make", "--no-print-directory", "demo"], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=600)


def containers_of(project):
    out = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout
    return out.split()


@pytest.mark.needs_feature_store
def test_make_demo_prints_the_served_and_the_logged_prediction_and_exits_0():
    project = f"{env('FERRUM_COMPOSE_PROJECT')}-demo"
    result = demo(project)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = json.dumps(logged_prediction(REPO / "models/breast-cancer/1/training_log.json"),
                          sort_keys=True)
    lines = result.stdout.splitlines()
    assert f"served by the stack ({ENTITY}):  {expected}" in lines, result.stdout
    assert f"training log (models/breast-cancer/1/training_log.json): {expected}" in lines
    assert lines[-1] == "identical"
    assert "waiting until the API is healthy" in result.stderr
    assert containers_of(project) == [], "the demo left containers behind"


@pytest.mark.needs_feature_store
def test_make_demo_fails_when_the_prediction_differs(tmp_path):
    log = json.loads((REPO / "models/breast-cancer/1/training_log.json").read_text())
    row = next(r for r in log["rows"] if r["entity_id"] == ENTITY)
    row["prediction"]["label"] = "benign" if row["prediction"]["label"] == "malignant" \
        else "malignant"
    altered = tmp_path / "training_log.json"
    altered.write_text(json.dumps(log))
    project = f"{env('FERRUM_COMPOSE_PROJECT')}-demo-control"
    result = demo(project, training_log=altered)
    assert result.returncode != 0, result.stdout
    assert "differs from the training log" in result.stderr, result.stderr
    assert containers_of(project) == []
