//! Typed models end to end on real files: tests/typed_models/build.py exports the models users
//! bring (skl2onnx with default options, a float64 and an int64 model, a 4-input
//! ColumnTransformer with a string column, a CNN written with onnx.helper) and records what
//! onnxruntime (Python) answers; these tests read each file's signature through real ONNX
//! Runtime, run the recorded inputs through `model::infer::run` and compare bit for bit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ferrum_serve::config::ExecutionProviderChoice;
use ferrum_serve::model::infer::{self, NamedTensor};
use ferrum_serve::model::signature::{
    ClassLabels, Dim, GraphTask, OutputSpec, Signature, TensorSpec,
};
use ferrum_serve::model::tensor::{ElementType, TensorData, TypedTensor};
use ferrum_serve::model::Runtime;
use ort::session::Session;
use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The models, built once per test binary into a temporary directory.
fn models_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let built = Command::new(common::fixtures::dev_python())
            .arg(repo_root().join("tests/typed_models/build.py"))
            .arg(dir.path())
            .output()
            .expect("run build.py");
        assert!(
            built.status.success(),
            "build.py failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        dir
    })
    .path()
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let dylib = std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".ort/libonnxruntime.so"));
        Runtime::load(&dylib).expect("ONNX Runtime (run scripts/fetch-onnxruntime.sh .ort)")
    })
}

/// A model of the repository, loaded: its session and signature.
struct Loaded {
    name: &'static str,
    session: Session,
    signature: Signature,
}

fn model_bytes(name: &str) -> Vec<u8> {
    std::fs::read(models_dir().join(name).join("1/model.onnx")).unwrap()
}

fn session(bytes: &[u8]) -> Session {
    runtime()
        .session(bytes, 2, ExecutionProviderChoice::Cpu)
        .expect("session")
        .0
}

fn load(name: &'static str) -> Loaded {
    let bytes = model_bytes(name);
    let session = session(&bytes);
    let signature = Signature::read(&session, &bytes).expect("signature");
    Loaded {
        name,
        session,
        signature,
    }
}

fn case(name: &str) -> Value {
    let text = std::fs::read_to_string(models_dir().join(name).join("case.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn shape_of(tensor: &Value) -> Vec<usize> {
    tensor["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// A recorded tensor, rebuilt exactly: from its little-endian bytes, or its strings.
fn recorded_tensor(tensor: &Value) -> TypedTensor {
    let ty = ElementType::from_v2_name(tensor["datatype"].as_str().unwrap()).unwrap();
    let shape = shape_of(tensor);
    if ty == ElementType::String {
        let strings = tensor["strings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        return TypedTensor::new(shape, TensorData::String(strings)).unwrap();
    }
    let bytes = hex::decode(tensor["hex"].as_str().unwrap()).unwrap();
    TypedTensor::from_le_bytes(ty, shape, &bytes).unwrap()
}

fn recorded_inputs(case: &Value) -> Vec<NamedTensor> {
    case["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| NamedTensor {
            name: name.clone(),
            tensor: recorded_tensor(t),
        })
        .collect()
}

/// Runs the recorded inputs and checks every output against onnxruntime Python's, bit for bit
/// (type, shape and bytes); for a ZipMap also each row's raw `{label: probability}` map.
fn run_recorded_case(model: &mut Loaded) {
    let case = case(model.name);
    let outputs = infer::run(
        &mut model.session,
        &model.signature,
        &recorded_inputs(&case),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", model.name));
    let expected = case["outputs"].as_object().unwrap();
    let mut names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    let mut expected_names: Vec<&str> = expected.keys().map(String::as_str).collect();
    expected_names.sort_unstable();
    assert_eq!(names, expected_names, "{}", model.name);
    for output in &outputs {
        let want = &expected[&output.name];
        let got = &output.tensor;
        let context = format!("{} output '{}'", model.name, output.name);
        assert_eq!(got.element_type().v2_name(), want["datatype"], "{context}");
        assert_eq!(got.shape(), shape_of(want), "{context}");
        match got.element_type() {
            ElementType::String => assert_eq!(got, &recorded_tensor(want), "{context}"),
            _ => assert_eq!(
                hex::encode(got.to_le_bytes()),
                want["hex"].as_str().unwrap(),
                "{context}"
            ),
        }
        if let Some(rows) = want.get("zipmap") {
            check_zipmap_rows(&model.signature, &output.name, got, rows);
        }
    }
}

/// Each `[label, probability hex]` ONNX Runtime put in row r's map is in row r, at the
/// column of that label in the signature's labels.
fn check_zipmap_rows(signature: &Signature, name: &str, got: &TypedTensor, rows: &Value) {
    let Some(OutputSpec::ZipMap(zipmap)) = signature.output(name) else {
        panic!("'{name}' is not a ZipMap in {signature:?}");
    };
    let TensorData::Float32(values) = got.data() else {
        panic!("ZipMap probabilities are not float: {got:?}")
    };
    let labels = zipmap.labels.names();
    let classes = labels.len();
    for (r, row) in rows.as_array().unwrap().iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), classes);
        for pair in row {
            let key = match &pair[0] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let column = labels.iter().position(|l| *l == key).unwrap();
            let p = values[r * classes + column];
            assert_eq!(
                hex::encode(p.to_le_bytes()),
                pair[1].as_str().unwrap(),
                "row {r} label {key}"
            );
        }
    }
}

fn dynamic() -> Dim {
    Dim::Dynamic(None)
}

fn spec(name: &str, element_type: ElementType, shape: Vec<Dim>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        element_type,
        shape,
    }
}

#[test]
fn logistic_regression_with_default_zipmap() {
    let mut model = load("logreg-zipmap");
    let sig = &model.signature;
    assert_eq!(
        sig.inputs,
        [spec(
            "float_input",
            ElementType::Float32,
            vec![dynamic(), Dim::Fixed(4)]
        )]
    );
    assert_eq!(
        sig.outputs[0],
        OutputSpec::Tensor(spec("output_label", ElementType::Int64, vec![dynamic()]))
    );
    let OutputSpec::ZipMap(zipmap) = &sig.outputs[1] else {
        panic!("{:?}", sig.outputs[1])
    };
    assert_eq!(zipmap.name, "output_probability");
    assert_eq!(zipmap.labels, ClassLabels::Int64(vec![0, 1, 2]));
    assert_eq!(
        sig.task,
        GraphTask::Classifier {
            label_output: "output_label".into(),
            probabilities_output: "output_probability".into(),
            labels: ClassLabels::Int64(vec![0, 1, 2]),
        }
    );
    assert!(sig.batched);
    run_recorded_case(&mut model);
}

#[test]
fn string_class_labels_through_zipmap() {
    let mut model = load("logreg-strings");
    let sig = &model.signature;
    assert_eq!(
        sig.outputs[0],
        OutputSpec::Tensor(spec("output_label", ElementType::String, vec![dynamic()]))
    );
    let labels = ClassLabels::String(vec![
        "setosa".into(),
        "versicolor".into(),
        "virginica".into(),
    ]);
    assert!(matches!(&sig.outputs[1], OutputSpec::ZipMap(z) if z.labels == labels));
    assert!(matches!(&sig.task, GraphTask::Classifier { labels: l, .. } if *l == labels));
    run_recorded_case(&mut model);
}

#[test]
fn float64_linear_regression() {
    let mut model = load("float64");
    let sig = &model.signature;
    assert_eq!(
        sig.inputs,
        [spec(
            "double_input",
            ElementType::Float64,
            vec![dynamic(), Dim::Fixed(10)]
        )]
    );
    assert_eq!(
        sig.outputs,
        [OutputSpec::Tensor(spec(
            "variable",
            ElementType::Float64,
            vec![dynamic(), Dim::Fixed(1)]
        ))]
    );
    assert_eq!(
        sig.task,
        GraphTask::Regressor {
            output: "variable".into()
        }
    );
    assert!(sig.batched);
    run_recorded_case(&mut model);
}

#[test]
fn int64_input_model() {
    let mut model = load("int64");
    let sig = &model.signature;
    assert_eq!(
        sig.inputs,
        [spec(
            "counts",
            ElementType::Int64,
            vec![dynamic(), Dim::Fixed(3)]
        )]
    );
    assert_eq!(
        sig.outputs,
        [OutputSpec::Tensor(spec(
            "variable",
            ElementType::Float32,
            vec![dynamic(), Dim::Fixed(1)]
        ))]
    );
    assert_eq!(
        sig.task,
        GraphTask::Regressor {
            output: "variable".into()
        }
    );
    run_recorded_case(&mut model);
}

#[test]
fn column_transformer_with_a_string_column() {
    let mut model = load("column-transformer");
    let sig = &model.signature;
    let column = |name, ty| spec(name, ty, vec![dynamic(), Dim::Fixed(1)]);
    assert_eq!(
        sig.inputs,
        [
            column("city", ElementType::String),
            column("x1", ElementType::Float32),
            column("x2", ElementType::Float32),
            column("x3", ElementType::Float32),
        ]
    );
    assert_eq!(
        sig.outputs,
        [
            OutputSpec::Tensor(spec("label", ElementType::Int64, vec![dynamic()])),
            OutputSpec::Tensor(spec(
                "probabilities",
                ElementType::Float32,
                vec![dynamic(), Dim::Fixed(2)]
            )),
        ]
    );
    assert_eq!(
        sig.task,
        GraphTask::Classifier {
            label_output: "label".into(),
            probabilities_output: "probabilities".into(),
            labels: ClassLabels::Int64(vec![0, 1]),
        }
    );
    assert!(sig.batched);
    run_recorded_case(&mut model);
}

#[test]
fn cnn_image_model_keeps_its_symbolic_batch_dimension() {
    let mut model = load("cnn");
    let sig = &model.signature;
    let n = || Dim::Dynamic(Some("N".into()));
    assert_eq!(
        sig.inputs,
        [spec(
            "pixels",
            ElementType::Float32,
            vec![n(), Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)]
        )]
    );
    assert_eq!(
        sig.outputs,
        [OutputSpec::Tensor(spec(
            "probs",
            ElementType::Float32,
            vec![n(), Dim::Fixed(3)]
        ))]
    );
    assert_eq!(sig.task, GraphTask::Tensors);
    assert!(sig.batched);
    run_recorded_case(&mut model);
}

#[test]
fn a_fixed_batch_model_is_not_batched() {
    let mut model = load("fixed-batch");
    let sig = &model.signature;
    assert_eq!(
        sig.inputs,
        [spec(
            "x",
            ElementType::Float32,
            vec![Dim::Fixed(1), Dim::Fixed(2)]
        )]
    );
    assert_eq!(sig.task, GraphTask::Tensors);
    assert!(!sig.batched);
    run_recorded_case(&mut model);
}

#[test]
fn a_sequence_of_tensors_output_is_refused_by_name() {
    let bytes = model_bytes("sequence-output");
    let err = Signature::read(&session(&bytes), &bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "output 'parts' is seq(tensor(float)): the only non-tensor output served is a ZipMap, seq(map(int64|string, tensor(float)))"
    );
}

/// What the batcher will do: requests' rows concatenated, run once, split back. Each request
/// must get exactly the bits it would have got alone (ZipMap and a CNN alike).
#[test]
fn concatenated_requests_get_the_same_bits_as_alone() {
    for name in ["logreg-zipmap", "cnn", "column-transformer"] {
        let mut model = load(name);
        let inputs = recorded_inputs(&case(name));
        let rows = inputs[0].tensor.batch_size().unwrap();
        let sizes = [1, rows - 1];
        // Each request: its slice of every input.
        let requests: Vec<Vec<NamedTensor>> = (0..sizes.len())
            .map(|r| {
                inputs
                    .iter()
                    .map(|i| NamedTensor {
                        name: i.name.clone(),
                        tensor: i.tensor.split_batch(&sizes).unwrap().swap_remove(r),
                    })
                    .collect()
            })
            .collect();
        let alone: Vec<Vec<NamedTensor>> = requests
            .iter()
            .map(|request| infer::run(&mut model.session, &model.signature, request).unwrap())
            .collect();
        let batch: Vec<NamedTensor> = inputs
            .iter()
            .enumerate()
            .map(|(k, i)| NamedTensor {
                name: i.name.clone(),
                tensor: TypedTensor::concat_batch(
                    &requests.iter().map(|r| &r[k].tensor).collect::<Vec<_>>(),
                )
                .unwrap(),
            })
            .collect();
        assert_eq!(batch, inputs, "{name}: concat(split(x)) == x");
        let together = infer::run(&mut model.session, &model.signature, &batch).unwrap();
        for (k, output) in together.iter().enumerate() {
            let parts = output.tensor.split_batch(&sizes).unwrap();
            for (r, part) in parts.iter().enumerate() {
                assert_eq!(
                    part.to_le_bytes(),
                    alone[r][k].tensor.to_le_bytes(),
                    "{name} output '{}' request {r}",
                    output.name
                );
            }
        }
    }
}

/// Every served element type goes into ONNX Runtime and comes back out unchanged, with its
/// ONNX name read from the file.
#[test]
fn every_element_type_in_and_out() {
    let mut model = load("every-type");
    let sig = &model.signature;
    let n = || Dim::Dynamic(Some("N".into()));
    let expected = |prefix: &str| -> Vec<TensorSpec> {
        ElementType::ALL
            .iter()
            .map(|&ty| {
                let name = format!("{prefix}_{}", ty.onnx_name());
                spec(&name, ty, vec![n(), Dim::Fixed(2)])
            })
            .collect()
    };
    assert_eq!(sig.inputs, expected("in"));
    let outputs: Vec<OutputSpec> = expected("out")
        .into_iter()
        .map(OutputSpec::Tensor)
        .collect();
    assert_eq!(sig.outputs, outputs);
    assert_eq!(sig.task, GraphTask::Tensors);
    assert!(sig.batched);
    run_recorded_case(&mut model);
}
