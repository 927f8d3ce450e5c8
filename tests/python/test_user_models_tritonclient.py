"""The rows-form models users bring (issue #13), exported with the pinned converters' defaults
by tests/python/user_models/build.py (a ZipMap LogisticRegression, StandardScaler→RandomForest,
LightGBM and XGBoost through onnxmltools), served from a bare repository (`--manifest none`)
and after `models add`, through the real, unchanged tritonclient: tritonclient.http with binary data on and off, and
tritonclient.grpc, get onnxruntime Python's outputs for the 32 reference rows bit for bit (the
class index the label output gives, the probabilities in the graph's label order, a
regressor's value). tests/user_models.rs checks the same answers over plain HTTP and after
`models add`; tests/python/test_typed_tritonclient.py the models served as named tensors."""

import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from _server import REPO
from test_grpc import GrpcServer

ROWS_FORM = ("logreg-zipmap", "scaled-forest", "lightgbm", "xgboost")


@pytest.fixture(scope="module", params=["bare repository", "after models add"])
def served(request):
    """The fixtures (built once into $FERRUM_CACHE), and a server with gRPC over the rows-form
    ones: a bare repository of them, or a repository `ferrum-serve models add` wrote (with
    feature and class names). One session and one call per request, so the 32 rows run
    together as onnxruntime Python ran them."""
    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryDirectory() as repo:
        cache = os.environ.get("FERRUM_CACHE") or scratch
        built = Path(subprocess.run(
            [sys.executable, str(REPO / "tests/python/user_models/build.py"), "--cached", cache],
            check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        if request.param == "bare repository":
            for name in ROWS_FORM:
                os.symlink(built / name, Path(repo) / name)
            manifest = "none"
        else:
            manifest = str(Path(repo) / "manifest.json")
            for name in ROWS_FORM:
                models_add(built, name, Path(repo) / "models", manifest)
            repo = str(Path(repo) / "models")
        server = GrpcServer("--sessions-per-model", "1", "--batching", "off",
                            models_dir=repo, manifest=manifest)
        try:
            yield built, server
        finally:
            server.stop()


def models_add(built, name, models_dir, manifest):
    """`ferrum-serve models add` of fixture `name` with its feature names, class names of our
    own (the graph's labels prefixed) and background."""
    with open(built / name / "reference.csv") as f:
        header = next(csv.reader(f))
    fixture = fixture_of(built, name)
    command = [os.environ.get("FERRUM_SERVE_BIN", str(REPO / "target/debug/ferrum-serve")),
               "models", "add", str(built / name / "1" / "model.onnx"),
               "--models-dir", str(models_dir), "--manifest", manifest, "--name", name,
               "--feature-names", ",".join(header),
               "--background", str(built / name / "background.csv")]
    if fixture["class_labels"]:
        command += ["--class-labels", ",".join(f"class_{c}" for c in fixture["class_labels"])]
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", str(REPO / ".ort/libonnxruntime.so"))
    subprocess.run(command, check=True, capture_output=True, env=env)


def fixture_of(built, name):
    fixtures = json.loads((built / "fixtures.json").read_text())
    (fixture,) = [m for m in fixtures["models"] if m["name"] == name]
    return fixture


def reference_rows(built, name):
    """The reference rows, parsed as float64 and narrowed to float32 (the references' bits)."""
    with open(built / name / "reference.csv") as f:
        rows = list(csv.reader(f))[1:]
    return np.array([[float(v) for v in row] for row in rows], dtype=np.float64).astype(np.float32)


def expected_outputs(built, name):
    """onnxruntime Python's answer on the 32 rows in one run, as V2 serves a rows-form model:
    the label output's class indices and the probabilities [rows, classes] in the graph's
    label order (from the ZipMap pairs), or the regression values [rows, 1]."""
    fixture = fixture_of(built, name)
    recorded = json.loads((built / name / "expected.json").read_text())["outputs"]
    outputs = [recorded[o["name"]] for o in fixture["outputs"]]
    if fixture["task"] == "regression":
        values = np.array(outputs[0]["values"], dtype=np.float64).astype(np.float32)
        return [values.reshape(-1, 1)]
    labels = fixture["class_labels"]
    assert labels == list(range(len(labels))), "V2 labels are class indices: 0..C-1 here"
    label = np.array(outputs[0]["values"], dtype=np.int64)
    probabilities = np.array(
        [[dict((k, p) for k, p in row)[c] for c in labels] for row in outputs[1]["values"]],
        dtype=np.float64).astype(np.float32)
    return [label, probabilities]


@pytest.mark.parametrize("name", ROWS_FORM)
def test_tritonclient_gets_onnxruntimes_bits(served, name):
    built, server = served
    x = reference_rows(built, name)
    want = expected_outputs(built, name)
    metadata = server.http.get_model_metadata(name)
    (input_meta,) = metadata["inputs"]
    assert (input_meta["datatype"], input_meta["shape"]) == ("FP32", [-1, x.shape[1]])
    output_names = [o["name"] for o in metadata["outputs"]]
    assert len(output_names) == len(want), metadata
    answers = {}
    for binary in (False, True):
        i = httpclient.InferInput(input_meta["name"], list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=binary)
        requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in output_names]
        answers[f"http binary={binary}"] = server.http.infer(name, [i], outputs=requested)
    g = grpcclient.InferInput(input_meta["name"], list(x.shape), "FP32")
    g.set_data_from_numpy(x)
    answers["grpc"] = server.grpc.infer(name, [g])
    for how, answer in answers.items():
        for output, expected in zip(output_names, want):
            got = answer.as_numpy(output)
            assert got.dtype == expected.dtype, (name, how, output, got.dtype)
            assert got.shape == expected.shape, (name, how, output, got.shape)
            assert got.tobytes() == expected.tobytes(), (name, how, output)
