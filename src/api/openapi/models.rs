//! The served document's model routes: for every model version in a snapshot, its own paths
//! (`/models/diabetes/predict`, `/models/diabetes/versions/1/explain`,
//! `/v2/models/diabetes/infer`, ...), each with the exact request that version accepts, so a
//! request valid against the document is a request the server takes (see the parent module
//! for why the document is built from the snapshot).
//!
//! Every schema says what the parsers in [`crate::input`] check, no more and no less where
//! JSON Schema can say it:
//!
//! - a row is an object with exactly the model's feature names (all required, no other), or an
//!   array of exactly `n_features` numbers; a number must stay finite once rounded to float32
//!   (`|x| < 2^128 - 2^103`, the rounding boundary past `f32::MAX`);
//! - `instances` holds 1 to `--max-request-rows` rows (`/explain`: the tighter of that,
//!   `--explain-max-rows` and the evaluation budget); `entity_ids` (non-empty strings) is
//!   offered only when the feature store looks the model up;
//! - `/explain`'s `class` is one of the class labels and `output` one of the spaces the
//!   model explains (`margin` only for a tree ensemble whose margin is known), both only for
//!   classifiers, and `top_k` a positive integer; a tensors model explained column by column
//!   takes its `/predict` rows; a version that cannot be explained (no background set, an
//!   image) has no `/explain` path;
//! - a rows model's V2 body has its one input by name, `FP32`, shape `[k, n_features]` and
//!   exactly `k * n_features` numbers in `data`. JSON Schema cannot tie an array's length to
//!   another field, so each `k` is one `anyOf` branch, for `k` up to [`V2_DOCUMENTED_ROWS`] (or
//!   the row limit when lower): a branch for each of the 1024 rows the server takes by
//!   default made a 450 kB document whose schemathesis run took 7 times as long (its coverage
//!   phase builds boundary arrays for every branch). Larger V2 batches are served all the
//!   same; the document only promises the ones it lists.
//!   Outputs are named from the model's, and the binary answer (`binary_data`,
//!   `binary_data_output`) is documented as `application/octet-stream`. The binary *request*
//!   extension needs a header no JSON body carries, so `binary_data_size` is left out. V2
//!   objects stay open (no `additionalProperties: false`): the protocol lets clients send
//!   fields and parameters a server does not know, and this one ignores them.
//! - a tensors model's `/predict` rows are keyed by input name, each value of its input's type
//!   (booleans, whole numbers in the type's range, floats finite in the type, strings), one
//!   value or a flat array of the values after the batch dimension, as many rows as a fixed
//!   batch dimension says; its answer has the outputs by name. Its V2 body has every input
//!   exactly once by name and datatype, with shape `[k, ...]` and as many elements of its type
//!   as that holds, one branch per `k` from 0 to [`V2_DOCUMENTED_ROWS`] (the same `k` for all
//!   inputs); a model with a dynamic dimension after the batch keeps the generic schema.
//!   Integer elements are whole numbers in the type's range: a float-spelled one (`3.0`) is
//!   taken up to 2^53 only, which JSON Schema cannot say (above it an f64 may already be
//!   rounded, so the parser refuses it rather than guess).
//!
//! An unversioned route (`/models/diabetes/predict`) is described by the model's primary
//! version, the one its metadata describes; a split between versions whose features differ
//! is served but described by that one only. Outside `--model-control-mode explicit` the
//! repository's load and unload answer 403 whatever the body, so no body is documented.

use serde_json::{json, Map, Value};

use crate::api::select::{Family, Form};
use crate::api::v2::response::tensors_of;
use crate::api::Limits;
use crate::explain::{self, ExplainQuery, Output};
use crate::features::FeatureStore;
use crate::model::signature::{GraphTask, TensorSpec};
use crate::model::tensor::ElementType;
use crate::serving::live::Snapshot;
use crate::serving::ServedModel;

/// The rounding boundary of float32: an f64 below it in magnitude rounds to a finite float32,
/// one at or above it to infinity (what `as f32` does, and what the parsers refuse).
const F32_BOUND: f64 = 340_282_356_779_733_661_637_539_395_458_142_568_448.0;

/// The same boundary for float16 (65504 is the largest finite value, 65520 rounds up).
const F16_BOUND: f64 = 65_520.0;

/// The templated path items of the model-independent document that the snapshot's models
/// replace (each model version's concrete routes are made from them, see [`specialise`]):
/// every form of every route family.
pub(super) fn templated() -> impl Iterator<Item = String> {
    Family::ALL.into_iter().flat_map(Family::paths)
}

/// The most rows a V2 infer schema enumerates (see the module docs).
const V2_DOCUMENTED_ROWS: usize = 16;

/// What the schemas depend on besides the models: the request limits, the feature store and
/// whether the repository takes load and unload requests.
pub struct Context<'a> {
    /// The row limits the parsers and the explanation planner apply.
    pub limits: &'a Limits,
    /// Whether `entity_ids` can be answered for a model.
    pub store: &'a FeatureStore,
    /// `--model-control-mode explicit`.
    pub accepts_load_requests: bool,
}

/// The repository extension's routes that change what serves.
const LOAD_ROUTES: [&str; 2] = [
    "/v2/repository/models/{name}/load",
    "/v2/repository/models/{name}/unload",
];

/// Replaces the templated model routes of `document` (the model-independent one) by the
/// concrete routes of every model version `snapshot` serves.
pub fn specialise(document: &mut Value, snapshot: &Snapshot, context: &Context) {
    let paths = document["paths"]
        .as_object_mut()
        .expect("the document has paths");
    if !context.accepts_load_requests {
        // Refused whatever the body (403 model_control_disabled): documented without one, so
        // no body is promised an answer it does not get.
        for path in LOAD_ROUTES {
            if let Some(post) = paths.get_mut(path).and_then(|item| item.get_mut("post")) {
                let post = post.as_object_mut().expect("an operation is an object");
                post.remove("requestBody");
                post.insert(
                    "description".into(),
                    json!("This server runs without --model-control-mode explicit: every request is refused with 403 model_control_disabled."),
                );
            }
        }
    }
    let templates: Map<String, Value> = templated()
        .filter_map(|path| {
            let item = paths.remove(&path)?;
            Some((path, item))
        })
        .collect();
    let default = &snapshot.manifest.default_model;
    for (name, versions) in &snapshot.models {
        let Ok(primary) = snapshot.named(Some(name), None) else {
            continue;
        };
        let forms = std::iter::once((None, primary.clone())).chain(
            versions
                .versions
                .values()
                .map(|model| (Some(model.entry.version.as_str()), model.clone())),
        );
        for (version, model) in forms {
            // The concrete prefix, the form whose template it replaces, and the operation ids'
            // suffix (`predict_model.diabetes`, `infer_version.diabetes.1`).
            let (concrete_prefix, form, id) = match version {
                None => (format!("/{}", segment(name)), Form::Model, name.clone()),
                Some(v) => (
                    format!("/{}/versions/{}", segment(name), segment(v)),
                    Form::Version,
                    format!("{name}.{v}"),
                ),
            };
            let is_default = version.is_none() && name == default;
            for family in Family::ALL {
                let body = match family {
                    Family::Predict => predict_body(&model, context),
                    Family::Explain => explain_body(&model, context),
                    Family::ModelMetadata | Family::ModelReady => None,
                    Family::Infer => v2_body(&model, context),
                };
                if family.has_default() && body.is_none() {
                    continue; // no body this version takes (see predict_body, explain_body)
                }
                let template = &templates[&family.path(form)];
                let mut item = concrete(template, Some(&id), body.clone());
                if family == Family::Infer {
                    with_binary_answer(&mut item);
                }
                let (root, action) = (family.root(), family.action());
                let mut items = vec![(format!("{root}{concrete_prefix}{action}"), item)];
                if family.has_default() && is_default {
                    let default_form = &templates[&family.path(Form::Default)];
                    items.push((action.to_owned(), concrete(default_form, None, body)));
                }
                let answer = match (family, model.is_tensors()) {
                    (Family::Predict, true) => Some(tensors_predict_answer(&model)),
                    (Family::Infer, true) => Some(tensors_v2_answer(&model)),
                    _ => None,
                };
                for (path, mut item) in items {
                    let ok = item.pointer_mut("/post/responses/200/content/application~1json");
                    if let (Some(answer), Some(ok)) = (&answer, ok) {
                        ok["schema"] = answer.clone();
                    }
                    paths.insert(path, item);
                }
            }
        }
    }
}

/// A path segment as a URL path spells it: unreserved characters as they are, the rest
/// percent-encoded (a model name is the manifest's, with no rule on its characters).
fn segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A templated path item made concrete: its operations without path parameters, their
/// operation ids suffixed with `id` (the template's id names the route family and form, the
/// suffix the model and version; the default routes keep theirs) and, when given, the request
/// body schema (the template's example, written for one model, is dropped).
fn concrete(template: &Value, id: Option<&str>, body: Option<Value>) -> Value {
    let mut item = template.clone();
    for operation in item
        .as_object_mut()
        .into_iter()
        .flat_map(|o| o.values_mut())
    {
        let Some(operation) = operation.as_object_mut() else {
            continue;
        };
        operation.remove("parameters");
        if let (Some(id), Some(Value::String(operation_id))) =
            (id, operation.get_mut("operationId"))
        {
            *operation_id = format!("{operation_id}.{id}");
        }
        match &body {
            Some(body) => {
                operation.insert(
                    "requestBody".into(),
                    json!({"content": {"application/json": {"schema": body}}, "required": true}),
                );
            }
            None => {
                for content in operation
                    .get_mut("requestBody")
                    .and_then(|b| b.get_mut("content"))
                    .and_then(Value::as_object_mut)
                    .into_iter()
                    .flat_map(|c| c.values_mut())
                {
                    if let Some(content) = content.as_object_mut() {
                        content.remove("example");
                    }
                }
            }
        }
    }
    item
}

/// Adds the binary answer (`application/octet-stream`: a JSON header, then the tensors) to an
/// infer operation's 200, which a request with `binary_data` or `binary_data_output` gets.
fn with_binary_answer(item: &mut Value) {
    if let Some(content) = item
        .pointer_mut("/post/responses/200/content")
        .and_then(Value::as_object_mut)
    {
        content.insert(
            "application/octet-stream".into(),
            json!({"schema": {"type": "string", "format": "binary"}}),
        );
    }
}

/// A number the rows parsers take: finite once rounded to float32.
fn float32() -> Value {
    json!({"type": "number", "exclusiveMinimum": -F32_BOUND, "exclusiveMaximum": F32_BOUND})
}

/// One `/predict` row of a rows model: by feature name, or in feature order.
fn row(model: &ServedModel) -> Value {
    let names = &model.entry.feature_names;
    let properties: Map<String, Value> = names.iter().map(|n| (n.clone(), float32())).collect();
    json!({"anyOf": [
        {"type": "object", "properties": properties, "required": names,
         "additionalProperties": false},
        {"type": "array", "items": float32(), "minItems": names.len(), "maxItems": names.len()},
    ]})
}

/// A body of `instances` (at most `max_rows` of `row`) or, when the store looks the model up,
/// `entity_ids`, each with the `extra` properties (`/explain`'s options).
fn rows_body(
    model: &ServedModel,
    row: Value,
    max_rows: usize,
    extra: &Map<String, Value>,
    context: &Context,
) -> Value {
    let branch = |field: &str, items: Value| {
        let mut properties = extra.clone();
        properties.insert(
            field.into(),
            json!({"type": "array", "items": items, "minItems": 1, "maxItems": max_rows}),
        );
        json!({"type": "object", "properties": properties, "required": [field],
               "additionalProperties": false})
    };
    let instances = branch("instances", row);
    if !context.store.looks_up(&model.entry) {
        return instances;
    }
    let entity_ids = branch("entity_ids", json!({"type": "string", "minLength": 1}));
    json!({"oneOf": [instances, entity_ids]})
}

/// `/predict`'s body for `model`; `None` when no body can be served (a tensors model with a
/// dynamic dimension after the batch).
fn predict_body(model: &ServedModel, context: &Context) -> Option<Value> {
    let max_rows = context.limits.max_request_rows;
    if !model.is_tensors() {
        return Some(rows_body(model, row(model), max_rows, &Map::new(), context));
    }
    let inputs = &model.signature.inputs;
    let row = tensors_row(model)?;
    // An input whose batch dimension is fixed takes exactly that many rows (inputs fixing two
    // different sizes take none).
    let mut fixed = inputs.iter().filter_map(|i| i.shape.first()?.fixed());
    let (min_rows, max_rows) = match fixed.next() {
        None => (1, max_rows),
        Some(n) if n >= 1 && n <= max_rows && fixed.all(|m| m == n) => (n, n),
        Some(_) => return None,
    };
    Some(json!({"type": "object",
        "properties": {"instances": {"type": "array", "items": row, "minItems": min_rows,
                                     "maxItems": max_rows}},
        "required": ["instances"], "additionalProperties": false}))
}

/// One `/predict` row of a tensors model: an object keyed by input name; `None` when an
/// input has a dynamic dimension after the batch.
fn tensors_row(model: &ServedModel) -> Option<Value> {
    let inputs = &model.signature.inputs;
    let properties = inputs
        .iter()
        .map(|spec| Some((spec.name.clone(), tensor_row_value(spec)?)))
        .collect::<Option<Map<String, Value>>>()?;
    let names = model.signature.input_names();
    Some(
        json!({"type": "object", "properties": properties, "required": names,
                "additionalProperties": false}),
    )
}

/// A tensors model's `/predict` answer: per row, a classifier's label and probabilities or a
/// regressor's value (as the rows form answers), or else every output by name.
fn tensors_predict_answer(model: &ServedModel) -> Value {
    let prediction = match &model.signature.task {
        GraphTask::Classifier { .. } | GraphTask::Regressor { .. } => {
            json!({"$ref": "#/components/schemas/Prediction"})
        }
        GraphTask::Tensors => {
            let names = model.signature.output_names();
            let properties: Map<String, Value> =
                names.iter().map(|n| (n.to_string(), json!({}))).collect();
            json!({"type": "object", "properties": properties, "required": names,
                   "additionalProperties": false})
        }
    };
    json!({"type": "object",
           "properties": {"model": {"$ref": "#/components/schemas/ModelRef"},
                          "predictions": {"type": "array", "items": prediction}},
           "required": ["model", "predictions"]})
}

/// One row's value of a tensors model's input: one element when the input holds one per row,
/// else the elements after the batch dimension as a flat array; `None` when a dimension after
/// the batch is dynamic (such an input is served through V2 only).
fn tensor_row_value(spec: &TensorSpec) -> Option<Value> {
    let trailing: Vec<usize> = spec
        .shape
        .iter()
        .skip(1)
        .map(|d| d.fixed())
        .collect::<Option<_>>()?;
    let per_row: usize = trailing.iter().product();
    let element = element_schema(spec.element_type);
    Some(match per_row {
        1 => element,
        n => json!({"type": "array", "items": element, "minItems": n, "maxItems": n}),
    })
}

/// A JSON value the typed parser takes as an element of `ty`.
fn element_schema(ty: ElementType) -> Value {
    let integer = |min: i128, max: i128| json!({"type": "integer", "minimum": min, "maximum": max});
    match ty {
        ElementType::Bool => json!({"type": "boolean"}),
        ElementType::Uint8 => integer(0, u8::MAX.into()),
        ElementType::Uint16 => integer(0, u16::MAX.into()),
        ElementType::Uint32 => integer(0, u32::MAX.into()),
        ElementType::Uint64 => integer(0, u64::MAX.into()),
        ElementType::Int8 => integer(i8::MIN.into(), i8::MAX.into()),
        ElementType::Int16 => integer(i16::MIN.into(), i16::MAX.into()),
        ElementType::Int32 => integer(i32::MIN.into(), i32::MAX.into()),
        ElementType::Int64 => integer(i64::MIN.into(), i64::MAX.into()),
        ElementType::Float16 => {
            json!({"type": "number", "exclusiveMinimum": -F16_BOUND, "exclusiveMaximum": F16_BOUND})
        }
        ElementType::Float32 => float32(),
        ElementType::Float64 => json!({"type": "number"}),
        // ONNX Runtime takes strings as C strings: no NUL (refused as `invalid_tensor`).
        ElementType::String => json!({"type": "string", "pattern": "^[^\\u0000]*$"}),
    }
}

/// `/explain`'s body for `model`: a `/predict` body with at most as many rows as the
/// explanation limits allow in every output space offered, and the options the model takes;
/// `None` when the model cannot be explained at all. The limits come from
/// [`explain::plan`] itself, so the document cannot promise what the planner refuses.
fn explain_body(model: &ServedModel, context: &Context) -> Option<Value> {
    // A tensors model explained column by column takes its `/predict` rows.
    let row = match model.is_tensors() {
        true => tensors_row(model)?,
        false => row(model),
    };
    let limits = &context.limits.explain;
    let assets = model.explain.as_deref();
    let plan = |output| {
        let query = ExplainQuery {
            class: None,
            output,
        };
        explain::plan(model, assets, &query, 1, limits).ok()
    };
    let default = plan(None)?;
    let classifier = explain::is_classifier(model);
    let mut plans = vec![default];
    let mut outputs = Vec::new();
    if classifier {
        for (output, name) in [
            (Output::Probability, "probability"),
            (Output::Margin, "margin"),
        ] {
            if let Some(p) = plan(Some(output)) {
                plans.push(p);
                outputs.push(name);
            }
        }
    }
    let budget_rows = plans
        .iter()
        .map(|p| (limits.max_evaluations / p.evaluations.max(1)) as usize)
        .min()
        .unwrap_or(0);
    let max_rows = context
        .limits
        .max_request_rows
        .min(limits.max_rows)
        .min(budget_rows);
    if max_rows == 0 {
        return None;
    }
    let mut options = Map::new();
    if classifier && !model.entry.class_labels.is_empty() {
        options.insert(
            "class".into(),
            json!({"type": "string", "enum": model.entry.class_labels}),
        );
        if !outputs.is_empty() {
            options.insert("output".into(), json!({"type": "string", "enum": outputs}));
        }
    }
    options.insert(
        "top_k".into(),
        json!({"type": "integer", "minimum": 1, "maximum": u64::MAX}),
    );
    Some(rows_body(model, row, max_rows, &options, context))
}

/// A V2 infer body for a rows model: see the module docs. `None` (the generic schema stays)
/// for a tensors model.
fn v2_body(model: &ServedModel, context: &Context) -> Option<Value> {
    if model.is_tensors() {
        return tensors_v2_body(model, context);
    }
    let (inputs, outputs) = tensors_of(model);
    let input = &inputs[0];
    let width = model.n_features();
    let lengths: Vec<Value> = (1..=context.limits.max_request_rows.min(V2_DOCUMENTED_ROWS))
        .map(|k| {
            json!({"properties": {
                "shape": {"const": [k, width]},
                "data": {"minItems": k * width, "maxItems": k * width},
            }})
        })
        .collect();
    let tensor = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "const": input.name},
            "datatype": {"type": "string", "const": input.datatype.v2_name()},
            "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            "data": {"type": "array", "items": float32()},
            // `binary_data_size` would claim bytes after a JSON header; a JSON body has none.
            "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "null"}}},
        },
        "required": ["name", "datatype", "shape", "data"],
        "anyOf": lengths,
    });
    let output_names: Vec<&str> = outputs.iter().map(|o| o.name).collect();
    Some(json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1},
            "outputs": requested_outputs(&output_names),
            "parameters": parameters_flag("binary_data_output"),
        },
        "required": ["inputs"],
    }))
}

/// A V2 infer body for a tensors model: every input exactly once (any order), each by name
/// and datatype, with its shape and exactly as many elements of its type as the shape holds.
/// The batch dimension is the same `k` for every input that has one (the model's rows agree),
/// so each `k` from 0 up to [`V2_DOCUMENTED_ROWS`] is one `anyOf` branch; `None` (the generic
/// schema stays) when a dimension after the batch is dynamic, which would need a branch per
/// size of it.
fn tensors_v2_body(model: &ServedModel, context: &Context) -> Option<Value> {
    let signature = &model.signature;
    let batched = signature
        .inputs
        .iter()
        .any(|i| i.shape.first().is_some_and(|d| d.fixed().is_none()));
    let rows = match batched {
        true => 0..=context.limits.max_request_rows.min(V2_DOCUMENTED_ROWS),
        false => 0..=0,
    };
    let branches = rows
        .map(|k| {
            let tensors = signature
                .inputs
                .iter()
                .map(|spec| tensor_input(spec, k))
                .collect::<Option<Vec<Value>>>()?;
            let contains: Vec<Value> = tensors.iter().map(|t| json!({"contains": t})).collect();
            Some(json!({"properties": {"inputs": {
                "type": "array", "items": {"anyOf": tensors}, "allOf": contains,
                "minItems": signature.inputs.len(), "maxItems": signature.inputs.len(),
            }}}))
        })
        .collect::<Option<Vec<Value>>>()?;
    let outputs = signature.output_names();
    Some(json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array"},
            "outputs": requested_outputs(&outputs),
            // The typed parser looks the flag up when `parameters` is an object (ignoring it
            // otherwise), and takes no `null` for it.
            "parameters": {"properties": {"binary_data_output": {"type": "boolean"}}},
        },
        "required": ["inputs"],
        "anyOf": branches,
    }))
}

/// A V2 request's `outputs`: each names one of the model's outputs, and may ask for it in
/// binary.
fn requested_outputs(names: &[&str]) -> Value {
    json!({"type": "array", "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": names},
            "parameters": parameters_flag("binary_data"),
        },
        "required": ["name"],
    }})
}

/// `parameters` holding one boolean flag. Parameters are open maps in the protocol: the server
/// reads its flag and ignores the rest.
fn parameters_flag(name: &str) -> Value {
    json!({"type": "object", "properties": {name: {"type": ["boolean", "null"]}}})
}

/// A tensors model's V2 answer: its outputs by name, `data` of their own types (the rows form's
/// answer holds numbers only).
fn tensors_v2_answer(model: &ServedModel) -> Value {
    let outputs = model.signature.output_names();
    json!({
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": outputs},
                    "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "parameters": {"$ref": "#/components/schemas/V2BinaryParameters"},
                    "data": {"type": "array"},
                },
                "required": ["name", "datatype", "shape"],
            }},
        },
        "required": ["model_name", "model_version", "outputs"],
    })
}

/// One input tensor of a tensors model with `rows` for its batch dimension, if it has one;
/// `None` when another dimension is dynamic.
fn tensor_input(spec: &TensorSpec, rows: usize) -> Option<Value> {
    let shape: Vec<usize> = spec
        .shape
        .iter()
        .enumerate()
        .map(|(i, d)| d.fixed().or((i == 0).then_some(rows)))
        .collect::<Option<_>>()?;
    let count: usize = shape.iter().product();
    Some(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "const": spec.name},
            "datatype": {"type": "string", "const": spec.element_type.v2_name()},
            "shape": {"type": "array", "const": shape},
            "data": {"type": "array", "items": element_schema(spec.element_type),
                     "minItems": count, "maxItems": count},
            // Any `binary_data_size`, even `null`, claims bytes a JSON body does not have (a
            // `parameters` that is not an object is ignored).
            "parameters": {"properties": {"binary_data_size": false}},
        },
        "required": ["name", "datatype", "shape", "data"],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_float32_bound_is_where_rounding_overflows() {
        let below = f64::from_bits(F32_BOUND.to_bits() - 1);
        assert_eq!(below as f32, f32::MAX);
        assert!((F32_BOUND as f32).is_infinite());
        let below = f64::from_bits(F16_BOUND.to_bits() - 1);
        assert_eq!(half::f16::from_f64(below), half::f16::MAX);
        assert!(half::f16::from_f64(F16_BOUND).is_infinite());
    }

    #[test]
    fn path_segments_keep_unreserved_characters_only() {
        assert_eq!(segment("breast-cancer"), "breast-cancer");
        assert_eq!(segment("a b/{c}"), "a%20b%2F%7Bc%7D");
    }
}
