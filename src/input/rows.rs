//! `/predict` and `/explain` bodies (`instances` or `entity_ids`, and `/explain`'s options),
//! parsed straight into the model's `f32` input buffer in feature order: no intermediate
//! `Value` tree, no `String` per feature key. Every problem is an [`InputError`] naming the row
//! and feature, not a serde message.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{InputError, Key, Parked};
use crate::model::{LoadedModel, Rows};

/// A parsed `/predict` or `/explain` body.
#[derive(Debug, PartialEq)]
pub struct InferenceRequest {
    /// What to score: rows given inline, or entity ids to look up in the feature store.
    pub input: RequestInput,
    /// `/explain`'s options; `/predict` refuses them.
    pub explain: ExplainOptions,
}

/// The rows of a request, before any feature-store lookup.
#[derive(Debug, PartialEq)]
pub enum RequestInput {
    /// `instances`, in the model's feature order.
    Rows(Rows),
    /// `entity_ids`, in request order.
    EntityIds(Vec<String>),
}

/// The output space an explanation is computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSpace {
    /// Class probabilities (classifiers) or the predicted value (regressors).
    Probability,
    /// The raw score before a classifier's logistic/softmax post-transform.
    Margin,
}

/// Options only `/explain` takes.
#[derive(Debug, Default, PartialEq)]
pub struct ExplainOptions {
    /// Which class to explain (classifiers); default the predicted class.
    pub class: Option<String>,
    /// `"probability"` or `"margin"`.
    pub output: Option<OutputSpace>,
    /// Keep only the `top_k` largest attributions by magnitude.
    pub top_k: Option<usize>,
}

impl ExplainOptions {
    /// The names of the options, as request bodies spell them.
    pub const FIELDS: [&'static str; 3] = ["class", "output", "top_k"];

    /// Sets option `field` (one of [`ExplainOptions::FIELDS`]) from its JSON value, or says
    /// what the value must be: one set of rules for the rows and the tensors bodies.
    pub fn set(&mut self, field: &'static str, value: serde_json::Value) -> Result<(), InputError> {
        let invalid = |reason: &str| InputError::InvalidField {
            field,
            reason: reason.into(),
        };
        match field {
            "class" => match value {
                serde_json::Value::String(s) => self.class = Some(s),
                _ => return Err(invalid("must be a class label (a string)")),
            },
            "output" => match value.as_str() {
                Some("probability") => self.output = Some(OutputSpace::Probability),
                Some("margin") => self.output = Some(OutputSpace::Margin),
                _ => return Err(invalid("must be \"probability\" or \"margin\"")),
            },
            _ => match whole_u64(&value) {
                Some(k) if k > 0 => self.top_k = Some(k as usize),
                _ => return Err(invalid("must be a positive integer")),
            },
        }
        Ok(())
    }

    /// The first option given, for `/predict` to refuse by name.
    pub fn first_given(&self) -> Option<&'static str> {
        if self.class.is_some() {
            Some("class")
        } else if self.output.is_some() {
            Some("output")
        } else if self.top_k.is_some() {
            Some("top_k")
        } else {
            None
        }
    }
}

/// Parses a body for `model`, accepting at most `max_rows` rows.
pub fn parse_request(
    body: &[u8],
    model: &LoadedModel,
    max_rows: usize,
) -> Result<InferenceRequest, InputError> {
    parse_with(
        body,
        &model.entry.feature_names,
        &model.feature_index,
        max_rows,
    )
}

/// The first of a body's `entity_ids`, read without parsing its rows: the routing key that
/// keeps one entity on one version of a model whose traffic is split. `None` when the body
/// names no entity (or is not JSON: the parse proper reports that, with the field at fault).
pub fn first_entity_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        entity_ids: Option<Vec<String>>,
    }
    serde_json::from_slice::<Peek>(body)
        .ok()?
        .entity_ids?
        .into_iter()
        .next()
}

/// Parses a body against a plain feature list, no loaded model needed (the fuzz target and
/// tests use it; the server goes through [`parse_request`], which is the same parser).
pub fn parse_for_features(
    body: &[u8],
    names: &[String],
    max_rows: usize,
) -> Result<InferenceRequest, InputError> {
    let index: HashMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), i))
        .collect();
    parse_with(body, names, &index, max_rows)
}

fn parse_with(
    body: &[u8],
    names: &[String],
    index: &HashMap<String, usize>,
    max_rows: usize,
) -> Result<InferenceRequest, InputError> {
    let context = Context {
        names,
        index,
        max_rows,
        parked: Parked::default(),
    };
    context
        .parked
        .parse(body, RequestSeed(&context), |e| json_error(body, e))?
}

/// A JSON syntax error, recognising the non-standard `NaN`/`Infinity` tokens some encoders
/// (Python's `json.dumps`) write, so the client learns what is wrong with its numbers.
fn json_error(body: &[u8], e: &serde_json::Error) -> InputError {
    let at = body
        .split(|&b| b == b'\n')
        .take(e.line().saturating_sub(1))
        .map(|line| line.len() + 1)
        .sum::<usize>()
        + e.column().saturating_sub(1);
    let rest = body.get(at..).unwrap_or_default();
    let rest = rest.strip_prefix(b"-").unwrap_or(rest);
    if rest.starts_with(b"NaN") || rest.starts_with(b"Infinity") {
        return InputError::InvalidJson(format!(
            "NaN and Infinity are not numbers JSON allows, and the model needs finite values ({e})"
        ));
    }
    InputError::InvalidJson(e.to_string())
}

struct Context<'m> {
    names: &'m [String],
    index: &'m HashMap<String, usize>,
    max_rows: usize,
    parked: Parked,
}

impl Context<'_> {
    /// Parks `error` and returns the placeholder serde error that unwinds the parse.
    fn fail<E: de::Error>(&self, error: InputError) -> E {
        self.parked.fail(error)
    }

    fn n_features(&self) -> usize {
        self.names.len()
    }
}

/// What a JSON value is, for messages.
fn kind_of_unexpected(u: &de::Unexpected) -> &'static str {
    match u {
        de::Unexpected::Bool(_) => "a boolean",
        de::Unexpected::Str(_) => "a string",
        de::Unexpected::Unit | de::Unexpected::Option => "null",
        de::Unexpected::Seq => "an array",
        de::Unexpected::Map => "an object",
        _ => "a non-number",
    }
}

/// The top-level object.
struct RequestSeed<'c, 'm>(&'c Context<'m>);

/// `Result` inside `Ok`: a body that parsed as JSON can still lack what it needs.
type Parsed = Result<InferenceRequest, InputError>;

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_> {
    type Value = Parsed;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_> {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with 'instances' or 'entity_ids'")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let context = self.0;
        let mut rows = None;
        let mut entity_ids: Option<Vec<String>> = None;
        let mut explain = ExplainOptions::default();
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let field = match key.as_ref() {
                "instances" => "instances",
                "entity_ids" => "entity_ids",
                "class" => "class",
                "output" => "output",
                "top_k" => "top_k",
                other => return Err(context.fail(InputError::UnknownField(other.to_string()))),
            };
            if seen.contains(&field) {
                return Err(context.fail(InputError::InvalidField {
                    field,
                    reason: "given twice".into(),
                }));
            }
            seen.push(field);
            let invalid = |reason: &str| InputError::InvalidField {
                field,
                reason: reason.into(),
            };
            match field {
                "instances" => rows = Some(map.next_value_seed(InstancesSeed(context))?),
                "entity_ids" => {
                    let ids: Vec<serde_json::Value> = map.next_value()?;
                    if ids.len() > context.max_rows {
                        return Err(context.fail(InputError::TooManyRows {
                            limit: context.max_rows,
                        }));
                    }
                    let ids = ids
                        .into_iter()
                        .map(|id| match id {
                            serde_json::Value::String(s) if !s.is_empty() => Ok(s),
                            _ => Err(invalid("every entity id must be a non-empty string")),
                        })
                        .collect::<Result<Vec<_>, _>>();
                    match ids {
                        Ok(ids) if ids.is_empty() => {
                            return Err(context.fail(InputError::EmptyInstances))
                        }
                        Ok(ids) => entity_ids = Some(ids),
                        Err(e) => return Err(context.fail(e)),
                    }
                }
                _ => {
                    let value = map.next_value::<serde_json::Value>()?;
                    explain.set(field, value).map_err(|e| context.fail(e))?;
                }
            }
        }
        let input = match (rows, entity_ids) {
            (Some(_), Some(_)) => {
                return Ok(Err(InputError::InvalidField {
                    field: "entity_ids",
                    reason: "send either 'instances' or 'entity_ids', not both".into(),
                }))
            }
            (Some(rows), None) => RequestInput::Rows(rows),
            (None, Some(ids)) => RequestInput::EntityIds(ids),
            (None, None) => return Ok(Err(InputError::MissingInstances)),
        };
        Ok(Ok(InferenceRequest { input, explain }))
    }
}

/// A JSON number as a whole `u64`, however it is spelled (`3`, `3.0`, `3e0`): JSON has one
/// number type, and JSON Schema's `integer` (what the OpenAPI document says `top_k` is) takes
/// all three.
fn whole_u64(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let f = value.as_f64()?;
        // 2^64 is the first float past u64::MAX.
        (f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f)).then_some(f as u64)
    })
}

/// `instances`: a list of rows.
struct InstancesSeed<'c, 'm>(&'c Context<'m>);

impl<'de> DeserializeSeed<'de> for InstancesSeed<'_, '_> {
    type Value = Rows;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Rows, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstancesSeed<'_, '_> {
    type Value = Rows;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rows, A::Error> {
        let context = self.0;
        let width = context.n_features();
        let mut data =
            Vec::with_capacity(seq.size_hint().unwrap_or(1).min(context.max_rows) * width);
        let mut row = 0;
        loop {
            if row == context.max_rows {
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(context.fail(InputError::TooManyRows {
                        limit: context.max_rows,
                    }));
                }
                break;
            }
            let seed = RowSeed {
                context,
                row,
                data: &mut data,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            row += 1;
        }
        if row == 0 {
            return Err(context.fail(InputError::EmptyInstances));
        }
        Ok(Rows::new(data, width))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Rows, A::Error> {
        Err(self.0.fail(not_a_list()))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Rows, E> {
        Err(self.0.fail(not_a_list()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Rows, E> {
        Err(self.0.fail(not_a_list()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Rows, E> {
        Err(self.0.fail(not_a_list()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Rows, E> {
        Err(self.0.fail(not_a_list()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Rows, E> {
        Err(self.0.fail(not_a_list()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Rows, E> {
        Err(self.0.fail(not_a_list()))
    }
}

fn not_a_list() -> InputError {
    InputError::InvalidField {
        field: "instances",
        reason: "must be a list of rows".into(),
    }
}

/// One row, appended to `data`: an object by feature name, or an array in model order.
struct RowSeed<'c, 'm, 'd> {
    context: &'c Context<'m>,
    row: usize,
    data: &'d mut Vec<f32>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl RowSeed<'_, '_, '_> {
    fn invalid<E: de::Error>(self, got: &'static str) -> E {
        self.context.fail(InputError::InvalidRow {
            row: self.row,
            expected: self.context.n_features(),
            got,
        })
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let context = self.context;
        let start = self.data.len();
        // NaN marks "not given yet": a finite value is required for every feature, so a slot
        // still NaN at the end is missing and a slot already finite is a duplicate.
        self.data.resize(start + context.n_features(), f32::NAN);
        let mut next = 0;
        while let Some(Key(key)) = map.next_key::<Key>()? {
            // Clients usually send features in model order: try the expected one first.
            let column = match context.names.get(next) {
                Some(name) if *name == *key => Some(next),
                _ => context.index.get(key.as_ref()).copied(),
            };
            let Some(column) = column else {
                return Err(context.fail(InputError::UnknownFeature {
                    row: self.row,
                    name: key.into_owned(),
                }));
            };
            if !self.data[start + column].is_nan() {
                return Err(context.fail(InputError::DuplicateFeature {
                    row: self.row,
                    name: key.into_owned(),
                }));
            }
            self.data[start + column] = map.next_value_seed(NumberSeed {
                context,
                row: self.row,
                column,
            })?;
            next = column + 1;
        }
        let missing: Vec<&str> = context
            .names
            .iter()
            .zip(&self.data[start..])
            .filter(|(_, v)| v.is_nan())
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(context.fail(InputError::MissingFeatures {
                row: self.row,
                names: missing.join(", "),
            }));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let context = self.context;
        let width = context.n_features();
        let mut got = 0;
        while got < width {
            let seed = NumberSeed {
                context,
                row: self.row,
                column: got,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => self.data.push(v),
                None => break,
            }
            got += 1;
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {
            got += 1;
        }
        if got != width {
            return Err(context.fail(InputError::WrongRowLength {
                row: self.row,
                expected: width,
                got,
            }));
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.invalid("a string"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.invalid("a number"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.invalid("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.invalid("a number"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.invalid("a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.invalid("null"))
    }
}

/// One feature value: a finite number that fits float32.
struct NumberSeed<'c, 'm> {
    context: &'c Context<'m>,
    row: usize,
    column: usize,
}

impl NumberSeed<'_, '_> {
    fn number<E: de::Error>(self, v: f64) -> Result<f32, E> {
        let narrowed = v as f32;
        if narrowed.is_finite() {
            Ok(narrowed)
        } else {
            Err(self.context.fail(InputError::NonFinite {
                row: self.row,
                feature: self.context.names[self.column].clone(),
                value: v,
            }))
        }
    }

    fn not_a_number<E: de::Error>(self, got: de::Unexpected) -> E {
        self.context.fail(InputError::NonNumeric {
            row: self.row,
            feature: self.context.names[self.column].clone(),
            got: kind_of_unexpected(&got),
        })
    }
}

impl<'de> DeserializeSeed<'de> for NumberSeed<'_, '_> {
    type Value = f32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f32, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumberSeed<'_, '_> {
    type Value = f32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f32, E> {
        self.number(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f32, E> {
        self.number(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f32, E> {
        self.number(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f32, E> {
        Err(self.not_a_number(de::Unexpected::Str(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<f32, E> {
        Err(self.not_a_number(de::Unexpected::Bool(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<f32, E> {
        Err(self.not_a_number(de::Unexpected::Unit))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<f32, A::Error> {
        Err(self.not_a_number(de::Unexpected::Seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<f32, A::Error> {
        Err(self.not_a_number(de::Unexpected::Map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, max_rows: usize) -> Result<InferenceRequest, InputError> {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        parse_with(body.as_bytes(), &names, &index, max_rows)
    }

    fn rows_of(r: InferenceRequest) -> Rows {
        match r.input {
            RequestInput::Rows(rows) => rows,
            other => panic!("expected rows, got {other:?}"),
        }
    }

    #[test]
    fn the_first_entity_id_is_read_without_the_rows() {
        assert_eq!(
            first_entity_id(br#"{"entity_ids": ["p-7", "p-8"], "top_k": 2}"#).as_deref(),
            Some("p-7")
        );
        assert_eq!(first_entity_id(br#"{"instances": [{"a": 1}]}"#), None);
        assert_eq!(first_entity_id(br#"{"entity_ids": []}"#), None);
        assert_eq!(first_entity_id(b"not json"), None);
    }

    #[test]
    fn entity_ids_and_explain_options() {
        let r = parse(
            r#"{"entity_ids": ["x-1", "x-2"], "class": "benign", "output": "margin", "top_k": 3}"#,
            10,
        )
        .unwrap();
        assert_eq!(
            r.input,
            RequestInput::EntityIds(vec!["x-1".into(), "x-2".into()])
        );
        assert_eq!(
            r.explain,
            ExplainOptions {
                class: Some("benign".into()),
                output: Some(OutputSpace::Margin),
                top_k: Some(3)
            }
        );
        assert_eq!(r.explain.first_given(), Some("class"));
        for (top_k, expected) in [("3.0", 3), ("3e0", 3), ("18446744073709551615", u64::MAX)] {
            let body = format!(r#"{{"entity_ids": ["x-1"], "top_k": {top_k}}}"#);
            let r = parse(&body, 10).unwrap();
            assert_eq!(r.explain.top_k, Some(expected as usize), "top_k {top_k}");
        }
        let bad: &[(&str, &str)] = &[
            (
                r#"{"entity_ids": ["a"], "instances": [[1,2,3]]}"#,
                "invalid_field",
            ),
            (r#"{"entity_ids": [1]}"#, "invalid_field"),
            (r#"{"entity_ids": []}"#, "empty_instances"),
            (r#"{"entity_ids": ["a","b","c"]}"#, "too_many_rows"),
            (
                r#"{"instances": [[1,2,3]], "output": "logit"}"#,
                "invalid_field",
            ),
            (r#"{"instances": [[1,2,3]], "top_k": 0}"#, "invalid_field"),
            (r#"{"instances": [[1,2,3]], "top_k": 0.0}"#, "invalid_field"),
            (r#"{"instances": [[1,2,3]], "top_k": 2.5}"#, "invalid_field"),
            (r#"{"instances": [[1,2,3]], "top_k": -1}"#, "invalid_field"),
            (
                r#"{"instances": [[1,2,3]], "top_k": 1.8446744073709552e19}"#,
                "invalid_field",
            ),
            (r#"{"instances": [[1,2,3]], "class": 1}"#, "invalid_field"),
            (
                r#"{"instances": [[1,2,3]], "instances": [[1,2,3]]}"#,
                "invalid_field",
            ),
        ];
        for (body, code) in bad {
            assert_eq!(parse(body, 2).unwrap_err().code(), *code, "body: {body}");
        }
    }

    #[test]
    fn objects_in_any_order_and_arrays_fill_the_buffer_in_feature_order() {
        let r = parse(
            r#"{"instances": [{"c": 3, "a": 1.5, "b": -2}, [4, 5, 6e0], {"a": 7, "b": 8, "c": 9}]}"#,
            10,
        )
        .unwrap();
        let rows = rows_of(r);
        assert_eq!(rows.n_rows, 3);
        assert_eq!(
            rows.data,
            vec![1.5, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        );
    }

    #[test]
    fn escaped_keys_still_match() {
        let r = parse(r#"{"instances": [{"\u0061": 1, "b": 2, "c": 3}]}"#, 10).unwrap();
        assert_eq!(rows_of(r).data, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn values_round_like_numpy_float32_casts() {
        let r = parse(r#"{"instances": [[0.1, 17.99, 1e-40]]}"#, 10).unwrap();
        assert_eq!(
            rows_of(r).data,
            vec![0.1f64 as f32, 17.99f64 as f32, 1e-40f64 as f32]
        );
    }

    #[test]
    fn each_problem_is_named_with_its_row_and_feature() {
        let cases: &[(&str, InputError)] = &[
            (
                r#"{"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}"#,
                InputError::UnknownFeature {
                    row: 0,
                    name: "d".into(),
                },
            ),
            (
                r#"{"instances": [[1,2,3], {"a": 1, "c": 3}]}"#,
                InputError::MissingFeatures {
                    row: 1,
                    names: "b".into(),
                },
            ),
            (
                r#"{"instances": [{"a": 1, "a": 2, "b": 2, "c": 3}]}"#,
                InputError::DuplicateFeature {
                    row: 0,
                    name: "a".into(),
                },
            ),
            (
                r#"{"instances": [[1, 2]]}"#,
                InputError::WrongRowLength {
                    row: 0,
                    expected: 3,
                    got: 2,
                },
            ),
            (
                r#"{"instances": [[1, 2, 3, 4, 5]]}"#,
                InputError::WrongRowLength {
                    row: 0,
                    expected: 3,
                    got: 5,
                },
            ),
            (
                r#"{"instances": [{"a": "1", "b": 2, "c": 3}]}"#,
                InputError::NonNumeric {
                    row: 0,
                    feature: "a".into(),
                    got: "a string",
                },
            ),
            (
                r#"{"instances": [[1, null, 3]]}"#,
                InputError::NonNumeric {
                    row: 0,
                    feature: "b".into(),
                    got: "null",
                },
            ),
            (
                r#"{"instances": [[1, 2, [3]]]}"#,
                InputError::NonNumeric {
                    row: 0,
                    feature: "c".into(),
                    got: "an array",
                },
            ),
            (
                r#"{"instances": [[1, 2, 1e39]]}"#,
                InputError::NonFinite {
                    row: 0,
                    feature: "c".into(),
                    value: 1e39,
                },
            ),
            (r#"{"instances": []}"#, InputError::EmptyInstances),
            (
                r#"{"instances": [[1,2,3],[1,2,3],[1,2,3]]}"#,
                InputError::TooManyRows { limit: 2 },
            ),
            (
                r#"{"instances": {"a": 1}}"#,
                InputError::InvalidField {
                    field: "instances",
                    reason: "must be a list of rows".into(),
                },
            ),
            (
                r#"{"instances": [7]}"#,
                InputError::InvalidRow {
                    row: 0,
                    expected: 3,
                    got: "a number",
                },
            ),
            (r#"{"rows": []}"#, InputError::UnknownField("rows".into())),
            (r#"{}"#, InputError::MissingInstances),
        ];
        for (body, expected) in cases {
            assert_eq!(&parse(body, 2).unwrap_err(), expected, "body: {body}");
        }
    }

    #[test]
    fn nan_and_infinity_tokens_are_called_out() {
        for body in [
            r#"{"instances": [[1, NaN, 3]]}"#,
            r#"{"instances": [[1, 2, -Infinity]]}"#,
            "{\n\"instances\": [[Infinity, 2, 3]]}",
        ] {
            let error = parse(body, 2).unwrap_err();
            assert_eq!(error.code(), "invalid_json");
            assert!(
                error.to_string().contains("NaN and Infinity"),
                "{body}: {error}"
            );
        }
    }

    #[test]
    fn malformed_json_is_invalid_json() {
        for body in [
            "",
            "{",
            r#"{"instances": [[1,2,3]]} trailing"#,
            "[1,2,3]",
            r#"{"instances": [[1,2,1e999]]}"#,
        ] {
            assert_eq!(
                parse(body, 2).unwrap_err().code(),
                "invalid_json",
                "body: {body}"
            );
        }
    }
}
