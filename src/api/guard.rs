//! What stands in front of the inference routes: the API key check, admission control (a
//! concurrency limit with a bounded queue, shedding load past it at once rather than letting
//! latency collapse) and the per-request timeout. Health, metrics and the manifest never pass
//! through here, so probes answer even when inference is saturated.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::AppState;

/// Admission control: at most `running` requests in the handlers, at most `queued` more waiting
/// for a slot; anything beyond is refused immediately with 503 and `Retry-After`.
pub struct Admission {
    slots: Semaphore,
    admitted: AtomicUsize,
    capacity: usize,
    timeout: Duration,
}

impl Admission {
    /// Limits from the configuration.
    pub fn new(running: usize, queued: usize, timeout: Duration) -> Admission {
        let running = running.max(1);
        Admission {
            slots: Semaphore::new(running),
            admitted: AtomicUsize::new(0),
            capacity: running + queued,
            timeout,
        }
    }

    /// Requests currently admitted (running or queued).
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Relaxed)
    }
}

/// Decrements the admitted count however the request ends (done, failed, cancelled).
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request counted by admission control, from [`Admission::enter`] until dropped.
pub struct Ticket<'a> {
    admission: &'a Admission,
    position: usize,
    _admitted: Admitted<'a>,
}

impl Admission {
    /// Counts a request in (running or queued) until the ticket is dropped, refused or not.
    pub fn enter(&self) -> Ticket<'_> {
        let position = self.admitted.fetch_add(1, Ordering::Relaxed) + 1;
        Ticket {
            admission: self,
            position,
            _admitted: Admitted(&self.admitted),
        }
    }
}

impl Ticket<'_> {
    /// The error when the request arrived past the queue bound: shed at once.
    pub fn refusal(&self) -> Option<ApiError> {
        (self.position > self.admission.capacity).then_some(ApiError::Overloaded {
            limit: self.admission.capacity,
        })
    }

    /// Runs `work` once a slot is free, the whole (queue wait included) bounded by the request
    /// timeout; a refused ticket never runs it. What every protocol's inference goes through:
    /// the HTTP middleware [`admit`] and the gRPC service ([`crate::grpc`]).
    pub async fn run<T>(self, work: impl std::future::Future<Output = T>) -> Result<T, ApiError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let admission = self.admission;
        let work = async {
            let _slot = admission.slots.acquire().await;
            work.await
        };
        tokio::time::timeout(admission.timeout, work)
            .await
            .map_err(|_| ApiError::Timeout {
                after_ms: admission.timeout.as_millis() as u64,
            })
    }
}

/// The inference routes' guard: the API key check ([`authorize`]), then admission control:
/// sheds load past the queue bound, waits for a slot, and bounds the whole request (queue wait
/// included) by the request timeout. One middleware, not two stacked: every axum layer is a
/// boxed service that is cloned, with everything beneath it, on every request.
pub async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(refusal) = check_key(&state, &req) {
        return refuse(req, &state, refusal).await;
    }
    let ticket = state.admission.enter();
    if let Some(refusal) = ticket.refusal() {
        return refuse(req, &state, refusal).await;
    }
    ticket
        .run(next.run(req))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The configured API key, kept only as its sha256 so comparisons take the same time whatever
/// the candidate is.
#[derive(Clone)]
pub struct ApiKey([u8; 32]);

impl ApiKey {
    /// Wraps a key; surrounding whitespace (a trailing newline in a mounted Secret) is dropped.
    pub fn new(key: &str) -> Option<ApiKey> {
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(Sha256::digest(key.as_bytes()).into()))
    }

    /// Constant-time comparison of digests.
    pub fn matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        self.0
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl ApiKey {
    /// Checks an `Authorization` value (`Bearer <key>`, scheme in any case): the one check
    /// behind the HTTP middleware [`authorize`] and the gRPC service's `authorization` metadata.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let token = authorization.and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
        match token {
            Some(token) if self.matches(token) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized("the API key is not valid")),
            None => Err(ApiError::Unauthorized(
                "send the API key as 'Authorization: Bearer <key>'",
            )),
        }
    }
}

/// Requires `Authorization: Bearer <key>` when an API key is configured (the repository
/// routes; [`admit`] checks it for the inference routes).
pub async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check_key(&state, &req) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refuse(req, &state, refusal).await,
    }
}

/// The request's `Authorization` against the configured key, if there is one.
fn check_key(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let Some(key) = &state.api_key else {
        return Ok(());
    };
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    key.check(authorization)
}

/// Answers a refused request, after reading its body (see [`discard_body`]).
async fn refuse(req: Request, state: &AppState, refusal: ApiError) -> Response {
    discard_body(req, state.limits.max_body_bytes).await;
    refusal.into_response()
}

/// Reads and drops a refused request's body (within the body limit, briefly) before answering.
/// Answering first would close the connection under a client still sending, which then sees a
/// broken pipe instead of our 401/503.
async fn discard_body(req: Request, limit: usize) {
    let body = Limited::new(req.into_body(), limit).collect();
    let _ = tokio::time::timeout(Duration::from_secs(1), body).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_match_exactly_and_ignore_surrounding_whitespace() {
        let key = ApiKey::new(" s3cret\n").unwrap();
        assert!(key.matches("s3cret"));
        assert!(!key.matches("s3cret "));
        assert!(!key.matches("s3cre"));
        assert!(!key.matches(""));
        assert!(ApiKey::new("  \n").is_none());
    }

    #[test]
    fn authorization_takes_a_bearer_token_in_any_case() {
        let key = ApiKey::new("s3cret").unwrap();
        assert_eq!(key.check(Some("Bearer s3cret")), Ok(()));
        assert_eq!(key.check(Some("bearer  s3cret ")), Ok(()));
        assert_eq!(
            key.check(Some("Bearer wrong")),
            Err(ApiError::Unauthorized("the API key is not valid"))
        );
        let missing = Err(ApiError::Unauthorized(
            "send the API key as 'Authorization: Bearer <key>'",
        ));
        assert_eq!(key.check(None), missing);
        assert_eq!(key.check(Some("s3cret")), missing);
        assert_eq!(key.check(Some("Basic s3cret")), missing);
    }

    #[tokio::test]
    async fn tickets_past_the_queue_bound_are_refused_and_others_run() {
        let admission = Admission::new(1, 1, Duration::from_secs(1));
        let first = admission.enter();
        let second = admission.enter();
        let third = admission.enter();
        assert_eq!(admission.in_flight(), 3);
        assert_eq!(third.refusal(), Some(ApiError::Overloaded { limit: 2 }));
        assert_eq!(
            third.run(async { 3 }).await,
            Err(ApiError::Overloaded { limit: 2 })
        );
        assert_eq!(first.run(async { 1 }).await, Ok(1));
        assert_eq!(second.run(async { 2 }).await, Ok(2));
        assert_eq!(admission.in_flight(), 0);
    }
}
