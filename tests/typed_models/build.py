"""Builds the ONNX files tests/typed_models.rs reads, the way users export them, and records what
onnxruntime (Python) answers on fixed inputs, exactly.

Usage: python build.py OUTDIR

Writes, for each model NAME (sequence-output: the model file only, since it is refused):
  OUTDIR/NAME/1/model.onnx   (the repository layout of issue #13)
  OUTDIR/NAME/case.json      {"inputs": {...}, "outputs": {...}}: every tensor as
                             {"datatype": V2 name, "shape": [...], "hex": little-endian bytes}
                             (strings as {"datatype": "BYTES", "shape", "strings": [...]}), so the
                             Rust side rebuilds the exact inputs and compares the outputs bit for bit.
ZipMap outputs are recorded as the probabilities tensor ordered by the model's class labels
(`classes_`), which is what the server promises to turn them into, plus the raw maps
(`"zipmap": [[[key, hex], ...], ...]`) so the test also checks the conversion itself.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import (DoubleTensorType, FloatTensorType, Int64TensorType,
                                        StringTensorType)
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

V2 = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.float16): "FP16",
      np.dtype(np.int8): "INT8", np.dtype(np.int16): "INT16", np.dtype(np.int32): "INT32",
      np.dtype(np.int64): "INT64", np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
      np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64", np.dtype(np.bool_): "BOOL"}


# onnx 1.23 writes IR version 14 by default; onnxruntime 1.31 reads up to 13.
IR_VERSION = 9


def exact(array):
    array = np.asarray(array)
    if array.dtype.kind in "OU":
        return {"datatype": "BYTES", "shape": list(array.shape),
                "strings": [str(s) for s in array.ravel()]}
    return {"datatype": V2[array.dtype], "shape": list(array.shape),
            "hex": array.astype(array.dtype.newbyteorder("<")).tobytes().hex()}


def f32_hex(x):
    return np.float32(x).tobytes().hex()


def save(outdir, name, onx, inputs, labels=None):
    model_dir = Path(outdir) / name / "1"
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = session.run(None, inputs)
    outputs = {}
    for out_name, value in zip(names, results):
        if isinstance(value, list):  # ZipMap: one {label: probability} per row
            rows = [[[k, f32_hex(v)] for k, v in row.items()] for row in value]
            probabilities = np.array([[row[label] for label in labels] for row in value],
                                     dtype=np.float32)
            outputs[out_name] = dict(exact(probabilities), zipmap=rows)
        else:
            outputs[out_name] = exact(value)
    case = {"inputs": {k: exact(v) for k, v in inputs.items()}, "outputs": outputs}
    (Path(outdir) / name / "case.json").write_text(json.dumps(case, indent=1))


def logreg_zipmap(outdir):
    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = convert_sklearn(clf, initial_types=[("float_input", FloatTensorType([None, 4]))])
    rows = x[::30].astype(np.float32)
    save(outdir, "logreg-zipmap", onx, {"float_input": rows}, labels=[int(c) for c in clf.classes_])


def logreg_string_labels(outdir):
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = LogisticRegression(max_iter=500).fit(x, names)
    onx = convert_sklearn(clf, initial_types=[("float_input", FloatTensorType([None, 4]))])
    rows = x[5::40].astype(np.float32)
    save(outdir, "logreg-strings", onx, {"float_input": rows}, labels=[str(c) for c in clf.classes_])


def float64_linear(outdir):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 10))
    y = x @ rng.normal(size=10) + 0.1 * rng.normal(size=200)
    reg = LinearRegression().fit(x, y)
    onx = convert_sklearn(reg, initial_types=[("double_input", DoubleTensorType([None, 10]))],
                          target_opset={"": 17, "ai.onnx.ml": 3})
    save(outdir, "float64", onx, {"double_input": x[:5]})


def int64_linear(outdir):
    rng = np.random.default_rng(11)
    x = rng.integers(0, 50, size=(200, 3)).astype(np.int64)
    y = x @ np.array([0.5, -1.25, 2.0]) + 3.0
    reg = LinearRegression().fit(x, y)
    onx = convert_sklearn(reg, initial_types=[("counts", Int64TensorType([None, 3]))])
    save(outdir, "int64", onx, {"counts": x[:6]})


def column_transformer(outdir):
    rng = np.random.default_rng(3)
    n = 300
    city = rng.choice(["paris", "lyon", "nice"], size=n)
    x1, x2, x3 = (rng.normal(size=n).astype(np.float32) for _ in range(3))
    y = ((city == "paris") + x1 - 0.5 * x2 + 0.25 * x3 > 0.4).astype(np.int64)
    import pandas as pd
    frame = pd.DataFrame({"city": city, "x1": x1, "x2": x2, "x3": x3})
    pipe = Pipeline([
        ("prep", ColumnTransformer([
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("scale", StandardScaler(), ["x1", "x2", "x3"]),
        ])),
        ("clf", LogisticRegression(max_iter=500)),
    ]).fit(frame, y)
    onx = convert_sklearn(pipe, initial_types=[
        ("city", StringTensorType([None, 1])),
        ("x1", FloatTensorType([None, 1])),
        ("x2", FloatTensorType([None, 1])),
        ("x3", FloatTensorType([None, 1])),
    ], options={id(pipe.steps[-1][1]): {"zipmap": False}})
    rows = slice(0, 7)
    inputs = {"city": city[rows].reshape(-1, 1).astype(object)}
    for name, column in (("x1", x1), ("x2", x2), ("x3", x3)):
        inputs[name] = column[rows].reshape(-1, 1)
    save(outdir, "column-transformer", onx, inputs)


def cnn(outdir):
    rng = np.random.default_rng(5)
    weights = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    dense = rng.normal(size=(4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["pixels", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "D"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "cnn",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B"),
         numpy_helper.from_array(dense, "D")],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                           ir_version=IR_VERSION)
    onnx.checker.check_model(onx)
    save(outdir, "cnn", onx, {"pixels": rng.normal(size=(3, 1, 8, 8)).astype(np.float32)})


def fixed_batch(outdir):
    """A model whose batch dimension is fixed: it must not be batched."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two")],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                           ir_version=IR_VERSION)
    save(outdir, "fixed-batch", onx, {"x": np.array([[1.5, -3.0]], dtype=np.float32)})


def every_type(outdir):
    """One Identity per served element type: each type in and out of ONNX Runtime unchanged."""
    types = [("bool", TensorProto.BOOL, np.array([[True, False]])),
             ("uint8", TensorProto.UINT8, np.array([[0, 255]], dtype=np.uint8)),
             ("uint16", TensorProto.UINT16, np.array([[1, 65535]], dtype=np.uint16)),
             ("uint32", TensorProto.UINT32, np.array([[2, 2**32 - 1]], dtype=np.uint32)),
             ("uint64", TensorProto.UINT64, np.array([[3, 2**64 - 1]], dtype=np.uint64)),
             ("int8", TensorProto.INT8, np.array([[-128, 127]], dtype=np.int8)),
             ("int16", TensorProto.INT16, np.array([[-32768, 7]], dtype=np.int16)),
             ("int32", TensorProto.INT32, np.array([[-2**31, 9]], dtype=np.int32)),
             ("int64", TensorProto.INT64, np.array([[-2**63, 2**63 - 1]], dtype=np.int64)),
             ("float16", TensorProto.FLOAT16, np.array([[0.1, -65504]], dtype=np.float16)),
             ("float", TensorProto.FLOAT, np.array([[0.1, np.inf]], dtype=np.float32)),
             ("double", TensorProto.DOUBLE, np.array([[0.1, -0.0]], dtype=np.float64)),
             ("string", TensorProto.STRING, np.array([["é", ""]], dtype=object))]
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"in_{n}"], [f"out_{n}"]) for n, _, _ in types],
        "every_type",
        [helper.make_tensor_value_info(f"in_{n}", t, ["N", 2]) for n, t, _ in types],
        [helper.make_tensor_value_info(f"out_{n}", t, ["N", 2]) for n, t, _ in types],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                            ir_version=IR_VERSION)
    onnx.checker.check_model(onx)
    save(outdir, "every-type", onx, {f"in_{n}": v for n, _, v in types})


def sequence_output(outdir):
    """A model with a seq(tensor(float)) output: not servable, refused at load by name."""
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x", "x"], ["parts"])],
        "sequence",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                            ir_version=IR_VERSION)
    onnx.checker.check_model(onx)
    model_dir = Path(outdir) / "sequence-output" / "1"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.onnx").write_bytes(onx.SerializeToString())


def main():
    outdir = sys.argv[1]
    for build in (logreg_zipmap, logreg_string_labels, float64_linear, int64_linear,
                  column_transformer, cnn, fixed_batch, every_type, sequence_output):
        build(outdir)


if __name__ == "__main__":
    main()
