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
import onnxruntime as ort
import pytest
import shap

from onnx_trees import margin_model_bytes, shap_tree_model

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


@pytest.fixture(scope="module")
def tree_reference():
    entry = ENTRIES["breast-cancer"]
    path = model_dir(entry) / entry["onnx"]["file"]
    bg = background(entry)
    trees = shap_tree_model(path)
    # skl2onnx's binary gradient boosting: one margin f, classes (-f, +f), logistic on top.
    assert (trees.post_transform, trees.classes) == ("LOGISTIC", [(0, -1.0, 0.0), (0, 1.0, 0.0)])
    rows = log_rows(entry)
    X = np.vstack([rows, perturbed(rows, bg, 24, seed=2, thresholds=trees.thresholds)])
    explainers = {
        output: shap.TreeExplainer(trees.dict_model, data=bg,
                                   feature_perturbation="interventional", model_output=output)
        for output in ("raw", "probability")
    }
    # The dict model is the ONNX model: its margins are ONNX Runtime's (up to float32 sums).
    margins = session(margin_model_bytes(path))
    ort_margin = margins.run(None, {entry["onnx"]["input"]: X.astype(np.float32)})[1]
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
