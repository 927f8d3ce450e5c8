//! The middleware every request goes through: its log line, its HTTP metrics, and (when spans
//! are exported) its span, continuing the caller's trace.

use std::future::Future;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use tracing::Instrument;

use super::{metrics, otel};

/// The header that carries a request's id in and out (a `HeaderName`, so inserting it does not
/// copy the name per request).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Logs method, path, route, status, latency, request id and trace id for every request;
/// counts it in the HTTP metrics by route template; runs it inside a span named after the
/// route; returns the id in `x-request-id` so a client can quote it.
///
/// `call` answers the request (the router below, as the API wraps it): taking it as a function
/// rather than a `Next` lets the API put its panic catching inside this same middleware, one
/// layer per request instead of two.
pub async fn log_request<F, Answer>(mut req: Request, call: F) -> Response
where
    F: FnOnce(Request) -> Answer,
    Answer: Future<Output = Response>,
{
    let in_flight = metrics::http_request_started();
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let route_label = route.as_deref().unwrap_or(metrics::UNMATCHED_ROUTE);

    // Disabled (and free) unless spans are exported.
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route_label}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route_label,
        url.path = %path,
        request_id = %request_id,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let trace_id = if span.is_disabled() {
        otel::traceparent_trace_id(req.headers()).map(str::to_owned)
    } else {
        otel::continue_trace(&span, req.headers())
    };

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert(REQUEST_ID, value);
    }
    let mut response = call(req).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = started.elapsed();
    // i64, not u16: tracing-opentelemetry exports unsigned fields as strings.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    metrics::record_http_request(route_label, &method, status.as_u16(), elapsed);
    drop(in_flight);
    tracing::info!(
        method = %method,
        path = %path,
        route = route_label,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        request_id = %request_id,
        trace_id = trace_id.as_deref(),
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
