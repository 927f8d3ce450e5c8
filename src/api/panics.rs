//! What a panicking handler turns into: a JSON 500 `internal_error`, one error log line with the
//! panic message, and `ferrum_http_panics_total`, instead of a dropped connection and
//! nothing else. The panic is caught around the router inside the request-log middleware (so
//! the 500 is also logged and counted like any answer); everything the handler held (admission
//! permits, in-flight gauges) is released by unwinding. One middleware for both, not
//! tower-http's `CatchPanicLayer` beside it: that second layer (and its boxed body) cost ~5% of
//! single-row req/s at 8 connections in `make bench`.
//!
//! Also the test-only fault routes (`--enable-fault-routes`, hidden, off by default): `GET
//! /_fault/panic` panics on purpose so the tests can show the above end to end.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::FutureExt;

use super::{ApiError, AppState};
use crate::telemetry::metrics;

/// The message a deliberate fault-route panic carries (the tests look for it in the log).
pub const FAULT_PANIC_MESSAGE: &str = "deliberate panic from the fault route";

/// Runs `answer` and turns a panic while polling it into [`answer_panic`]'s response.
///
/// Unwind safety is asserted: what a request future holds is its own, and the shared state it
/// touches (queues, gauges, the model) is behind locks and atomics that a panic leaves sound.
pub async fn catch_panic(answer: impl Future<Output = Response>) -> Response {
    AssertUnwindSafe(answer)
        .catch_unwind()
        .await
        .unwrap_or_else(answer_panic)
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
