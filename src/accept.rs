//! The listener: accepts connections, runs each as its own task, and drains
//! them on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::audit::{AuthRecord, ConnectRecord, StartupRefusedRecord};
use crate::context::ProxyContext;
use crate::metrics::GaugeGuard;
use crate::protocol::reply::PgError;
use crate::startup::{self, Established, Opened};
use tokio::io::AsyncWriteExt;

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
        ctx.metrics
            .connections_accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = tracing::info_span!("session", id = next_id, %peer, user = tracing::field::Empty, db = tracing::field::Empty);
        let ctx = ctx.clone();
        let close = close_sessions.clone();
        let session_id = next_id;
        tracker.spawn(
            async move {
                let started = std::time::Instant::now();
                let _open = GaugeGuard::new(&ctx.metrics.client_connections);
                if over_total_limit(&ctx) {
                    refuse_before_startup(tcp, &ctx).await;
                    return;
                }
                let opened = tokio::time::timeout(
                    ctx.limits.startup_timeout(),
                    startup::open(tcp, peer, &ctx),
                )
                .await;
                match opened {
                    Err(_) => {
                        tracing::info!("startup timed out");
                        ctx.metrics.refused("startup_timeout");
                        refused(&ctx, session_id, peer, "08006", "startup timed out").await;
                    }
                    // A bare TCP connect-and-close (health checks, port probes) is routine.
                    Ok(Err(startup::StartupFailure::BadPacket(
                        crate::protocol::startup::StartupError::Io(e),
                    ))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        tracing::debug!("connection closed before a startup packet")
                    }
                    Ok(Err(startup::StartupFailure::AuthRefused {
                        identity,
                        class,
                        database,
                        message,
                    })) => {
                        tracing::info!(%identity, "authentication failed: {message}");
                        ctx.metrics.refused("authentication");
                        let record = AuthRecord {
                            session_id,
                            peer: peer.to_string(),
                            identity,
                            identity_class: Some(class),
                            upstream_user: None,
                            database,
                            tenant: None,
                            ok: false,
                            method: None,
                            error: Some(message),
                        };
                        if let Err(e) = ctx.audit.record(record).await {
                            tracing::error!("authentication failure not audited: {e}");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::info!("connection refused during startup: {e}");
                        if let startup::StartupFailure::TlsHandshake(_) = e {
                            ctx.metrics
                                .tls_handshake_failures
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        ctx.metrics.refused("startup");
                        refused(&ctx, session_id, peer, e.sqlstate(), &e.to_string()).await;
                    }
                    Ok(Ok(Opened::Cancel)) => {}
                    Ok(Ok(Opened::Session(session))) => {
                        let span = tracing::Span::current();
                        span.record("user", session.startup.user());
                        span.record("db", session.startup.database());
                        tracing::info!(
                            tls = session.client_tls.unwrap_or("off"),
                            "session started"
                        );
                        opened_records(&ctx, session_id, peer, &session).await;
                        let info = crate::relay::SessionInfo {
                            id: session_id,
                            peer,
                            started,
                        };
                        crate::relay::run(*session, ctx.clone(), close, info).await;
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

/// Records a connection refused before its session began.
async fn refused(
    ctx: &ProxyContext,
    session_id: u64,
    peer: SocketAddr,
    sqlstate: &str,
    reason: &str,
) {
    let record = StartupRefusedRecord {
        session_id,
        peer: peer.to_string(),
        identity: None,
        database: None,
        sqlstate: sqlstate.to_string(),
        reason: reason.to_string(),
    };
    if let Err(e) = ctx.audit.record(record).await {
        tracing::error!("startup refusal not audited: {e}");
    }
}

/// Records a new session: the connection (TLS, certificate) and its
/// authentication.
async fn opened_records(ctx: &ProxyContext, session_id: u64, peer: SocketAddr, s: &Established) {
    let certificate = s.identity.certificate.as_ref();
    let connect = ConnectRecord {
        session_id,
        peer: peer.to_string(),
        tls_version: s.client_tls.map(str::to_string),
        cert_subject: certificate.map(|c| c.subject.clone()),
        cert_fingerprint: certificate.map(|c| c.fingerprint.clone()),
    };
    let class = {
        let policy = ctx.policy.load();
        policy.class_name(s.identity.class(&policy)).to_string()
    };
    let auth = AuthRecord {
        session_id,
        peer: peer.to_string(),
        identity: s.identity.name().to_string(),
        identity_class: Some(class),
        upstream_user: Some(s.startup.user().to_string()),
        database: s.startup.database().to_string(),
        tenant: s.tenant.clone(),
        ok: true,
        method: Some(
            if certificate.is_some() {
                "certificate"
            } else {
                "relayed"
            }
            .to_string(),
        ),
        error: None,
    };
    for event in [
        crate::audit::Event::from(connect),
        crate::audit::Event::from(auth),
    ] {
        if let Err(e) = ctx.audit.record(event).await {
            tracing::error!("session start not audited: {e}");
        }
    }
}

fn over_total_limit(ctx: &ProxyContext) -> bool {
    let open = ctx
        .metrics
        .client_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    usize::try_from(open).unwrap_or(0) > ctx.limits.max_client_connections
}

/// Answers a connection over `limits.max_client_connections` the way
/// PostgreSQL answers one over max_connections, without reading anything.
async fn refuse_before_startup(mut tcp: tokio::net::TcpStream, ctx: &ProxyContext) {
    ctx.metrics.refused("max_client_connections");
    let err = PgError::fatal("53300", "pgward: sorry, too many clients already");
    let _ = tcp.write_all(&err.to_bytes()).await;
    let _ = tcp.shutdown().await;
}
