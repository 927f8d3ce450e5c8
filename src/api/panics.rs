//! What a panicking handler turns into: a JSON 500 `internal_error`, one error log line with the
//! panic message, and `ferrum_http_panics_total`, instead of a dropped connection and
//! nothing else. The panic is caught by tower-http's `CatchPanicLayer` around the router (inside
//! the request log, so the 500 is also logged and counted like any answer); everything the
//! handler held (admission permits, in-flight gauges) is released by unwinding.
//!
//! Also the test-only fault routes (`--enable-fault-routes`, hidden, off by default): `GET
//! /_fault/panic` panics on purpose so the tests can show the above end to end.

use std::any::Any;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use super::{ApiError, AppState};
use crate::telemetry::metrics;

/// The message a deliberate fault-route panic carries (the tests look for it in the log).
pub const FAULT_PANIC_MESSAGE: &str = "deliberate panic from the fault route";

/// The layer that turns a panic anywhere below it into [`answer_panic`]'s response.
pub fn catch_panic_layer() -> CatchPanicLayer<fn(Box<dyn Any + Send>) -> Response> {
    CatchPanicLayer::custom(answer_panic as fn(Box<dyn Any + Send>) -> Response)
}

/// Logs the panic message, counts it, and answers 500 `internal_error` (the message stays in
/// the log: it may name internals the client has no use for).
fn answer_panic(payload: Box<dyn Any + Send>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not a string)");
    tracing::error!(panic = message, "request handler panicked; answered 500");
    metrics::record_panic();
    ApiError::Internal.into_response()
}

/// Routes that fail on purpose, for tests only: merged into the inference routes (behind the
/// API key and admission control) when `--enable-fault-routes` is set.
pub fn fault_routes() -> Router<AppState> {
    Router::new().route("/_fault/panic", get(panic_on_purpose))
}

async fn panic_on_purpose() -> Response {
    panic!("{FAULT_PANIC_MESSAGE}")
}
