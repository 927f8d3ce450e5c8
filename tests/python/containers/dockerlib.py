"""Helpers for the container checks: the images scripts/container-tests.sh built, a real Docker
engine, and containers that are always removed (also when a test fails).

Everything comes from the environment the script exports: FERRUM_IMAGE, FERRUM_IMAGE_TAG,
FERRUM_GIT_COMMIT, FERRUM_TRAIN_IMAGE, FERRUM_PROMETHEUS_IMAGE, FERRUM_COMPOSE_PROJECT,
FERRUM_TEST_RUN and DOCKER.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[3]
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
VENV_BIN = Path(sys.executable).parent


def env(name):
    value = os.environ.get(name)
    assert value, f"{name} is not set: run these checks through scripts/container-tests.sh"
    return value


def docker(*args, check=True, timeout=600, **kwargs):
    """Runs the docker client; returns the CompletedProcess (text)."""
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                            **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def inspect(ref):
    return json.loads(docker("inspect", ref).stdout)[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def training_log_row(model, index=0):
    log = json.loads((REPO / "models" / model / "1" / "training_log.json").read_text())
    return log["rows"][index]


def training_log(model):
    return json.loads((REPO / "models" / model / "1" / "training_log.json").read_text())["rows"]


def report(line):
    """A measurement for the script's summary (FERRUM_CONTAINER_REPORT), also printed."""
    print(line)
    path = os.environ.get("FERRUM_CONTAINER_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def run_label():
    """The label scripts/container-tests.sh removes leftovers by, if a test dies mid-way."""
    return ["--label", f"ferrum-test-run={os.environ.get('FERRUM_TEST_RUN', 'manual')}"]


class Container:
    """`docker run -d` with the test run's label; removed by stop()/the context manager."""

    def __init__(self, image, *run_args, args=(), publish=None):
        self.publish = publish
        ports = []
        if publish:
            self.host_port = free_port()
            ports = ["-p", f"127.0.0.1:{self.host_port}:{publish}"]
        self.id = docker("run", "-d", *run_label(), *ports, *run_args, image, *args).stdout.strip()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def url(self, path):
        return f"http://127.0.0.1:{self.host_port}{path}"

    def logs(self):
        r = docker("logs", self.id, check=False)
        return r.stdout + r.stderr

    def state(self):
        return inspect(self.id)["State"]

    def wait_health(self, want="healthy", timeout=90):
        """Waits for Docker's own HEALTHCHECK verdict (the image's probe, run by the engine)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            status = state.get("Health", {}).get("Status")
            if status == want:
                return state["Health"]
            assert state["Running"], f"container exited ({state['ExitCode']}):\n{self.logs()}"
            time.sleep(0.5)
        raise AssertionError(f"not {want} after {timeout} s: {self.state().get('Health')}\n"
                             f"{self.logs()}")

    def wait_http(self, path, status=200, timeout=60):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                r = requests.get(self.url(path), timeout=5)
                if r.status_code == status:
                    return r
                last = r.status_code
            except requests.ConnectionError as e:
                last = e
            assert self.state()["Running"], f"container exited:\n{self.logs()}"
            time.sleep(0.1)
        raise AssertionError(f"{path}: no {status} after {timeout} s (last: {last})\n{self.logs()}")

    def exec(self, *cmd, check=True):
        return docker("exec", self.id, *cmd, check=check)

    def remove(self):
        docker("rm", "-f", "-v", self.id, check=False)


def predict_body(model, row):
    """A /predict body for one training-log row, features by name."""
    return {"instances": [row["features"]]}
