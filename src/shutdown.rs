//! The process's stop signal: SIGINT or SIGTERM, what Kubernetes and `docker stop` send.
//!
//! Owns only the wait for the signal, as a future, so a server takes "when to stop" as an
//! argument (tests and other binaries pass their own) instead of reaching for signals itself.
//! May not import anything of ours: both binaries' edges use it.

/// Resolves on SIGINT or SIGTERM.
pub async fn termination() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
