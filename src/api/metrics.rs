//! `GET /metrics`: the Prometheus scrape (text exposition format). Never waits behind inference.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::telemetry::metrics;

/// Every metric, rendered from the one registry.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
pub async fn metrics() -> Response {
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render()).into_response()
}
