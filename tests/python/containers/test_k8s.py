"""The Kubernetes manifests: strict schema validation against Kubernetes 1.31, the kustomization
covering every file, the security context and image-tag rules, the wiring between objects, and
the Deployment's own probes called against the real container with the ConfigMap's settings.
"""

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from dockerlib import REPO, VENV_BIN, Container, docker, env

K8S = REPO / "k8s"
K8S_VERSION = "1.31"
COMMIT_TAG = re.compile(r"^ferrum-serve:[0-9a-f]{7,40}$")


def manifests():
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load(name):
    return yaml.safe_load((K8S / name).read_text())


def by_kind():
    objects = {}
    for path in manifests():
        for doc in yaml.safe_load_all(path.read_text()):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def pod_specs():
    """(name, pod spec) of every workload."""
    for (kind, name), doc in by_kind().items():
        if kind == "Deployment":
            yield name, doc["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield name, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def validate(paths):
    return subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict", "-k", K8S_VERSION,
                           *map(str, paths)], capture_output=True, text=True)


# --- schemas and kustomize ---------------------------------------------------------------------

def test_every_manifest_validates_strictly_against_kubernetes_1_31():
    result = validate(manifests())
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource", result.stdout + result.stderr)
    assert len(passed) == len(manifests())


def test_strict_validation_catches_an_unknown_field(tmp_path):
    """A control: a misspelt field (here `replica`) fails under --strict."""
    broken = tmp_path / "api-deployment.yaml"
    broken.write_text((K8S / "api-deployment.yaml").read_text().replace("  replicas:", "  replica:"))
    result = validate([broken])
    assert result.returncode != 0 and "replica" in result.stdout + result.stderr


def test_kustomization_applies_every_manifest():
    kustomization = load("kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifests())
    assert kustomization["namespace"] == load("namespace.yaml")["metadata"]["name"]


# --- security and images -----------------------------------------------------------------------

def test_every_workload_is_non_root_read_only_and_capability_free():
    specs = dict(pod_specs())
    assert set(specs) == {"ferrum-serve", "ferrum-serve-canary", "ferrum-feature-store",
                          "ferrum-drift-report"}
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert set(c["resources"]) == {"requests", "limits"}, name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name


def images():
    return {name: [c["image"] for c in spec["containers"]] for name, spec in pod_specs()}


def test_image_tags_are_commits_never_latest():
    tags = images()
    for name, refs in tags.items():
        for ref in refs:
            assert COMMIT_TAG.match(ref), f"{name}: {ref}"
    stable = {tags[n][0] for n in ("ferrum-serve", "ferrum-feature-store", "ferrum-drift-report")}
    assert len(stable) == 1, "the stable track runs one image"
    assert tags["ferrum-serve-canary"][0] not in stable, "the canary runs another tag"


def test_set_image_tags_script_moves_one_track(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    script = REPO / "scripts/k8s-set-image-tags.sh"
    head = env("FERRUM_IMAGE_TAG")
    before = images()
    subprocess.run([str(script), "--canary", head, str(copy)], check=True, capture_output=True)
    canary = yaml.safe_load((copy / "api-canary-deployment.yaml").read_text())
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == f"ferrum-serve:{head}"
    stable = yaml.safe_load((copy / "api-deployment.yaml").read_text())
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == \
        before["ferrum-serve"][0]
    refused = subprocess.run([str(script), "latest", str(copy)], capture_output=True, text=True)
    assert refused.returncode == 2 and "not a commit id" in refused.stderr
    assert validate([copy / "api-canary-deployment.yaml"]).returncode == 0


# --- wiring --------------------------------------------------------------------------------------

def test_api_deployment_service_hpa_pdb_and_canary_fit_together():
    objects = by_kind()
    api = objects[("Deployment", "ferrum-serve")]
    canary = objects[("Deployment", "ferrum-serve-canary")]
    service = objects[("Service", "ferrum-serve")]
    hpa = objects[("HorizontalPodAutoscaler", "ferrum-serve")]
    pdb = objects[("PodDisruptionBudget", "ferrum-serve")]
    assert api["spec"]["replicas"] == 2 and canary["spec"]["replicas"] == 1
    selector = service["spec"]["selector"]
    for deployment in (api, canary):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), "the Service selects both tracks"
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert api["spec"]["template"]["metadata"]["labels"]["track"] == "stable"
    assert canary["spec"]["template"]["metadata"]["labels"]["track"] == "canary"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "ferrum-serve"}
    assert hpa["spec"]["minReplicas"] == api["spec"]["replicas"]
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert container["envFrom"] == [{"configMapRef": {"name": "ferrum-serve-config"}}]
    (api_key,) = [e for e in container["env"] if e["name"] == "API_KEY"]
    secret_ref = api_key["valueFrom"]["secretKeyRef"]
    secret = objects[("Secret", secret_ref["name"])]
    assert secret_ref["key"] in secret["stringData"]


def test_feature_store_and_drift_report_run_the_same_image_with_other_commands():
    objects = by_kind()
    store = objects[("Deployment", "ferrum-feature-store")]["spec"]["template"]["spec"]
    container = store["containers"][0]
    assert container["command"] == ["ferrum-feature-store"]
    port = container["args"][container["args"].index("--port") + 1]
    assert container["ports"][0]["containerPort"] == int(port)
    service = objects[("Service", "ferrum-feature-store")]
    config = objects[("ConfigMap", "ferrum-serve-config")]["data"]
    assert config["FEATURE_STORE_URI"] == \
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    cron = objects[("CronJob", "ferrum-drift-report")]
    job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"][0] == "drift-report" and "command" not in job
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert re.fullmatch(r"\d+ \d+ \* \* \*", cron["spec"]["schedule"]), "nightly"


def container_port(container, port):
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return match


def test_ports_agree_across_dockerfile_server_compose_and_manifests():
    api = load("api-deployment.yaml")["spec"]["template"]
    container = api["spec"]["containers"][0]
    port = container["ports"][0]["containerPort"]
    exposed = re.findall(r"^EXPOSE (\d+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert exposed == [str(port)]
    help_text = docker("run", "--rm", env("FERRUM_IMAGE"), "--help").stdout
    assert re.search(r"\[default: (\d+)\]", help_text[help_text.index("--port"):]).group(1) \
        == str(port)
    config = load("configmap.yaml")["data"]
    assert config["PORT"] == str(port)
    annotations = api["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container_port(container, container[probe]["httpGet"]["port"]) == port
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["api"]["environment"]["PORT"] == str(port)


# --- the probes, for real ------------------------------------------------------------------------

def docker_args_from_pod(spec, container):
    """The Deployment's security context and ConfigMap environment as `docker run` flags."""
    args = ["--user", f"{spec['securityContext']['runAsUser']}:"
                      f"{spec['securityContext']['runAsGroup']}"]
    if container["securityContext"]["readOnlyRootFilesystem"]:
        args.append("--read-only")
    args += [f"--cap-drop={c}" for c in container["securityContext"]["capabilities"]["drop"]]
    if container["securityContext"]["allowPrivilegeEscalation"] is False:
        args += ["--security-opt", "no-new-privileges"]
    for mount in container.get("volumeMounts", []):
        args += ["--tmpfs", mount["mountPath"]]
    if {"configMapRef": {"name": "ferrum-serve-config"}} in container.get("envFrom", []):
        secrets = {name: doc for (kind, name), doc in by_kind().items() if kind == "Secret"}
    for item in container.get("env", []):
        if "value" in item:
            args += ["-e", f"{item['name']}={item['value']}"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            args += ["-e", f"{item['name']}={secrets[ref['name']]['stringData'][ref['key']]}"]
    for key, value in load("configmap.yaml")["data"].items():
            args += ["-e", f"{key}={value}"]
    for key, value in (container.get("resources", {}).get("limits") or {}).items():
        if key == "memory":
            args += ["--memory", value.replace("Mi", "m").replace("Gi", "g")]
        if key == "cpu":
            args += ["--cpus", str(float(value[:-1]) / 1000 if value.endswith("m") else value)]
    return args


def test_deployment_probes_pass_against_the_running_container():
    api = load("api-deployment.yaml")["spec"]["template"]["spec"]
    container = api["containers"][0]
    port = container["ports"][0]["containerPort"]
    run_args = docker_args_from_pod(api, container)
    # Without the feature store in this check, entity lookups are not what is probed.
    run_args += ["-e", "FEATURE_STORE_URI=none"]
    started = time.monotonic()
    with Container(env("FERRUM_IMAGE"), *run_args, publish=port) as c:
        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        c.wait_http(startup["httpGet"]["path"], timeout=budget)
        ready_after = time.monotonic() - started
        assert ready_after < budget / 2, f"ready after {ready_after:.1f} s of a {budget} s budget"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert container_port(container, get["port"]) == port
            # No credentials: the example Secret's API key is set, and probes must not need it.
            r = requests.get(c.url(get["path"]), timeout=container[probe]["timeoutSeconds"])
            assert r.status_code == 200, (probe, r.status_code, r.text)
        key = load("secret.example.yaml")["stringData"]["API_KEY"]
        row = {"instances": [[0.0] * 30]}
        assert requests.post(c.url("/predict"), json=row, timeout=10).status_code == 401
        authorized = requests.post(c.url("/predict"), json=row, timeout=10,
                                   headers={"authorization": f"Bearer {key}"})
        assert authorized.status_code == 200, authorized.text
        assert {container[p]["httpGet"]["path"] for p in
                ("startupProbe", "livenessProbe", "readinessProbe")} == \
            {"/health/ready", "/health/live"}

    # Draining and finishing in-flight requests fit in the pod's termination grace period.
    config = load("configmap.yaml")["data"]
    shutdown_ms = int(config["SHUTDOWN_DRAIN_MS"]) + int(config["SHUTDOWN_GRACE_MS"])
    assert shutdown_ms < api["terminationGracePeriodSeconds"] * 1000


@pytest.mark.needs_feature_store
def test_feature_store_probes_pass_against_the_running_container():
    store = load("feature-store-deployment.yaml")["spec"]["template"]["spec"]
    container = store["containers"][0]
    port = container["ports"][0]["containerPort"]
    run_args = docker_args_from_pod(store, container)
    with Container(env("FERRUM_IMAGE"), "--entrypoint", container["command"][0], *run_args,
                   args=container["args"], publish=port) as c:
        for probe in ("livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            c.wait_http(get["path"], timeout=60)
            assert container_port(container, get["port"]) == port
