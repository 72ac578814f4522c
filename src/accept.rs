//! The listener: accepts connections, runs each as its own task, and drains
//! them on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::context::ProxyContext;
use crate::startup::{self, Opened};

/// Accepts clients until `shutdown` fires, then gives sessions `drain` to
/// finish before closing them.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let tracker = TaskTracker::new();
    let close_sessions = CancellationToken::new();
    let mut next_id: u64 = 0;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        next_id += 1;
        let span = tracing::info_span!("session", id = next_id, %peer, user = tracing::field::Empty, db = tracing::field::Empty);
        let ctx = ctx.clone();
        let close = close_sessions.clone();
        tracker.spawn(
            async move {
                let opened = tokio::time::timeout(
                    ctx.limits.startup_timeout(),
                    startup::open(tcp, peer, &ctx),
                )
                .await;
                match opened {
                    Err(_) => tracing::info!("startup timed out"),
                    // A bare TCP connect-and-close (health checks, port probes) is routine.
                    Ok(Err(startup::StartupFailure::BadPacket(
                        crate::protocol::startup::StartupError::Io(e),
                    ))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        tracing::debug!("connection closed before a startup packet")
                    }
                    Ok(Err(e)) => tracing::info!("connection refused during startup: {e}"),
                    Ok(Ok(Opened::Cancel)) => {}
                    Ok(Ok(Opened::Session(session))) => {
                        let span = tracing::Span::current();
                        span.record("user", session.startup.user());
                        span.record("db", session.startup.database());
                        tracing::info!(
                            tls = session.client_tls.unwrap_or("off"),
                            "session started"
                        );
                        crate::relay::run(*session, ctx, close).await;
                        tracing::info!("session ended");
                    }
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    tracker.close();
    tracing::info!(
        sessions = tracker.len(),
        "no longer accepting; draining sessions"
    );
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::info!(
            sessions = tracker.len(),
            "drain timeout reached; closing sessions"
        );
        close_sessions.cancel();
        tracker.wait().await;
    }
}
