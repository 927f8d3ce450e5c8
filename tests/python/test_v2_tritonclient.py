"""The V2 protocol with the real, pinned `tritonclient[http]` against the real server binary:
health, metadata, and inference on every training-log row of both models, with binary tensor
data on (the client's default) and off, equal to the training log."""

import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from _server import REPO, Server

MODELS = ("breast-cancer", "diabetes")


@pytest.fixture(scope="module", params=["off", "on"], ids=["batching-off", "batching-on"])
def client(request):
    server = Server("--batching", request.param)
    try:
        yield httpclient.InferenceServerClient(server.address)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def entries():
    manifest = json.loads((REPO / "manifest.json").read_text())
    return {m["name"]: m for m in manifest["models"]}


def training_log(model):
    return json.loads((REPO / "models" / model / "1" / "training_log.json").read_text())["rows"]


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    for model in MODELS:
        assert client.is_model_ready(model)
        assert client.is_model_ready(model, "1")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "ferrum-serve"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata(client, entries):
    for model in MODELS:
        entry = entries[model]
        metadata = client.get_model_metadata(model, "1")
        assert metadata["name"] == model
        assert metadata["versions"] == ["1"]
        assert metadata["inputs"] == [
            {"name": entry["onnx"]["input"], "datatype": "FP32",
             "shape": [-1, len(entry["feature_names"])]}]
        assert metadata["parameters"]["feature_names"] == entry["feature_names"]
    outputs = client.get_model_metadata("breast-cancer")["outputs"]
    assert outputs == [{"name": "label", "datatype": "INT64", "shape": [-1]},
                       {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    outputs = client.get_model_metadata("diabetes")["outputs"]
    assert outputs == [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}]


def check_against_log(model, entry, result, log):
    if entry["task"] == "classification":
        labels = result.as_numpy("label")
        probabilities = result.as_numpy("probabilities")
        assert labels.shape == (len(log),)
        assert probabilities.shape == (len(log), len(entry["class_labels"]))
        for i, row in enumerate(log):
            assert entry["class_labels"][labels[i]] == row["prediction"]["label"], (model, i)
            for c, name in enumerate(entry["class_labels"]):
                want = row["prediction"]["probabilities"][name]
                assert abs(float(probabilities[i, c]) - want) <= 1e-6, (model, i, name)
    else:
        values = result.as_numpy(entry["onnx"]["outputs"]["value"])
        assert values.shape == (len(log), 1)
        for i, row in enumerate(log):
            want = row["prediction"]["value"]
            assert abs(float(values[i, 0]) - want) <= 1e-6 * max(1.0, abs(want)), (model, i)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", MODELS)
def test_infer_reproduces_the_training_log(client, entries, model, binary):
    entry = entries[model]
    log = training_log(model)
    x = np.array([[row["features"][n] for n in entry["feature_names"]] for row in log],
                 dtype=np.float32)
    tensor = httpclient.InferInput(entry["onnx"]["input"], list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    names = [m["name"] for m in client.get_model_metadata(model)["outputs"]]
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
    result = client.infer(model, [tensor], outputs=outputs, request_id=f"log-{model}")
    assert result.get_response()["id"] == f"log-{model}"
    assert result.get_response()["model_name"] == model
    check_against_log(model, entry, result, log)
    # The client's defaults: binary input, no outputs named (all outputs, binary).
    tensor = httpclient.InferInput(entry["onnx"]["input"], list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    check_against_log(model, entry, client.infer(model, [tensor], model_version="1"), log)
    # One row at a time (the shape of an online client).
    for i in range(0, len(log), 7):
        one = httpclient.InferInput(entry["onnx"]["input"], [1, x.shape[1]], "FP32")
        one.set_data_from_numpy(x[i:i + 1], binary_data=binary)
        check_against_log(model, entry, client.infer(model, [one], outputs=outputs), log[i:i + 1])


def test_errors_reach_the_client_as_exceptions(client, entries):
    x = np.zeros((1, 10), dtype=np.float32)
    tensor = httpclient.InferInput("input", [1, 10], "FP32")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as error:
        client.infer("no-such-model", [tensor])
    assert error.value.status() == "404"
    assert "no-such-model" in error.value.message()
    wrong = httpclient.InferInput("input", [1, 10], "FP32")
    wrong.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as error:
        client.infer("breast-cancer", [wrong])
    assert error.value.status() == "422"
    assert "[rows >= 1, 30]" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        client.infer("diabetes", [tensor], outputs=[httpclient.InferRequestedOutput("label")])
    assert "unknown output 'label'" in error.value.message()
