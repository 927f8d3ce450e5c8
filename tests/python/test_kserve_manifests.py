"""The KServe manifests (k8s/kserve/) against the CRD schemas of KServe v0.20.0 kept in
k8s/kserve/crds/, checked as the API server checks a create with strict field validation:
apiVersion and kind must be a kept CRD version, every field must be one the schema declares
(unknown and misspelt fields are errors, not silently pruned), and types, enums and minimums
hold. Then what KServe's webhook and controller rely on between the two objects, and the
core-API credentials example against Kubernetes 1.31. No cluster and no Docker: the runtime's
container is run the KServe way in tests/python/containers/test_kserve.py.
"""

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KSERVE = REPO / "k8s" / "kserve"
CRDS = KSERVE / "crds"
KSERVE_TAG = "v0.20.0"
KSERVE_COMMIT = "1fb781055dd1567164358233e1125142ca6ef1fe"
VENV_BIN = Path(sys.executable).parent
# What KServe itself uses: constants.DefaultModelLocalMountPath, the predictor container name,
# and the name rule of an InferenceService (a DNS-1035 label: it becomes a Service name).
MODEL_MOUNT = "/mnt/models"
CONTAINER = "kserve-container"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# --- the kept schemas, made strict ------------------------------------------------------------

def kept_crds():
    """{(apiVersion, kind): kept file}: one per CRD version in k8s/kserve/crds/."""
    crds = {}
    for path in sorted(CRDS.glob("*.json")):
        crd = json.loads(path.read_text())
        crds[(crd["apiVersion"], crd["kind"])] = crd
    return crds


def strict(schema):
    """The schema with unknown fields refused: CRD schemas allow any field unless told
    otherwise, while the API server prunes (or, with fieldValidation=Strict, rejects) every field
    a structural schema does not declare, except under x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict(s) for name, s in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = strict(value)
        else:
            out[key] = value
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


# ObjectMeta as a manifest may set it (the CRD schemas leave `metadata` to the API server).
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 63, "pattern": DNS_1035.pattern},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("int32")
def int32(value):
    return not isinstance(value, int) or -2**31 <= value < 2**31


@FORMATS.checks("int64")
def int64(value):
    return not isinstance(value, int) or -2**63 <= value < 2**63


def validator(crd):
    schema = strict(crd["openAPIV3Schema"])
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return jsonschema.Draft4Validator(schema, format_checker=FORMATS)


VALIDATORS = {key: validator(crd) for key, crd in kept_crds().items()}


def problems(doc):
    """Every reason the API server would refuse `doc`, as "path: message"; [] when none."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in VALIDATORS:
        return [f"no kept CRD serves {key[1]} in {key[0]} (have {sorted(VALIDATORS)})"]
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(VALIDATORS[key].iter_errors(doc), key=lambda e: list(e.path))]


def manifests():
    """{kind: document} of the KServe objects in k8s/kserve/*.yaml."""
    docs = {}
    for path in sorted(KSERVE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["apiVersion"].startswith("serving.kserve.io/"):
                docs[doc["kind"]] = doc
    return docs


def runtime():
    return manifests()["ServingRuntime"]


def isvc():
    return manifests()["InferenceService"]


def kserve_container():
    (container,) = runtime()["spec"]["containers"]
    return container


# --- the schemas themselves ------------------------------------------------------------------

def test_kept_schemas_are_kserve_v0_20_0_schemas_only():
    crds = kept_crds()
    assert set(crds) == {("serving.kserve.io/v1alpha1", "ServingRuntime"),
                         ("serving.kserve.io/v1beta1", "InferenceService")}
    readme = (CRDS / "README.md").read_text()
    assert KSERVE_TAG in readme and KSERVE_COMMIT in readme and "Apache-2.0" in readme
    for crd in crds.values():
        assert set(crd) == {"source", "apiVersion", "kind", "scope", "openAPIV3Schema"}
        assert crd["source"]["tag"] == KSERVE_TAG and crd["source"]["commit"] == KSERVE_COMMIT
        assert crd["scope"] == "Namespaced"
        # The full schema, not the `minimal` CRDs' spec that preserves unknown fields.
        spec = crd["openAPIV3Schema"]["properties"]["spec"]
        assert "properties" in spec and not spec.get("x-kubernetes-preserve-unknown-fields")


def test_strict_schema_refuses_what_kserve_schemas_would_let_through():
    """The control for `strict`: the CRD schema as published accepts an unknown field, the
    strict one does not, and a field that preserves unknown fields keeps doing so."""
    crd = kept_crds()[("serving.kserve.io/v1alpha1", "ServingRuntime")]
    doc = copy.deepcopy(runtime())
    doc["spec"]["protocolVersion"] = ["v2"]
    assert list(jsonschema.Draft4Validator(crd["openAPIV3Schema"]).iter_errors(doc)) == []
    assert problems(doc) == ["spec: Additional properties are not allowed "
                             "('protocolVersion' was unexpected)"]
    preserving = strict({"type": "object", "properties": {"a": {"type": "string"}},
                         "x-kubernetes-preserve-unknown-fields": True})
    assert "additionalProperties" not in preserving


# --- the manifests ---------------------------------------------------------------------------

def test_every_kserve_manifest_validates_strictly_against_the_kept_schemas():
    docs = manifests()
    assert {(kind, d["metadata"]["name"]) for kind, d in docs.items()} == \
        {("ServingRuntime", "ferrum-serve"), ("InferenceService", "breast-cancer")}
    for kind, doc in docs.items():
        assert problems(doc) == [], kind


def mutated(kind, change):
    doc = copy.deepcopy(manifests()[kind])
    change(doc)
    return doc


def rename(mapping, old, new):
    mapping[new] = mapping.pop(old)


BROKEN = {
    "runtime: protocolVersions misspelt": (
        "ServingRuntime", lambda d: rename(d["spec"], "protocolVersions", "protocolVersion"),
        "spec: Additional properties are not allowed ('protocolVersion' was unexpected)"),
    "runtime: a misspelt field deep in the container": (
        "ServingRuntime",
        lambda d: rename(d["spec"]["containers"][0]["securityContext"],
                         "readOnlyRootFilesystem", "readOnlyRootFileSystem"),
        "spec.containers.0.securityContext: Additional properties are not allowed "
        "('readOnlyRootFileSystem' was unexpected)"),
    "runtime: autoSelect as a string": (
        "ServingRuntime",
        lambda d: d["spec"]["supportedModelFormats"][0].update(autoSelect="true"),
        "spec.supportedModelFormats.0.autoSelect: 'true' is not of type 'boolean'"),
    "runtime: priority below KServe's minimum": (
        "ServingRuntime", lambda d: d["spec"]["supportedModelFormats"][0].update(priority=0),
        "spec.supportedModelFormats.0.priority: 0 is less than the minimum of 1"),
    "runtime: a port beyond int32": (
        "ServingRuntime",
        lambda d: d["spec"]["containers"][0]["ports"][0].update(containerPort=2**31),
        "spec.containers.0.ports.0.containerPort: 2147483648 is not a 'int32'"),
    "runtime: no containers": (
        "ServingRuntime", lambda d: d["spec"].pop("containers"),
        "spec: 'containers' is a required property"),
    "isvc: storageUri misspelt": (
        "InferenceService",
        lambda d: rename(d["spec"]["predictor"]["model"], "storageUri", "storageURI"),
        "spec.predictor.model: Additional properties are not allowed "
        "('storageURI' was unexpected)"),
    "isvc: minReplicas as a string": (
        "InferenceService", lambda d: d["spec"]["predictor"].update(minReplicas="2"),
        "spec.predictor.minReplicas: '2' is not of type 'integer'"),
    "isvc: scaleMetric not one of KServe's": (
        "InferenceService", lambda d: d["spec"]["predictor"].update(scaleMetric="latency"),
        "spec.predictor.scaleMetric: 'latency' is not one of "
        "['cpu', 'memory', 'concurrency', 'rps']"),
    "isvc: modelFormat without a name": (
        "InferenceService", lambda d: d["spec"]["predictor"]["model"]["modelFormat"].pop("name"),
        "spec.predictor.model.modelFormat: 'name' is a required property"),
    "isvc: a name that cannot be a Service name": (
        "InferenceService", lambda d: d["metadata"].update(name="Breast_Cancer"),
        "metadata.name: 'Breast_Cancer' does not match '^[a-z]([-a-z0-9]*[a-z0-9])?$'"),
    "isvc: an unknown metadata field": (
        "InferenceService", lambda d: d["metadata"].update(label={"a": "b"}),
        "metadata: Additional properties are not allowed ('label' was unexpected)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_is_refused_with_the_reason(case):
    kind, change, reason = BROKEN[case]
    assert problems(mutated(kind, change)) == [reason]


@pytest.mark.parametrize("api_version, kind", [
    ("serving.kserve.io/v1alpha1", "InferenceService"),   # a version the CRD does not serve
    ("serving.kserve.io/v1beta1", "ServingRuntime"),
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),  # no schema kept for it
])
def test_an_api_version_or_kind_without_a_kept_crd_is_refused(api_version, kind):
    doc = {**runtime(), "apiVersion": api_version, "kind": kind}
    (reason,) = problems(doc)
    assert reason.startswith(f"no kept CRD serves {kind} in {api_version}")


# --- what KServe relies on between them ------------------------------------------------------

def test_the_inference_service_selects_this_runtime_as_kserve_does():
    """KServe's webhook accepts a named runtime only if it supports the model's format (name
    and version) and protocol, and runs the predictor from the runtime's kserve-container."""
    model = isvc()["spec"]["predictor"]["model"]
    spec = runtime()["spec"]
    assert model["runtime"] == runtime()["metadata"]["name"] == "ferrum-serve"
    assert {"name": model["modelFormat"]["name"], "version": model["modelFormat"]["version"]} \
        in [{"name": f["name"], "version": f["version"]} for f in spec["supportedModelFormats"]]
    assert model["modelFormat"]["name"] == "onnx"
    assert model["protocolVersion"] == "v2"
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    assert [f["autoSelect"] for f in spec["supportedModelFormats"]] == [True]
    assert [c["name"] for c in spec["containers"]] == [CONTAINER]
    assert model["storageUri"].startswith("s3://")
    assert isvc()["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"


def flag(args, name):
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


def test_the_runtime_follows_kserve_conventions_for_ports_and_models():
    container = kserve_container()
    args = container["args"]
    assert "command" not in container, "the image's entrypoint, ferrum-serve, is the server"
    assert flag(args, "models-dir") == MODEL_MOUNT
    # The image's MANIFEST_PATH names its baked manifest: the storageUri's must be named here.
    assert flag(args, "manifest") == f"{MODEL_MOUNT}/manifest.json"
    assert 'MANIFEST_PATH=/srv/ferrum/manifest.json' in (REPO / "Dockerfile").read_text()
    # The first port is the predictor Service's port 80 (REST); `h2c` marks gRPC.
    assert container["ports"] == [
        {"name": "http1", "containerPort": int(flag(args, "port")), "protocol": "TCP"},
        {"name": "h2c", "containerPort": int(flag(args, "grpc-port")), "protocol": "TCP"}]
    assert (int(flag(args, "port")), int(flag(args, "grpc-port"))) == (8080, 8081)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == 8080
        assert container[probe]["httpGet"]["path"].startswith("/v2/health/")
    assert runtime()["spec"]["annotations"] == {"prometheus.kserve.io/port": "8080",
                                                "prometheus.kserve.io/path": "/metrics"}


def test_the_inference_service_name_is_passed_as_the_model_name():
    """KServe fills {{.Name}} in a runtime's args with the InferenceService's name; the runtime
    passes it as --model-name, the only template it uses. A repository of one model is served
    under that name; one of several (this repository's, in the tests) must have a model of
    that name, so the example is named after one."""
    (container,) = runtime()["spec"]["containers"]
    assert flag(container["args"], "model-name") == "{{.Name}}"
    templated = [a for a in container["args"] if "{{" in a]
    assert templated == ["--model-name={{.Name}}"], templated
    assert "{{" not in json.dumps({k: v for k, v in container.items() if k != "args"})
    manifest = json.loads((REPO / "manifest.json").read_text())
    assert len(manifest["models"]) > 1
    assert isvc()["metadata"]["name"] in [m["name"] for m in manifest["models"]]


def test_runtime_security_and_resources_match_the_plain_deployment():
    """A ServingRuntime has no pod securityContext: the plain Deployment's pod and container
    settings are all on the container, with the same user, image and resources."""
    api = yaml.safe_load((REPO / "k8s" / "api-deployment.yaml").read_text())
    pod = api["spec"]["template"]["spec"]
    (plain,) = pod["containers"]
    container = kserve_container()
    sc = container["securityContext"]
    assert sc == {**plain["securityContext"],
                  "runAsUser": pod["securityContext"]["runAsUser"],
                  "runAsGroup": pod["securityContext"]["runAsGroup"],
                  "seccompProfile": pod["securityContext"]["seccompProfile"],
                  "privileged": False}
    assert container["image"] == plain["image"]
    assert container["resources"] == plain["resources"]


def test_shutdown_fits_in_the_predictor_grace_period():
    env = {e["name"]: e["value"] for e in kserve_container()["env"]}
    shutdown_ms = int(env["SHUTDOWN_DRAIN_MS"]) + int(env["SHUTDOWN_GRACE_MS"])
    assert shutdown_ms < isvc()["spec"]["predictor"]["terminationGracePeriodSeconds"] * 1000


def test_stable_image_tag_script_moves_the_runtime(tmp_path):
    copy_dir = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", copy_dir)
    script = REPO / "scripts" / "k8s-set-image-tags.sh"
    subprocess.run([str(script), "abcdef1", str(copy_dir)], check=True, capture_output=True)
    moved = yaml.safe_load((copy_dir / "kserve" / "servingruntime.yaml").read_text())
    assert moved["spec"]["containers"][0]["image"] == "ferrum-serve:abcdef1"
    subprocess.run([str(script), "--canary", "abcdef2", str(copy_dir)], check=True,
                   capture_output=True)
    kept = yaml.safe_load((copy_dir / "kserve" / "servingruntime.yaml").read_text())
    assert kept["spec"]["containers"][0]["image"] == "ferrum-serve:abcdef1", "canary untouched"


# --- the core-API credentials example ----------------------------------------------------------

CREDENTIALS = KSERVE / "storage-credentials.example.yaml"


def test_credentials_example_validates_strictly_against_kubernetes_1_31():
    result = subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict", "-k", "1.31",
                             str(CREDENTIALS)], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert len(re.findall(r"passed for resource", output)) == 2


def test_credentials_example_is_what_kserve_reads_for_the_storage_initializer():
    """KServe follows the predictor's ServiceAccount to the Secrets it lists, and takes S3 keys
    from the data keys of its default `credentials.s3` config."""
    docs = {d["kind"]: d for d in yaml.safe_load_all(CREDENTIALS.read_text())}
    account, secret = docs["ServiceAccount"], docs["Secret"]
    assert isvc()["spec"]["predictor"]["serviceAccountName"] == account["metadata"]["name"]
    assert {"name": secret["metadata"]["name"]} in account["secrets"]
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "serving.kserve.io/s3-endpoint" in secret["metadata"]["annotations"]
