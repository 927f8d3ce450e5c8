//! The request body as bytes: content type checked and size bounded before anything is parsed,
//! with our JSON errors instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::error::ApiError;
use super::AppState;
use crate::input::InputError;

/// A JSON request body, at most `max_body_bytes` long.
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.limits.max_body_bytes;
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            let shown = if content_type.is_empty() {
                "(none)"
            } else {
                content_type
            };
            return Err(ApiError::UnsupportedMediaType(format!("'{shown}'")));
        }
        read_limited(req, limit, state.limits.body_read_timeout)
            .await
            .map(JsonBody)
    }
}

/// A request body of any content type (the V2 protocol's JSON-plus-binary bodies, which
/// clients send without a JSON content type), at most `max_body_bytes` long.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        read_limited(
            req,
            state.limits.max_body_bytes,
            state.limits.body_read_timeout,
        )
        .await
        .map(RawBody)
    }
}

/// Reads the whole body, refusing it as soon as it is known to exceed `limit` bytes, or when
/// it has not arrived in full within `timeout`.
async fn read_limited(
    req: Request,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    // A client trickling its body (slowloris) would otherwise hold the connection and a
    // request slot for as long as it likes.
    let collected = tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout {
            after_ms: timeout.as_millis() as u64,
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(InputError::InvalidJson(format!("cannot read the body: {e}")).into()),
    }
}

/// `application/json`, with or without parameters, or any `+json` media type.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.api+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
