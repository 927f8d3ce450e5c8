"""ONNX tree ensembles as shap dict models, read with the `onnx` package: the Python reference
side of the Tree SHAP checks, written independently of the server's Rust reader.

`shap_tree_model(path)` returns the dict model shap's TreeExplainer accepts (one output per
ONNX class id or regression target) and how the model's classes read from those outputs,
following ONNX Runtime's conventions (a binary classifier that scores one class only has a
single margin f; its classes are -f and +f).
"""

from dataclasses import dataclass, field

import numpy as np
import onnx


@dataclass
class TreeModel:
    dict_model: dict
    op_type: str
    post_transform: str
    # per class (or the one regression value): (output index, sign, offset)
    classes: list
    # per feature: every split threshold, to put test rows exactly on splits
    thresholds: dict = field(default_factory=dict)


def attributes(path):
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node
             if n.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor")]
    if len(nodes) != 1:
        return None, None
    node = nodes[0]
    return node.op_type, {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def shap_tree_model(path):
    """The tree ensemble of an ONNX file, or None if the graph has none."""
    op_type, a = attributes(path)
    if a is None:
        return None
    modes = [m.decode() for m in a["nodes_modes"]]
    assert set(modes) <= {"BRANCH_LEQ", "LEAF"}, "shap's dict model splits with <= only"
    post = a.get("post_transform", b"NONE").decode()
    if op_type == "TreeEnsembleClassifier":
        n_classes = len(a["classlabels_int64s"])
        ids, prefix = list(a["class_ids"]), "class"
        if n_classes == 2 and len(set(ids)) == 1:
            # ONNX Runtime: margins (-f, f); or (1 - f, f) when f is a probability
            # (non-negative weights). Classes are (output, sign, offset).
            offset = 1.0 if min(a["class_weights"]) >= 0 else 0.0
            n_outputs, classes, ids = 1, [(0, -1.0, offset), (0, 1.0, 0.0)], [0] * len(ids)
        else:
            n_outputs, classes = n_classes, [(c, 1.0, 0.0) for c in range(n_classes)]
    else:
        ids, prefix = list(a["target_ids"]), "target"
        n_outputs, classes = 1, [(0, 1.0, 0.0)]
    base = np.zeros(n_outputs)
    if a.get("base_values"):
        base[:] = np.float32(a["base_values"])
    n_trees = len(set(a["nodes_treeids"]))
    scale = 1.0 / n_trees if a.get("aggregate_function", b"SUM") == b"AVERAGE" else 1.0
    weights = {}
    for output, tree, node, w in zip(ids, a[f"{prefix}_treeids"], a[f"{prefix}_nodeids"],
                                     a[f"{prefix}_weights"]):
        key = (tree, node)
        weights.setdefault(key, np.zeros(n_outputs))[output] += float(np.float32(w))
    by_tree = {}
    for i, tree in enumerate(a["nodes_treeids"]):
        by_tree.setdefault(tree, []).append(i)
    thresholds = {}
    trees = []
    for tree, indices in sorted(by_tree.items()):
        n = len(indices)
        assert sorted(a["nodes_nodeids"][i] for i in indices) == list(range(n))
        left, right = np.full(n, -1), np.full(n, -1)
        features, threshold, values = np.full(n, -2), np.zeros(n), np.zeros((n, n_outputs))
        for i in indices:
            k = a["nodes_nodeids"][i]
            if modes[i] == "LEAF":
                values[k] = weights.get((tree, k), 0.0) * scale
                continue
            left[k], right[k] = a["nodes_truenodeids"][i], a["nodes_falsenodeids"][i]
            features[k] = a["nodes_featureids"][i]
            threshold[k] = float(np.float32(a["nodes_values"][i]))
            thresholds.setdefault(int(features[k]), set()).add(threshold[k])
        trees.append({"children_left": left, "children_right": right,
                      "children_default": left.copy(), "features": features,
                      "thresholds": threshold, "values": values,
                      "node_sample_weight": np.ones(n)})
    dict_model = {
        "trees": trees,
        "base_offset": base if n_outputs > 1 else float(base[0]),
        "tree_output": "log_odds" if post == "LOGISTIC" and n_outputs == 1 else "raw_value",
        "objective": "binary_crossentropy" if post == "LOGISTIC" else None,
        "input_dtype": np.float64,
        "internal_dtype": np.float64,
    }
    return TreeModel(dict_model, op_type, post, classes,
                     {j: sorted(t) for j, t in thresholds.items()})


def margin_model_bytes(path):
    """The model with post_transform NONE: ONNX Runtime then outputs its own margins."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "post_transform":
                attr.s = b"NONE"
    return model.SerializeToString()
