"""Builds the ONNX models users bring (issue #13), exported with the pinned converters the way users
export them, and records what the pinned onnxruntime (Python) and shap answer on fixed rows, so that
the server can be tested against them.

Usage:  python build.py OUTDIR          build into OUTDIR (created; must be empty or absent)
        python build.py --cached ROOT   build once into ROOT/user-models-<hash> (the hash of this
                                        file and the venv's lock file) and print that directory

OUTDIR gets a Triton-layout model repository plus, per model NAME, its reference data:

  OUTDIR/fixtures.json            what each model is: library versions, inputs/outputs as the ONNX
                                  file declares them, task, class labels, feature names, explanation
  OUTDIR/NAME/1/model.onnx        the exported model
  OUTDIR/NAME/reference.csv       the input rows (header: feature names, see below)
  OUTDIR/NAME/background.csv      the explanation background rows (same columns; not for the CNN)
  OUTDIR/NAME/expected.json       onnxruntime's outputs on reference.csv (all of them, by name) and
                                  the shap attributions of those rows over background.csv

CSV columns are features. A model with one 2-D input [N, F] takes row r as the F columns in
order; a model with one input per column (ColumnTransformer) takes column C as input C, shape
[N, 1]; the CNN's columns pixel_0 .. pixel_63 are pixels[n, 0, i // 8, i % 8]. Float values are
written as the shortest decimal of the float64-widened value (Python's repr), so parsing as float64
and narrowing gives the exact float32 (and parsing straight to float32 gives the same bits);
integers as integers; strings as they are.

Everything is deterministic: fixed seeds, scikit-learn's bundled datasets or generated data,
single-threaded training. Two builds give byte-identical files.
"""

import copy
import csv
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import lightgbm
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
import pandas as pd
import shap
import skl2onnx
import sklearn
import xgboost
from onnx import TensorProto, helper, numpy_helper
from onnxmltools.convert.common.data_types import FloatTensorType as MLFloatTensorType
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import (DoubleTensorType, FloatTensorType, Int64TensorType,
                                        StringTensorType)
from sklearn import datasets
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HERE = Path(__file__).resolve()
REPO = HERE.parents[3]
LOCK = REPO / "requirements" / "dev.lock"

REFERENCE_ROWS = 32
BACKGROUND_ROWS = 16
# The converters name the graph with a random uuid4 unless told a name: the one option we set,
# so that two builds give byte-identical files.
GRAPH_NAME = "ferrum_fixture"
# onnx 1.23 writes IR version 14 by default; onnxruntime 1.31 reads up to 13 (hand-written graphs).
IR_VERSION = 9

VERSIONS = {
    "python": platform.python_version(),
    "numpy": np.__version__,
    "pandas": pd.__version__,
    "scikit-learn": sklearn.__version__,
    "skl2onnx": skl2onnx.__version__,
    "onnxmltools": onnxmltools.__version__,
    "lightgbm": lightgbm.__version__,
    "xgboost": xgboost.__version__,
    "onnx": onnx.__version__,
    "onnxruntime": ort.__version__,
    "shap": shap.__version__,
}


# ---------------------------------------------------------------------------------------------
# Tables: the rows of reference.csv / background.csv, one numpy array per feature column.

@dataclass
class Table:
    """Rows as named columns (features), each a 1-D numpy array of the dtype the model takes."""
    columns: dict

    @property
    def names(self):
        return list(self.columns)

    def take(self, index):
        return Table({k: v[index] for k, v in self.columns.items()})

    def __len__(self):
        return len(next(iter(self.columns.values())))


def one_matrix(input_name):
    """Feeds for a model with one 2-D input [N, F]: the columns side by side, in order."""
    def feeds(table):
        return {input_name: np.column_stack(list(table.columns.values()))}
    return feeds


def one_input_per_column(table):
    """Feeds for a model with one [N, 1] input per column (a ColumnTransformer export)."""
    return {k: v.reshape(-1, 1) for k, v in table.columns.items()}


def image_input(input_name, height, width):
    """Feeds for an image model [N, 1, H, W] whose columns are its pixels, row-major."""
    def feeds(table):
        flat = np.column_stack(list(table.columns.values()))
        return {input_name: flat.reshape(-1, 1, height, width)}
    return feeds


def csv_cell(value):
    if isinstance(value, (np.floating, float)):
        return repr(float(value))
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    return str(value)


def write_csv(path, table):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(table.names)
        for r in range(len(table)):
            writer.writerow([csv_cell(table.columns[c][r]) for c in table.names])


# ---------------------------------------------------------------------------------------------
# Explanations.

@dataclass
class Explanation:
    """shap attributions of the reference rows over the background, in one output space.

    values[row][feature][output], base_values[output], output_values[row][output] (the explained
    function at each row: sum over features of values + base_values equals it)."""
    method: str
    space: str
    outputs: list
    base_values: np.ndarray
    values: np.ndarray
    output_values: np.ndarray

    def as_json(self):
        return {"method": self.method, "space": self.space, "outputs": self.outputs,
                "base_values": floats(self.base_values), "values": floats(self.values),
                "output_values": floats(self.output_values)}


def as_rows_features_outputs(values):
    values = np.asarray(values, dtype=np.float64)
    return values[:, :, None] if values.ndim == 2 else values


# How close the native model's margin and the same margin read from ONNX Runtime's float32
# outputs must be: the trees agree on every branch (assert_same_branches), so what is left is
# float32 summation order and, for LightGBM, the logit of a float32 probability.
NATIVE_VS_ONNX_TOLERANCE = 1e-4


def tree_explanation(native, reference, background, space, outputs, margin, onnx_margin):
    """shap.TreeExplainer on the NATIVE model, interventional over the background, raw margins.

    `reference` and `background` are the float64 matrices the native trees are fed (the float32
    values the ONNX trees see, widened); `margin(x)` is the native model's raw output [rows, outs]
    that the attributions add up to; `onnx_margin` the same read from ONNX Runtime's outputs."""
    explainer = shap.TreeExplainer(native, data=background, feature_perturbation="interventional",
                                   model_output="raw")
    values = as_rows_features_outputs(explainer.shap_values(reference, check_additivity=False))
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    output = np.asarray(margin(reference), dtype=np.float64).reshape(len(reference), -1)
    scale = max(1.0, np.abs(output).max())
    additivity = np.abs(values.sum(axis=1) + base - output).max()
    # XGBoost predicts in float32: its margin is rounded to float32 (~1e-7 relative).
    assert additivity < 1e-6 * scale, \
        f"shap attributions do not add up to the native margin: {additivity}"
    gap = np.abs(output - np.asarray(onnx_margin).reshape(output.shape)).max()
    assert gap < NATIVE_VS_ONNX_TOLERANCE * scale, \
        f"the native model and ONNX Runtime differ by {gap}"
    return Explanation(
        method=f"shap.TreeExplainer({type(native).__name__}, data=background, "
               "feature_perturbation='interventional', model_output='raw')",
        space=space, outputs=outputs, base_values=base, values=values, output_values=output)


def onnx_output(sess, fixture, index, zipmap_labels=None):
    """Output `index` of ONNX Runtime on the reference rows, as a float64 matrix (a ZipMap as
    probabilities in label order)."""
    value = sess.run(None, fixture.feeds(fixture.reference))[index]
    if zipmap_labels is not None:
        return zipmap_matrix(value, zipmap_labels)
    return np.asarray(value, dtype=np.float64).reshape(len(fixture.reference), -1)


def onnx_thresholds(model):
    """Per feature, the distinct split thresholds of the model's one ONNX tree ensemble, and the
    split modes it uses."""
    (node,) = [n for n in model.graph.node
               if n.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor")]
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    by_feature, modes = {}, set()
    for feature, value, mode in zip(a["nodes_featureids"], a["nodes_values"], a["nodes_modes"]):
        if mode != b"LEAF":
            modes.add(mode.decode())
            by_feature.setdefault(feature, set()).add(float(np.float32(value)))
    return {f: np.array(sorted(v)) for f, v in by_feature.items()}, modes


def assert_same_branches(native, model, mode, *matrices):
    """Every value of the rows falls on the same side of each split in the native model and in
    the ONNX file (which stores thresholds in float32). Then every row, and every mix of a row
    with a background row (what interventional SHAP evaluates), takes the same branches in both.

    `native`: per feature index, the native model's thresholds (float64)."""
    onnx_by_feature, modes = onnx_thresholds(model)
    assert modes == {mode}, f"expected {mode} splits only, the ONNX file has {modes}"
    assert sorted(native) == sorted(onnx_by_feature), "split features differ"
    below = np.less_equal if mode == "BRANCH_LEQ" else np.less
    values = np.vstack(matrices).astype(np.float64)
    for feature, thresholds in native.items():
        native_t = np.array(sorted(set(thresholds)))
        onnx_t = onnx_by_feature[feature]
        assert len(native_t) == len(onnx_t), f"feature {feature}: thresholds merged in float32"
        column = values[:, feature][:, None]
        disagree = below(column, native_t) != below(column, onnx_t)
        assert not disagree.any(), f"feature {feature}: a row sits between a native threshold " \
                                   "and its float32 copy in the ONNX file"


def forest_thresholds(forest):
    result = {}
    for tree in (e.tree_ for e in forest.estimators_):
        split = tree.children_left != -1
        for feature, threshold in zip(tree.feature[split], tree.threshold[split]):
            result.setdefault(int(feature), []).append(float(threshold))
    return result


def rows_between_nearest_and_floor(thresholds, matrix):
    """Rows with a value above a threshold t but equal to t rounded to the nearest float32."""
    rows = set()
    for feature, ts in thresholds.items():
        ts = np.array(ts)
        nearest = ts.astype(np.float32).astype(np.float64)
        column = matrix[:, feature].astype(np.float64)[:, None]
        hit = (column > ts) & (column == nearest)
        rows.update(np.nonzero(hit.any(axis=1))[0].tolist())
    return sorted(rows)


def floored_forest(forest):
    """A copy of the forest whose thresholds are the largest float32 <= each: the thresholds
    skl2onnx writes, and the same decisions on every float32 input."""
    native = copy.deepcopy(forest)
    for tree in (e.tree_ for e in native.estimators_):
        threshold = tree.threshold
        nearest = threshold.astype(np.float32)
        floored = np.where(nearest.astype(np.float64) > threshold,
                           np.nextafter(nearest, np.float32(-np.inf)), nearest)
        threshold[:] = floored.astype(np.float64)
    return native


def lightgbm_thresholds(booster):
    result = {}

    def walk(node):
        if "split_feature" in node:
            assert node["decision_type"] == "<=", "numerical splits only"
            result.setdefault(node["split_feature"], []).append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])
    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return result


def xgboost_thresholds(model):
    """From the booster's JSON model (full float32 precision; the text dumps round)."""
    saved = json.loads(model.get_booster().save_raw("json"))
    result = {}
    for tree in saved["learner"]["gradient_booster"]["model"]["trees"]:
        for left, feature, threshold in zip(tree["left_children"], tree["split_indices"],
                                            tree["split_conditions"]):
            if left != -1:
                result.setdefault(int(feature), []).append(float(np.float32(threshold)))
    return result


def exact_explanation(function, reference, background, space, outputs):
    """shap.ExactExplainer of `function` (numeric feature matrix -> [rows, outputs]), exact
    interventional Shapley values over every background row (the Independent masker)."""
    masker = shap.maskers.Independent(background, max_samples=len(background))
    explainer = shap.ExactExplainer(function, masker)
    result = explainer(reference, silent=True)
    values = as_rows_features_outputs(result.values)
    base = np.asarray(result.base_values, dtype=np.float64).reshape(len(reference), -1)
    assert np.all(base == base[0]), "the base value is the background mean, the same per row"
    return Explanation(
        method="shap.ExactExplainer(onnxruntime session, shap.maskers.Independent(background, "
               "max_samples=len(background)))",
        space=space, outputs=outputs, base_values=base[0], values=values,
        output_values=np.asarray(function(reference), dtype=np.float64).reshape(len(reference), -1))


class Coded:
    """A table as the numeric matrix shap maskers need: string columns become category codes,
    turned back into the strings before the model is run (a string value is swapped whole)."""

    def __init__(self, *tables):
        self.names = tables[0].names
        self.categories = {}
        for name in self.names:
            if tables[0].columns[name].dtype == object:
                values = np.concatenate([t.columns[name] for t in tables])
                self.categories[name] = np.array(sorted(set(values)), dtype=object)
        self.dtypes = {n: tables[0].columns[n].dtype for n in self.names}

    def encode(self, table):
        cols = []
        for name in self.names:
            column = table.columns[name]
            if name in self.categories:
                column = np.searchsorted(self.categories[name], column)
            cols.append(column.astype(np.float64))
        return np.column_stack(cols)

    def decode(self, matrix):
        columns = {}
        for j, name in enumerate(self.names):
            if name in self.categories:
                columns[name] = self.categories[name][matrix[:, j].astype(np.int64)]
            else:
                columns[name] = matrix[:, j].astype(self.dtypes[name])
        return Table(columns)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime and the exact record of its outputs.

def session(model_bytes):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # LightGBM's label [1] shape warning on every run
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def floats(array):
    """Numbers as JSON: each float is Python's repr of the float64 (widened) value: exact."""
    return np.asarray(array).tolist()


def record_output(declared_type, value):
    if isinstance(value, list):  # ZipMap: one {label: probability} per row
        key_dtype = "int64" if isinstance(next(iter(value[0])), int) else "string"
        return {"type": declared_type, "key_dtype": key_dtype, "value_dtype": "float32",
                "values": [[[k, float(np.float32(v))] for k, v in row.items()] for row in value]}
    value = np.asarray(value)
    dtype = "string" if value.dtype == object else str(value.dtype)
    flat = value.ravel().tolist()
    return {"type": declared_type, "dtype": dtype, "shape": list(value.shape), "values": flat}


def run_outputs(sess, feeds):
    """Every output of the model on the feeds, in one run, by name, exactly."""
    results = sess.run(None, feeds)
    return {o.name: record_output(o.type, v) for o, v in zip(sess.get_outputs(), results)}


def run_outputs_one_by_one(sess, fixture):
    """Every output with each reference row run alone (batch 1), concatenated in row order.

    Not the same bits as one batched run for every model: ONNX Runtime's float32 Gemm/MatMul
    kernels sum in another order for one row than for 32 (seen: the linear models)."""
    runs = [sess.run(None, fixture.feeds(fixture.reference.take(slice(r, r + 1))))
            for r in range(len(fixture.reference))]
    outputs = {}
    for i, o in enumerate(sess.get_outputs()):
        parts = [run[i] for run in runs]
        joined = sum(parts, []) if isinstance(parts[0], list) else np.concatenate(parts)
        outputs[o.name] = record_output(o.type, joined)
    return outputs


def zipmap_matrix(rows, labels):
    return np.array([[row[label] for label in labels] for row in rows], dtype=np.float64)


def type_string(type_proto):
    """The ONNX type as onnxruntime names it: tensor(float), seq(map(int64,tensor(float)))."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({ONNX_ELEMENT_NAMES[type_proto.tensor_type.elem_type]})"
    if kind == "sequence_type":
        return f"seq({type_string(type_proto.sequence_type.elem_type)})"
    if kind == "map_type":
        key = ONNX_ELEMENT_NAMES[type_proto.map_type.key_type]
        return f"map({key},{type_string(type_proto.map_type.value_type)})"
    raise ValueError(f"unexpected ONNX type {kind}")


ONNX_ELEMENT_NAMES = {
    TensorProto.FLOAT: "float", TensorProto.DOUBLE: "double", TensorProto.FLOAT16: "float16",
    TensorProto.INT8: "int8", TensorProto.INT16: "int16", TensorProto.INT32: "int32",
    TensorProto.INT64: "int64", TensorProto.UINT8: "uint8", TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32", TensorProto.UINT64: "uint64", TensorProto.BOOL: "bool",
    TensorProto.STRING: "string",
}


def declared(value_infos):
    """Inputs or outputs as the ONNX file declares them: name, type, shape (int, a dim_param
    name, or null for an unnamed dynamic dimension; null shape for non-tensors)."""
    result = []
    for v in value_infos:
        shape = None
        if v.type.WhichOneof("value") == "tensor_type" and v.type.tensor_type.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value")
                     else (d.dim_param if d.HasField("dim_param") else None)
                     for d in v.type.tensor_type.shape.dim]
        result.append({"name": v.name, "type": type_string(v.type), "shape": shape})
    return result


# ---------------------------------------------------------------------------------------------
# The fixtures.

@dataclass
class Fixture:
    name: str
    description: str
    exported_with: str
    task: str  # "classification", "regression" or "tensors" (no label output: named tensors)
    class_labels: Optional[list]
    model: onnx.ModelProto
    feeds: Callable
    reference: Table
    background: Optional[Table]
    explain: Optional[Callable]  # (fixture, session) -> Explanation
    notes: list = field(default_factory=list)


def split_rows(n, seed):
    """Disjoint reference and background row indices out of n rows, fixed by seed."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:REFERENCE_ROWS]), np.sort(order[REFERENCE_ROWS:REFERENCE_ROWS + BACKGROUND_ROWS])


def matrix_table(x, names):
    return Table({name: x[:, j] for j, name in enumerate(names)})


def snake(names):
    return ["_".join(n.replace("(cm)", "").replace("/", " ").split()).lower() for n in names]


def onnx_explanation(space, outputs, to_matrix):
    """ExactExplainer over the ONNX model itself; `to_matrix(session outputs) -> [rows, outs]`."""
    def explain(fixture, sess):
        coded = Coded(fixture.reference, fixture.background)

        def function(matrix):
            return to_matrix(sess.run(None, fixture.feeds(coded.decode(matrix))))
        return exact_explanation(function, coded.encode(fixture.reference),
                                 coded.encode(fixture.background), space, outputs)
    return explain


def probabilities_of(output_index, labels):
    """The probabilities matrix (columns in class label order) of a ZipMap output."""
    return lambda results: zipmap_matrix(results[output_index], labels)


def column_of(output_index):
    return lambda results: np.asarray(results[output_index], dtype=np.float64).reshape(
        len(results[output_index]), -1)


def logreg_zipmap():
    data = datasets.load_iris()
    x, y = data.data.astype(np.float32), data.target
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    model = convert_sklearn(clf, initial_types=[("float_input", FloatTensorType([None, 4]))],
                            name=GRAPH_NAME)
    ref, bg = split_rows(len(x), 1)
    names = snake(data.feature_names)
    labels = [int(c) for c in clf.classes_]
    return Fixture(
        name="logreg-zipmap",
        description="scikit-learn LogisticRegression on iris (3 classes), skl2onnx defaults: "
                    "a ZipMap probability output keyed by int64 class labels",
        exported_with="skl2onnx.convert_sklearn(clf, initial_types=[('float_input', "
                      "FloatTensorType([None, 4]))])",
        task="classification", class_labels=labels, model=model,
        feeds=one_matrix("float_input"),
        reference=matrix_table(x[ref], names), background=matrix_table(x[bg], names),
        explain=onnx_explanation("probability of each class (output_probability, by label)",
                                 [str(c) for c in labels], probabilities_of(1, labels)))


def scaled_forest():
    data = datasets.load_wine()
    x, y = data.data.astype(np.float32), data.target
    pipe = Pipeline([("scale", StandardScaler()),
                     ("forest", RandomForestClassifier(n_estimators=20, max_depth=4,
                                                       random_state=0, n_jobs=1))]).fit(x, y)
    model = convert_sklearn(pipe, initial_types=[("float_input", FloatTensorType([None, 13]))],
                            name=GRAPH_NAME)
    ref, bg = split_rows(len(x), 2)
    names = snake(data.feature_names)
    labels = [int(c) for c in pipe.classes_]
    forest = pipe.named_steps["forest"]

    def explain(fixture, sess):
        # skl2onnx stores each float64 split threshold t as the largest float32 <= t, which keeps
        # scikit-learn's `x <= t` for every float32 x; shap rounds thresholds to the NEAREST
        # float32 instead and then disagrees with the model on rows sitting in between (seen:
        # additivity off by 0.1 on one reference row). Giving shap the floored thresholds is
        # the same model on float32 inputs, and exact in float32.
        native = floored_forest(forest)
        # The native trees must see the very float32 values the ONNX trees see: the Scaler's
        # output as ONNX Runtime computes it (float32), not scikit-learn's float64 scaling.
        scaled = scaler_output(fixture.model)
        ref_s, bg_s = (scaled(fixture.feeds(t)) for t in (fixture.reference, fixture.background))
        assert_same_branches(forest_thresholds(forest), fixture.model, "BRANCH_LEQ", ref_s, bg_s)
        on_edge = rows_between_nearest_and_floor(forest_thresholds(forest), ref_s)
        fixture.notes.append(f"Reference rows {on_edge} (0-based) hold a scaled value v with "
                             "t < v == nearest_float32(t) for a split threshold t: they go right, "
                             "and a reader that rounds thresholds to the nearest float32 sends "
                             "them left.")
        assert np.array_equal(native.predict_proba(ref_s), forest.predict_proba(ref_s))
        return tree_explanation(native, ref_s.astype(np.float64), bg_s.astype(np.float64),
                                "probability of each class: a random forest's raw output is the "
                                "mean of its trees' leaf probabilities", [str(c) for c in labels],
                                native.predict_proba, onnx_output(sess, fixture, 1, labels))
    return Fixture(
        name="scaled-forest",
        description="Pipeline(StandardScaler, RandomForestClassifier(20 trees, depth 4)) on wine "
                    "(3 classes, 13 features), skl2onnx defaults: Scaler -> TreeEnsembleClassifier "
                    "-> ZipMap",
        exported_with="skl2onnx.convert_sklearn(pipe, initial_types=[('float_input', "
                      "FloatTensorType([None, 13]))])",
        task="classification", class_labels=labels, model=model,
        feeds=one_matrix("float_input"),
        reference=matrix_table(x[ref], names), background=matrix_table(x[bg], names),
        explain=explain,
        notes=["The attributions are TreeExplainer's on the native forest fed the Scaler's float32 "
               "output as ONNX Runtime computes it; a per-feature monotone Scaler does not change "
               "interventional Tree SHAP, so they are the attributions of the input features."])


def scaler_output(model):
    """A function: feeds -> the output of the model's Scaler node, as ONNX Runtime computes it."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    (scaler,) = [n for n in probe.graph.node if n.op_type == "Scaler"]
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_tensor_value_info(scaler.output[0], TensorProto.FLOAT,
                                                            None))
    sess = session(probe.SerializeToString())
    return lambda feeds: sess.run(None, feeds)[0]


def lightgbm_classifier():
    data = datasets.load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target
    clf = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, learning_rate=0.2,
                                  random_state=0, n_jobs=1, deterministic=True,
                                  force_row_wise=True, verbose=-1).fit(x, y)
    model = onnxmltools.convert_lightgbm(clf, initial_types=[("input",
                                                              MLFloatTensorType([None, 30]))],
                                         name=GRAPH_NAME)
    ref, bg = split_rows(len(x), 3)
    names = snake(data.feature_names)
    labels = [int(c) for c in clf.classes_]

    def margin(rows):
        return clf.predict(rows, raw_score=True).reshape(-1, 1)

    def explain(fixture, sess):
        ref_x, bg_x = x[ref].astype(np.float64), x[bg].astype(np.float64)
        assert_same_branches(lightgbm_thresholds(clf.booster_), fixture.model, "BRANCH_LEQ",
                             ref_x, bg_x)
        probability_1 = onnx_output(sess, fixture, 1, labels)[:, 1:]
        return tree_explanation(clf, ref_x, bg_x,
                                "margin: log-odds of class 1 (probability = sigmoid(margin))",
                                [str(labels[1])], margin, np.log(probability_1 / (1 - probability_1)))
    return Fixture(
        name="lightgbm",
        description="LightGBM LGBMClassifier (30 trees, 8 leaves) on breast cancer (binary, 30 "
                    "features), onnxmltools defaults: TreeEnsembleClassifier (post_transform "
                    "LOGISTIC, binary: one margin) -> Identity -> Cast (label) / ZipMap",
        exported_with="onnxmltools.convert_lightgbm(clf, initial_types=[('input', "
                      "FloatTensorType([None, 30]))])",
        task="classification", class_labels=labels, model=model,
        feeds=one_matrix("input"),
        reference=matrix_table(x[ref], names), background=matrix_table(x[bg], names),
        explain=explain,
        notes=["The label output is declared with shape [1] but is [N] at run time (onnxmltools); "
               "ONNX Runtime logs a shape warning on every run.",
               "Attributions are TreeExplainer's on the native booster (float64 thresholds) fed "
               "the float32 reference values; the builder checks that the native and ONNX trees "
               "agree on every reference row."])


def xgboost_regressor():
    data = datasets.load_diabetes()
    x, y = data.data.astype(np.float32), data.target
    reg = xgboost.XGBRegressor(n_estimators=30, max_depth=3, learning_rate=0.2, random_state=0,
                               n_jobs=1, tree_method="hist").fit(x, y)
    model = onnxmltools.convert_xgboost(reg, initial_types=[("input",
                                                             MLFloatTensorType([None, 10]))],
                                        name=GRAPH_NAME)
    ref, bg = split_rows(len(x), 4)
    names = list(data.feature_names)

    def margin(rows):
        return reg.predict(rows.astype(np.float32), output_margin=True).reshape(-1, 1)

    def explain(fixture, sess):
        assert_same_branches(xgboost_thresholds(reg), fixture.model, "BRANCH_LT", x[ref], x[bg])
        return tree_explanation(reg, x[ref].astype(np.float64), x[bg].astype(np.float64),
                                "margin = the regression output (squared error: identity link)",
                                ["variable"], margin, onnx_output(sess, fixture, 0))
    return Fixture(
        name="xgboost",
        description="XGBoost XGBRegressor (30 trees, depth 3) on diabetes (10 features), "
                    "onnxmltools defaults: a bare TreeEnsembleRegressor with the base score",
        exported_with="onnxmltools.convert_xgboost(reg, initial_types=[('input', "
                      "FloatTensorType([None, 10]))])",
        task="regression", class_labels=None, model=model, feeds=one_matrix("input"),
        reference=matrix_table(x[ref], names), background=matrix_table(x[bg], names),
        explain=explain,
        notes=["XGBoost sums its trees in float32 and ONNX Runtime in its own order: the native "
               "margin and the ONNX output differ in the last bits (up to ~1e-5 relative)."])


def column_transformer():
    rng = np.random.default_rng(3)
    n = 300
    city = rng.choice(np.array(["paris", "lyon", "nice"], dtype=object), size=n)
    x1, x2, x3 = (rng.normal(size=n).astype(np.float32) for _ in range(3))
    y = ((city == "paris") + x1 - 0.5 * x2 + 0.25 * x3 > 0.4).astype(np.int64)
    frame = pd.DataFrame({"city": city, "x1": x1, "x2": x2, "x3": x3})
    pipe = Pipeline([
        ("prep", ColumnTransformer([
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("scale", StandardScaler(), ["x1", "x2", "x3"]),
        ])),
        ("clf", LogisticRegression(max_iter=1000)),
    ]).fit(frame, y)
    model = convert_sklearn(pipe, initial_types=[
        ("city", StringTensorType([None, 1])),
        ("x1", FloatTensorType([None, 1])),
        ("x2", FloatTensorType([None, 1])),
        ("x3", FloatTensorType([None, 1])),
    ], name=GRAPH_NAME)
    table = Table({"city": city, "x1": x1, "x2": x2, "x3": x3})
    ref, bg = split_rows(n, 5)
    labels = [int(c) for c in pipe.classes_]
    return Fixture(
        name="column-transformer",
        description="Pipeline(ColumnTransformer(OneHotEncoder on the string column city, "
                    "StandardScaler on x1..x3), LogisticRegression) on generated data (binary), "
                    "skl2onnx defaults: one input per column, a ZipMap output",
        exported_with="skl2onnx.convert_sklearn(pipe, initial_types=[('city', StringTensorType("
                      "[None, 1])), ('x1', FloatTensorType([None, 1])), ('x2', ...), ('x3', ...)])",
        task="classification", class_labels=labels, model=model, feeds=one_input_per_column,
        reference=table.take(ref), background=table.take(bg),
        explain=onnx_explanation("probability of each class (output_probability, by label); "
                                 "city is one feature, its string swapped whole",
                                 [str(c) for c in labels], probabilities_of(1, labels)))


def float64_linear():
    data = datasets.load_diabetes()
    x, y = data.data, data.target
    reg = LinearRegression().fit(x, y)
    model = convert_sklearn(reg, initial_types=[("double_input", DoubleTensorType([None, 10]))],
                            name=GRAPH_NAME)
    ref, bg = split_rows(len(x), 6)
    names = list(data.feature_names)
    return Fixture(
        name="float64",
        description="scikit-learn LinearRegression on diabetes (10 features), skl2onnx with "
                    "DoubleTensorType: float64 in and out",
        exported_with="skl2onnx.convert_sklearn(reg, initial_types=[('double_input', "
                      "DoubleTensorType([None, 10]))])",
        task="regression", class_labels=None, model=model, feeds=one_matrix("double_input"),
        reference=matrix_table(x[ref], names), background=matrix_table(x[bg], names),
        explain=onnx_explanation("the regression output (variable)", ["variable"], column_of(0)))


def int64_linear():
    rng = np.random.default_rng(11)
    n = 200
    x = rng.integers(0, 50, size=(n, 4)).astype(np.int64)
    y = x @ np.array([0.5, -1.25, 2.0, 0.0]) + 3.0 + rng.normal(size=n)
    reg = LinearRegression().fit(x, y)
    model = convert_sklearn(reg, initial_types=[("counts", Int64TensorType([None, 4]))],
                            name=GRAPH_NAME)
    ref, bg = split_rows(n, 7)
    names = ["visits", "returns", "purchases", "reviews"]
    return Fixture(
        name="int64",
        description="scikit-learn LinearRegression on generated counts (4 int64 features), "
                    "skl2onnx with Int64TensorType: int64 in (Cast inside), float32 out",
        exported_with="skl2onnx.convert_sklearn(reg, initial_types=[('counts', "
                      "Int64TensorType([None, 4]))])",
        task="regression", class_labels=None, model=model, feeds=one_matrix("counts"),
        reference=matrix_table(x[ref], names), background=matrix_table(x[bg], names),
        explain=onnx_explanation("the regression output (variable)", ["variable"], column_of(0)))


def cnn():
    digits = datasets.load_digits()
    pixels = (digits.data / 16.0).astype(np.float32)  # [n, 64], values in [0, 1]
    rng = np.random.default_rng(5)
    conv_w = (rng.normal(size=(4, 1, 3, 3)) / 3).astype(np.float32)
    conv_b = (rng.normal(size=4) / 10).astype(np.float32)
    dense_w = (rng.normal(size=(64, 10)) / 8).astype(np.float32)
    dense_b = (rng.normal(size=10) / 10).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["pixels", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("MaxPool", ["relu"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "dense_w", "dense_b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        GRAPH_NAME,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(conv_w, "conv_w"), numpy_helper.from_array(conv_b, "conv_b"),
         numpy_helper.from_array(dense_w, "dense_w"), numpy_helper.from_array(dense_b, "dense_b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    ref, _ = split_rows(len(pixels), 8)
    names = [f"pixel_{i}" for i in range(64)]
    return Fixture(
        name="cnn",
        description="a small CNN written with onnx.helper (Conv 4x3x3 -> Relu -> MaxPool 2x2 -> "
                    "Gemm 64x10 -> Softmax), weights fixed by seed (not trained), on sklearn's "
                    "digits scaled to [0, 1]: probs column k is digit k; no label output",
        exported_with="onnx.helper.make_model(graph, opset 17, ir_version 9)",
        task="tensors", class_labels=None, model=model, feeds=image_input("pixels", 8, 8),
        reference=matrix_table(pixels[ref], names), background=None, explain=None,
        notes=["No explanation reference: an image model is not tabular (64 pixel features are "
               "beyond exact Shapley values, and sampled ones are not reproducible across "
               "implementations).",
               "reference.csv column pixel_i is pixels[n, 0, i // 8, i % 8]."])


BUILDERS = (logreg_zipmap, scaled_forest, lightgbm_classifier, xgboost_regressor,
            column_transformer, float64_linear, int64_linear, cnn)


# ---------------------------------------------------------------------------------------------
# Writing the repository.

def write_json(path, value):
    Path(path).write_text(json.dumps(value, indent=1, allow_nan=False) + "\n")


def canonical_bytes(model):
    """The model's bytes with its opset imports sorted by domain: skl2onnx lists them in the
    order of a Python set of strings, which changes with the interpreter's hash seed. The
    order means nothing to ONNX; sorting it is what makes two builds byte-identical."""
    imports = sorted(model.opset_import, key=lambda o: o.domain)
    copy_ = onnx.ModelProto()
    copy_.CopyFrom(model)
    del copy_.opset_import[:]
    copy_.opset_import.extend(imports)
    return copy_.SerializeToString()


def write_fixture(outdir, fixture):
    model_dir = outdir / fixture.name / "1"
    model_dir.mkdir(parents=True)
    model_bytes = canonical_bytes(fixture.model)
    (model_dir / "model.onnx").write_bytes(model_bytes)
    sess = session(model_bytes)
    write_csv(outdir / fixture.name / "reference.csv", fixture.reference)
    expected = {"rows": len(fixture.reference),
                "outputs": run_outputs(sess, fixture.feeds(fixture.reference)),
                "outputs_one_by_one": run_outputs_one_by_one(sess, fixture)}
    if fixture.background is not None:
        write_csv(outdir / fixture.name / "background.csv", fixture.background)
    if fixture.explain is not None:
        expected["explanation"] = fixture.explain(fixture, sess).as_json()
    write_json(outdir / fixture.name / "expected.json", expected)
    entry = {
        "name": fixture.name,
        "description": fixture.description,
        "exported_with": fixture.exported_with,
        "model": f"{fixture.name}/1/model.onnx",
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "task": fixture.task,
        "class_labels": fixture.class_labels,
        "feature_names": fixture.reference.names,
        "inputs": declared(fixture.model.graph.input),
        "outputs": declared(fixture.model.graph.output),
        "reference": f"{fixture.name}/reference.csv",
        "background": f"{fixture.name}/background.csv" if fixture.background else None,
        "expected": f"{fixture.name}/expected.json",
        "explanation": None,
        "notes": fixture.notes,
    }
    if fixture.explain is not None:
        explanation = expected["explanation"]
        entry["explanation"] = {k: explanation[k] for k in ("method", "space", "outputs")}
    return entry


def build(outdir):
    """Builds every fixture into outdir (absent or empty); returns the fixtures.json content."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if any(outdir.iterdir()):
        raise SystemExit(f"{outdir} is not empty")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # converters' and shap's deprecation chatter
        models = [write_fixture(outdir, builder()) for builder in BUILDERS]
    index = {"versions": VERSIONS, "layout": "<name>/<version>/model.onnx (Triton)",
             "models": models}
    write_json(outdir / "fixtures.json", index)
    return index


def content_hash():
    """What a build depends on: this file and the lock file that pins every library."""
    digest = hashlib.sha256(HERE.read_bytes())
    digest.update(LOCK.read_bytes())
    return digest.hexdigest()[:16]


def build_cached(root):
    """The fixtures built once under root/user-models-<content hash>; built (atomically) if not
    there yet. Returns the directory."""
    root = Path(root)
    target = root / f"user-models-{content_hash()}"
    if (target / "fixtures.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".user-models-", dir=root))
    try:
        build(scratch / "out")
        try:
            os.rename(scratch / "out", target)
        except OSError:  # another process won the race: its build is the same
            if not (target / "fixtures.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def main(argv):
    if len(argv) == 3 and argv[1] == "--cached":
        print(build_cached(argv[2]))
    elif len(argv) == 2 and not argv[1].startswith("-"):
        build(argv[1])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
