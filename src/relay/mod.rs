//! The session relay: client ⇄ server for the life of one authenticated session.
//!
//! Both directions run concurrently inside the session's task, each with its
//! own buffer, so neither can block the other: a server streaming a large
//! result never stops pgward from reading the client, and vice versa (a
//! single loop that alternates would deadlock on pipelined clients).

pub mod backend;
pub mod frontend;
pub mod gate;
pub mod notes;
pub mod repeat;
pub mod search_path;
pub mod shared;

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::audit::{DisconnectRecord, StatementRecord};
use crate::context::ProxyContext;
use crate::protocol::reply::PgError;
use crate::startup::{Established, send_cancel};
use crate::tenant::inject::TenantInjector;
use backend::ServerEnd;
use frontend::{ClientEnd, Frontend};
use gate::Gate;
use shared::SessionShared;

/// Who a session is, for its records.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: u64,
    pub peer: std::net::SocketAddr,
    pub started: std::time::Instant,
}

/// Relays an established session until either side ends or pgward shuts down.
pub async fn run(
    session: Established,
    ctx: Arc<ProxyContext>,
    close: CancellationToken,
    info: SessionInfo,
) {
    let Established {
        mut client_reader,
        mut client_writer,
        mut server_reader,
        mut server_writer,
        backend_key,
        cancel_key: _cancel_key,
        startup,
        tenant,
        identity,
        ..
    } = session;
    let _server = crate::metrics::GaugeGuard::new(&ctx.metrics.server_connections);
    let shared = SessionShared::default();
    let policy = ctx.policy.load_full();
    let audit_base = StatementRecord {
        session_id: info.id,
        peer: info.peer.to_string().into(),
        identity: identity.name().into(),
        identity_class: policy.class_name(identity.class(&policy)).into(),
        upstream_user: startup.user().into(),
        database: startup.database().into(),
        tenant: tenant.as_deref().map(Arc::from),
        ..Default::default()
    };
    let injector = tenant
        .map(|t| TenantInjector::new(crate::tenant::set_local_sql(policy.tenant_setting(), &t)));
    drop(policy);
    let mut gate = Gate::new(
        ctx.clone(),
        identity,
        search_path::initial_path(&startup),
        injector,
        audit_base,
    );
    let mut frontend = Frontend {
        shared: &shared,
        gate: &mut gate,
        idle_timeout: ctx.limits.idle_client_timeout(),
    };

    enum End {
        Client(ClientEnd),
        Server(ServerEnd),
        Shutdown,
    }
    let mut finished = Vec::new();
    let end = tokio::select! {
        e = frontend.run(&mut client_reader, &mut server_writer) => End::Client(e),
        e = backend::run(&shared, &mut server_reader, &mut client_writer, &ctx, &mut finished) => End::Server(e),
        _ = close.cancelled() => End::Shutdown,
    };

    let reason = match &end {
        End::Client(ClientEnd::Gone) => None,
        End::Client(ClientEnd::Fatal(e)) => Some(format!("protocol error: {}", e.message)),
        End::Client(ClientEnd::Io(e)) | End::Server(ServerEnd::ClientIo(e)) => {
            Some(format!("client connection lost: {e}"))
        }
        End::Client(ClientEnd::Idle) => Some("idle timeout".into()),
        End::Server(ServerEnd::ClosedAfterFatal) => Some("server sent a fatal error".into()),
        End::Server(ServerEnd::TooLarge { tag, len }) => Some(format!(
            "server message {tag:?} of {len} bytes, over the {} pgward reads whole",
            backend::MAX_WHOLE_SERVER_MESSAGE
        )),
        End::Server(_) => Some("server connection lost".into()),
        End::Shutdown => Some("pgward shutting down".into()),
    };
    let farewell = match end {
        End::Client(ClientEnd::Gone) => {
            tracing::debug!("client closed the session");
            None
        }
        End::Client(ClientEnd::Fatal(err)) => {
            tracing::warn!("closing session: {}", err.message);
            Some(err)
        }
        End::Client(ClientEnd::Io(e)) => {
            tracing::info!("client connection lost: {e}");
            None
        }
        End::Client(ClientEnd::Idle) => {
            ctx.metrics
                .idle_timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("closing idle session");
            Some(PgError::fatal(
                "57P05",
                "pgward: terminating connection due to idle timeout (limits.idle_client_timeout_ms)",
            ))
        }
        End::Server(ServerEnd::ClosedAfterFatal) => None,
        End::Server(ServerEnd::TooLarge { tag, len }) => {
            tracing::warn!(
                "closing session: PostgreSQL sent a {tag:?} message of {len} bytes (limit {})",
                backend::MAX_WHOLE_SERVER_MESSAGE
            );
            Some(PgError::fatal(
                "54000",
                format!(
                    "pgward: the server's answer holds a message of {len} bytes, more than the {} bytes pgward reads whole (only rows and COPY data stream); closing the session",
                    backend::MAX_WHOLE_SERVER_MESSAGE
                ),
            ))
        }
        End::Server(ServerEnd::Vanished) | End::Server(ServerEnd::Io(_)) => {
            tracing::warn!("PostgreSQL closed the connection unexpectedly");
            Some(PgError::fatal(
                "08006",
                "pgward: the PostgreSQL server closed the connection unexpectedly",
            ))
        }
        End::Server(ServerEnd::ClientIo(e)) => {
            tracing::info!("client connection lost: {e}");
            None
        }
        End::Shutdown => Some(PgError::fatal(
            "57P01",
            "terminating connection because pgward is shutting down",
        )),
    };
    if let Some(err) = farewell {
        let _ = client_writer.write_all(&err.to_bytes()).await;
    }
    let _ = client_writer.shutdown().await;

    // A query still running for a client that is gone would hold its locks and
    // its backend until it next writes: cancel it.
    if shared.busy()
        && let Some(key) = backend_key
    {
        send_cancel(&ctx, key).await;
    }
    let _ = server_writer.write_all(b"X\0\0\0\x04").await;
    let _ = server_writer.shutdown().await;

    // Statements answered whose records were still waiting for queue space,
    // then those whose answers never came (outcome unknown).
    for draft in finished.iter().chain(&shared.abandoned()) {
        backend::record(&shared, &ctx, draft).await;
    }
    let (statements, denied, monitored) = shared.counts();
    let disconnect = DisconnectRecord {
        session_id: info.id,
        peer: info.peer.to_string(),
        statements,
        denied,
        monitored,
        duration_us: u64::try_from(info.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        reason,
    };
    if let Err(e) = ctx.audit.record(disconnect).await {
        tracing::error!("disconnect not audited: {e}");
    }
}
