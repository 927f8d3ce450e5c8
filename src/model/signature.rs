//! A model's signature, read from the model itself (issue #13: the ONNX file is the source of
//! truth): every input and output with its name, element type and shape (dynamic dimensions
//! kept with their symbolic names), ZipMap outputs recognised with their class labels, what the
//! graph says the model does (classifier, regressor, or named tensors), and whether requests may
//! be batched together.
//!
//! Types and shapes come from the ONNX Runtime session (what it will actually accept); class
//! labels come from the file's nodes ([`super::onnx_graph`]), which ONNX Runtime does not expose.
//! The decisions are plain functions of those two, so they are unit-tested without a runtime.

use std::collections::HashMap;
use std::fmt;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use super::onnx_graph::{NodeProto, OnnxGraph};
use super::tensor::{ElementType, TensorData};

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A size the model fixes.
    Fixed(usize),
    /// A size chosen per call; with the file's symbolic name (`"N"`, `"batch_size"`) when it
    /// has one, so metadata can show users the names they gave.
    Dynamic(Option<String>),
}

impl Dim {
    /// The size, if fixed.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Dynamic(_) => None,
        }
    }

    /// The size as KServe V2 metadata writes it: `-1` for a dynamic dimension.
    pub fn v2(&self) -> i64 {
        self.fixed().map_or(-1, |n| n as i64)
    }

    fn from_ort(size: i64, symbol: &str) -> Dim {
        if size >= 0 {
            Dim::Fixed(size as usize)
        } else if symbol.is_empty() {
            Dim::Dynamic(None)
        } else {
            Dim::Dynamic(Some(symbol.to_owned()))
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Dynamic(Some(name)) => f.write_str(name),
            Dim::Dynamic(None) => f.write_str("?"),
        }
    }
}

/// A named tensor the model takes or gives.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub element_type: ElementType,
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// True when a tensor of `shape` fits: the same rank and every fixed dimension equal.
    pub fn accepts_shape(&self, shape: &[usize]) -> bool {
        shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(dim, &n)| dim.fixed().is_none_or(|f| f == n))
    }

    /// The declared shape as users read it, e.g. `[N, 1, 8, 8]` (`?` for an unnamed dynamic
    /// dimension).
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        format!("[{}]", dims.join(", "))
    }

    /// True when the first dimension is dynamic: the rows of a batch.
    fn has_batch_dim(&self) -> bool {
        matches!(self.shape.first(), Some(Dim::Dynamic(_)))
    }
}

/// A classifier's class labels as the graph stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassLabels {
    Int64(Vec<i64>),
    String(Vec<String>),
}

impl ClassLabels {
    /// Number of classes.
    pub fn len(&self) -> usize {
        match self {
            ClassLabels::Int64(v) => v.len(),
            ClassLabels::String(v) => v.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column of element `i` of a label output (`data`): where that label stands among
    /// these; `None` for a value that is not one of them, or of the other type.
    pub fn position_of(&self, data: &TensorData, i: usize) -> Option<usize> {
        match (data, self) {
            (TensorData::Int64(v), ClassLabels::Int64(l)) => {
                v.get(i).and_then(|x| l.iter().position(|y| y == x))
            }
            (TensorData::String(v), ClassLabels::String(l)) => {
                v.get(i).and_then(|x| l.iter().position(|y| y == x))
            }
            _ => None,
        }
    }

    /// The labels as text, the form `/predict` answers with.
    pub fn names(&self) -> Vec<String> {
        match self {
            ClassLabels::Int64(v) => v.iter().map(i64::to_string).collect(),
            ClassLabels::String(v) => v.clone(),
        }
    }

    /// The element type of a label output carrying these labels.
    pub fn element_type(&self) -> ElementType {
        match self {
            ClassLabels::Int64(_) => ElementType::Int64,
            ClassLabels::String(_) => ElementType::String,
        }
    }
}

/// A ZipMap output (`seq(map(int64|string, float))`, one map per row), served as a float
/// tensor `[rows, classes]` with columns in label order.
#[derive(Debug, Clone, PartialEq)]
pub struct ZipMapSpec {
    pub name: String,
    /// The labels in the ZipMap node's order: the column order of the served tensor.
    pub labels: ClassLabels,
    columns: LabelColumns,
}

/// Label → column, built once at load so each row of each call is a lookup.
#[derive(Debug, Clone, PartialEq)]
enum LabelColumns {
    Int64(HashMap<i64, usize>),
    String(HashMap<String, usize>),
}

impl ZipMapSpec {
    fn new(name: &str, labels: ClassLabels) -> Result<ZipMapSpec, SignatureError> {
        fn index<K: std::hash::Hash + Eq + Clone + fmt::Display>(
            name: &str,
            keys: &[K],
        ) -> Result<HashMap<K, usize>, SignatureError> {
            let mut columns = HashMap::with_capacity(keys.len());
            for (column, key) in keys.iter().enumerate() {
                if columns.insert(key.clone(), column).is_some() {
                    return Err(SignatureError::ZipMap {
                        name: name.to_owned(),
                        reason: format!("class label {key} appears twice"),
                    });
                }
            }
            Ok(columns)
        }
        let columns = match &labels {
            ClassLabels::Int64(v) => LabelColumns::Int64(index(name, v)?),
            ClassLabels::String(v) => LabelColumns::String(index(name, v)?),
        };
        Ok(ZipMapSpec {
            name: name.to_owned(),
            labels,
            columns,
        })
    }

    /// The column of an integer map key; `None` for a key that is not a label (or when the
    /// labels are strings).
    pub(crate) fn column_of_int(&self, key: i64) -> Option<usize> {
        match &self.columns {
            LabelColumns::Int64(m) => m.get(&key).copied(),
            LabelColumns::String(_) => None,
        }
    }

    /// The column of a string map key; `None` for a key that is not a label.
    pub(crate) fn column_of_str(&self, key: &str) -> Option<usize> {
        match &self.columns {
            LabelColumns::String(m) => m.get(key).copied(),
            LabelColumns::Int64(_) => None,
        }
    }
}

/// One output of the model.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputSpec {
    Tensor(TensorSpec),
    ZipMap(ZipMapSpec),
}

impl OutputSpec {
    /// The output's name in the graph.
    pub fn name(&self) -> &str {
        match self {
            OutputSpec::Tensor(t) => &t.name,
            OutputSpec::ZipMap(z) => &z.name,
        }
    }

    /// The tensor this output is served as: itself, or for a ZipMap the float probabilities
    /// `[?, classes]` (what V2 metadata and the OpenAPI document describe).
    pub fn served(&self) -> TensorSpec {
        match self {
            OutputSpec::Tensor(t) => t.clone(),
            OutputSpec::ZipMap(z) => TensorSpec {
                name: z.name.clone(),
                element_type: ElementType::Float32,
                shape: vec![Dim::Dynamic(None), Dim::Fixed(z.labels.len())],
            },
        }
    }
}

/// What the graph says the model does, which decides the shape of `/predict` answers.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphTask {
    /// A label output plus probabilities (a tensor or a ZipMap), with the class labels the
    /// graph carries (in probability-column order).
    Classifier {
        label_output: String,
        probabilities_output: String,
        labels: ClassLabels,
    },
    /// One floating-point output of shape `[N]` or `[N, 1]`.
    Regressor { output: String },
    /// Anything else: the outputs are answered by name.
    Tensors,
}

/// A model's inputs and outputs and what follows from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<OutputSpec>,
    pub task: GraphTask,
    /// True when every input and output has a dynamic first dimension, so calls can be
    /// concatenated along it. A model without one is run one call at a time.
    pub batched: bool,
}

/// Why a model's signature cannot be served; each names the input or output at fault, since
/// this is what stops the model from loading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot read the ONNX file's graph: {0}")]
    File(String),
    #[error("input '{name}' is {found}: only tensors are served as inputs")]
    NonTensorInput { name: String, found: String },
    #[error("{role} '{name}' has element type {found}, which is not served (served: bool, uint8-64, int8-64, float16, float, double, string)")]
    ElementType {
        role: &'static str,
        name: String,
        found: String,
    },
    #[error("output '{name}' is {found}: the only non-tensor output served is a ZipMap, seq(map(int64|string, tensor(float)))")]
    UnsupportedOutput { name: String, found: String },
    #[error("ZipMap output '{name}': {reason}")]
    ZipMap { name: String, reason: String },
    #[error(
        "classifier output '{name}' has {width} columns, but the graph has {labels} class labels"
    )]
    ClassCount {
        name: String,
        width: usize,
        labels: usize,
    },
}

impl Signature {
    /// Reads the signature of a loaded session and the file it was built from.
    pub fn read(session: &Session, model_bytes: &[u8]) -> Result<Signature, SignatureError> {
        let graph = OnnxGraph::parse(model_bytes).map_err(SignatureError::File)?;
        let inputs: Vec<(&str, &ValueType)> = session
            .inputs()
            .iter()
            .map(|o| (o.name(), o.dtype()))
            .collect();
        let outputs: Vec<(&str, &ValueType)> = session
            .outputs()
            .iter()
            .map(|o| (o.name(), o.dtype()))
            .collect();
        Signature::from_types(&inputs, &outputs, &graph)
    }

    /// The signature from ONNX Runtime's value types and the file's graph.
    pub(crate) fn from_types(
        inputs: &[(&str, &ValueType)],
        outputs: &[(&str, &ValueType)],
        graph: &OnnxGraph,
    ) -> Result<Signature, SignatureError> {
        let inputs = inputs
            .iter()
            .map(|&(name, ty)| match ty {
                ValueType::Tensor { .. } => tensor_spec("input", name, ty),
                other => Err(SignatureError::NonTensorInput {
                    name: name.to_owned(),
                    found: onnx_type_text(other),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = outputs
            .iter()
            .map(|&(name, ty)| output_spec(name, ty, graph))
            .collect::<Result<Vec<_>, _>>()?;
        let task = infer_task(&outputs, graph)?;
        let batched = !inputs.is_empty()
            && inputs.iter().all(TensorSpec::has_batch_dim)
            && outputs.iter().all(|o| match o {
                OutputSpec::Tensor(t) => t.has_batch_dim(),
                // One map per row of the ZipMap's input: as long as the batch.
                OutputSpec::ZipMap(_) => true,
            });
        Ok(Signature {
            inputs,
            outputs,
            task,
            batched,
        })
    }

    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The inputs' names, in input order (what error messages and schemas list).
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|i| i.name.as_str()).collect()
    }

    /// The outputs' names, in output order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(OutputSpec::name).collect()
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name() == name)
    }

    /// The inputs and outputs as JSON in ONNX's notation, each `{name, type, shape}` with
    /// `type` as `tensor(float)` or `seq(map(int64,tensor(float)))` and `shape` holding sizes,
    /// dimension names, and `null` for an unnamed dynamic dimension (a ZipMap has no shape).
    /// What `/manifest` and `models list` show and `models add` records, so users see the
    /// signature as onnx.helper and Netron print it.
    pub fn describe(&self) -> serde_json::Value {
        let tensor = |t: &TensorSpec| {
            let shape: Vec<serde_json::Value> = t
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => serde_json::json!(n),
                    Dim::Dynamic(Some(name)) => serde_json::json!(name),
                    Dim::Dynamic(None) => serde_json::Value::Null,
                })
                .collect();
            serde_json::json!({
                "name": t.name,
                "type": format!("tensor({})", t.element_type),
                "shape": shape,
            })
        };
        let outputs: Vec<serde_json::Value> = self
            .outputs
            .iter()
            .map(|o| match o {
                OutputSpec::Tensor(t) => tensor(t),
                OutputSpec::ZipMap(z) => serde_json::json!({
                    "name": z.name,
                    "type": format!("seq(map({},tensor(float)))", z.labels.element_type()),
                    "shape": null,
                }),
            })
            .collect();
        serde_json::json!({
            "inputs": self.inputs.iter().map(tensor).collect::<Vec<_>>(),
            "outputs": outputs,
        })
    }
}

/// A tensor's spec from ONNX Runtime's description of it (`ty` must be a tensor).
fn tensor_spec(
    role: &'static str,
    name: &str,
    ty: &ValueType,
) -> Result<TensorSpec, SignatureError> {
    let ValueType::Tensor {
        ty: element,
        shape,
        dimension_symbols,
    } = ty
    else {
        unreachable!("tensor_spec is called for tensors only");
    };
    let element_type =
        ElementType::from_ort(*element).ok_or_else(|| SignatureError::ElementType {
            role,
            name: name.to_owned(),
            found: element.to_string(),
        })?;
    let shape = shape
        .iter()
        .enumerate()
        .map(|(i, &size)| Dim::from_ort(size, dimension_symbols.get(i).map_or("", String::as_str)))
        .collect();
    Ok(TensorSpec {
        name: name.to_owned(),
        element_type,
        shape,
    })
}

fn output_spec(
    name: &str,
    ty: &ValueType,
    graph: &OnnxGraph,
) -> Result<OutputSpec, SignatureError> {
    match ty {
        ValueType::Tensor { .. } => tensor_spec("output", name, ty).map(OutputSpec::Tensor),
        ValueType::Sequence(inner) => match inner.as_ref() {
            ValueType::Map {
                key: key @ (TensorElementType::Int64 | TensorElementType::String),
                value: TensorElementType::Float32,
            } => zipmap_spec(name, *key, graph).map(OutputSpec::ZipMap),
            _ => Err(unsupported_output(name, ty)),
        },
        _ => Err(unsupported_output(name, ty)),
    }
}

fn unsupported_output(name: &str, ty: &ValueType) -> SignatureError {
    SignatureError::UnsupportedOutput {
        name: name.to_owned(),
        found: onnx_type_text(ty),
    }
}

/// A ZipMap output's labels, from the ZipMap node that produces it.
fn zipmap_spec(
    name: &str,
    key: TensorElementType,
    graph: &OnnxGraph,
) -> Result<ZipMapSpec, SignatureError> {
    let fail = |reason: String| SignatureError::ZipMap {
        name: name.to_owned(),
        reason,
    };
    let node = graph
        .source_of(name)
        .filter(|n| n.is_ml("ZipMap"))
        .ok_or_else(|| {
            fail("no ZipMap node produces it, so its class labels are unknown".into())
        })?;
    let labels = class_labels(node).ok_or_else(|| {
        fail("the ZipMap node has neither classlabels_int64s nor classlabels_strings".into())
    })?;
    let expected = if key == TensorElementType::String {
        ElementType::String
    } else {
        ElementType::Int64
    };
    if labels.element_type() != expected {
        return Err(fail(format!(
            "its map keys are {expected} but the ZipMap's labels are {}",
            labels.element_type()
        )));
    }
    ZipMapSpec::new(name, labels)
}

/// The class labels an ONNX-ML node carries: ZipMap and TreeEnsembleClassifier say
/// `classlabels_int64s`, LinearClassifier and SVMClassifier `classlabels_ints`; all of them
/// `classlabels_strings` for string labels.
fn class_labels(node: &NodeProto) -> Option<ClassLabels> {
    for name in ["classlabels_int64s", "classlabels_ints"] {
        if let Some(a) = node.attribute(name).filter(|a| !a.ints.is_empty()) {
            return Some(ClassLabels::Int64(a.ints.clone()));
        }
    }
    let strings = node
        .attribute("classlabels_strings")
        .filter(|a| !a.strings.is_empty())?;
    Some(ClassLabels::String(
        strings
            .strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    ))
}

/// Classifier when two outputs are a label and probabilities with labels in the graph;
/// regressor for one float `[N]`/`[N, 1]` output; named tensors otherwise.
fn infer_task(outputs: &[OutputSpec], graph: &OnnxGraph) -> Result<GraphTask, SignatureError> {
    match outputs {
        [a, b] => Ok(classifier(a, b, graph)?
            .or(classifier(b, a, graph)?)
            .unwrap_or(GraphTask::Tensors)),
        [OutputSpec::Tensor(t)] if is_regression_value(t) => Ok(GraphTask::Regressor {
            output: t.name.clone(),
        }),
        _ => Ok(GraphTask::Tensors),
    }
}

fn is_regression_value(t: &TensorSpec) -> bool {
    t.element_type.is_float()
        && match t.shape.as_slice() {
            [_] => true,
            [_, last] => last.fixed() == Some(1),
            _ => false,
        }
}

/// `Some` when `label` is a rank-1 int64/string tensor and `probabilities` a ZipMap or a float
/// `[N, C]` tensor, with class labels in the graph of the label's type.
fn classifier(
    label: &OutputSpec,
    probabilities: &OutputSpec,
    graph: &OnnxGraph,
) -> Result<Option<GraphTask>, SignatureError> {
    let OutputSpec::Tensor(label) = label else {
        return Ok(None);
    };
    // Rank 1 only: onnxmltools declares LightGBM's label as [1] although it has one per row.
    let is_label = label.shape.len() == 1
        && matches!(label.element_type, ElementType::Int64 | ElementType::String);
    if !is_label {
        return Ok(None);
    }
    let labels = match probabilities {
        OutputSpec::ZipMap(z) => z.labels.clone(),
        OutputSpec::Tensor(p) if p.element_type.is_float() && p.shape.len() == 2 => {
            let Some(labels) = graph.source_of(&label.name).and_then(class_labels) else {
                return Ok(None);
            };
            if let Some(width) = p.shape[1].fixed().filter(|&w| w != labels.len()) {
                return Err(SignatureError::ClassCount {
                    name: p.name.clone(),
                    width,
                    labels: labels.len(),
                });
            }
            labels
        }
        OutputSpec::Tensor(_) => return Ok(None),
    };
    if labels.element_type() != label.element_type {
        return Ok(None);
    }
    Ok(Some(GraphTask::Classifier {
        label_output: label.name.clone(),
        probabilities_output: probabilities.name().to_owned(),
        labels,
    }))
}

/// A value type in ONNX's notation (`tensor(float)`, `seq(map(int64,tensor(float)))`), which
/// is how users' tools (Netron, onnx.helper) print them.
fn onnx_type_text(ty: &ValueType) -> String {
    let element = |t: &TensorElementType| {
        ElementType::from_ort(*t).map_or_else(|| t.to_string(), |e| e.onnx_name().to_owned())
    };
    match ty {
        ValueType::Tensor { ty, .. } => format!("tensor({})", element(ty)),
        ValueType::Sequence(inner) => format!("seq({})", onnx_type_text(inner)),
        ValueType::Map { key, value } => {
            format!("map({},tensor({}))", element(key), element(value))
        }
        ValueType::Optional(inner) => format!("optional({})", onnx_type_text(inner)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::onnx_graph::build::{ints, model, node, strings};
    use super::super::onnx_graph::ML_DOMAIN;
    use super::*;
    use ort::value::{Shape, SymbolicDimensions};

    /// A tensor type; negative sizes are dynamic, `"name"` gives a dynamic dim its symbol.
    fn tensor(ty: TensorElementType, dims: &[(i64, &str)]) -> ValueType {
        ValueType::Tensor {
            ty,
            shape: Shape::new(dims.iter().map(|d| d.0)),
            dimension_symbols: SymbolicDimensions::new(dims.iter().map(|d| d.1.to_string())),
        }
    }

    fn zipmap_type(key: TensorElementType) -> ValueType {
        ValueType::Sequence(Box::new(ValueType::Map {
            key,
            value: TensorElementType::Float32,
        }))
    }

    const F32: TensorElementType = TensorElementType::Float32;
    const I64: TensorElementType = TensorElementType::Int64;
    const STR: TensorElementType = TensorElementType::String;

    fn graph(nodes: Vec<super::super::onnx_graph::NodeProto>) -> OnnxGraph {
        OnnxGraph::parse(&model(nodes)).unwrap()
    }

    /// skl2onnx's LogisticRegression with default options.
    fn zipmap_graph(labels: super::super::onnx_graph::AttributeProto) -> OnnxGraph {
        graph(vec![
            node(
                "LinearClassifier",
                ML_DOMAIN,
                &["float_input"],
                &["label", "scores"],
                vec![ints("classlabels_ints", &[0, 1, 2])],
            ),
            node("Cast", "", &["label"], &["output_label"], vec![]),
            node(
                "Normalizer",
                ML_DOMAIN,
                &["scores"],
                &["probability_tensor"],
                vec![],
            ),
            node(
                "ZipMap",
                ML_DOMAIN,
                &["probability_tensor"],
                &["output_probability"],
                vec![labels],
            ),
        ])
    }

    /// The signature of [`zipmap_graph`]'s model: a `[N, 4]` float input, a `[N]` label and a
    /// ZipMap with map keys of type `key`.
    fn zipmap_classifier(
        key: TensorElementType,
        labels: super::super::onnx_graph::AttributeProto,
    ) -> Result<Signature, SignatureError> {
        let input = tensor(F32, &[(-1, ""), (4, "")]);
        let label = tensor(key, &[(-1, "")]);
        let probs = zipmap_type(key);
        Signature::from_types(
            &[("float_input", &input)],
            &[("output_label", &label), ("output_probability", &probs)],
            &zipmap_graph(labels),
        )
    }

    /// The message a signature of these inputs and outputs is refused with.
    fn refusal(
        inputs: &[(&str, &ValueType)],
        outputs: &[(&str, &ValueType)],
        graph: &OnnxGraph,
    ) -> String {
        Signature::from_types(inputs, outputs, graph)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn zipmap_classifier_with_integer_labels() {
        let sig = zipmap_classifier(I64, ints("classlabels_int64s", &[0, 1, 2])).unwrap();
        assert_eq!(
            sig.inputs,
            vec![TensorSpec {
                name: "float_input".into(),
                element_type: ElementType::Float32,
                shape: vec![Dim::Dynamic(None), Dim::Fixed(4)],
            }]
        );
        assert_eq!(
            sig.task,
            GraphTask::Classifier {
                label_output: "output_label".into(),
                probabilities_output: "output_probability".into(),
                labels: ClassLabels::Int64(vec![0, 1, 2]),
            }
        );
        assert!(sig.batched);
        let OutputSpec::ZipMap(z) = sig.output("output_probability").unwrap() else {
            panic!("not a ZipMap: {:?}", sig.outputs[1]);
        };
        assert_eq!(
            (z.column_of_int(2), z.column_of_int(3), z.column_of_str("2")),
            (Some(2), None, None)
        );
        assert_eq!(
            sig.outputs[1].served().shape,
            vec![Dim::Dynamic(None), Dim::Fixed(3)]
        );
    }

    #[test]
    fn zipmap_with_string_labels_keeps_their_order() {
        let labels = strings(
            "classlabels_strings",
            &["setosa", "virginica", "versicolor"],
        );
        let sig = zipmap_classifier(STR, labels).unwrap();
        let GraphTask::Classifier { labels, .. } = &sig.task else {
            panic!("{:?}", sig.task)
        };
        assert_eq!(labels.names(), ["setosa", "virginica", "versicolor"]);
        let OutputSpec::ZipMap(z) = &sig.outputs[1] else {
            panic!()
        };
        assert_eq!(z.column_of_str("versicolor"), Some(2));
    }

    #[test]
    fn zipmap_errors_name_the_output() {
        let label = tensor(I64, &[(-1, "")]);
        let probs = zipmap_type(I64);
        let input = tensor(F32, &[(-1, ""), (4, "")]);
        let no_zipmap = graph(vec![node(
            "Foo",
            "custom",
            &["x"],
            &["output_probability"],
            vec![],
        )]);
        let wrong_kind = zipmap_graph(strings("classlabels_strings", &["a", "b"]));
        let twice = zipmap_graph(ints("classlabels_int64s", &[1, 1]));
        let with_label = [("output_label", &label), ("output_probability", &probs)];
        let alone = [("output_probability", &probs)];
        assert_eq!(
            refusal(&[("x", &input)], &with_label, &no_zipmap),
            "ZipMap output 'output_probability': no ZipMap node produces it, so its class labels are unknown"
        );
        assert_eq!(
            refusal(&[("x", &input)], &alone, &wrong_kind),
            "ZipMap output 'output_probability': its map keys are int64 but the ZipMap's labels are string"
        );
        assert_eq!(
            refusal(&[("x", &input)], &alone, &twice),
            "ZipMap output 'output_probability': class label 1 appears twice"
        );
    }

    #[test]
    fn other_sequences_and_maps_are_refused_at_load_by_name() {
        let input = tensor(F32, &[(-1, ""), (4, "")]);
        let seq_of_tensors = ValueType::Sequence(Box::new(tensor(F32, &[(-1, "")])));
        let double_map = ValueType::Sequence(Box::new(ValueType::Map {
            key: I64,
            value: TensorElementType::Float64,
        }));
        let map = ValueType::Map {
            key: STR,
            value: F32,
        };
        for (ty, text) in [
            (&seq_of_tensors, "seq(tensor(float))"),
            (&double_map, "seq(map(int64,tensor(double)))"),
            (&map, "map(string,tensor(float))"),
        ] {
            assert_eq!(
                refusal(&[("x", &input)], &[("scores", ty)], &graph(vec![])),
                format!("output 'scores' is {text}: the only non-tensor output served is a ZipMap, seq(map(int64|string, tensor(float)))")
            );
        }
        assert_eq!(
            refusal(&[("x", &map)], &[], &graph(vec![])),
            "input 'x' is map(string,tensor(float)): only tensors are served as inputs"
        );
        let bf16 = tensor(TensorElementType::Bfloat16, &[(-1, "")]);
        let err = refusal(&[("x", &bf16)], &[], &graph(vec![]));
        assert!(
            err.starts_with("input 'x' has element type bf16, which is not served"),
            "{err}"
        );
    }

    #[test]
    fn tensor_probabilities_take_labels_from_the_classifier_node() {
        let city = tensor(STR, &[(-1, ""), (1, "")]);
        let x1 = tensor(F32, &[(-1, ""), (1, "")]);
        let label = tensor(I64, &[(-1, "")]);
        let probs = tensor(F32, &[(-1, ""), (2, "")]);
        let g = graph(vec![node(
            "LinearClassifier",
            ML_DOMAIN,
            &["features"],
            &["label", "probabilities"],
            vec![ints("classlabels_ints", &[0, 1])],
        )]);
        let sig = Signature::from_types(
            &[("city", &city), ("x1", &x1)],
            &[("label", &label), ("probabilities", &probs)],
            &g,
        )
        .unwrap();
        assert_eq!(
            sig.task,
            GraphTask::Classifier {
                label_output: "label".into(),
                probabilities_output: "probabilities".into(),
                labels: ClassLabels::Int64(vec![0, 1]),
            }
        );
        assert_eq!(sig.inputs[0].element_type, ElementType::String);

        let three = tensor(F32, &[(-1, ""), (3, "")]);
        assert_eq!(
            refusal(
                &[("x1", &x1)],
                &[("label", &label), ("probabilities", &three)],
                &g
            ),
            "classifier output 'probabilities' has 3 columns, but the graph has 2 class labels"
        );
    }

    #[test]
    fn tree_ensemble_labels_and_outputs_in_either_order() {
        let input = tensor(F32, &[(-1, ""), (30, "")]);
        // onnxmltools' LightGBM: the label declared [1].
        let label = tensor(I64, &[(1, "")]);
        let probs = zipmap_type(I64);
        let g = graph(vec![
            node(
                "TreeEnsembleClassifier",
                ML_DOMAIN,
                &["input"],
                &["label", "probability_tensor"],
                vec![ints("classlabels_int64s", &[0, 1])],
            ),
            node(
                "ZipMap",
                ML_DOMAIN,
                &["probability_tensor"],
                &["probabilities"],
                vec![ints("classlabels_int64s", &[0, 1])],
            ),
        ]);
        let sig = Signature::from_types(
            &[("input", &input)],
            &[("probabilities", &probs), ("label", &label)],
            &g,
        )
        .unwrap();
        assert!(
            matches!(&sig.task, GraphTask::Classifier { label_output, .. } if label_output == "label")
        );
        // The fixed [1] label is not a batch dimension, so this model is not batched.
        assert!(!sig.batched);
    }

    #[test]
    fn regressor_for_one_float_value_per_row() {
        let input = tensor(TensorElementType::Float64, &[(-1, ""), (10, "")]);
        for dims in [&[(-1, "")][..], &[(-1, ""), (1, "")]] {
            let value = tensor(TensorElementType::Float64, dims);
            let sig = Signature::from_types(
                &[("double_input", &input)],
                &[("variable", &value)],
                &graph(vec![]),
            )
            .unwrap();
            assert_eq!(
                sig.task,
                GraphTask::Regressor {
                    output: "variable".into()
                }
            );
        }
        let two = tensor(F32, &[(-1, ""), (2, "")]);
        let ints_out = tensor(I64, &[(-1, ""), (1, "")]);
        for ty in [&two, &ints_out] {
            let sig =
                Signature::from_types(&[("x", &input)], &[("y", ty)], &graph(vec![])).unwrap();
            assert_eq!(sig.task, GraphTask::Tensors);
        }
    }

    #[test]
    fn image_model_keeps_symbolic_dims_and_is_named_tensors() {
        let pixels = tensor(F32, &[(-1, "N"), (1, ""), (8, ""), (8, "")]);
        let probs = tensor(F32, &[(-1, "N"), (3, "")]);
        let sig =
            Signature::from_types(&[("pixels", &pixels)], &[("probs", &probs)], &graph(vec![]))
                .unwrap();
        assert_eq!(sig.task, GraphTask::Tensors);
        assert!(sig.batched);
        let spec = &sig.inputs[0];
        assert_eq!(spec.shape_text(), "[N, 1, 8, 8]");
        assert_eq!(
            spec.shape.iter().map(Dim::v2).collect::<Vec<_>>(),
            [-1, 1, 8, 8]
        );
        assert!(spec.accepts_shape(&[5, 1, 8, 8]));
        assert!(!spec.accepts_shape(&[5, 1, 8, 9]));
        assert!(!spec.accepts_shape(&[5, 8, 8]));
    }

    #[test]
    fn a_fixed_first_dimension_anywhere_means_not_batched() {
        let dynamic = tensor(F32, &[(-1, ""), (2, "")]);
        let fixed = tensor(F32, &[(1, ""), (2, "")]);
        let scalar = tensor(F32, &[]);
        let cases: [(&ValueType, &ValueType, bool); 4] = [
            (&dynamic, &dynamic, true),
            (&fixed, &dynamic, false),
            (&dynamic, &fixed, false),
            (&dynamic, &scalar, false),
        ];
        for (input, output, batched) in cases {
            let sig =
                Signature::from_types(&[("x", input)], &[("y", output)], &graph(vec![])).unwrap();
            assert_eq!(sig.batched, batched, "{input} -> {output}");
        }
    }
}
