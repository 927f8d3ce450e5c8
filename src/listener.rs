//! The accept loop: every TCP connection is served by hyper-util's automatic HTTP/1.1-or-h2c
//! connection builder, with a timer, so hyper's own connection timeouts apply.
//!
//! An edge beside [`crate::server`], its only caller: imports nothing of ours.
//!
//! `axum::serve` builds hyper without a timer, which leaves the HTTP/1 header-read timeout off:
//! a client trickling request headers could hold a connection for ever. Here:
//!
//! - **Header read** ([`ConnectionLimits::header_read_timeout`]): an HTTP/1 connection whose
//!   next request head has not fully arrived within the limit is closed (hyper answers nothing:
//!   there is no request to answer). The clock starts when hyper starts waiting for a head,
//!   so it also closes a keep-alive connection left idle that long.
//! - **Keep-alive**: HTTP/1.1 connections are kept open between requests (within the limit
//!   above); HTTP/2 connections are pinged every [`H2_KEEP_ALIVE_INTERVAL`] and closed when a
//!   ping is not answered within [`H2_KEEP_ALIVE_TIMEOUT`], so a vanished peer does not hold
//!   one for ever.
//! - **h2c**: a connection that opens with the HTTP/2 preface is served as HTTP/2 over plain
//!   TCP ("prior knowledge"); anything else is HTTP/1.x.
//!
//! Graceful shutdown is the one `axum::serve` had: when the shutdown future resolves the
//! listener is closed (new connections are refused), every open connection is told to finish
//! the request it is serving and close, and [`serve`] returns once the last one has.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How often an idle HTTP/2 connection is pinged.
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long an HTTP/2 ping may go unanswered before the connection is closed.
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the accept loop pauses after an error that is not about one connection (such as
/// running out of file descriptors), so it does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Per-connection limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest an HTTP/1 request head (request line and headers) may take to arrive.
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and returns
/// once every open connection has finished its in-flight request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let builder = Arc::new(connection_builder(limits));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    pause_after_accept_error(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written whole: nothing gains from Nagle's delay, and a small response
        // must not wait for the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        let builder = builder.clone();
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                // A client that went away, a malformed request or a header-read timeout: about
                // one connection, and frequent under attack, so not worth more than debug.
                tracing::debug!(%error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The connection builder every connection shares: HTTP/1.1 and h2c, both with a timer.
fn connection_builder(limits: ConnectionLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// Errors about one connection (it was reset before it was accepted) are skipped; anything
/// else is logged and the loop pauses before accepting again.
async fn pause_after_accept_error(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept error; pausing before accepting again");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
