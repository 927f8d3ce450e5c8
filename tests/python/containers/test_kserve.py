"""The KServe runtime's container, run with `docker run` the way KServe starts the predictor of
k8s/kserve/inferenceservice.yaml: the image, args, env, ports, user, read-only root, dropped
capabilities and limits of k8s/kserve/servingruntime.yaml's kserve-container (its `{{.Name}}`
templates, if any, filled in with the InferenceService's name as KServe does), the env
INFERENCE_SERVICE_NAME KServe adds, and the storageUri's contents mounted read-only at
/mnt/models as KServe's storage initializer leaves them. The storageUri here holds a model
repository made of this repository's manifest.json and models/. Then V2 REST and gRPC answer
for the InferenceService's name, and the runtime's probes and metrics annotation hold.

The schemas of these manifests are checked without Docker in tests/python/test_kserve_manifests.py.
"""

import json
import shutil

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dockerlib import REPO, Container, env, free_port, inspect, training_log

KSERVE = REPO / "k8s" / "kserve"
# KServe's constants.DefaultModelLocalMountPath: where the storage initializer puts storageUri.
MODEL_MOUNT = "/mnt/models"


def load(name):
    return yaml.safe_load((KSERVE / name).read_text())


def runtime_container():
    (container,) = load("servingruntime.yaml")["spec"]["containers"]
    assert container["name"] == "kserve-container"
    return container


def isvc_name():
    return load("inferenceservice.yaml")["metadata"]["name"]


def manifest():
    return json.loads((REPO / "manifest.json").read_text())


def entry(name):
    (match,) = [m for m in manifest()["models"] if m["name"] == name]
    return match


def model_repository(root, models=None):
    """What the storageUri holds: manifest.json at the top and <name>/<version>/ under it
    (this repository's), readable by the container's user, as the storage initializer's
    download is."""
    root.mkdir()
    doc = manifest()
    if models is not None:
        doc["models"] = [m for m in doc["models"] if m["name"] in models]
        # A trimmed manifest names a default it still lists (or none: the first model).
        if doc.get("default_model") not in models:
            doc.pop("default_model", None)
    (root / "manifest.json").write_text(json.dumps(doc, indent=2))
    for m in doc["models"]:
        shutil.copytree(REPO / "models" / m["path"], root / m["path"])
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def kserve_args(container, name):
    """The container's args after KServe's template pass (ReplacePlaceholders runs the
    container through Go's text/template with the InferenceService's ObjectMeta)."""
    args = [a.replace("{{.Name}}", name) for a in container.get("args", [])]
    assert not any("{{" in a for a in args), args
    return args


def docker_args(container, name, repository, grpc_host_port):
    """The kserve-container as `docker run` flags: what KServe and the kubelet would set."""
    sc = container["securityContext"]
    args = ["--user", f"{sc['runAsUser']}:{sc['runAsGroup']}"]
    if sc["readOnlyRootFilesystem"]:
        args.append("--read-only")
    args += [f"--cap-drop={c}" for c in sc["capabilities"]["drop"]]
    if sc["allowPrivilegeEscalation"] is False:
        args += ["--security-opt", "no-new-privileges"]
    # storage.kserve.io/readonly is true unless an InferenceService says otherwise.
    args += ["-v", f"{repository}:{MODEL_MOUNT}:ro"]
    for item in container.get("env", []):
        args += ["-e", f"{item['name']}={item['value']}"]
    args += ["-e", f"INFERENCE_SERVICE_NAME={name}"]
    limits = container["resources"]["limits"]
    args += ["--memory", limits["memory"].replace("Mi", "m").replace("Gi", "g"),
             "--cpus", str(limits["cpu"])]
    grpc_port = container["ports"][1]["containerPort"]
    args += ["-p", f"127.0.0.1:{grpc_host_port}:{grpc_port}"]
    return args


class Predictor:
    """The running kserve-container, with its REST and gRPC addresses."""

    def __init__(self, repository, name):
        container = runtime_container()
        self.container_spec = container
        self.grpc_address = f"127.0.0.1:{free_port()}"
        http_port = container["ports"][0]["containerPort"]
        self.c = Container(env("FERRUM_IMAGE"),
                           *docker_args(container, name, repository,
                                        self.grpc_address.rsplit(":", 1)[1]),
                           args=kserve_args(container, name), publish=http_port)
        startup = container["startupProbe"]
        try:
            self.c.wait_http(startup["httpGet"]["path"],
                             timeout=startup["periodSeconds"] * startup["failureThreshold"])
        except BaseException:
            self.c.remove()
            raise

    def url(self, path):
        return self.c.url(path)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    repository = model_repository(tmp_path_factory.mktemp("storage-uri") / "repository")
    p = Predictor(repository, isvc_name())
    try:
        yield p
    finally:
        p.c.remove()


def first_row(name):
    """The first training-log row: features in the manifest's order, and what was logged."""
    row = training_log(name)[0]
    return [row["features"][f] for f in entry(name)["feature_names"]], row["prediction"]


# --- the container as KServe runs it ----------------------------------------------------------

def test_runs_as_kserve_runs_it(predictor):
    """A control that the run is the KServe one: the storage mount read-only, the root read-only,
    the runtime's user, and the name KServe passes in the environment."""
    state = inspect(predictor.c.id)
    (mount,) = [m for m in state["Mounts"] if m["Destination"] == MODEL_MOUNT]
    assert mount["RW"] is False
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    assert state["HostConfig"]["CapDrop"] == ["ALL"]
    sc = predictor.container_spec["securityContext"]
    assert state["Config"]["User"] == f"{sc['runAsUser']}:{sc['runAsGroup']}"
    assert f"INFERENCE_SERVICE_NAME={isvc_name()}" in state["Config"]["Env"]
    assert state["Args"] == kserve_args(predictor.container_spec, isvc_name())


def test_the_runtime_probes_pass(predictor):
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = predictor.container_spec[probe]["httpGet"]
        assert get["port"] == predictor.container_spec["ports"][0]["containerPort"]
        r = requests.get(predictor.url(get["path"]),
                         timeout=predictor.container_spec[probe]["timeoutSeconds"])
        assert r.status_code == 200, (probe, r.status_code, r.text)
    assert requests.get(predictor.url("/v2/health/ready"), timeout=5).json() == {"ready": True}


# --- V2 REST under the InferenceService's name -----------------------------------------------

def test_v2_model_metadata_answers_for_the_inference_service_name(predictor):
    name = isvc_name()
    r = requests.get(predictor.url(f"/v2/models/{name}"), timeout=10)
    assert r.status_code == 200, r.text
    metadata = r.json()
    assert metadata["name"] == name and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32",
                                   "shape": [-1, len(entry(name)["feature_names"])]}]
    ready = requests.get(predictor.url(f"/v2/models/{name}/ready"), timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_v2_infer_answers_one_row_as_logged(predictor):
    name = isvc_name()
    features, logged = first_row(name)
    body = {"inputs": [{"name": "input", "shape": [1, len(features)], "datatype": "FP32",
                        "data": features}]}
    r = requests.post(predictor.url(f"/v2/models/{name}/infer"), json=body, timeout=10)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["model_name"], answer["model_version"]) == (name, "1")
    outputs = {o["name"]: o for o in answer["outputs"]}
    labels = entry(name)["class_labels"]
    assert outputs["label"]["shape"] == [1]
    assert outputs["label"]["data"] == [labels.index(logged["label"])]
    assert outputs["probabilities"]["shape"] == [1, len(labels)]
    assert outputs["probabilities"]["data"] == [logged["probabilities"][c] for c in labels]


# --- gRPC on the h2c port ----------------------------------------------------------------------

def test_grpc_v2_answers_as_rest_does(predictor):
    """grpc-v2 through the port named h2c: health SERVING, and the same row answered bit for
    bit as over REST, with the unchanged tritonclient."""
    name = isvc_name()
    with grpc.insecure_channel(predictor.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    features, _ = first_row(name)
    x = np.array([features], dtype=np.float32)
    g_client = grpcclient.InferenceServerClient(predictor.grpc_address)
    h_client = httpclient.InferenceServerClient(predictor.url("").removeprefix("http://"))
    try:
        assert g_client.is_server_ready() and g_client.is_model_ready(name)
        g_in = grpcclient.InferInput("input", list(x.shape), "FP32")
        g_in.set_data_from_numpy(x)
        h_in = httpclient.InferInput("input", list(x.shape), "FP32")
        h_in.set_data_from_numpy(x, binary_data=True)
        g, h = g_client.infer(name, [g_in]), h_client.infer(name, [h_in])
        for output in ("label", "probabilities"):
            assert g.as_numpy(output).shape == h.as_numpy(output).shape
            assert g.as_numpy(output).tobytes() == h.as_numpy(output).tobytes(), output
        assert g.as_numpy("probabilities").shape == (1, 2)
    finally:
        g_client.close()
        h_client.close()


@pytest.mark.needs_metrics
def test_the_prometheus_annotations_point_at_the_metrics(predictor):
    annotations = load("servingruntime.yaml")["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == \
        str(predictor.container_spec["ports"][0]["containerPort"])
    r = requests.get(predictor.url(annotations["prometheus.kserve.io/path"]), timeout=10)
    assert r.status_code == 200
    assert "# TYPE" in r.text


# --- the models come from the storageUri -------------------------------------------------------

def test_the_models_are_the_storage_uri_manifests_not_the_images(tmp_path):
    """The image also carries models and a manifest (its MANIFEST_PATH): a repository at the
    storageUri with one model must serve that one model only."""
    name = isvc_name()
    repository = model_repository(tmp_path / "repository", models={name})
    p = Predictor(repository, name)
    try:
        everything = [m["name"] for m in manifest()["models"]]
        assert len(everything) > 1 and name in everything
        served = {m: requests.get(p.url(f"/v2/models/{m}"), timeout=10).status_code
                  for m in everything}
        assert served == {m: 200 if m == name else 404 for m in everything}
    finally:
        p.c.remove()


def test_a_one_model_repository_is_served_under_the_inference_service_name(tmp_path):
    """--model-name={{.Name}}: the one model of the storageUri is served under the
    InferenceService's name, whatever its manifest calls it."""
    repository = model_repository(tmp_path / "repository", models={"diabetes"})
    p = Predictor(repository, "glucose")
    try:
        metadata = requests.get(p.url("/v2/models/glucose"), timeout=10)
        assert (metadata.status_code, metadata.json()["name"]) == (200, "glucose")
        assert requests.get(p.url("/v2/models/diabetes"), timeout=10).status_code == 404
    finally:
        p.c.remove()
