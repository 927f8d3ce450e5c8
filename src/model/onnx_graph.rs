//! The parts of an ONNX model file that ONNX Runtime does not expose but serving needs: the
//! graph's nodes and their attributes, where the class labels of classifiers live (ZipMap's
//! `classlabels_*`, the ML classifiers' own). Decoded with a few hand-written `prost` messages
//! holding only the fields read here; the field numbers are those of `onnx.proto`.

use prost::Message;

/// `onnx.ModelProto`: only the graph.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ModelProto {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

/// `onnx.GraphProto`: only the nodes.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
}

/// `onnx.NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `onnx.AttributeProto`: the list forms class labels use.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
}

/// The ONNX-ML operator domain (ZipMap, the classifiers).
pub(crate) const ML_DOMAIN: &str = "ai.onnx.ml";

/// A model file's graph, for questions about how its outputs are produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct OnnxGraph {
    nodes: Vec<NodeProto>,
}

impl OnnxGraph {
    /// Decodes the graph of a model file.
    pub fn parse(model_bytes: &[u8]) -> Result<OnnxGraph, String> {
        let model = ModelProto::decode(model_bytes).map_err(|e| format!("cannot decode: {e}"))?;
        let graph = model.graph.ok_or("the model has no graph")?;
        Ok(OnnxGraph { nodes: graph.node })
    }

    /// The node that computes `value`, looking through value-preserving nodes (`Identity`,
    /// `Cast`), which converters put between a classifier and the graph outputs.
    pub fn source_of(&self, value: &str) -> Option<&NodeProto> {
        let mut value = value;
        // Bounded by the node count: a malformed graph with a cycle cannot loop forever.
        for _ in 0..=self.nodes.len() {
            let node = self
                .nodes
                .iter()
                .find(|n| n.output.iter().any(|o| o == value))?;
            let passes_through = node.domain.is_empty()
                && matches!(node.op_type.as_str(), "Identity" | "Cast")
                && node.input.len() == 1;
            if !passes_through {
                return Some(node);
            }
            value = &node.input[0];
        }
        None
    }
}

impl NodeProto {
    /// The attribute called `name`, if set.
    pub fn attribute(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name == name)
    }

    /// True for an `ai.onnx.ml` node of type `op_type`.
    pub fn is_ml(&self, op_type: &str) -> bool {
        self.domain == ML_DOMAIN && self.op_type == op_type
    }
}

#[cfg(test)]
pub(crate) mod build {
    //! Model files built in Rust for the tests of what reads them.
    use super::*;

    /// A node with list attributes.
    pub fn node(
        op_type: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            op_type: op_type.into(),
            attribute: attributes,
            domain: domain.into(),
        }
    }

    pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            ints: values.to_vec(),
            strings: vec![],
        }
    }

    pub fn strings(name: &str, values: &[&str]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            ints: vec![],
            strings: values.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    /// The encoded model file holding `nodes`.
    pub fn model(nodes: Vec<NodeProto>) -> Vec<u8> {
        ModelProto {
            graph: Some(GraphProto { node: nodes }),
        }
        .encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn source_looks_through_identity_and_cast_only() {
        let bytes = model(vec![
            node(
                "LinearClassifier",
                ML_DOMAIN,
                &["x"],
                &["label0", "scores"],
                vec![],
            ),
            node("Cast", "", &["label0"], &["label1"], vec![]),
            node("Identity", "", &["label1"], &["label"], vec![]),
            node("Normalizer", ML_DOMAIN, &["scores"], &["probs"], vec![]),
        ]);
        let graph = OnnxGraph::parse(&bytes).unwrap();
        assert!(graph.source_of("label").unwrap().is_ml("LinearClassifier"));
        assert!(graph.source_of("probs").unwrap().is_ml("Normalizer"));
        assert!(graph.source_of("x").is_none());
    }

    #[test]
    fn a_cycle_of_identities_ends() {
        let bytes = model(vec![
            node("Identity", "", &["b"], &["a"], vec![]),
            node("Identity", "", &["a"], &["b"], vec![]),
        ]);
        assert!(OnnxGraph::parse(&bytes).unwrap().source_of("a").is_none());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(OnnxGraph::parse(&[0xff, 0xff, 0xff]).is_err());
        assert_eq!(OnnxGraph::parse(&[]).unwrap_err(), "the model has no graph");
    }
}
