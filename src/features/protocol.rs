//! The wire format of Feast's HTTP feature server (`feast serve`, checked against feast 0.67),
//! shared by the client and the mock so both speak exactly one dialect.
//!
//! The response is by COLUMN: `results[i]` is the column named `metadata.feature_names[i]`,
//! `values[j]` is entity `j` in request order, the join key column comes first, and the order
//! of the feature columns is not stable, so everything here maps columns by name.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The timestamp Feast gives key columns and values it did not find.
pub const EPOCH_TIMESTAMP: &str = "1970-01-01T00:00:00Z";

/// `POST /get-online-features`' body. Feast lets `feature_service` win when both it and
/// `features` are sent; we never send both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineFeaturesRequest {
    /// A feature service name: the set of features a model was trained on, as one name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
    /// `<feature view>:<feature>` references, when no service is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Join key → one value per entity. A STRING key takes JSON strings (1 is not "1").
    pub entities: BTreeMap<String, Vec<serde_json::Value>>,
    /// `true` names feature columns `<view>__<feature>` (the key column stays plain).
    #[serde(default)]
    pub full_feature_names: bool,
}

/// `POST /get-online-features`' answer. Field order is Feast's (`results` before `metadata`),
/// so the mock's bytes look like the real server's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineFeaturesResponse {
    /// One column per name in `metadata.feature_names`, in the same order.
    pub results: Vec<FeatureColumn>,
    /// The names of the columns.
    pub metadata: ResponseMetadata,
}

/// The column names of a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMetadata {
    /// `results[i]` is named `feature_names[i]`; the join key comes first.
    pub feature_names: Vec<String>,
}

/// One column: a value, a status and a timestamp per entity, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureColumn {
    /// The values (`null` when not found or NULL).
    pub values: Vec<FeastValue>,
    /// Why each value is what it is.
    pub statuses: Vec<FieldStatus>,
    /// When each value was written (RFC 3339, UTC); the epoch for keys and missing values.
    #[serde(default)]
    pub event_timestamps: Vec<String>,
}

/// Feast's per-value status (`FieldStatus` in its protos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldStatus {
    /// The value could not be read (Feast: "INVALID").
    Invalid,
    /// A value is there.
    Present,
    /// The row exists but the value is NULL.
    NullValue,
    /// No row for this entity in the feature's view.
    NotFound,
    /// The row is older than the view's TTL.
    OutsideMaxAge,
    /// A status this client does not know (a newer Feast); treated as "no usable value".
    Unknown,
}

impl FieldStatus {
    /// The name Feast writes.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldStatus::Invalid => "INVALID",
            FieldStatus::Present => "PRESENT",
            FieldStatus::NullValue => "NULL_VALUE",
            FieldStatus::NotFound => "NOT_FOUND",
            FieldStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
            FieldStatus::Unknown => "UNKNOWN",
        }
    }

    fn parse(name: &str) -> FieldStatus {
        match name {
            "INVALID" => FieldStatus::Invalid,
            "PRESENT" => FieldStatus::Present,
            "NULL_VALUE" => FieldStatus::NullValue,
            "NOT_FOUND" => FieldStatus::NotFound,
            "OUTSIDE_MAX_AGE" => FieldStatus::OutsideMaxAge,
            _ => FieldStatus::Unknown,
        }
    }
}

impl Serialize for FieldStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FieldStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        impl Visitor<'_> for StatusVisitor {
            type Value = FieldStatus;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Feast field status string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldStatus, E> {
                Ok(FieldStatus::parse(v))
            }
        }
        d.deserialize_str(StatusVisitor)
    }
}

/// One value in a column. Feature values are JSON numbers; Feast writes non-finite floats as
/// the strings "NaN", "Infinity", "-Infinity"; keys are strings (or numbers for INT64 keys).
#[derive(Debug, Clone, PartialEq)]
pub enum FeastValue {
    /// JSON `null`.
    Null,
    /// A JSON number with a fraction or exponent, or too large for `i64`.
    Number(f64),
    /// A JSON integer.
    Int(i64),
    /// A JSON string.
    Text(String),
    /// A JSON boolean.
    Bool(bool),
    /// Anything else (lists, objects): never a usable model input.
    Other(serde_json::Value),
}

impl FeastValue {
    /// The value as a float, if it is one: numbers, and Feast's spellings of non-finite floats.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FeastValue::Number(v) => Some(*v),
            FeastValue::Int(v) => Some(*v as f64),
            FeastValue::Text(t) => match t.as_str() {
                "NaN" => Some(f64::NAN),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                _ => None,
            },
            _ => None,
        }
    }

    /// What kind of JSON value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            FeastValue::Null => "null",
            FeastValue::Number(_) | FeastValue::Int(_) => "a number",
            FeastValue::Text(_) => "a string",
            FeastValue::Bool(_) => "a boolean",
            FeastValue::Other(v) if v.is_array() => "a list",
            FeastValue::Other(_) => "an object",
        }
    }

    /// A float as Feast writes it: finite as a number, non-finite as its string spelling.
    pub fn from_f64(v: f64) -> FeastValue {
        if v.is_finite() {
            FeastValue::Number(v)
        } else if v.is_nan() {
            FeastValue::Text("NaN".into())
        } else if v > 0.0 {
            FeastValue::Text("Infinity".into())
        } else {
            FeastValue::Text("-Infinity".into())
        }
    }

    /// A key value given in a request, echoed back in the key column.
    pub fn from_json(v: &serde_json::Value) -> FeastValue {
        match v {
            serde_json::Value::Null => FeastValue::Null,
            serde_json::Value::Bool(b) => FeastValue::Bool(*b),
            serde_json::Value::String(s) => FeastValue::Text(s.clone()),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => FeastValue::Int(i),
                None => FeastValue::Number(n.as_f64().unwrap_or(f64::NAN)),
            },
            other => FeastValue::Other(other.clone()),
        }
    }
}

impl Serialize for FeastValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FeastValue::Null => s.serialize_unit(),
            FeastValue::Number(v) => s.serialize_f64(*v),
            FeastValue::Int(v) => s.serialize_i64(*v),
            FeastValue::Text(t) => s.serialize_str(t),
            FeastValue::Bool(b) => s.serialize_bool(*b),
            FeastValue::Other(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FeastValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = FeastValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<FeastValue, E> {
                Ok(FeastValue::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<FeastValue, E> {
                Ok(FeastValue::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<FeastValue, E> {
                Ok(FeastValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FeastValue, E> {
                Ok(FeastValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FeastValue, E> {
                Ok(i64::try_from(v).map_or(FeastValue::Number(v as f64), FeastValue::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<FeastValue, E> {
                Ok(FeastValue::Number(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FeastValue, E> {
                Ok(FeastValue::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<FeastValue, E> {
                Ok(FeastValue::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FeastValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<serde_json::Value>()? {
                    items.push(item);
                }
                Ok(FeastValue::Other(serde_json::Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FeastValue, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(FeastValue::Other(serde_json::Value::Object(
                    Default::default(),
                )))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

/// `GET /snapshot-id` on the mock store (not part of Feast): which exported snapshot each
/// feature view and service serves, so the API can check the data contract. A real Feast
/// answers 404, and the API then reports the snapshot as unverified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotIds {
    /// The Feast project name the mock answers for.
    #[serde(default)]
    pub project: String,
    /// Feature view → sha256 of the snapshot file it serves.
    #[serde(default)]
    pub feature_views: BTreeMap<String, String>,
    /// Feature service → sha256 of the snapshot file behind it.
    #[serde(default)]
    pub feature_services: BTreeMap<String, String>,
}

/// A Feast error body in words. Feast answers errors with a JSON *string*, sometimes holding a
/// JSON object `{"module", "class", "message"}`; FastAPI's validation errors are
/// `{"detail": [...]}`. Anything else is shown as (truncated) text.
pub fn describe_error_body(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::String(text)) => {
            if let Ok(serde_json::Value::Object(inner)) =
                serde_json::from_str::<serde_json::Value>(&text)
            {
                if let Some(message) = inner.get("message").and_then(|m| m.as_str()) {
                    return match inner.get("class").and_then(|c| c.as_str()) {
                        Some(class) => format!("{class}: {message}"),
                        None => message.to_owned(),
                    };
                }
            }
            text
        }
        Ok(serde_json::Value::Object(object)) if object.contains_key("detail") => {
            match &object["detail"] {
                serde_json::Value::Array(items) => {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|item| {
                            let place: Vec<String> = item["loc"]
                                .as_array()
                                .map(|l| {
                                    l.iter()
                                        .map(|p| p.as_str().map_or(p.to_string(), str::to_owned))
                                        .collect()
                                })
                                .unwrap_or_default();
                            format!(
                                "{} at {}",
                                item["msg"].as_str().unwrap_or("invalid"),
                                place.join(".")
                            )
                        })
                        .collect();
                    format!("request rejected: {}", parts.join("; "))
                }
                other => format!("request rejected: {}", other.as_str().unwrap_or("")),
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let mut shown: String = text.chars().take(300).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            shown
        }
    }
}

/// A string as Python's `repr` writes it (what Feast puts in a `KeyError`'s message): single
/// quotes unless the text holds a single quote and no double quote.
pub fn python_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A list of strings as Python prints it: `['a', 'b']`.
pub fn python_list(items: &[&str]) -> String {
    let inner: Vec<String> = items.iter().map(|s| python_repr(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// The body Feast sends for one of its own exceptions: a JSON string holding
/// `{"module": "feast.errors", "class": ..., "message": ...}` with Python's separators.
pub fn feast_exception_body(class: &str, message: &str) -> Vec<u8> {
    let inner = format!(
        "{{\"module\": \"feast.errors\", \"class\": {}, \"message\": {}}}",
        serde_json::to_string(class).expect("a string serializes"),
        serde_json::to_string(message).expect("a string serializes"),
    );
    serde_json::to_vec(&inner).expect("a string serializes")
}

/// The body Feast sends for any other error: the message as a JSON string.
pub fn feast_message_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(message).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_statuses_round_trip_as_feast_writes_them() {
        let text = r#"{"results":[{"values":["a",1,2.5,null,"NaN",true,[1]],"statuses":["PRESENT","NOT_FOUND","NULL_VALUE","OUTSIDE_MAX_AGE","INVALID","SOMETHING_NEW","PRESENT"],"event_timestamps":[]}],"metadata":{"feature_names":["k"]}}"#;
        let response: OnlineFeaturesResponse = serde_json::from_str(text).unwrap();
        let column = &response.results[0];
        assert_eq!(
            column.values[..6],
            [
                FeastValue::Text("a".into()),
                FeastValue::Int(1),
                FeastValue::Number(2.5),
                FeastValue::Null,
                FeastValue::Text("NaN".into()),
                FeastValue::Bool(true),
            ]
        );
        assert_eq!(column.values[6].kind(), "a list");
        assert!(column.values[4].as_f64().unwrap().is_nan());
        assert_eq!(column.values[0].as_f64(), None);
        assert_eq!(
            column.statuses,
            [
                FieldStatus::Present,
                FieldStatus::NotFound,
                FieldStatus::NullValue,
                FieldStatus::OutsideMaxAge,
                FieldStatus::Invalid,
                FieldStatus::Unknown,
                FieldStatus::Present,
            ]
        );
        // Serialization keeps Feast's field order and spellings.
        let again = serde_json::to_string(&response).unwrap();
        assert!(again.starts_with(r#"{"results":[{"values":["a",1,2.5,null,"NaN",true,[1]],"statuses":["PRESENT","NOT_FOUND""#), "{again}");
        assert_eq!(
            FeastValue::from_f64(f64::NEG_INFINITY).as_f64(),
            Some(f64::NEG_INFINITY)
        );
    }

    #[test]
    fn requests_omit_what_is_not_given() {
        let request = OnlineFeaturesRequest {
            feature_service: Some("svc".into()),
            entities: [("entity_id".to_string(), vec!["a".into()])].into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"feature_service":"svc","entities":{"entity_id":["a"]},"full_feature_names":false}"#
        );
    }

    #[test]
    fn python_spellings() {
        assert_eq!(python_repr("plain"), "'plain'");
        assert_eq!(python_repr("has 'quotes'"), "\"has 'quotes'\"");
        assert_eq!(python_repr("both ' and \""), "'both \\' and \"'");
        assert_eq!(python_list(&["entity_id"]), "['entity_id']");
        assert_eq!(python_list(&[]), "[]");
    }

    #[test]
    fn error_bodies_in_words() {
        assert_eq!(
            describe_error_body(&feast_exception_body(
                "FeatureViewNotFoundException",
                "no v"
            )),
            "FeatureViewNotFoundException: no v"
        );
        assert_eq!(describe_error_body(br#""plain message""#), "plain message");
        assert_eq!(
            describe_error_body(
                br#"{"detail":[{"type":"missing","loc":["body","entities"],"msg":"Field required"}]}"#
            ),
            "request rejected: Field required at body.entities"
        );
        assert_eq!(describe_error_body(b"<html>oops"), "<html>oops");
    }
}
