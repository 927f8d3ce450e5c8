"""Models served as named tensors (issue #13), with the real, pinned tritonclient unchanged:
tests/typed_models/build.py exports them (float64, int64, a 4-input ColumnTransformer with a
string column, a CNN, a fixed batch, every element type) and records onnxruntime Python's
outputs; served from a bare repository and after `models add`, tritonclient.http (binary
data on and off) and tritonclient.grpc must get those outputs bit for bit, and gRPC must refuse
a bad input with the HTTP route's words."""

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
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from _server import REPO
from test_grpc import GrpcServer

# The rows-form models of the fixtures answer V2 with class indices (tests/user_models.rs).
TENSORS_MODELS = ("cnn", "column-transformer", "every-type", "fixed-batch", "float64", "int64")


@pytest.fixture(scope="module", params=["bare repository", "after models add"])
def typed(request):
    """The fixtures built into a temporary folder, and a server (gRPC on) over the tensors
    models: a bare repository of them, or the repository `ferrum-serve models add` wrote."""
    with tempfile.TemporaryDirectory() as built, tempfile.TemporaryDirectory() as repo:
        subprocess.run([sys.executable, str(REPO / "tests/typed_models/build.py"), built], check=True)
        manifest = "none"
        if request.param == "bare repository":
            for name in TENSORS_MODELS:
                os.makedirs(Path(repo) / name)
                os.symlink(Path(built) / name / "1", Path(repo) / name / "1")
        else:
            manifest = str(Path(repo) / "manifest.json")
            binary = os.environ.get("FERRUM_SERVE_BIN", str(REPO / "target/debug/ferrum-serve"))
            env = dict(os.environ)
            env.setdefault("ORT_DYLIB_PATH", str(REPO / ".ort/libonnxruntime.so"))
            for name in TENSORS_MODELS:
                subprocess.run([binary, "models", "add", str(Path(built) / name / "1" / "model.onnx"),
                                "--models-dir", str(Path(repo) / "models"), "--manifest", manifest,
                                "--name", name], check=True, capture_output=True, env=env)
            repo = str(Path(repo) / "models")
        server = GrpcServer(models_dir=repo, manifest=manifest)
        try:
            yield Path(built), server
        finally:
            server.stop()


def recorded(tensor):
    """A recorded tensor as numpy, exactly: from its little-endian bytes, or its strings."""
    if tensor["datatype"] == "BYTES":
        return np.array([s.encode() for s in tensor["strings"]], dtype=np.object_).reshape(tensor["shape"])
    dtype = np.dtype(triton_to_np_dtype(tensor["datatype"])).newbyteorder("<")
    return np.frombuffer(bytes.fromhex(tensor["hex"]), dtype=dtype).reshape(tensor["shape"])


def same_bits(got, want, context):
    assert got.shape == want.shape, context
    if want.dtype == np.object_:
        assert [g if isinstance(g, bytes) else g.encode() for g in got.ravel()] == list(want.ravel()), context
    else:
        assert got.dtype == want.dtype, context
        assert got.tobytes() == want.astype(want.dtype.newbyteorder("=")).tobytes(), context


def has_non_finite(case):
    return any(
        np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()
        for a in (recorded(t) for t in case["inputs"].values())
    )


@pytest.mark.parametrize("name", TENSORS_MODELS)
@pytest.mark.parametrize("protocol", ["http-json", "http-binary", "grpc"])
def test_outputs_equal_onnxruntime_bit_for_bit(typed, name, protocol):
    built, server = typed
    case = json.loads((built / name / "case.json").read_text())
    binary = protocol != "http-json"
    client, module = (server.grpc, grpcclient) if protocol == "grpc" else (server.http, httpclient)
    inputs = []
    for input_name, tensor in case["inputs"].items():
        values = recorded(tensor)
        infer_input = module.InferInput(input_name, list(values.shape), tensor["datatype"])
        if protocol == "grpc":
            infer_input.set_data_from_numpy(values)
        else:
            infer_input.set_data_from_numpy(values, binary_data=binary)
        inputs.append(infer_input)
    if protocol == "grpc":
        outputs = [grpcclient.InferRequestedOutput(n) for n in case["outputs"]]
    else:
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in case["outputs"]]
    if protocol == "http-json" and has_non_finite(case):
        # JSON has no NaN or infinity (the binary and gRPC cases carry them): refused whole.
        with pytest.raises(InferenceServerException) as refused:
            client.infer(name, inputs, outputs=outputs)
        assert "invalid JSON body" in refused.value.message(), refused.value.message()
        return
    result = client.infer(name, inputs, outputs=outputs)
    for output_name, want in case["outputs"].items():
        same_bits(result.as_numpy(output_name), recorded(want), f"{name} {protocol} '{output_name}'")


def test_grpc_metadata_is_the_signature(typed):
    _, server = typed
    metadata = server.grpc.get_model_metadata("column-transformer", as_json=True)
    assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [
        ("city", "BYTES", ["-1", "1"]),
        ("x1", "FP32", ["-1", "1"]),
        ("x2", "FP32", ["-1", "1"]),
        ("x3", "FP32", ["-1", "1"]),
    ]


def test_grpc_refuses_a_bad_input_with_the_http_words(typed):
    _, server = typed
    values = np.zeros((1, 3), dtype=np.float32)
    grpc_input = grpcclient.InferInput("counts", [1, 3], "FP32")
    grpc_input.set_data_from_numpy(values)
    with pytest.raises(InferenceServerException) as grpc_error:
        server.grpc.infer("int64", [grpc_input])
    http_input = httpclient.InferInput("counts", [1, 3], "FP32")
    http_input.set_data_from_numpy(values, binary_data=True)
    with pytest.raises(InferenceServerException) as http_error:
        server.http.infer("int64", [http_input])
    assert "StatusCode.INVALID_ARGUMENT" in str(grpc_error.value.status())
    assert "int64" in grpc_error.value.message() or "INT64" in grpc_error.value.message()
    assert grpc_error.value.message() == http_error.value.message()
