"""The gRPC Open Inference Protocol with the real, pinned `tritonclient.grpc` (unchanged) against
the real server binary: every training-log row of both bundled models answered bit for bit as
the HTTP V2 route answers it, the typed `contents` fields, bad input refused INVALID_ARGUMENT
with the HTTP route's words, the API key, and `grpc.health.v1` through grpcio's health stub."""

import json
import signal
import socket
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from _server import REPO, Server

MODELS = ("breast-cancer", "diabetes")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
API_KEY = "grpc-test-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GrpcServer:
    """A server with gRPC on a free port, and clients for both protocols."""

    def __init__(self, *args, **server_options):
        self.grpc_address = f"127.0.0.1:{free_port()}"
        self.server = Server("--grpc-port", self.grpc_address.rsplit(":", 1)[1], *args, **server_options)
        self.http = httpclient.InferenceServerClient(self.server.address)
        self.grpc = grpcclient.InferenceServerClient(self.grpc_address)

    def health(self, service=""):
        with grpc.insecure_channel(self.grpc_address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def wait_health(self, status, service="", within=1.0):
        """Health follows readiness within the server's poll interval (grpc::HEALTH_POLL,
        50 ms): wait for `status` up to `within` seconds."""
        deadline = time.monotonic() + within
        while (got := self.health(service)) != status:
            assert time.monotonic() < deadline, (service, got, status)
            time.sleep(0.01)

    def stop(self):
        self.grpc.close()
        self.server.stop()


@pytest.fixture(scope="module", params=["off", "on"], ids=["batching-off", "batching-on"])
def servers(request):
    s = GrpcServer("--batching", request.param)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def entries():
    manifest = json.loads((REPO / "manifest.json").read_text())
    return {m["name"]: m for m in manifest["models"]}


def training_rows(entry):
    log = json.loads((REPO / "models" / entry["name"] / "1" / "training_log.json").read_text())
    return np.array([[row["features"][n] for n in entry["feature_names"]] for row in log["rows"]],
                    dtype=np.float32)


def output_names(entry):
    return list(entry["onnx"]["outputs"][r] for r in
                (("label", "probabilities") if entry["task"] == "classification" else ("value",)))


def infer_both(servers, entry, x, **kwargs):
    """The same rows through both protocols: {output: (grpc array, http array)}."""
    name = entry["onnx"]["input"]
    g_in = grpcclient.InferInput(name, list(x.shape), "FP32")
    g_in.set_data_from_numpy(x)
    h_in = httpclient.InferInput(name, list(x.shape), "FP32")
    h_in.set_data_from_numpy(x, binary_data=True)
    g = servers.grpc.infer(entry["name"], [g_in], **kwargs)
    h = servers.http.infer(entry["name"], [h_in], **kwargs)
    return {out: (g.as_numpy(out), h.as_numpy(out)) for out in output_names(entry)}


def assert_bit_equal(pairs, context):
    for out, (g, h) in pairs.items():
        assert g.dtype == h.dtype and g.shape == h.shape, (context, out, g.dtype, g.shape, h.shape)
        assert g.tobytes() == h.tobytes(), (context, out)


def test_health_and_metadata(servers, entries):
    assert servers.grpc.is_server_live()
    assert servers.grpc.is_server_ready()
    servers.wait_health(SERVING)
    assert servers.health("inference.GRPCInferenceService") == SERVING
    metadata = servers.grpc.get_server_metadata(as_json=True)
    assert metadata["name"] == "ferrum-serve"
    for model in MODELS:
        assert servers.grpc.is_model_ready(model)
        assert servers.grpc.is_model_ready(model, "1")
        g = servers.grpc.get_model_metadata(model, "1", as_json=True)
        h = servers.http.get_model_metadata(model, "1")
        assert g["name"] == h["name"] == model
        assert g["versions"] == h["versions"] == ["1"]
        assert g["platform"] == h["platform"]
        # protobuf's JSON writes int64 as strings.
        for part in ("inputs", "outputs"):
            assert [{**t, "shape": [int(d) for d in t["shape"]]} for t in g[part]] == h[part]
    assert h["inputs"][0]["shape"] == [-1, len(entries["diabetes"]["feature_names"])]


@pytest.mark.parametrize("model", MODELS)
def test_every_training_log_row_equals_the_http_answer(servers, entries, model):
    entry = entries[model]
    x = training_rows(entry)
    pairs = infer_both(servers, entry, x, model_version="1")
    assert len(pairs[output_names(entry)[0]][0]) == len(x)
    assert_bit_equal(pairs, (model, "all rows"))
    for i in range(len(x)):
        assert_bit_equal(infer_both(servers, entry, x[i:i + 1]), (model, i))


def test_request_id_version_and_requested_outputs(servers, entries):
    entry = entries["breast-cancer"]
    x = training_rows(entry)[:3]
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = servers.grpc.infer("breast-cancer", [tensor], request_id="req-7",
                                outputs=[grpcclient.InferRequestedOutput("probabilities")])
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == \
        ("req-7", "breast-cancer", "1")
    assert [o.name for o in response.outputs] == ["probabilities"]
    assert result.as_numpy("probabilities").shape == (3, 2)


def test_typed_contents_are_answered_in_contents(servers, entries):
    """A client that sends `contents` (as KServe's does) is answered in `contents`, with the
    values the raw path gives."""
    entry = entries["diabetes"]
    x = training_rows(entry)[:5]
    request = service_pb2.ModelInferRequest(model_name="diabetes")
    tensor = request.inputs.add(name=entry["onnx"]["input"], datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    with grpc.insecure_channel(servers.grpc_address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert len(response.raw_output_contents) == 0
    (output,) = response.outputs
    assert (output.datatype, list(output.shape)) == ("FP32", [5, 1])
    got = np.array(output.contents.fp32_contents, dtype=np.float32).reshape(5, 1)
    want = infer_both(servers, entry, x)[output.name][1]
    assert got.tobytes() == want.tobytes()


def grpc_error(servers, model, tensors, **kwargs):
    with pytest.raises(InferenceServerException) as error:
        servers.grpc.infer(model, tensors, **kwargs)
    return error.value


def http_error(servers, model, tensors, **kwargs):
    with pytest.raises(InferenceServerException) as error:
        servers.http.infer(model, tensors, **kwargs)
    return error.value


def both_inputs(name, array, datatype="FP32"):
    g = grpcclient.InferInput(name, list(array.shape), datatype)
    g.set_data_from_numpy(array)
    h = httpclient.InferInput(name, list(array.shape), datatype)
    h.set_data_from_numpy(array, binary_data=True)
    return g, h


@pytest.mark.parametrize("case", [
    "wrong shape", "wrong datatype", "unknown input", "not finite", "too many rows",
    "two inputs", "unknown output", "unknown model", "unknown version"])
def test_bad_input_gets_the_http_words(servers, case):
    model, kwargs = "breast-cancer", {}
    rows = np.zeros((1, 30), dtype=np.float32)
    inputs = [both_inputs("input", rows)]
    if case == "wrong shape":
        inputs = [both_inputs("input", np.zeros((1, 10), dtype=np.float32))]
    elif case == "wrong datatype":
        inputs = [both_inputs("input", rows.astype(np.float64), "FP64")]
    elif case == "unknown input":
        inputs = [both_inputs("features", rows)]
    elif case == "not finite":
        bad = rows.copy()
        bad[0, 3] = np.nan
        inputs = [both_inputs("input", bad)]
    elif case == "too many rows":
        inputs = [both_inputs("input", np.zeros((1025, 30), dtype=np.float32))]
    elif case == "two inputs":
        inputs = [both_inputs("input", rows), both_inputs("other", rows)]
    elif case == "unknown output":
        model = "diabetes"
        inputs = [both_inputs("input", np.zeros((1, 10), dtype=np.float32))]
    elif case == "unknown model":
        model = "no-such-model"
    elif case == "unknown version":
        kwargs = {"model_version": "9"}
    g_kwargs, h_kwargs = dict(kwargs), dict(kwargs)
    if case == "unknown output":
        g_kwargs["outputs"] = [grpcclient.InferRequestedOutput("label")]
        h_kwargs["outputs"] = [httpclient.InferRequestedOutput("label")]
    g = grpc_error(servers, model, [i[0] for i in inputs], **g_kwargs)
    h = http_error(servers, model, [i[1] for i in inputs], **h_kwargs)
    expected = "StatusCode.NOT_FOUND" if case.startswith("unknown model") or \
        case == "unknown version" else "StatusCode.INVALID_ARGUMENT"
    assert g.status() == expected, (case, g.status(), g.message())
    assert g.message() == h.message(), case


def test_api_key_is_required_for_inference_only():
    s = GrpcServer("--api-key", API_KEY)
    try:
        x = np.zeros((1, 10), dtype=np.float32)
        tensor = grpcclient.InferInput("input", [1, 10], "FP32")
        tensor.set_data_from_numpy(x)
        error = grpc_error(s, "diabetes", [tensor])
        assert error.status() == "StatusCode.UNAUTHENTICATED"
        assert error.message() == \
            "unauthorized: send the API key as 'Authorization: Bearer <key>'"
        error = grpc_error(s, "diabetes", [tensor], headers={"authorization": "Bearer nope"})
        assert error.status() == "StatusCode.UNAUTHENTICATED"
        assert error.message() == "unauthorized: the API key is not valid"
        result = s.grpc.infer("diabetes", [tensor], headers={"authorization": f"Bearer {API_KEY}"})
        assert result.as_numpy("variable").shape == (1, 1)
        # Health and metadata stay open, as on HTTP.
        assert s.grpc.is_server_ready() and s.grpc.is_model_ready("diabetes")
        assert s.grpc.get_model_metadata("diabetes").name == "diabetes"
        s.wait_health(SERVING)
    finally:
        s.stop()


def test_health_turns_not_serving_when_shutdown_begins():
    s = GrpcServer("--shutdown-drain-ms", "3000")
    try:
        s.wait_health(SERVING)
        s.server.proc.send_signal(signal.SIGTERM)
        s.wait_health(NOT_SERVING)
        assert s.health("inference.GRPCInferenceService") == NOT_SERVING
        assert not s.grpc.is_server_ready()
        assert s.grpc.is_server_live()
        error = grpc_error(s, "diabetes", [both_inputs("input", np.zeros((1, 10), np.float32))[0]])
        assert error.status() == "StatusCode.UNAVAILABLE"
        assert error.message() == "the server is shutting down"
        assert s.server.proc.wait(15) == 0
    finally:
        s.stop()
