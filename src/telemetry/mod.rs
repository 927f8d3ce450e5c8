//! Logs: JSON lines by default (for collectors), text for humans; and the one log line every
//! request gets, with the request id the client sent or one we made.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The header that carries a request's id in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// Installs the global subscriber. `RUST_LOG` filters; ONNX Runtime's own chatter is kept to
/// warnings unless asked for.
pub fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    // An error means a subscriber is already installed (several servers in one test process).
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Logs method, path, route, status, latency and request id for every request, and returns the
/// id in `x-request-id` so a client can quote it.
pub async fn log_request(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
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
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert(REQUEST_ID, value);
    }
    let mut response = next.run(req).await;
    let status = response.status().as_u16();
    tracing::info!(
        method = %method,
        path = %path,
        route = route.as_deref().unwrap_or("unmatched"),
        status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = %request_id,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
