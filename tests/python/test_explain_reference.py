"""/explain against the pinned Python `shap` on the committed ONNX models and background sets.

- diabetes (an MLP, 10 features): `shap.ExactExplainer` over onnxruntime, with the whole
  background (`maskers.Independent(bg, max_samples=len(bg))`: an array background would be
  subsampled to 100 rows otherwise).
- breast-cancer (gradient boosting, 100 trees, 30 features): `shap.TreeExplainer(model,
  data=background, feature_perturbation="interventional")` with `model_output="raw"` (margin)
  and `"probability"`, on the trees read from the ONNX file here with the `onnx` package and
  handed to shap as a dict model (independently of the server's Rust reader).

Rows: every training-log row, plus perturbed ones (features swapped in from the background,
scaled, or set exactly onto split thresholds). Attributions and base values must match to
1e-5 absolute; the residual against ONNX Runtime's output must be within float32
accumulation error. The largest differences are written to test-artifacts/explain_reference.json.
"""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import shap

REPO = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((REPO / "manifest.json").read_text())
ENTRIES = {m["name"]: m for m in MANIFEST["models"]}
ARTIFACTS = REPO / "test-artifacts"
TOLERANCE = 1e-5
MAX_ROWS = 32  # the server's default EXPLAIN_MAX_ROWS
SUMMARY = {}


def model_dir(entry):
    return REPO / "models" / entry["path"]


def background(entry):
    path = model_dir(entry) / entry["artifacts"]["background"]
    return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)


def log_rows(entry):
    log = json.loads((model_dir(entry) / entry["artifacts"]["training_log"]).read_text())
    names = entry["feature_names"]
    return np.array([[row["features"][n] for n in names] for row in log["rows"]])


def session(model_bytes):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, sess_options=opts,
                                providers=["CPUExecutionProvider"])


def perturbed(rows, bg, n, seed, thresholds=None):
    """`n` rows derived from log rows: some features swapped in from background rows, some
    scaled, and (for trees) some set exactly onto a split threshold of that feature; every
    value a float32, as the server sees it."""
    rng = np.random.default_rng(seed)
    out = []
    m = rows.shape[1]
    for i in range(n):
        x = rows[i % len(rows)].copy()
        swap = rng.choice(m, size=max(1, m // 4), replace=False)
        x[swap] = bg[rng.integers(len(bg)), swap]
        scale = rng.choice(m, size=max(1, m // 5), replace=False)
        x[scale] *= rng.uniform(0.5, 1.5, size=len(scale))
        if thresholds:
            for j in rng.choice(m, size=max(1, m // 5), replace=False):
                if thresholds.get(j):
                    x[j] = thresholds[j][rng.integers(len(thresholds[j]))]
        out.append(x)
    return np.array(out).astype(np.float32).astype(np.float64)


def explain(server, model, X, **options):
    """/explain on rows X (in feature order), MAX_ROWS rows per request."""
    names = ENTRIES[model]["feature_names"]
    explanations = []
    for start in range(0, len(X), MAX_ROWS):
        instances = [dict(zip(names, map(float, row))) for row in X[start:start + MAX_ROWS]]
        status, body = server.post(f"/models/{model}/explain", {"instances": instances, **options})
        assert status == 200, body
        assert body["model"]["sha256"] == ENTRIES[model]["onnx"]["sha256"]
        explanations.extend(body["explanations"])
    assert len(explanations) == len(X)
    return explanations


def attributions(explanations, names):
    return np.array([[e["attributions"][n] for n in names] for e in explanations])


def record(key, **values):
    SUMMARY[key] = {k: float(v) for k, v in values.items()}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "explain_reference.json").write_text(json.dumps(SUMMARY, indent=2) + "\n")


def residual_check(explanations, names):
    """The reported residual is value - base - sum, and returns the largest one."""
    phi = attributions(explanations, names)
    value = np.array([e["value"] for e in explanations])
    base = np.array([e["base_value"] for e in explanations])
    residual = np.array([e["residual"] for e in explanations])
    np.testing.assert_allclose(value - base - phi.sum(1), residual, rtol=0, atol=1e-9)
    return np.abs(residual).max()


# --------------------------------------------------------------------------- exact (MLP)


def test_exact_enumeration_matches_shap_exact_explainer(server):
    entry = ENTRIES["diabetes"]
    names = entry["feature_names"]
    bg = background(entry)
    rows = log_rows(entry)
    X = np.vstack([rows, perturbed(rows, bg, 16, seed=1)])
    sess = session(str(model_dir(entry) / entry["onnx"]["file"]))
    output = entry["onnx"]["outputs"]["value"]

    def f(batch):
        x = np.asarray(batch, dtype=np.float32)
        return sess.run([output], {entry["onnx"]["input"]: x})[0].reshape(-1).astype(np.float64)

    reference = shap.ExactExplainer(f, shap.maskers.Independent(bg, max_samples=len(bg)))(X)
    got = explain(server, "diabetes", X)
    assert {e["method"] for e in got} == {"exact"}
    assert {e["output"] for e in got} == {"value"}
    phi = attributions(got, names)
    base = np.array([e["base_value"] for e in got])
    value = np.array([e["value"] for e in got])
    phi_diff = np.abs(phi - reference.values).max()
    base_diff = np.abs(base - reference.base_values).max()
    np.testing.assert_allclose(phi, reference.values, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(base, reference.base_values, rtol=0, atol=TOLERANCE)
    # The value is ONNX Runtime's own output for the row, and additivity holds against it.
    np.testing.assert_array_equal(value, f(X))
    residual = residual_check(got, names)
    assert residual < 1e-6
    record("diabetes exact vs shap.ExactExplainer", rows=len(X), max_abs_attribution_diff=phi_diff,
           max_abs_base_value_diff=base_diff, max_abs_residual=residual)


# --------------------------------------------------------------------------- Tree SHAP


def onnx_trees_as_shap_dict(path, n_features):
    """The TreeEnsembleClassifier of an ONNX file as shap's dict model (one output: skl2onnx's
    binary gradient boosting scores the positive class only), plus every split threshold per
    feature. Built with the `onnx` package, independently of the server's reader."""
    model = onnx.load(str(path))
    (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    a = {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}
    assert a["post_transform"] == b"LOGISTIC"
    assert set(a["class_ids"]) == {0} and len(a["classlabels_int64s"]) == 2
    modes = [m.decode() for m in a["nodes_modes"]]
    assert set(modes) <= {"BRANCH_LEQ", "LEAF"}, "shap's dict model splits with <= only"
    trees = {}
    for i, tree in enumerate(a["nodes_treeids"]):
        trees.setdefault(tree, []).append(i)
    weights = {}
    for tree, node_id, w in zip(a["class_treeids"], a["class_nodeids"], a["class_weights"]):
        weights[(tree, node_id)] = weights.get((tree, node_id), 0.0) + float(np.float32(w))
    thresholds = {}
    shap_trees = []
    for tree, indices in sorted(trees.items()):
        ids = [a["nodes_nodeids"][i] for i in indices]
        assert sorted(ids) == list(range(len(ids)))
        n = len(ids)
        left, right = np.full(n, -1), np.full(n, -1)
        features, values = np.full(n, -2), np.zeros((n, 1))
        threshold = np.zeros(n)
        for i in indices:
            k = a["nodes_nodeids"][i]
            if modes[i] == "LEAF":
                values[k, 0] = weights.get((tree, k), 0.0)
                continue
            left[k], right[k] = a["nodes_truenodeids"][i], a["nodes_falsenodeids"][i]
            features[k] = a["nodes_featureids"][i]
            threshold[k] = float(np.float32(a["nodes_values"][i]))
            thresholds.setdefault(int(features[k]), set()).add(threshold[k])
        shap_trees.append({
            "children_left": left, "children_right": right, "children_default": left.copy(),
            "features": features, "thresholds": threshold, "values": values,
            "node_sample_weight": np.ones(n),
        })
    dict_model = {
        "trees": shap_trees,
        "base_offset": float(np.float32(a["base_values"][0])),
        "tree_output": "log_odds",
        "objective": "binary_crossentropy",
        "input_dtype": np.float64,
        "internal_dtype": np.float64,
    }
    return dict_model, {j: sorted(t) for j, t in thresholds.items() if j < n_features}


def margin_session(path):
    """ONNX Runtime on the same model with post_transform NONE: its own float32 margins."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "post_transform":
                attr.s = b"NONE"
    return session(model.SerializeToString())


@pytest.fixture(scope="module")
def tree_reference():
    entry = ENTRIES["breast-cancer"]
    path = model_dir(entry) / entry["onnx"]["file"]
    bg = background(entry)
    dict_model, thresholds = onnx_trees_as_shap_dict(path, len(entry["feature_names"]))
    rows = log_rows(entry)
    X = np.vstack([rows, perturbed(rows, bg, 24, seed=2, thresholds=thresholds)])
    explainers = {
        output: shap.TreeExplainer(dict_model, data=bg, feature_perturbation="interventional",
                                   model_output=output)
        for output in ("raw", "probability")
    }
    # The dict model is the ONNX model: its margins are ONNX Runtime's (up to float32 sums).
    ort_margin = margin_session(path).run(None, {entry["onnx"]["input"]: X.astype(np.float32)})[1]
    np.testing.assert_allclose(explainers["raw"].model.predict(X), ort_margin[:, 1], atol=2e-4)
    return entry, X, explainers


@pytest.mark.parametrize("output", ["margin", "probability"])
def test_tree_shap_matches_shap_tree_explainer(server, tree_reference, output):
    entry, X, explainers = tree_reference
    names = entry["feature_names"]
    explainer = explainers["raw" if output == "margin" else "probability"]
    phi_ref = np.asarray(explainer.shap_values(X))
    base_ref = float(np.asarray(explainer.expected_value).reshape(-1)[0])
    summary = {}
    for class_name, sign in (("benign", 1.0), ("malignant", -1.0)):
        got = explain(server, "breast-cancer", X, output=output, **{"class": class_name})
        assert {(e["method"], e["output"], e["class"]) for e in got} == {("tree", output, class_name)}
        phi = attributions(got, names)
        base = np.array([e["base_value"] for e in got])
        # The negative class is the mirror image: -margin, or 1 - probability.
        expected_phi = sign * phi_ref
        expected_base = sign * base_ref if output == "margin" else (1 - sign) / 2 + sign * base_ref
        np.testing.assert_allclose(phi, expected_phi, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(base, expected_base, rtol=0, atol=TOLERANCE)
        residual = residual_check(got, names)
        assert residual < (2e-4 if output == "margin" else 1e-6), residual
        summary[class_name] = (np.abs(phi - expected_phi).max(),
                               np.abs(base - expected_base).max(), residual)
    record(f"breast-cancer tree {output} vs shap.TreeExplainer", rows=len(X),
           max_abs_attribution_diff=max(s[0] for s in summary.values()),
           max_abs_base_value_diff=max(s[1] for s in summary.values()),
           max_abs_residual=max(s[2] for s in summary.values()))


def test_default_explains_the_predicted_class_margin(server, tree_reference):
    entry, X, explainers = tree_reference
    got = explain(server, "breast-cancer", X[:MAX_ROWS])
    status, predicted = server.post(
        "/models/breast-cancer/predict",
        {"instances": [list(map(float, row)) for row in X[:MAX_ROWS]]})
    assert status == 200
    assert [e["class"] for e in got] == [p["label"] for p in predicted["predictions"]]
    assert {e["output"] for e in got} == {"margin"}
