"""/explain on model shapes beyond the two committed ones, against the pinned `shap`.

Small scikit-learn models are trained here (fixed seeds, seconds), exported with skl2onnx as
training/train.py does, written with a background set and a manifest into a temporary model
repository, and served by a second server:

| model | graph | /explain |
|---|---|---|
| iris-gbc | TreeEnsembleClassifier, 3 classes, SOFTMAX | tree (margin); exact (probability) |
| cancer-rf | TreeEnsembleClassifier, 2 class ids, no transform | tree (margin = probability) |
| diabetes-gbr | TreeEnsembleRegressor | tree |
| diabetes-rf | TreeEnsembleRegressor (random forest) | tree |
| cancer-logreg | Scaler + LinearClassifier (8 features) | exact; no margin |
| cancer-mlp | MLPClassifier (30 features) | permutation sampling |

Tree SHAP is compared with shap.TreeExplainer on the ONNX trees, exact enumeration with
shap.ExactExplainer over onnxruntime, both to 1e-5.
"""

import hashlib
import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import shap
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.ensemble import (GradientBoostingClassifier, GradientBoostingRegressor,
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from onnx_trees import shap_tree_model

TOLERANCE = 1e-5
BACKGROUND_ROWS = 50
EXPLAINED_ROWS = 12


def data(loader, n_features=None):
    bunch = getattr(datasets, loader)()
    X = bunch.data.astype(np.float32).astype(np.float64)
    if n_features:
        X = X[:, :n_features]
    names = [str(n).replace(" ", "_").replace("(", "").replace(")", "") for n in
             bunch.feature_names][:X.shape[1]]
    labels = [str(c) for c in getattr(bunch, "target_names", [])] if loader != "load_diabetes" \
        else []
    return X, bunch.target, names, labels


SPECS = {
    "iris-gbc": ("load_iris", None, lambda: GradientBoostingClassifier(
        n_estimators=15, max_depth=2, random_state=0)),
    "cancer-rf": ("load_breast_cancer", None, lambda: RandomForestClassifier(
        n_estimators=8, max_depth=4, random_state=0)),
    "diabetes-gbr": ("load_diabetes", None, lambda: GradientBoostingRegressor(
        n_estimators=25, max_depth=3, random_state=0)),
    "diabetes-rf": ("load_diabetes", None, lambda: RandomForestRegressor(
        n_estimators=6, max_depth=5, random_state=0)),
    "cancer-logreg": ("load_breast_cancer", 8, lambda: make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=1000))),
    "cancer-mlp": ("load_breast_cancer", None, lambda: make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0))),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, start_server):
    """Trains every model into a temporary repository and serves it."""
    root = tmp_path_factory.mktemp("explain-models")
    rng = np.random.default_rng(0)
    entries, rows = {}, {}
    for name, (loader, n_features, build) in SPECS.items():
        X, y, names, labels = data(loader, n_features)
        with warnings.catch_warnings():
            # The small MLP is only there to be explained, not to be good.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = build().fit(X, y)
        classifier = bool(labels)
        onx = convert_sklearn(
            model, initial_types=[("input", FloatTensorType([None, X.shape[1]]))],
            target_opset={"": 17, "ai.onnx.ml": 3},
            options={id(model): {"zipmap": False}} if classifier else None)
        folder = root / "models" / name / "1"
        folder.mkdir(parents=True)
        model_bytes = onx.SerializeToString()
        (folder / "model.onnx").write_bytes(model_bytes)
        order = rng.permutation(len(X))
        background = X[order[:BACKGROUND_ROWS]]
        lines = [",".join(names)] + [",".join(repr(float(v)) for v in r) for r in background]
        (folder / "background.csv").write_text("\n".join(lines) + "\n")
        rows[name] = X[order[BACKGROUND_ROWS:BACKGROUND_ROWS + EXPLAINED_ROWS]]
        outputs = ({"label": "label", "probabilities": "probabilities"} if classifier
                   else {"value": "variable"})
        entries[name] = {
            "name": name, "version": "1", "path": f"{name}/1",
            "task": "classification" if classifier else "regression",
            "feature_names": names, "class_labels": labels,
            "onnx": {"file": "model.onnx", "sha256": hashlib.sha256(model_bytes).hexdigest(),
                     "input": "input", "outputs": outputs},
            "artifacts": {"background": "background.csv"},
        }
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"default_model": "iris-gbc",
                                    "models": list(entries.values())}))
    server = start_server("--models-dir", str(root / "models"), "--manifest", str(manifest),
                          "--explain-max-evaluations", "100000000")
    return server, root, entries, rows


def explain(server, name, X, entry, **options):
    instances = [list(map(float, r)) for r in X]
    status, body = server.post(f"/models/{name}/explain", {"instances": instances, **options})
    assert status == 200, body
    names = entry["feature_names"]
    phi = np.array([[e["attributions"][n] for n in names] for e in body["explanations"]])
    base = np.array([e["base_value"] for e in body["explanations"]])
    return body["explanations"], phi, base


def background(root, name):
    return np.loadtxt(root / "models" / name / "1" / "background.csv", delimiter=",",
                      skiprows=1, ndmin=2)


def ort_outputs(root, name, entry):
    sess_options = ort.SessionOptions()
    sess_options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(root / "models" / name / "1" / "model.onnx"),
                                   sess_options=sess_options, providers=["CPUExecutionProvider"])
    role = "probabilities" if entry["task"] == "classification" else "value"

    def f(x):
        out = session.run([entry["onnx"]["outputs"][role]],
                          {"input": np.asarray(x, dtype=np.float32)})[0]
        return out.reshape(len(x), -1).astype(np.float64)

    return f


def residuals_are_small(explanations, phi, bound):
    for e, p in zip(explanations, phi):
        assert abs(e["value"] - e["base_value"] - p.sum() - e["residual"]) < 1e-9
        assert abs(e["residual"]) < bound, e


@pytest.mark.parametrize("name", ["iris-gbc", "cancer-rf", "diabetes-gbr", "diabetes-rf"])
def test_tree_ensembles_match_shap_tree_explainer(served, name):
    server, root, entries, rows = served
    entry = entries[name]
    trees = shap_tree_model(root / "models" / name / "1" / "model.onnx")
    explainer = shap.TreeExplainer(trees.dict_model, data=background(root, name),
                                   feature_perturbation="interventional", model_output="raw")
    X = rows[name]
    sv = np.asarray(explainer.shap_values(X))
    sv = sv[..., None] if sv.ndim == 2 else sv  # (rows, features, outputs)
    expected_base = np.atleast_1d(explainer.expected_value)
    classes = entry["class_labels"] or [None]
    for c, label in enumerate(classes):
        output, sign, offset = trees.classes[c]
        options = {"class": label, "output": "margin"} if label else {}
        got, phi, base = explain(server, name, X, entry, **options)
        assert {e["method"] for e in got} == {"tree"}
        np.testing.assert_allclose(phi, sign * sv[:, :, output], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(base, offset + sign * expected_base[output], rtol=0,
                                   atol=TOLERANCE)
        residuals_are_small(got, phi, 2e-4 * max(1.0, np.abs(base).max()))
    if name == "cancer-rf":
        # One score f = p(benign), no post-transform: the probabilities (1 - f, f) are the
        # margins, explained by the same trees; they mirror each other.
        probabilities = ort_outputs(root, name, entry)(X)
        for c, label in enumerate(classes):
            output, sign, offset = trees.classes[c]
            got, phi, base = explain(server, name, X, entry, output="probability",
                                     **{"class": label})
            assert {(e["method"], e["output"]) for e in got} == {("tree", "probability")}
            np.testing.assert_allclose(phi, sign * sv[:, :, output], rtol=0, atol=TOLERANCE)
            np.testing.assert_allclose(base, offset + sign * expected_base[output], rtol=0,
                                       atol=TOLERANCE)
            np.testing.assert_array_equal([e["value"] for e in got], probabilities[:, c])


@pytest.mark.parametrize("name", ["iris-gbc", "cancer-logreg"])
def test_probabilities_without_a_tree_link_are_enumerated_exactly(served, name):
    """Softmax trees and non-tree classifiers explain probabilities by exact enumeration."""
    server, root, entries, rows = served
    entry = entries[name]
    f = ort_outputs(root, name, entry)
    bg = background(root, name)
    X = rows[name]
    for c, label in enumerate(entry["class_labels"]):
        reference = shap.ExactExplainer(lambda x, c=c: f(x)[:, c],
                                        shap.maskers.Independent(bg, max_samples=len(bg)))(X)
        got, phi, base = explain(server, name, X, entry, output="probability",
                                 **{"class": label})
        assert {(e["method"], e["output"], e["class"]) for e in got} == \
            {("exact", "probability", label)}
        np.testing.assert_allclose(phi, reference.values, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(base, reference.base_values, rtol=0, atol=TOLERANCE)
        np.testing.assert_array_equal([e["value"] for e in got], f(X)[:, c])
        residuals_are_small(got, phi, 1e-9)


def test_a_non_tree_classifier_has_no_margin(served):
    server, _, entries, rows = served
    row = list(map(float, rows["cancer-logreg"][0]))
    status, body = server.post("/models/cancer-logreg/explain",
                               {"instances": [row], "output": "margin"})
    assert (status, body["code"]) == (422, "explanation_unavailable"), body
    # Its default is the probability of the predicted class.
    status, body = server.post("/models/cancer-logreg/explain", {"instances": [row]})
    assert status == 200 and body["explanations"][0]["output"] == "probability"


def test_wide_non_tree_models_are_sampled_reproducibly(served):
    server, root, entries, rows = served
    entry = entries["cancer-mlp"]
    X = rows["cancer-mlp"][:4]
    first, phi, _ = explain(server, "cancer-mlp", X, entry)
    again, _, _ = explain(server, "cancer-mlp", X, entry)
    assert first == again
    assert {(e["method"], e["permutations"]) for e in first} == {("permutation", 10)}
    f = ort_outputs(root, "cancer-mlp", entry)
    classes = entry["class_labels"]
    np.testing.assert_array_equal(
        [e["value"] for e in first],
        [f(X)[i, classes.index(e["class"])] for i, e in enumerate(first)])
    residuals_are_small(first, phi, 1e-9)
