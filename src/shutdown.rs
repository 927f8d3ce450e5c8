//! The process's signals: SIGINT or SIGTERM, what Kubernetes and `docker stop` send to stop it,
//! and SIGHUP, which asks for a rescan of the model repository.
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

/// SIGHUP, as a sequence of events. Installing it replaces SIGHUP's default (ending the
/// process) with a request the server answers by rescanning its model repository once, so
/// `kill -HUP` applies a changed manifest now instead of stopping the service.
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Starts catching SIGHUP (needs the tokio runtime). If the handler cannot be installed,
    /// no SIGHUP is ever reported (and SIGHUP keeps its default).
    pub fn install() -> Hangups {
        #[cfg(unix)]
        {
            let signal =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            Hangups { signal }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// Resolves at the next SIGHUP; never, when SIGHUP is not caught.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}
