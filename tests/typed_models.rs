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

/// What the batcher does with `name`'s recorded rows, on its own session: a 1-row request and
/// the rest, run alone and then concatenated, run once and split back. Returns where a request's
/// share of the merged call differs in any bit from its answer alone, if anywhere.
fn merging_changes_bits(name: &'static str) -> Option<String> {
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
        for (r, part) in output
            .tensor
            .split_batch(&sizes)
            .unwrap()
            .iter()
            .enumerate()
        {
            if part.to_le_bytes() != alone[r][k].tensor.to_le_bytes() {
                return Some(format!("output '{}' request {r}", output.name));
            }
        }
    }
    None
}

/// The CNN, which the batcher merges on every CPU seen, gets exactly the bits each request
/// would have got alone (the models it does not merge:
/// `tensors_models_are_batched_and_each_request_gets_its_own_bits`).
#[test]
fn concatenated_requests_get_the_same_bits_as_alone() {
    assert_eq!(merging_changes_bits("cnn"), None);
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

/// The served models of the repository: every one but the refused sequence output, linked into
/// a bare repository (`--manifest none`).
fn served_repository() -> (tempfile::TempDir, Vec<String>) {
    let repo = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for item in std::fs::read_dir(models_dir()).unwrap() {
        let path = item.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "sequence-output" || !path.join("case.json").exists() {
            continue;
        }
        std::fs::create_dir(repo.path().join(&name)).unwrap();
        std::os::unix::fs::symlink(path.join("1"), repo.path().join(&name).join("1")).unwrap();
        names.push(name);
    }
    names.sort();
    (repo, names)
}

/// A recorded tensor's elements as V2 JSON `data`: floats widened exactly, integers exact.
fn json_data(tensor: &TypedTensor) -> Value {
    match tensor.data() {
        TensorData::Float16(v) => v.iter().map(|x| x.to_f64()).collect(),
        TensorData::Float32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Float64(v) => serde_json::json!(v),
        TensorData::Bool(v) => serde_json::json!(v),
        TensorData::Uint8(v) => serde_json::json!(v),
        TensorData::Uint16(v) => serde_json::json!(v),
        TensorData::Uint32(v) => serde_json::json!(v),
        TensorData::Uint64(v) => serde_json::json!(v),
        TensorData::Int8(v) => serde_json::json!(v),
        TensorData::Int16(v) => serde_json::json!(v),
        TensorData::Int32(v) => serde_json::json!(v),
        TensorData::Int64(v) => serde_json::json!(v),
        TensorData::String(v) => serde_json::json!(v),
    }
}

/// An answered output's JSON `data` as the little-endian bytes of its datatype (strings as
/// V2's length-prefixed bytes), so it compares with the recording bit for bit.
fn json_bytes(datatype: &str, data: &Value) -> Vec<u8> {
    let values = data.as_array().unwrap();
    let mut out = Vec::new();
    for v in values {
        match datatype {
            "FP16" => out.extend(half::f16::from_f64(v.as_f64().unwrap()).to_le_bytes()),
            "FP32" => {
                let x = v.as_f64().unwrap();
                assert_eq!(f64::from(x as f32), x, "an FP32 value widened exactly");
                out.extend((x as f32).to_le_bytes())
            }
            "FP64" => out.extend(v.as_f64().unwrap().to_le_bytes()),
            "BOOL" => out.push(v.as_bool().unwrap() as u8),
            "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
                let width = ElementType::from_v2_name(datatype)
                    .unwrap()
                    .byte_width()
                    .unwrap();
                out.extend(&v.as_u64().unwrap().to_le_bytes()[..width])
            }
            "INT8" | "INT16" | "INT32" | "INT64" => {
                let width = ElementType::from_v2_name(datatype)
                    .unwrap()
                    .byte_width()
                    .unwrap();
                out.extend(&v.as_i64().unwrap().to_le_bytes()[..width])
            }
            "BYTES" => {
                let s = v.as_str().unwrap();
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
            other => panic!("datatype {other}"),
        }
    }
    out
}

/// The recorded output's bytes (strings as V2's length-prefixed bytes).
fn recorded_bytes(tensor: &Value) -> Vec<u8> {
    recorded_tensor(tensor).to_le_bytes()
}

/// A V2 answer's outputs by name: (datatype, shape, bytes).
type Answered = std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

/// One V2 request with every recorded input, as JSON `data` or as binary tensor data, every
/// output asked for in the same encoding; the answer's outputs, or its status and body when
/// it is not 200.
async fn v2_infer(
    server: &common::Server,
    name: &str,
    case: &Value,
    binary: bool,
) -> Result<Answered, (u16, String)> {
    let inputs = recorded_inputs(case);
    let mut section = Vec::new();
    let described: Vec<Value> = inputs
        .iter()
        .map(|i| {
            let mut input = serde_json::json!({
                "name": i.name, "datatype": i.tensor.element_type().v2_name(), "shape": i.tensor.shape(),
            });
            if binary {
                let bytes = i.tensor.to_le_bytes();
                input["parameters"] = serde_json::json!({"binary_data_size": bytes.len()});
                section.extend(bytes);
            } else {
                input["data"] = json_data(&i.tensor);
            }
            input
        })
        .collect();
    let header =
        serde_json::json!({"inputs": described, "parameters": {"binary_data_output": binary}})
            .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(section);
    let mut request = common::client()
        .post(server.url(&format!("/v2/models/{name}/infer")))
        .body(body);
    if binary {
        request = request.header("inference-header-content-length", header.len());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let json_len: Option<usize> = response
        .headers()
        .get("inference-header-content-length")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let bytes = response.bytes().await.unwrap();
    if status != 200 {
        return Err((
            status.as_u16(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    assert_eq!(
        json_len.is_some(),
        binary,
        "{name}: binary framing only when asked"
    );
    let split = json_len.unwrap_or(bytes.len());
    let head: Value = serde_json::from_slice(&bytes[..split]).unwrap();
    let mut rest = &bytes[split..];
    let mut outputs = std::collections::BTreeMap::new();
    for output in head["outputs"].as_array().unwrap() {
        let datatype = output["datatype"].as_str().unwrap().to_owned();
        let shape = shape_of(output);
        let data = if binary {
            assert!(output.get("data").is_none(), "{name}: {output}");
            let size = output["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            chunk.to_vec()
        } else {
            json_bytes(&datatype, &output["data"])
        };
        outputs.insert(
            output["name"].as_str().unwrap().to_owned(),
            (datatype, shape, data),
        );
    }
    assert!(
        rest.is_empty(),
        "{name}: every byte is claimed by an output"
    );
    Ok(outputs)
}

/// True when an input holds a NaN or an infinity, which JSON has no number for.
fn has_non_finite(case: &Value) -> bool {
    recorded_inputs(case).iter().any(|i| match i.tensor.data() {
        TensorData::Float16(v) => v.iter().any(|x| !x.is_finite()),
        TensorData::Float32(v) => v.iter().any(|x| !x.is_finite()),
        TensorData::Float64(v) => v.iter().any(|x| !x.is_finite()),
        _ => false,
    })
}

/// Served from a bare repository, every model outside the rows form (float64, int64, four
/// inputs with a string column, a CNN, a fixed batch, every element type)
/// answers V2 inference, JSON and binary, with onnxruntime Python's outputs bit for bit (JSON
/// for every input JSON can write); its metadata is its signature; `/predict` says where its
/// tensors go (`/explain` does not take them).
#[tokio::test]
async fn tensors_models_are_served_over_v2_bit_for_bit() {
    let (repo, names) = served_repository();
    let dir = repo.path().to_str().unwrap();
    let server = common::Server::start_ready(&["--models-dir", dir, "--manifest", "none"]).await;
    let mut served_as_tensors = Vec::new();
    for name in &names {
        let (status, metadata) = server.get(&format!("/v2/models/{name}")).await;
        assert_eq!(status, 200, "{name}");
        if metadata["parameters"]["task"] != "tensors" {
            // The rows form (one float input) answers V2 with class indices: tests/user_models.rs.
            continue;
        }
        served_as_tensors.push(name.as_str());
        let case = case(name);
        for binary in [false, true] {
            let answer = v2_infer(&server, name, &case, binary).await;
            if !binary && has_non_finite(&case) {
                // JSON has no NaN or infinity: the null an encoder writes is refused by name
                // (the binary request carries those values).
                let (status, body) = answer.expect_err(name);
                assert_eq!(status, 422, "{name}: {body}");
                assert!(
                    body.contains("expected a number finite in") && body.contains("got null"),
                    "{body}"
                );
                continue;
            }
            let got = answer.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let expected = case["outputs"].as_object().unwrap();
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>(),
                "{name}"
            );
            for (output, want) in expected {
                let (datatype, shape, bytes) = &got[output];
                let context = format!("{name} output '{output}' (binary {binary})");
                assert_eq!(datatype, want["datatype"].as_str().unwrap(), "{context}");
                assert_eq!(shape, &shape_of(want), "{context}");
                assert_eq!(
                    hex::encode(bytes),
                    hex::encode(recorded_bytes(want)),
                    "{context}"
                );
            }
        }
        let signature = load(Box::leak(name.clone().into_boxed_str())).signature;
        let listed: Vec<(String, String, Vec<i64>)> = metadata["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let shape = i["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_i64().unwrap());
                (
                    i["name"].as_str().unwrap().into(),
                    i["datatype"].as_str().unwrap().into(),
                    shape.collect(),
                )
            })
            .collect();
        let declared: Vec<(String, String, Vec<i64>)> = signature
            .inputs
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    i.element_type.v2_name().into(),
                    i.shape.iter().map(Dim::v2).collect(),
                )
            })
            .collect();
        assert_eq!(listed, declared, "{name}");
    }
    assert_eq!(
        served_as_tensors,
        [
            "cnn",
            "column-transformer",
            "every-type",
            "fixed-batch",
            "float64",
            "int64"
        ]
    );
    // An image is not a set of columns: /explain says so (tabular tensors models are explained
    // column by column, tests/user_models.rs).
    let (status, body) = server
        .post(
            "/explain?model=cnn",
            &serde_json::json!({"instances": [{"pixels": vec![0.0; 64]}]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("explanation_unavailable")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only inputs [N] and [N, k]"),
        "{body}"
    );
}

/// A tensors model's request is checked by input name before it runs: wrong datatype,
/// missing input, a value out of its type's range, shapes the model does not take.
#[tokio::test]
async fn tensors_requests_are_refused_with_the_input_named() {
    let (repo, _) = served_repository();
    let dir = repo.path().to_str().unwrap();
    let server = common::Server::start_ready(&["--models-dir", dir, "--manifest", "none"]).await;
    let input = |name: &str, datatype: &str, shape: Value, data: Value| serde_json::json!({"name": name, "datatype": datatype, "shape": shape, "data": data});
    let cases = [
        (
            "int64",
            vec![input(
                "counts",
                "FP32",
                serde_json::json!([1, 3]),
                serde_json::json!([1, 2, 3]),
            )],
            422,
            "invalid_tensor",
            "input 'counts' is float, the model takes int64",
        ),
        (
            "int64",
            vec![input(
                "counts",
                "INT64",
                serde_json::json!([1, 3]),
                serde_json::json!([1, 2, 3.5]),
            )],
            422,
            "invalid_tensor",
            "data[2]: expected a whole number in INT64's range, got 3.5",
        ),
        (
            "every-type",
            vec![input(
                "in_uint8",
                "UINT8",
                serde_json::json!([1, 2]),
                serde_json::json!([1, 256]),
            )],
            422,
            "invalid_tensor",
            "input 'in_uint8': data[1]: expected a whole number in UINT8's range, got 256",
        ),
        (
            "column-transformer",
            vec![input(
                "city",
                "BYTES",
                serde_json::json!([1, 1]),
                serde_json::json!(["nice"]),
            )],
            422,
            "invalid_tensor",
            "input 'x1' is missing",
        ),
        (
            "cnn",
            vec![input(
                "pixels",
                "FP32",
                serde_json::json!([1, 1, 8, 7]),
                Value::from(vec![0.0; 56]),
            )],
            422,
            "invalid_tensor",
            "input 'pixels' has shape [1, 1, 8, 7], the model takes [N, 1, 8, 8]",
        ),
        (
            "cnn",
            vec![input(
                "image",
                "FP32",
                serde_json::json!([1]),
                serde_json::json!([0]),
            )],
            422,
            "invalid_tensor",
            "the model has no input 'image' (it takes 'pixels' float[N, 1, 8, 8])",
        ),
        (
            "fixed-batch",
            vec![input(
                "x",
                "FP32",
                serde_json::json!([2, 2]),
                serde_json::json!([1, 2, 3, 4]),
            )],
            422,
            "invalid_tensor",
            "input 'x' has shape [2, 2], the model takes [1, 2]",
        ),
    ];
    for (model, inputs, status, code, fragment) in cases {
        let (got, body) = server
            .post(
                &format!("/v2/models/{model}/infer"),
                &serde_json::json!({"inputs": inputs}),
            )
            .await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{model}: {body}"
        );
        assert!(
            body["error"].as_str().unwrap().contains(fragment),
            "{model}: {body}"
        );
    }
}

/// With the batcher on, a tensors model with a dynamic batch dimension is batched (its executor
/// line says so; a fixed-batch model stays direct, and so does one whose answers merging would
/// change), and concurrent requests, merged or not, each get exactly the bits of their own rows.
#[tokio::test]
async fn tensors_models_are_batched_and_each_request_gets_its_own_bits() {
    let (repo, _) = served_repository();
    let dir = repo.path().to_str().unwrap();
    let server = common::Server::start_ready(&[
        "--models-dir",
        dir,
        "--manifest",
        "none",
        "--batching",
        "on",
        "--max-queue-delay-us",
        "2000",
    ])
    .await;
    let [cnn, column_transformer, fixed_batch, logreg_zipmap] = server
        .executor_lines(["cnn", "column-transformer", "fixed-batch", "logreg-zipmap"])
        .await;
    assert!(cnn.contains("\"mode\":\"Batched\""), "{cnn}");
    assert!(fixed_batch.contains("\"mode\":\"Direct\""), "{fixed_batch}");
    // A model whose answers change when merged is not batched, even under --batching on:
    // skl2onnx's LogisticRegression (alone, or after a ColumnTransformer) on an AVX-512 CPU
    // gives a row alone probabilities 1-2 ulp away from the same row in a batch. On a CPU where
    // merging changes nothing, it is batched.
    let merged = [
        ("cnn", cnn),
        ("column-transformer", column_transformer),
        ("logreg-zipmap", logreg_zipmap),
    ]
    .map(|(name, line)| {
        let batched = line.contains("\"mode\":\"Batched\"");
        assert!(
            batched
                || (line.contains("\"mode\":\"Direct\"")
                    && line.contains("answers depend on the batch")),
            "{line}"
        );
        if let Some(difference) = merging_changes_bits(name) {
            assert!(!batched, "merging changes {difference}, yet: {line}");
        }
        (name, batched)
    });
    for (name, batched) in merged {
        let case = case(name);
        let inputs = recorded_inputs(&case);
        let rows = inputs[0].tensor.batch_size().unwrap();
        let row_of = |r: usize| -> Vec<NamedTensor> {
            inputs
                .iter()
                .map(|i| NamedTensor {
                    name: i.name.clone(),
                    tensor: i.tensor.slice_batch(r, r + 1).unwrap(),
                })
                .collect()
        };
        // One request per row, all at once; each answer must be that row of the recording
        // (batched: merged or not, the bits are the same), or that row's answer alone (direct).
        let requests = (0..rows).map(|r| {
            let inputs: serde_json::Map<String, Value> = row_of(r)
                .into_iter()
                .map(|NamedTensor { name, tensor: row }| {
                    let mut recorded = serde_json::json!({
                        "datatype": row.element_type().v2_name(), "shape": row.shape(),
                    });
                    match row.data() {
                        TensorData::String(v) => recorded["strings"] = serde_json::json!(v),
                        _ => recorded["hex"] = hex::encode(row.to_le_bytes()).into(),
                    }
                    (name, recorded)
                })
                .collect();
            let case = serde_json::json!({"inputs": inputs});
            let server = &server;
            async move { v2_infer(server, name, &case, true).await }
        });
        let answers = futures_util::future::join_all(requests).await;
        // Direct: each row's answer alone, computed once.
        let alone: Option<Vec<Vec<NamedTensor>>> = (!batched).then(|| {
            let mut model = load(name);
            (0..rows)
                .map(|r| infer::run(&mut model.session, &model.signature, &row_of(r)).unwrap())
                .collect()
        });
        for (output, want) in case["outputs"].as_object().unwrap() {
            let whole = recorded_tensor(want);
            for (r, answer) in answers.iter().enumerate() {
                let (_, shape, bytes) = &answer.as_ref().unwrap()[output];
                let expected = match &alone {
                    None => whole.slice_batch(r, r + 1).unwrap(),
                    Some(alone) => alone[r]
                        .iter()
                        .find(|o| o.name == *output)
                        .unwrap()
                        .tensor
                        .clone(),
                };
                assert_eq!(shape, expected.shape(), "{name} '{output}' row {r}");
                assert_eq!(bytes, &expected.to_le_bytes(), "{name} '{output}' row {r}");
            }
        }
    }
}

/// `/predict` on a tensors model: rows keyed by input name, each value of the input's type (a
/// string for the ColumnTransformer's city, whole numbers for int64, nested arrays for the CNN's
/// image), answered per row as onnxruntime Python computed it, bit for bit: a classifier's
/// label and probabilities by class, a regressor's value, other outputs by name.
#[tokio::test]
async fn predict_takes_rows_keyed_by_input_name() {
    let (repo, _) = served_repository();
    let dir = repo.path().to_str().unwrap();
    let server = common::Server::start_ready(&["--models-dir", dir, "--manifest", "none"]).await;
    for name in ["column-transformer", "float64", "int64", "cnn"] {
        let case = case(name);
        let inputs = recorded_inputs(&case);
        let rows = inputs[0].tensor.batch_size().unwrap();
        let instances: Vec<Value> = (0..rows)
            .map(|r| {
                inputs
                    .iter()
                    .map(|i| {
                        let row = i.tensor.slice_batch(r, r + 1).unwrap();
                        let values = json_data(&row);
                        let value = match values.as_array().unwrap().as_slice() {
                            [one] => one.clone(),
                            _ => values,
                        };
                        (i.name.clone(), value)
                    })
                    .collect::<serde_json::Map<String, Value>>()
                    .into()
            })
            .collect();
        let (status, body) = server
            .post(
                &format!("/models/{name}/predict"),
                &serde_json::json!({"instances": instances}),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        let predictions = body["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), rows, "{name}");
        let signature = load(Box::leak(name.to_owned().into_boxed_str())).signature;
        let expected = |output: &str| recorded_tensor(&case["outputs"][output]);
        for (r, prediction) in predictions.iter().enumerate() {
            let context = format!("{name} row {r}: {prediction}");
            let row_of = |output: &str| expected(output).slice_batch(r, r + 1).unwrap();
            match &signature.task {
                GraphTask::Classifier {
                    label_output,
                    probabilities_output,
                    labels,
                } => {
                    let label = match row_of(label_output).data() {
                        TensorData::Int64(v) => v[0].to_string(),
                        TensorData::String(v) => v[0].clone(),
                        other => panic!("{other:?}"),
                    };
                    assert_eq!(prediction["label"], label.as_str(), "{context}");
                    let probabilities: Vec<Value> = labels
                        .names()
                        .iter()
                        .map(|l| prediction["probabilities"][l].clone())
                        .collect();
                    assert_eq!(
                        json_bytes("FP32", &Value::from(probabilities)),
                        row_of(probabilities_output).to_le_bytes(),
                        "{context}"
                    );
                }
                GraphTask::Regressor { output } => {
                    let want = row_of(output);
                    let datatype = want.element_type().v2_name();
                    assert_eq!(
                        json_bytes(datatype, &Value::from(vec![prediction["value"].clone()])),
                        want.to_le_bytes(),
                        "{context}"
                    );
                }
                GraphTask::Tensors => {
                    for output in case["outputs"].as_object().unwrap().keys() {
                        let want = row_of(output);
                        let mut flat = Vec::new();
                        flatten_json(&prediction[output], &mut flat);
                        assert_eq!(
                            json_bytes(want.element_type().v2_name(), &Value::from(flat)),
                            want.to_le_bytes(),
                            "{context} '{output}'"
                        );
                    }
                }
            }
        }
    }
    let (status, body) = server
        .post(
            "/models/column-transformer/predict",
            &serde_json::json!({"instances": [{"city": 7, "x1": 0.5, "x2": 0.5, "x3": 0.5}]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_tensor")),
        "{body}"
    );
    assert_eq!(body["error"], "instances[0].city: expected a string, got 7");
    let (status, body) = server
        .post(
            "/models/column-transformer/predict",
            &serde_json::json!({"instances": [{"x1": 0.5, "x2": 0.5, "x3": 0.5}]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("missing_feature")),
        "{body}"
    );
    let (status, body) = server
        .post(
            "/models/cnn/predict",
            &serde_json::json!({"instances": [{"pixels": [1, 2]}]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_tensor")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("instances[0].pixels: input 'pixels' takes 64 values per row"),
        "{body}"
    );
}

/// The leaves of nested JSON arrays, in order.
fn flatten_json(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten_json(v, out)),
        leaf => out.push(leaf.clone()),
    }
}

/// `/openapi.json` for tensors models: `/predict` rows keyed by exactly the model's input
/// names, each value of its input's type (one element for an input holding one per row, else
/// a flat array of the elements after the batch), and no `/explain` route (a tensors model
/// answers it 422 `tensors_model`).
#[tokio::test]
async fn the_openapi_document_gives_tensors_models_their_rows() {
    let (repo, names) = served_repository();
    let dir = repo.path().to_str().unwrap();
    let server = common::Server::start_ready(&["--models-dir", dir, "--manifest", "none"]).await;
    let (status, spec) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().unwrap();
    let float32 = serde_json::json!({"type": "number", "exclusiveMinimum": -3.4028235677973366e38,
                                     "exclusiveMaximum": 3.4028235677973366e38});
    for name in ["column-transformer", "float64", "int64", "cnn"] {
        assert!(names.iter().any(|n| n == name), "{name} is served");
        assert!(
            !paths.contains_key(&format!("/models/{name}/explain")),
            "{name}"
        );
        let body = &paths[&format!("/models/{name}/predict")]["post"]["requestBody"]["content"]
            ["application/json"]["schema"];
        assert_eq!(body["required"], serde_json::json!(["instances"]), "{name}");
        assert_eq!(body["additionalProperties"], false);
        let row = &body["properties"]["instances"]["items"];
        assert_eq!(row["additionalProperties"], false);
        let signature = load(Box::leak(name.to_owned().into_boxed_str())).signature;
        let inputs: Vec<&str> = signature.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(row["required"], serde_json::json!(inputs), "{name}");
        for spec in &signature.inputs {
            let per_row: usize = spec
                .shape
                .iter()
                .skip(1)
                .map(|d| d.fixed().unwrap())
                .product();
            let element = match spec.element_type {
                ElementType::Float32 => float32.clone(),
                ElementType::Float64 => serde_json::json!({"type": "number"}),
                ElementType::Int64 => serde_json::json!({"type": "integer",
                    "minimum": i64::MIN, "maximum": i64::MAX}),
                // No NUL: ONNX Runtime takes strings as C strings.
                ElementType::String => {
                    serde_json::json!({"type": "string", "pattern": "^[^\\u0000]*$"})
                }
                other => panic!("{name}: no fixture has {other:?} inputs"),
            };
            let expected = match per_row {
                1 => element,
                n => serde_json::json!({"type": "array", "items": element,
                                        "minItems": n, "maxItems": n}),
            };
            assert_eq!(
                row["properties"][&spec.name], expected,
                "{name} '{}'",
                spec.name
            );
        }
    }
    // V2: every input once, by name, datatype and shape, for each row count k from 0 to 16
    // (the same for all inputs), with exactly as many elements as the shape holds.
    let infer = &paths["/v2/models/column-transformer/infer"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    let branches = infer["anyOf"].as_array().unwrap();
    assert_eq!(branches.len(), 17);
    let inputs = &branches[2]["properties"]["inputs"];
    let signature = load("column-transformer").signature;
    assert_eq!(inputs["minItems"], signature.inputs.len());
    assert_eq!(inputs["maxItems"], signature.inputs.len());
    let tensors = inputs["items"]["anyOf"].as_array().unwrap();
    for (spec, tensor) in signature.inputs.iter().zip(tensors) {
        let properties = &tensor["properties"];
        assert_eq!(properties["name"]["const"], spec.name.as_str());
        assert_eq!(properties["datatype"]["const"], spec.element_type.v2_name());
        assert_eq!(properties["shape"]["const"], serde_json::json!([2, 1]));
        assert_eq!(
            (
                &properties["data"]["minItems"],
                &properties["data"]["maxItems"]
            ),
            (&serde_json::json!(2), &serde_json::json!(2))
        );
    }
    // The cnn's image is 64 values per row.
    assert_eq!(
        paths["/models/cnn/predict"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["properties"]["instances"]["items"]["properties"]["pixels"]["maxItems"],
        64
    );
}
