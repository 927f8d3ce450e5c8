//! Health for Kubernetes (`/health/live`, `/health/ready`), a summary for people (`/health`),
//! and `/manifest`. None of these waits behind inference.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ErrorBody};
use super::openapi::{HealthSummary, Status};
use super::AppState;

/// Liveness: the process answers. Never depends on models or dependencies, so a slow load or a
/// down feature store does not get the pod restarted.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "The process answers", body = Status))
)]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// Readiness: 200 only once every model is loaded and warmed up (or, with
/// `--exit-on-error false`, reported unavailable while at least one serves), 503 before and
/// while draining.
/// A down feature store does not fail it (requests with `instances` still work); a feature
/// snapshot not verified to match the manifest does, under `--require-snapshot-match`.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Every model is loaded and warmed up", body = Status),
        (status = 503, description = "not_ready: models loading, the server draining, no model serving (every one failed, with --exit-on-error false), or the feature snapshot unverified (with Retry-After)", body = ErrorBody),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.ready() {
        Ok(_) => match state.feature_store().readiness() {
            Ok(()) => Json(json!({"status": "ready"})).into_response(),
            Err(reason) => ApiError::NotReady(reason).into_response(),
        },
        Err(e) => e.into_response(),
    }
}

/// A JSON summary for humans: status, uptime, each loaded model version with the provider
/// serving it and its role in the model's rollout, and the repository index (every listed
/// version's state, with why one is not serving).
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "Status, uptime, each served model version with its rollout role, and the repository index", body = HealthSummary))
)]
pub async fn summary(State(state): State<AppState>) -> Json<Value> {
    let (status, models) = match state.repository() {
        Ok(snapshot) => {
            let models: Vec<Value> = snapshot
                .versions()
                .map(|m| {
                    let entry = &m.entry;
                    let primary = snapshot.named(Some(&entry.name), None).ok();
                    json!({
                        "name": entry.name,
                        "version": entry.version,
                        "default": primary.is_some_and(|p| p.entry.version == entry.version),
                        "task": entry.task_name(),
                        "sha256": entry.onnx.sha256,
                        "snapshot_id": entry.dataset.snapshot_id,
                        "features": entry.feature_names.len(),
                        "execution_provider": m.provider,
                        "sessions": m.concurrency(),
                        "inference": m.executor.mode(),
                        "role": snapshot.role(&entry.name, &entry.version).as_str(),
                        "share_percent": snapshot.share_percent(&entry.name, &entry.version),
                    })
                })
                .collect();
            ("ready", models)
        }
        Err(ApiError::NotReady(reason)) if reason.contains("shutting") => ("shutting_down", vec![]),
        Err(_) => ("loading", vec![]),
    };
    let feature_store = state.feature_store();
    let status = match (status, feature_store.readiness()) {
        ("ready", Err(_)) => "not_ready",
        ("ready", _) if state.ready().is_err() => "not_ready",
        (status, _) => status,
    };
    let (model_control, repository) = match state.control() {
        Ok(control) => (
            json!({
                "mode": control.settings.mode.as_str(),
                "poll_secs": control.settings.poll_every().map(|every| every.as_secs()),
                "last_rescan_error": control.last_error(),
            }),
            json!(control.index(false)),
        ),
        Err(_) => (Value::Null, json!([])),
    };
    Json(json!({
        "status": status,
        "uptime_seconds": state.started_at().elapsed().as_secs_f64(),
        "version": crate::BUILD_VERSION,
        "git_commit": crate::BUILD_GIT_COMMIT,
        "default_model": state.manifest.default_model,
        "models": models,
        "model_control": model_control,
        "repository": repository,
        "feature_store": feature_store.health(),
    }))
}

/// The manifest as training wrote it, plus which build serves it (`build.git_commit`, the
/// `IMAGE_TAG` the container was started with, if any, and `build.sbom`, where the image keeps
/// its CycloneDX SBOM: `SBOM_PATH`, set by the Dockerfile; absent outside the image).
#[utoipa::path(
    get,
    path = "/manifest",
    tag = "operations",
    responses((status = 200, description = "manifest.json as training wrote it, plus a `build` object (version, git_commit, image_tag, and sbom in the image)", body = Object))
)]
pub async fn manifest(State(state): State<AppState>) -> Response {
    let mut body = state.manifest.raw.clone();
    if let Value::Object(map) = &mut body {
        let mut build = json!({
            "version": crate::BUILD_VERSION,
            "git_commit": crate::BUILD_GIT_COMMIT,
            "image_tag": std::env::var("IMAGE_TAG").ok(),
        });
        if let Ok(sbom) = std::env::var("SBOM_PATH") {
            build["sbom"] = Value::String(sbom);
        }
        map.insert("build".into(), build);
    }
    (StatusCode::OK, Json(body)).into_response()
}
