"""The user-model fixtures (build.py) are what they claim to be: real files in the declared
signatures, outputs that onnxruntime reproduces bit for bit from reference.csv, shap attributions
that add up, and byte-identical across builds. No server is needed.

The first build goes to $FERRUM_CACHE/user-models-<hash of build.py and the lock file> (a tmp dir
without FERRUM_CACHE); a second, fresh build is always made to compare against it.
"""

import csv
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

HERE = Path(__file__).resolve().parent

# Loaded under a unique name: "build" alone would shadow (or be shadowed by) other modules.
_spec = importlib.util.spec_from_file_location("user_models_build", HERE / "build.py")
builder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builder)

NAMES = ["logreg-zipmap", "scaled-forest", "lightgbm", "xgboost", "column-transformer",
         "float64", "int64", "cnn"]
NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(string)": object}


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    cache = os.environ.get("FERRUM_CACHE")
    root = Path(cache) if cache else tmp_path_factory.mktemp("cache")
    return builder.build_cached(root)


@pytest.fixture(scope="session")
def rebuilt(tmp_path_factory):
    out = tmp_path_factory.mktemp("rebuilt") / "out"
    builder.build(out)
    return out


@pytest.fixture(scope="session")
def index(built):
    return json.loads((built / "fixtures.json").read_text())


def entry(index, name):
    (found,) = [m for m in index["models"] if m["name"] == name]
    return found


def session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def feeds_from_csv(model, path):
    """The model's inputs from a fixture CSV, read as the README says a consumer reads it:
    numbers parsed as float64 then narrowed to the input's type; one 2-D input takes the
    columns in order, one input per column takes its column, an image takes its pixels."""
    header, rows = read_csv(path)
    assert header == model["feature_names"]
    inputs = model["inputs"]

    def typed(cells, onnx_type):
        dtype = NUMPY_TYPES[onnx_type]
        if dtype is object:
            return np.array(cells, dtype=object)
        if dtype is np.int64:
            return np.array([int(c) for c in cells], dtype=np.int64)
        return np.array([float(c) for c in cells], dtype=np.float64).astype(dtype)

    if len(inputs) == len(header) and len(inputs) > 1:
        return {i["name"]: typed([r[j] for r in rows], i["type"]).reshape(-1, 1)
                for j, i in enumerate(inputs)}
    (only,) = inputs
    matrix = typed([c for r in rows for c in r], only["type"]).reshape(len(rows), len(header))
    shape = [-1 if not isinstance(d, int) else d for d in only["shape"]]
    return {only["name"]: matrix.reshape(shape)}


def test_the_eight_fixtures_and_the_pinned_versions(index):
    assert [m["name"] for m in index["models"]] == NAMES
    versions = index["versions"]
    assert versions["onnxruntime"] == ort.__version__ == "1.31.1"
    assert versions["onnx"] == onnx.__version__ == "1.23.2"
    assert (versions["scikit-learn"], versions["skl2onnx"]) == ("1.9.1", "1.20.0")
    assert (versions["lightgbm"], versions["xgboost"], versions["onnxmltools"]) == \
        ("4.7.0", "3.2.0", "1.16.0")


@pytest.mark.parametrize("name", NAMES)
def test_loads_with_the_declared_signature(built, index, name):
    model = entry(index, name)
    path = built / model["model"]
    assert path == built / name / "1" / "model.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model["sha256"]
    sess = session(path)
    for declared, actual in ((model["inputs"], sess.get_inputs()),
                             (model["outputs"], sess.get_outputs())):
        assert [(d["name"], d["type"]) for d in declared] == [(a.name, a.type) for a in actual]
        for d, a in zip(declared, actual):
            if d["shape"] is not None:  # tensors; ORT reports an unnamed dynamic dim as None
                assert d["shape"] == a.shape


def test_what_users_exports_declare(index):
    logreg = entry(index, "logreg-zipmap")
    assert [(o["name"], o["type"]) for o in logreg["outputs"]] == [
        ("output_label", "tensor(int64)"), ("output_probability", "seq(map(int64,tensor(float)))")]
    assert logreg["inputs"] == [{"name": "float_input", "type": "tensor(float)",
                                 "shape": [None, 4]}]

    columns = entry(index, "column-transformer")
    assert [i["name"] for i in columns["inputs"]] == ["city", "x1", "x2", "x3"]
    assert [i["type"] for i in columns["inputs"]].count("tensor(string)") == 1
    assert columns["inputs"][0] == {"name": "city", "type": "tensor(string)", "shape": [None, 1]}

    lightgbm = entry(index, "lightgbm")
    assert lightgbm["outputs"][0] == {"name": "label", "type": "tensor(int64)", "shape": [1]}
    assert lightgbm["outputs"][1]["type"] == "seq(map(int64,tensor(float)))"

    assert entry(index, "float64")["inputs"][0]["type"] == "tensor(double)"
    assert entry(index, "float64")["outputs"][0]["type"] == "tensor(double)"
    assert entry(index, "int64")["inputs"][0] == {"name": "counts", "type": "tensor(int64)",
                                                  "shape": [None, 4]}
    assert entry(index, "xgboost")["outputs"] == [{"name": "variable", "type": "tensor(float)",
                                                   "shape": [None, 1]}]
    cnn = entry(index, "cnn")
    assert cnn["inputs"] == [{"name": "pixels", "type": "tensor(float)", "shape": ["N", 1, 8, 8]}]
    assert cnn["outputs"] == [{"name": "probs", "type": "tensor(float)", "shape": ["N", 10]}]
    assert cnn["task"] == "tensors" and cnn["explanation"] is None

    tasks = {m["name"]: (m["task"], m["class_labels"]) for m in index["models"]}
    assert tasks["logreg-zipmap"] == tasks["scaled-forest"] == ("classification", [0, 1, 2])
    assert tasks["lightgbm"] == tasks["column-transformer"] == ("classification", [0, 1])
    assert tasks["xgboost"] == tasks["float64"] == tasks["int64"] == ("regression", None)


def test_the_graphs_are_the_converters_shapes(built):
    def ops(name):
        return [n.op_type for n in onnx.load(str(built / name / "1" / "model.onnx")).graph.node]
    assert ops("scaled-forest")[:2] == ["Scaler", "TreeEnsembleClassifier"]
    assert ops("xgboost") == ["TreeEnsembleRegressor"]
    assert "ZipMap" in ops("lightgbm") and "TreeEnsembleClassifier" in ops("lightgbm")
    assert ops("int64")[0] == "Cast"
    assert {"OneHotEncoder", "Scaler", "LinearClassifier", "ZipMap"} <= set(ops("column-transformer"))


@pytest.mark.parametrize("name", NAMES)
def test_expected_outputs_reproduce_bit_for_bit_from_the_csv(built, index, name):
    model = entry(index, name)
    expected = json.loads((built / model["expected"]).read_text())
    feeds = feeds_from_csv(model, built / model["reference"])
    assert all(len(v) == expected["rows"] for v in feeds.values())
    sess = session(built / model["model"])
    assert builder.run_outputs(sess, feeds) == expected["outputs"]
    one_by_one = {}
    runs = [sess.run(None, {k: v[r:r + 1] for k, v in feeds.items()})
            for r in range(expected["rows"])]
    for i, o in enumerate(sess.get_outputs()):
        parts = [run[i] for run in runs]
        joined = sum(parts, []) if isinstance(parts[0], list) else np.concatenate(parts)
        one_by_one[o.name] = builder.record_output(o.type, joined)
    assert one_by_one == expected["outputs_one_by_one"]
    # Every float is written so that it parses back to the very same float32 / float64.
    for output in expected["outputs"].values():
        if output.get("dtype") == "float32":
            values = np.array(output["values"], dtype=np.float64)
            assert np.array_equal(values.astype(np.float32).astype(np.float64), values)


def probabilities(output, labels):
    return np.array([[dict(row)[label] for label in labels] for row in output["values"]])


@pytest.mark.parametrize("name", [n for n in NAMES if n != "cnn"])
def test_shap_attributions_add_up_to_the_explained_output(built, index, name):
    model = entry(index, name)
    expected = json.loads((built / model["expected"]).read_text())
    e = expected["explanation"]
    values, base = np.array(e["values"]), np.array(e["base_values"])
    out = np.array(e["output_values"])
    assert values.shape == (expected["rows"], len(model["feature_names"]), len(e["outputs"]))
    scale = max(1.0, np.abs(out).max())
    assert np.abs(values.sum(axis=1) + base - out).max() < 1e-5 * scale
    assert np.abs(values).max() > 0  # the attributions say something

    # The explained output is the model's own, in the space fixtures.json names.
    outputs = expected["outputs"]
    if name == "lightgbm":  # margin: log-odds of class 1
        p1 = probabilities(outputs["probabilities"], [0, 1])[:, 1]
        assert np.abs(1 / (1 + np.exp(-out[:, 0])) - p1).max() < 1e-6
    elif model["task"] == "classification":  # probabilities by class label
        (zipmap,) = [k for k, v in outputs.items() if v["type"].startswith("seq(")]
        assert e["outputs"] == [str(c) for c in model["class_labels"]]
        assert np.abs(out - probabilities(outputs[zipmap], model["class_labels"])).max() < 1e-6
    else:
        (variable,) = outputs.values()
        onnx_out = np.array(variable["values"]).reshape(out.shape)
        assert np.abs(out - onnx_out).max() < 1e-5 * scale
    background, _ = read_csv(built / model["background"])
    assert background == model["feature_names"]


@pytest.mark.parametrize("name", ["float64", "int64"])
def test_exact_shap_of_a_linear_model_is_its_closed_form(built, index, name):
    # Interventional Shapley values of f(x) = w.x + b over a background: w_j (x_j - mean_j).
    # The weights read off the model itself: w_j = f(e_j) - f(0).
    model = entry(index, name)
    (only,) = model["inputs"]
    n = len(model["feature_names"])
    units = np.vstack([np.zeros(n), np.eye(n)]).astype(NUMPY_TYPES[only["type"]])
    f = session(built / model["model"]).run(None, {only["name"]: units})[0][:, 0]
    weights = f[1:].astype(np.float64) - f[0]
    _, ref = read_csv(built / model["reference"])
    _, bg = read_csv(built / model["background"])
    ref, bg = np.array(ref, dtype=np.float64), np.array(bg, dtype=np.float64)
    phi = np.array(json.loads((built / model["expected"]).read_text())["explanation"]["values"])
    closed = weights * (ref - bg.mean(axis=0))
    assert np.abs(phi[:, :, 0] - closed).max() < 1e-4 * max(1.0, np.abs(closed).max())


def test_two_builds_are_byte_identical(built, rebuilt):
    files = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*") if p.is_file())
    assert len([f for f in files if f.name == "model.onnx"]) == len(NAMES)
    for f in files:
        assert (built / f).read_bytes() == (rebuilt / f).read_bytes(), f
