//! Request bodies → model inputs: the `/predict`/`/explain` body ([`rows`]) and the Open
//! Inference Protocol's tensors ([`tensors`]), parsed straight into the model's `f32` buffer in
//! feature order, with no intermediate `Value` tree and no `String` per feature key; and a
//! tensors model's V2 request ([`typed`]), every input of its own datatype and shape.
//!
//! Every problem is an [`InputError`] that names the row, feature, tensor or field at fault, and
//! carries the stable code clients branch on; the API only decides the HTTP status. The offline
//! jobs use the same parser, so a file row is checked exactly as a request row.
//!
//! serde's error type cannot carry a structured error, so the visitors park the precise one in
//! a [`Parked`] slot and unwind with a placeholder; [`Parked`] swaps it back in. Both
//! parsers share that one helper.
//!
//! May import only `model`: no HTTP, no queues, no telemetry.

pub mod rows;
pub mod tensors;
pub mod typed;

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

pub use rows::{
    first_entity_id, parse_for_features, parse_request, ExplainOptions, InferenceRequest,
    OutputSpace, RequestInput,
};
pub use tensors::{header_length, parse_infer, InferRequest, InputSpec, RequestedOutput};
pub use typed::{parse_typed_infer, TypedRequest};

/// Why a request body cannot become model input. Messages name the field or row and the
/// problem; [`InputError::code`] is the stable code.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("unknown field '{0}' (expected: instances or entity_ids, and for /explain class, output, top_k)")]
    UnknownField(String),
    #[error("field '{field}': {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("the body has neither 'instances' nor 'entity_ids'")]
    MissingInstances,
    #[error("'instances' is empty: send at least one row")]
    EmptyInstances,
    #[error("'instances' has more than {limit} rows (the server's MAX_REQUEST_ROWS)")]
    TooManyRows { limit: usize },
    #[error("instances[{row}]: a row must be an object keyed by feature name or an array of {expected} numbers, got {got}")]
    InvalidRow {
        row: usize,
        expected: usize,
        got: &'static str,
    },
    #[error("instances[{row}]: unknown feature '{name}'")]
    UnknownFeature { row: usize, name: String },
    #[error("instances[{row}]: feature '{name}' given twice")]
    DuplicateFeature { row: usize, name: String },
    #[error("instances[{row}]: missing features: {names}")]
    MissingFeatures { row: usize, names: String },
    #[error("instances[{row}]: expected {expected} values in model feature order, got {got}")]
    WrongRowLength {
        row: usize,
        expected: usize,
        got: usize,
    },
    #[error("instances[{row}].{feature}: expected a number, got {got}")]
    NonNumeric {
        row: usize,
        feature: String,
        got: &'static str,
    },
    #[error("instances[{row}].{feature}: {value} is not a finite float32 number")]
    NonFinite {
        row: usize,
        feature: String,
        value: f64,
    },
    #[error("{0}")]
    InvalidTensor(String),
    #[error("binary tensor data: {0}")]
    InvalidBinaryData(String),
    #[error("{0}")]
    UnknownOutput(String),
    #[error("{rows} rows exceed the limit of {limit} (the server's MAX_REQUEST_ROWS)")]
    TooManyTensorRows { rows: usize, limit: usize },
}

impl InputError {
    /// The stable code clients branch on; never changes once released.
    pub fn code(&self) -> &'static str {
        use InputError::*;
        match self {
            InvalidJson(_) => "invalid_json",
            UnknownField(_) => "unknown_field",
            InvalidField { .. } => "invalid_field",
            MissingInstances => "missing_instances",
            EmptyInstances => "empty_instances",
            TooManyRows { .. } | TooManyTensorRows { .. } => "too_many_rows",
            InvalidRow { .. } => "invalid_row",
            UnknownFeature { .. } => "unknown_feature",
            DuplicateFeature { .. } => "duplicate_feature",
            MissingFeatures { .. } => "missing_feature",
            WrongRowLength { .. } => "wrong_row_length",
            NonNumeric { .. } => "non_numeric_value",
            NonFinite { .. } => "non_finite_value",
            InvalidTensor(_) => "invalid_tensor",
            InvalidBinaryData(_) => "invalid_binary_data",
            UnknownOutput(_) => "unknown_output",
        }
    }

    /// True when the body cannot even be read as the format it claims (bad JSON, bad binary
    /// framing), as opposed to a readable body with the wrong content: the API answers the
    /// first with 400, the second with 422.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            InputError::InvalidJson(_) | InputError::InvalidBinaryData(_)
        )
    }
}

/// The slot a serde visitor parks its precise [`InputError`] in before unwinding with a
/// placeholder serde error (serde's error type cannot carry ours).
#[derive(Default)]
pub(crate) struct Parked(RefCell<Option<InputError>>);

impl Parked {
    /// Parks `error` and returns the placeholder serde error that unwinds the parse.
    pub(crate) fn fail<E: de::Error>(&self, error: InputError) -> E {
        *self.0.borrow_mut() = Some(error);
        E::custom("see the parked error")
    }

    /// Runs `seed` over all of `json` (trailing data is an error too) and gives back the
    /// parked error when a visitor failed, else `syntax(error)` for a plain JSON error.
    pub(crate) fn parse<'de, S: DeserializeSeed<'de>>(
        &self,
        json: &'de [u8],
        seed: S,
        syntax: impl FnOnce(&serde_json::Error) -> InputError,
    ) -> Result<S::Value, InputError> {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let parsed = seed
            .deserialize(&mut deserializer)
            .and_then(|value| deserializer.end().map(|()| value));
        parsed.map_err(|e| self.0.take().unwrap_or_else(|| syntax(&e)))
    }
}

/// A JSON object key, borrowed from the body when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Bodies up to this size (of JSON, or its equivalent in binary tensor data, see
/// [`parse_weight`]) are parsed on the async worker (tens of microseconds); larger ones on the
/// blocking pool, so a burst of megabyte bodies cannot starve health probes.
pub const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// How many binary tensor bytes cost what one JSON byte costs to parse: binary data is copied
/// (gigabytes a second), JSON is tokenized and converted (a few hundred megabytes a second).
/// Counting binary bytes as JSON would send a 64 KB tensor through a blocking-pool hand-off
/// that costs more than its copy (`make bench`: the CNN's 256-image requests).
const BINARY_BYTES_PER_JSON_BYTE: usize = 16;

/// The JSON-equivalent size of a body of `json` JSON bytes and `binary` binary tensor bytes,
/// for the serving pipeline's `parse_off_runtime` and the gRPC decode.
pub fn parse_weight(json: usize, binary: usize) -> usize {
    json + binary / BINARY_BYTES_PER_JSON_BYTE
}
