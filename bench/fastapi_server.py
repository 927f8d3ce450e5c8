"""The benchmark's reference Python server: FastAPI + uvicorn + onnxruntime serving the same
model.onnx files with the same JSON schema as ferrum-serve, written the way a careful Python
service would be (pydantic request model, numpy matrix in feature order, one session per worker
with one intra-op thread, access log off).

Routes (the same paths and bodies as ferrum-serve):
  POST /models/{name}/predict   {"instances": [{feature: value, ...} | [v, ...], ...]}
  POST /v2/models/{name}/infer  V2 JSON, or JSON header + binary tensors (Triton's extension)
  GET  /health/ready

Run:  python bench/fastapi_server.py --port 8000 --workers 2

With --workers N uvicorn creates the listening socket without IPPROTO_TCP, so asyncio never sets
TCP_NODELAY on accepted connections and every response waits ~40 ms on Nagle + delayed ACK
(uvicorn issue 3149; see shared notes on benchmarking). This launcher binds the socket itself with
proto=IPPROTO_TCP and hands it to uvicorn's own multi-process supervisor; the benchmark's c=1
latency (well under a millisecond, not ~40 ms) shows the fix works.
"""

import argparse
import json
import socket
from pathlib import Path
from typing import Union

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((REPO / "manifest.json").read_text())


def load_models():
    models = {}
    for entry in MANIFEST["models"]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        path = REPO / "models" / entry["path"] / entry["onnx"]["file"]
        session = ort.InferenceSession(str(path), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        models[entry["name"]] = (entry, session)
    return models


MODELS = load_models()
app = FastAPI()


class PredictRequest(BaseModel):
    instances: list[Union[dict[str, float], list[float]]]


def matrix(entry, instances):
    names = entry["feature_names"]
    rows = []
    for i, row in enumerate(instances):
        if isinstance(row, dict):
            missing = [n for n in names if n not in row]
            if missing or len(row) != len(names):
                raise HTTPException(422, f"instances[{i}]: features do not match the model")
            rows.append([row[n] for n in names])
        else:
            if len(row) != len(names):
                raise HTTPException(422, f"instances[{i}]: expected {len(names)} values")
            rows.append(row)
    return np.asarray(rows, dtype=np.float32)


def run(entry, session, x):
    outputs = entry["onnx"]["outputs"]
    if entry["task"] == "classification":
        label, probabilities = session.run([outputs["label"], outputs["probabilities"]],
                                           {entry["onnx"]["input"]: x})
        return label, probabilities
    (value,) = session.run([outputs["value"]], {entry["onnx"]["input"]: x})
    return None, value


def model(name):
    if name not in MODELS:
        raise HTTPException(404, f"model '{name}' not found")
    return MODELS[name]


@app.get("/health/ready")
def ready():
    return {"status": "ready"}


@app.post("/models/{name}/predict")
def predict(name: str, request: PredictRequest):
    entry, session = model(name)
    label, out = run(entry, session, matrix(entry, request.instances))
    if label is not None:
        classes = entry["class_labels"]
        predictions = [
            {"label": classes[int(l)],
             "probabilities": {c: float(p) for c, p in zip(classes, row)}}
            for l, row in zip(label, out)
        ]
    else:
        predictions = [{"value": float(v)} for v in out[:, 0]]
    return {"model": {"name": entry["name"], "version": entry["version"],
                      "sha256": entry["onnx"]["sha256"]},
            "predictions": predictions}


@app.post("/v2/models/{name}/infer")
async def infer_v2(name: str, request: Request):
    entry, session = model(name)
    body = await request.body()
    header_length = request.headers.get("inference-header-content-length")
    split = int(header_length) if header_length is not None else len(body)
    header = json.loads(body[:split])
    tensor = header["inputs"][0]
    shape = tensor["shape"]
    if "data" in tensor:
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(shape)
    else:
        x = np.frombuffer(body[split:split + tensor["parameters"]["binary_data_size"]],
                          dtype="<f4").reshape(shape)
    label, out = run(entry, session, x)
    arrays = []
    if label is not None:
        arrays.append((entry["onnx"]["outputs"]["label"], "INT64", label.astype("<i8")))
        arrays.append((entry["onnx"]["outputs"]["probabilities"], "FP32", out.astype("<f4")))
    else:
        arrays.append((entry["onnx"]["outputs"]["value"], "FP32", out.astype("<f4")))
    binary = header.get("parameters", {}).get("binary_data_output", False)
    outputs, blobs = [], []
    for out_name, datatype, array in arrays:
        o = {"name": out_name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = array.tobytes()
            o["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            o["data"] = array.ravel().tolist()
        outputs.append(o)
    head = json.dumps({"model_name": name, "model_version": entry["version"],
                       "outputs": outputs}).encode()
    if not binary:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})


@app.exception_handler(HTTPException)
async def http_error(_request, exc):
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def main():
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--http", default="auto", help="uvicorn HTTP parser: auto, h11, httptools")
    parser.add_argument("--loop", default="auto", help="uvicorn event loop: auto, asyncio, uvloop")
    args = parser.parse_args()
    config = uvicorn.Config("fastapi_server:app", host=args.host, port=args.port,
                            workers=args.workers, access_log=False, log_level="warning",
                            http=args.http, loop=args.loop)
    # The fix for the Nagle trap: a socket created with proto=IPPROTO_TCP, so asyncio's
    # create_server(sock=...) sets TCP_NODELAY on every accepted connection.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.set_inheritable(True)
    print(f"listening on {args.host}:{sock.getsockname()[1]} with {args.workers} workers",
          flush=True)
    if args.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
