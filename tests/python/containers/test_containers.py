"""The images, for real: lint, metadata, layer sizes, the server running as Kubernetes runs it
(non-root, read-only root file system, no capabilities), the training log reproduced through
the container, the release manifest, graceful stop, and the training image retraining the
committed models byte for byte.

Run by scripts/container-tests.sh, which builds the images first.
"""

import hashlib
import json
import re
import subprocess
import time

import pytest
import requests

from dockerlib import (REPO, VENV_BIN, Container, docker, env, inspect, run_label,
                       training_log)
from dockerlib import report as report_line

DOCKERFILES = ["Dockerfile", "Dockerfile.gpu", "deploy/compose/prometheus.Dockerfile"]
HARDENED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--tmpfs", "/tmp:rw,noexec,nosuid,size=16m"]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# --- lint --------------------------------------------------------------------------------------

def hadolint(path):
    result = subprocess.run([str(VENV_BIN / "hadolint"), "-f", "json", "--no-color", str(path)],
                            capture_output=True, text=True)
    return result.returncode, json.loads(result.stdout or "[]")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_reports_nothing(dockerfile):
    rc, findings = hadolint(REPO / dockerfile)
    assert findings == [] and rc == 0, findings


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    """A control: the linter runs and reports at warning level (untagged image, cd in RUN)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN cd /tmp && apt-get update && apt-get install -y curl\n")
    rc, findings = hadolint(bad)
    codes = {f["code"] for f in findings}
    assert rc == 1 and {"DL3006", "DL3003"} <= codes, findings


def test_dockerignore_keeps_the_context_small_and_secret_free():
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", "target", ".ort", ".venv", ".env"):
        assert entry in ignored, entry


# --- the image's metadata ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def image():
    return inspect(env("FERRUM_IMAGE"))


def test_labels_user_ports_healthcheck_entrypoint(image):
    config = image["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == env("FERRUM_GIT_COMMIT")
    assert labels["org.opencontainers.image.version"] == env("FERRUM_IMAGE_TAG")
    assert labels["org.opencontainers.image.title"] == "ferrum-serve"
    assert config["User"] == "10001:10001"
    assert list(config["ExposedPorts"]) == ["8080/tcp"]
    assert config["Healthcheck"]["Test"] == ["CMD", "ferrum-serve", "--healthcheck"]
    assert config["Entrypoint"] == ["ferrum-serve"]
    environment = dict(e.split("=", 1) for e in config["Env"])
    assert environment["PORT"] == "8080"
    assert environment["IMAGE_TAG"] == env("FERRUM_IMAGE_TAG")


def test_image_tag_is_the_commit():
    assert env("FERRUM_IMAGE") == f"ferrum-serve:{env('FERRUM_IMAGE_TAG')}"
    assert env("FERRUM_GIT_COMMIT").startswith(env("FERRUM_IMAGE_TAG"))


def history(ref):
    """`docker history`, newest first, metadata-only steps (size 0) included."""
    out = docker("history", "--no-trunc", "--format", "{{json .}}", ref).stdout
    return [json.loads(line) for line in out.strip().splitlines()]


def layers_above_base(image_ref, base_ref):
    """(created_by, bytes) of each step the image adds on top of its base image."""
    own, base = history(image_ref), history(base_ref)
    assert [h["CreatedBy"] for h in own[-len(base):]] == [h["CreatedBy"] for h in base]
    return [(h["CreatedBy"], docker_size(h["Size"])) for h in own[:-len(base)]]


def docker_size(text):
    units = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    match = re.fullmatch(r"([\d.]+)\s*([kKMG]?B)", text)
    assert match, text
    return float(match.group(1)) * units[match.group(2)]


def test_runtime_layers_above_the_base_are_small(image):
    layers = layers_above_base(env("FERRUM_IMAGE"), "debian:bookworm-slim")
    total = sum(size for _, size in layers)
    report = "\n".join(f"{size / 1e6:8.1f} MB  {created[:90]}" for created, size in layers
                       if size > 0)
    report_line(f"runtime layers above debian:bookworm-slim: {total / 1e6:.1f} MB\n{report}")
    # ONNX Runtime (~29 MB), the binaries (~10-20 MB), models (~0.5 MB), a user.
    assert total < 80e6, report
    big = [created for created, size in layers if size > 40e6]
    assert big == [], big


# --- the server in the container, hardened as the Kubernetes manifests run it -----------------

@pytest.fixture(scope="module")
def server():
    with Container(env("FERRUM_IMAGE"), *HARDENED, publish=8080) as c:
        c.wait_health("healthy", timeout=120)
        yield c


def test_docker_healthcheck_reports_healthy_via_the_binary(server):
    health = server.state()["Health"]
    assert health["Status"] == "healthy"
    assert health["Log"][-1]["ExitCode"] == 0
    assert "/health/ready answered 200" in health["Log"][-1]["Output"]
    probe = server.exec("ferrum-serve", "--healthcheck")
    assert probe.returncode == 0 and "answered 200" in probe.stdout
    # An unknown route through the same probe: non-zero, so a bad probe cannot pass silently.
    bad = server.exec("ferrum-serve", "--healthcheck=http://127.0.0.1:8080/nope", check=False)
    assert bad.returncode == 1 and "answered 404" in bad.stderr


def test_runs_as_non_root_on_a_read_only_root(server):
    assert server.exec("id", "-u").stdout.strip() == "10001"
    write = server.exec("sh", "-c", "touch /srv/ferrum/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    config = inspect(server.id)["HostConfig"]
    assert config["ReadonlyRootfs"] is True and config["CapDrop"] == ["ALL"]


@pytest.mark.parametrize("model", ["breast-cancer", "diabetes"])
def test_every_training_log_row_predicts_exactly_as_logged(server, model):
    session = requests.Session()
    path = "/predict" if model == "breast-cancer" else f"/models/{model}/predict"
    rows = training_log(model)
    for row in rows:
        r = session.post(server.url(path), json={"instances": [row["features"]]}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == [row["prediction"]], row["entity_id"]
    assert len(rows) >= 25


def test_release_manifest_names_this_build(server):
    commit, tag = env("FERRUM_GIT_COMMIT"), env("FERRUM_IMAGE_TAG")
    served = requests.get(server.url("/manifest"), timeout=10).json()
    assert served["release"] == {"git_commit": commit, "image_tag": tag}
    assert served["build"]["git_commit"] == commit
    assert served["build"]["image_tag"] == tag
    # The file inside the image is the committed manifest plus the release stamp, nothing else.
    inside = json.loads(server.exec("cat", "/srv/ferrum/manifest.json").stdout)
    committed = json.loads((REPO / "manifest.json").read_text())
    assert inside.pop("release") == {"git_commit": commit, "image_tag": tag}
    assert inside == committed
    health = requests.get(server.url("/health"), timeout=10).json()
    assert health["git_commit"] == commit


SBOM_PATH = "/usr/share/doc/ferrum-serve/sbom.cdx.json"


def cargo_lock_versions():
    """{crate name: {versions}} from the committed Cargo.lock."""
    import tomllib
    lock = tomllib.loads((REPO / "Cargo.lock").read_text())
    versions = {}
    for package in lock["package"]:
        versions.setdefault(package["name"], set()).add(package["version"])
    return versions


def test_the_image_ships_a_cyclonedx_sbom_and_manifest_names_it(server):
    """The SBOM written at image build (cargo-cyclonedx) is valid CycloneDX JSON about this
    crate, lists what the binary is built from at the versions Cargo.lock pins, and /manifest
    points at it."""
    bom = json.loads(server.exec("cat", SBOM_PATH).stdout)
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["specVersion"] == "1.5"
    assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", bom["serialNumber"]), bom["serialNumber"]
    component = bom["metadata"]["component"]
    assert component["name"] == "ferrum-serve"
    assert component["version"] == "0.1.0"
    components = {c["name"]: c for c in bom["components"]}
    locked = cargo_lock_versions()
    for name in ("ort", "axum", "hyper-util", "tower-http", "prometheus", "reqwest"):
        assert name in components, sorted(components)
        assert components[name]["version"] in locked[name], (name, components[name]["version"])
        assert components[name]["purl"].startswith(f"pkg:cargo/{name}@"), components[name]
    assert components["ort"]["version"] == "2.0.0-rc.15"
    # Every component is a crate from Cargo.lock at a locked version: nothing invented.
    for c in bom["components"]:
        assert c["version"] in locked.get(c["name"], ()), c["name"]
    # A single reqwest: the SBOM sees the build cargo tree -d checks.
    assert [c["name"] for c in bom["components"]].count("reqwest") == 1
    served = requests.get(server.url("/manifest"), timeout=10).json()
    assert served["build"]["sbom"] == SBOM_PATH


def test_models_in_the_image_are_the_committed_bytes(server):
    for name in ("breast-cancer", "diabetes"):
        out = server.exec("sha256sum", f"/srv/ferrum/models/{name}/1/model.onnx").stdout
        assert out.split()[0] == sha256((REPO / "models" / name / "1" / "model.onnx").read_bytes())


def test_docker_stop_drains_and_exits_zero():
    with Container(env("FERRUM_IMAGE"), *HARDENED, publish=8080) as c:
        c.wait_http("/health/ready")
        started = time.monotonic()
        docker("stop", "-t", "20", c.id)
        assert time.monotonic() - started < 15
        state = c.state()
        assert state["ExitCode"] == 0, c.logs()
        assert "shutdown signal received" in c.logs()


def test_missing_library_is_a_one_line_start_up_error():
    """The image's start-up errors reach `docker logs` as the binary prints them."""
    result = docker("run", "--rm", *run_label(), "-e",
                    "ORT_DYLIB_PATH=/nonexistent/libonnxruntime.so", env("FERRUM_IMAGE"),
                    check=False, timeout=60)
    assert result.returncode == 1
    assert "error:" in result.stderr and "/nonexistent/libonnxruntime.so" in result.stderr


# --- the training image ------------------------------------------------------------------------

def test_training_image_reproduces_the_committed_models(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    docker("run", "--rm", *run_label(), "--network", "none",
           "-v", f"{out}:/out", env("FERRUM_TRAIN_IMAGE"), timeout=600)
    fresh = json.loads((out / "manifest.json").read_text())
    committed = json.loads((REPO / "manifest.json").read_text())
    for entry in committed["models"]:
        new_dir, old_dir = out / "models" / entry["path"], REPO / "models" / entry["path"]
        onnx_sha = sha256((new_dir / "model.onnx").read_bytes())
        assert onnx_sha == entry["onnx"]["sha256"], entry["name"]
        for artifact in ["model.onnx", *entry["artifacts"].values()]:
            assert (new_dir / artifact).read_bytes() == (old_dir / artifact).read_bytes(), \
                f"{entry['name']}/{artifact}"
    assert [m["onnx"]["sha256"] for m in fresh["models"]] == \
        [m["onnx"]["sha256"] for m in committed["models"]]
