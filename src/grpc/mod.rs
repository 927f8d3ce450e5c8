//! The Open Inference Protocol (KServe V2) over gRPC, on its own port (`--grpc-port`, default
//! 8081 as KServe expects): `inference.GRPCInferenceService`, the service Triton's and KServe's
//! clients call, plus `grpc.health.v1.Health` for Kubernetes gRPC probes.
//!
//! - [`proto`]: the messages and service trait generated at build time from
//!   `proto/open_inference.proto` (build.rs, protox + tonic-prost-build, no `protoc`).
//! - [`tensors`]: request and response tensors ↔ [`crate::model::tensor::TypedTensor`], for
//!   every served datatype, raw bytes or typed `contents`.
//! - [`backend`]: the seam: what the service needs from whatever serves the models, in the
//!   protocol's terms. The service knows nothing of HTTP handlers.
//! - [`service`]: the RPCs, each decode → [`backend::Backend`] → encode.
//! - [`api_backend`]: the backend over the HTTP API's state and inference path, so both
//!   protocols share the models, limits, API key, admission control and metrics.
//!
//! Health: `SERVING` (for the server, `""`, and for `inference.GRPCInferenceService`) once the
//! backend is ready, `NOT_SERVING` before and from the moment shutdown begins, read from the
//! backend every [`HEALTH_POLL`]. Shutdown: the listener stops accepting when the HTTP one
//! does and in-flight calls finish, under the same grace period.
//!
//! May import `api` and every layer below it (through [`api_backend`] only); only the server
//! edge imports `grpc` (other modules merely link to it in their docs).

pub mod api_backend;
pub mod backend;
pub mod service;
pub mod tensors;

/// The generated messages and service trait of package `inference`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use backend::Backend;
use proto::grpc_inference_service_server::GrpcInferenceServiceServer;
use service::OpenInference;

/// How often health statuses follow the backend's readiness: a probe sees a change within this.
/// (Polled, because the state has no readiness notification; an atomic load and a lock-free
/// read each time.)
pub const HEALTH_POLL: Duration = Duration::from_millis(50);

/// The inference service's name, as health checks ask for it.
pub const INFERENCE_SERVICE: &str = proto::grpc_inference_service_server::SERVICE_NAME;

/// Limits of the gRPC listener.
#[derive(Debug, Clone, Copy)]
pub struct GrpcLimits {
    /// Largest request message accepted (the HTTP body limit, `MAX_BODY_BYTES`).
    pub max_message_bytes: usize,
}

/// Serves both services on `listener` until `shutdown` resolves, then finishes in-flight calls.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    limits: GrpcLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // The reporter starts with the server SERVING: not before the models are.
    set_status(&reporter, ServingStatus::NotServing).await;
    let health_task = tokio::spawn(follow_readiness(backend.clone(), reporter));
    let inference = GrpcInferenceServiceServer::from_arc(Arc::new(OpenInference::new(backend)))
        .max_decoding_message_size(limits.max_message_bytes);
    let served = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(inference)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await;
    health_task.abort();
    served
}

/// Accepted connections with TCP_NODELAY, as the HTTP listener's. tonic's `Server::tcp_nodelay`
/// does not apply to a listener passed in, and without it a response of more than one segment
/// waits for the client's delayed ACK: `make bench` measured 256-row ModelInfer at ~180 req/s
/// (40 ms a call) against ~3,300 for the same body over REST.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Keeps the health statuses equal to the backend's readiness.
async fn follow_readiness<B: Backend>(backend: Arc<B>, reporter: HealthReporter) {
    let mut serving = false;
    let mut tick = tokio::time::interval(HEALTH_POLL);
    loop {
        tick.tick().await;
        let ready = backend.server_ready().is_ok();
        if ready != serving {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_status(&reporter, status).await;
            serving = ready;
        }
    }
}

async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    for service in ["", INFERENCE_SERVICE] {
        reporter.set_service_status(service, status).await;
    }
}
