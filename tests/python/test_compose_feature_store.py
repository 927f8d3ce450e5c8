"""End to end as docker-compose.yml starts it: the `api` and `feature-store` services' exact
commands and environment, run on loopback from the repository root (the image's working
directory), with only host names and ports substituted. For every entity in each model's
training log, /predict by entity id returns the logged prediction.

The binaries come from env FERRUM_SERVE_BIN and FERRUM_FEATURE_STORE_BIN (scripts/test.sh
exports both); ORT_DYLIB_PATH is inherited, as the image's Dockerfile sets it.
"""

import json
import os
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
BINARIES = {
    "ferrum-serve": "FERRUM_SERVE_BIN",
    "ferrum-feature-store": "FERRUM_FEATURE_STORE_BIN",
}
TIMEOUT = 60


def interpolate(text):
    """Compose's ${VAR}, ${VAR:-default} and $$, from this process's environment."""
    def one(match):
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(3)
        value = os.environ.get(name)
        if value is None or (value == "" and match.group(2) == ":-"):
            return default or ""
        return value
    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", one, str(text))


def environment_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def command_of(service):
    command = service["command"]
    if isinstance(command, str):
        command = shlex.split(command)
    return [interpolate(part) for part in command]


def start_order(services):
    """Dependencies first (depends_on), as compose starts them."""
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        deps = services[name].get("depends_on") or []
        for dep in (deps if isinstance(deps, list) else list(deps)):
            visit(dep)
        order.append(name)

    for name in services:
        visit(name)
    return order


class Process:
    """A started service: its real loopback address (read from its "listening" log line)."""

    def __init__(self, name, argv, env):
        self.name = name
        self.lines = []
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.address = None
        self.listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.listening.wait(TIMEOUT):
            self.stop()
            pytest.fail(f"{name} did not listen:\n" + "\n".join(self.lines))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("message") == "listening":
                self.address = event["address"]
                self.listening.set()

    @property
    def port(self):
        return int(self.address.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def substitute(argv, env, ports):
    """Loopback and free ports instead of compose's host names and published ports."""
    argv = list(argv)
    for i, part in enumerate(argv):
        if i > 0 and argv[i - 1] == "--port":
            argv[i] = "0"
        elif i > 0 and argv[i - 1] == "--host":
            argv[i] = "127.0.0.1"
        elif part.startswith("--port="):
            argv[i] = "--port=0"
        elif part.startswith("--host="):
            argv[i] = "--host=127.0.0.1"
    env = dict(env)
    env["PORT"] = "0"
    env["HOST"] = "127.0.0.1"
    for key, value in env.items():
        for service, port in ports.items():
            value = re.sub(rf"://{re.escape(service)}:\d+", f"://127.0.0.1:{port}", value)
        env[key] = value
    return argv, env


@pytest.fixture(scope="module")
def stack():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) >= {"api", "feature-store"}
    for name in ("api", "feature-store"):
        assert re.fullmatch(r"ferrum-serve:\$\{IMAGE_TAG:-dev\}", services[name]["image"])
    started, ports = {}, {}
    try:
        for name in start_order(services):
            argv, env = substitute(command_of(services[name]), environment_of(services[name]), ports)
            variable = BINARIES.get(argv[0])
            assert variable, f"{name}: unknown program {argv[0]!r}"
            binary = os.environ.get(variable)
            assert binary and Path(binary).is_file(), f"set {variable} to the built {argv[0]}"
            argv[0] = binary
            full_env = {**os.environ, **env}
            started[name] = Process(name, argv, full_env)
            ports[name] = started[name].port
        yield started, services
    finally:
        for process in reversed(list(started.values())):
            process.stop()


def url(process, path):
    return f"http://127.0.0.1:{process.port}{path}"


def wait_ready(api):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if requests.get(url(api, "/health/ready"), timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    pytest.fail("api not ready:\n" + "\n".join(api.lines))


def close(actual, expected, path="prediction"):
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), path
        for key in expected:
            close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (int, float)) and not isinstance(expected, bool):
        assert abs(actual - expected) <= 1e-6, f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, path


def test_compose_wires_the_api_to_the_feature_store(stack):
    started, services = stack
    env = environment_of(services["api"])
    assert env["FEATURE_STORE_URI"].startswith("http://feature-store:")
    assert command_of(services["feature-store"])[0] == "ferrum-feature-store"
    assert command_of(services["api"])[0] == "ferrum-serve"


def test_every_logged_entity_predicts_as_logged(stack):
    started, _ = stack
    api = started["api"]
    wait_ready(api)
    manifest = json.loads((REPO / "manifest.json").read_text())
    session = requests.Session()
    checked = 0
    for entry in manifest["models"]:
        log = json.loads((REPO / "models" / entry["path"] / "training_log.json").read_text())
        rows = log["rows"]
        assert len(rows) >= 20
        for row in rows:
            response = session.post(url(api, f"/models/{entry['name']}/predict"),
                                    json={"entity_ids": [row["entity_id"]]}, timeout=10)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["entity_ids"] == [row["entity_id"]]
            assert body["model"]["sha256"] == entry["onnx"]["sha256"]
            close(body["predictions"][0], row["prediction"], f"{entry['name']} {row['entity_id']}")
            checked += 1
        # All of them in one request: one store call, the same predictions in order.
        ids = [row["entity_id"] for row in rows]
        response = session.post(url(api, f"/models/{entry['name']}/predict"),
                                json={"entity_ids": ids}, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["entity_ids"] == ids
        for got, row in zip(response.json()["predictions"], rows):
            close(got, row["prediction"])
    assert checked == sum(
        len(json.loads((REPO / "models" / m["path"] / "training_log.json").read_text())["rows"])
        for m in manifest["models"])


def test_health_reports_the_verified_snapshot(stack):
    started, _ = stack
    api = started["api"]
    wait_ready(api)  # REQUIRE_SNAPSHOT_MATCH=true: ready means verified
    store = requests.get(url(api, "/health"), timeout=5).json()["feature_store"]
    assert store["kind"] == "feast_http"
    assert store["state"] == "up"
    assert store["snapshot_match"] is True
    manifest = json.loads((REPO / "manifest.json").read_text())
    assert [s["expected"] for s in store["snapshots"]] == [
        m["dataset"]["feature_snapshot_id"] for m in manifest["models"]]
    assert all(s["actual"] == s["expected"] for s in store["snapshots"])


def test_unknown_entity_is_a_404_naming_it(stack):
    started, _ = stack
    api = started["api"]
    wait_ready(api)
    response = requests.post(url(api, "/predict"), json={"entity_ids": ["no-such-patient"]},
                             timeout=10)
    assert response.status_code == 404
    assert response.json()["code"] == "entity_not_found"
    assert "'no-such-patient'" in response.json()["error"]
