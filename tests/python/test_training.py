"""Checks that the committed models and artifacts are what training/train.py produces, and
that they agree with each other (manifest <-> files <-> ONNX graph <-> training log).

Run inside the venv from `scripts/python-env.sh requirements/dev.lock`:
    pytest tests/python -q
"""

import csv
import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "training" / "train.py"
MANIFEST = REPO / "manifest.json"
MODELS = REPO / "models"
BYTE_IDENTICAL = ("model.onnx", "background.csv", "baseline.json", "snapshot.csv",
                  "training_log.json")


def sha256_file(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_csv(path):
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.fixture(scope="session")
def manifest():
    assert MANIFEST.is_file(), "manifest.json missing: run `python training/train.py` first"
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="session")
def entries(manifest):
    return {m["name"]: m for m in manifest["models"]}


def model_dir(entry, root=MODELS):
    return root / entry["path"]


@pytest.fixture(scope="session")
def retrained(tmp_path_factory):
    """A fresh training run into a temporary directory, with this interpreter."""
    out = tmp_path_factory.mktemp("retrain")
    subprocess.run([sys.executable, str(TRAIN), "--out", str(out)], check=True, cwd=REPO)
    return out


def session(path):
    """The same settings train.py predicted with: one thread, default graph optimisation."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def test_manifest_shape(manifest, entries):
    assert manifest["schema_version"] == 1
    assert manifest["default_model"] in entries
    assert set(entries) == {"breast-cancer", "diabetes"}
    assert entries["breast-cancer"]["class_labels"] == ["malignant", "benign"]
    assert "class_labels" not in entries["diabetes"]
    # sorted keys, indent 2, trailing newline: the exact form train.py writes
    assert MANIFEST.read_text() == json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def test_manifest_was_trained_from_a_committed_tree_in_history(manifest):
    """The committed models come from committed code: scripts/retrain-clean.sh trains in a
    clean clone of HEAD, so the manifest says git_dirty false and names a commit that is in
    this branch's history (an ancestor of HEAD)."""
    assert manifest["git_dirty"] is False, "retrain with scripts/retrain-clean.sh"
    commit = manifest["git_commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit), commit
    ancestor = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit,
                               "HEAD"], capture_output=True, text=True)
    assert ancestor.returncode == 0, (
        f"{commit} is not in HEAD's history ({ancestor.stderr.strip()}): "
        "retrain with scripts/retrain-clean.sh")


def test_retraining_is_byte_identical(retrained, entries):
    new_manifest = json.loads((retrained / "manifest.json").read_text())
    new_entries = {m["name"]: m for m in new_manifest["models"]}
    assert set(new_entries) == set(entries)
    for name, entry in entries.items():
        committed, fresh = model_dir(entry), model_dir(new_entries[name], retrained / "models")
        onnx_sha = sha256_file(fresh / "model.onnx")
        assert onnx_sha == sha256_file(committed / "model.onnx"), name
        assert onnx_sha == entry["onnx"]["sha256"] == new_entries[name]["onnx"]["sha256"], name
        for filename in BYTE_IDENTICAL:
            assert (fresh / filename).read_bytes() == (committed / filename).read_bytes(), \
                f"{name}/{filename} differs after retraining"
        # everything but the timing is reproducible in the manifest entry too
        for key in ("dataset", "metrics", "hyperparameters", "onnx", "feature_names"):
            assert new_entries[name][key] == entry[key], f"{name}: manifest {key} differs"


def test_manifest_hashes_match_files(entries):
    for name, entry in entries.items():
        d = model_dir(entry)
        assert sha256_file(d / entry["onnx"]["file"]) == entry["onnx"]["sha256"], name
        snapshot = d / entry["artifacts"]["snapshot"]
        assert sha256_file(snapshot) == entry["dataset"]["feature_snapshot_id"], name
        for artifact in entry["artifacts"].values():
            assert (d / artifact).is_file(), f"{name}: {artifact} missing"


def test_onnx_signature_matches_manifest(entries):
    for name, entry in entries.items():
        proto = onnx.load(str(model_dir(entry) / entry["onnx"]["file"]))
        onnx.checker.check_model(proto)
        (inp,) = proto.graph.input
        assert inp.name == entry["onnx"]["input"]
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims[1:] == [len(entry["feature_names"])], name
        outputs = {o.name for o in proto.graph.output}
        assert set(entry["onnx"]["outputs"].values()) <= outputs, name
        assert {o.domain: o.version for o in proto.opset_import} == entry["onnx"]["opset"]
        assert len(set(entry["feature_names"])) == len(entry["feature_names"])
        assert all(re.fullmatch(r"[a-z0-9_]+", f) for f in entry["feature_names"]), name


def test_training_log_rows_are_in_snapshot(entries):
    for name, entry in entries.items():
        d = model_dir(entry)
        header, rows = read_csv(d / entry["artifacts"]["snapshot"])
        assert header == ["entity_id"] + entry["feature_names"]
        assert len(rows) == entry["dataset"]["n_test"]
        ids = [r[0] for r in rows]
        indices = [int(i.rsplit("-", 1)[1]) for i in ids]
        assert all(i.startswith(f"{name}-") for i in ids) and indices == sorted(set(indices))
        snapshot = {r[0]: [float(v) for v in r[1:]] for r in rows}

        log = json.loads((d / entry["artifacts"]["training_log"]).read_text())
        assert (log["model"], log["version"]) == (name, entry["version"])
        assert len(log["rows"]) >= 25
        assert [r["entity_id"] for r in log["rows"]] == ids[:len(log["rows"])]
        for row in log["rows"]:
            assert list(row["features"]) == entry["feature_names"]
            assert list(row["features"].values()) == snapshot[row["entity_id"]]


def test_background(entries):
    for name, entry in entries.items():
        header, rows = read_csv(model_dir(entry) / entry["artifacts"]["background"])
        assert header == entry["feature_names"], name
        assert len(rows) == 100 and all(len(r) == len(header) for r in rows), name
        values = np.array(rows, dtype=np.float64)
        # every value is a float32 as served, written as its exact double
        assert np.array_equal(values.astype(np.float32).astype(np.float64), values), name


def check_distribution(dist, where):
    edges, fractions = dist["bin_edges"], dist["fractions"]
    assert len(fractions) == len(edges) + 1, where
    assert all(a < b for a, b in zip(edges, edges[1:])), where
    assert all(f >= 0 for f in fractions), where
    assert math.isclose(sum(fractions), 1.0, abs_tol=1e-12), where
    assert dist["min"] <= dist["mean"] <= dist["max"] and dist["std"] >= 0, where


def test_baseline(entries):
    for name, entry in entries.items():
        base = json.loads((model_dir(entry) / entry["artifacts"]["baseline"]).read_text())
        assert base["bin_rule"] == "searchsorted_left"
        assert list(base["features"]) == entry["feature_names"]
        for feature, dist in base["features"].items():
            check_distribution(dist, f"{name}.{feature}")
        pred = base["prediction"]
        if entry["task"] == "classification":
            assert list(pred["class_fractions"]) == entry["class_labels"]
            assert math.isclose(sum(pred["class_fractions"].values()), 1.0, abs_tol=1e-12)
            check_distribution(pred["positive_class_probability"], f"{name}.prediction")
        else:
            check_distribution(pred["value"], f"{name}.prediction")


def test_training_log_predictions_recompute_exactly(entries):
    for name, entry in entries.items():
        d = model_dir(entry)
        sess = session(d / entry["onnx"]["file"])
        outputs = entry["onnx"]["outputs"]
        log = json.loads((d / entry["artifacts"]["training_log"]).read_text())
        for row in log["rows"]:
            x = np.array([list(row["features"].values())], dtype=np.float32)
            if entry["task"] == "classification":
                label, probs = sess.run([outputs["label"], outputs["probabilities"]],
                                        {entry["onnx"]["input"]: x})
                labels = entry["class_labels"]
                expected = {"label": labels[int(label[0])],
                            "probabilities": {c: float(probs[0, k])
                                              for k, c in enumerate(labels)}}
            else:
                (value,) = sess.run([outputs["value"]], {entry["onnx"]["input"]: x})
                expected = {"value": float(value.reshape(-1)[0])}
            assert row["prediction"] == expected, f"{name} {row['entity_id']}"


def test_lock_pins_the_onnxruntime_the_server_loads():
    """The server's libonnxruntime comes from the wheel fetch-onnxruntime.sh pins."""
    script = REPO / "scripts" / "fetch-onnxruntime.sh"
    if not script.is_file():
        pytest.skip("scripts/fetch-onnxruntime.sh not present")
    match = re.search(r"^ORT_VERSION=(\S+)", script.read_text(), re.M)
    if not match:
        pytest.skip("no ORT_VERSION in fetch-onnxruntime.sh")
    for lock in ("train.lock", "dev.lock"):
        text = (REPO / "requirements" / lock).read_text()
        assert f"\nonnxruntime=={match.group(1)} " in text, lock
    assert ort.__version__ == match.group(1)
