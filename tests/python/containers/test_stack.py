"""The README's demo with a real Docker engine: the image tagged with the commit,
`docker-compose up -d`, every service healthy, one curl by entity id and one by features
returning the first training-log row's prediction, /manifest from inside the container naming
the commit, Prometheus scraping the API with the alert rules loaded, `docker-compose down`.

Tests marked `needs_feature_store` / `needs_metrics` exercise code from the feature-store and
observability work; scripts/container-tests.sh deselects them (and says so) only while the
source tree lacks that code. The stack then runs without the feature-store service.
"""

import json
import os
import subprocess
import time

import pytest
import requests
import yaml

from dockerlib import REPO, docker, env, free_port, inspect, report, training_log_row

COMPOSE = REPO / "docker-compose.yml"
HAS_FEATURE_STORE = os.environ.get("FERRUM_TREE_HAS_FEATURE_STORE") == "1"
TIMEOUT = 120


def compose(*args, check=True, extra_env=None, timeout=300):
    e = {**os.environ, **(extra_env or {})}
    result = subprocess.run(["docker-compose", "-p", env("FERRUM_COMPOSE_PROJECT"),
                             "-f", str(COMPOSE), *args], capture_output=True, text=True,
                            env=e, cwd=REPO, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)}: {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


class Stack:
    def __init__(self):
        self.api_port, self.prometheus_port = free_port(), free_port()
        self.env = {"IMAGE_TAG": env("FERRUM_IMAGE_TAG"), "API_PORT": str(self.api_port),
                    "PROMETHEUS_PORT": str(self.prometheus_port)}
        self.services = ["feature-store", "api", "prometheus"] if HAS_FEATURE_STORE \
            else ["api", "prometheus"]

    def compose(self, *args, **kwargs):
        return compose(*args, extra_env=self.env, **kwargs)

    def container(self, service):
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: {ids}"
        return ids[0]

    def wait_healthy(self, service):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            state = inspect(self.container(service))["State"]
            if state.get("Health", {}).get("Status") == "healthy":
                return
            assert state["Running"], f"{service} exited:\n{self.logs()}"
            time.sleep(0.5)
        raise AssertionError(f"{service} not healthy in {TIMEOUT} s:\n{self.logs()}")

    def logs(self):
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout

    def api(self, path):
        return f"http://127.0.0.1:{self.api_port}{path}"

    def prometheus(self, path):
        return f"http://127.0.0.1:{self.prometheus_port}{path}"


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    started = time.monotonic()
    try:
        if HAS_FEATURE_STORE:
            s.compose("up", "-d")  # depends_on: service_healthy orders the start
        else:
            s.compose("up", "-d", "--no-deps", *s.services)
        for service in s.services:
            s.wait_healthy(service)
        report(f"stack up and healthy: {time.monotonic() - started:.1f} s "
               f"({', '.join(s.services)})")
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", check=False)


def curl(*args):
    result = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


# --- the file ----------------------------------------------------------------------------------

def test_compose_file_is_valid_and_a_broken_one_is_not(tmp_path):
    assert compose("config", "-q", extra_env={"IMAGE_TAG": "abc1234"}).returncode == 0
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("healthcheck:", "healthchek:", 1))
    result = subprocess.run(["docker-compose", "-f", str(broken), "config", "-q"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and "healthchek" in result.stderr


def test_compose_wiring():
    rendered = yaml.safe_load(compose("config", extra_env={"IMAGE_TAG": "abc1234"}).stdout)
    services = rendered["services"]
    assert set(services) == {"api", "feature-store", "prometheus"}
    for name in ("api", "feature-store"):
        assert services[name]["image"] == "ferrum-serve:abc1234", name
        assert services[name]["entrypoint"] == []
    assert services["api"]["command"][0] == "ferrum-serve"
    assert services["feature-store"]["command"][0] == "ferrum-feature-store"
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    assert services["api"]["depends_on"] == {"feature-store": {"condition": "service_healthy"}}
    assert services["prometheus"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    # The API names the store by service name, on the port the store's command listens on.
    store_command = services["feature-store"]["command"]
    store_port = store_command[store_command.index("--port") + 1]
    assert services["api"]["environment"]["FEATURE_STORE_URI"] == \
        f"http://feature-store:{store_port}"
    assert services["feature-store"]["healthcheck"]["test"][-1] == \
        f"--healthcheck=http://127.0.0.1:{store_port}/health"
    # The API's container port is the image's EXPOSE and the server's default.
    assert services["api"]["environment"]["PORT"] == "8080"
    published = services["api"]["ports"][0]  # "127.0.0.1:8080:8080/tcp" in compose 1.29
    target = published["target"] if isinstance(published, dict) else \
        int(published.rsplit(":", 1)[1].split("/")[0])
    assert target == 8080
    scrape = yaml.safe_load((REPO / "deploy/compose/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    assert jobs["ferrum-serve"]["static_configs"][0]["targets"] == ["api:8080"]


# --- the demo ----------------------------------------------------------------------------------

def test_every_service_is_healthy(stack):
    for service in stack.services:
        health = inspect(stack.container(service))["State"]["Health"]
        assert health["Status"] == "healthy", service
        assert health["Log"][-1]["ExitCode"] == 0, service


def test_curl_by_features_returns_the_first_training_log_row(stack):
    row = training_log_row("breast-cancer")
    body = curl(stack.api("/predict"), "-H", "content-type: application/json",
                "-d", json.dumps({"instances": [row["features"]]}))
    assert body["predictions"] == [row["prediction"]]
    assert body["model"]["name"] == "breast-cancer"


@pytest.mark.needs_feature_store
def test_curl_by_entity_id_returns_the_first_training_log_row(stack):
    row = training_log_row("breast-cancer")
    body = curl(stack.api("/predict"), "-H", "content-type: application/json",
                "-d", json.dumps({"entity_ids": [row["entity_id"]]}))
    assert body["predictions"] == [row["prediction"]]
    assert body["entity_ids"] == [row["entity_id"]]


@pytest.mark.needs_feature_store
def test_feature_store_runs_from_the_same_image(stack):
    container = inspect(stack.container("feature-store"))
    assert container["Config"]["Image"] == env("FERRUM_IMAGE")
    assert container["Config"]["Cmd"][0] == "ferrum-feature-store"
    assert container["State"]["Health"]["Status"] == "healthy"


def test_manifest_from_inside_the_container_names_the_commit(stack):
    commit, tag = env("FERRUM_GIT_COMMIT"), env("FERRUM_IMAGE_TAG")
    inside = stack.compose("exec", "-T", "api", "cat", "/srv/ferrum/manifest.json").stdout
    assert json.loads(inside)["release"] == {"git_commit": commit, "image_tag": tag}
    probe = stack.compose("exec", "-T", "api", "ferrum-serve", "--healthcheck")
    assert "answered 200" in probe.stdout
    served = curl(stack.api("/manifest"))
    assert served["build"]["git_commit"] == commit and served["build"]["image_tag"] == tag
    assert served["release"]["git_commit"] == commit
    assert inspect(stack.container("api"))["Config"]["Image"] == f"ferrum-serve:{tag}"


def prometheus_targets(stack):
    body = requests.get(stack.prometheus("/api/v1/targets"), timeout=5).json()
    return {t["labels"]["job"]: t for t in body["data"]["activeTargets"]}


def test_prometheus_scrapes_the_api_by_service_name(stack):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        targets = prometheus_targets(stack)
        # Both jobs scraped at least once: each target starts "unknown" until its first scrape,
        # and the two first scrapes are independent of each other.
        if all(targets.get(job, {}).get("health") in ("up", "down")
               for job in ("ferrum-serve", "prometheus")):
            break
        time.sleep(0.5)
    target = targets["ferrum-serve"]
    assert target["scrapeUrl"] == "http://api:8080/metrics"
    assert target["labels"]["service"] == "api"
    # Reaching the API by name: a scrape error, if any, is an HTTP status, not a DNS failure.
    assert "no such host" not in target["lastError"], target["lastError"]
    assert targets["prometheus"]["health"] == "up"


@pytest.mark.needs_metrics
def test_prometheus_has_the_api_target_up(stack):
    deadline = time.monotonic() + 60
    value = None
    while time.monotonic() < deadline:
        body = requests.get(stack.prometheus("/api/v1/query"),
                            params={"query": 'up{job="ferrum-serve"}'}, timeout=5).json()
        result = body["data"]["result"]
        value = result[0]["value"][1] if result else None
        if value == "1":
            break
        time.sleep(1)
    assert value == "1", prometheus_targets(stack).get("ferrum-serve")


def test_prometheus_loaded_the_alert_rules_in_the_tree(stack):
    rules_file = REPO / "deploy/prometheus/alerts.yml"
    expected = sorted(g["name"] for g in yaml.safe_load(rules_file.read_text())["groups"]) \
        if rules_file.is_file() else []
    body = requests.get(stack.prometheus("/api/v1/rules"), timeout=5).json()
    assert sorted(g["name"] for g in body["data"]["groups"]) == expected


def test_docker_compose_down_removes_the_stack(stack):
    stack.compose("down", "-v", "--remove-orphans")
    project = env("FERRUM_COMPOSE_PROJECT")
    left = docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}")
    assert left.stdout.split() == []
    networks = docker("network", "ls", "-q", "--filter",
                      f"label=com.docker.compose.project={project}")
    assert networks.stdout.split() == []
