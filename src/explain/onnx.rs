//! Reading a tree ensemble out of the ONNX model file, which is the single source of truth for
//! what the server runs: ONNX Runtime does not expose operator attributes, so the trees are
//! decoded here from the protobuf with a handful of hand-written `prost` messages (only the
//! fields needed; the field numbers are those of `onnx.proto`).
//!
//! Supported: one `ai.onnx.ml` `TreeEnsembleClassifier` or `TreeEnsembleRegressor` node reading
//! the graph input through per-feature steps only (`Scaler`, `Cast` to a float type, `Identity`:
//! skl2onnx's scaled pipelines), its outputs reaching the graph outputs through `Identity`,
//! `Cast` and `ZipMap` nodes only (what skl2onnx and onnxmltools emit for gradient boosting,
//! random forests, LightGBM and XGBoost). The per-feature steps are replayed on the rows
//! ([`Preprocess`]) so the trees see what they split on. Anything else is either "not a tree
//! ensemble" (`Ok(None)`: the model-agnostic methods explain it) or refused with a reason naming
//! the node or attribute.

use std::borrow::Cow;

use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
use prost::Message;

use super::tree::{FlatTrees, Mode, TreeEnsemble};
use crate::model::{ModelEntry, Task};

/// `onnx.ModelProto`, the fields read here.
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

/// `onnx.GraphProto`: nodes, graph inputs and outputs.
#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

/// `onnx.ValueInfoProto`: the name, and the type when one is written (a margin output).
#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

/// `onnx.TypeProto`: the tensor form only.
#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

/// `onnx.TypeProto.Tensor`: the element type; no shape (ONNX Runtime infers it).
#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
}

/// `onnx.NodeProto`.
#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    domain: String,
}

/// `onnx.AttributeProto`: the scalar, list and tensor forms tree ensembles use.
#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(bytes = "vec", tag = "4")]
    s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    strings: Vec<Vec<u8>>,
    /// `AttributeProto.AttributeType`; 3 is STRING.
    #[prost(int32, tag = "20")]
    r#type: i32,
}

/// `onnx.TensorProto`: the float and double forms of `*_as_tensor` attributes.
#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
}

/// A node's operator only: decoding it skips the (large) attribute payloads.
#[derive(Clone, PartialEq, Message)]
struct NodeHeader {
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(string, tag = "7")]
    domain: String,
}

/// An attribute's name only.
#[derive(Clone, PartialEq, Message)]
struct AttributeHeader {
    #[prost(string, tag = "1")]
    name: String,
}

const ATTRIBUTE_STRING: i32 = 3;
const TENSOR_FLOAT: i32 = 1;
const TENSOR_DOUBLE: i32 = 11;
const ML_DOMAIN: &str = "ai.onnx.ml";
const CLASSIFIER: &str = "TreeEnsembleClassifier";
const REGRESSOR: &str = "TreeEnsembleRegressor";

/// The transform ONNX Runtime applies to tree margins (`post_transform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    /// Outputs are the margins.
    None,
    /// `1 / (1 + exp(-margin))` per output.
    Logistic,
    /// Softmax across classes: not per-output, so no Tree SHAP in probability space.
    Softmax,
    /// Other transforms ONNX defines (`SOFTMAX_ZERO`, `PROBIT`): margins only.
    Other,
}

/// How one class (or a regressor's value) reads from the ensemble's raw outputs:
/// `offset + sign * raw[output]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassOutput {
    /// The raw output index.
    pub output: usize,
    /// +1, or −1 for the negative class of a binary classifier that scores only one side.
    /// ONNX Runtime then reports `[-f, f]` (margins, `[σ(-f), σ(f)]` after a logistic) or, when
    /// every weight is non-negative (the score is a probability), `[1 - f, f]`.
    pub sign: f64,
    /// 1 for the negative class of a one-score binary classifier with non-negative weights,
    /// else 0.
    pub offset: f64,
}

impl ClassOutput {
    fn new(output: usize, sign: f64, offset: f64) -> ClassOutput {
        ClassOutput {
            output,
            sign,
            offset,
        }
    }
}

/// A tree ensemble read from an ONNX graph, with the meaning of its outputs.
#[derive(Debug, Clone)]
pub struct OnnxTrees {
    /// The trees, validated and flattened.
    pub ensemble: TreeEnsemble,
    /// One entry per class label (classifiers, in manifest order) or one for the value.
    pub classes: Vec<ClassOutput>,
    /// What turns margins into the model's reported outputs.
    pub transform: PostTransform,
    /// The per-feature steps between the graph input and the trees.
    pub preprocess: Preprocess,
    /// The output of the margin model ([`margin_model`]) that holds the trees' scores: the
    /// graph output itself when only `Identity` nodes lie between, else the tree node's own
    /// output, which the margin model then adds as a graph output.
    pub margin_output: MarginOutput,
}

/// Where a margin session's scores are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarginOutput {
    /// The graph output the manifest names (scores reach it through `Identity` nodes only).
    Declared,
    /// The tree node's own output of this name (a `ZipMap` or `Cast` lies between it and the
    /// graph output): the margin model must expose it.
    Tree(String),
}

/// Per-feature steps between the graph input and the trees, replayed on rows exactly as ONNX
/// Runtime computes them (float32), so the trees see the values they split on. Interventional
/// SHAP values do not change under a per-feature map: a coalition takes each feature's value
/// from the row or the background row whole, before the map or after it alike. So attributions
/// computed on the mapped rows are the model's attributions of its inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preprocess {
    /// `Scaler` steps in graph order, each `(offset, scale)` per feature:
    /// `y = (x - offset) * scale`.
    scalers: Vec<Vec<(f32, f32)>>,
}

impl Preprocess {
    /// `rows` (row-major, one value per feature) as the trees see them; borrowed when no step
    /// changes a value.
    pub fn apply<'a>(&self, rows: &'a [f32]) -> Cow<'a, [f32]> {
        if self.scalers.is_empty() {
            return Cow::Borrowed(rows);
        }
        let mut out = rows.to_vec();
        for scaler in &self.scalers {
            for row in out.chunks_exact_mut(scaler.len()) {
                for (x, &(offset, scale)) in row.iter_mut().zip(scaler) {
                    *x = (*x - offset) * scale;
                }
            }
        }
        Cow::Owned(out)
    }
}

/// Reads the tree ensemble of `entry`'s model, if the graph is one.
///
/// `Ok(None)`: the graph has no tree-ensemble operator. `Err`: it has one this reader cannot
/// explain exactly (the message names why); the caller then uses the model-agnostic methods.
pub fn read_trees(model_bytes: &[u8], entry: &ModelEntry) -> Result<Option<OnnxTrees>, String> {
    let model = ModelProto::decode(model_bytes).map_err(|e| format!("cannot decode: {e}"))?;
    let graph = model.graph.ok_or("the model has no graph")?;
    let tree_nodes: Vec<&NodeProto> = graph
        .node
        .iter()
        .filter(|n| n.domain == ML_DOMAIN && (n.op_type == CLASSIFIER || n.op_type == REGRESSOR))
        .collect();
    let node = match tree_nodes.as_slice() {
        [] => return Ok(None),
        [node] => *node,
        more => {
            return Err(format!(
                "{} tree-ensemble nodes (one supported)",
                more.len()
            ))
        }
    };
    let n_features = entry.feature_names.len();
    let (preprocess, margin_output) = check_graph(&graph, node, entry, n_features)?;
    let attrs = Attributes(&node.attribute);
    let transform = match attrs.string("post_transform")?.unwrap_or("NONE") {
        "NONE" => PostTransform::None,
        "LOGISTIC" => PostTransform::Logistic,
        "SOFTMAX" => PostTransform::Softmax,
        "SOFTMAX_ZERO" | "PROBIT" => PostTransform::Other,
        other => return Err(format!("unknown post_transform '{other}'")),
    };
    let mut flat = read_nodes(&attrs, n_features)?;
    let (classes, average) = match (node.op_type.as_str(), entry.task) {
        (CLASSIFIER, Task::Classification) => (
            read_classifier_outputs(&attrs, &mut flat, entry, transform)?,
            false,
        ),
        (REGRESSOR, Task::Regression) => read_regressor_outputs(&attrs, &mut flat, transform)?,
        (op, _) => return Err(format!("a {op} node in a {} model", entry.task_name())),
    };
    let mut ensemble = TreeEnsemble::from_flat(&flat)?;
    if average {
        ensemble.average_leaves();
    }
    Ok(Some(OnnxTrees {
        ensemble,
        classes,
        transform,
        preprocess,
        margin_output,
    }))
}

/// The trees must be the whole model: the tree node reads the graph input through per-feature
/// steps only ([`Walk::input_path`]), every output the manifest names comes from it through
/// pass-through nodes only ([`Walk::output_path`]), and the graph has no other node. Returns the
/// per-feature steps and where a margin session finds the scores.
fn check_graph(
    graph: &GraphProto,
    tree: &NodeProto,
    entry: &ModelEntry,
    n_features: usize,
) -> Result<(Preprocess, MarginOutput), String> {
    let mut walk = Walk::new(graph, tree);
    let preprocess = walk.input_path(entry, n_features)?;
    let expected: &[(&str, usize)] = match entry.task {
        Task::Classification => &[("label", 0), ("probabilities", 1)],
        Task::Regression => &[("value", 0)],
        Task::Tensors => return Err("a tensors model has no rows to explain".into()),
    };
    // The last role holds the scores (probabilities, or the value).
    let scores = expected.last().expect("every task has outputs");
    let mut margin_output = MarginOutput::Declared;
    for &(role, index) in expected {
        let output = &entry.onnx.outputs[role];
        let only_identity = walk.output_path(output, role, index)?;
        if (role, index) == *scores && !only_identity {
            margin_output = MarginOutput::Tree(tree.output[index].clone());
        }
    }
    if let Some(other) = walk.first_unused() {
        return Err(format!(
            "the graph has a {} node besides the tree ensemble",
            other.op_type
        ));
    }
    Ok((preprocess, margin_output))
}

/// The paths [`check_graph`] follows from the tree node, and the nodes they pass through, so a
/// node on none of them is found.
struct Walk<'g> {
    graph: &'g GraphProto,
    tree: &'g NodeProto,
    /// Per graph node: the tree node itself, or a node on a path walked so far.
    used: Vec<bool>,
}

impl<'g> Walk<'g> {
    /// A walk from `tree`, one of `graph`'s nodes, with no path walked yet.
    fn new(graph: &'g GraphProto, tree: &'g NodeProto) -> Walk<'g> {
        let mut used = vec![false; graph.node.len()];
        let tree_index = graph
            .node
            .iter()
            .position(|n| std::ptr::eq(n, tree))
            .expect("the tree node is one of the graph's");
        used[tree_index] = true;
        Walk { graph, tree, used }
    }

    /// The producer of `name` among the graph's nodes, marked as on a path.
    fn producer(&mut self, name: &str) -> Option<&'g NodeProto> {
        let (index, node) = self
            .graph
            .node
            .iter()
            .enumerate()
            .find(|(_, n)| n.output.iter().any(|o| o == name))?;
        self.used[index] = true;
        Some(node)
    }

    /// A node no path went through, if any.
    fn first_unused(&self) -> Option<&'g NodeProto> {
        self.graph
            .node
            .iter()
            .zip(&self.used)
            .find(|(_, used)| !**used)
            .map(|(node, _)| node)
    }

    /// Walks from the tree node's input back to the graph input, through `Identity`, `Cast` to
    /// a float type and `Scaler` nodes only, and returns the `Scaler` steps in graph order.
    fn input_path(&mut self, entry: &ModelEntry, n_features: usize) -> Result<Preprocess, String> {
        const FLOAT: i64 = 1;
        const DOUBLE: i64 = 11;
        let tree = self.tree;
        let [first] = tree.input.as_slice() else {
            return Err(format!(
                "the tree ensemble reads {:?}, not the graph input '{}' alone",
                tree.input, entry.onnx.input
            ));
        };
        let mut name = first.as_str();
        let mut scalers = Vec::new();
        // Bounded by the node count: a well-formed graph has no cycle, a malformed one must not
        // hang.
        for _ in 0..=self.graph.node.len() {
            if name == entry.onnx.input {
                scalers.reverse();
                return Ok(Preprocess { scalers });
            }
            let Some(node) = self.producer(name) else {
                break;
            };
            let attrs = Attributes(&node.attribute);
            match (node.domain.as_str(), node.op_type.as_str()) {
                ("", "Identity") => {}
                ("", "Cast") if matches!(attrs.int("to")?, Some(FLOAT | DOUBLE)) => {}
                (ML_DOMAIN, "Scaler") => scalers.push(scaler_steps(&attrs, n_features)?),
                (_, op) => {
                    return Err(format!(
                        "the tree ensemble reads the graph input through a {op} node (per-feature Scaler, Cast to a float type and Identity are supported)"
                    ))
                }
            }
            name = node.input.first().map(String::as_str).unwrap_or("");
        }
        Err(format!(
            "the tree ensemble reads {:?}, not the graph input '{}'",
            tree.input, entry.onnx.input
        ))
    }

    /// Follows the graph output `name` back to the tree node's output `index` through
    /// `Identity`, `Cast` and `ZipMap` nodes; says whether only `Identity` nodes lie between.
    fn output_path(&mut self, output: &str, role: &str, index: usize) -> Result<bool, String> {
        let mut name = output;
        let mut only_identity = true;
        for _ in 0..=self.graph.node.len() {
            if self.tree.output.get(index).map(String::as_str) == Some(name) {
                return Ok(only_identity);
            }
            let node = self
                .producer(name)
                .filter(|n| {
                    matches!(
                        (n.domain.as_str(), n.op_type.as_str()),
                        ("", "Identity") | ("", "Cast") | (ML_DOMAIN, "ZipMap")
                    )
                })
                .ok_or_else(|| {
                    format!("output '{name}' ({role}) does not come from the tree ensemble")
                })?;
            only_identity &= node.op_type == "Identity";
            name = node.input.first().map(String::as_str).unwrap_or("");
        }
        Err(format!(
            "output ({role}) does not come from tree-ensemble output {index}"
        ))
    }
}

/// A `Scaler` node's `(offset, scale)` per feature (one value of either is broadcast, as ONNX
/// Runtime does).
fn scaler_steps(attrs: &Attributes, n_features: usize) -> Result<Vec<(f32, f32)>, String> {
    let floats = |name: &str| {
        attrs
            .get(name)
            .map(|a| a.floats.clone())
            .unwrap_or_default()
    };
    let (offset, scale) = (floats("offset"), floats("scale"));
    let at = |values: &[f32], name: &str, i: usize| match values.len() {
        1 => Ok(values[0]),
        n if n == n_features => Ok(values[i]),
        n => Err(format!(
            "a Scaler with {n} {name} values for {n_features} features"
        )),
    };
    (0..n_features)
        .map(|i| Ok((at(&offset, "offset", i)?, at(&scale, "scale", i)?)))
        .collect()
}

/// The node arrays shared by both operators.
fn read_nodes(attrs: &Attributes, n_features: usize) -> Result<FlatTrees, String> {
    let modes = attrs
        .strings("nodes_modes")?
        .iter()
        .map(|m| {
            let name = String::from_utf8_lossy(m);
            Mode::from_onnx(&name).ok_or_else(|| format!("unsupported node mode '{name}'"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let missing = attrs.ints_or_empty("nodes_missing_value_tracks_true")?;
    Ok(FlatTrees {
        tree_ids: attrs.ints("nodes_treeids")?.to_vec(),
        node_ids: attrs.ints("nodes_nodeids")?.to_vec(),
        features: attrs.ints("nodes_featureids")?.to_vec(),
        thresholds: attrs.reals("nodes_values")?.ok_or("no nodes_values")?,
        modes,
        true_ids: attrs.ints("nodes_truenodeids")?.to_vec(),
        false_ids: attrs.ints("nodes_falsenodeids")?.to_vec(),
        missing_tracks_true: missing.iter().map(|&m| m != 0).collect(),
        n_features,
        ..FlatTrees::default()
    })
}

/// `class_*` attributes, with ONNX Runtime's reading of a binary classifier that scores one
/// class only: a single margin `f`, positive class `f`, negative class `-f`.
fn read_classifier_outputs(
    attrs: &Attributes,
    flat: &mut FlatTrees,
    entry: &ModelEntry,
    transform: PostTransform,
) -> Result<Vec<ClassOutput>, String> {
    let n_classes = match attrs.ints_or_empty("classlabels_int64s")? {
        labels if !labels.is_empty() => {
            if labels.iter().enumerate().any(|(i, &l)| l != i as i64) {
                return Err(format!("class labels {labels:?} are not 0..n"));
            }
            labels.len()
        }
        _ => return Err("only integer class labels (classlabels_int64s) are supported".into()),
    };
    if n_classes != entry.class_labels.len() {
        return Err(format!(
            "{n_classes} classes in the graph, {} in the manifest",
            entry.class_labels.len()
        ));
    }
    let leaves = LeafWeights::read(attrs, "class")?;
    if let Some(bad) = leaves
        .ids
        .iter()
        .find(|&&c| c < 0 || c as usize >= n_classes)
    {
        return Err(format!("class id {bad} out of range"));
    }
    let base = attrs.reals("base_values")?.unwrap_or_default();
    let distinct: std::collections::BTreeSet<i64> = leaves.ids.iter().copied().collect();
    let binary_one_score = n_classes == 2 && distinct.len() == 1;
    let classes = if binary_one_score {
        // Non-negative weights: ONNX Runtime reads the score as the positive class's
        // probability and reports (1 - f, f); supported as is, without a post-transform.
        let probability_score = leaves.weights.iter().all(|&w| w >= 0.0);
        if probability_score && transform != PostTransform::None {
            return Err(
                "a one-score binary classifier with non-negative weights and a post_transform"
                    .into(),
            );
        }
        if base.len() > 1 {
            return Err(format!(
                "{} base values for a binary classifier scoring one class",
                base.len()
            ));
        }
        flat.n_outputs = 1;
        flat.base = vec![base.first().copied().unwrap_or(0.0)];
        leaves.add_to(flat, |_| 0);
        let negative_offset = if probability_score { 1.0 } else { 0.0 };
        vec![
            ClassOutput::new(0, -1.0, negative_offset),
            ClassOutput::new(0, 1.0, 0.0),
        ]
    } else {
        if !base.is_empty() && base.len() != n_classes {
            return Err(format!(
                "{} base values for {n_classes} classes",
                base.len()
            ));
        }
        flat.n_outputs = n_classes;
        flat.base = if base.is_empty() {
            vec![0.0; n_classes]
        } else {
            base
        };
        leaves.add_to(flat, |class| class as usize);
        (0..n_classes)
            .map(|c| ClassOutput::new(c, 1.0, 0.0))
            .collect()
    };
    Ok(classes)
}

/// `target_*` attributes of a single-target regressor; returns whether leaves are averaged.
fn read_regressor_outputs(
    attrs: &Attributes,
    flat: &mut FlatTrees,
    transform: PostTransform,
) -> Result<(Vec<ClassOutput>, bool), String> {
    let n_targets = attrs.int("n_targets")?.unwrap_or(1);
    if n_targets != 1 {
        return Err(format!("{n_targets} regression targets (one supported)"));
    }
    if transform != PostTransform::None {
        return Err("a regressor with a post_transform".into());
    }
    let average = match attrs.string("aggregate_function")?.unwrap_or("SUM") {
        "SUM" => false,
        "AVERAGE" => true,
        other => return Err(format!("aggregate_function {other} is not additive")),
    };
    let leaves = LeafWeights::read(attrs, "target")?;
    if leaves.ids.iter().any(|&t| t != 0) {
        return Err("a target id other than 0".into());
    }
    let base = attrs.reals("base_values")?.unwrap_or_default();
    if base.len() > 1 {
        return Err(format!("{} base values for one target", base.len()));
    }
    flat.n_outputs = 1;
    flat.base = vec![base.first().copied().unwrap_or(0.0)];
    leaves.add_to(flat, |_| 0);
    Ok((vec![ClassOutput::new(0, 1.0, 0.0)], average))
}

/// A tree operator's leaf weights, its `class_*` or `target_*` attributes: per entry, the
/// output (class or target) it adds to, its tree and leaf node, and the weight.
struct LeafWeights<'a> {
    ids: &'a [i64],
    tree_ids: &'a [i64],
    node_ids: &'a [i64],
    weights: Vec<f64>,
}

impl<'a> LeafWeights<'a> {
    /// Reads `<prefix>_ids`, `_treeids`, `_nodeids` and `_weights`, which must be as long as
    /// each other.
    fn read(attrs: &'a Attributes, prefix: &str) -> Result<LeafWeights<'a>, String> {
        let ints = |name: &str| attrs.ints(&format!("{prefix}_{name}"));
        let (ids, tree_ids, node_ids) = (ints("ids")?, ints("treeids")?, ints("nodeids")?);
        let weights = attrs
            .reals(&format!("{prefix}_weights"))?
            .ok_or_else(|| format!("no {prefix}_weights"))?;
        if [ids.len(), tree_ids.len(), node_ids.len()] != [weights.len(); 3] {
            return Err(format!("{prefix}_* attributes have different lengths"));
        }
        Ok(LeafWeights {
            ids,
            tree_ids,
            node_ids,
            weights,
        })
    }

    /// Adds every weight to `flat`, on the output `output` gives for its id.
    fn add_to(&self, flat: &mut FlatTrees, output: impl Fn(i64) -> usize) {
        for (i, &weight) in self.weights.iter().enumerate() {
            let (tree, node, id) = (self.tree_ids[i], self.node_ids[i], self.ids[i]);
            flat.weights.push((tree, node, output(id), weight));
        }
    }
}

/// Attribute lookup by name, with errors that name the attribute.
struct Attributes<'a>(&'a [AttributeProto]);

impl Attributes<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }

    fn ints(&self, name: &str) -> Result<&[i64], String> {
        self.get(name)
            .map(|a| a.ints.as_slice())
            .ok_or_else(|| format!("missing attribute {name}"))
    }

    fn ints_or_empty(&self, name: &str) -> Result<&[i64], String> {
        Ok(self.get(name).map(|a| a.ints.as_slice()).unwrap_or(&[]))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.get(name).map(|a| a.i))
    }

    fn strings(&self, name: &str) -> Result<&[Vec<u8>], String> {
        self.get(name)
            .map(|a| a.strings.as_slice())
            .ok_or_else(|| format!("missing attribute {name}"))
    }

    fn string(&self, name: &str) -> Result<Option<&str>, String> {
        self.get(name)
            .map(|a| std::str::from_utf8(&a.s).map_err(|_| format!("{name} is not UTF-8")))
            .transpose()
    }

    /// `name` as floats, or `name_as_tensor` as a float or double tensor, widened to f64.
    fn reals(&self, name: &str) -> Result<Option<Vec<f64>>, String> {
        if let Some(a) = self.get(name) {
            return Ok(Some(a.floats.iter().map(|&v| f64::from(v)).collect()));
        }
        let tensor_name = format!("{name}_as_tensor");
        let Some(a) = self.get(&tensor_name) else {
            return Ok(None);
        };
        let t =
            a.t.as_ref()
                .ok_or_else(|| format!("{tensor_name} has no tensor"))?;
        let values = match t.data_type {
            TENSOR_FLOAT if !t.raw_data.is_empty() => t
                .raw_data
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            TENSOR_FLOAT => t.float_data.iter().map(|&v| f64::from(v)).collect(),
            TENSOR_DOUBLE if !t.raw_data.is_empty() => t
                .raw_data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            TENSOR_DOUBLE => t.double_data.clone(),
            other => return Err(format!("{tensor_name} has tensor type {other}")),
        };
        Ok(Some(values))
    }
}

/// The same model with the tree ensemble's `post_transform` set to `NONE`, so an ONNX Runtime
/// session on it reports the margins ONNX Runtime itself computes (float32 sums); with
/// [`MarginOutput::Tree`], the tree node's output is added as a float graph output, since the
/// declared one is a `ZipMap` of it. The bytes are rewritten in place, field by field:
/// everything but that one attribute is copied verbatim (re-encoding through the partial
/// messages above would drop unknown fields).
pub fn margin_model(model_bytes: &[u8], output: &MarginOutput) -> Result<Vec<u8>, String> {
    const GRAPH: u32 = 7;
    const NODE: u32 = 1;
    const ATTRIBUTE: u32 = 5;
    const GRAPH_OUTPUT: u32 = 12;
    rewrite_field(model_bytes, GRAPH, &mut |graph| {
        let mut graph = rewrite_field(graph, NODE, &mut |node| {
            let decoded = NodeHeader::decode(node).map_err(|e| e.to_string())?;
            if decoded.domain != ML_DOMAIN
                || !(decoded.op_type == CLASSIFIER || decoded.op_type == REGRESSOR)
            {
                return Ok(None);
            }
            rewrite_field(node, ATTRIBUTE, &mut |attribute| {
                let decoded = AttributeHeader::decode(attribute).map_err(|e| e.to_string())?;
                if decoded.name != "post_transform" {
                    return Ok(None);
                }
                let none = AttributeProto {
                    name: decoded.name,
                    s: b"NONE".to_vec(),
                    r#type: ATTRIBUTE_STRING,
                    ..AttributeProto::default()
                };
                Ok(Some(none.encode_to_vec()))
            })
            .map(Some)
        })?;
        if let MarginOutput::Tree(name) = output {
            let value = ValueInfoProto {
                name: name.clone(),
                r#type: Some(TypeProto {
                    tensor_type: Some(TensorTypeProto {
                        elem_type: TENSOR_FLOAT,
                    }),
                }),
            }
            .encode_to_vec();
            encode_key(GRAPH_OUTPUT, WireType::LengthDelimited, &mut graph);
            encode_varint(value.len() as u64, &mut graph);
            graph.extend_from_slice(&value);
        }
        Ok(Some(graph))
    })
}

/// What [`rewrite_field`] does with one field's payload: `Some(new payload)` or `None` to keep it.
type Replace<'a> = dyn FnMut(&[u8]) -> Result<Option<Vec<u8>>, String> + 'a;

/// Copies a protobuf message, replacing the payload of each length-delimited field `field`
/// by what `replace` returns for it (`None` keeps it as is).
fn rewrite_field(message: &[u8], field: u32, replace: &mut Replace<'_>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(message.len());
    let mut rest = message;
    while rest.has_remaining() {
        let start = message.len() - rest.remaining();
        let (tag, wire_type) = decode_key(&mut rest).map_err(|e| e.to_string())?;
        let payload = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest).map_err(|e| e.to_string())?;
                None
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let width = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                if rest.remaining() < width {
                    return Err("truncated protobuf".into());
                }
                rest.advance(width);
                None
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut rest).map_err(|e| e.to_string())? as usize;
                if rest.remaining() < len {
                    return Err("truncated protobuf".into());
                }
                let payload = &rest[..len];
                rest.advance(len);
                Some(payload)
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err("protobuf groups are not used by ONNX".into())
            }
        };
        let end = message.len() - rest.remaining();
        match payload {
            Some(payload) if tag == field => match replace(payload)? {
                Some(new) => {
                    encode_key(field, WireType::LengthDelimited, &mut out);
                    encode_varint(new.len() as u64, &mut out);
                    out.extend_from_slice(&new);
                }
                None => out.extend_from_slice(&message[start..end]),
            },
            _ => out.extend_from_slice(&message[start..end]),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Manifest;

    fn committed(name: &str) -> (Vec<u8>, ModelEntry) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = Manifest::read(&root.join("manifest.json")).unwrap();
        let entry = manifest
            .models
            .into_iter()
            .find(|m| m.name == name)
            .unwrap();
        let bytes =
            std::fs::read(root.join("models").join(&entry.path).join(&entry.onnx.file)).unwrap();
        (bytes, entry)
    }

    #[test]
    fn reads_the_committed_gradient_boosting_classifier() {
        let (bytes, entry) = committed("breast-cancer");
        let trees = read_trees(&bytes, &entry)
            .unwrap()
            .expect("a tree ensemble");
        assert_eq!(trees.ensemble.n_trees(), 100);
        assert_eq!(trees.ensemble.n_outputs(), 1);
        assert_eq!(trees.ensemble.n_features(), 30);
        assert_eq!(trees.transform, PostTransform::Logistic);
        assert_eq!(
            trees.classes,
            vec![
                ClassOutput::new(0, -1.0, 0.0),
                ClassOutput::new(0, 1.0, 0.0)
            ]
        );
    }

    #[test]
    fn a_neural_network_is_not_a_tree_ensemble() {
        let (bytes, entry) = committed("diabetes");
        assert!(read_trees(&bytes, &entry).unwrap().is_none());
    }

    #[test]
    fn the_margin_model_differs_only_in_post_transform() {
        let (bytes, entry) = committed("breast-cancer");
        let margin = margin_model(&bytes, &MarginOutput::Declared).unwrap();
        let original = ModelProto::decode(bytes.as_slice()).unwrap();
        let rewritten = ModelProto::decode(margin.as_slice()).unwrap();
        let attrs = |m: &ModelProto| m.graph.as_ref().unwrap().node[0].attribute.clone();
        let (a, b) = (attrs(&original), attrs(&rewritten));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            if x.name == "post_transform" {
                assert_eq!(
                    (x.s.as_slice(), y.s.as_slice()),
                    (&b"LOGISTIC"[..], &b"NONE"[..])
                );
            } else {
                assert_eq!(x, y);
            }
        }
        // Four bytes shorter ("LOGISTIC" -> "NONE"), every other byte carried over.
        assert_eq!(bytes.len() - margin.len(), 4);
        let trees = read_trees(&margin, &entry).unwrap().unwrap();
        assert_eq!(trees.transform, PostTransform::None);
        // A model without a tree ensemble comes back unchanged.
        let (mlp, _) = committed("diabetes");
        assert_eq!(margin_model(&mlp, &MarginOutput::Declared).unwrap(), mlp);
    }

    #[test]
    fn unsupported_graphs_are_refused_with_a_reason() {
        let (bytes, mut entry) = committed("breast-cancer");
        entry.class_labels.push("third".into());
        assert!(read_trees(&bytes, &entry)
            .unwrap_err()
            .contains("2 classes in the graph, 3 in the manifest"));
        let (bytes, mut entry) = committed("breast-cancer");
        entry.onnx.input = "X".into();
        assert!(read_trees(&bytes, &entry)
            .unwrap_err()
            .contains("not the graph input"));
        assert!(read_trees(b"\xff\xff", &entry).is_err());
    }
}
