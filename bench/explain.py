"""Latency of one explanation per model: the running server's /explain against the same
computation with Python `shap` on the same machine, as a ratio.

Run by `make bench` (release build, server started, this script run against it):
    python bench/explain.py --url http://127.0.0.1:18480 [--json results.json]

For each model the two sides alternate row by row (server, shap, server, shap, ...) so both
see the same machine load; on a shared, noisy VM only ratios taken in one run mean anything.
- Tree ensembles: `/explain` default (margin, Tree SHAP) vs `shap.TreeExplainer(model,
  data=background, feature_perturbation="interventional", model_output="raw").shap_values(x)`
  on the trees read from the ONNX file.
- Other models: `/explain` (exact enumeration) vs `shap.ExactExplainer(f,
  maskers.Independent(background, max_samples=len(background)))(x)` with `f` running the ONNX
  model in onnxruntime (one thread).
Server latency is client-side wall time of one single-row request on a kept-alive connection
(JSON encode, HTTP, parse included); shap time is the call alone. For scale, a `/predict` of
the same row is timed too (interleaved): the HTTP and JSON floor any /explain pays.
"""

import argparse
import http.client
import json
import os
import platform
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import onnx
import onnxruntime as ort
import shap

REPO = Path(__file__).resolve().parents[1]


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


class Client:
    """One kept-alive HTTP connection."""

    def __init__(self, url):
        parsed = urlparse(url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300)

    def request(self, method, path, body=None):
        payload = None if body is None else json.dumps(body)
        self.connection.request(method, path, payload, {"content-type": "application/json"})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _ = self.request("GET", "/health/ready")
                if status == 200:
                    return
            except (ConnectionError, OSError, http.client.HTTPException):
                self.connection.close()
            if time.monotonic() > deadline:
                sys.exit("the server did not become ready")
            time.sleep(0.1)


def tree_dict_model(path):
    """An ONNX TreeEnsembleClassifier (skl2onnx binary gradient boosting) as shap's dict model,
    or None if the graph is not one."""
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    if len(nodes) != 1:
        return None
    a = {attr.name: onnx.helper.get_attribute_value(attr) for attr in nodes[0].attribute}
    if set(a["class_ids"]) != {0} or set(a["nodes_modes"]) - {b"BRANCH_LEQ", b"LEAF"}:
        return None
    weights = {}
    for tree, node, w in zip(a["class_treeids"], a["class_nodeids"], a["class_weights"]):
        weights[(tree, node)] = weights.get((tree, node), 0.0) + float(np.float32(w))
    by_tree = {}
    for i, tree in enumerate(a["nodes_treeids"]):
        by_tree.setdefault(tree, []).append(i)
    trees = []
    for tree, indices in sorted(by_tree.items()):
        n = len(indices)
        left, right = np.full(n, -1), np.full(n, -1)
        features, thresholds, values = np.full(n, -2), np.zeros(n), np.zeros((n, 1))
        for i in indices:
            k = a["nodes_nodeids"][i]
            if a["nodes_modes"][i] == b"LEAF":
                values[k, 0] = weights.get((tree, k), 0.0)
            else:
                left[k], right[k] = a["nodes_truenodeids"][i], a["nodes_falsenodeids"][i]
                features[k] = a["nodes_featureids"][i]
                thresholds[k] = float(np.float32(a["nodes_values"][i]))
        trees.append({"children_left": left, "children_right": right,
                      "children_default": left.copy(), "features": features,
                      "thresholds": thresholds, "values": values,
                      "node_sample_weight": np.ones(n)})
    return {"trees": trees, "base_offset": float(np.float32(a["base_values"][0])),
            "tree_output": "log_odds", "objective": "binary_crossentropy"}


def shap_explainer(entry, model_dir, background):
    """(label, callable explaining one row) for the same computation the server does."""
    path = model_dir / entry["onnx"]["file"]
    dict_model = tree_dict_model(path)
    if dict_model is not None:
        explainer = shap.TreeExplainer(dict_model, data=background,
                                       feature_perturbation="interventional", model_output="raw")
        return "shap.TreeExplainer (interventional, raw)", explainer.shap_values
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    role = "probabilities" if entry["task"] == "classification" else "value"
    output, name = entry["onnx"]["outputs"][role], entry["onnx"]["input"]

    def f(x):
        out = session.run([output], {name: np.asarray(x, dtype=np.float32)})[0]
        return out.reshape(len(x), -1).astype(np.float64)

    masker = shap.maskers.Independent(background, max_samples=len(background))
    return "shap.ExactExplainer (Independent masker, all rows)", shap.ExactExplainer(f, masker)


def bench_model(client, entry, rows_per_model, exact_rows):
    model_dir = REPO / "models" / entry["path"]
    names = entry["feature_names"]
    background = np.loadtxt(model_dir / entry["artifacts"]["background"], delimiter=",",
                            skiprows=1, ndmin=2)
    log = json.loads((model_dir / entry["artifacts"]["training_log"]).read_text())["rows"]
    label, reference = shap_explainer(entry, model_dir, background)
    is_exact = label.startswith("shap.ExactExplainer")
    n = exact_rows if is_exact else rows_per_model
    path = f"/models/{entry['name']}/explain"
    ours, theirs, floor, method = [], [], [], None
    for i in range(n + 3):  # the first three are warm-up
        row = log[i % len(log)]["features"]
        x = np.array([[row[k] for k in names]])
        t = time.perf_counter()
        status, body = client.request("POST", path, {"instances": [row]})
        server_seconds = time.perf_counter() - t
        if status != 200:
            sys.exit(f"{path}: {status} {body}")
        method = body["explanations"][0]["method"]
        t = time.perf_counter()
        reference(x)
        shap_seconds = time.perf_counter() - t
        t = time.perf_counter()
        status, body = client.request("POST", f"/models/{entry['name']}/predict",
                                      {"instances": [row]})
        predict_seconds = time.perf_counter() - t
        if status != 200:
            sys.exit(f"/predict: {status} {body}")
        if i >= 3:
            ours.append(server_seconds)
            theirs.append(shap_seconds)
            floor.append(predict_seconds)
    result = {
        "model": entry["name"],
        "features": len(names),
        "background_rows": len(background),
        "method": method,
        "reference": label,
        "rows": n,
        "server_p50_ms": percentile(ours, 50) * 1e3,
        "server_p99_ms": percentile(ours, 99) * 1e3,
        "shap_p50_ms": percentile(theirs, 50) * 1e3,
        "shap_p99_ms": percentile(theirs, 99) * 1e3,
        "predict_p50_ms": percentile(floor, 50) * 1e3,
    }
    result["speedup_p50"] = result["shap_p50_ms"] / result["server_p50_ms"]
    result["speedup_p99"] = result["shap_p99_ms"] / result["server_p99_ms"]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the running server")
    parser.add_argument("--rows", type=int, default=200,
                        help="timed explanations per tree model (default 200)")
    parser.add_argument("--exact-rows", type=int, default=20,
                        help="timed explanations per exact model; shap takes ~0.6 s each")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    client = Client(args.url)
    client.wait_ready(120)
    manifest = json.loads((REPO / "manifest.json").read_text())
    results = [bench_model(client, entry, args.rows, args.exact_rows)
               for entry in manifest["models"]]

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# /explain vs shap {shap.__version__} ({machine}, load average {load:.1f});"
          " one row per explanation")
    print("| model | method | server p50 / p99 (ms) | shap p50 / p99 (ms) | speed-up p50 / p99"
          " | /predict p50 (ms) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} ({r['features']} features, {r['background_rows']} background rows)"
              f" | {r['method']} vs {r['reference']}"
              f" | {r['server_p50_ms']:.2f} / {r['server_p99_ms']:.2f}"
              f" | {r['shap_p50_ms']:.2f} / {r['shap_p99_ms']:.2f}"
              f" | {r['speedup_p50']:.1f}x / {r['speedup_p99']:.1f}x"
              f" | {r['predict_p50_ms']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "load_average": load,
                                               "shap": shap.__version__, "results": results},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
