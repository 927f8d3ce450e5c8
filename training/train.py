"""Train, export and document the models Ferrum Serve serves.

Usage: python training/train.py [--out DIR]   (default DIR: the repository root)

Writes DIR/manifest.json and DIR/models/<name>/1/{model.onnx, background.csv, baseline.json,
snapshot.csv, training_log.json}. Everything except manifest.json (training time, git state) is
byte-identical from run to run: BLAS threads are pinned to 1 before numpy loads, every random
source has a fixed seed, and the ONNX export is checked to be reproducible.

The training log's predictions come from onnxruntime on float32 rows, i.e. from the very model
file and number type the server uses, so the server's /predict can be checked against them.
"""

import os

# Before numpy (or anything importing it) loads: multi-threaded BLAS reductions can change the
# order of float additions and so the trained weights. Values already set by the caller win.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _var in THREAD_VARS:
    os.environ.setdefault(_var, "1")
THREADS = {var: os.environ[var] for var in THREAD_VARS}

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn import datasets, metrics  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPRegressor  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSION = "1"
TEST_SIZE = 0.2
SPLIT_SEED = 42
MODEL_SEED = 42
BACKGROUND_SEED = 0
BACKGROUND_ROWS = 100
GLOBAL_SEED = 0
OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "input"
BIN_RULE = "searchsorted_left"
# The server runs one request per session call; these are the settings the logged predictions
# were computed with (graph optimisation left at onnxruntime's default, ORT_ENABLE_ALL).
ORT_THREADS = {"intra_op_num_threads": 1, "inter_op_num_threads": 1}
ARTIFACTS = {
    "background": "background.csv",
    "baseline": "baseline.json",
    "snapshot": "snapshot.csv",
    "training_log": "training_log.json",
}
LIBRARIES = ("numpy", "scipy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime")


@dataclass
class Spec:
    """What differs between the two models; the pipeline around them is shared."""

    name: str
    task: str  # "classification" | "regression"
    loader: str  # attribute of sklearn.datasets
    feature_view: str
    feature_service: str


SPECS = (
    Spec("breast-cancer", "classification", "load_breast_cancer",
         "breast_cancer_features", "breast_cancer_v1"),
    Spec("diabetes", "regression", "load_diabetes", "diabetes_features", "diabetes_v1"),
)


def build_estimator(spec):
    """The fixed-seed estimator for a model (hyperparameters chosen once, see README)."""
    if spec.task == "classification":
        return GradientBoostingClassifier(
            n_estimators=100, max_depth=3, learning_rate=0.1, random_state=MODEL_SEED)
    # Without early stopping the MLP overfits the 353 training rows (held-out R^2 < 0);
    # early stopping on a seeded 10% validation split plus some L2 gives R^2 ~0.46.
    return Pipeline([
        ("scaler", StandardScaler()),
        ("mlp", MLPRegressor(hidden_layer_sizes=(32, 16), random_state=MODEL_SEED,
                             max_iter=2000, learning_rate_init=0.01, alpha=1.0,
                             early_stopping=True)),
    ])


# --------------------------------------------------------------------------- data


def load_dataset(spec):
    """Features rounded to float32 (what the server feeds the model) and kept as float64.

    Rounding first means the CSV/JSON values, the training data and the served float32
    inputs are all the same numbers, so nothing is lost on the way to the server.
    """
    bunch = getattr(datasets, spec.loader)()
    X = bunch.data.astype(np.float32).astype(np.float64)
    y = bunch.target
    feature_names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    class_labels = [str(c) for c in bunch.target_names] if spec.task == "classification" else None
    if class_labels is not None:
        y = y.astype(np.int64)
    return X, y, feature_names, class_labels


def split(spec, n_rows, y):
    """Original row indices of the train and held-out rows, each sorted ascending."""
    stratify = y if spec.task == "classification" else None
    train_idx, test_idx = train_test_split(
        np.arange(n_rows), test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=stratify)
    return np.sort(train_idx), np.sort(test_idx)


def fmt(value):
    """Shortest text that reads back as the same float64 (what every CSV and JSON value uses)."""
    return repr(float(value))


def csv_bytes(header, rows):
    """Plain comma-separated text, '\\n' line ends, no quoting (no field needs it)."""
    lines = [",".join(header)] + [",".join(row) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def entity_id(spec, index):
    return f"{spec.name}-{int(index)}"


# --------------------------------------------------------------------------- ONNX


def export_onnx(spec, model, n_features):
    """Serialized ONNX bytes that depend only on the fitted model.

    Two things in skl2onnx's output vary between processes and are pinned here: the graph
    name (a random uuid unless given) and the order of opset_import (built from a set, so it
    follows PYTHONHASHSEED); the imports are sorted by domain. Converting twice only guards
    against in-process drift; the cross-process check is the retraining test.
    """
    def convert():
        options = {id(model): {"zipmap": False}} if spec.task == "classification" else None
        onx = convert_sklearn(
            model, name=spec.name.replace("-", "_"),
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset=OPSET, options=options, doc_string="")
        opsets = sorted((o.domain, o.version) for o in onx.opset_import)
        del onx.opset_import[:]
        onx.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets)
        onnx.checker.check_model(onx)
        return onx.SerializeToString(deterministic=True)

    first, second = convert(), convert()
    if first != second:
        raise RuntimeError(f"{spec.name}: skl2onnx produced different bytes for the same model")
    return first


def onnx_io(model_bytes):
    """Input names/shapes, output names and opset imports as the file declares them.

    The opsets are read back because skl2onnx treats target_opset as a ceiling and declares
    the lowest versions its operators need (e.g. {"": 16, "ai.onnx.ml": 1} for target 17/3).
    """
    proto = onnx.load_from_string(model_bytes)
    inputs = [(i.name, [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim])
              for i in proto.graph.input]
    opsets = {o.domain: o.version for o in sorted(proto.opset_import, key=lambda o: o.domain)}
    return inputs, [o.name for o in proto.graph.output], opsets


def ort_session(model_bytes):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = ORT_THREADS["intra_op_num_threads"]
    opts.inter_op_num_threads = ORT_THREADS["inter_op_num_threads"]
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes, sess_options=opts,
                                providers=["CPUExecutionProvider"])


def ort_outputs(session, spec, X):
    """Model outputs, one session call per row (batch of 1) as a /predict request makes.

    Returns (labels int64 [N], probabilities float32 [N, C]) or (values float32 [N],).
    """
    names = ["label", "probabilities"] if spec.task == "classification" else ["variable"]
    per_row = [session.run(names, {INPUT_NAME: X[i:i + 1].astype(np.float32)})
               for i in range(len(X))]
    return tuple(np.concatenate([row[k] for row in per_row]) for k in range(len(names)))


def prediction_json(spec, class_labels, outputs, i):
    """Exactly the JSON object /predict returns for row i: float32 results as their doubles."""
    if spec.task == "classification":
        labels, probs = outputs
        return {
            "label": class_labels[int(labels[i])],
            "probabilities": {c: float(probs[i, k]) for k, c in enumerate(class_labels)},
        }
    (values,) = outputs
    return {"value": float(values[i].reshape(-1)[0])}


def check_agreement(spec, model, outputs, X):
    """Fail loudly if the exported model does not compute what scikit-learn computes."""
    if spec.task == "classification":
        labels, probs = outputs
        if not np.array_equal(labels, model.predict(X)):
            raise AssertionError(f"{spec.name}: onnxruntime labels differ from scikit-learn")
        err = np.max(np.abs(probs.astype(np.float64) - model.predict_proba(X)))
        if err > 1e-5:
            raise AssertionError(f"{spec.name}: probabilities differ by {err:.3g} (> 1e-5)")
    else:
        values = outputs[0].reshape(-1).astype(np.float64)
        expected = model.predict(X)
        rel = np.max(np.abs(values - expected) / np.maximum(np.abs(expected), 1e-12))
        if rel > 1e-3:
            raise AssertionError(f"{spec.name}: predictions differ by {rel:.3g} relative (> 1e-3)")


# --------------------------------------------------------------------------- statistics


def distribution(values):
    """Decile bins of a column for drift checks, valid JSON (no infinities).

    bin_edges are the 9 interior deciles, deduplicated (a binary column such as `sex` has
    fewer); fractions[i] is the share in bin i of (-inf, e1], (e1, e2], ..., (ek, inf), i.e.
    bin = searchsorted(bin_edges, x, side="left"): a value equal to an edge goes to the lower bin.
    """
    values = np.asarray(values, dtype=np.float64)
    quantiles = np.quantile(values, np.linspace(0.0, 1.0, 11))
    edges = np.unique(quantiles[1:-1])
    bins = np.searchsorted(edges, values, side="left")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return {
        "bin_edges": [float(e) for e in edges],
        "fractions": [float(c) / len(values) for c in counts],
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    }


def baseline(spec, feature_names, class_labels, X_train, train_outputs):
    """Training-set distributions of every feature and of the served predictions."""
    features = {name: distribution(X_train[:, j]) for j, name in enumerate(feature_names)}
    if spec.task == "classification":
        labels, probs = train_outputs
        counts = np.bincount(labels, minlength=len(class_labels))
        positive = len(class_labels) - 1
        prediction = {
            "class_fractions": {c: float(counts[k]) / len(labels)
                                for k, c in enumerate(class_labels)},
            "positive_class": class_labels[positive],
            "positive_class_probability": distribution(probs[:, positive].astype(np.float64)),
        }
    else:
        prediction = {"value": distribution(train_outputs[0].reshape(-1).astype(np.float64))}
    return {
        "model": spec.name,
        "version": VERSION,
        "bin_rule": BIN_RULE,
        "n_rows": int(len(X_train)),
        "std_ddof": 0,
        "features": features,
        "prediction": prediction,
    }


def metrics_for(spec, y, outputs):
    """Quality of the served (onnxruntime) predictions."""
    if spec.task == "classification":
        labels, probs = outputs
        p = probs.astype(np.float64)
        return {
            "accuracy": float(metrics.accuracy_score(y, labels)),
            "roc_auc": float(metrics.roc_auc_score(y, p[:, 1])),
            "log_loss": float(metrics.log_loss(y, p, labels=[0, 1])),
        }
    pred = outputs[0].reshape(-1).astype(np.float64)
    return {
        "r2": float(metrics.r2_score(y, pred)),
        "mae": float(metrics.mean_absolute_error(y, pred)),
        "rmse": float(np.sqrt(metrics.mean_squared_error(y, pred))),
    }


def json_safe_params(estimator):
    """get_params(deep=True) minus the nested estimator objects, as plain JSON values."""
    def safe(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return True
        return isinstance(v, (list, tuple)) and all(safe(x) for x in v)

    out = {}
    for key, value in sorted(estimator.get_params(deep=True).items()):
        if isinstance(value, np.generic):
            value = value.item()
        if safe(value):
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


# --------------------------------------------------------------------------- provenance


def git_state():
    """(commit, dirty) of the repository holding this script; ('unknown', True) without git."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    try:
        dirty = commit == "unknown" or bool(git("status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError):
        dirty = True
    return commit, dirty


def library_versions():
    versions = {"python": platform.python_version()}
    versions.update({lib: metadata.version(lib) for lib in LIBRARIES})
    return versions


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def json_bytes(obj, sort_keys=False):
    # allow_nan=False: NaN/Infinity are not JSON and would break strict readers.
    return (json.dumps(obj, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n").encode()


# --------------------------------------------------------------------------- pipeline


def train_one(spec, models_dir):
    """Train, export, verify and write one model; return its manifest entry."""
    # Reset global generators per model so one model's training can't shift the other's.
    random.seed(GLOBAL_SEED)
    np.random.seed(GLOBAL_SEED)

    X, y, feature_names, class_labels = load_dataset(spec)
    train_idx, test_idx = split(spec, len(X), y)
    X_train, y_train, X_test, y_test = X[train_idx], y[train_idx], X[test_idx], y[test_idx]

    model = build_estimator(spec)
    started = time.perf_counter()
    model.fit(X_train, y_train)
    training_seconds = time.perf_counter() - started

    model_bytes = export_onnx(spec, model, len(feature_names))
    inputs, output_names, opsets = onnx_io(model_bytes)
    outputs_map = ({"label": "label", "probabilities": "probabilities"}
                   if spec.task == "classification" else {"value": "variable"})
    signature_ok = (len(inputs) == 1 and inputs[0][0] == INPUT_NAME
                    and inputs[0][1][1:] == [len(feature_names)]
                    and sorted(output_names) == sorted(outputs_map.values()))
    if not signature_ok:
        raise AssertionError(f"{spec.name}: unexpected ONNX signature {inputs} -> {output_names}")

    session = ort_session(model_bytes)
    test_out = ort_outputs(session, spec, X_test)
    train_out = ort_outputs(session, spec, X_train)
    check_agreement(spec, model, test_out, X_test)

    out_dir = models_dir / spec.name / VERSION
    out_dir.mkdir(parents=True, exist_ok=True)

    background_rows = np.sort(np.random.RandomState(BACKGROUND_SEED).choice(
        len(train_idx), BACKGROUND_ROWS, replace=False))
    background = csv_bytes(feature_names,
                           [[fmt(v) for v in X_train[r]] for r in background_rows])

    snapshot = csv_bytes(["entity_id"] + feature_names,
                         [[entity_id(spec, i)] + [fmt(v) for v in X[i]] for i in test_idx])

    # The training split as canonical CSV (same layout as snapshot.csv plus the target);
    # its sha256 identifies exactly which data the model was fitted on.
    target_fmt = str if spec.task == "classification" else fmt
    training_split = csv_bytes(
        ["entity_id"] + feature_names + ["target"],
        [[entity_id(spec, i)] + [fmt(v) for v in X[i]] + [target_fmt(y[i])] for i in train_idx])

    training_log = {
        "model": spec.name,
        "version": VERSION,
        "rows": [
            {
                "entity_id": entity_id(spec, i),
                "features": {name: float(X[i, j]) for j, name in enumerate(feature_names)},
                "prediction": prediction_json(spec, class_labels, test_out, k),
            }
            for k, i in enumerate(test_idx)
        ],
    }

    files = {
        "model.onnx": model_bytes,
        ARTIFACTS["background"]: background,
        ARTIFACTS["baseline"]: json_bytes(
            baseline(spec, feature_names, class_labels, X_train, train_out)),
        ARTIFACTS["snapshot"]: snapshot,
        ARTIFACTS["training_log"]: json_bytes(training_log),
    }
    for filename, data in files.items():
        (out_dir / filename).write_bytes(data)

    entry = {
        "name": spec.name,
        "version": VERSION,
        "task": spec.task,
        "path": f"{spec.name}/{VERSION}",
        "feature_names": feature_names,
        "onnx": {
            "file": "model.onnx",
            "sha256": sha256_hex(model_bytes),
            "input": INPUT_NAME,
            "outputs": outputs_map,
            "opset": opsets,
            "target_opset": OPSET,
        },
        "artifacts": ARTIFACTS,
        "dataset": {
            "source": f"sklearn.datasets.{spec.loader}",
            "snapshot_id": sha256_hex(training_split),
            "feature_snapshot_id": sha256_hex(snapshot),
            "n_train": int(len(train_idx)),
            "n_test": int(len(test_idx)),
            "test_size": TEST_SIZE,
            "split_seed": SPLIT_SEED,
            "stratified": spec.task == "classification",
            "feature_dtype": "float32",
        },
        "feature_store": {
            "entity": "patient",
            "join_key": "entity_id",
            "feature_view": spec.feature_view,
            "feature_service": spec.feature_service,
        },
        "seeds": {
            "split": SPLIT_SEED,
            "model_random_state": MODEL_SEED,
            "background": BACKGROUND_SEED,
            "numpy_global": GLOBAL_SEED,
            "python_random": GLOBAL_SEED,
        },
        "hyperparameters": {"estimator": type(model).__name__, **json_safe_params(model)},
        "metrics": {
            "source": "onnxruntime",
            "test": metrics_for(spec, y_test, test_out),
            "train": metrics_for(spec, y_train, train_out),
        },
        "training": {
            "library_versions": library_versions(),
            "threads": THREADS,
            "onnxruntime_session": {**ORT_THREADS, "execution_mode": "sequential",
                                    "graph_optimization_level": "ORT_ENABLE_ALL",
                                    "batch_size": 1},
            "training_seconds": round(training_seconds, 3),
        },
    }
    if spec.task == "classification":
        entry["class_labels"] = class_labels
    return entry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT,
                        help="directory for manifest.json and models/ (default: repo root)")
    args = parser.parse_args(argv)

    commit, dirty = git_state()  # before writing, so our own outputs don't count as edits
    models_dir = args.out / "models"
    entries = []
    for spec in SPECS:
        entry = train_one(spec, models_dir)
        print(f"{spec.name}: test {json.dumps(entry['metrics']['test'])} "
              f"sha256 {entry['onnx']['sha256']}", file=sys.stderr)
        entries.append(entry)

    manifest = {
        "schema_version": 1,
        "git_commit": commit,
        "git_dirty": dirty,
        "default_model": SPECS[0].name,
        "models": entries,
    }
    (args.out / "manifest.json").write_bytes(json_bytes(manifest, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
